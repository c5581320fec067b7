//! Flows: bidirectional 5-tuples with direction, TCP handshake state and counters, kept in a
//! fixed-capacity table built once from the config.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::decode::{
    tcp_flags, Micros, PacketMeta, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
};
use crate::events::FlowRow;
use crate::prefetch::prefetch_line;
use crate::table::{mix, End, LruTable, Slot, TableKey, MAX_CLASSES};

/// Address as 16 bytes (IPv4 mapped into IPv6), cheap to hash and compare.
pub type Addr16 = [u8; 16];

/// The address as 16 bytes, IPv4 mapped into IPv6 (`::ffff:a.b.c.d`).
///
/// Built as one 128-bit number: `to_ipv6_mapped().octets()` assembles the array byte by
/// byte, and at opt-level "s" the compiler then kept the packet's addresses as sixteen
/// separate bytes, shifted back together for every hash and compare (~130 instructions a
/// frame on the loop, callgrind).
#[inline]
pub fn addr16(ip: IpAddr) -> Addr16 {
    addr_u128(ip).to_be_bytes()
}

/// The address as one big-endian 128-bit number, IPv4 mapped into IPv6: the same order as
/// comparing the 16 bytes, the same value as `u128::from(ip.to_ipv6_mapped())` for IPv4.
#[inline]
pub fn addr_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => (0xffff_u128 << 32) | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The two 64-bit halves of an address in 16-byte form (two loads, for hashing).
#[inline]
pub fn addr_halves(a: &Addr16) -> (u64, u64) {
    let x = u128::from_le_bytes(*a);
    (x as u64, (x >> 64) as u64)
}

/// The address back from its 16 bytes: IPv4-mapped (`::ffff:a.b.c.d`) is IPv4, as
/// `Ipv6Addr::to_ipv4_mapped` decides, in one 128-bit compare (a flow row makes two).
#[inline]
pub fn addr_from16(a: Addr16) -> IpAddr {
    let x = u128::from_be_bytes(a);
    if x >> 32 == 0xffff {
        IpAddr::V4(Ipv4Addr::from(x as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(x))
    }
}

/// Canonical bidirectional flow key: the (address, port) pairs are ordered so both
/// directions map to the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    pub lo: Addr16,
    pub hi: Addr16,
    pub lo_port: u16,
    pub hi_port: u16,
    pub proto: u8,
    pub vlan: u16,
}

impl FlowKey {
    /// Builds the key of `meta` and says whether the packet goes lo → hi.
    #[inline]
    pub fn of(meta: &PacketMeta) -> (FlowKey, bool) {
        Self::of16(meta, addr16(meta.src), addr16(meta.dst))
    }

    /// [`FlowKey::of`] with the packet's addresses already in 16-byte form (`s` = source).
    #[inline]
    pub fn of16(meta: &PacketMeta, s: Addr16, d: Addr16) -> (FlowKey, bool) {
        let (sp, dp) = match meta.ip_proto {
            IPPROTO_TCP | IPPROTO_UDP => (meta.src_port, meta.dst_port),
            // Echo request/reply pairs share the identifier.
            IPPROTO_ICMP | IPPROTO_ICMPV6 => (meta.icmp.id, meta.icmp.id),
            _ => (0, 0),
        };
        // Compared as numbers: the same order as the bytes, without a byte-by-byte walk.
        let fwd = (u128::from_be_bytes(s), sp) <= (u128::from_be_bytes(d), dp);
        let key = if fwd {
            FlowKey {
                lo: s,
                hi: d,
                lo_port: sp,
                hi_port: dp,
                proto: meta.ip_proto,
                vlan: meta.vlan,
            }
        } else {
            FlowKey {
                lo: d,
                hi: s,
                lo_port: dp,
                hi_port: sp,
                proto: meta.ip_proto,
                vlan: meta.vlan,
            }
        };
        (key, fwd)
    }
}

impl TableKey for FlowKey {
    #[inline]
    fn hash_with(&self, seed: u64) -> u64 {
        let (lo0, lo1) = addr_halves(&self.lo);
        let (hi0, hi1) = addr_halves(&self.hi);
        let ports = u64::from(self.lo_port)
            | (u64::from(self.hi_port) << 16)
            | (u64::from(self.proto) << 32)
            | (u64::from(self.vlan) << 40);
        let a = mix(lo0 ^ seed, lo1);
        let b = mix(hi0, hi1 ^ ports);
        mix(a, b)
    }
}

