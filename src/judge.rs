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
//! loop's CPU time by a third on the benchmark capture.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::VerdictConfig;
use crate::correlate;
use crate::decode::{Micros, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP};
use crate::engine::{evaluate, push_bounded, SampleRec, VerdictRec};
use crate::events::Level;
use crate::features::{self, WindowTotals};
use crate::flow::{addr_from16, Addr16};
use crate::host::HostTable;
use crate::model::Model;
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
    /// Signature evidence on the last packet's receiver (a spoofed group source's victim).
    DstSignature {
        rule: u32,
        priority: u8,
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
}

/// Host state and the per-second judging.
pub struct Judge {
    pub hosts: HostTable,
    pub model: Option<Arc<Model>>,
    pub verdict: VerdictConfig,
    pub collect_samples: bool,
    /// The hosts of the last packet (evidence events apply to them) and the last ARP sender.
    last_src: Option<Slot>,
    last_dst: Option<Slot>,
    last_arp: Option<Slot>,
}

impl Judge {
    pub fn new(hosts: HostTable, verdict: VerdictConfig, collect_samples: bool) -> Judge {
        Judge {
            hosts,
            model: None,
            verdict,
            collect_samples,
            last_src: None,
            last_dst: None,
            last_arp: None,
        }
    }

    pub fn counts(&self) -> HostCounts {
        HostCounts {
            active: self.hosts.len(),
            capacity: self.hosts.table.capacity(),
            evicted: self.hosts.evicted,
            expired: self.hosts.expired,
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
                let sec = ts.div_euclid(1_000_000);
                let h = self.hosts.touch(addr, ts, sec);
                self.hosts.table.get_mut(h).bucket(sec).flows_rejected += 1;
            }
            HostEvent::SrcSignature { rule, priority } => {
                if let Some(h) = self.last_src {
                    let ev = &mut self.hosts.table.get_mut(h).evidence;
                    ev.add_signature(rule, priority);
                }
            }
            HostEvent::DstSignature { rule, priority } => {
                if let Some(h) = self.last_dst {
                    let ev = &mut self.hosts.table.get_mut(h).evidence;
                    ev.add_signature(rule, priority);
                }
            }
            HostEvent::Intel { list, addr } => {
                for h in [self.last_src, self.last_dst].into_iter().flatten() {
                    let ev = &mut self.hosts.table.get_mut(h).evidence;
                    ev.intel_hits += 1;
                    if ev.intel_list == 0 {
                        ev.intel_list = list + 1;
                        ev.intel_addr = addr;
                    }
                }
            }
            HostEvent::Arp {
                sender,
                ts,
                wire_len,
                target,
            } => {
                let sec = ts.div_euclid(1_000_000);
                let h = self.hosts.touch(sender, ts, sec);
                let b = self.hosts.table.get_mut(h).bucket(sec);
                b.pkts_out += 1;
                b.bytes_out += u64::from(wire_len);
                if let Some(t) = target {
                    b.dst_hosts.insert(t);
                }
                self.last_arp = Some(h);
            }
            HostEvent::ArpChange {
                old_mac,
                new_mac,
                also,
                ts,
            } => {
                if let Some(h) = self.last_arp {
                    let ev = &mut self.hosts.table.get_mut(h).evidence;
                    ev.arp_change = true;
                    ev.arp_old_mac = old_mac;
                    ev.arp_new_mac = new_mac;
                }
                if let Some(other) = also {
                    // The other claimed address (often the gateway) is a victim of the same MAC.
                    let o = self.hosts.touch(other, ts, ts.div_euclid(1_000_000));
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

    #[inline]
    fn packet(&mut self, p: &PacketEv) {
        let (ts, sec) = (p.ts, p.ts.div_euclid(1_000_000));
        let src = (p.flags & SRC != 0).then(|| self.hosts.touch(p.src, ts, sec));
        let dst = (p.flags & DST != 0).then(|| self.hosts.touch(p.dst, ts, sec));
        self.last_src = src;
        self.last_dst = dst;
        if let Some(h) = src {
            let b = self.hosts.table.get_mut(h).bucket(sec);
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
        if let Some(h) = dst {
            let b = self.hosts.table.get_mut(h).bucket(sec);
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
        // When the table is full (a flood), the next new host evicts the least recently
        // seen one: fetch it while the next event is applied.
        self.hosts.prefetch_victim(sec);
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

/// Events per batch handed to the thread (64 bytes each).
pub const BATCH: usize = 1024;
/// Batches in circulation: one being filled, the rest queued or being applied.
const BUFFERS: usize = 4;
/// Stack of the judge thread (only touched pages count towards RSS).
const STACK: usize = 256 << 10;

/// Results of the thread, waiting for the loop to collect them.
struct Results {
    verdicts: Vec<VerdictRec>,
    windows: Vec<(Micros, [u64; 4])>,
    samples: Vec<SampleRec>,
    stats: Stats,
    cap: usize,
}

impl Results {
    fn sink(&mut self) -> Sink<'_> {
        Sink {
            verdicts: &mut self.verdicts,
            windows: &mut self.windows,
            samples: &mut self.samples,
            stats: &mut self.stats,
        }
    }

    /// Half of some buffer is used: the loop should collect now.
    fn pressing(&self) -> bool {
        let lim = self.cap / 2;
        self.verdicts.len() >= lim || self.windows.len() >= lim || self.samples.len() >= lim
    }
}

struct Shared {
    judge: Judge,
    results: Results,
}

/// The loop's handle on the judge thread.
pub struct JudgeThread {
    batch: Vec<HostEvent>,
    free: Vec<Vec<HostEvent>>,
    to_thread: Option<SyncSender<Vec<HostEvent>>>,
    from_thread: Receiver<Vec<HostEvent>>,
    in_flight: usize,
    shared: Arc<Mutex<Shared>>,
    pressing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    counts: HostCounts,
    /// The thread has ended: events are applied on the loop.
    gone: bool,
    /// Hand over a closed second at once (live capture): its verdicts are then ready by the
    /// next tick, as they would be judged on the loop. Off for replay, where a capture's
    /// sparse stretches would make as many small batches as seconds.
    pub eager_close: bool,
    /// Time the loop waited for the thread (all batches queued, or `sync`).
    pub waited: Duration,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic on the thread aborts the process in release builds (panic = "abort"); in
    // tests, keep what the state holds.
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
        let (to_thread, jobs) = sync_channel::<Vec<HostEvent>>(BUFFERS);
        let (done, from_thread) = sync_channel::<Vec<HostEvent>>(BUFFERS);
        let (sh, pr) = (Arc::clone(&shared), Arc::clone(&pressing));
        let spawned = std::thread::Builder::new()
            .name("pn-judge".into())
            .stack_size(STACK)
            .spawn(move || {
                while let Ok(mut batch) = jobs.recv() {
                    {
                        let mut g = lock(&sh);
                        let Shared { judge, results } = &mut *g;
                        judge.apply_all(&batch, &mut results.sink());
                        if results.pressing() {
                            pr.store(true, Ordering::Relaxed);
                        }
                    }
                    batch.clear();
                    if done.send(batch).is_err() {
                        break;
                    }
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
            free: (1..BUFFERS).map(|_| Vec::with_capacity(BATCH)).collect(),
            to_thread: Some(to_thread),
            from_thread,
            in_flight: 0,
            shared,
            pressing,
            thread: Some(thread),
            counts,
            gone: false,
            eager_close: false,
            waited: Duration::ZERO,
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

    /// Hands the batch being filled to the thread (if it holds anything), waiting for a
    /// free buffer only when all of them are queued.
    pub fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        if self.gone {
            self.apply_here();
            return;
        }
        while let Ok(b) = self.from_thread.try_recv() {
            self.in_flight -= 1;
            self.free.push(b);
        }
        let next = match self.free.pop() {
            Some(b) => b,
            None => {
                let t = Instant::now();
                let back = self.from_thread.recv();
                self.waited += t.elapsed();
                match back {
                    Ok(b) => {
                        self.in_flight -= 1;
                        b
                    }
                    Err(_) => {
                        self.thread_gone();
                        self.apply_here();
                        return;
                    }
                }
            }
        };
        let full = std::mem::replace(&mut self.batch, next);
        match self.to_thread.as_ref().map(|t| t.send(full)) {
            Some(Ok(())) => self.in_flight += 1,
            Some(Err(std::sync::mpsc::SendError(full))) => {
                self.batch = full;
                self.thread_gone();
                self.apply_here();
            }
            None => {}
        }
    }

    /// The thread ended (it can only panic out of its loop, and release builds abort on a
    /// panic): from now on the loop applies the events itself, under the same lock.
    fn thread_gone(&mut self) {
        if !self.gone {
            log::error!(
                "the host judge thread has ended; judging on the packet loop from now on \
                 (events handed to it since its last batch are lost)"
            );
        }
        self.gone = true;
        self.to_thread = None;
        self.in_flight = 0;
    }

    fn apply_here(&mut self) {
        let mut g = lock(&self.shared);
        let Shared { judge, results } = &mut *g;
        judge.apply_all(&self.batch, &mut results.sink());
        if results.pressing() {
            self.pressing.store(true, Ordering::Relaxed);
        }
        self.batch.clear();
    }

    /// Hands over what is gathered; with `wait`, returns only once the thread has applied
    /// every event handed to it.
    pub fn sync(&mut self, wait: bool) {
        self.hand_over();
        if wait {
            let t = Instant::now();
            while self.in_flight > 0 {
                match self.from_thread.recv() {
                    Ok(b) => {
                        self.in_flight -= 1;
                        self.free.push(b);
                    }
                    Err(_) => self.thread_gone(),
                }
            }
            self.waited += t.elapsed();
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
        self.pressing.store(false, Ordering::Relaxed);
    }

    /// Host-table figures as of the last `collect`.
    pub fn counts(&self) -> HostCounts {
        self.counts
    }

    /// Runs `f` on the judge (settings: model, learning); events already handed over may
    /// be applied before or after.
    pub fn with_judge<R>(&self, f: impl FnOnce(&mut Judge) -> R) -> R {
        f(&mut lock(&self.shared).judge)
    }
}

impl Drop for JudgeThread {
    fn drop(&mut self) {
        self.to_thread = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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

    /// Runs `f` on the judge, wherever it is.
    pub fn with_judge<R>(&mut self, f: impl FnOnce(&mut Judge) -> R) -> R {
        match self {
            HostStage::Inline(j) => f(j),
            HostStage::Thread(t) => t.with_judge(f),
        }
    }
}
