//! Hosts: per-address rings of ten 1-second buckets (what the host sent and received),
//! distinct-count sketches, a long-run rate baseline, and the evidence gathered in the
//! current second — the raw material of the feature schema and the verdicts.

use crate::decode::Micros;
use crate::flow::Addr16;
use crate::judge::PacketEv;
use crate::prefetch::{prefetch, prefetch_line};
use crate::table::{mix, LruTable, ProbeIndex, Slot, TableKey};

/// Cache lines before a host's buckets: what a new host resets.
const HEADER_LINES: usize = std::mem::offset_of!(Host, buckets).div_ceil(64);

/// Seconds in the sliding window (the ring length).
pub const WINDOW_SECS: usize = 10;
/// Bits per distinct-count sketch (linear counting).
pub const SKETCH_BITS: usize = 256;
const SKETCH_WORDS: usize = SKETCH_BITS / 64;

impl TableKey for Addr16 {
    #[inline]
    fn hash_with(&self, seed: u64) -> u64 {
        let (a, b) = crate::flow::addr_halves(self);
        mix(a ^ seed, b)
    }
}

/// A fixed 256-bit linear-counting sketch of distinct values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sketch(pub [u64; SKETCH_WORDS]);

impl Sketch {
    #[inline]
    pub fn insert(&mut self, hash: u64) {
        let bit = (hash >> 56) as usize % SKETCH_BITS;
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    pub fn union(&mut self, other: &Sketch) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= *b;
        }
    }

    /// Linear-counting estimate: m·ln(m / zeros). With every bit set the estimate is capped
    /// at the value for half a zero bit.
    pub fn estimate(&self) -> f64 {
        let ones: u32 = self.0.iter().map(|w| w.count_ones()).sum();
        let m = SKETCH_BITS as f64;
        let zeros = (m - f64::from(ones)).max(0.5);
        m * (m / zeros).ln()
    }
}

/// What one host did in one second. Counts both directions. Which second a bucket holds is
/// kept apart, in [`Host::secs`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Bucket {
    pub pkts_out: u32,
    pub bytes_out: u64,
    pub pkts_in: u32,
    pub bytes_in: u64,
    pub tcp_out: u32,
    pub syn_out: u32,
    pub tcp_in: u32,
    pub syn_in: u32,
    pub icmp_out: u32,
    /// Flows this host initiated.
    pub flows_init: u32,
    /// First replies (non-RST) to flows this host initiated.
    pub flows_answered: u32,
    /// RST or ICMP-unreachable replies to flows this host initiated.
    pub flows_rejected: u32,
    pub dns_queries: u32,
    pub dns_len_sum: u32,
    pub dns_entropy_sum: f32,
    pub dst_hosts: Sketch,
    pub dst_ports: Sketch,
    /// Space-saving top-2 of (service hash, flows opened) — service = destination address + port.
    pub services: [(u32, u32); 2],
}

impl Bucket {
    #[inline]
    pub fn add_service(&mut self, svc: u32) {
        for s in self.services.iter_mut() {
            if s.0 == svc && s.1 > 0 {
                s.1 += 1;
                return;
            }
        }
        // Replace the smaller entry (space-saving: the newcomer inherits its count + 1).
        let i = usize::from(self.services[1].1 < self.services[0].1);
        let inherited = self.services[i].1;
        self.services[i] = (svc, inherited + 1);
    }
}

/// Signature hits attributed to a host in the current second.
#[derive(Clone, Copy, Debug, Default)]
pub struct SigEvidence {
    /// Up to 4 distinct rule indices (or built-in detector ids), in order of arrival.
    pub rules: [u32; 4],
    pub n_rules: u8,
    pub hits: u32,
    /// Best (lowest) priority seen; 0 = none.
    pub best_priority: u8,
}

/// Evidence gathered for a host during the current second, consumed by correlation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Evidence {
    pub sig: SigEvidence,
    /// Intel hit: list index + 1 (0 = none) and the listed peer or own address.
    pub intel_list: u16,
    pub intel_addr: Addr16,
    pub intel_hits: u32,
    /// ARP: this host's IP changed MAC (or a gratuitous-ARP burst claimed it).
    pub arp_change: bool,
    pub arp_old_mac: [u8; 6],
    pub arp_new_mac: [u8; 6],
}

