//! Judging hosts: per-host state (buckets, sketches, baseline, evidence) and, at the end of
//! every second of packet time, features → Isolation Forest → correlation → verdict.
//!
//! The engine describes what each frame means for its hosts as a [`HostEvent`] (one cache
//! line) and hands it here, in frame order. A [`HostStage`] applies the events either
//! inline, as they come, or on a thread of its own (`pn-judge`, config `[detection]
//! judge_thread`) that takes them in batches while the loop goes on with the next frames.
//! Both apply the same events in the same order, so they give the same verdicts (a test
//! compares them row for row); time is packet time either way.
//!
//! Why a thread (docs/DECISIONS.md, "The host judge thread"): the host table is megabytes
//! (1.7 KiB a host) and each frame touches two hosts, so on one core it evicted from the
//! caches what the flow table and the rules needed. Taking host work off the loop cut the
//! loop thread's CPU time on the benchmark capture from 1242 to 947 ms.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::VerdictConfig;
use crate::correlate;
use crate::decode::{Micros, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP};
use crate::engine::{evaluate, push_bounded, AlertRec, AlertSource, SampleRec, VerdictRec};
use crate::events::Level;
use crate::features::{self, WindowTotals};
use crate::flow::{addr_from16, Addr16};
use crate::host::{Bucket, Held, HostTable, Sighting};
use crate::model::Model;
use crate::rules::threshold::{Ends, Thresholds};
use crate::stats::{Stage, Stats};
use crate::table::{mix, Slot};

/// [`PacketEv::flags`]: the sender is a judged host.
pub const SRC: u8 = 1;
/// The receiver is a judged host.
pub const DST: u8 = 2;
/// TCP with SYN and no ACK.
pub const SYN_ONLY: u8 = 4;
/// The packet opened a flow, from the client.
pub const NEW_TO_SERVER: u8 = 8;
/// First reply of a flow that was answered.
pub const ANSWERED: u8 = 16;
/// First reply of a flow that was rejected (RST, ICMP unreachable).
pub const REJECTED: u8 = 32;
/// The packet is a DNS query (`dns_len`, `dns_entropy` hold its name's length and entropy).
pub const DNS_QUERY: u8 = 64;

/// [`HostEvent::Threshold`] flags (besides [`SRC`] and [`DST`]): a later `pass` rule
/// matched the packet, so the first / second match only counts.
pub const SILENT: [u8; 2] = [4, 8];
/// The packet is IPv6 (its addresses are not IPv4-mapped ones).
pub const IPV6: u8 = 16;
/// [`HostEvent::Threshold`] `rules` with one match only: the second place is empty.
pub const NO_RULE: u32 = u32::MAX;

/// What one IP packet means for its two hosts.
#[derive(Clone, Copy, Debug)]
pub struct PacketEv {
    pub ts: Micros,
    pub src: Addr16,
    pub dst: Addr16,
    pub wire_len: u32,
    pub dns_entropy: f32,
    pub dst_port: u16,
    pub dns_len: u16,
    pub proto: u8,
    pub flags: u8,
}

/// One step of host state, in frame order. Evidence events apply to the hosts of the
/// packet event before them (the frame that raised them).
#[derive(Clone, Copy, Debug)]
pub enum HostEvent {
    Packet(PacketEv),
    /// An ICMP error quoting a packet of `addr`'s: one more of its flows was rejected.
    Rejected {
        addr: Addr16,
        ts: Micros,
    },
    /// Signature evidence (rule index, priority) on the last packet's sender.
    SrcSignature {
        rule: u32,
        priority: u8,
    },
    /// Signature evidence on the last packet's receiver (a spoofed group source's victim, or
    /// the host a rule counting per destination is about).
    DstSignature {
        rule: u32,
        priority: u8,
    },
    /// Matches of thresholded rules (one or two; [`NO_RULE`] marks an empty second place)
    /// on the last packet, which the loop left to the judge's [`Thresholds`]: each is
    /// counted and, when it crosses its threshold, alerts and is signature evidence on the
    /// last packet's hosts (`flags`: [`SRC`] and [`DST`] say which are judged, [`SILENT`],
    /// [`IPV6`]). The packet's ends come along: the alert names them, and keys are built
    /// from them.
    Threshold {
        ts: Micros,
        flow_id: u64,
        src: Addr16,
        dst: Addr16,
        rules: [u32; 2],
        src_port: u16,
        dst_port: u16,
        proto: u8,
        flags: u8,
    },
    /// A threat-intel hit on the last packet: list and listed address, on both its hosts.
    Intel {
        list: u16,
        addr: Addr16,
    },
    /// An ARP packet from `sender`; `target` is the hashed target of a request to another
    /// address (a destination host in the sender's sketch).
    Arp {
        sender: Addr16,
        ts: Micros,
        wire_len: u32,
        target: Option<u64>,
    },
    /// The last ARP sender's binding changed (ARP watch); `also` is the other address the
    /// same MAC claims, a victim too.
    ArpChange {
        old_mac: [u8; 6],
        new_mac: [u8; 6],
        also: Option<Addr16>,
        ts: Micros,
    },
    /// Second `sec` of packet time is over: judge its hosts. `started` is when its first
    /// frame arrived (frame → verdict latency).
    Close {
        sec: i64,
        started: Option<Instant>,
    },
    /// Hosts idle since before `now` leave the table.
    Expire {
        now: Micros,
    },
}

/// Where judging puts its results: the engine's outbox and counters (inline), or the
/// thread's own until the loop collects them.
pub struct Sink<'a> {
    pub alerts: &'a mut Vec<AlertRec>,
    pub verdicts: &'a mut Vec<VerdictRec>,
    pub windows: &'a mut Vec<(Micros, [u64; 4])>,
    pub samples: &'a mut Vec<SampleRec>,
    pub stats: &'a mut Stats,
}

/// Host-table figures for the status page and /metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCounts {
    pub active: usize,
    pub capacity: usize,
    pub evicted: u64,
    pub expired: u64,
    /// First sightings of addresses without a host, held for a second one.
    pub held: usize,
    /// Sightings dropped before a second one (held too long in a flood of new addresses).
    pub held_dropped: u64,
}

/// Host state and the per-second judging.
pub struct Judge {
    pub hosts: HostTable,
    pub model: Option<Arc<Model>>,
    pub verdict: VerdictConfig,
    pub collect_samples: bool,
    /// The hosts of the last packet (evidence events apply to them) and the last ARP sender.
    last_src: Option<Seen>,
    last_dst: Option<Seen>,
    last_arp: Option<Seen>,
    /// Addresses get a host on their second sighting (see [`crate::host::Probation`]): on
    /// unless windows of a single packet are judged (`min_window_packets` below 2).
    doorkeeper: bool,
    /// The rule set's threshold state, when the loop leaves thresholded matches to the
    /// judge ([`HostEvent::Threshold`]; with the judge on its own thread).
    pub thresholds: Option<Thresholds>,
}

