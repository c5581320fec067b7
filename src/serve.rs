//! The HTTP side: the status page, the JSON API, `/metrics` and `/api/db`, served so that no
//! client — slow, stuck, flooding or hostile — can stall packet processing.
//!
//! Design. One I/O thread owns the listening socket and every connection, all non-blocking:
//! it reads request heads (capped in size and time), rejects what is malformed, not GET/HEAD
//! or lacks the token, and hands the rest to the loop through a bounded channel. The loop,
//! on its ticks, takes at most a few requests within a small time budget ([`Server::poll`]),
//! builds each answer from state it owns and passes it back with `try_send` — it never
//! waits on a socket or a channel. The I/O thread then writes answers as fast as each
//! client reads them. `/api/db` snapshots are made by one short-lived thread with its own
//! read-only SQLite connection (WAL lets it read beside the loop's writer).
//! Threads: one I/O thread plus at most one snapshot thread. Memory: at most
//! [`MAX_CONNS`] connections, each with a request head of at most [`MAX_REQUEST_BYTES`].
//! tiny_http was not used here: it starts a thread per connection without bound, reads
//! header lines without a size limit and has no read timeouts.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use serde_json::json;

use crate::decode::DecodeError;
use crate::engine::Engine;
use crate::events::Level;
use crate::metrics::{self, HttpCounters};
use crate::page;
use crate::runtime::{Outputs, RunError, RunInfo};
use crate::stats::{Histogram, Stage};
use crate::store::{LevelCounts, Table};

/// Connections open at once; more are answered 503 and closed.
pub const MAX_CONNS: usize = 256;
/// Requests handed to the loop and not yet answered; more are answered 503.
pub const MAX_INFLIGHT: usize = 64;
/// Largest request head (request line and headers) accepted.
pub const MAX_REQUEST_BYTES: usize = 8192;
/// A client must send its whole request head within this time.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A response that makes no progress for this long is abandoned.
pub const WRITE_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a request waits for the loop before it is answered 503.
const LOOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Most requests answered per poll, and the wall-time budget of one poll: a flood of
/// requests costs the loop at most this much per tick.
const MAX_PER_POLL: usize = 8;
const POLL_BUDGET: Duration = Duration::from_millis(5);
/// Largest `limit` an API call may ask for.
pub const MAX_LIMIT: u32 = 1000;
/// Rendered `/`, `/api/status` and `/metrics` bodies are reused for this long.
const CACHE_FOR: Duration = Duration::from_millis(1000);
/// Frames/s samples for the page's chart: one every `RATE_EVERY`, the last `RATE_SAMPLES`.
const RATE_EVERY: Duration = Duration::from_secs(2);
pub const RATE_SAMPLES: usize = 300;

/// A request the I/O thread accepted and passed to the loop.
#[derive(Debug)]
struct Pending {
    id: u64,
    path: String,
    query: String,
}

/// A response body.
enum Body {
    Bytes(Arc<[u8]>),
    /// A snapshot file (already unlinked) and its length.
    File(File, u64),
}

/// What the loop hands back for a request.
enum Answer {
    Reply {
        id: u64,
        reply: Reply,
    },
    /// Make a snapshot of this database and send it.
    Snapshot {
        id: u64,
        db: PathBuf,
    },
}

/// A complete response: status, type and body.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Arc<[u8]>,
}

impl Reply {
    fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: Arc::from(v.to_string().into_bytes()),
        }
    }

    fn error(status: u16, msg: &str) -> Reply {
        Reply::json(status, &json!({ "error": msg }))
    }

    fn text(status: u16, content_type: &'static str, s: String) -> Reply {
        Reply {
            status,
            content_type,
            body: Arc::from(s.into_bytes()),
        }
    }
}

/// Counters the I/O thread keeps; the loop reads them for /metrics and /api/status.
#[derive(Default)]
struct IoCounters {
    connections: AtomicU64,
    refused: AtomicU64,
    open: AtomicU64,
    unauthorized: AtomicU64,
    bad_requests: AtomicU64,
    timeouts: AtomicU64,
    busy: AtomicU64,
}

/// The loop's handle on the HTTP side.
pub struct Server {
    pub addr: String,
    requests: Receiver<Pending>,
    answers: SyncSender<Answer>,
    counters: Arc<IoCounters>,
    /// Requests the loop answered.
    pub requests_answered: u64,
    /// Wall time each poll that answered something took from the loop.
    pub poll_time: Histogram,
    cache: [Option<(Instant, Arc<[u8]>)>; 3],
    rate: RateRing,
}