impl Evidence {
    pub fn is_empty(&self) -> bool {
        self.sig.hits == 0 && self.intel_hits == 0 && !self.arp_change
    }

    pub fn add_signature(&mut self, rule: u32, priority: u8) {
        let s = &mut self.sig;
        s.hits += 1;
        if s.best_priority == 0 || (priority > 0 && priority < s.best_priority) {
            s.best_priority = priority.max(1);
        }
        if !s.rules[..usize::from(s.n_rules)].contains(&rule)
            && usize::from(s.n_rules) < s.rules.len()
        {
            s.rules[usize::from(s.n_rules)] = rule;
            s.n_rules += 1;
        }
    }
}

/// Long-run packet-rate baseline (EWMA of packets per second, idle seconds included).
#[derive(Clone, Copy, Debug, Default)]
pub struct Baseline {
    pub mean: f64,
    pub var: f64,
    /// Last second folded into the baseline.
    pub sec: i64,
    pub n: u32,
}

/// EWMA weight per second.
pub const BASELINE_ALPHA: f64 = 0.05;

impl Baseline {
    /// z-score of `x` packets in second `sec` against the baseline, then folds `x` in.
    /// Idle seconds since the last update count as zero-packet seconds.
    pub fn observe(&mut self, sec: i64, x: f64) -> f64 {
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
            self.sec = sec;
            self.n = 1;
            return 0.0;
        }
        let idle = (sec - self.sec - 1).clamp(0, 200);
        for _ in 0..idle {
            self.fold(0.0);
        }
        let z = (x - self.mean) / (self.var + 1.0).sqrt();
        self.fold(x);
        self.sec = sec;
        self.n = self.n.saturating_add(1);
        z
    }

    fn fold(&mut self, x: f64) {
        let d = x - self.mean;
        let incr = BASELINE_ALPHA * d;
        self.mean += incr;
        self.var = (1.0 - BASELINE_ALPHA) * (self.var + d * incr);
    }
}

/// Laid out by hand (`repr(C)`, cache-line aligned) for floods of spoofed sources, which
/// create a host per packet: what every packet touches comes first, then what a new host
/// resets, then the 1.5 KiB of buckets, of which a packet touches one.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
pub struct Host {
    /// Second in which the host was last put on the active list.
    pub active_sec: i64,
    pub last_seen: Micros,
    /// The second (Unix) each bucket holds; stale buckets are ignored. Kept apart from the
    /// buckets so that a new host and a window over a mostly idle host touch the header
    /// lines instead of one line per bucket.
    pub secs: [i64; WINDOW_SECS],
    pub first_seen: Micros,
    pub baseline: Baseline,
    pub windows: u64,
    pub flagged_windows: u64,
    /// Latest verdict level (index into Level::ALL) and risk, for /api/hosts.
    pub last_level: u8,
    pub last_risk: u8,
    pub max_level: u8,
    pub evidence: Evidence,
    pub buckets: [Bucket; WINDOW_SECS],
}

impl Host {
    /// The bucket of second `sec`, reset if it held an older second.
    #[inline]
    pub fn bucket(&mut self, sec: i64) -> &mut Bucket {
        let i = sec.rem_euclid(WINDOW_SECS as i64) as usize;
        let b = &mut self.buckets[i];
        if self.secs[i] != sec {
            self.secs[i] = sec;
            *b = Bucket::default();
        }
        b
    }

    /// Buckets within the window ending at `sec` (inclusive).
    pub fn window(&self, sec: i64) -> impl Iterator<Item = &Bucket> {
        self.secs
            .iter()
            .zip(self.buckets.iter())
            .filter(move |(&s, _)| s <= sec && s > sec - WINDOW_SECS as i64 && s != 0)
            .map(|(_, b)| b)
    }
}