impl Judge {
    pub fn new(hosts: HostTable, verdict: VerdictConfig, collect_samples: bool) -> Judge {
        Judge {
            hosts,
            model: None,
            doorkeeper: verdict.min_window_packets >= 2,
            verdict,
            collect_samples,
            last_src: None,
            last_dst: None,
            last_arp: None,
            thresholds: None,
        }
    }

    pub fn counts(&self) -> HostCounts {
        HostCounts {
            active: self.hosts.len(),
            capacity: self.hosts.table.capacity(),
            evicted: self.hosts.evicted,
            expired: self.hosts.expired,
            held: self.hosts.probation.len(),
            held_dropped: self.hosts.probation.dropped,
        }
    }

    /// Hints the index lines of the hosts `ev` will touch (timing only).
    #[inline]
    pub fn prefetch(&self, ev: &HostEvent) {
        if let HostEvent::Packet(p) = ev {
            if p.flags & SRC != 0 {
                self.hosts.prefetch(&p.src);
            }
            if p.flags & DST != 0 {
                self.hosts.prefetch(&p.dst);
            }
        }
    }

    /// Applies a batch in order, hinting the hosts of events a few places ahead.
    pub fn apply_all(&mut self, evs: &[HostEvent], out: &mut Sink<'_>) {
        const AHEAD: usize = 4;
        for ev in evs.iter().take(AHEAD) {
            self.prefetch(ev);
        }
        for (i, ev) in evs.iter().enumerate() {
            if let Some(next) = evs.get(i + AHEAD) {
                self.prefetch(next);
            }
            self.apply(ev, out);
        }
    }

    #[inline]
    pub fn apply(&mut self, ev: &HostEvent, out: &mut Sink<'_>) {
        match *ev {
            HostEvent::Packet(ref p) => self.packet(p),
            HostEvent::Rejected { addr, ts } => {
                let ev = PacketEv {
                    ts,
                    src: addr,
                    ..Held::FREE.ev
                };
                self.sight(Held {
                    ev,
                    kind: Sighting::Rejected,
                });
            }
            HostEvent::SrcSignature { rule, priority } => {
                if let Some(h) = self.admit_seen(Last::Src) {
                    let ev = &mut self.hosts.table.get_mut(h).evidence;
                    ev.add_signature(rule, priority);
                }
            }
            HostEvent::DstSignature { rule, priority } => {
                if let Some(h) = self.admit_seen(Last::Dst) {
                    let ev = &mut self.hosts.table.get_mut(h).evidence;
                    ev.add_signature(rule, priority);
                }
            }
            HostEvent::Threshold { .. } => self.threshold(ev, out),
            HostEvent::Intel { list, addr } => {
                for last in [Last::Src, Last::Dst] {
                    if let Some(h) = self.admit_seen(last) {
                        let ev = &mut self.hosts.table.get_mut(h).evidence;
                        ev.intel_hits += 1;
                        if ev.intel_list == 0 {
                            ev.intel_list = list + 1;
                            ev.intel_addr = addr;
                        }
                    }
                }
            }
            HostEvent::Arp {
                sender,
                ts,
                wire_len,
                target,
            } => {
                let mut ev = PacketEv {
                    ts,
                    src: sender,
                    wire_len,
                    ..Held::FREE.ev
                };
                if let Some(t) = target {
                    ev.dst[..8].copy_from_slice(&t.to_le_bytes());
                    ev.flags = 1;
                }
                self.last_arp = Some(self.sight(Held {
                    ev,
                    kind: Sighting::Arp,
                }));
            }
            HostEvent::ArpChange {
                old_mac,
                new_mac,
                also,
                ts,
            } => {
                if let Some(h) = self.admit_seen(Last::Arp) {
                    let ev = &mut self.hosts.table.get_mut(h).evidence;
                    ev.arp_change = true;
                    ev.arp_old_mac = old_mac;
                    ev.arp_new_mac = new_mac;
                }
                if let Some(other) = also {
                    // The other claimed address (often the gateway) is a victim of the same MAC.
                    let o = self.admit_now(other, ts);
                    let ev = &mut self.hosts.table.get_mut(o).evidence;
                    ev.arp_change = true;
                    ev.arp_old_mac = new_mac;
                    ev.arp_new_mac = new_mac;
                }
            }
            HostEvent::Close { sec, started } => self.close_second(sec, started, out),
            HostEvent::Expire { now } => {
                self.hosts.expire(now);
            }
        }
    }

    /// Checks the thresholded matches of a [`HostEvent::Threshold`] (out of line: `apply`,
    /// which every event goes through, stays small enough to inline).
    #[inline(never)]
    fn threshold(&mut self, ev: &HostEvent, out: &mut Sink<'_>) {
        let HostEvent::Threshold {
            ts,
            flow_id,
            src,
            dst,
            rules,
            src_port,
            dst_port,
            proto,
            flags,
        } = *ev
        else {
            return;
        };
        let Some(t) = &mut self.thresholds else {
            return;
        };
        let ends = Ends {
            src: u128::from_be_bytes(src),
            dst: u128::from_be_bytes(dst),
            src_port,
            dst_port,
            proto,
        };
        // (Plain code: at the size-optimised level, iterating over the two places cost ~25
        // instructions a place, callgrind.)
        let mut alerts = [None, None];
        if rules[0] != NO_RULE {
            alerts[0] = t.check(rules[0], ts, &ends);
        }
        if rules[1] != NO_RULE {
            alerts[1] = t.check(rules[1], ts, &ends);
        }
        out.stats.alerts_suppressed += t.take_suppressed();
        if alerts == [None, None] {
            return;
        }
        let ip = |a: Addr16| {
            if flags & IPV6 != 0 {
                IpAddr::V6(Ipv6Addr::from(a))
            } else {
                addr_from16(a)
            }
        };
        for i in 0..2 {
            let Some((about_dst, priority)) = alerts[i] else {
                continue;
            };
            if flags & SILENT[i] != 0 {
                continue;
            }
            let rec = AlertRec {
                ts,
                source: AlertSource::Rule(rules[i]),
                src: ip(src),
                src_port,
                dst: ip(dst),
                dst_port,
                proto,
                flow_id,
            };
            self.threshold_alert(rec, rules[i], (about_dst, priority), flags, out);
        }
    }

    /// A thresholded match alerts: the alert, and signature evidence on the packet's
    /// sender or, for a rule counting per destination, its receiver (as on the loop).
    #[cold]
    fn threshold_alert(
        &mut self,
        rec: AlertRec,
        rule: u32,
        (about_dst, priority): (bool, u8),
        flags: u8,
        out: &mut Sink<'_>,
    ) {
        out.stats.alerts += 1;
        if !push_bounded(out.alerts, rec) {
            out.stats.outbox_drops += 1;
        }
        let last = match about_dst {
            true => (flags & DST != 0).then_some(Last::Dst),
            false => (flags & SRC != 0).then_some(Last::Src),
        };
        if let Some(h) = last.and_then(|l| self.admit_seen(l)) {
            let ev = &mut self.hosts.table.get_mut(h).evidence;
            ev.add_signature(rule, priority);
        }
    }