/// TCP handshake progress as far as detection needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TcpState {
    #[default]
    None,
    SynSent,
    SynAckSeen,
    Established,
    Closing,
    Closed,
}

/// Recency classes of the flow table (each has its own idle timeout).
pub const CLASS_TCP: u8 = 0;
pub const CLASS_UDP: u8 = 1;
pub const CLASS_OTHER: u8 = 2;
pub const CLASS_CLOSED: u8 = 3;

#[derive(Clone, Copy, Debug, Default)]
pub struct Flow {
    pub id: u64,
    pub start: Micros,
    pub last: Micros,
    /// True when the client (initiator) is the key's `lo` side.
    pub client_is_lo: bool,
    /// Index 0 = to server, 1 = to client.
    pub pkts: [u64; 2],
    pub bytes: [u64; 2],
    pub flags: [u8; 2],
    pub tcp: TcpState,
    /// The responder answered (anything but a RST / ICMP error).
    pub answered: bool,
    /// The responder refused (RST or ICMP unreachable).
    pub rejected: bool,
    /// Rule engine per-flow state (flowbits).
    pub rule_state: crate::rules::FlowRuleState,
    /// TCP sequence tracking per direction (0 = to server), for the `stream_size` keyword:
    /// the first sequence number (minus one when the SYN was not seen, as Suricata picks up
    /// a stream midway) and the highest next sequence number seen.
    pub seq_isn: [u32; 2],
    pub seq_next: [u32; 2],
    /// Bit `d` set once direction `d` has been seen.
    pub seq_seen: u8,
}

impl Flow {
    /// Bytes of sequence space each side has used so far (client, server): Suricata's
    /// `next_seq - isn`, SYN and FIN counting one each, retransmissions not again.
    pub fn stream_sizes(&self) -> [u32; 2] {
        std::array::from_fn(|d| {
            if self.seq_seen & (1 << d) != 0 {
                self.seq_next[d].wrapping_sub(self.seq_isn[d])
            } else {
                0
            }
        })
    }

    /// True once packets went both ways (UDP/ICMP) or the TCP handshake completed.
    pub fn established(&self, proto: u8) -> bool {
        if proto == IPPROTO_TCP {
            matches!(self.tcp, TcpState::Established | TcpState::Closing)
        } else {
            self.pkts[0] > 0 && self.pkts[1] > 0
        }
    }

    /// Summary row for the store.
    #[inline]
    pub fn row(&self, key: &FlowKey, reason: &'static str) -> FlowRow {
        let (c, cp, s, sp) = if self.client_is_lo {
            (key.lo, key.lo_port, key.hi, key.hi_port)
        } else {
            (key.hi, key.hi_port, key.lo, key.lo_port)
        };
        FlowRow {
            flow_id: self.id,
            start: self.start,
            end: self.last,
            src: addr_from16(c),
            src_port: cp,
            dst: addr_from16(s),
            dst_port: sp,
            proto: key.proto,
            pkts_to_server: self.pkts[0],
            pkts_to_client: self.pkts[1],
            bytes_to_server: self.bytes[0],
            bytes_to_client: self.bytes[1],
            tcp_flags: self.flags[0] | self.flags[1],
            reason,
        }
    }
}

/// What one packet did to its flow.
#[derive(Clone, Copy, Debug)]
pub struct FlowUpdate {
    pub slot: Slot,
    /// The packet created the flow.
    pub new: bool,
    /// The packet goes from client to server.
    pub to_server: bool,
    /// First packet back from the responder: answered (or rejected) just now.
    pub first_reply: bool,
    pub established: bool,
    /// TCP: sequence space used by (client, server) so far, this packet included.
    pub stream: [u32; 2],
}

/// Idle timeouts per class, in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct FlowTimeouts {
    pub tcp: Micros,
    pub udp: Micros,
    pub other: Micros,
    pub closed: Micros,
}