pub struct HostTable {
    pub table: LruTable<Addr16, Host>,
    /// First sightings of addresses without a host (the judge's doorkeeper).
    pub probation: Probation,
    pub idle_timeout: Micros,
    pub evicted: u64,
    pub expired: u64,
    /// Hosts active in the current second, in order of first activity (deterministic).
    pub active: Vec<Slot>,
    /// `active` may be incomplete: an active host was evicted during the second.
    pub active_overflow: u64,
}

impl HostTable {
    pub fn new(capacity: usize, idle_timeout: Micros, seed: u64) -> Self {
        HostTable {
            table: LruTable::with_capacity(capacity, seed),
            probation: Probation::new(capacity, seed ^ 0x5851_f42d),
            idle_timeout,
            evicted: 0,
            expired: 0,
            // Room for every host plus slots reused after an eviction within one second.
            active: Vec::with_capacity(capacity * 2),
            active_overflow: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Hints the index line [`HostTable::touch`] reads first for `addr` (timing only).
    #[inline]
    pub fn prefetch(&self, addr: &Addr16) {
        self.table.prefetch_key(addr);
    }

    /// Hints the host the next insertion would evict, with the lines a new host in its slot
    /// resets in second `sec` (timing only).
    #[inline]
    pub fn prefetch_victim(&self, sec: i64) {
        if let Some(v) = self.table.victim() {
            self.table.prefetch_eviction(v);
            let h = self.table.get(v);
            for line in 0..HEADER_LINES {
                prefetch_line(h, line);
            }
            let b = &h.buckets[sec.rem_euclid(WINDOW_SECS as i64) as usize];
            for line in 0..=std::mem::size_of::<Bucket>() / 64 {
                prefetch_line(b, line);
            }
        }
    }

    /// Hints what judging the host in `slot` at the end of second `sec` reads: its key, its
    /// header and the bucket of `sec` (timing only).
    #[inline]
    pub fn prefetch_window(&self, slot: Slot, sec: i64) {
        let Some(h) = self.table.try_get(slot) else {
            return;
        };
        self.table.prefetch_meta(slot);
        prefetch_line(h, 0);
        prefetch_line(h, 1);
        let b = &h.buckets[sec.rem_euclid(WINDOW_SECS as i64) as usize];
        for line in 0..=std::mem::size_of::<Bucket>() / 64 {
            prefetch_line(b, line);
        }
    }

    /// Finds a known host, marks it active in `sec` and returns its slot; `None` (and no
    /// change) for an address without one.
    #[inline]
    pub fn touch_known(&mut self, addr: &Addr16, ts: Micros, sec: i64) -> Option<Slot> {
        let slot = self.table.find(addr)?;
        self.mark(slot, ts, sec);
        Some(slot)
    }

    #[inline]
    fn mark(&mut self, slot: Slot, ts: Micros, sec: i64) {
        self.table.touch(slot, ts);
        let h = self.table.get_mut(slot);
        h.last_seen = ts.max(h.last_seen);
        if h.active_sec != sec {
            h.active_sec = sec;
            if self.active.len() < self.active.capacity() {
                self.active.push(slot);
            }
        }
    }

    /// Finds or creates the host, marks it active in `sec`, and returns its slot.
    #[inline]
    pub fn touch(&mut self, addr: Addr16, ts: Micros, sec: i64) -> Slot {
        let mut evicted = false;
        let mut evicted_active = false;
        let (slot, _) = self.table.find_or_insert(
            addr,
            0,
            ts,
            |h| {
                // Field by field: building a whole 1.7 KiB host and copying it in cost
                // ~3% of the benchmark. Stale buckets only need a second that `bucket`
                // resets and `window` skips. (Destructured so a new field must be reset.)
                let Host {
                    secs,
                    buckets: _,
                    baseline,
                    first_seen,
                    last_seen,
                    active_sec,
                    evidence,
                    last_level,
                    last_risk,
                    max_level,
                    windows,
                    flagged_windows,
                } = h;
                *secs = [i64::MIN; WINDOW_SECS];
                *baseline = Baseline::default();
                *first_seen = ts;
                *last_seen = ts;
                *active_sec = i64::MIN;
                *evidence = Evidence::default();
                *last_level = 0;
                *last_risk = 0;
                *max_level = 0;
                *windows = 0;
                *flagged_windows = 0;
            },
            |_, h| {
                evicted = true;
                evicted_active = h.active_sec == sec;
            },
        );
        if evicted {
            self.evicted += 1;
        }
        if evicted_active {
            // The slot now holds the new host and will be listed again; close_second judges
            // each slot once, so the evicted host's window is simply lost (counted).
            self.active_overflow += 1;
        }
        self.mark(slot, ts, sec);
        slot
    }

    pub fn expire(&mut self, now: Micros) -> usize {
        let n = self
            .table
            .expire_class(0, now - self.idle_timeout, |_, _| {});
        self.expired += n as u64;
        n
    }
}

/// What a held first sighting of an address was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sighting {
    /// A free place in the ring (never held, or taken back).
    Free,
    /// The address sent the packet.
    Sent,
    /// The address received the packet.
    Received,
    /// One of the address's flows was rejected by an ICMP error (`ev.src` is the address).
    Rejected,
    /// The address sent an ARP packet (`ev.src`; `ev.wire_len`, and the target's hash in
    /// the first half of `ev.dst` when `ev.flags` is 1).
    Arp,
}

/// An address's first sighting, held until it shows up again: the packet event, and which
/// of its addresses it is about. One cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct Held {
    pub ev: PacketEv,
    pub kind: Sighting,
}

