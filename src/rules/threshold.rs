//! `threshold` and `detection_filter` state: a fixed-capacity table allocated at load (the
//! oldest entry is evicted when full), so a flood of sources cannot grow memory.

use std::hash::{BuildHasher, Hasher};

use super::addr::addr_key;
use crate::decode::{Micros, PacketMeta};
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

/// A key's first match, held in the ring of first sightings: the state its entry would have
/// after that match, in 24 bytes instead of a 64-byte entry and a line of distinct ports.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    /// The key's hash. A held key is recognised by it (the index holds its low half): with
    /// the per-process seed two live keys share all 64 bits with odds of ~2^-64. The index
    /// also finds the place again by it when the ring reuses it.
    hash: u64,
    start: Micros,
    /// The first port, when distinct ports are counted.
    port: u16,
    count: u8,
    nuniq: u8,
    live: bool,
}

/// The tracking table, in two tiers found through one open-addressing index (ids below
/// `cap` are full entries, ids from `cap` up are places in the ring), so a match costs one
/// hash and one probe, and no allocation:
/// - a key's first match takes a place in a ring of first sightings (the doorkeeper),
///   replaced oldest first;
/// - its next match while still held promotes it to a full entry in `slots` (with the state
///   the first match left), replaced round-robin when the table is full.
///
/// A spoofed flood's keys match once each (the SYN-scan rule tracks every spoofed source),
/// so they churn the ring and leave the full entries alone. With one tier they also evicted
/// the keys matched over and over, the flood's own victim (tracked per destination) every
/// `cap` spoofed sources, whose `limit` and `both` thresholds then counted from nothing and
/// alerted again: on the benchmark capture the SYN-flood rule alerted 192 times instead of
/// once per burst. Which entries survive depends on the order of the traffic only, never on
/// the hash seed.
#[derive(Debug)]
pub struct Tracker {
    index: ProbeIndex,
    seed: u64,
    slots: Vec<Slot>,
    /// Each entry's hash, beside it: an eviction finds the old key's index position without
    /// hashing the key again.
    hashes: Vec<u64>,
    uniq: Vec<[u16; UNIQ_CAP]>,
    /// Full entries at most, and places in the ring; `slots`, `uniq` and `held` fill up to
    /// it as keys arrive, so unused capacity is reserved address space, not resident memory.
    cap: usize,
    next: usize,
    held: Vec<Held>,
    /// The ring's next place (its oldest sighting once it is full).
    hnext: usize,
    /// Full entries evicted because the table was full.
    pub evicted: u64,
    /// First sightings replaced before their key matched again.
    pub dropped: u64,
}

impl Tracker {
    /// `cap` entries and as many first sightings (at least 1); `unique` reserves
    /// distinct-port storage per entry.
    pub fn new(cap: usize, unique: bool) -> Tracker {
        let cap = cap.max(1);
        Tracker {
            index: ProbeIndex::new(cap * 2),
            seed: random_seed(),
            slots: Vec::with_capacity(cap),
            hashes: Vec::with_capacity(cap),
            uniq: Vec::with_capacity(if unique { cap } else { 0 }),
            cap,
            next: 0,
            held: Vec::with_capacity(cap),
            hnext: 0,
            evicted: 0,
            dropped: 0,
        }
    }

    /// Records one match and says whether it alerts.
    pub fn check(&mut self, spec: &ThreshSpec, key: TKey, ts: Micros, port: u16) -> bool {
        let window = i64::from(spec.seconds) * 1_000_000;
        let h = key.hash_with(self.seed);
        let (slots, held, cap) = (&self.slots, &self.held, self.cap);
        let found = self
            .index
            .find(h, |id| match (id as usize).checked_sub(cap) {
                None => slots[id as usize].key == key,
                Some(r) => held[r].hash == h,
            });
        let idx = match found {
            Some((_, id)) if (id as usize) < cap => id as usize,
            Some((at, id)) => {
                // Matched again while held: a full entry, with the state the first match left.
                self.index.remove_at(at);
                let first = std::mem::take(&mut self.held[id as usize - cap]);
                self.promote(key, h, &first)
            }
            None => {
                let mut slot = Slot {
                    key,
                    start: ts,
                    count: 0,
                    nuniq: 0,
                };
                let mut first = [0u16; 1];
                let ports = (self.uniq.capacity() > 0).then_some(&mut first[..]);
                let alerts = step(spec, &mut slot, ports, ts, port, window, true);
                self.hold(Held {
                    hash: h,
                    start: slot.start,
                    port: first[0],
                    // One match: a count of 0 or 1.
                    count: slot.count.min(u32::from(u8::MAX)) as u8,
                    nuniq: slot.nuniq,
                    live: true,
                });
                return alerts;
            }
        };
        let ports = self.uniq.get_mut(idx).map(|p| &mut p[..]);
        step(spec, &mut self.slots[idx], ports, ts, port, window, false)
    }