    #[inline]
    fn packet(&mut self, p: &PacketEv) {
        self.last_src = (p.flags & SRC != 0).then(|| {
            self.sight(Held {
                ev: *p,
                kind: Sighting::Sent,
            })
        });
        self.last_dst = (p.flags & DST != 0).then(|| {
            self.sight(Held {
                ev: *p,
                kind: Sighting::Received,
            })
        });
        if !self.doorkeeper {
            // When the table is full (a flood), the next new host evicts the least recently
            // seen one: fetch it while the next event is applied. (With the doorkeeper a
            // flood's addresses are held instead: few packets insert a host.)
            self.hosts.prefetch_victim(p.ts.div_euclid(1_000_000));
        }
    }

    /// An address shows up (`held` says how): its host counts it, if it has one or this is
    /// its second sighting (then the first is counted too); otherwise the sighting is held.
    /// Without the doorkeeper every address gets a host at once.
    #[inline]
    fn sight(&mut self, held: Held) -> Seen {
        let (addr, ts) = (*held.addr(), held.ev.ts);
        let sec = ts.div_euclid(1_000_000);
        let slot = if !self.doorkeeper {
            self.hosts.touch(addr, ts, sec)
        } else if let Some(s) = self.hosts.touch_known(&addr, ts, sec) {
            s
        } else {
            let idle = self.hosts.idle_timeout;
            match self.hosts.probation.take(&addr, ts, idle) {
                Some(first) => self.admit(addr, Some(first), ts),
                None => {
                    self.hosts.probation.hold(held);
                    return Seen::Held(held);
                }
            }
        };
        count(self.hosts.table.get_mut(slot).bucket(sec), &held);
        Seen::Host(slot)
    }

    /// The host of one of the last packet's addresses, admitted now if its sighting was held
    /// (evidence is never left on probation).
    fn admit_seen(&mut self, which: Last) -> Option<Slot> {
        let last = match which {
            Last::Src => &mut self.last_src,
            Last::Dst => &mut self.last_dst,
            Last::Arp => &mut self.last_arp,
        };
        let held = match (*last)? {
            Seen::Host(s) => return Some(s),
            Seen::Held(held) => held,
        };
        let (addr, ts) = (*held.addr(), held.ev.ts);
        let sec = ts.div_euclid(1_000_000);
        let slot = match self.hosts.touch_known(&addr, ts, sec) {
            // (Admitted meanwhile: the same address at both ends of the packet.)
            Some(s) => s,
            None => {
                // The sighting is this packet's: taken back from the ring, counted here.
                self.hosts.probation.take(&addr, ts, Micros::MAX);
                self.admit(addr, Some(held), ts)
            }
        };
        let seen = Some(Seen::Host(slot));
        match which {
            Last::Src => self.last_src = seen,
            Last::Dst => self.last_dst = seen,
            Last::Arp => self.last_arp = seen,
        }
        Some(slot)
    }

    /// The host of `addr` at `ts`, admitted now if it has none (with its held sighting).
    fn admit_now(&mut self, addr: Addr16, ts: Micros) -> Slot {
        let sec = ts.div_euclid(1_000_000);
        if let Some(s) = self.hosts.touch_known(&addr, ts, sec) {
            return s;
        }
        let first = self
            .hosts
            .probation
            .take(&addr, ts, self.hosts.idle_timeout);
        self.admit(addr, first, ts)
    }

    /// Creates the host of `addr` at `ts`, with its held first sighting counted as if it had
    /// had a host since: in the bucket of its second, and, if that second is over, in the
    /// baseline as the window closed then would have (one not judged: a single sighting
    /// is below `min_window_packets`, and evidence is never held).
    fn admit(&mut self, addr: Addr16, first: Option<Held>, ts: Micros) -> Slot {
        let sec = ts.div_euclid(1_000_000);
        let slot = self.hosts.touch(addr, ts, sec);
        if let Some(first) = first {
            let fsec = first.ev.ts.div_euclid(1_000_000);
            let h = self.hosts.table.get_mut(slot);
            h.first_seen = h.first_seen.min(first.ev.ts);
            let b = h.bucket(fsec);
            count(b, &first);
            if fsec < sec {
                let x = f64::from(b.pkts_out) + f64::from(b.pkts_in);
                h.baseline.observe(fsec, x);
                h.windows += 1;
            }
        }
        slot
    }

    /// Features → score → correlation → verdict for every host active in `sec`.
    fn close_second(&mut self, sec: i64, started: Option<Instant>, out: &mut Sink<'_>) {
        let timing = out.stats.timing();
        let t_start = timing.then(Instant::now);
        let mut counts = [0u64; 4];
        let end_ts = (sec + 1).saturating_mul(1_000_000);
        let mut score_ns = 0u64;
        for i in 0..self.hosts.active.len() {
            // Under a flood most active hosts are cold by the end of the second.
            if let Some(&ahead) = self.hosts.active.get(i + 4) {
                self.hosts.prefetch_window(ahead, sec);
            }
            let slot = self.hosts.active[i];
            let Some(addr) = self.hosts.table.key(slot).copied() else {
                continue;
            };
            let host = self.hosts.table.get_mut(slot);
            if host.active_sec != sec {
                continue;
            }
            // Judged once per second even if the slot is listed twice (reused after eviction).
            host.active_sec = i64::MIN + 1;
            let totals = WindowTotals::of(host, sec);
            let b = host.bucket(sec);
            let x = f64::from(b.pkts_out) + f64::from(b.pkts_in);
            let usual = host.baseline.mean;
            let z = host.baseline.observe(sec, x);
            let ip: IpAddr = addr_from16(addr);
            let judged = totals.packets() >= u64::from(self.verdict.min_window_packets);
            // Features only for windows the model judges (or learning samples): most windows
            // under a spoofed flood hold one packet, and fifteen logarithms each cost more
            // than the rest of the window.
            let fv = if judged {
                features::compute(&totals, z)
            } else {
                Default::default()
            };
            if self.collect_samples
                && judged
                && !push_bounded(
                    out.samples,
                    SampleRec {
                        ts: end_ts,
                        host: ip,
                        features: fv,
                    },
                )
            {
                out.stats.outbox_drops += 1;
            }
            // Timed only when the forest runs: two clock reads cost more than a window the
            // model does not judge (most of them under a flood).
            let anomaly = match &self.model {
                Some(m) if judged => {
                    let t_score = timing.then(Instant::now);
                    let a = evaluate(m, &fv, &self.verdict);
                    if let Some(t) = t_score {
                        score_ns += t.elapsed().as_nanos() as u64;
                    }
                    Some(a)
                }
                _ => None,
            };
            let host = self.hosts.table.get_mut(slot);
            let a = correlate::assess(&self.verdict, anomaly.as_ref(), &host.evidence);
            host.evidence = Default::default();
            host.windows += 1;
            host.last_level = a.level as u8;
            host.last_risk = a.risk;
            host.max_level = host.max_level.max(a.level as u8);
            counts[a.level.index()] += 1;
            out.stats.windows += 1;
            out.stats.verdicts[a.level.index()] += 1;
            if a.level > Level::Safe {
                host.flagged_windows += 1;
                let rec = VerdictRec {
                    ts: end_ts,
                    host: ip,
                    level: a.level,
                    risk: a.risk,
                    anomaly_score: anomaly.map(|a| a.score),
                    confidence: a.confidence,
                    reasons: a.reasons,
                    totals,
                    usual_rate: usual,
                };
                if !push_bounded(out.verdicts, rec) {
                    out.stats.outbox_drops += 1;
                }
            }
        }
        self.hosts.active.clear();
        if counts.iter().any(|&c| c > 0) && !push_bounded(out.windows, (end_ts, counts)) {
            out.stats.outbox_drops += 1;
        }
        if let Some(t_start) = t_start {
            let total = t_start.elapsed().as_nanos() as u64;
            if score_ns > 0 {
                out.stats.record(Stage::Score, score_ns);
            }
            out.stats
                .record(Stage::Correlate, total.saturating_sub(score_ns));
        }
        if let Some(t) = started {
            out.stats
                .record(Stage::FrameToVerdict, t.elapsed().as_nanos() as u64);
        }
    }
}

