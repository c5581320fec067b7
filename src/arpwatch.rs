//! ARP watch: remembers which MAC answers for each IPv4 address and reports a changed
//! binding (the mark of ARP poisoning) or a burst of gratuitous ARP claiming an address
//! that was bound elsewhere.

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

/// A changed IP→MAC binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpChange {
    pub ip: Ipv4Addr,
    pub old_mac: [u8; 6],
    pub new_mac: [u8; 6],
    /// Changes of this binding within the last minute (flapping = two MACs fighting).
    pub changes: u32,
}

pub struct ArpWatch {
    table: LruTable<Ip4, Binding>,
    /// Seconds a binding is trusted before a new MAC is taken as a legitimate re-addressing.
    stable_for: Micros,
    pub changes: u64,
}

impl ArpWatch {
    pub fn new(capacity: usize, seed: u64) -> Self {
        ArpWatch {
            table: LruTable::with_capacity(capacity, seed),
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
        let key = Ip4(u32::from(ip));
        let mac = arp.sender_mac;
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
            return None;
        }
        let b = self.table.get_mut(slot);
        if b.mac == mac {
            return None;
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
            return None;
        }
        self.changes += 1;
        Some(ArpChange {
            ip,
            old_mac: old,
            new_mac: mac,
            changes: b.changes,
        })
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