    /// Holds a first sighting in the ring's next place, replacing the oldest one.
    fn hold(&mut self, e: Held) {
        let r = self.hnext;
        self.hnext = if r + 1 == self.cap { 0 } else { r + 1 };
        let id = (self.cap + r) as u32;
        if let Some(&old) = self.held.get(r) {
            if old.live {
                if let Some((at, _)) = self.index.find(old.hash, |s| s == id) {
                    self.index.remove_at(at);
                }
                self.dropped += 1;
            }
            self.held[r] = e;
        } else {
            // Filling up: the ring's places are used in order.
            self.held.push(e);
        }
        self.index.insert(e.hash, id);
    }

    /// A full entry for `key` with the state of its first match.
    fn promote(&mut self, key: TKey, h: u64, first: &Held) -> usize {
        let slot = Slot {
            key,
            start: first.start,
            count: u32::from(first.count),
            nuniq: first.nuniq,
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
            // Full: round-robin over the entries, oldest promoted first.
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
        if let Some(p) = self.uniq.get_mut(i) {
            p[0] = first.port;
        }
        self.index.insert(h, i as u32);
        i
    }
}

/// The ends of a packet that tracking keys are built from, addresses as big-endian numbers
/// (IPv4 mapped into IPv6): made from the decoded packet on the loop, or from the 16-byte
/// addresses a deferred check carries to the judge's thread. Both give the same key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ends {
    pub src: u128,
    pub dst: u128,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
}

impl Ends {
    /// The decoded packet's (only for packets a thresholded rule matched: the conversions
    /// are not free).
    #[inline]
    pub fn of(m: &PacketMeta) -> Ends {
        Ends {
            src: addr_key(m.src),
            dst: addr_key(m.dst),
            src_port: m.src_port,
            dst_port: m.dst_port,
            proto: m.ip_proto,
        }
    }
}

/// [`Thresholds`] place of a rule without a threshold.
const NONE: u32 = u32::MAX;

/// Marks the tracking keys of a rule's second (rate-limiting) threshold.
const LIMIT_KEY: u32 = 1 << 31;

/// The tracking key of rule `rule`'s threshold for a packet.
///
/// Not inlined on purpose: inlined, the compiler hoisted the `by_flow` ordering out of the
/// candidate loop, ~100 instructions on every packet that had candidates, for the few that
/// reach a threshold (callgrind).
#[inline(never)]
pub fn thresh_key(rule: u32, track: Track, m: &Ends) -> TKey {
    let mut k = TKey {
        rule,
        ..TKey::default()
    };
    match track {
        Track::BySrc => k.a = m.src,
        Track::ByDst => k.a = m.dst,
        Track::ByRule => {}
        Track::ByBoth => {
            k.a = m.src;
            k.b = m.dst;
        }
        Track::ByFlow => {
            let (s, sp, d, dp) = (m.src, m.src_port, m.dst, m.dst_port);
            let (a, ap, b, bp) = if (s, sp) <= (d, dp) {
                (s, sp, d, dp)
            } else {
                (d, dp, s, sp)
            };
            k.a = a;
            k.b = b;
            k.ports = (u32::from(ap) << 16) | u32::from(bp);
            k.proto = m.proto;
        }
    }
    k
}

/// Records a match of rule `rule` (its threshold `spec` and optional rate `limit`) and says
/// whether it alerts; a match kept from alerting adds one to `suppressed`.
#[inline]
pub fn check_rule(
    tracker: &mut Tracker,
    suppressed: &mut u64,
    rule: u32,
    spec: &ThreshSpec,
    limit: Option<&ThreshSpec>,
    ts: Micros,
    m: &Ends,
) -> bool {
    let port = match spec.unique_on {
        Some(UniqueOn::SrcPort) => m.src_port,
        _ => m.dst_port,
    };
    if !tracker.check(spec, thresh_key(rule, spec.track, m), ts, port) {
        *suppressed += 1;
        return false;
    }
    if let Some(lim) = limit {
        // Its own tracking entries: the rule index with the top bit set.
        let key = thresh_key(rule | LIMIT_KEY, lim.track, m);
        if !tracker.check(lim, key, ts, port) {
            *suppressed += 1;
            return false;
        }
    }
    true
}