/// One of the hosts evidence can be about.
#[derive(Clone, Copy, Debug)]
enum Last {
    Src,
    Dst,
    Arp,
}

/// An address of the last packet: its host, or its sighting held on probation.
#[derive(Clone, Copy, Debug)]
enum Seen {
    Host(Slot),
    Held(Held),
}

/// Counts a sighting in its host's bucket.
#[inline]
fn count(b: &mut Bucket, s: &Held) {
    let p = &s.ev;
    match s.kind {
        Sighting::Sent => {
            b.pkts_out += 1;
            b.bytes_out += u64::from(p.wire_len);
            match p.proto {
                IPPROTO_TCP => {
                    b.tcp_out += 1;
                    b.syn_out += u32::from(p.flags & SYN_ONLY != 0);
                }
                IPPROTO_ICMP | IPPROTO_ICMPV6 => b.icmp_out += 1,
                _ => {}
            }
            if p.flags & DNS_QUERY != 0 {
                b.dns_queries += 1;
                b.dns_len_sum += u32::from(p.dns_len);
                b.dns_entropy_sum += p.dns_entropy;
            }
            if p.flags & NEW_TO_SERVER != 0 {
                let da = u64::from_le_bytes(p.dst[8..16].try_into().unwrap_or([0; 8]));
                b.flows_init += 1;
                b.dst_hosts.insert(mix(da, 0x51));
                b.dst_ports.insert(mix(
                    u64::from(p.dst_port) | (u64::from(p.proto) << 16),
                    0x77,
                ));
                let svc = mix(da, u64::from(p.dst_port));
                b.add_service((svc >> 32) as u32 | 1);
            }
        }
        Sighting::Received => {
            b.pkts_in += 1;
            b.bytes_in += u64::from(p.wire_len);
            if p.proto == IPPROTO_TCP {
                b.tcp_in += 1;
                b.syn_in += u32::from(p.flags & SYN_ONLY != 0);
            }
            if p.flags & ANSWERED != 0 {
                b.flows_answered += 1;
            } else if p.flags & REJECTED != 0 {
                b.flows_rejected += 1;
            }
        }
        Sighting::Rejected => b.flows_rejected += 1,
        Sighting::Arp => {
            b.pkts_out += 1;
            b.bytes_out += u64::from(p.wire_len);
            if p.flags & 1 != 0 {
                let t = u64::from_le_bytes(p.dst[..8].try_into().unwrap_or([0; 8]));
                b.dst_hosts.insert(t);
            }
        }
        Sighting::Free => {}
    }
}

/// Events per batch handed to the thread (64 bytes each).
pub const BATCH: usize = 1024;
/// Batches in circulation: one being filled, the rest queued or being applied.
const BUFFERS: usize = 4;
/// Stack of the judge thread (only touched pages count towards RSS).
const STACK: usize = 256 << 10;

/// Results of the thread, waiting for the loop to collect them.
struct Results {
    alerts: Vec<AlertRec>,
    verdicts: Vec<VerdictRec>,
    windows: Vec<(Micros, [u64; 4])>,
    samples: Vec<SampleRec>,
    stats: Stats,
    cap: usize,
}

impl Results {
    fn sink(&mut self) -> Sink<'_> {
        Sink {
            alerts: &mut self.alerts,
            verdicts: &mut self.verdicts,
            windows: &mut self.windows,
            samples: &mut self.samples,
            stats: &mut self.stats,
        }
    }

    /// Half of some buffer is used: the loop should collect now.
    fn pressing(&self) -> bool {
        let lim = self.cap / 2;
        self.alerts.len() >= lim
            || self.verdicts.len() >= lim
            || self.windows.len() >= lim
            || self.samples.len() >= lim
    }
}

struct Shared {
    judge: Judge,
    results: Results,
}

impl Shared {
    /// Applies one batch (whoever holds the state: the thread, or the loop helping it).
    fn apply(&mut self, batch: &[HostEvent], pressing: &AtomicBool) {
        self.judge.apply_all(batch, &mut self.results.sink());
        if self.results.pressing() {
            pressing.store(true, Ordering::Relaxed);
        }
    }
}

/// Batches handed over and not yet applied, oldest first, and the emptied ones.
struct Queue {
    batches: VecDeque<Vec<HostEvent>>,
    free: Vec<Vec<HostEvent>>,
    /// The loop is gone: the thread ends once the queue is empty.
    closed: bool,
    /// The thread is asleep on `ready`, and the loop waiting on `freed`: a notification is
    /// sent only then. (std's `notify_one` is a `futex` system call even with nobody
    /// waiting, and there is one per batch each way.)
    thread_asleep: bool,
    loop_waiting: bool,
}

/// The queue with the condition the thread sleeps on while it is empty.
struct Handoff {
    queue: Mutex<Queue>,
    /// A batch was queued (the thread waits on it).
    ready: Condvar,
    /// A buffer was freed (the loop waits on it while the thread is in the middle of a batch).
    freed: Condvar,
}

