//! Fixed-capacity hash table with per-class LRU lists: the storage behind the flow, host
//! and ARP tables.
//!
//! Everything is allocated once in `with_capacity` (slot arrays are filled up to their
//! reserved capacity as entries arrive, so untouched capacity costs address space, not
//! resident memory); inserting into a full table evicts the
//! least recently seen entry (the oldest tail among the classes) and hands it to the caller,
//! as Suricata's emergency mode and smoltcp's neighbor cache do. Each class (e.g. TCP, UDP,
//! other) has its own recency list so per-class idle timeouts expire in O(expired).
//! Lookups use linear probing over an index twice the capacity (each entry carries half
//! the key hash), with backward-shift deletion (no tombstones), and a hash seeded once per
//! process.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::prefetch::prefetch;

const NIL: u32 = u32::MAX;
/// [`LruTable::oldest`] has not been worked out since the lists last changed.
const UNKNOWN: u32 = u32::MAX - 1;
/// Number of recency classes a table can have.
pub const MAX_CLASSES: usize = 4;

/// A key that hashes itself cheaply with a seed.
pub trait TableKey: Copy + Eq {
    fn hash_with(&self, seed: u64) -> u64;
}

/// Mixes 64-bit words (a wyhash-style multiply-fold); good spread, a few ns per key.
#[inline]
pub fn mix(a: u64, b: u64) -> u64 {
    let r =
        u128::from(a ^ 0xa076_1d64_78bd_642f).wrapping_mul(u128::from(b ^ 0xe703_7ed1_a0b4_28db));
    (r as u64) ^ ((r >> 64) as u64)
}

/// A process-wide random seed so remote senders cannot aim at hash collisions.
pub fn random_seed() -> u64 {
    RandomState::new().hash_one(0x5eed_u64)
}

pub struct LruTable<K: TableKey, V> {
    /// Per-slot bookkeeping, one struct per slot: a lookup, a touch and an eviction each
    /// read and write one cache line of it (six parallel vectors cost six misses).
    meta: Vec<Meta<K>>,
    vals: Vec<V>,
    head: [u32; MAX_CLASSES],
    tail: [u32; MAX_CLASSES],
    free: u32,
    index: ProbeIndex,
    len: usize,
    cap: usize,
    seed: u64,
    /// Per class: entries last seen at or before this are expired but not yet removed
    /// (expiry deferred; see [`LruTable::set_stale`]). `i64::MIN` when nothing is pending.
    stale: [i64; MAX_CLASSES],
    /// One more than the highest class ever used: [`LruTable::oldest`] looks at these
    /// lists only (the host table has one; it asks for its oldest entry on every packet
    /// of a flood).
    classes: usize,
    /// The last answer of [`LruTable::oldest`] (NIL: none), or UNKNOWN once a list or a
    /// tail's last-seen time has changed. Under a flood the victim is hinted at the end of
    /// one packet and evicted by the next: it was worked out twice (~85 instructions each).
    oldest: Cell<u32>,
}

/// Why [`LruTable::find_or_insert_ending`] ended an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The least recently seen live entry made room in a full table.
    Evicted,
    /// A stale entry of this class (pending expiry) was found or made room.
    Expired(u8),
}

#[derive(Clone, Copy)]
struct Meta<K> {
    key: Option<K>,
    hash: u64,
    last_seen: i64,
    prev: u32,
    next: u32,
    class: u8,
}

/// Slot id of an entry; stable while the entry lives.
pub type Slot = u32;

/// Linear-probing index from key hashes to slots, twice the capacity: 0 = empty, else
/// slot + 1 in the low half and the key hash's low half above it, so a probe rejects other
/// keys and a deletion finds each entry's home position without touching their slots.
/// Backward-shift deletion, no tombstones. Allocated zeroed once: untouched parts stay
/// address space, not resident memory. Shared by `LruTable` and the rules' threshold
/// tracker, which keep their entries in their own slot arrays.
#[derive(Debug)]
pub struct ProbeIndex {
    index: Vec<u64>,
    mask: usize,
}