impl Held {
    pub const FREE: Held = Held {
        ev: PacketEv {
            ts: 0,
            src: [0; 16],
            dst: [0; 16],
            wire_len: 0,
            dns_entropy: 0.0,
            dst_port: 0,
            dns_len: 0,
            proto: 0,
            flags: 0,
        },
        kind: Sighting::Free,
    };

    /// The address the sighting is of.
    #[inline]
    pub fn addr(&self) -> &Addr16 {
        match self.kind {
            Sighting::Received => &self.ev.dst,
            _ => &self.ev.src,
        }
    }
}

/// Admission of hosts (the host table's doorkeeper): an address seen once is held here, in
/// a ring of fixed size, and gets a host (1.7 KiB of state, a place in the LRU order) only
/// when it shows up again, or at once when there is evidence against it. A spoofed-source
/// flood sends one packet from each address: without a doorkeeper every packet evicted the
/// least recently seen host, the real ones included, within a second. Held sightings are
/// replaced oldest first, so which ones survive depends on the order of the traffic only,
/// never on the process's hash seed.
pub struct Probation {
    ring: Box<[Held]>,
    index: ProbeIndex,
    /// Where the next sighting goes (the oldest one, or a free place).
    next: usize,
    seed: u64,
    /// Sightings held now.
    held: usize,
    /// Sightings replaced before their address showed up again (addresses never admitted).
    pub dropped: u64,
}

impl Probation {
    pub fn new(capacity: usize, seed: u64) -> Probation {
        let capacity = capacity.max(1);
        Probation {
            ring: vec![Held::FREE; capacity].into_boxed_slice(),
            index: ProbeIndex::new(capacity),
            next: 0,
            seed,
            held: 0,
            dropped: 0,
        }
    }