/// The loop's handle on the judge thread.
///
/// Two locks: the queue's, held only to move a batch in or out, and the state's, held while
/// a batch is applied. Whoever applies takes the oldest queued batch while holding the
/// state, so batches are applied in order whoever applies them. When every buffer is
/// queued (the thread is behind) and the thread is not in the middle of a batch (it waits
/// for a core), the loop does not wait idle for one: it applies the oldest batch itself.
/// When the thread is at work, the loop waits for the buffer that batch frees instead of
/// for the state: taking the state after the thread would leave the thread waiting for
/// the loop in turn, the two applying batches one after the other instead of the loop
/// reading frames meanwhile.
pub struct JudgeThread {
    batch: Vec<HostEvent>,
    handoff: Arc<Handoff>,
    shared: Arc<Mutex<Shared>>,
    pressing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    counts: HostCounts,
    /// The threshold table's (evicted, first sightings dropped), as of the last `collect`,
    /// when the judge checks thresholds.
    thresh_counts: Option<(u64, u64)>,
    /// Hand over a closed second at once (live capture): its verdicts are then ready by the
    /// next tick, as they would be judged on the loop. Off for replay, where a capture's
    /// sparse stretches would make as many small batches as seconds.
    pub eager_close: bool,
    /// Batches the loop applied itself because the thread was behind.
    pub helped: u64,
    /// Time the loop spent on the thread's work: applying batches it was behind on, and
    /// waiting for a buffer or, at `sync`, for the batch in progress.
    pub spent: Duration,
}

/// Locks, keeping the data of a lock poisoned by a panic (tests; release builds abort).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Applies the oldest queued batch, if any, while holding `state`; returns its buffer to
/// the free list. False when the queue was empty.
fn apply_oldest(handoff: &Handoff, state: &mut Shared, pressing: &AtomicBool) -> bool {
    let Some(mut b) = lock(&handoff.queue).batches.pop_front() else {
        return false;
    };
    state.apply(&b, pressing);
    b.clear();
    let mut q = lock(&handoff.queue);
    q.free.push(b);
    let waiting = q.loop_waiting;
    drop(q);
    if waiting {
        handoff.freed.notify_one();
    }
    true
}

impl JudgeThread {
    /// Moves `judge` onto a new thread; its results are bounded by `outbox` rows per kind.
    /// When no thread can be started, the judge comes back with the error.
    pub fn start(
        judge: Box<Judge>,
        outbox: usize,
        timing_disabled: bool,
    ) -> Result<JudgeThread, (io::Error, Box<Judge>)> {
        let counts = judge.counts();
        let results = Results {
            alerts: Vec::with_capacity(outbox),
            verdicts: Vec::with_capacity(outbox),
            windows: Vec::with_capacity(outbox),
            samples: Vec::with_capacity(outbox),
            stats: Stats {
                timing_disabled,
                ..Stats::default()
            },
            cap: outbox,
        };
        let shared = Arc::new(Mutex::new(Shared {
            judge: *judge,
            results,
        }));
        let pressing = Arc::new(AtomicBool::new(false));
        let handoff = Arc::new(Handoff {
            queue: Mutex::new(Queue {
                batches: VecDeque::with_capacity(BUFFERS),
                free: (1..BUFFERS).map(|_| Vec::with_capacity(BATCH)).collect(),
                closed: false,
                thread_asleep: false,
                loop_waiting: false,
            }),
            ready: Condvar::new(),
            freed: Condvar::new(),
        });
        let (sh, pr, ho) = (
            Arc::clone(&shared),
            Arc::clone(&pressing),
            Arc::clone(&handoff),
        );
        let spawned = std::thread::Builder::new()
            .name("pn-judge".into())
            .stack_size(STACK)
            .spawn(move || {
                crate::sched::set_this_thread_or_log(crate::sched::Policy::Batch);
                loop {
                    {
                        let mut q = lock(&ho.queue);
                        while q.batches.is_empty() && !q.closed {
                            q.thread_asleep = true;
                            q = ho.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
                            q.thread_asleep = false;
                        }
                        if q.batches.is_empty() {
                            crate::stats::log_thread_times();
                            return;
                        }
                    }
                    // The loop may have applied it meanwhile; then wait for the next.
                    apply_oldest(&ho, &mut lock(&sh), &pr);
                }
            });
        let thread = match spawned {
            Ok(t) => t,
            // The closure, and its handle on the state, is dropped with the failed spawn.
            Err(e) => {
                return match Arc::try_unwrap(shared) {
                    Ok(m) => Err((
                        e,
                        Box::new(m.into_inner().unwrap_or_else(PoisonError::into_inner).judge),
                    )),
                    Err(_) => unreachable!("no thread holds the state"),
                }
            }
        };
        Ok(JudgeThread {
            batch: Vec::with_capacity(BATCH),
            handoff,
            shared,
            pressing,
            thread: Some(thread),
            counts,
            thresh_counts: None,
            eager_close: false,
            helped: 0,
            spent: Duration::ZERO,
        })
    }

    #[inline]
    pub fn push(&mut self, ev: HostEvent) {
        let close = self.eager_close && matches!(ev, HostEvent::Close { .. });
        self.batch.push(ev);
        if close || self.batch.len() >= BATCH {
            self.hand_over();
        }
    }