/// What the judge needs to know of a thresholded rule to finish its matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleThresh {
    pub rule: u32,
    pub thresh: ThreshSpec,
    pub limit: Option<ThreshSpec>,
    /// The evidence goes to the packet's receiver ([`super::RuleInfo::about_dst`]).
    pub about_dst: bool,
    pub priority: u8,
}

/// The threshold state of a rule set taken off the packet loop: its thresholded rules
/// (sorted by index) and their tracking table. The loop then leaves every thresholded match
/// to whoever holds this (the host judge, on its own thread), which checks them in the
/// loop's order (docs/DECISIONS.md, "Thresholds on the judge's thread").
#[derive(Debug)]
pub struct Thresholds {
    rules: Vec<RuleThresh>,
    /// Rule index → place in `rules` ([`NONE`] for rules without a threshold): one load
    /// per check on the judge instead of a search (4 bytes a rule).
    place: Vec<u32>,
    pub(super) tracker: Tracker,
    /// Matches kept from alerting since the last [`Thresholds::take_suppressed`].
    pub(super) suppressed: u64,
}

impl Thresholds {
    /// `rules` are the thresholded rules of a set of `n` rules.
    pub(crate) fn new(rules: Vec<RuleThresh>, n: usize, tracker: Tracker) -> Thresholds {
        let mut place = vec![NONE; if rules.is_empty() { 0 } else { n }];
        for (i, r) in rules.iter().enumerate() {
            if let Some(p) = place.get_mut(r.rule as usize) {
                *p = i as u32;
            }
        }
        Thresholds {
            rules,
            place,
            tracker,
            suppressed: 0,
        }
    }

    /// No rule has a threshold.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rule `rule`'s threshold, when it has one.
    #[inline]
    pub fn rule(&self, rule: u32) -> Option<&RuleThresh> {
        let i = *self.place.get(rule as usize)?;
        self.rules.get(i as usize)
    }

    /// Records a match of rule `rule` and, when it alerts, says what the judge needs:
    /// `(about_dst, priority)`. A rule without a threshold always alerts (`(false, 3)`).
    #[inline]
    pub fn check(&mut self, rule: u32, ts: Micros, m: &Ends) -> Option<(bool, u8)> {
        let Some(&r) = self.rule(rule) else {
            return Some((false, 3));
        };
        let (spec, limit) = (&r.thresh, r.limit.as_ref());
        check_rule(
            &mut self.tracker,
            &mut self.suppressed,
            rule,
            spec,
            limit,
            ts,
            m,
        )
        .then_some((r.about_dst, r.priority))
    }

    /// Matches kept from alerting since the last call.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }

    /// (Entries evicted because the table was full, first sightings dropped.)
    pub fn tracker_counts(&self) -> (u64, u64) {
        (self.tracker.evicted, self.tracker.dropped)
    }
}