#[inline]
fn index_entry(slot: Slot, hash: u64) -> u64 {
    (hash << 32) | u64::from(slot + 1)
}

impl ProbeIndex {
    /// An index for up to `capacity` slots (at most `u32::MAX / 4`).
    pub fn new(capacity: usize) -> ProbeIndex {
        let len = (capacity.clamp(1, (u32::MAX / 4) as usize) * 2).next_power_of_two();
        ProbeIndex {
            index: vec![0; len],
            mask: len - 1,
        }
    }

    #[inline]
    fn ideal(&self, hash: u64) -> usize {
        (hash as usize) & self.mask
    }

    /// Hints the index line a lookup of hash `h` starts at.
    #[inline]
    pub fn prefetch(&self, h: u64) {
        prefetch(&self.index, self.ideal(h));
    }

    /// The position and slot of the first entry with hash `h` for which `is` holds.
    #[inline]
    pub fn find(&self, h: u64, mut is: impl FnMut(Slot) -> bool) -> Option<(usize, Slot)> {
        let mut i = self.ideal(h);
        let tag = h << 32;
        loop {
            let e = self.index[i];
            if e == 0 {
                return None;
            }
            if e & 0xffff_ffff_0000_0000 == tag {
                let s = (e as u32).wrapping_sub(1);
                if is(s) {
                    return Some((i, s));
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Adds `slot` under hash `h` (the caller keeps at most `capacity` entries).
    #[inline]
    pub fn insert(&mut self, h: u64, slot: Slot) {
        let mut i = self.ideal(h);
        while self.index[i] != 0 {
            i = (i + 1) & self.mask;
        }
        self.index[i] = index_entry(slot, h);
    }

    /// Removes the entry at position `i` (from `find`).
    pub fn remove_at(&mut self, mut i: usize) {
        // Backward-shift deletion keeps probe sequences intact without tombstones.
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let e = self.index[j];
            if e == 0 {
                break;
            }
            // The entry's home position from the hash bits it carries (the index is at most
            // 2^31 long, so they are enough): no slot is read while shifting.
            let k = self.ideal(e >> 32);
            // Move s back to i if its ideal position k is not cyclically in (i, j].
            let in_range = if i <= j {
                i < k && k <= j
            } else {
                i < k || k <= j
            };
            if !in_range {
                self.index[i] = e;
                i = j;
            }
        }
        self.index[i] = 0;
    }
}

impl<K: TableKey, V: Default> LruTable<K, V> {
    /// Reserves a table for `capacity` entries (at least 1). Slots are initialised as they
    /// are first used, without allocating.
    pub fn with_capacity(capacity: usize, seed: u64) -> Self {
        let capacity = capacity.clamp(1, (u32::MAX / 4) as usize);
        LruTable {
            meta: Vec::with_capacity(capacity),
            vals: Vec::with_capacity(capacity),
            head: [NIL; MAX_CLASSES],
            tail: [NIL; MAX_CLASSES],
            free: NIL,
            index: ProbeIndex::new(capacity),
            len: 0,
            cap: capacity,
            seed,
            stale: [i64::MIN; MAX_CLASSES],
            classes: 0,
            oldest: Cell::new(UNKNOWN),
        }
    }

    /// A slot for a new entry: a freed one, a never-used one, or none when full.
    fn take_slot(&mut self) -> Option<Slot> {
        if self.free != NIL {
            let s = self.free;
            self.free = self.meta[s as usize].next;
            return Some(s);
        }
        if self.meta.len() < self.cap {
            let s = self.meta.len() as Slot;
            self.meta.push(Meta {
                key: None,
                hash: 0,
                last_seen: 0,
                prev: NIL,
                next: NIL,
                class: 0,
            });
            self.vals.push(V::default());
            return Some(s);
        }
        None
    }

    /// Finds `key` or inserts it (class `class`, last seen `now`), evicting the least recently
    /// seen entry when full; `on_evict` sees the evicted key and value first. A new entry's
    /// value is reset with `init`. Returns the slot and whether it was inserted.
    #[inline]
    pub fn find_or_insert(
        &mut self,
        key: K,
        class: u8,
        now: i64,
        init: impl FnOnce(&mut V),
        on_evict: impl FnOnce(&K, &mut V),
    ) -> (Slot, bool) {
        self.find_or_insert_ending(key, class, now, init, |k, v, _| on_evict(k, v))
    }

    /// As [`LruTable::find_or_insert`], but aware of deferred expiry: a found entry that is
    /// stale (see [`LruTable::set_stale`]) is ended as expired and replaced by a new one, and
    /// a full table ends a stale entry before it evicts a live one, so the table holds the
    /// same live entries as if the expiry had completed. `on_end` sees the one entry ended
    /// (at most one per call) and why.
    #[inline]
    pub fn find_or_insert_ending(
        &mut self,
        key: K,
        class: u8,
        now: i64,
        init: impl FnOnce(&mut V),
        on_end: impl FnOnce(&K, &mut V, End),
    ) -> (Slot, bool) {
        let h = self.hash_of(&key);
        self.find_or_insert_hashed(key, h, class, now, init, on_end)
    }

    /// [`LruTable::find_or_insert_ending`] with the key's hash from [`LruTable::hash_of`]
    /// (the caller hashed it already, to prefetch).
    #[inline]
    pub fn find_or_insert_hashed(
        &mut self,
        key: K,
        h: u64,
        class: u8,
        now: i64,
        init: impl FnOnce(&mut V),
        on_end: impl FnOnce(&K, &mut V, End),
    ) -> (Slot, bool) {
        debug_assert_eq!(h, self.hash_of(&key));
        let mut on_end = Some(on_end);
        if let Some((_, s)) = self.find_hashed(&key, h) {
            // The bookkeeping line was just read by the probe: this costs one compare.
            let m = &self.meta[s as usize];
            if m.last_seen > self.stale[m.class as usize] {
                return (s, false);
            }
            let c = m.class;
            if let Some(f) = on_end.take() {
                self.remove_with(s, |k, v| f(k, v, End::Expired(c)));
            }
        }
        let s = match self.take_slot() {
            Some(s) => s,
            None => {
                let (victim, why) = match self.stale_tail() {
                    Some((t, c)) => (t, End::Expired(c)),
                    None => match self.oldest() {
                        Some(t) => (t, End::Evicted),
                        None => return (NIL, false),
                    },
                };
                if let Some(f) = on_end.take() {
                    self.remove_with(victim, |k, v| f(k, v, why));
                }
                match self.take_slot() {
                    Some(s) => s,
                    None => return (NIL, false),
                }
            }
        };
        let su = s as usize;
        let m = &mut self.meta[su];
        m.key = Some(key);
        m.hash = h;
        m.last_seen = now;
        init(&mut self.vals[su]);
        self.push_front(s, class.min(MAX_CLASSES as u8 - 1));
        self.index.insert(h, s);
        self.len += 1;
        (s, true)
    }
}

impl<K: TableKey, V> LruTable<K, V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Hints the index line a lookup of `key` reads first (timing only).
    #[inline]
    pub fn prefetch_key(&self, key: &K) {
        self.prefetch_hash(self.hash_of(key));
    }

    /// The hash this table files `key` under.
    #[inline]
    pub fn hash_of(&self, key: &K) -> u64 {
        key.hash_with(self.seed)
    }

    /// Hints the index line a lookup of hash `h` reads first (timing only).
    #[inline]
    pub fn prefetch_hash(&self, h: u64) {
        self.index.prefetch(h);
    }

    /// The entry an insertion would evict now: the least recently seen one when the table
    /// is full, else none.
    #[inline]
    pub fn victim(&self) -> Option<Slot> {
        if self.free != NIL || self.meta.len() < self.cap {
            return None;
        }
        self.oldest()
    }

    /// Hints the bookkeeping line of `slot` (its key) (timing only).
    #[inline]
    pub fn prefetch_meta(&self, slot: Slot) {
        prefetch(&self.meta, slot as usize);
    }

    /// Hints what evicting `slot` reads besides its value: its bookkeeping and index lines
    /// (timing only; the bookkeeping line is usually warm, as evicting its predecessor
    /// rewrote it).
    #[inline]
    pub fn prefetch_eviction(&self, slot: Slot) {
        if let Some(m) = self.meta.get(slot as usize) {
            self.index.prefetch(m.hash);
        }
    }

    /// Finds the slot of `key`.
    #[inline]
    pub fn find(&self, key: &K) -> Option<Slot> {
        self.find_hashed(key, self.hash_of(key)).map(|(_, s)| s)
    }

    #[inline]
    fn find_hashed(&self, key: &K, h: u64) -> Option<(usize, Slot)> {
        let meta = &self.meta;
        self.index.find(h, |s| {
            let m = &meta[s as usize];
            m.hash == h && m.key.as_ref() == Some(key)
        })
    }

    pub fn key(&self, slot: Slot) -> Option<&K> {
        self.meta.get(slot as usize).and_then(|m| m.key.as_ref())
    }

    /// The value in `slot`, if the slot was ever used.
    #[inline]
    pub fn try_get(&self, slot: Slot) -> Option<&V> {
        self.vals.get(slot as usize)
    }

    #[inline]
    pub fn get(&self, slot: Slot) -> &V {
        &self.vals[slot as usize]
    }

    #[inline]
    pub fn get_mut(&mut self, slot: Slot) -> &mut V {
        &mut self.vals[slot as usize]
    }

    pub fn last_seen(&self, slot: Slot) -> i64 {
        self.meta[slot as usize].last_seen
    }

    fn unlink(&mut self, s: Slot) {
        self.oldest.set(UNKNOWN);
        let su = s as usize;
        let Meta {
            class, prev, next, ..
        } = self.meta[su];
        let c = class as usize;
        if prev == NIL {
            self.head[c] = next;
        } else {
            self.meta[prev as usize].next = next;
        }
        if next == NIL {
            self.tail[c] = prev;
        } else {
            self.meta[next as usize].prev = prev;
        }
        let m = &mut self.meta[su];
        m.prev = NIL;
        m.next = NIL;
    }

    fn push_front(&mut self, s: Slot, class: u8) {
        self.oldest.set(UNKNOWN);
        let su = s as usize;
        let c = class as usize;
        let head = self.head[c];
        self.classes = self.classes.max(c + 1);
        let m = &mut self.meta[su];
        m.class = class;
        m.prev = NIL;
        m.next = head;
        if head != NIL {
            self.meta[head as usize].prev = s;
        } else {
            self.tail[c] = s;
        }
        self.head[c] = s;
    }

    /// Marks an entry as seen at `now`, moving it to the front of its recency list. Time
    /// never moves an entry backwards.
    #[inline]
    pub fn touch(&mut self, slot: Slot, now: i64) {
        let m = &mut self.meta[slot as usize];
        if now > m.last_seen {
            m.last_seen = now;
            // (A list's only entry is its head and tail: it stays, its time moves.)
            self.oldest.set(UNKNOWN);
        }
        let c = m.class;
        if self.head[c as usize] != slot {
            self.unlink(slot);
            self.push_front(slot, c);
        }
    }

    /// Moves an entry to another recency class (e.g. a TCP flow that closed).
    pub fn set_class(&mut self, slot: Slot, class: u8) {
        let class = class.min(MAX_CLASSES as u8 - 1);
        if self.meta[slot as usize].class != class {
            self.unlink(slot);
            self.push_front(slot, class);
        }
    }

    /// The least recently seen entry over all classes.
    fn oldest(&self) -> Option<Slot> {
        match self.oldest.get() {
            UNKNOWN => {}
            NIL => return None,
            s => return Some(s),
        }
        let found = self.oldest_scan();
        self.oldest.set(found.unwrap_or(NIL));
        found
    }

    /// [`LruTable::oldest`] worked out: the tail seen least recently.
    fn oldest_scan(&self) -> Option<Slot> {
        let mut best: Option<(Slot, i64)> = None;
        for &t in self.tail.get(..self.classes).unwrap_or(&self.tail) {
            if t == NIL {
                continue;
            }
            let seen = self.meta[t as usize].last_seen;
            if best.is_none_or(|(_, b)| seen < b) {
                best = Some((t, seen));
            }
        }
        best.map(|(s, _)| s)
    }

    /// Removes an entry, handing its key and value to `f` before the slot is reused.
    pub fn remove_with(&mut self, slot: Slot, f: impl FnOnce(&K, &mut V)) {
        let su = slot as usize;
        let Some(key) = self.meta[su].key else { return };
        let h = self.meta[su].hash;
        if let Some((i, _)) = self.index.find(h, |s| s == slot) {
            self.index.remove_at(i);
        }
        f(&key, &mut self.vals[su]);
        self.unlink(slot);
        let m = &mut self.meta[su];
        m.key = None;
        m.next = self.free;
        self.free = slot;
        self.len -= 1;
    }

    /// Removes every entry of class `class` last seen at or before `cutoff`, oldest first,
    /// handing each to `f`. Returns how many were removed.
    pub fn expire_class(&mut self, class: u8, cutoff: i64, mut f: impl FnMut(&K, &mut V)) -> usize {
        let c = class as usize;
        let mut n = 0;
        while c < MAX_CLASSES
            && self.tail[c] != NIL
            && self.meta[self.tail[c] as usize].last_seen <= cutoff
        {
            let t = self.tail[c];
            self.remove_with(t, &mut f);
            n += 1;
        }
        n
    }

    /// Defers expiry: from now on, entries of class `c` last seen at or before
    /// `cutoffs[c]` count as expired. Lookups and insertions treat them so (see
    /// [`LruTable::find_or_insert_ending`], [`LruTable::is_stale`]) until
    /// [`LruTable::expire_stale`] removes them. Cutoffs only move forward.
    pub fn set_stale(&mut self, cutoffs: [i64; MAX_CLASSES]) {
        for (s, c) in self.stale.iter_mut().zip(cutoffs) {
            *s = (*s).max(c);
        }
    }

    /// True when `slot` holds an entry that a pending expiry has ended.
    #[inline]
    pub fn is_stale(&self, slot: Slot) -> bool {
        self.meta
            .get(slot as usize)
            .is_some_and(|m| m.key.is_some() && m.last_seen <= self.stale[m.class as usize])
    }

    /// The oldest stale entry of the first class that has one, and its class.
    #[inline]
    fn stale_tail(&self) -> Option<(Slot, u8)> {
        (0..MAX_CLASSES).find_map(|c| {
            let (t, cut) = (self.tail[c], self.stale[c]);
            // Nothing pending (the usual case) reads no bookkeeping line.
            (cut != i64::MIN && t != NIL && self.meta[t as usize].last_seen <= cut)
                .then_some((t, c as u8))
        })
    }

    /// True while some entry is stale (expiry pending).
    pub fn has_stale(&self) -> bool {
        self.stale_tail().is_some()
    }

    /// Removes at most `max` stale entries, class by class and oldest first, handing each
    /// with its class to `f`. Returns how many were removed; when fewer than `max`, none is
    /// left and the cutoffs are reset (nothing pending).
    pub fn expire_stale(&mut self, max: usize, mut f: impl FnMut(&K, &mut V, u8)) -> usize {
        let mut n = 0;
        while n < max {
            let Some((t, c)) = self.stale_tail() else {
                self.stale = [i64::MIN; MAX_CLASSES];
                return n;
            };
            self.remove_with(t, |k, v| f(k, v, c));
            n += 1;
        }
        if !self.has_stale() {
            self.stale = [i64::MIN; MAX_CLASSES];
        }
        n
    }

    /// Removes at most `max` entries, class by class and oldest first, handing each to `f`
    /// (shutdown in bounded steps). Returns how many were removed.
    pub fn drain_some(&mut self, max: usize, mut f: impl FnMut(&K, &mut V)) -> usize {
        let mut n = 0;
        for c in 0..MAX_CLASSES {
            while n < max && self.tail[c] != NIL {
                let t = self.tail[c];
                self.remove_with(t, &mut f);
                n += 1;
            }
        }
        n
    }

    /// Visits every live entry (no particular order).
    pub fn for_each(&self, mut f: impl FnMut(Slot, &K, &V)) {
        for (i, m) in self.meta.iter().enumerate() {
            if let Some(k) = &m.key {
                f(i as Slot, k, &self.vals[i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl TableKey for u32 {
        fn hash_with(&self, seed: u64) -> u64 {
            mix(u64::from(*self), seed)
        }
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    struct Bad(u32);
    impl TableKey for Bad {
        fn hash_with(&self, _seed: u64) -> u64 {
            u64::from(self.0 % 3) // collide on purpose
        }
    }

    #[test]
    fn insert_find_evict_oldest() {
        let mut t: LruTable<u32, u64> = LruTable::with_capacity(4, 1);
        for k in 0..4u32 {
            let (s, new) =
                t.find_or_insert(k, 0, i64::from(k), |v| *v = u64::from(k) * 10, |_, _| {});
            assert!(new);
            assert_eq!(*t.get(s), u64::from(k) * 10);
        }
        // Touch key 0 so key 1 becomes the oldest.
        let s0 = t.find(&0).unwrap();
        t.touch(s0, 10);
        let mut evicted = None;
        let (_, new) = t.find_or_insert(99, 0, 11, |v| *v = 990, |k, v| evicted = Some((*k, *v)));
        assert!(new);
        assert_eq!(evicted, Some((1, 10)));
        assert_eq!(t.len(), 4);
        assert!(t.find(&1).is_none());
        for k in [0u32, 2, 3, 99] {
            assert!(t.find(&k).is_some(), "key {k}");
        }
    }

    #[test]
    fn collisions_and_removal_keep_probes_intact() {
        let mut t: LruTable<Bad, u32> = LruTable::with_capacity(64, 1);
        for k in 0..60u32 {
            t.find_or_insert(Bad(k), 0, 0, |v| *v = k, |_, _| {});
        }
        for k in (0..60u32).step_by(2) {
            let s = t.find(&Bad(k)).unwrap();
            t.remove_with(s, |_, _| {});
        }
        for k in 0..60u32 {
            assert_eq!(t.find(&Bad(k)).is_some(), k % 2 == 1, "key {k}");
            if let Some(s) = t.find(&Bad(k)) {
                assert_eq!(*t.get(s), k);
            }
        }
        assert_eq!(t.len(), 30);
    }

    /// Backward-shift deletion in clusters that wrap past the index's end: after every
    /// removal, each remaining entry is found from its hash and no removed one is.
    #[test]
    fn removal_in_clusters_wrapping_the_end_keeps_every_probe_intact() {
        let mut x: u64 = 0x5eed_0fab_1e00;
        for round in 0..2_000u64 {
            // 8 slots: an index of 16 positions. Home positions 12..=15 and 0..=1, so
            // clusters cross the end; the hashes' other low bits (the index keeps 32) differ.
            let mut ix = ProbeIndex::new(8);
            let n = 1 + (xorshift(&mut x) % 8) as u32;
            let mut live: Vec<(u64, Slot)> = Vec::new();
            for slot in 0..n {
                let home = (12 + xorshift(&mut x) % 6) & 15;
                let h = (round << 16) | (u64::from(slot) << 8) | home;
                ix.insert(h, slot);
                live.push((h, slot));
            }
            while !live.is_empty() {
                let pick = (xorshift(&mut x) % live.len() as u64) as usize;
                let (h, slot) = live.swap_remove(pick);
                let (i, found) = ix.find(h, |s| s == slot).expect("present before removal");
                assert_eq!(found, slot);
                ix.remove_at(i);
                assert!(
                    ix.find(h, |s| s == slot).is_none(),
                    "round {round}: still found"
                );
                for &(h2, s2) in &live {
                    assert!(
                        ix.find(h2, |s| s == s2).is_some(),
                        "round {round}: slot {s2} lost after removing {slot}"
                    );
                }
            }
            assert!(
                ix.index.iter().all(|&e| e == 0),
                "round {round}: not emptied"
            );
        }
    }

    #[test]
    fn expire_per_class() {
        let mut t: LruTable<u32, u32> = LruTable::with_capacity(16, 7);
        for k in 0..8u32 {
            t.find_or_insert(k, (k % 2) as u8, i64::from(k), |_| {}, |_, _| {});
        }
        let mut gone = Vec::new();
        let n = t.expire_class(0, 4, |k, _| gone.push(*k));
        assert_eq!(n, 3);
        assert_eq!(gone, vec![0, 2, 4]);
        assert_eq!(t.len(), 5);
        let mut rest = Vec::new();
        t.drain_some(usize::MAX, |k, _| rest.push(*k));
        rest.sort_unstable();
        assert_eq!(rest, vec![1, 3, 5, 6, 7]);
        assert!(t.is_empty());
    }

    /// The next number of a xorshift sequence (test inputs).
    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn random_ops_match_a_model() {
        use std::collections::HashMap;
        let mut t: LruTable<u32, u32> = LruTable::with_capacity(1000, 3);
        let mut model: HashMap<u32, u32> = HashMap::new();
        let mut x: u64 = 0x1234_5678;
        for step in 0..50_000i64 {
            let x = xorshift(&mut x);
            let k = (x % 800) as u32;
            if x % 5 == 0 {
                if let Some(s) = t.find(&k) {
                    t.remove_with(s, |_, _| {});
                }
                model.remove(&k);
            } else {
                let (s, _) = t.find_or_insert(k, 0, step, |v| *v = k + 1, |_, _| {});
                t.touch(s, step);
                model.insert(k, k + 1);
            }
        }
        assert_eq!(t.len(), model.len());
        for (k, v) in &model {
            let s = t.find(k).unwrap();
            assert_eq!(t.get(s), v);
        }
    }

    /// Whatever happened since the victim was last asked for (touches, class moves,
    /// removals, insertions), the remembered answer is the one a fresh scan of the lists
    /// gives, and a full table evicts that entry.
    #[test]
    fn the_remembered_victim_is_always_the_scanned_one() {
        let cap = 64;
        let mut t: LruTable<u32, u32> = LruTable::with_capacity(cap, 5);
        let mut x: u64 = 0x9e37_79b9;
        let mut evictions = 0;
        for now in 0..20_000i64 {
            let x = xorshift(&mut x);
            let k = (x % 200) as u32;
            // Ask for the victim now and then, as the engine does after every frame.
            if x % 3 == 0 {
                assert_eq!(
                    t.victim(),
                    t.len().eq(&cap).then(|| t.oldest_scan()).flatten()
                );
            }
            match x % 7 {
                0 => {
                    if let Some(s) = t.find(&k) {
                        t.remove_with(s, |_, _| {});
                    }
                }
                1 => {
                    if let Some(s) = t.find(&k) {
                        t.set_class(s, (x >> 8) as u8 % 3);
                    }
                }
                2 => {
                    if let Some(s) = t.find(&k) {
                        t.touch(s, now);
                    }
                }
                _ => {
                    let want = (t.len() == cap && t.find(&k).is_none())
                        .then(|| t.oldest_scan().map(|s| t.meta[s as usize].key));
                    let mut evicted = None;
                    t.find_or_insert(
                        k,
                        (x >> 16) as u8 % 3,
                        now,
                        |v| *v = k,
                        |ek, _| evicted = Some(*ek),
                    );
                    if let Some(want) = want {
                        assert_eq!(evicted, want.flatten(), "step {now}");
                        evictions += 1;
                    }
                }
            }
        }
        assert!(evictions > 1000, "{evictions}");
    }

    /// Deferred expiry (bounded steps between operations) ends the same entries, for the
    /// same reasons, and keeps the same live entries as expiring everything at once: a
    /// stale entry found is replaced, a full table reuses stale entries before it evicts.
    #[test]
    fn deferred_expiry_matches_complete_expiry() {
        type Ends = Vec<(u32, u64, End)>;
        let cap = 64;
        let mut whole: LruTable<u32, u64> = LruTable::with_capacity(cap, 5);
        let mut deferred: LruTable<u32, u64> = LruTable::with_capacity(cap, 5);
        let (mut ends_w, mut ends_d): (Ends, Ends) = (Vec::new(), Vec::new());
        let mut x: u64 = 0x9e37_79b9;
        let mut deferred_steps = 0;
        for now in 0..4_000i64 {
            let id = now as u64 + 1;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if now % 50 == 0 {
                // A new "second": idle timeouts 100 (class 0) and 30 (class 1).
                let cut = [now - 100, now - 30, i64::MIN, i64::MIN];
                whole.set_stale(cut);
                whole.expire_stale(usize::MAX, |k, v, c| ends_w.push((*k, *v, End::Expired(c))));
                assert!(!whole.has_stale());
                deferred.set_stale(cut);
            }
            // At most 2 expired a step: most of an expiry stays pending for a while.
            let budget = (x % 3) as usize;
            deferred.expire_stale(budget, |k, v, c| ends_d.push((*k, *v, End::Expired(c))));
            if deferred.has_stale() {
                deferred_steps += 1;
            }
            let k = (x >> 8) as u32 % 150;
            let class = (k % 2) as u8;
            let (sw, nw) = whole.find_or_insert_ending(
                k,
                class,
                now,
                |v| *v = id,
                |k, v, e| ends_w.push((*k, *v, e)),
            );
            let (sd, nd) = deferred.find_or_insert_ending(
                k,
                class,
                now,
                |v| *v = id,
                |k, v, e| ends_d.push((*k, *v, e)),
            );
            assert_eq!(nw, nd, "step {now}: key {k} new in one table only");
            assert_eq!(whole.get(sw), deferred.get(sd), "step {now}: key {k}");
            whole.touch(sw, now);
            deferred.touch(sd, now);
            // Same live entries: every one of `whole`, and only stale extras in `deferred`.
            let mut live_w = Vec::new();
            whole.for_each(|_, k, v| live_w.push((*k, *v)));
            let mut live_d = Vec::new();
            deferred.for_each(|s, k, v| {
                if !deferred.is_stale(s) {
                    live_d.push((*k, *v));
                }
            });
            live_w.sort_unstable();
            live_d.sort_unstable();
            assert_eq!(live_w, live_d, "step {now}");
        }
        assert!(
            deferred_steps > 500,
            "expiry was rarely pending ({deferred_steps})"
        );
        assert!(
            ends_w.iter().any(|e| e.2 == End::Evicted),
            "the table never filled"
        );
        deferred.expire_stale(usize::MAX, |k, v, c| ends_d.push((*k, *v, End::Expired(c))));
        let key = |e: &(u32, u64, End)| (e.1, e.0, matches!(e.2, End::Evicted));
        ends_w.sort_unstable_by_key(key);
        ends_d.sort_unstable_by_key(key);
        assert_eq!(ends_w, ends_d);
        // Bounded drain hands out everything in steps.
        let mut drained = 0;
        while deferred.drain_some(7, |_, _| drained += 1) == 7 {}
        assert_eq!(drained, whole.len());
        assert!(deferred.is_empty());
    }
}