    /// Queues the batch being filled (if it holds anything) for the thread. When every
    /// buffer is queued already, the loop applies the oldest batch itself first.
    pub fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        loop {
            let mut q = lock(&self.handoff.queue);
            if let Some(next) = q.free.pop() {
                let full = std::mem::replace(&mut self.batch, next);
                q.batches.push_back(full);
                let asleep = q.thread_asleep;
                drop(q);
                if asleep {
                    self.handoff.ready.notify_one();
                }
                return;
            }
            drop(q);
            if self.helped == 0 || self.helped.is_power_of_two() {
                self.check_thread();
            }
            let t = Instant::now();
            let state = match self.shared.try_lock() {
                Ok(state) => Some(state),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut state) = state {
                if apply_oldest(&self.handoff, &mut state, &self.pressing) {
                    self.helped += 1;
                }
            } else {
                // The thread is applying a batch: its buffer comes back when it is done. The
                // timeout only bounds the wait should the thread have ended meanwhile.
                let mut q = lock(&self.handoff.queue);
                q.loop_waiting = true;
                let (mut q, _) = self
                    .handoff
                    .freed
                    .wait_timeout_while(q, Duration::from_millis(50), |q| q.free.is_empty())
                    .unwrap_or_else(PoisonError::into_inner);
                q.loop_waiting = false;
            }
            self.spent += t.elapsed();
        }
    }

    /// Logs once if the thread has ended (it can only panic, and release builds abort on a
    /// panic): the loop then applies every batch itself, as it does when the thread is behind.
    fn check_thread(&mut self) {
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            self.thread = None;
            log::error!("the host judge thread has ended; hosts are judged on the packet loop");
        }
    }

    /// Hands over what is gathered; with `wait`, returns only once every event handed over
    /// is applied (the loop applies what the thread has not started on).
    pub fn sync(&mut self, wait: bool) {
        self.hand_over();
        if wait {
            let t = Instant::now();
            // Holding the state, the thread is not in the middle of a batch.
            let mut state = lock(&self.shared);
            while apply_oldest(&self.handoff, &mut state, &self.pressing) {}
            drop(state);
            self.spent += t.elapsed();
        }
    }

    /// The thread's results are filling up: collect soon.
    #[inline]
    pub fn pressing(&self) -> bool {
        self.pressing.load(Ordering::Relaxed)
    }

    /// Moves the thread's results into `out` (bounded; what does not fit is counted as
    /// dropped) and its counters into `out.stats`.
    pub fn collect(&mut self, out: &mut Sink<'_>) {
        let mut g = lock(&self.shared);
        let Shared { judge, results } = &mut *g;
        merge_alerts(out.alerts, &mut results.alerts, &mut out.stats.outbox_drops);
        for v in results.verdicts.drain(..) {
            if !push_bounded(out.verdicts, v) {
                out.stats.outbox_drops += 1;
            }
        }
        for w in results.windows.drain(..) {
            if !push_bounded(out.windows, w) {
                out.stats.outbox_drops += 1;
            }
        }
        for s in results.samples.drain(..) {
            if !push_bounded(out.samples, s) {
                out.stats.outbox_drops += 1;
            }
        }
        out.stats.absorb_judged(&mut results.stats);
        results.stats.timing_disabled = out.stats.timing_disabled;
        self.counts = judge.counts();
        self.thresh_counts = judge.thresholds.as_ref().map(Thresholds::tracker_counts);
        self.pressing.store(false, Ordering::Relaxed);
    }

    /// Host-table figures as of the last `collect`.
    pub fn counts(&self) -> HostCounts {
        self.counts
    }

    /// The threshold table's (evicted, dropped) as of the last `collect`, when the judge
    /// checks thresholds.
    pub fn thresh_counts(&self) -> Option<(u64, u64)> {
        self.thresh_counts
    }

    /// Runs `f` on the judge (settings: model, learning); events already handed over may
    /// be applied before or after.
    pub fn with_judge<R>(&self, f: impl FnOnce(&mut Judge) -> R) -> R {
        f(&mut lock(&self.shared).judge)
    }
}