impl Server {
    /// Binds `addr` and starts the I/O thread. An empty `token` means no authentication
    /// (a warning is logged when bound beyond loopback).
    pub fn bind(addr: &str, token: &str) -> Result<Server, RunError> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| RunError::Other(format!("cannot serve HTTP on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| RunError::Other(format!("cannot serve HTTP on {addr}: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| RunError::Other(format!("cannot serve HTTP on {addr}: {e}")))?;
        if !local.ip().is_loopback() && token.is_empty() {
            warn!("HTTP bound to {local} beyond loopback without a token: anyone on the network can read the results (set http.token)");
        }
        let (req_tx, req_rx) = mpsc::sync_channel(MAX_INFLIGHT);
        let (ans_tx, ans_rx) = mpsc::sync_channel(2 * MAX_INFLIGHT);
        let counters = Arc::new(IoCounters::default());
        let io = IoThread {
            listener,
            token: token.as_bytes().to_vec(),
            conns: Vec::with_capacity(MAX_CONNS),
            next_id: 1,
            requests: req_tx,
            answers: ans_rx,
            counters: Arc::clone(&counters),
            snapshot: None,
        };
        std::thread::Builder::new()
            .name("phantomnet-http".into())
            .stack_size(256 * 1024)
            .spawn(move || io.run())
            .map_err(|e| RunError::Other(format!("cannot start the HTTP thread: {e}")))?;
        info!("status page on http://{local}/");
        Ok(Server {
            addr: local.to_string(),
            requests: req_rx,
            answers: ans_tx,
            counters,
            requests_answered: 0,
            poll_time: Histogram::default(),
            cache: [None, None, None],
            rate: RateRing::default(),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr.parse().ok()
    }

    /// Called by the loop on ticks: records a frames/s sample and answers waiting requests,
    /// at most [`MAX_PER_POLL`] of them and for about [`POLL_BUDGET`]. Never blocks.
    pub fn poll(&mut self, engine: &Engine, outputs: &Outputs, info: &RunInfo) {
        self.rate.sample(Instant::now(), engine.stats.frames);
        let t = Instant::now();
        let mut answered = false;
        for _ in 0..MAX_PER_POLL {
            if t.elapsed() >= POLL_BUDGET {
                break;
            }
            let p = match self.requests.try_recv() {
                Ok(p) => p,
                Err(_) => break,
            };
            self.requests_answered += 1;
            answered = true;
            let answer = self.route(p, engine, outputs, info);
            match self.answers.try_send(answer) {
                Ok(()) => {}
                // The I/O thread is behind; the client gets a 503 when its wait times out.
                Err(TrySendError::Full(_)) => debug!("HTTP: answer queue full; answer dropped"),
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
        if answered {
            self.poll_time.record(t.elapsed().as_nanos() as u64);
        }
    }

    pub fn counters(&self) -> HttpCounters {
        let c = &self.counters;
        HttpCounters {
            connections: c.connections.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            open: c.open.load(Ordering::Relaxed),
            requests: self.requests_answered,
            unauthorized: c.unauthorized.load(Ordering::Relaxed),
            bad_requests: c.bad_requests.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            busy: c.busy.load(Ordering::Relaxed),
        }
    }

    fn route(&mut self, p: Pending, engine: &Engine, outputs: &Outputs, info: &RunInfo) -> Answer {
        let id = p.id;
        let reply = |reply| Answer::Reply { id, reply };
        let no_params = |q: &str| parse_query(q, &[]).err();
        match p.path.as_str() {
            "/healthz" => reply(match no_params(&p.query) {
                Some(e) => Reply::error(400, &e),
                None => Reply::text(200, "text/plain; charset=utf-8", "ok\n".into()),
            }),
            "/" | "/api/status" | "/metrics" => {
                if let Some(e) = no_params(&p.query) {
                    return reply(Reply::error(400, &e));
                }
                let (slot, ctype) = match p.path.as_str() {
                    "/" => (0, "text/html; charset=utf-8"),
                    "/api/status" => (1, "application/json"),
                    _ => (2, metrics::CONTENT_TYPE),
                };
                if let Some((at, body)) = &self.cache[slot] {
                    if at.elapsed() < CACHE_FOR {
                        return reply(Reply {
                            status: 200,
                            content_type: ctype,
                            body: Arc::clone(body),
                        });
                    }
                }
                let text = match slot {
                    0 => {
                        let st = self.status(engine, outputs, info);
                        page::render(&st, &self.page_data(outputs, &st))
                    }
                    1 => match serde_json::to_string(&self.status(engine, outputs, info)) {
                        Ok(s) => s,
                        Err(e) => return reply(Reply::error(500, &e.to_string())),
                    },
                    _ => metrics::render(engine, outputs, info, &self.counters(), &self.poll_time),
                };
                let body: Arc<[u8]> = Arc::from(text.into_bytes());
                self.cache[slot] = Some((Instant::now(), Arc::clone(&body)));
                reply(Reply {
                    status: 200,
                    content_type: ctype,
                    body,
                })
            }
            "/api/verdicts" | "/api/alerts" | "/api/hosts" => {
                let allowed: &[&str] = match p.path.as_str() {
                    "/api/verdicts" => &["min", "since", "limit"],
                    "/api/alerts" => &["since", "limit", "sid"],
                    _ => &["since", "limit"],
                };
                let q = match parse_query(&p.query, allowed) {
                    Ok(q) => q,
                    Err(e) => return reply(Reply::error(400, &e)),
                };
                let Some(s) = &outputs.store else {
                    return reply(Reply::error(503, "no database configured"));
                };
                let v = match p.path.as_str() {
                    "/api/verdicts" => s.recent_verdicts(q.min, q.since, q.limit).map(|v| json!(v)),
                    "/api/alerts" => s.recent_alerts(q.since, q.sid, q.limit).map(|v| json!(v)),
                    _ => s.hosts(q.since, q.limit).map(|v| json!(v)),
                };
                reply(match v {
                    Ok(v) => Reply::json(200, &v),
                    Err(e) => Reply::error(500, &e.to_string()),
                })
            }
            "/api/db" => {
                if let Some(e) = no_params(&p.query) {
                    return reply(Reply::error(400, &e));
                }
                match &outputs.store {
                    None => reply(Reply::error(503, "no database configured")),
                    Some(s) => Answer::Snapshot {
                        id,
                        db: s.path().to_path_buf(),
                    },
                }
            }
            _ => reply(Reply::error(404, &format!("no such endpoint: {}", p.path))),
        }
    }

    /// Everything `/api/status` reports (the page shows the same).
    pub fn status(&self, engine: &Engine, outputs: &Outputs, info: &RunInfo) -> Status {
        let s = &engine.stats;
        let uptime = info.started.elapsed().as_secs_f64();
        let decode_errors = DecodeError::ALL
            .iter()
            .map(|e| (e.name(), s.decode_errors[e.index()]))
            .collect();
        // "Last hour/day" are in packet time, so a replayed capture reads as it happened.
        let now_ts = if s.last_ts != 0 {
            s.last_ts as f64 / 1e6
        } else {
            crate::runtime::unix_now()
        };
        let counts = |span: f64| {
            outputs
                .store
                .as_ref()
                .and_then(|st| st.verdict_counts(now_ts - span).ok())
        };
        let learning_samples = if engine.options().collect_samples {
            outputs
                .store
                .as_ref()
                .and_then(|st| st.count(Table::FeatureSamples).ok())
        } else {
            None
        };
        let latency = Stage::ALL
            .iter()
            .map(|&st| LatencySummary::of(st.name(), &s.latency[st as usize]))
            .chain(std::iter::once(LatencySummary::of("http", &self.poll_time)))
            .collect();
        Status {
            appliance: info.appliance.clone(),
            version: env!("CARGO_PKG_VERSION"),
            mode: info.mode,
            source: info.source.clone(),
            capture_done: info.capture_done,
            started_unix: info.started_unix,
            uptime_s: (uptime * 10.0).round() / 10.0,
            frames: s.frames,
            bytes: s.bytes,
            frames_per_s: self.rate.current().unwrap_or(if uptime > 0.0 {
                s.frames as f64 / uptime
            } else {
                0.0
            }),
            frames_per_s_avg: if uptime > 0.0 {
                s.frames as f64 / uptime
            } else {
                0.0
            },
            kernel_drops: info.kernel_drops,
            decode_errors,
            decode_errors_total: s.decode_errors_total(),
            packet_time: PacketTime {
                first: s.first_ts as f64 / 1e6,
                last: s.last_ts as f64 / 1e6,
            },
            flows: TableStatus {
                active: engine.flows.len() as u64,
                capacity: engine.flows.table.capacity() as u64,
                created: Some(engine.flows.created),
                evicted: engine.flows.evicted,
                expired: engine.flows.expired,
                held: None,
                held_dropped: None,
            },
            hosts: TableStatus {
                active: engine.host_counts().active as u64,
                capacity: engine.host_counts().capacity as u64,
                created: None,
                evicted: engine.host_counts().evicted,
                expired: engine.host_counts().expired,
                held: Some(engine.host_counts().held as u64),
                held_dropped: Some(engine.host_counts().held_dropped),
            },
            alerts: s.alerts,
            verdicts: LevelCounts {
                safe: s.verdicts[0],
                warning: s.verdicts[1],
                high: s.verdicts[2],
                critical: s.verdicts[3],
            },
            verdicts_last_hour: counts(3600.0),
            verdicts_last_day: counts(86_400.0),
            host_windows: s.windows,
            rules_loaded: info.rules_loaded,
            intel_entries: info.intel_entries,
            model: engine.model().map(crate::runtime::model_json),
            learning: Learning {
                enabled: engine.options().collect_samples,
                samples_stored: learning_samples,
                progress: info.learning.clone(),
            },
            syslog: outputs
                .syslog
                .as_ref()
                .map(crate::syslog::Syslog::status_json),
            latency,
            store: StoreStatus {
                path: outputs
                    .store
                    .as_ref()
                    .map(|s| s.path().display().to_string()),
                backlog_rows: outputs.backlog() as u64,
                dropped_rows: outputs.dropped(),
                write_failures: outputs.store_failures,
                last_error: outputs.last_store_error.clone(),
            },
            outbox_drops: s.outbox_drops,
            http: self.counters(),
            generated_at: crate::runtime::unix_now(),
        }
    }

    fn page_data(&self, outputs: &Outputs, st: &Status) -> page::PageData {
        let now_ts = if st.packet_time.last > 0.0 {
            st.packet_time.last
        } else {
            st.generated_at
        };
        let mut d = page::PageData {
            rate: self.rate.points(),
            ..page::PageData::default()
        };
        if let Some(store) = &outputs.store {
            d.verdicts = store
                .recent_verdicts(Level::Warning, 0.0, 12)
                .unwrap_or_default();
            d.hosts = store.hosts(now_ts - 86_400.0, 10).unwrap_or_default();
            // Verdicts over (at most) the last day of packet time, in about 60 bars.
            let span = (now_ts - st.packet_time.first.max(now_ts - 86_400.0)).max(1.0);
            let bucket = page::nice_bucket(span / 60.0);
            d.bucket_s = bucket;
            d.series = store
                .window_series(now_ts - span - bucket, bucket)
                .unwrap_or_default();
        }
        d
    }
}

/// `/api/status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Status {
    pub appliance: String,
    pub version: &'static str,
    pub mode: &'static str,
    pub source: String,
    pub capture_done: bool,
    pub started_unix: f64,
    pub uptime_s: f64,
    pub frames: u64,
    pub bytes: u64,
    /// Over the last few seconds of wall time.
    pub frames_per_s: f64,
    pub frames_per_s_avg: f64,
    pub kernel_drops: u64,
    pub decode_errors: std::collections::BTreeMap<&'static str, u64>,
    pub decode_errors_total: u64,
    pub packet_time: PacketTime,
    pub flows: TableStatus,
    pub hosts: TableStatus,
    pub alerts: u64,
    /// Host windows judged at each level since start.
    pub verdicts: LevelCounts,
    /// The same from the database, over the last hour and day of packet time.
    pub verdicts_last_hour: Option<LevelCounts>,
    pub verdicts_last_day: Option<LevelCounts>,
    pub host_windows: u64,
    pub rules_loaded: usize,
    pub intel_entries: usize,
    pub model: Option<serde_json::Value>,
    pub learning: Learning,
    /// Syslog output counters (None when syslog is off).
    pub syslog: Option<serde_json::Value>,
    pub latency: Vec<LatencySummary>,
    pub store: StoreStatus,
    pub outbox_drops: u64,
    pub http: HttpCounters,
    pub generated_at: f64,
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct PacketTime {
    pub first: f64,
    pub last: f64,
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct TableStatus {
    pub active: u64,
    pub capacity: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    pub evicted: u64,
    pub expired: u64,
    /// Hosts only: addresses seen once, held until they show up again (the doorkeeper).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<u64>,
    /// Hosts only: held sightings dropped before their address showed up again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_dropped: Option<u64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Learning {
    pub enabled: bool,
    pub samples_stored: Option<u64>,
    /// Learning-mode progress (state, elapsed, progress) when learning mode is on.
    pub progress: Option<crate::runtime::LearningStatus>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StoreStatus {
    pub path: Option<String>,
    pub backlog_rows: u64,
    pub dropped_rows: u64,
    pub write_failures: u64,
    pub last_error: Option<String>,
}

/// Percentiles of one stage (upper bounds of log2 buckets, so within a factor of 2).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LatencySummary {
    pub stage: &'static str,
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

impl LatencySummary {
    fn of(stage: &'static str, h: &Histogram) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            stage,
            samples: h.count,
            p50_us: us(h.quantile_ns(0.5)),
            p90_us: us(h.quantile_ns(0.9)),
            p99_us: us(h.quantile_ns(0.99)),
            mean_us: (h.mean_ns() / 10.0).round() / 100.0,
        }
    }
}

impl serde::Serialize for HttpCounters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("HttpCounters", 8)?;
        st.serialize_field("connections", &self.connections)?;
        st.serialize_field("refused", &self.refused)?;
        st.serialize_field("open", &self.open)?;
        st.serialize_field("requests", &self.requests)?;
        st.serialize_field("unauthorized", &self.unauthorized)?;
        st.serialize_field("bad_requests", &self.bad_requests)?;
        st.serialize_field("timeouts", &self.timeouts)?;
        st.serialize_field("busy", &self.busy)?;
        st.end()
    }
}

/// Frames/s over wall time, sampled on polls into a fixed ring.
struct RateRing {
    /// (Unix seconds, frames/s since the previous sample).
    points: Box<[(f64, f64); RATE_SAMPLES]>,
    len: usize,
    head: usize,
    last: Option<(Instant, u64)>,
}

impl Default for RateRing {
    fn default() -> Self {
        RateRing {
            points: Box::new([(0.0, 0.0); RATE_SAMPLES]),
            len: 0,
            head: 0,
            last: None,
        }
    }
}

impl RateRing {
    fn sample(&mut self, now: Instant, frames: u64) {
        match self.last {
            None => self.last = Some((now, frames)),
            Some((t, f)) => {
                let dt = now.duration_since(t);
                if dt < RATE_EVERY {
                    return;
                }
                let rate = frames.saturating_sub(f) as f64 / dt.as_secs_f64();
                self.points[self.head] = (crate::runtime::unix_now(), rate);
                self.head = (self.head + 1) % RATE_SAMPLES;
                self.len = (self.len + 1).min(RATE_SAMPLES);
                self.last = Some((now, frames));
            }
        }
    }

    fn current(&self) -> Option<f64> {
        (self.len > 0).then(|| self.points[(self.head + RATE_SAMPLES - 1) % RATE_SAMPLES].1)
    }

    /// Oldest first.
    fn points(&self) -> Vec<(f64, f64)> {
        (0..self.len)
            .map(|i| self.points[(self.head + RATE_SAMPLES - self.len + i) % RATE_SAMPLES])
            .collect()
    }
}

/// Compares secrets without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// Whether an `Authorization` header value carries `token`: `Bearer TOKEN`, or HTTP Basic
/// with TOKEN as the password (any user name) so a browser can ask for it. Both compared in
/// constant time.
pub fn authorized(header: Option<&[u8]>, token: &[u8]) -> bool {
    if token.is_empty() {
        return true;
    }
    let Some(h) = header else {
        return false;
    };
    let h = trim(h);
    let (scheme, rest) = match h.iter().position(|&b| b == b' ') {
        Some(i) => (&h[..i], trim(&h[i + 1..])),
        None => return false,
    };
    if scheme.eq_ignore_ascii_case(b"bearer") {
        constant_time_eq(rest, token)
    } else if scheme.eq_ignore_ascii_case(b"basic") {
        let mut buf = [0u8; 512];
        match base64_decode(rest, &mut buf) {
            Some(n) => {
                let cred = &buf[..n];
                let pass = cred
                    .iter()
                    .position(|&b| b == b':')
                    .map_or(&cred[..0], |i| &cred[i + 1..]);
                constant_time_eq(pass, token)
            }
            None => false,
        }
    } else {
        false
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Standard base64 (padding optional) into `out`; `None` if malformed or too long.
fn base64_decode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let input = match input.iter().position(|&c| c == b'=') {
        Some(i) if input[i..].iter().all(|&c| c == b'=') && input.len() - i <= 2 => &input[..i],
        Some(_) => return None,
        None => input,
    };
    let (mut acc, mut bits, mut n) = (0u32, 0u32, 0usize);
    for &c in input {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
            acc &= (1 << bits) - 1;
        }
    }
    Some(n)
}

/// Parsed and validated query parameters.
#[derive(Debug, PartialEq)]
pub struct Query {
    pub min: Level,
    pub since: f64,
    pub limit: u32,
    pub sid: Option<u32>,
}

/// Parses `min`, `since`, `limit` and `sid` (percent-encoding allowed); an unknown,
/// repeated or bad parameter is an error naming it.
pub fn parse_query(q: &str, allowed: &[&str]) -> Result<Query, String> {
    let mut out = Query {
        min: Level::Warning,
        since: 0.0,
        limit: 100,
        sid: None,
    };
    let mut seen: Vec<&str> = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(&k) = allowed
            .iter()
            .find(|a| percent_decode(k).as_deref() == Some(**a))
        else {
            let shown = percent_decode(k).unwrap_or_else(|| k.to_string());
            return Err(if allowed.is_empty() {
                format!("unknown parameter `{shown}` (this endpoint takes none)")
            } else {
                format!(
                    "unknown parameter `{shown}` (expected one of: {})",
                    allowed.join(", ")
                )
            });
        };
        if seen.contains(&k) {
            return Err(format!("parameter `{k}` given more than once"));
        }
        seen.push(k);
        let v = percent_decode(v)
            .ok_or_else(|| format!("parameter `{k}`: bad percent-encoding in `{v}`"))?;
        match k {
            "min" => out.min = v.parse().map_err(|e| format!("parameter `min`: {e}"))?,
            "since" => {
                out.since = v
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| {
                        format!("parameter `since`: `{v}` is not a Unix time in seconds")
                    })?
            }
            "limit" => {
                let n: u32 = v.parse().map_err(|_| {
                    format!("parameter `limit`: `{v}` is not a whole number from 1 to {MAX_LIMIT}")
                })?;
                if n == 0 {
                    return Err("parameter `limit`: must be at least 1".into());
                }
                out.limit = n.min(MAX_LIMIT);
            }
            "sid" => {
                out.sid = Some(
                    v.parse()
                        .map_err(|_| format!("parameter `sid`: `{v}` is not a signature id"))?,
                )
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Decodes `%XX` escapes and `+` (as a space); `None` on a bad escape or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------------------
// The I/O thread.

enum ConnState {
    /// Reading the request head.
    Reading(Vec<u8>),
    /// Handed to the loop; waiting for its answer.
    Waiting(Instant),
    /// Waiting for the snapshot thread.
    Snapshot,
    /// Writing `out[pos..]`, then the rest of `file` if any.
    Writing {
        out: Vec<u8>,
        pos: usize,
        file: Option<(File, u64)>,
    },
    /// Response written and our side shut; reading what the client still sends so the
    /// close does not reset the connection before it read the response.
    Draining,
}

struct Conn {
    id: u64,
    stream: TcpStream,
    state: ConnState,
    /// HEAD request: write the head only.
    head_only: bool,
    opened: Instant,
    last_progress: Instant,
}

/// A snapshot file and its length, or why it could not be made.
type SnapshotResult = Result<(File, u64), String>;

struct IoThread {
    listener: TcpListener,
    token: Vec<u8>,
    conns: Vec<Conn>,
    next_id: u64,
    requests: SyncSender<Pending>,
    answers: Receiver<Answer>,
    counters: Arc<IoCounters>,
    /// The one snapshot being made: the connection waiting for it and the result channel.
    snapshot: Option<(u64, Receiver<SnapshotResult>)>,
}

/// What one step on a connection did.
enum Step {
    Idle,
    Progress,
    Close,
}

fn progress_step(progress: bool) -> Step {
    if progress {
        Step::Progress
    } else {
        Step::Idle
    }
}

/// Work a connection's step leaves for the thread.
enum Todo {
    Nothing,
    Respond(u16, String, &'static str),
    Request(Vec<u8>),
}

impl IoThread {
    fn run(mut self) {
        let mut wait = Duration::from_millis(1);
        loop {
            let mut progress = self.accept();
            let now = Instant::now();
            let mut i = 0;
            while i < self.conns.len() {
                let (step, todo) = self.step(i, now);
                match todo {
                    Todo::Nothing => {}
                    Todo::Respond(status, msg, extra) => self.respond_now(i, status, &msg, extra),
                    Todo::Request(head) => self.request(i, &head, now),
                }
                match step {
                    Step::Idle => i += 1,
                    Step::Progress => {
                        progress = true;
                        i += 1;
                    }
                    Step::Close => {
                        progress = true;
                        self.conns.swap_remove(i);
                        self.counters.open.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            progress |= self.finish_snapshot();
            // Wait for the loop's answers; poll sockets again after `wait`. Busy clients
            // get 1 ms turns; quiet ones back off to 25 ms (50 ms with no connection).
            wait = if progress {
                Duration::from_millis(1)
            } else {
                let cap = if self.conns.is_empty() { 50 } else { 25 };
                (wait * 2).min(Duration::from_millis(cap))
            };
            match self.answers.recv_timeout(wait) {
                Ok(a) => {
                    self.deliver(a);
                    while let Ok(a) = self.answers.try_recv() {
                        self.deliver(a);
                    }
                    wait = Duration::from_millis(1);
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The loop dropped its Server: stop serving.
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn accept(&mut self) -> bool {
        let mut any = false;
        for _ in 0..64 {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    any = true;
                    if self.conns.len() >= MAX_CONNS {
                        self.counters.refused.fetch_add(1, Ordering::Relaxed);
                        let _ = stream.set_nonblocking(true);
                        let _ = (&stream).write(&head_bytes(
                            503,
                            "application/json",
                            BUSY_CONNS.len() as u64,
                            "Retry-After: 1\r\n",
                        ));
                        let _ = (&stream).write(BUSY_CONNS);
                        continue;
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    self.counters.connections.fetch_add(1, Ordering::Relaxed);
                    self.counters.open.fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    self.conns.push(Conn {
                        id: self.next_id,
                        stream,
                        state: ConnState::Reading(Vec::new()),
                        head_only: false,
                        opened: now,
                        last_progress: now,
                    });
                    self.next_id += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("HTTP accept: {e}");
                    break;
                }
            }
        }
        any
    }

    /// Advances connection `i`; what it needs from the rest of the thread comes back as a
    /// [`Todo`].
    fn step(&mut self, i: usize, now: Instant) -> (Step, Todo) {
        let counters = &self.counters;
        let c = &mut self.conns[i];
        match &mut c.state {
            ConnState::Reading(buf) => {
                let mut chunk = [0u8; 1024];
                let mut progress = false;
                loop {
                    match (&c.stream).read(&mut chunk) {
                        Ok(0) => return (Step::Close, Todo::Nothing),
                        Ok(n) => {
                            progress = true;
                            c.last_progress = now;
                            if buf.len() + n > MAX_REQUEST_BYTES {
                                counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                                let msg =
                                    format!("request head larger than {MAX_REQUEST_BYTES} bytes");
                                return (Step::Progress, Todo::Respond(431, msg, ""));
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            if let Some(end) = head_end(buf) {
                                let mut head = std::mem::take(buf);
                                head.truncate(end);
                                return (Step::Progress, Todo::Request(head));
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => return (Step::Close, Todo::Nothing),
                    }
                }
                if now.duration_since(c.opened) > HEADER_TIMEOUT {
                    counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    let msg = format!(
                        "the request head did not arrive within {} s",
                        HEADER_TIMEOUT.as_secs()
                    );
                    return (Step::Progress, Todo::Respond(408, msg, ""));
                }
                (progress_step(progress), Todo::Nothing)
            }
            ConnState::Waiting(since) => {
                if now.duration_since(*since) > LOOP_TIMEOUT {
                    counters.busy.fetch_add(1, Ordering::Relaxed);
                    let msg = "the detector did not answer in time".to_string();
                    return (Step::Progress, Todo::Respond(503, msg, ""));
                }
                (Step::Idle, Todo::Nothing)
            }
            ConnState::Snapshot => (Step::Idle, Todo::Nothing),
            ConnState::Writing { out, pos, file } => {
                let mut progress = false;
                // At most 256 KiB per turn so one download cannot starve other clients.
                let mut budget = 256 * 1024usize;
                loop {
                    if *pos == out.len() {
                        match file {
                            Some((f, left)) if *left > 0 && budget > 0 => {
                                out.resize(64 * 1024, 0);
                                let want =
                                    out.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                                match f.read(&mut out[..want]) {
                                    Ok(0) | Err(_) => return (Step::Close, Todo::Nothing),
                                    Ok(n) => {
                                        out.truncate(n);
                                        *pos = 0;
                                        *left -= n as u64;
                                    }
                                }
                            }
                            Some((_, left)) if *left > 0 => break,
                            _ => {
                                let _ = c.stream.shutdown(std::net::Shutdown::Write);
                                c.state = ConnState::Draining;
                                c.last_progress = now;
                                return (Step::Progress, Todo::Nothing);
                            }
                        }
                    }
                    match (&c.stream).write(&out[*pos..]) {
                        Ok(0) => return (Step::Close, Todo::Nothing),
                        Ok(n) => {
                            *pos += n;
                            budget = budget.saturating_sub(n);
                            progress = true;
                            c.last_progress = now;
                            if budget == 0 && *pos == out.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => return (Step::Close, Todo::Nothing),
                    }
                }
                if !progress && now.duration_since(c.last_progress) > WRITE_IDLE_TIMEOUT {
                    counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    return (Step::Close, Todo::Nothing);
                }
                (progress_step(progress), Todo::Nothing)
            }
            ConnState::Draining => {
                let mut chunk = [0u8; 1024];
                loop {
                    match (&c.stream).read(&mut chunk) {
                        Ok(0) => return (Step::Close, Todo::Nothing),
                        Ok(_) => c.last_progress = now,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => return (Step::Close, Todo::Nothing),
                    }
                }
                if now.duration_since(c.last_progress) > Duration::from_secs(2) {
                    return (Step::Close, Todo::Nothing);
                }
                (Step::Idle, Todo::Nothing)
            }
        }
    }

    /// A complete request head from connection `i`: check it, then hand it to the loop.
    fn request(&mut self, i: usize, head: &[u8], now: Instant) {
        let parsed = match parse_head(head) {
            Ok(p) => p,
            Err(msg) => {
                self.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                self.respond_now(i, 400, &msg, "");
                return;
            }
        };
        let head_only = parsed.method == "HEAD";
        self.conns[i].head_only = head_only;
        if parsed.method != "GET" && !head_only {
            self.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            let msg = format!(
                "method {} not allowed: this API is read-only (GET, HEAD)",
                parsed.method
            );
            self.respond_now(i, 405, &msg, "Allow: GET, HEAD\r\n");
            return;
        }
        let (path, query) = parsed
            .target
            .split_once('?')
            .unwrap_or((parsed.target.as_str(), ""));
        if path != "/healthz" && !authorized(parsed.authorization.as_deref(), &self.token) {
            self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            // Browsers ask for Basic credentials (the token as password) on the page.
            let challenge = if path == "/" {
                "WWW-Authenticate: Basic realm=\"PhantomNet\", charset=\"UTF-8\"\r\n"
            } else {
                "WWW-Authenticate: Bearer realm=\"PhantomNet\"\r\n"
            };
            self.respond_now(i, 401, "missing or wrong bearer token", challenge);
            return;
        }
        let p = Pending {
            id: self.conns[i].id,
            path: path.to_string(),
            query: query.to_string(),
        };
        match self.requests.try_send(p) {
            Ok(()) => self.conns[i].state = ConnState::Waiting(now),
            Err(TrySendError::Full(_)) => {
                self.counters.busy.fetch_add(1, Ordering::Relaxed);
                self.respond_now(
                    i,
                    503,
                    "too many requests in flight; retry",
                    "Retry-After: 1\r\n",
                );
            }
            Err(TrySendError::Disconnected(_)) => {
                self.respond_now(i, 503, "shutting down", "");
            }
        }
    }

    /// Answers connection `i` with a JSON error from this thread.
    fn respond_now(&mut self, i: usize, status: u16, msg: &str, extra: &str) {
        let body = json!({ "error": msg }).to_string().into_bytes();
        self.start_writing(
            i,
            status,
            "application/json",
            Body::Bytes(Arc::from(body)),
            extra,
        );
    }

    fn start_writing(&mut self, i: usize, status: u16, ctype: &str, body: Body, extra: &str) {
        let c = &mut self.conns[i];
        let len = match &body {
            Body::Bytes(b) => b.len() as u64,
            Body::File(_, n) => *n,
        };
        let mut out = head_bytes(status, ctype, len, extra);
        let file = match body {
            Body::Bytes(b) => {
                if !c.head_only {
                    out.extend_from_slice(&b);
                }
                None
            }
            Body::File(f, n) => (!c.head_only).then_some((f, n)),
        };
        c.state = ConnState::Writing { out, pos: 0, file };
        c.last_progress = Instant::now();
    }

    fn deliver(&mut self, a: Answer) {
        let id = match &a {
            Answer::Reply { id, .. } | Answer::Snapshot { id, .. } => *id,
        };
        let Some(i) = self.conns.iter().position(|c| c.id == id) else {
            return; // the client went away
        };
        match a {
            Answer::Reply { reply, .. } => {
                let extra = if reply.content_type.starts_with("text/html") {
                    PAGE_HEADERS
                } else {
                    ""
                };
                self.start_writing(
                    i,
                    reply.status,
                    reply.content_type,
                    Body::Bytes(reply.body),
                    extra,
                );
            }
            Answer::Snapshot { db, .. } => {
                if self.snapshot.is_some() {
                    self.counters.busy.fetch_add(1, Ordering::Relaxed);
                    self.respond_now(
                        i,
                        503,
                        "a database snapshot is already being made; retry",
                        "Retry-After: 2\r\n",
                    );
                    return;
                }
                let (tx, rx) = mpsc::channel();
                let spawned = std::thread::Builder::new()
                    .name("phantomnet-snapshot".into())
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let _ = tx.send(snapshot(&db));
                    });
                match spawned {
                    Ok(_) => {
                        self.snapshot = Some((id, rx));
                        self.conns[i].state = ConnState::Snapshot;
                    }
                    Err(e) => {
                        self.respond_now(i, 500, &format!("cannot start a snapshot: {e}"), "")
                    }
                }
            }
        }
    }

    /// Sends a finished snapshot to the connection that asked for it.
    fn finish_snapshot(&mut self) -> bool {
        let Some((id, rx)) = &self.snapshot else {
            return false;
        };
        let result = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => Err("the snapshot thread failed".to_string()),
        };
        let id = *id;
        self.snapshot = None;
        let Some(i) = self.conns.iter().position(|c| c.id == id) else {
            return true; // dropping the file frees its (already unlinked) space
        };
        match result {
            Ok((f, n)) => self.start_writing(
                i,
                200,
                "application/vnd.sqlite3",
                Body::File(f, n),
                "Content-Disposition: attachment; filename=\"phantomnet.db\"\r\n",
            ),
            Err(e) => self.respond_now(i, 500, &e, ""),
        }
        true
    }
}

const BUSY_CONNS: &[u8] = b"{\"error\":\"too many connections; retry\"}";

/// Extra headers for the HTML page: nothing external may load, nothing may frame it.
const PAGE_HEADERS: &str = "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n";

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn head_bytes(status: u16, ctype: &str, len: u64, extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n{extra}\r\n",
        reason_phrase(status)
    )
    .into_bytes()
}

/// End of the request head (index just past the blank line), accepting bare LF too.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The parts of a request head we use.
#[derive(Debug, PartialEq)]
pub struct Head {
    pub method: String,
    pub target: String,
    pub authorization: Option<Vec<u8>>,
}

/// Parses a request line and headers (HTTP/1.0 or 1.1, origin-form targets only).
pub fn parse_head(head: &[u8]) -> Result<Head, String> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| "request line is not ASCII".to_string())?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed request line `{}`", line.escape_debug()));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!(
            "unsupported protocol version `{}`",
            version.escape_debug()
        ));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("malformed method `{}`", method.escape_debug()));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err(format!(
            "request target `{}` is not a path",
            target.escape_debug()
        ));
    }
    let mut authorization = None;
    for l in lines {
        if l.is_empty() {
            break;
        }
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            return Err("malformed header line (no colon)".into());
        };
        if l[..colon].eq_ignore_ascii_case(b"authorization") {
            authorization = Some(trim(&l[colon + 1..]).to_vec());
        }
    }
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        authorization,
    })
}

/// A consistent copy of the database made with SQLite's online backup API from a read-only
/// connection of our own, written beside it, unlinked at once (the open handle keeps it
/// readable and nothing is left behind) and returned with its length.
fn snapshot(db: &Path) -> SnapshotResult {
    use rusqlite::{Connection, OpenFlags};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dest = {
        let mut name = db.file_name().unwrap_or_default().to_os_string();
        name.push(format!(
            ".snapshot-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        db.with_file_name(name)
    };
    let err = |what: &str, e: &dyn std::fmt::Display| {
        format!(
            "snapshot of {} into {}: {what}: {e}",
            db.display(),
            dest.display()
        )
    };
    let result = (|| {
        let src = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err("open", &e))?;
        src.busy_timeout(Duration::from_secs(5))
            .map_err(|e| err("busy timeout", &e))?;
        let mut out = Connection::open(&dest).map_err(|e| err("create", &e))?;
        {
            let b = rusqlite::backup::Backup::new(&src, &mut out).map_err(|e| err("backup", &e))?;
            // All pages in one step, under one read transaction: a consistent snapshot.
            b.run_to_completion(i32::MAX, Duration::from_millis(10), None)
                .map_err(|e| err("backup", &e))?;
        }
        out.pragma_update(None, "journal_mode", "DELETE")
            .map_err(|e| err("journal mode", &e))?;
        drop(out);
        let f = File::open(&dest).map_err(|e| err("reopen", &e))?;
        let n = f.metadata().map_err(|e| err("size", &e))?.len();
        Ok((f, n))
    })();
    let _ = std::fs::remove_file(&dest);
    for suffix in ["-journal", "-wal", "-shm"] {
        let mut p = dest.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_validated_and_named() {
        let q = parse_query("min=HIGH&since=12.5&limit=5000", &["min", "since", "limit"]).unwrap();
        assert_eq!(
            q,
            Query {
                min: Level::High,
                since: 12.5,
                limit: MAX_LIMIT,
                sid: None
            }
        );
        let q = parse_query("m%69n=%57ARNING", &["min"]).unwrap();
        assert_eq!(q.min, Level::Warning);
        let e = parse_query("min=LOUD", &["min"]).unwrap_err();
        assert!(e.contains("`min`"), "{e}");
        let e = parse_query("limit=-3", &["limit"]).unwrap_err();
        assert!(e.contains("`limit`"), "{e}");
        let e = parse_query("limit=0", &["limit"]).unwrap_err();
        assert!(e.contains("`limit`"), "{e}");
        let e = parse_query("since=nan", &["since"]).unwrap_err();
        assert!(e.contains("`since`"), "{e}");
        let e = parse_query("sid=x", &["sid"]).unwrap_err();
        assert!(e.contains("`sid`"), "{e}");
        let e = parse_query("colour=red", &["min", "limit"]).unwrap_err();
        assert!(e.contains("`colour`"), "{e}");
        let e = parse_query("limit=1&limit=2", &["limit"]).unwrap_err();
        assert!(e.contains("`limit`") && e.contains("more than once"), "{e}");
        let e = parse_query("since=%zz", &["since"]).unwrap_err();
        assert!(e.contains("`since`"), "{e}");
        let e = parse_query("x=1", &[]).unwrap_err();
        assert!(e.contains("`x`") && e.contains("takes none"), "{e}");
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_and_basic_credentials() {
        let t = b"s3cret";
        assert!(authorized(None, b""));
        assert!(!authorized(None, t));
        assert!(authorized(Some(b"Bearer s3cret"), t));
        assert!(authorized(Some(b"bearer   s3cret "), t));
        assert!(!authorized(Some(b"Bearer s3cre"), t));
        assert!(!authorized(Some(b"Bearer s3cretx"), t));
        assert!(!authorized(Some(b"s3cret"), t));
        // "admin:s3cret" and ":s3cret"
        assert!(authorized(Some(b"Basic YWRtaW46czNjcmV0"), t));
        assert!(authorized(Some(b"Basic OnMzY3JldA=="), t));
        // "admin:wrong"
        assert!(!authorized(Some(b"Basic YWRtaW46d3Jvbmc="), t));
        assert!(!authorized(Some(b"Basic !!!"), t));
        assert!(!authorized(Some(b"Digest s3cret"), t));
    }

    #[test]
    fn base64_matches_known_vectors() {
        let mut buf = [0u8; 16];
        for (enc, dec) in [
            (&b"Zm9vYmFy"[..], &b"foobar"[..]),
            (b"Zm9vYg==", b"foob"),
            (b"Zm9vYg", b"foob"),
            (b"Zg==", b"f"),
            (b"", b""),
        ] {
            let n = base64_decode(enc, &mut buf).unwrap();
            assert_eq!(&buf[..n], dec);
        }
        assert_eq!(base64_decode(b"Zg=x", &mut buf), None);
        assert_eq!(base64_decode(b"Zm9vYmFyZm9vYmFyZm9vYmFy", &mut buf), None);
    }

    #[test]
    fn request_heads_are_parsed_strictly() {
        let h = parse_head(
            b"GET /api/status?x=1 HTTP/1.1\r\nHost: a\r\nAUTHORIZATION:  Bearer t \r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/api/status?x=1");
        assert_eq!(h.authorization.as_deref(), Some(&b"Bearer t"[..]));
        let h = parse_head(b"HEAD / HTTP/1.0\n\n").unwrap();
        assert_eq!((h.method.as_str(), h.authorization), ("HEAD", None));
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/2\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn rate_ring_keeps_the_latest_samples_in_order() {
        let mut r = RateRing::default();
        let t0 = Instant::now();
        r.sample(t0, 0);
        assert_eq!(r.current(), None);
        r.sample(t0 + Duration::from_secs(1), 50); // too soon: ignored
        r.sample(t0 + Duration::from_secs(2), 200);
        assert_eq!(r.current(), Some(100.0));
        for k in 0..(RATE_SAMPLES as u64 + 5) {
            r.sample(t0 + Duration::from_secs(4 + 2 * k), 200 + 2 * (k + 1));
        }
        let p = r.points();
        assert_eq!(p.len(), RATE_SAMPLES);
        assert!(p.iter().all(|&(_, rate)| rate == 1.0));
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}