/// Applies one match to an entry (`created`: its first) and says whether it alerts.
/// `ports` holds its distinct ports when they are counted.
fn step(
    spec: &ThreshSpec,
    slot: &mut Slot,
    ports: Option<&mut [u16]>,
    ts: Micros,
    port: u16,
    window: i64,
    created: bool,
) -> bool {
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
        if let Some(ports) = ports {
            let n = usize::from(slot.nuniq);
            if n < ports.len() && !ports[..n].contains(&port) {
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

    fn k(a: u128) -> TKey {
        TKey {
            a,
            ..TKey::default()
        }
    }

    #[test]
    fn both_tiers_stay_bounded() {
        let s = spec(ThreshKind::DetectionFilter, 1, 60);
        let mut t = Tracker::new(2, false);
        // First matches fill the ring of two first sightings, then replace the oldest.
        assert!(!t.check(&s, k(1), 0, 0));
        assert!(!t.check(&s, k(2), 0, 0));
        assert!(!t.check(&s, k(3), 0, 0)); // replaces key 1's
        assert_eq!((t.dropped, t.evicted), (1, 0));
        assert!(!t.check(&s, k(1), 0, 0)); // key 1 starts over, replacing key 2's
        assert!(t.check(&s, k(1), 1, 0)); // its second match: past the count of 1
        assert_eq!((t.dropped, t.evicted), (2, 0));
        // Keys matched again take full entries, replaced round-robin.
        assert!(t.check(&s, k(3), 2, 0));
        for key in [4, 4, 5, 5] {
            t.check(&s, k(key), 3, 0);
        }
        assert_eq!(t.evicted, 2, "keys 1 and 3 made room for 4 and 5");
        assert!(!t.check(&s, k(1), 4, 0), "key 1 starts over");
        assert!(t.check(&s, k(5), 4, 0));
    }

    /// Many keys through a small table: every answer and both counters match a plain model
    /// of the documented semantics (a ring of first sightings replaced oldest first; keys
    /// matched again while held promoted to full entries, replaced round-robin), so the
    /// shared index never loses, confuses or invents an entry.
    #[test]
    fn index_matches_a_model_of_both_tiers() {
        let s = spec(ThreshKind::Limit, 3, 5);
        let cap = 16;
        let mut t = Tracker::new(cap, false);
        // (key, window start, count)
        let mut full: Vec<(TKey, i64, u32)> = Vec::new();
        let mut ring: Vec<Option<(TKey, i64, u32)>> = Vec::new();
        let (mut next, mut hnext, mut evicted, mut dropped) = (0, 0, 0u64, 0u64);
        let mut x: u64 = 0x9e37_79b9;
        for step in 0..40_000i64 {
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
            let i = if let Some(i) = full.iter().position(|e| e.0 == key) {
                i
            } else if let Some(r) = ring.iter().position(|e| e.is_some_and(|e| e.0 == key)) {
                let first = ring[r].take().unwrap();
                if full.len() < cap {
                    full.push(first);
                    full.len() - 1
                } else {
                    let i = next;
                    next = (next + 1) % cap;
                    evicted += 1;
                    full[i] = first;
                    i
                }
            } else {
                if ring.len() < cap {
                    ring.push(None);
                }
                if ring[hnext].is_some() {
                    dropped += 1;
                }
                ring[hnext] = Some((key, ts, 1));
                hnext = (hnext + 1) % cap;
                assert!(
                    t.check(&s, key, ts, 0),
                    "step {step}: a first match is within the limit"
                );
                continue;
            };
            if ts - full[i].1 > 5_000_000 {
                full[i].1 = ts;
                full[i].2 = 0;
            }
            full[i].2 += 1;
            let want = full[i].2 <= 3;
            assert_eq!(t.check(&s, key, ts, 0), want, "step {step}");
        }
        assert_eq!((t.evicted, t.dropped), (evicted, dropped));
        assert!(
            evicted > 1000 && dropped > 1000,
            "the test must churn both: {evicted} {dropped}"
        );
    }

    /// A spoofed flood's keys match once each: they churn the ring and leave alone the key
    /// matched on every frame, whose `both` threshold alerts once per window. (With one tier
    /// each flood key evicted an entry, the victim's among them every `cap` keys, so its count
    /// started over and never reached 100.)
    #[test]
    fn a_flood_of_new_keys_leaves_a_busy_key_counting() {
        let per_dst = ThreshSpec {
            track: Track::ByDst,
            ..spec(ThreshKind::Both, 100, 60)
        };
        let per_src = ThreshSpec {
            unique_on: Some(UniqueOn::DstPort),
            ..spec(ThreshKind::DetectionFilter, 25, 10)
        };
        let mut t = Tracker::new(64, true);
        let victim = TKey {
            rule: 1,
            a: 7,
            ..TKey::default()
        };
        let mut alerts = 0;
        for i in 0..10_000u32 {
            let ts = i64::from(i) * 1_000;
            let spoofed = TKey {
                rule: 2,
                a: 1_000 + u128::from(i),
                ..TKey::default()
            };
            assert!(!t.check(&per_src, spoofed, ts, 80));
            alerts += u32::from(t.check(&per_dst, victim, ts, 80));
        }
        assert_eq!(alerts, 1);
        assert_eq!(t.evicted, 0);
        assert_eq!(t.dropped, 10_000 - 64);
    }

    /// The layout the tracker's cache behaviour rests on.
    #[test]
    fn an_entry_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
        assert_eq!(std::mem::size_of::<Held>(), 24);
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