pub struct FlowTable {
    pub table: LruTable<FlowKey, Flow>,
    pub timeouts: FlowTimeouts,
    next_id: u64,
    pub evicted: u64,
    pub expired: u64,
    pub created: u64,
    /// An expiry was begun and not yet completed (see [`FlowTable::begin_expiry`]).
    pending: bool,
}

/// Why a flow of recency class `class` ends when it expires.
fn expiry_reason(class: u8) -> &'static str {
    if class == CLASS_CLOSED {
        "closed"
    } else {
        "timeout"
    }
}

fn class_of(proto: u8) -> u8 {
    match proto {
        IPPROTO_TCP => CLASS_TCP,
        IPPROTO_UDP => CLASS_UDP,
        _ => CLASS_OTHER,
    }
}

impl FlowTable {
    pub fn new(capacity: usize, timeouts: FlowTimeouts, seed: u64) -> Self {
        FlowTable {
            table: LruTable::with_capacity(capacity, seed),
            timeouts,
            next_id: 1,
            evicted: 0,
            expired: 0,
            created: 0,
            pending: false,
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The hash `key` is filed under, for [`FlowTable::prefetch_hashed`] and
    /// [`FlowTable::update_hashed`] (hashing once per packet, not twice).
    #[inline]
    pub fn hash_of(&self, key: &FlowKey) -> u64 {
        self.table.hash_of(key)
    }

    /// Hints the index line [`FlowTable::update_hashed`] reads first for hash `h` (timing
    /// only).
    #[inline]
    pub fn prefetch_hashed(&self, h: u64) {
        self.table.prefetch_hash(h);
    }

    /// Hints the flow the next insertion would evict (timing only).
    #[inline]
    pub fn prefetch_victim(&self) {
        if let Some(v) = self.table.victim() {
            self.table.prefetch_eviction(v);
            let f = self.table.get(v);
            for line in 0..std::mem::size_of::<Flow>().div_ceil(64) {
                prefetch_line(f, line);
            }
        }
    }

    /// Looks up or creates the flow of an IP packet and updates its state. Evicted flows
    /// are handed to `on_end` with reason "evicted"; while an expiry is pending, a flow it
    /// has ended (found by this packet, or making room) with its timeout reason, so this
    /// packet starts a new flow exactly as if the expiry had completed.
    #[inline]
    pub fn update(
        &mut self,
        meta: &PacketMeta,
        ts: Micros,
        on_end: impl FnMut(&FlowKey, &Flow, &'static str),
    ) -> FlowUpdate {
        let (key, fwd) = FlowKey::of(meta);
        let h = self.hash_of(&key);
        self.update_hashed(key, h, fwd, meta, ts, on_end)
    }

    /// [`FlowTable::update`] with the packet's key already built (`FlowKey::of16`) and its
    /// hash from [`FlowTable::hash_of`].
    #[inline]
    pub fn update_hashed(
        &mut self,
        key: FlowKey,
        h: u64,
        fwd: bool,
        meta: &PacketMeta,
        ts: Micros,
        mut on_end: impl FnMut(&FlowKey, &Flow, &'static str),
    ) -> FlowUpdate {
        let proto = meta.ip_proto;
        let is_tcp = proto == IPPROTO_TCP;
        let flags = meta.tcp.flags;
        // A SYN-ACK seen first means we joined after the SYN: its sender is the server.
        let sender_is_server = is_tcp
            && flags & (tcp_flags::SYN | tcp_flags::ACK) == (tcp_flags::SYN | tcp_flags::ACK);
        let id = self.next_id;
        let mut ended = None;
        let (slot, new) = self.table.find_or_insert_hashed(
            key,
            h,
            class_of(proto),
            ts,
            |f| {
                *f = Flow {
                    id,
                    start: ts,
                    last: ts,
                    client_is_lo: fwd != sender_is_server,
                    ..Flow::default()
                };
            },
            |k, f, why| {
                ended = Some(why);
                let reason = match why {
                    End::Evicted => "evicted",
                    End::Expired(c) => expiry_reason(c),
                };
                on_end(k, f, reason);
            },
        );
        match ended {
            Some(End::Evicted) => self.evicted += 1,
            Some(End::Expired(_)) => self.expired += 1,
            None => {}
        }
        if new {
            self.next_id += 1;
            self.created += 1;
        }
        self.table.touch(slot, ts);
        let f = self.table.get_mut(slot);
        let to_server = fwd == f.client_is_lo;
        let dir = usize::from(!to_server);
        if ts > f.last {
            f.last = ts;
        }
        let had_reply = f.pkts[1] > 0;
        f.pkts[dir] += 1;
        f.bytes[dir] += u64::from(meta.wire_len);
        f.flags[dir] |= flags;
        let mut first_reply = false;
        if !to_server && !had_reply {
            first_reply = true;
            if is_tcp && flags & tcp_flags::RST != 0 {
                f.rejected = true;
            } else {
                f.answered = true;
            }
        }
        // A TCP packet is "established" only once the handshake completed before it (the
        // handshake's final ACK is not), as Suricata's flow keyword sees it.
        let tcp_was_established = f.established(proto);
        let mut closed = false;
        if is_tcp {
            let syn = u32::from(flags & tcp_flags::SYN != 0);
            let fin = u32::from(flags & tcp_flags::FIN != 0);
            let seq = meta.tcp.seq;
            let end = seq.wrapping_add(meta.payload_len + syn + fin);
            if f.seq_seen & (1 << dir) == 0 {
                f.seq_seen |= 1 << dir;
                f.seq_isn[dir] = if syn == 1 { seq } else { seq.wrapping_sub(1) };
                f.seq_next[dir] = end;
            } else if (end.wrapping_sub(f.seq_next[dir]) as i32) > 0 {
                f.seq_next[dir] = end;
            }
        }
        if is_tcp {
            use TcpState::*;
            let syn = flags & tcp_flags::SYN != 0;
            let ack = flags & tcp_flags::ACK != 0;
            f.tcp = match (f.tcp, to_server) {
                _ if flags & tcp_flags::RST != 0 => {
                    closed = true;
                    Closed
                }
                (None, true) if syn && !ack => SynSent,
                (None, false) if syn && ack => SynAckSeen,
                (SynSent, false) if syn && ack => SynAckSeen,
                (SynAckSeen, true) if ack && !syn => Established,
                (Established, _) if flags & tcp_flags::FIN != 0 => Closing,
                (Closing, _)
                    if f.flags[0] & tcp_flags::FIN != 0 && f.flags[1] & tcp_flags::FIN != 0 =>
                {
                    closed = true;
                    Closed
                }
                (s, _) => s,
            };
        }
        let established = if is_tcp {
            tcp_was_established
        } else {
            f.established(proto)
        };
        let stream = if is_tcp { f.stream_sizes() } else { [0; 2] };
        if closed {
            self.table.set_class(slot, CLASS_CLOSED);
        }
        FlowUpdate {
            slot,
            new,
            to_server,
            first_reply,
            established,
            stream,
        }
    }

    /// Marks the flow matching a packet quoted in an ICMP error as refused. Returns the slot.
    pub fn mark_rejected(&mut self, quoted: &PacketMeta) -> Option<Slot> {
        let (key, _) = FlowKey::of(quoted);
        let slot = self.table.find(&key)?;
        if self.table.is_stale(slot) {
            // Ended by the pending expiry: as good as gone.
            return None;
        }
        let f = self.table.get_mut(slot);
        if f.answered || f.rejected {
            return None;
        }
        f.rejected = true;
        Some(slot)
    }

    /// Ends flows idle past their class timeout at `now`, all at once.
    pub fn expire(&mut self, now: Micros, on_end: impl FnMut(&FlowKey, &Flow, &'static str)) {
        self.begin_expiry(now);
        self.expire_some(usize::MAX, on_end);
    }

    /// Starts ending the flows idle past their class timeout at `now`: from here on they
    /// count as ended (a packet of one starts a new flow, a full table reuses them first)
    /// while [`FlowTable::expire_some`] hands them out in bounded steps. A later call
    /// extends a pending expiry.
    pub fn begin_expiry(&mut self, now: Micros) {
        let t = self.timeouts;
        let mut cut = [i64::MIN; MAX_CLASSES];
        for (class, timeout) in [
            (CLASS_TCP, t.tcp),
            (CLASS_UDP, t.udp),
            (CLASS_OTHER, t.other),
            (CLASS_CLOSED, t.closed),
        ] {
            cut[class as usize] = now.saturating_sub(timeout);
        }
        self.table.set_stale(cut);
        self.pending = true;
    }

    /// True while a begun expiry has flows left to hand out.
    #[inline]
    pub fn expiry_pending(&self) -> bool {
        self.pending
    }

    /// Hands at most `max` flows of the pending expiry to `on_end` (oldest first per class).
    /// Returns how many; the expiry is complete when that is less than `max`.
    pub fn expire_some(
        &mut self,
        max: usize,
        mut on_end: impl FnMut(&FlowKey, &Flow, &'static str),
    ) -> usize {
        if !self.pending {
            return 0;
        }
        let n = self
            .table
            .expire_stale(max, |k, f, c| on_end(k, f, expiry_reason(c)));
        if n < max {
            self.pending = false;
        }
        self.expired += n as u64;
        n
    }

    /// Ends at most `max` flows at shutdown: first those a pending expiry ended (with their
    /// timeout reason), then the rest ("shutdown"). Returns how many; the table is empty
    /// when that is less than `max`.
    pub fn drain_some(
        &mut self,
        max: usize,
        mut on_end: impl FnMut(&FlowKey, &Flow, &'static str),
    ) -> usize {
        let n = self.expire_some(max, &mut on_end);
        if n == max {
            return n;
        }
        n + self
            .table
            .drain_some(max - n, |k, f| on_end(k, f, "shutdown"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, flags: u8) -> PacketMeta {
        PacketMeta {
            l3: crate::decode::L3::Ipv4,
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: IpAddr::V4(Ipv4Addr::from(dst)),
            ip_proto: IPPROTO_TCP,
            src_port: sp,
            dst_port: dp,
            wire_len: 60,
            tcp: crate::decode::TcpInfo {
                flags,
                ..Default::default()
            },
            ..PacketMeta::default()
        }
    }

    /// Addresses of every kind the conversions must get right (none of them an IPv4-mapped
    /// IPv6 address, which reads back as IPv4).
    fn addresses() -> Vec<IpAddr> {
        [
            "10.1.2.3",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.251",
            "::",
            "::1.2.3.4", // IPv4-compatible, not mapped: stays IPv6
            "fe80::ffff:1.2.3.4",
            "fe80::1:2:3:4",
            "ff02::fb",
            "2001:db8::ffff:0:1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect()
    }

    #[test]
    fn the_numeric_address_forms_agree_with_std() {
        for ip in addresses() {
            let mapped = match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            assert_eq!(addr16(ip), mapped.octets(), "{ip}");
            assert_eq!(addr_u128(ip), u128::from(mapped), "{ip}");
            let (lo, hi) = addr_halves(&addr16(ip));
            let o = mapped.octets();
            assert_eq!(lo, u64::from_le_bytes(o[..8].try_into().unwrap()), "{ip}");
            assert_eq!(hi, u64::from_le_bytes(o[8..].try_into().unwrap()), "{ip}");
        }
        // Flow keys order the two ends by the bytes, whichever end comes first.
        for (a, b) in [
            ("10.0.0.2", "10.0.0.10"),
            ("::1", "10.0.0.1"),
            ("fe80::1", "ff02::1"),
        ] {
            let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
            let mut m = PacketMeta {
                ip_proto: IPPROTO_UDP,
                src: a,
                dst: b,
                src_port: 7,
                dst_port: 7,
                ..PacketMeta::default()
            };
            let (k, fwd) = FlowKey::of(&m);
            assert_eq!(fwd, addr16(a) <= addr16(b));
            std::mem::swap(&mut m.src, &mut m.dst);
            assert_eq!(FlowKey::of(&m), (k, !fwd));
        }
    }

    #[test]
    fn addr_from16_agrees_with_std() {
        for ip in addresses() {
            let a = addr16(ip);
            let v6 = Ipv6Addr::from(a);
            let want = match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            };
            assert_eq!(addr_from16(a), want, "{ip}");
            assert_eq!(addr_from16(a), ip, "{ip}");
        }
        // Bytes no address maps to but a mapped prefix in the wrong place.
        let mut a = [0u8; 16];
        a[8..10].copy_from_slice(&[0xff, 0xff]);
        assert!(matches!(addr_from16(a), IpAddr::V6(_)));
    }

    fn timeouts() -> FlowTimeouts {
        FlowTimeouts {
            tcp: 60_000_000,
            udp: 30_000_000,
            other: 30_000_000,
            closed: 5_000_000,
        }
    }

    #[test]
    fn handshake_direction_and_establishment() {
        use tcp_flags::*;
        let mut ft = FlowTable::new(16, timeouts(), 1);
        let c = [10, 0, 0, 2];
        let s = [10, 0, 0, 1];
        let u = ft.update(&tcp(c, 40000, s, 22, SYN), 1, |_, _, _| {});
        assert!(u.new && u.to_server && !u.established);
        let u = ft.update(&tcp(s, 22, c, 40000, SYN | ACK), 2, |_, _, _| {});
        assert!(!u.new && !u.to_server && u.first_reply && !u.established);
        let u = ft.update(&tcp(c, 40000, s, 22, ACK), 3, |_, _, _| {});
        // The handshake's final ACK itself is not yet "established"; the next packet is.
        assert!(u.to_server && !u.established);
        let u = ft.update(&tcp(c, 40000, s, 22, PSH | ACK), 4, |_, _, _| {});
        assert!(u.established);
        let f = ft.table.get(u.slot);
        assert_eq!(f.pkts, [3, 1]);
        assert!(f.answered && !f.rejected);
        let row = f.row(ft.table.key(u.slot).unwrap(), "timeout");
        assert_eq!(row.src, IpAddr::V4(Ipv4Addr::from(c)));
        assert_eq!(row.dst_port, 22);
    }

    #[test]
    fn stream_sizes_follow_sequence_space_like_suricata() {
        use tcp_flags::*;
        let (c, s) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let mut ft = FlowTable::new(16, timeouts(), 1);
        let mut pkt = |from_client: bool, flags: u8, seq: u32, len: u32| {
            let mut m = if from_client {
                tcp(c, 40000, s, 445, flags)
            } else {
                tcp(s, 445, c, 40000, flags)
            };
            m.tcp.seq = seq;
            m.payload_len = len;
            ft.update(&m, 1, |_, _, _| {}).stream
        };
        // The SYN and SYN-ACK use one each.
        assert_eq!(pkt(true, SYN, 1000, 0), [1, 0]);
        assert_eq!(pkt(false, SYN | ACK, u32::MAX - 10, 0), [1, 1]);
        assert_eq!(pkt(true, ACK, 1001, 0), [1, 1]);
        assert_eq!(pkt(true, ACK | PSH, 1001, 100), [101, 1]);
        // A retransmission adds nothing; the server's data wraps the sequence space.
        assert_eq!(pkt(true, ACK | PSH, 1001, 100), [101, 1]);
        assert_eq!(pkt(false, ACK | PSH, u32::MAX - 9, 50), [101, 51]);
        // An older segment arriving late does not move the edge back.
        assert_eq!(pkt(false, ACK, u32::MAX - 9, 0), [101, 51]);
        assert_eq!(pkt(true, ACK | FIN, 1101, 0), [102, 51]);
        // Joined midway (no SYN seen): the first byte seen counts from one before it.
        let mut m = tcp([10, 0, 0, 3], 5000, s, 80, ACK | PSH);
        m.tcp.seq = 7000;
        m.payload_len = 10;
        assert_eq!(ft.update(&m, 2, |_, _, _| {}).stream, [11, 0]);
        // Not TCP: nothing to measure.
        let mut u = tcp([10, 0, 0, 4], 53, s, 53, 0);
        u.ip_proto = 17;
        u.payload_len = 30;
        assert_eq!(ft.update(&u, 3, |_, _, _| {}).stream, [0, 0]);
    }

    #[test]
    fn synack_first_makes_sender_the_server() {
        use tcp_flags::*;
        let mut ft = FlowTable::new(16, timeouts(), 1);
        let u = ft.update(
            &tcp([1, 1, 1, 1], 80, [2, 2, 2, 2], 5555, SYN | ACK),
            1,
            |_, _, _| {},
        );
        assert!(u.new && !u.to_server);
        let row = ft.table.get(u.slot).row(ft.table.key(u.slot).unwrap(), "x");
        assert_eq!(row.src, IpAddr::V4(Ipv4Addr::new(2, 2, 2, 2)));
        assert_eq!(row.dst_port, 80);
    }

    #[test]
    fn rst_reply_is_rejection_and_closes() {
        use tcp_flags::*;
        let mut ft = FlowTable::new(16, timeouts(), 1);
        ft.update(
            &tcp([1, 0, 0, 1], 1000, [1, 0, 0, 2], 23, SYN),
            0,
            |_, _, _| {},
        );
        let u = ft.update(
            &tcp([1, 0, 0, 2], 23, [1, 0, 0, 1], 1000, RST | ACK),
            1,
            |_, _, _| {},
        );
        let f = ft.table.get(u.slot);
        assert!(f.rejected && !f.answered && f.tcp == TcpState::Closed);
        let mut ended = Vec::new();
        ft.expire(10_000_000, |_, f, r| ended.push((f.id, r)));
        assert_eq!(ended, vec![(1, "closed")]);
    }

    #[test]
    fn full_table_evicts_and_counts() {
        let mut ft = FlowTable::new(4, timeouts(), 1);
        let mut ended = 0;
        for p in 0..10u16 {
            ft.update(
                &tcp([1, 0, 0, 1], 1000 + p, [1, 0, 0, 2], 80, tcp_flags::SYN),
                i64::from(p),
                |_, _, r| {
                    assert_eq!(r, "evicted");
                    ended += 1;
                },
            );
        }
        assert_eq!(ended, 6);
        assert_eq!(ft.evicted, 6);
        assert_eq!(ft.len(), 4);
    }

    #[test]
    fn pending_expiry_ends_a_stale_flow_before_its_next_packet() {
        use tcp_flags::*;
        let mut ft = FlowTable::new(2, timeouts(), 1);
        let (a, b, c) = ([10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]);
        ft.update(&tcp(a, 1000, b, 80, SYN), 0, |_, _, _| {});
        ft.update(&tcp(a, 1001, b, 80, SYN), 1, |_, _, _| {});
        // 61 s later both are past the TCP timeout; nothing handed out yet (no room).
        ft.begin_expiry(61_000_000);
        assert_eq!(ft.expire_some(0, |_, _, _| panic!("no room")), 0);
        assert!(ft.expiry_pending());
        let icmp_quote = tcp(a, 1001, b, 80, SYN);
        assert_eq!(ft.mark_rejected(&icmp_quote), None, "a stale flow is gone");
        let mut ended = Vec::new();
        // A packet of the first flow: it ends (timeout) and a new flow starts.
        let u = ft.update(&tcp(a, 1000, b, 80, ACK), 61_000_001, |_, f, r| {
            ended.push((f.id, r))
        });
        assert!(u.new);
        assert_eq!(ft.table.get(u.slot).id, 3);
        // A new flow into the full table takes the other stale flow, not the live one.
        let u2 = ft.update(&tcp(c, 5, b, 80, SYN), 61_000_002, |_, f, r| {
            ended.push((f.id, r))
        });
        assert!(u2.new);
        assert_eq!(ended, vec![(1, "timeout"), (2, "timeout")]);
        assert_eq!((ft.expired, ft.evicted), (2, 0));
        // Nothing left to expire; the next insertion evicts the least recent live flow.
        assert_eq!(ft.expire_some(10, |_, _, _| panic!("none left")), 0);
        assert!(!ft.expiry_pending());
        ft.update(&tcp(c, 6, b, 80, SYN), 61_000_003, |_, f, r| {
            ended.push((f.id, r))
        });
        assert_eq!(ended[2], (3, "evicted"));
        // Shutdown in steps of one.
        let mut rest = Vec::new();
        while ft.drain_some(1, |_, f, r| rest.push((f.id, r))) == 1 {}
        rest.sort_unstable();
        assert_eq!(rest, vec![(4, "shutdown"), (5, "shutdown")]);
    }
}