    /// Sightings held now.
    pub fn len(&self) -> usize {
        self.held
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn hash(&self, addr: &Addr16) -> u64 {
        addr.hash_with(self.seed)
    }

    /// Takes back `addr`'s held sighting, if any; one older than `max_age` at `now` is
    /// dropped instead (the host would have expired meanwhile).
    #[inline]
    pub fn take(&mut self, addr: &Addr16, now: Micros, max_age: Micros) -> Option<Held> {
        let ring = &self.ring;
        let (i, s) = self
            .index
            .find(self.hash(addr), |s| ring[s as usize].addr() == addr)?;
        self.index.remove_at(i);
        self.held -= 1;
        let held = std::mem::replace(&mut self.ring[s as usize], Held::FREE);
        (now.saturating_sub(held.ev.ts) <= max_age).then_some(held)
    }

    /// Holds a first sighting (of an address not held yet), replacing the oldest.
    #[inline]
    pub fn hold(&mut self, held: Held) {
        let s = self.next;
        self.next = if s + 1 == self.ring.len() { 0 } else { s + 1 };
        if self.ring[s].kind != Sighting::Free {
            let old = self.hash(self.ring[s].addr());
            if let Some((i, _)) = self.index.find(old, |o| o as usize == s) {
                self.index.remove_at(i);
            }
            self.dropped += 1;
        } else {
            self.held += 1;
        }
        prefetch(&self.ring, self.next);
        self.ring[s] = held;
        self.index.insert(self.hash(held.addr()), s as Slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    /// What a packet of a known host reads and writes sits in the first cache line or two,
    /// what a new host resets before the buckets, and the buckets last.
    #[test]
    fn host_layout_puts_the_header_before_the_buckets() {
        assert_eq!(align_of::<Host>(), 64);
        assert!(offset_of!(Host, active_sec) < 64 && offset_of!(Host, last_seen) < 64);
        assert!(offset_of!(Host, secs) + size_of::<[i64; WINDOW_SECS]>() <= 128);
        let header_end = offset_of!(Host, evidence) + size_of::<Evidence>();
        assert!(header_end <= 256, "header is {header_end} bytes");
        assert_eq!(offset_of!(Host, buckets), header_end.next_multiple_of(8));
        assert!(size_of::<Host>() < offset_of!(Host, buckets) + size_of::<[Bucket; 10]>() + 64);
    }

    fn sighting(i: u32, ts: Micros) -> Held {
        let mut h = Held {
            kind: Sighting::Sent,
            ..Held::FREE
        };
        h.ev.ts = ts;
        h.ev.src[12..16].copy_from_slice(&i.to_be_bytes());
        h
    }

    /// The ring drops the oldest sighting first, whatever the hash seed (which differs from
    /// one process to the next): which addresses get a host depends on the traffic alone.
    #[test]
    fn probation_drops_the_oldest_sighting_whatever_the_seed() {
        for seed in [1, 2, 0xdead_beef, u64::MAX] {
            let mut p = Probation::new(3, seed);
            for i in 0..5 {
                p.hold(sighting(i, 100 + i64::from(i)));
            }
            assert_eq!((p.len(), p.dropped), (3, 2));
            for i in 0..2 {
                assert!(p.take(sighting(i, 0).addr(), 200, 1_000).is_none(), "{i}");
            }
            // Taken back once: a second take finds nothing.
            let got = p.take(sighting(3, 0).addr(), 200, 1_000).map(|h| h.ev.ts);
            assert_eq!(got, Some(103));
            assert!(p.take(sighting(3, 0).addr(), 200, 1_000).is_none());
            assert_eq!(p.len(), 2);
            // A sighting older than the host timeout is dropped, not returned.
            assert!(p.take(sighting(4, 0).addr(), 104 + 1_001, 1_000).is_none());
            let got = p
                .take(sighting(2, 0).addr(), 102 + 1_000, 1_000)
                .map(|h| h.ev.ts);
            assert_eq!(got, Some(102));
            assert!(p.is_empty());
            // Freed places are reused; the index stays consistent through wrap-arounds.
            for i in 10..20 {
                p.hold(sighting(i, i64::from(i)));
            }
            for i in 17..20 {
                assert!(p.take(sighting(i, 0).addr(), 20, 100).is_some(), "{i}");
            }
            assert!(p.is_empty());
        }
    }

    #[test]
    fn bucket_resets_on_a_new_second_only() {
        let mut h = Host {
            secs: [i64::MIN; WINDOW_SECS],
            ..Host::default()
        };
        h.bucket(100).pkts_out = 3;
        assert_eq!(h.bucket(100).pkts_out, 3);
        assert_eq!(h.bucket(110).pkts_out, 0); // same ring position, newer second
        assert_eq!(h.window(110).count(), 1);
    }
}
