//! ARP watch: remembers which MAC answers for each IPv4 address and reports a changed
//! binding (the mark of ARP poisoning), and a MAC that sends unsolicited replies while
//! claiming more than one address (a poisoner claiming the gateway besides its own).

use std::net::Ipv4Addr;

use crate::decode::{ArpInfo, Micros};
use crate::table::{mix, LruTable, TableKey};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Ip4(u32);

impl TableKey for Ip4 {
    fn hash_with(&self, seed: u64) -> u64 {
        mix(u64::from(self.0), seed)
    }
}

#[derive(Clone, Copy, Default, Debug)]
struct Binding {
    mac: [u8; 6],
    since: Micros,
    /// When the binding last changed, and how many changes within the flap window.
    last_change: Micros,
    changes: u32,
}

/// A changed IP→MAC binding, or one MAC claiming several addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpChange {
    pub ip: Ipv4Addr,
    pub old_mac: [u8; 6],
    pub new_mac: [u8; 6],
    /// Changes of this binding within the last minute (flapping = two MACs fighting).
    pub changes: u32,
    /// For a multi-claim: the other address the same MAC claimed (with an unsolicited reply
    /// among the claims). `None` for a changed binding.
    pub also_claims: Option<Ipv4Addr>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Mac([u8; 6]);

impl TableKey for Mac {
    fn hash_with(&self, seed: u64) -> u64 {
        let m = self.0;
        mix(
            u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]),
            seed,
        )
    }
}

/// What one MAC claimed last.
#[derive(Clone, Copy, Default, Debug)]
struct Claim {
    ip: u32,
    ts: Micros,
    /// When this MAC last sent an unsolicited reply (0 = never).
    unsolicited: Micros,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Ask {
    asker: u32,
    target: u32,
}

impl TableKey for Ask {
    fn hash_with(&self, seed: u64) -> u64 {
        mix(u64::from(self.asker) | (u64::from(self.target) << 32), seed)
    }
}

/// A reply counts as solicited when the matching request was seen this recently.
const ASK_WINDOW: Micros = 10_000_000;
/// Claims of two addresses by one MAC this close together are a multi-claim.
const CLAIM_WINDOW: Micros = 60_000_000;

pub struct ArpWatch {
    table: LruTable<Ip4, Binding>,
    claims: LruTable<Mac, Claim>,
    asks: LruTable<Ask, Micros>,
    /// Seconds a binding is trusted before a new MAC is taken as a legitimate re-addressing.
    stable_for: Micros,
    pub changes: u64,
}

impl ArpWatch {
    pub fn new(capacity: usize, seed: u64) -> Self {
        ArpWatch {
            table: LruTable::with_capacity(capacity, seed),
            claims: LruTable::with_capacity(capacity, seed ^ 0x55),
            asks: LruTable::with_capacity(capacity, seed ^ 0xaa),
            stable_for: 4 * 3600 * 1_000_000,
            changes: 0,
        }
    }

    /// Number of bindings known.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Learns from one ARP packet (request or reply: both carry the sender's binding).
    /// Returns a change when the sender claims an address bound to another MAC that was
    /// last confirmed less than `stable_for` ago.
    pub fn observe(&mut self, arp: &ArpInfo, ts: Micros) -> Option<ArpChange> {
        let ip = arp.sender_ip;
        // Probes (0.0.0.0) and broadcast/zero MACs bind nothing.
        if ip.is_unspecified() || arp.sender_mac == [0; 6] || arp.sender_mac == [0xff; 6] {
            return None;
        }
        let mac = arp.sender_mac;
        let multi = self.track_claim(arp, ts);
        let key = Ip4(u32::from(ip));
        let (slot, new) = self.table.find_or_insert(
            key,
            0,
            ts,
            |b| {
                *b = Binding {
                    mac,
                    since: ts,
                    last_change: 0,
                    changes: 0,
                }
            },
            |_, _| {},
        );
        let prev_seen = self.table.last_seen(slot);
        self.table.touch(slot, ts);
        if new {
            return multi;
        }
        let b = self.table.get_mut(slot);
        if b.mac == mac {
            return multi;
        }
        let old = b.mac;
        if ts - b.last_change > 60_000_000 {
            b.changes = 0;
        }
        b.changes += 1;
        b.last_change = ts;
        b.mac = mac;
        b.since = ts;
        // A binding silent for hours that comes back with a new MAC is a replaced device.
        if ts - prev_seen > self.stable_for {
            return multi;
        }
        self.changes += 1;
        Some(ArpChange {
            ip,
            old_mac: old,
            new_mac: mac,
            changes: b.changes,
            also_claims: None,
        })
    }