impl Drop for JudgeThread {
    fn drop(&mut self) {
        lock(&self.handoff.queue).closed = true;
        self.handoff.ready.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Moves the judge's alerts into `out`, after the loop's alerts of the same time and
/// before later ones: the judge checks thresholds behind the loop, so the loop may have
/// queued alerts of later packets meanwhile. (An insertion from the end: the alerts
/// still in the outbox are from the last tick or so, and in order; allocation-free.) What
/// does not fit is counted in `drops`.
fn merge_alerts(out: &mut Vec<AlertRec>, from: &mut Vec<AlertRec>, drops: &mut u64) {
    for a in from.drain(..) {
        if !push_bounded(out, a) {
            *drops += 1;
            continue;
        }
        let mut i = out.len() - 1;
        while i > 0 && out[i - 1].ts > a.ts {
            out.swap(i - 1, i);
            i -= 1;
        }
    }
}

/// Host judging, inline or on its thread.
pub enum HostStage {
    Inline(Box<Judge>),
    Thread(JudgeThread),
}

impl HostStage {
    pub fn counts(&self) -> HostCounts {
        match self {
            HostStage::Inline(j) => j.counts(),
            HostStage::Thread(t) => t.counts(),
        }
    }

    pub fn is_threaded(&self) -> bool {
        matches!(self, HostStage::Thread(_))
    }

    /// The judge's threshold table's (evicted, first sightings dropped), when it checks
    /// thresholds (with the thread: as of the last collect).
    pub fn thresh_counts(&self) -> Option<(u64, u64)> {
        match self {
            HostStage::Inline(j) => j.thresholds.as_ref().map(Thresholds::tracker_counts),
            HostStage::Thread(t) => t.thresh_counts(),
        }
    }

    /// Runs `f` on the judge, wherever it is.
    pub fn with_judge<R>(&mut self, f: impl FnOnce(&mut Judge) -> R) -> R {
        match self {
            HostStage::Inline(j) => f(j),
            HostStage::Thread(t) => t.with_judge(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packets among 300 senders and 40 receivers (a 64-host table keeps evicting), a
    /// signature hit now and then, and a closed second every 1000 events.
    fn events(n: usize) -> Vec<HostEvent> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let addr = |i: u64| {
            let mut a = [0u8; 16];
            a[10] = 0xff;
            a[11] = 0xff;
            a[12..16].copy_from_slice(&(0x0a00_0000u32 + i as u32).to_be_bytes());
            a
        };
        let mut evs = Vec::with_capacity(n + n / 100);
        for i in 0..n {
            let ts = 1_000_000_000 + i as i64 * 1000;
            if i > 0 && i % 1000 == 0 {
                evs.push(HostEvent::Close {
                    sec: ts / 1_000_000 - 1,
                    started: None,
                });
            }
            let r = next();
            evs.push(HostEvent::Packet(PacketEv {
                ts,
                src: addr(r % 300),
                dst: addr(1000 + (r >> 20) % 40),
                wire_len: 60 + (r >> 40) as u32 % 1400,
                dns_entropy: 0.0,
                dst_port: (r >> 8) as u16,
                dns_len: 0,
                proto: IPPROTO_TCP,
                flags: SRC
                    | DST
                    | if r % 3 == 0 {
                        NEW_TO_SERVER | SYN_ONLY
                    } else {
                        0
                    },
            }));
            if r % 7 == 0 {
                evs.push(HostEvent::SrcSignature {
                    rule: (r % 5) as u32,
                    priority: 1,
                });
            }
        }
        evs
    }

    fn judge() -> Judge {
        Judge::new(
            HostTable::new(64, 60_000_000, 7),
            VerdictConfig::default(),
            false,
        )
    }

    /// Verdicts, windows, window count, verdict counts, alerts (thresholds).
    type Out = (
        Vec<VerdictRec>,
        Vec<(Micros, [u64; 4])>,
        u64,
        [u64; 4],
        Vec<AlertRec>,
    );

    fn out() -> Out {
        (
            Vec::with_capacity(CAP),
            Vec::with_capacity(CAP),
            0,
            [0; 4],
            Vec::with_capacity(CAP),
        )
    }

    fn sink<'a>(o: &'a mut Out, st: &'a mut Stats, s: &'a mut Vec<SampleRec>) -> Sink<'a> {
        Sink {
            alerts: &mut o.4,
            verdicts: &mut o.0,
            windows: &mut o.1,
            samples: s,
            stats: st,
        }
    }

    const CAP: usize = 100_000;

    /// Every event applied in order on a judge of our own: the results and host counts the
    /// thread must match.
    fn applied_inline(evs: &[HostEvent]) -> (Out, HostCounts) {
        let mut out = out();
        let mut st = Stats::default();
        let mut j = judge();
        j.apply_all(evs, &mut sink(&mut out, &mut st, &mut Vec::new()));
        out.2 = st.windows;
        out.3 = st.verdicts;
        (out, j.counts())
    }

    /// What the thread has judged, collected as the loop does.
    fn collected(t: &mut JudgeThread) -> Out {
        let mut out = out();
        let mut st = Stats::default();
        t.collect(&mut sink(&mut out, &mut st, &mut Vec::new()));
        out.2 = st.windows;
        out.3 = st.verdicts;
        out
    }

    #[test]
    fn an_event_fits_a_cache_line() {
        assert!(std::mem::size_of::<HostEvent>() <= 64);
    }

    /// The thread is only notified while it sleeps: a batch handed over to a sleeping
    /// thread must still wake it, every time (a lost wake-up would leave the batch queued
    /// until the next one), and the loop never has to apply one itself.
    #[test]
    fn a_sleeping_thread_wakes_for_every_batch() {
        let evs = events(6 * BATCH);
        let Ok(mut t) = JudgeThread::start(Box::new(judge()), CAP, false) else {
            panic!("no thread")
        };
        for chunk in evs.chunks(BATCH / 2) {
            for ev in chunk {
                t.batch.push(*ev);
            }
            t.hand_over();
            // The thread applies it and goes back to sleep, with nobody else to wake it.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let q = lock(&t.handoff.queue);
                if q.batches.is_empty() && q.thread_asleep {
                    break;
                }
                drop(q);
                assert!(
                    Instant::now() < deadline,
                    "a queued batch was never applied"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(t.helped, 0, "the loop applied a batch itself");
        t.sync(true);
        let (inline, inline_counts) = applied_inline(&evs);
        assert!(inline.2 > 0, "nothing judged");
        assert_eq!(collected(&mut t), inline);
        assert_eq!(t.counts(), inline_counts);
    }

    /// The thread is held up while the loop hands over more batches than there are
    /// buffers, so the loop must apply some itself: the results are those of applying every
    /// event in order. Whether the loop gets to help depends on the scheduler (on a loaded
    /// machine the loop may not fill every buffer within the hold, or the thread may win the
    /// state lock when it is released), so the run is repeated until it has; every run's
    /// results must equal the inline ones.
    #[test]
    fn batches_apply_in_order_when_the_loop_helps() {
        let evs = events(12 * BATCH);
        let (inline, inline_counts) = applied_inline(&evs);
        assert!(
            inline.0.len() > 10 && inline.1.len() > 5,
            "too little judged"
        );
        for _attempt in 0..8 {
            let Ok(mut t) = JudgeThread::start(Box::new(judge()), CAP, false) else {
                panic!("no thread")
            };
            let shared = Arc::clone(&t.shared);
            let (held, hold) = std::sync::mpsc::channel();
            let holder = std::thread::spawn(move || {
                let g = lock(&shared);
                held.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                drop(g);
            });
            hold.recv().unwrap();
            for ev in &evs {
                t.push(*ev);
            }
            t.sync(true);
            holder.join().unwrap();
            let threaded = collected(&mut t);
            assert_eq!(threaded, inline);
            assert_eq!(t.counts(), inline_counts);
            if t.helped > 0 {
                return;
            }
        }
        panic!("the loop never applied a batch itself in 8 runs");
    }

    fn v4(i: u32) -> Addr16 {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..16].copy_from_slice(&i.to_be_bytes());
        a
    }

    fn syn(ts: Micros, src: Addr16, dst: Addr16) -> HostEvent {
        HostEvent::Packet(PacketEv {
            ts,
            src,
            dst,
            wire_len: 60,
            dns_entropy: 0.0,
            dst_port: 25565,
            dns_len: 0,
            proto: IPPROTO_TCP,
            flags: SRC | DST | NEW_TO_SERVER | SYN_ONLY,
        })
    }

    fn applied(j: &mut Judge, evs: &[HostEvent]) -> Out {
        let mut out = out();
        let mut st = Stats::default();
        j.apply_all(evs, &mut sink(&mut out, &mut st, &mut Vec::new()));
        out.2 = st.windows;
        out.3 = st.verdicts;
        out
    }

    /// The judge checks thresholded matches the loop left to it: a rule counting per
    /// destination alerts once its count is reached and is evidence against the receiver;
    /// a per-source `limit` alerts once per source and is evidence against the sender; a
    /// silenced match (a `pass` rule matched) counts without alerting; an empty second place
    /// is skipped; matches kept from alerting are counted.
    #[test]
    fn thresholded_matches_alert_and_are_evidence_on_the_judge() {
        use crate::rules::{RuleSet, RuleVars};
        let text = "alert tcp any any -> any any (msg:\"flood\"; flags:S; threshold:type both, track by_dst, count 3, seconds 10; sid:1;)\n\
                    alert tcp any any -> any any (msg:\"src\"; flags:S; threshold:type limit, track by_src, count 1, seconds 10; sid:2;)\n";
        let (mut set, rep) = RuleSet::parse_str(text, "t.rules", &RuleVars::default_home(), 64);
        assert!(rep.skipped.is_empty(), "{:?}", rep.skipped);
        let rule = |sid| (0..2).find(|&i| set.info(i).sid == sid).unwrap();
        let (flood, per_src) = (rule(1), rule(2));
        let mut j = judge();
        j.thresholds = set.take_thresholds();
        assert!(j.thresholds.is_some());
        let victim = v4(1);
        let mut evs = Vec::new();
        for k in 0..5u32 {
            let ts = 1_000_000_000 + i64::from(k) * 1000;
            let src = v4(100 + k);
            evs.push(syn(ts, src, victim));
            // The fourth SYN's per-source match is silenced; the fifth has one match only.
            let (rules, silent) = match k {
                3 => ([flood, per_src], SILENT[1]),
                4 => ([per_src, NO_RULE], 0),
                _ => ([flood, per_src], 0),
            };
            evs.push(HostEvent::Threshold {
                ts,
                flow_id: 7 + u64::from(k),
                src,
                dst: victim,
                rules,
                src_port: 40_000,
                dst_port: 25565,
                proto: IPPROTO_TCP,
                flags: SRC | DST | silent,
            });
        }
        let mut out = out();
        let mut st = Stats::default();
        j.apply_all(&evs, &mut sink(&mut out, &mut st, &mut Vec::new()));
        let alerts: Vec<(u32, u64, IpAddr)> = out
            .4
            .iter()
            .map(|a| match a.source {
                AlertSource::Rule(r) => (r, a.flow_id, a.src),
                _ => panic!("{a:?}"),
            })
            .collect();
        let ip = |i: u32| addr_from16(v4(i));
        // The flood rule alerts at its third match only; the per-source one for each new
        // source, except the silenced one.
        assert_eq!(
            alerts,
            [
                (per_src, 7, ip(100)),
                (per_src, 8, ip(101)),
                (flood, 9, ip(102)),
                (per_src, 9, ip(102)),
                (per_src, 11, ip(104)),
            ]
        );
        assert_eq!(out.4[2].dst, ip(1));
        assert_eq!((out.4[2].src_port, out.4[2].dst_port), (40_000, 25565));
        assert_eq!((st.alerts, st.alerts_suppressed), (5, 3));
        let sig = |j: &mut Judge, a: Addr16| {
            let h = j
                .hosts
                .touch_known(&a, 1_000_010_000, 1000)
                .expect("a host");
            let s = &j.hosts.table.get(h).evidence.sig;
            (s.hits, s.rules[..usize::from(s.n_rules)].to_vec())
        };
        assert_eq!(sig(&mut j, victim), (1, vec![flood]));
        assert_eq!(sig(&mut j, v4(102)), (1, vec![per_src]));
        // The silenced match left no evidence: its sender was only seen once, and held.
        assert!(j.hosts.touch_known(&v4(103), 1_000_010_000, 1000).is_none());
    }

    fn big_judge(doorkeeper: bool) -> Judge {
        let mut j = Judge::new(
            HostTable::new(16_384, 60_000_000, 11),
            VerdictConfig::default(),
            false,
        );
        j.doorkeeper = doorkeeper;
        j
    }

    /// Hosts seen more than once end up exactly as when every address got a host at its
    /// first sighting — buckets, baseline, windows, first and last seen — and every verdict
    /// is the same; the doorkeeper only leaves out addresses seen once.
    #[test]
    fn admitted_hosts_match_hosts_kept_from_their_first_sighting() {
        let mut evs = Vec::new();
        for (i, ev) in events(30_000).into_iter().enumerate() {
            if let HostEvent::Packet(p) = ev {
                if i % 3 == 0 {
                    // A spoofed source seen once, and one seen twice seconds apart.
                    evs.push(syn(p.ts, v4(0x0b00_0000 + i as u32), p.dst));
                    if i % 9 == 0 {
                        evs.push(syn(p.ts, v4(0x0c00_0000 + i as u32), p.dst));
                    }
                    if i % 9 == 0 && i >= 4_500 {
                        evs.push(syn(p.ts, v4(0x0c00_0000 + i as u32 - 4_500), p.dst));
                    }
                }
            }
            evs.push(ev);
        }
        let (mut with, mut without) = (big_judge(true), big_judge(false));
        let (mut a, mut b) = (applied(&mut with, &evs), applied(&mut without, &evs));
        assert!(!a.0.is_empty(), "no verdicts to compare");
        // (Within a second hosts are judged in order of activity: admission for one.)
        let by_host = |v: &VerdictRec| (v.ts, v.host);
        a.0.sort_by_key(by_host);
        b.0.sort_by_key(by_host);
        assert_eq!(a.0, b.0, "verdicts differ");
        let (mut once, mut admitted) = (0, 0);
        without
            .hosts
            .table
            .for_each(|_, addr, h| match with.hosts.table.find(addr) {
                Some(s) => {
                    admitted += 1;
                    assert_eq!(
                        format!("{:?}", with.hosts.table.get(s)),
                        format!("{h:?}"),
                        "host {addr:?}"
                    );
                }
                None => {
                    once += 1;
                    let seen: u32 = h.window(i64::MAX).map(|b| b.pkts_out + b.pkts_in).sum();
                    assert!(seen <= 1 && h.windows <= 1, "{addr:?} seen {seen} times");
                }
            });
        assert!(
            admitted > 300 && once > 5_000,
            "{admitted} admitted, {once} once"
        );
        assert_eq!(with.counts().held, once);
        assert!(a.2 < b.2, "fewer windows: addresses seen once have none");
    }

    /// Evidence is never held: a single packet that raises a signature gives its sender a
    /// host at once, with the packet counted, and a verdict at the end of the second.
    #[test]
    fn evidence_admits_an_address_seen_once() {
        let mut j = big_judge(true);
        let (attacker, victim) = (v4(0x0a00_0001), v4(0x0a00_0002));
        let t0 = 1_000_000_000;
        let out = applied(
            &mut j,
            &[
                syn(t0, attacker, victim),
                HostEvent::SrcSignature {
                    rule: 3,
                    priority: 1,
                },
                HostEvent::Close {
                    sec: t0 / 1_000_000,
                    started: None,
                },
            ],
        );
        let s = j
            .hosts
            .table
            .find(&attacker)
            .expect("the attacker has a host");
        let h = j.hosts.table.get(s);
        assert_eq!(h.window(t0 / 1_000_000).map(|b| b.pkts_out).sum::<u32>(), 1);
        assert_eq!(h.first_seen, t0);
        assert!(
            j.hosts.table.find(&victim).is_none(),
            "the victim was seen once"
        );
        assert_eq!(out.0.len(), 1);
        assert_eq!(out.0[0].host, addr_from16(attacker));
        assert!(out.0[0].level > Level::Safe);
    }

    /// A flood of spoofed sources, each seen once, no longer pushes the real hosts out of
    /// a small table: a host that exchanges a packet with a server every 200 ms keeps all
    /// its packets (without the doorkeeper the flood evicts it again and again).
    #[test]
    fn a_flood_of_addresses_seen_once_keeps_the_real_hosts() {
        let (real, server, victim) = (v4(0x0a00_0005), v4(0x0a00_0006), v4(0x0a00_0007));
        let t0 = 1_000_000_000;
        let mut evs = Vec::new();
        for k in 0..30_000i64 {
            let ts = t0 + k * 100;
            evs.push(syn(ts, v4(0x2000_0000 + k as u32), victim));
            if k % 2_000 == 0 {
                evs.push(syn(ts, real, server));
            }
            if k % 2_000 == 10 {
                // The reply, 1 ms later (64 sightings of the flood later).
                evs.push(syn(ts, server, real));
            }
        }
        let last = t0 + 29_999 * 100;
        for doorkeeper in [true, false] {
            let mut j = Judge::new(
                HostTable::new(64, 60_000_000, 3),
                VerdictConfig::default(),
                false,
            );
            j.doorkeeper = doorkeeper;
            applied(&mut j, &evs);
            let seen = j.hosts.table.find(&real).map_or(0, |s| {
                let h = j.hosts.table.get(s);
                h.window(last / 1_000_000)
                    .map(|b| b.pkts_out + b.pkts_in)
                    .sum::<u32>()
            });
            if doorkeeper {
                assert_eq!(seen, 30, "the real host lost packets");
                assert_eq!(j.counts().evicted, 0);
                assert_eq!(j.counts().held_dropped, 30_000 - 64);
            } else {
                assert!(
                    seen < 30,
                    "the flood did not evict it: the test shows nothing"
                );
            }
        }
    }
}
