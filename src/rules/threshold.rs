//! `threshold` and `detection_filter` state: a fixed-capacity table allocated at load (the
//! oldest entry is evicted when full), so a flood of sources cannot grow memory.

use std::hash::{BuildHasher, Hasher};

use crate::decode::Micros;
use crate::table::{mix, random_seed, ProbeIndex, TableKey};

/// Seeded multiply-fold hashing of tracking keys. SipHash over the 37-byte key cost more
/// than the rest of `check` on the benchmark capture; the per-process seed still keeps
/// remote senders from aiming at collisions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyHash(u64);

/// A fixed seed, for maps whose keys come from the rules, not from traffic.
impl Default for KeyHash {
    fn default() -> Self {
        KeyHash(0x243f_6a88_85a3_08d3)
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    #[inline]
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0)
    }
}

pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.0 = mix(self.0, u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = mix(self.0, u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.0 = mix(self.0, u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = mix(self.0, i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.0 = mix(self.0 ^ (i >> 64) as u64, i as u64);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreshKind {
    /// Alert on at most `count` matches per window.
    Limit,
    /// Alert on every `count`-th match within the window.
    Threshold,
    /// Alert once per window, on the `count`-th match.
    Both,
    /// `detection_filter`: alert on every match after the first `count` within the window.
    DetectionFilter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Track {
    BySrc,
    ByDst,
    ByRule,
    ByBoth,
    ByFlow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UniqueOn {
    SrcPort,
    DstPort,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreshSpec {
    pub kind: ThreshKind,
    pub track: Track,
    pub count: u32,
    pub seconds: u32,
    /// detection_filter only: count distinct ports instead of matches.
    pub unique_on: Option<UniqueOn>,
}

/// Largest `count` a `unique_on` detection_filter may use (distinct ports are kept inline).
pub const UNIQ_CAP: usize = 64;

/// What a tracking entry is keyed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TKey {
    pub rule: u32,
    pub a: u128,
    pub b: u128,
    pub ports: u32,
    pub proto: u8,
}

impl TableKey for TKey {
    /// Three multiply-folds over the 37 key bytes (the `Hash` derive through `KeyHasher`
    /// took five).
    #[inline]
    fn hash_with(&self, seed: u64) -> u64 {
        let x = mix(
            (self.a as u64) ^ seed,
            ((self.a >> 64) as u64) ^ u64::from(self.rule),
        );
        let y = mix(
            (self.b as u64) ^ u64::from(self.ports) ^ (u64::from(self.proto) << 32),
            (self.b >> 64) as u64,
        );
        mix(x, y)
    }
}

/// One tracking entry: exactly one cache line (48-byte key, window start, counts), so a
/// check touches one line of `slots` (it was 80 bytes, most spanning two lines). Every
/// entry in `slots` is in use; its hash is kept beside it in `Tracker::hashes` (the line
/// has no room for it).
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
struct Slot {
    key: TKey,
    start: Micros,
    count: u32,
    nuniq: u8,
}

/// The tracking table: entries in `slots`, found through an open-addressing index (twice
/// the capacity, allocated zeroed at start-up), so a match costs one hash, one probe and no
/// allocation.
#[derive(Debug)]
pub struct Tracker {
    index: ProbeIndex,
    seed: u64,
    slots: Vec<Slot>,
    /// Each entry's hash, beside it: an eviction finds the old key's index position without
    /// hashing the key again (a flood of new sources evicts on every match).
    hashes: Vec<u64>,
    uniq: Vec<[u16; UNIQ_CAP]>,
    /// Entries at most; `slots` (and `uniq`) fill up to it as keys arrive, so unused
    /// capacity is reserved address space, not resident memory (0.7 MB at start-up before).
    cap: usize,
    next: usize,
    /// Entries evicted because the table was full.
    pub evicted: u64,
}

impl Tracker {
    /// `cap` entries (at least 1); `unique` reserves distinct-port storage per entry.
    pub fn new(cap: usize, unique: bool) -> Tracker {
        let cap = cap.max(1);
        Tracker {
            index: ProbeIndex::new(cap),
            seed: random_seed(),
            slots: Vec::with_capacity(cap),
            hashes: Vec::with_capacity(cap),
            uniq: Vec::with_capacity(if unique { cap } else { 0 }),
            cap,
            next: 0,
            evicted: 0,
        }
    }

    /// Records one match and says whether it alerts.
    pub fn check(&mut self, spec: &ThreshSpec, key: TKey, ts: Micros, port: u16) -> bool {
        let window = i64::from(spec.seconds) * 1_000_000;
        let h = key.hash_with(self.seed);
        let slots = &self.slots;
        let (idx, created) = match self.index.find(h, |s| slots[s as usize].key == key) {
            Some((_, i)) => (i as usize, false),
            None => {
                let slot = Slot {
                    key,
                    start: ts,
                    count: 0,
                    nuniq: 0,
                };
                let i = if self.slots.len() < self.cap {
                    // Filling up: the next never-used entry (within the reserved capacity).
                    self.slots.push(slot);
                    self.hashes.push(h);
                    if self.uniq.len() < self.uniq.capacity() {
                        self.uniq.push([0; UNIQ_CAP]);
                    }
                    self.slots.len() - 1
                } else {
                    // Full: round-robin over the entries, oldest created first.
                    let i = self.next;
                    self.next = (self.next + 1) % self.cap;
                    let old = self.hashes[i];
                    if let Some((at, _)) = self.index.find(old, |s| s as usize == i) {
                        self.index.remove_at(at);
                    }
                    self.evicted += 1;
                    self.slots[i] = slot;
                    self.hashes[i] = h;
                    i
                };
                self.index.insert(h, i as u32);
                (i, true)
            }
        };
        let slot = &mut self.slots[idx];
        // The window starts at the first match and is not sliding (Suricata semantics).
        if !created && ts - slot.start > window {
            slot.start = ts;
            slot.count = 0;
            slot.nuniq = 0;
        }
        if let (Some(_), ThreshKind::DetectionFilter) = (spec.unique_on, spec.kind) {
            // Past the count every match alerts until the window ends (the distinct count
            // only grows within a window, and a key always has the same spec): no need to
            // scan the ports. A scanner past 64 ports made every check scan all 64.
            if u32::from(slot.nuniq) > spec.count {
                return true;
            }
            if let Some(ports) = self.uniq.get_mut(idx) {
                let n = usize::from(slot.nuniq);
                if n < UNIQ_CAP && !ports[..n].contains(&port) {
                    ports[n] = port;
                    slot.nuniq += 1;
                }
                return u32::from(slot.nuniq) > spec.count;
            }
        }
        slot.count = slot.count.saturating_add(1);
        let c = slot.count;
        match spec.kind {
            ThreshKind::Limit => c <= spec.count,
            ThreshKind::Threshold => {
                if c >= spec.count {
                    // Counting starts again; the window start stays.
                    slot.count = 0;
                    true
                } else {
                    false
                }
            }
            ThreshKind::Both => c == spec.count,
            ThreshKind::DetectionFilter => c > spec.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: ThreshKind, count: u32, seconds: u32) -> ThreshSpec {
        ThreshSpec {
            kind,
            track: Track::BySrc,
            count,
            seconds,
            unique_on: None,
        }
    }

    fn run(s: ThreshSpec, times: &[i64]) -> Vec<bool> {
        let mut t = Tracker::new(4, true);
        times
            .iter()
            .map(|&ts| t.check(&s, TKey::default(), ts * 1_000_000, 0))
            .collect()
    }

    #[test]
    fn limit_threshold_both_and_detection_filter() {
        let t = [0, 1, 2, 3, 4, 100, 101];
        assert_eq!(
            run(spec(ThreshKind::Limit, 2, 60), &t),
            [true, true, false, false, false, true, true]
        );
        assert_eq!(
            run(spec(ThreshKind::Threshold, 2, 60), &t),
            [false, true, false, true, false, false, true]
        );
        assert_eq!(
            run(spec(ThreshKind::Both, 2, 60), &t),
            [false, true, false, false, false, false, true]
        );
        assert_eq!(
            run(spec(ThreshKind::DetectionFilter, 2, 60), &t),
            [false, false, true, true, true, false, false]
        );
    }

    #[test]
    fn eviction_keeps_the_table_bounded() {
        let s = spec(ThreshKind::DetectionFilter, 1, 60);
        let mut t = Tracker::new(2, false);
        let k = |a: u128| TKey {
            a,
            ..TKey::default()
        };
        assert!(!t.check(&s, k(1), 0, 0));
        assert!(!t.check(&s, k(2), 0, 0));
        assert!(!t.check(&s, k(3), 0, 0)); // evicts key 1
        assert_eq!(t.evicted, 1);
        assert!(!t.check(&s, k(1), 0, 0)); // key 1 starts over
        assert!(t.check(&s, k(1), 1, 0));
    }

    /// Many keys through a small table: every answer and the eviction count match a plain
    /// list with the documented semantics (fill, then replace round-robin, oldest created
    /// first), so the index never loses or invents an entry.
    #[test]
    fn index_matches_a_round_robin_list() {
        let s = spec(ThreshKind::Limit, 3, 5);
        let cap = 16;
        let mut t = Tracker::new(cap, false);
        // (key, window start, count) per slot, in slot order.
        let mut model: Vec<(TKey, i64, u32)> = Vec::new();
        let (mut next, mut evicted) = (0, 0u64);
        let mut x: u64 = 0x9e37_79b9;
        for step in 0..20_000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = TKey {
                rule: (x % 3) as u32,
                a: u128::from((x >> 8) % 23),
                b: u128::from((x >> 16) % 2) << 100,
                ..TKey::default()
            };
            let ts = step * 100_000;
            let i = match model.iter().position(|e| e.0 == key) {
                Some(i) => {
                    if ts - model[i].1 > 5_000_000 {
                        model[i].1 = ts;
                        model[i].2 = 0;
                    }
                    i
                }
                None => {
                    let i = if model.len() < cap {
                        model.push((key, ts, 0));
                        model.len() - 1
                    } else {
                        let i = next;
                        next = (next + 1) % cap;
                        evicted += 1;
                        i
                    };
                    model[i] = (key, ts, 0);
                    i
                }
            };
            model[i].2 += 1;
            let want = model[i].2 <= 3;
            assert_eq!(t.check(&s, key, ts, 0), want, "step {step}");
        }
        assert_eq!(t.evicted, evicted);
        assert!(evicted > 1000, "the test must evict: {evicted}");
    }

    /// The layout the tracker's cache behaviour rests on.
    #[test]
    fn an_entry_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }

    #[test]
    fn unique_on_counts_distinct_ports() {
        let s = ThreshSpec {
            unique_on: Some(UniqueOn::DstPort),
            ..spec(ThreshKind::DetectionFilter, 2, 60)
        };
        let mut t = Tracker::new(2, true);
        let k = TKey::default();
        assert!(!t.check(&s, k, 0, 80));
        assert!(!t.check(&s, k, 1, 80));
        assert!(!t.check(&s, k, 2, 443));
        assert!(t.check(&s, k, 3, 22));
        assert!(t.check(&s, k, 4, 22));
        assert!(t.check(&s, k, 5, 8080));
        // A new window counts from nothing again.
        assert!(!t.check(&s, k, 70_000_000, 22));
        assert!(!t.check(&s, k, 70_000_001, 23));
        assert!(t.check(&s, k, 70_000_002, 24));
    }
}