    /// Remembers requests (to tell solicited replies from unsolicited ones) and what each MAC
    /// claims; reports a MAC claiming a second address within a minute when one of its claims
    /// was an unsolicited reply.
    fn track_claim(&mut self, arp: &ArpInfo, ts: Micros) -> Option<ArpChange> {
        let (sender, target) = (u32::from(arp.sender_ip), u32::from(arp.target_ip));
        if arp.op == 1 {
            let (s, _) = self.asks.find_or_insert(
                Ask {
                    asker: sender,
                    target,
                },
                0,
                ts,
                |t| *t = ts,
                |_, _| {},
            );
            *self.asks.get_mut(s) = ts;
            self.asks.touch(s, ts);
        }
        let unsolicited = arp.op == 2
            && sender != target
            && self
                .asks
                .find(&Ask {
                    asker: target,
                    target: sender,
                })
                .is_none_or(|s| ts - *self.asks.get(s) > ASK_WINDOW);
        let (slot, new) = self.claims.find_or_insert(
            Mac(arp.sender_mac),
            0,
            ts,
            |c| {
                *c = Claim {
                    ip: sender,
                    ts,
                    unsolicited: 0,
                }
            },
            |_, _| {},
        );
        self.claims.touch(slot, ts);
        let c = self.claims.get_mut(slot);
        if unsolicited {
            c.unsolicited = ts;
        }
        let mut out = None;
        if !new
            && c.ip != sender
            && ts - c.ts <= CLAIM_WINDOW
            && c.unsolicited != 0
            && ts - c.unsolicited <= CLAIM_WINDOW
        {
            self.changes += 1;
            out = Some(ArpChange {
                ip: arp.sender_ip,
                old_mac: arp.sender_mac,
                new_mac: arp.sender_mac,
                changes: 1,
                also_claims: Some(Ipv4Addr::from(c.ip)),
            });
        }
        c.ip = sender;
        c.ts = ts;
        out
    }
}

/// "aa:bb:cc:dd:ee:ff".
pub fn fmt_mac(mac: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(ip: [u8; 4], mac: u8) -> ArpInfo {
        ArpInfo {
            op: 2,
            sender_mac: [2, 0, 0, 0, 0, mac],
            sender_ip: Ipv4Addr::from(ip),
            target_mac: [2, 0, 0, 0, 0, 9],
            target_ip: Ipv4Addr::new(10, 0, 0, 9),
        }
    }

    #[test]
    fn changed_binding_is_reported_once_per_change() {
        let mut w = ArpWatch::new(64, 1);
        assert_eq!(w.observe(&reply([10, 0, 0, 1], 1), 0), None);
        assert_eq!(w.observe(&reply([10, 0, 0, 1], 1), 1_000_000), None);
        let c = w.observe(&reply([10, 0, 0, 1], 7), 2_000_000).unwrap();
        assert_eq!(c.old_mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(c.new_mac, [2, 0, 0, 0, 0, 7]);
        assert_eq!(w.observe(&reply([10, 0, 0, 1], 7), 3_000_000), None);
        // Flapping back counts a second change.
        let c = w.observe(&reply([10, 0, 0, 1], 1), 4_000_000).unwrap();
        assert_eq!(c.changes, 2);
        assert_eq!(w.changes, 2);
    }

    #[test]
    fn unsolicited_reply_then_second_claim_is_reported() {
        let mut w = ArpWatch::new(64, 1);
        let poisoner = [2, 0, 0, 0, 0, 0x66];
        let req = |mac: [u8; 6], sip: [u8; 4], tip: [u8; 4]| ArpInfo {
            op: 1,
            sender_mac: mac,
            sender_ip: Ipv4Addr::from(sip),
            target_mac: [0; 6],
            target_ip: Ipv4Addr::from(tip),
        };
        // The poisoner asks as the gateway, then sends an unsolicited reply claiming it.
        assert_eq!(
            w.observe(&req(poisoner, [10, 0, 0, 1], [10, 0, 0, 7]), 0),
            None
        );
        let unsolicited = ArpInfo {
            op: 2,
            target_ip: Ipv4Addr::new(10, 0, 0, 7),
            ..req(poisoner, [10, 0, 0, 1], [0, 0, 0, 0])
        };
        assert_eq!(w.observe(&unsolicited, 1_000), None);
        // Ten seconds later the same MAC asks with its own address.
        let c = w
            .observe(&req(poisoner, [10, 0, 0, 5], [10, 0, 0, 1]), 10_000_000)
            .unwrap();
        assert_eq!(c.ip, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(c.also_claims, Some(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn solicited_replies_from_a_multi_address_host_are_fine() {
        let mut w = ArpWatch::new(64, 1);
        let router = [2, 0, 0, 0, 0, 1];
        for (i, ip) in [[10, 0, 0, 1], [10, 0, 1, 1]].iter().enumerate() {
            let t = i as i64 * 1_000_000;
            let ask = ArpInfo {
                op: 1,
                sender_mac: [2, 0, 0, 0, 0, 9],
                sender_ip: Ipv4Addr::new(10, 0, 0, 9),
                target_mac: [0; 6],
                target_ip: Ipv4Addr::from(*ip),
            };
            assert_eq!(w.observe(&ask, t), None);
            let answer = ArpInfo {
                op: 2,
                sender_mac: router,
                sender_ip: Ipv4Addr::from(*ip),
                target_mac: ask.sender_mac,
                target_ip: ask.sender_ip,
            };
            assert_eq!(w.observe(&answer, t + 100), None);
        }
    }

    #[test]
    fn probes_and_long_silence_are_not_changes() {
        let mut w = ArpWatch::new(64, 1);
        let mut probe = reply([0, 0, 0, 0], 3);
        probe.op = 1;
        assert_eq!(w.observe(&probe, 0), None);
        assert!(w.is_empty());
        w.observe(&reply([10, 0, 0, 2], 1), 0);
        // Five hours later a different device holds the address: no alarm.
        assert_eq!(
            w.observe(&reply([10, 0, 0, 2], 2), 5 * 3600 * 1_000_000),
            None
        );
    }
}
