//! EVE events to a central syslog collector (rsyslog, syslog-ng, OpenWrt logd, journald), so
//! many appliances report to the engines people already run instead of a home-made collector.
//!
//! Every alert and verdict at or above the configured level is framed as one syslog message
//! whose MSG is the EVE JSON line (with the appliance name as `"host"`): RFC 5424
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - {json}` (or BSD/RFC 3164 for old
//! daemons), sent over UDP, TCP with octet-counted framing (RFC 6587 §3.4.1: `LEN SP MSG`),
//! or the local unix datagram socket.
//!
//! Sending never blocks the loop. Messages go into a bounded queue of buffers allocated at
//! start-up and reused; `drain` (called on ticks) writes what the non-blocking socket takes
//! and stops at `WouldBlock`. TCP connects without blocking (socket2: EINPROGRESS, then
//! SO_ERROR) and reconnects with exponential backoff. A full queue, an oversized event or a
//! failed send drops the message and counts it; the counters are in `SyslogStats`.
//!
//! No UTF-8 BOM precedes MSG: RFC 5424 allows MSG-ANY, and collectors keep a BOM in the
//! message text, which would make the JSON unparseable for the next tool.
//! The TIMESTAMP is the event's packet time (so replay is deterministic), in UTC.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::{SyslogConfig, SyslogFormat, SyslogTransport};
use crate::decode::Micros;
use crate::eve::{civil_from_days, format_alert, format_verdict};
use crate::events::{AlertRow, Level, VerdictRow};

/// Facility names in code order (RFC 5424 table 1; 12..=15 as Linux names them).
pub const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

/// The facility code of a name (case-insensitive), e.g. `local5` → 21.
pub fn facility_code(name: &str) -> Option<u8> {
    FACILITIES
        .iter()
        .position(|f| f.eq_ignore_ascii_case(name))
        .map(|i| i as u8)
}

/// Syslog severity of a verdict: CRITICAL → crit (2), HIGH → err (3), WARNING → warning (4),
/// SAFE → info (6).
pub fn verdict_severity(level: Level) -> u8 {
    match level {
        Level::Critical => 2,
        Level::High => 3,
        Level::Warning => 4,
        Level::Safe => 6,
    }
}

/// Syslog severity of an alert from its priority: 1 → err (3), 2 → warning (4),
/// 3 → notice (5), 4 and beyond → info (6).
pub fn alert_severity(priority: u8) -> u8 {
    match priority {
        0 | 1 => 3,
        2 => 4,
        3 => 5,
        _ => 6,
    }
}

/// Checks `host:port` (or `[v6]:port`) without resolving it.
pub fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let bad = || format!("`{s}` is not host:port like 192.0.2.10:514 or logs.lan:514");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(':') && !s.starts_with('[') {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok((host, port))
}

/// Start-up errors name the config key and the value.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("syslog.server `{server}`: cannot resolve: {source}")]
    Resolve { server: String, source: io::Error },
    #[error("syslog.server `{server}`: resolves to no address")]
    NoAddress { server: String },
    #[error("syslog.{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("syslog: cannot create a socket for {target}: {source}")]
    Socket { target: String, source: io::Error },
}

/// Counters of the syslog output, for /api/status and /metrics.
///
/// Invariant: `queued == sent + dropped_send + dropped_at_exit + queue_len`; events that
/// never entered the queue are `dropped_full` and `dropped_oversize`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyslogStats {
    /// Messages accepted into the queue.
    pub queued: u64,
    /// Messages handed to the socket in full.
    pub sent: u64,
    /// Events dropped because the queue was full (collector down or slow).
    pub dropped_full: u64,
    /// Events dropped because their message exceeded `max_message`.
    pub dropped_oversize: u64,
    /// Messages dropped because a datagram send failed (e.g. ICMP port unreachable).
    pub dropped_send: u64,
    /// Messages still queued when the process stopped.
    pub dropped_at_exit: u64,
    /// Connections made (TCP, unix socket), the first one included.
    pub connects: u64,
    /// Connection attempts that failed, and connections lost.
    pub connect_failures: u64,
    /// Messages waiting now.
    pub queue_len: usize,
    /// Whether a connection (or a connected datagram socket) is up now.
    pub connected: bool,
}

impl SyslogStats {
    /// Every event lost on the way, whatever the cause.
    pub fn dropped(&self) -> u64 {
        self.dropped_full + self.dropped_oversize + self.dropped_send + self.dropped_at_exit
    }

    /// Appends the counters in Prometheus text format (`phantomnet_syslog_*`).
    pub fn prometheus(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP phantomnet_syslog_messages_total Syslog messages by outcome.\n\
             # TYPE phantomnet_syslog_messages_total counter"
        );
        for (what, n) in [
            ("queued", self.queued),
            ("sent", self.sent),
            ("dropped_full", self.dropped_full),
            ("dropped_oversize", self.dropped_oversize),
            ("dropped_send", self.dropped_send),
            ("dropped_at_exit", self.dropped_at_exit),
        ] {
            let _ = writeln!(
                out,
                "phantomnet_syslog_messages_total{{outcome=\"{what}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP phantomnet_syslog_dropped_total Syslog messages lost, whatever the cause.\n\
             # TYPE phantomnet_syslog_dropped_total counter\n\
             phantomnet_syslog_dropped_total {}\n\
             # HELP phantomnet_syslog_connects_total Connections made to the collector.\n\
             # TYPE phantomnet_syslog_connects_total counter\n\
             phantomnet_syslog_connects_total {}\n\
             # HELP phantomnet_syslog_connect_failures_total Failed or lost connections.\n\
             # TYPE phantomnet_syslog_connect_failures_total counter\n\
             phantomnet_syslog_connect_failures_total {}\n\
             # HELP phantomnet_syslog_queue_length Messages waiting to be sent.\n\
             # TYPE phantomnet_syslog_queue_length gauge\n\
             phantomnet_syslog_queue_length {}\n\
             # HELP phantomnet_syslog_connected 1 while the collector connection is up.\n\
             # TYPE phantomnet_syslog_connected gauge\n\
             phantomnet_syslog_connected {}",
            self.dropped(),
            self.connects,
            self.connect_failures,
            self.queue_len,
            u8::from(self.connected)
        );
    }
}

/// Where messages go, resolved once at start-up.
#[derive(Clone, Debug)]
enum Target {
    Net(Vec<SocketAddr>),
    Unix(PathBuf),
}

/// The socket and its state.
enum Conn {
    Down,
    /// A TCP connect in flight, with the time it started.
    Connecting(Socket, Instant),
    Tcp(TcpStream),
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

/// How long a TCP connect may stay in flight before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait after a failure; doubles up to `reconnect_max_s`.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Capacity each queue buffer gets at start-up (typical alert ≈ 400 B, verdict ≈ 700 B).
const BUFFER_START: usize = 1024;

/// The syslog sink: a bounded queue and a non-blocking socket.
pub struct Syslog {
    transport: SyslogTransport,
    format: SyslogFormat,
    target: Target,
    /// Index into `Target::Net` of the address to try next.
    next_addr: usize,
    conn: Conn,
    facility: u8,
    app_name: String,
    hostname: String,
    procid: String,
    sensor: String,
    min_level: Level,
    alert_priority: u8,
    max_message: usize,
    queue: VecDeque<Vec<u8>>,
    capacity: usize,
    free: Vec<Vec<u8>>,
    /// Bytes of the front message already written (TCP partial writes).
    partial: usize,
    json: String,
    head: String,
    backoff: Duration,
    backoff_max: Duration,
    next_attempt: Option<Instant>,
    exit_grace: Duration,
    stats: SyslogStats,
    last_error: Option<String>,
    last_error_log: Option<Instant>,
}

impl Syslog {
    /// Builds the sink from a validated config; `appliance` names this box in the EVE
    /// `"host"` field and (unless `syslog.hostname` is set) in the syslog HOSTNAME.
    /// Resolves the server name once and starts connecting without waiting.
    pub fn open(cfg: &SyslogConfig, appliance: &str) -> Result<Syslog, SyslogError> {
        let facility = facility_code(&cfg.facility).ok_or_else(|| SyslogError::Invalid {
            key: "facility",
            message: format!("`{}` is not a facility", cfg.facility),
        })?;
        let min_level = cfg
            .min_level
            .parse::<Level>()
            .map_err(|e| SyslogError::Invalid {
                key: "min_level",
                message: e,
            })?;
        let target = match cfg.transport {
            SyslogTransport::Unix => Target::Unix(cfg.socket.clone()),
            SyslogTransport::Udp | SyslogTransport::Tcp => {
                split_host_port(&cfg.server).map_err(|message| SyslogError::Invalid {
                    key: "server",
                    message,
                })?;
                let addrs: Vec<SocketAddr> = cfg
                    .server
                    .to_socket_addrs()
                    .map_err(|source| SyslogError::Resolve {
                        server: cfg.server.clone(),
                        source,
                    })?
                    .collect();
                if addrs.is_empty() {
                    return Err(SyslogError::NoAddress {
                        server: cfg.server.clone(),
                    });
                }
                Target::Net(addrs)
            }
        };
        let hostname = if cfg.hostname.is_empty() {
            appliance
        } else {
            &cfg.hostname
        };
        let capacity = cfg.queue.max(1);
        let mut s = Syslog {
            transport: cfg.transport,
            format: cfg.format,
            target,
            next_addr: 0,
            conn: Conn::Down,
            facility,
            app_name: header_field(&cfg.app_name, 48),
            hostname: header_field(hostname, 255),
            procid: std::process::id().to_string(),
            sensor: appliance.to_string(),
            min_level,
            alert_priority: cfg.alert_priority,
            max_message: cfg.max_message,
            queue: VecDeque::with_capacity(capacity),
            capacity,
            free: (0..capacity)
                .map(|_| Vec::with_capacity(BUFFER_START))
                .collect(),
            partial: 0,
            json: String::with_capacity(4 * BUFFER_START),
            head: String::with_capacity(512),
            backoff: BACKOFF_START,
            backoff_max: Duration::from_secs(cfg.reconnect_max_s.max(1)),
            next_attempt: None,
            exit_grace: Duration::from_millis(cfg.exit_grace_ms),
            stats: SyslogStats::default(),
            last_error: None,
            last_error_log: None,
        };
        s.connect(Instant::now());
        Ok(s)
    }

    /// Where messages go, for logs: `tcp://192.0.2.10:514`, `unix:///dev/log`.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Unix(p) => format!("unix://{}", p.display()),
            Target::Net(a) => {
                let scheme = if self.transport == SyslogTransport::Tcp {
                    "tcp"
                } else {
                    "udp"
                };
                match a.get(self.next_addr % a.len().max(1)) {
                    Some(addr) => format!("{scheme}://{addr}"),
                    None => format!("{scheme}://?"),
                }
            }
        }
    }

    pub fn stats(&self) -> SyslogStats {
        SyslogStats {
            queue_len: self.queue.len(),
            connected: matches!(self.conn, Conn::Tcp(_) | Conn::Udp(_) | Conn::Unix(_)),
            ..self.stats
        }
    }

    /// The last send or connect error, if the latest attempt failed.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// What /api/status shows under `"syslog"`.
    pub fn status_json(&self) -> serde_json::Value {
        let st = self.stats();
        serde_json::json!({
            "target": self.describe(),
            "connected": st.connected,
            "queue_len": st.queue_len,
            "queue_capacity": self.capacity,
            "queued": st.queued,
            "sent": st.sent,
            "dropped": st.dropped(),
            "dropped_full": st.dropped_full,
            "dropped_oversize": st.dropped_oversize,
            "dropped_send": st.dropped_send,
            "dropped_at_exit": st.dropped_at_exit,
            "connects": st.connects,
            "connect_failures": st.connect_failures,
            "last_error": self.last_error,
        })
    }

    /// Queues an alert if its priority passes `alert_priority`.
    pub fn alert(&mut self, a: &AlertRow<'_>) {
        if a.priority > self.alert_priority {
            return;
        }
        if !self.room() {
            return;
        }
        self.json.clear();
        format_alert(&mut self.json, Some(&self.sensor), a);
        self.enqueue(a.ts, alert_severity(a.priority), "alert");
    }

    /// Queues a verdict if its level is at least `min_level`.
    pub fn verdict(&mut self, v: &VerdictRow<'_>) {
        if v.verdict < self.min_level {
            return;
        }
        if !self.room() {
            return;
        }
        self.json.clear();
        format_verdict(&mut self.json, Some(&self.sensor), v);
        self.enqueue(v.ts, verdict_severity(v.verdict), "verdict");
    }

    /// Whether the queue has room, draining once first if it is full; counts a drop if not.
    fn room(&mut self) -> bool {
        if self.queue.len() >= self.capacity {
            self.drain(Instant::now());
        }
        if self.queue.len() >= self.capacity {
            self.stats.dropped_full += 1;
            return false;
        }
        true
    }

    /// Frames `self.json` as one message and queues it.
    fn enqueue(&mut self, ts: Micros, severity: u8, msgid: &str) {
        let pri = u16::from(self.facility) * 8 + u16::from(severity);
        self.head.clear();
        match self.format {
            SyslogFormat::Rfc5424 => {
                let _ = write!(self.head, "<{pri}>1 ");
                rfc3339(&mut self.head, ts);
                let _ = write!(
                    self.head,
                    " {} {} {} {msgid} - ",
                    self.hostname, self.app_name, self.procid
                );
            }
            SyslogFormat::Rfc3164 => {
                let _ = write!(self.head, "<{pri}>");
                bsd_timestamp(&mut self.head, ts);
                if self.transport != SyslogTransport::Unix {
                    self.head.push(' ');
                    self.head.push_str(&self.hostname);
                }
                let _ = write!(self.head, " {}[{}]: ", self.app_name, self.procid);
            }
        }
        let len = self.head.len() + self.json.len();
        if len > self.max_message {
            self.stats.dropped_oversize += 1;
            return;
        }
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        if self.transport == SyslogTransport::Tcp {
            let _ = write!(LenWriter(&mut buf), "{len} ");
        }
        buf.extend_from_slice(self.head.as_bytes());
        buf.extend_from_slice(self.json.as_bytes());
        self.queue.push_back(buf);
        self.stats.queued += 1;
    }

    /// Sends what the socket takes now; reconnects when the backoff allows. Never blocks.
    pub fn drain(&mut self, now: Instant) {
        if let Conn::Connecting(..) = self.conn {
            self.check_connecting(now);
        }
        if matches!(self.conn, Conn::Down) {
            if self.next_attempt.is_some_and(|t| now < t) {
                return;
            }
            self.connect(now);
            if let Conn::Connecting(..) = self.conn {
                self.check_connecting(now);
            }
        }
        while let Some(front) = self.queue.front() {
            let len = front.len();
            let result = match &mut self.conn {
                Conn::Tcp(s) => s.write(&front[self.partial..]),
                Conn::Udp(s) => s.send(front),
                Conn::Unix(s) => s.send(front),
                Conn::Down | Conn::Connecting(..) => return,
            };
            match result {
                Ok(n) if self.transport == SyslogTransport::Tcp => {
                    if n == 0 {
                        self.lost(now, io::Error::from(io::ErrorKind::WriteZero));
                        return;
                    }
                    self.partial += n;
                    if self.partial >= len {
                        self.partial = 0;
                        self.stats.sent += 1;
                        self.recycle_front();
                    }
                }
                Ok(_) => {
                    self.stats.sent += 1;
                    self.recycle_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => match self.transport {
                    // A datagram error (often a previous datagram's ICMP port unreachable)
                    // costs this message; the socket stays usable.
                    SyslogTransport::Udp => {
                        self.stats.dropped_send += 1;
                        self.recycle_front();
                        self.note_error(format!("send to {}: {e}", self.describe()));
                    }
                    // The local daemon went away (restart): drop this one, reconnect later.
                    SyslogTransport::Unix => {
                        self.stats.dropped_send += 1;
                        self.recycle_front();
                        self.lost(now, e);
                        return;
                    }
                    // The message stays queued and is sent whole on the next connection.
                    SyslogTransport::Tcp => {
                        self.lost(now, e);
                        return;
                    }
                },
            }
        }
    }

    /// At exit: keeps draining for up to `exit_grace` while delivery makes progress, with
    /// one immediate connection attempt if the link is down; whatever is left is counted
    /// as `dropped_at_exit`. A collector that is down costs one failed connect, no wait.
    pub fn flush_before_exit(&mut self) {
        let deadline = Instant::now() + self.exit_grace;
        let failures = self.stats.connect_failures;
        self.next_attempt = None;
        loop {
            self.drain(Instant::now());
            if self.queue.is_empty()
                || Instant::now() >= deadline
                || self.stats.connect_failures > failures
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.stats.dropped_at_exit += self.queue.len() as u64;
        while !self.queue.is_empty() {
            self.recycle_front();
        }
        self.partial = 0;
        if let Conn::Tcp(s) = &self.conn {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    }

    fn recycle_front(&mut self) {
        if let Some(b) = self.queue.pop_front() {
            self.free.push(b);
        }
    }

    /// Starts a connection (non-blocking for TCP); on failure schedules the next attempt.
    fn connect(&mut self, now: Instant) {
        let result = match &self.target {
            Target::Unix(path) => UnixDatagram::unbound()
                .and_then(|s| s.connect(path).map(|()| s))
                .and_then(|s| s.set_nonblocking(true).map(|()| Conn::Unix(s))),
            Target::Net(addrs) => match addrs.get(self.next_addr % addrs.len().max(1)).copied() {
                None => Err(io::Error::from(io::ErrorKind::AddrNotAvailable)),
                Some(addr) if self.transport == SyslogTransport::Tcp => start_tcp(addr, now),
                Some(addr) => {
                    let local: SocketAddr = if addr.is_ipv4() {
                        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                    } else {
                        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                    };
                    UdpSocket::bind(local)
                        .and_then(|s| s.connect(addr).map(|()| s))
                        .and_then(|s| s.set_nonblocking(true).map(|()| Conn::Udp(s)))
                }
            },
        };
        match result {
            Ok(c) => {
                if !matches!(c, Conn::Connecting(..)) {
                    self.up();
                }
                self.conn = c;
            }
            Err(e) => self.lost(now, e),
        }
    }

    /// Resolves an in-flight TCP connect: up, failed, or still waiting (until the timeout).
    fn check_connecting(&mut self, now: Instant) {
        let Conn::Connecting(sock, started) = &self.conn else {
            return;
        };
        let state = match sock.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match sock.peer_addr() {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    if now.duration_since(*started) > CONNECT_TIMEOUT {
                        Err(io::Error::from(io::ErrorKind::TimedOut))
                    } else {
                        Ok(false)
                    }
                }
                Err(e) => Err(e),
            },
        };
        match state {
            Ok(false) => {}
            Ok(true) => {
                if let Conn::Connecting(sock, _) = std::mem::replace(&mut self.conn, Conn::Down) {
                    self.conn = Conn::Tcp(sock.into());
                    self.up();
                }
            }
            Err(e) => self.lost(now, e),
        }
    }

    fn up(&mut self) {
        self.stats.connects += 1;
        self.backoff = BACKOFF_START;
        self.next_attempt = None;
        self.partial = 0;
        if self.last_error.take().is_some() || self.stats.connects > 1 {
            log::info!("syslog: connected to {}", self.describe());
        }
    }

    /// The connection failed or broke: close it and wait `backoff` before the next try
    /// (with the next resolved address, if there are several).
    fn lost(&mut self, now: Instant, e: io::Error) {
        self.stats.connect_failures += 1;
        self.note_error(format!(
            "{}: {e}; retrying in {:.1} s",
            self.describe(),
            self.backoff.as_secs_f64()
        ));
        self.conn = Conn::Down;
        self.partial = 0;
        self.next_attempt = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.backoff_max);
        if let Target::Net(a) = &self.target {
            self.next_addr = (self.next_addr + 1) % a.len().max(1);
        }
    }

    /// Keeps the error for /api/status and logs it at most once a minute.
    fn note_error(&mut self, msg: String) {
        let due = self
            .last_error_log
            .is_none_or(|t| t.elapsed() > Duration::from_secs(60));
        if due {
            log::warn!("syslog: {msg}");
            self.last_error_log = Some(Instant::now());
        }
        self.last_error = Some(msg);
    }
}

/// Starts a non-blocking TCP connect: `Connecting` while in flight, `Tcp` if it completed.
fn start_tcp(addr: SocketAddr, now: Instant) -> io::Result<Conn> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    let _ = sock.set_tcp_nodelay(true);
    match sock.connect(&SockAddr::from(addr)) {
        Ok(()) => Ok(Conn::Tcp(sock.into())),
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.kind() == io::ErrorKind::WouldBlock =>
        {
            Ok(Conn::Connecting(sock, now))
        }
        Err(e) => Err(e),
    }
}

/// A header field as RFC 5424 allows it: printable ASCII without spaces, at most `max`
/// bytes; others become `_`; empty becomes the NILVALUE `-`.
fn header_field(s: &str, max: usize) -> String {
    let out: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if out.is_empty() {
        "-".into()
    } else {
        out
    }
}

/// Appends `ts` as RFC 3339 UTC with microseconds: `2016-01-27T18:32:05.123456Z`.
pub fn rfc3339(out: &mut String, ts: Micros) {
    let (y, m, d, sod) = split_time(ts);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        ts.rem_euclid(1_000_000)
    );
}

/// Appends `ts` as BSD syslog's `Mmm dd hh:mm:ss` (UTC; the day space-padded).
pub fn bsd_timestamp(out: &mut String, ts: Micros) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_, m, d, sod) = split_time(ts);
    let name = MONTHS.get(m as usize - 1).copied().unwrap_or("Jan");
    let _ = write!(
        out,
        "{name} {d:>2} {:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
}

fn split_time(ts: Micros) -> (i64, u32, u32, i64) {
    let secs = ts.div_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    (y, m, d, secs.rem_euclid(86_400))
}

/// `fmt::Write` into a byte buffer (for the octet count, without a temporary String).
struct LenWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for LenWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{IpAddr, Ipv4Addr, TcpListener};

    const TS: Micros = 1_453_919_525_123_456; // 2016-01-27T18:32:05.123456Z

    fn cfg(transport: SyslogTransport, server: &str) -> SyslogConfig {
        SyslogConfig {
            enabled: true,
            transport,
            server: server.into(),
            ..SyslogConfig::default()
        }
    }

    fn alert(priority: u8) -> AlertRow<'static> {
        AlertRow {
            ts: TS,
            gid: 1,
            sid: 9_100_001,
            rev: 2,
            msg: "PHANTOMNET test \"quoted\"",
            category: "Attempted Information Leak",
            priority,
            action: "allowed",
            src: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 66)),
            src_port: 61_000,
            dst: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 30)),
            dst_port: 22,
            proto: 6,
            flow_id: 7,
        }
    }

    fn verdict(level: Level, reasons: &str) -> VerdictRow<'_> {
        VerdictRow {
            ts: TS,
            host: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 66)),
            verdict: level,
            risk: 64,
            anomaly_score: Some(0.71),
            confidence: 0.8,
            reasons_json: reasons,
        }
    }

    /// A loopback port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    /// Splits an RFC 5424 message into its header fields and MSG.
    fn split5424(m: &str) -> (Vec<&str>, &str) {
        let mut parts = m.splitn(8, ' ');
        let fields: Vec<&str> = (0..7).map(|_| parts.next().unwrap()).collect();
        (fields, parts.next().unwrap())
    }

    fn queued_text(s: &Syslog) -> Vec<String> {
        s.queue
            .iter()
            .map(|b| String::from_utf8(b.clone()).unwrap())
            .collect()
    }

    #[test]
    fn rfc5424_frame_carries_pri_header_and_the_eve_line() {
        let c = SyslogConfig {
            hostname: "router one".into(),
            ..cfg(
                SyslogTransport::Udp,
                &format!("127.0.0.1:{}", closed_port()),
            )
        };
        let mut s = Syslog::open(&c, "box-a").unwrap();
        s.alert(&alert(1));
        s.verdict(&verdict(
            Level::High,
            "[{\"kind\":\"signature\",\"sid\":1}]",
        ));
        let q = queued_text(&s);
        assert_eq!(q.len(), 2);
        let (f, msg) = split5424(&q[0]);
        // local5 (21) * 8 + err (3) = 171
        assert_eq!(f[0], "<171>1");
        assert_eq!(f[1], "2016-01-27T18:32:05.123456Z");
        assert_eq!(f[2], "router_one");
        assert_eq!(f[3], "phantomnet");
        assert_eq!(f[4], std::process::id().to_string());
        assert_eq!(f[5], "alert");
        assert_eq!(f[6], "-");
        let mut eve = String::new();
        format_alert(&mut eve, Some("box-a"), &alert(1));
        assert_eq!(msg, eve);
        let v: serde_json::Value = serde_json::from_str(msg).unwrap();
        assert_eq!(v["host"], "box-a");
        assert_eq!(v["alert"]["signature"], "PHANTOMNET test \"quoted\"");
        let (f, msg) = split5424(&q[1]);
        assert_eq!(f[0], "<171>1"); // HIGH → err
        assert_eq!(f[5], "verdict");
        let v: serde_json::Value = serde_json::from_str(msg).unwrap();
        assert_eq!(v["event_type"], "verdict");
        assert_eq!(v["verdict"]["level"], "HIGH");
    }

    #[test]
    fn rfc3164_frame_has_bsd_timestamp_and_tag() {
        let c = SyslogConfig {
            format: SyslogFormat::Rfc3164,
            facility: "daemon".into(),
            ..cfg(
                SyslogTransport::Udp,
                &format!("127.0.0.1:{}", closed_port()),
            )
        };
        let mut s = Syslog::open(&c, "box-a").unwrap();
        s.verdict(&verdict(Level::Critical, "[]"));
        let q = queued_text(&s);
        // daemon (3) * 8 + crit (2) = 26
        let want = format!(
            "<26>Jan 27 18:32:05 box-a phantomnet[{}]: {{",
            std::process::id()
        );
        assert!(q[0].starts_with(&want), "{}", q[0]);
    }

    #[test]
    fn levels_and_priorities_filter_events() {
        let c = SyslogConfig {
            min_level: "HIGH".into(),
            alert_priority: 2,
            ..cfg(
                SyslogTransport::Udp,
                &format!("127.0.0.1:{}", closed_port()),
            )
        };
        let mut s = Syslog::open(&c, "b").unwrap();
        s.verdict(&verdict(Level::Warning, "[]"));
        s.verdict(&verdict(Level::High, "[]"));
        s.verdict(&verdict(Level::Critical, "[]"));
        s.alert(&alert(1));
        s.alert(&alert(2));
        s.alert(&alert(3));
        s.alert(&alert(4));
        assert_eq!(s.stats().queued, 4);
        let c = SyslogConfig {
            alert_priority: 0,
            ..c
        };
        let mut s = Syslog::open(&c, "b").unwrap();
        s.alert(&alert(1));
        assert_eq!(s.stats().queued, 0);
    }

    #[test]
    fn severities_follow_level_and_priority() {
        assert_eq!(verdict_severity(Level::Critical), 2);
        assert_eq!(verdict_severity(Level::High), 3);
        assert_eq!(verdict_severity(Level::Warning), 4);
        assert_eq!(alert_severity(1), 3);
        assert_eq!(alert_severity(2), 4);
        assert_eq!(alert_severity(3), 5);
        assert_eq!(alert_severity(4), 6);
        assert_eq!(facility_code("local5"), Some(21));
        assert_eq!(facility_code("KERN"), Some(0));
        assert_eq!(facility_code("local8"), None);
    }

    #[test]
    fn host_port_is_checked_without_resolving() {
        assert_eq!(split_host_port("10.0.0.1:514"), Ok(("10.0.0.1", 514)));
        assert_eq!(split_host_port("logs.lan:6514"), Ok(("logs.lan", 6514)));
        assert_eq!(split_host_port("[fd00::1]:514"), Ok(("fd00::1", 514)));
        for bad in [
            "10.0.0.1",
            "logs.lan:",
            ":514",
            "fd00::1:514",
            "h:0",
            "h:99999",
        ] {
            let e = split_host_port(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn timestamps_in_both_formats() {
        let mut s = String::new();
        rfc3339(&mut s, 0);
        s.push('|');
        rfc3339(&mut s, -1);
        s.push('|');
        bsd_timestamp(&mut s, 951_782_400_000_001);
        s.push('|');
        bsd_timestamp(&mut s, TS + 10 * 86_400_000_000);
        assert_eq!(
            s,
            "1970-01-01T00:00:00.000000Z|1969-12-31T23:59:59.999999Z|Feb 29 00:00:00|Feb  6 18:32:05"
        );
    }

    #[test]
    fn oversize_events_are_dropped_and_counted() {
        let c = SyslogConfig {
            max_message: 480,
            ..cfg(
                SyslogTransport::Udp,
                &format!("127.0.0.1:{}", closed_port()),
            )
        };
        let mut s = Syslog::open(&c, "b").unwrap();
        let long = format!("[{{\"kind\":\"x\",\"text\":\"{}\"}}]", "a".repeat(600));
        s.verdict(&verdict(Level::High, &long));
        s.verdict(&verdict(Level::High, "[]"));
        let st = s.stats();
        assert_eq!((st.queued, st.dropped_oversize), (1, 1));
    }

    #[test]
    fn udp_sends_one_datagram_per_event() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let c = cfg(SyslogTransport::Udp, &rx.local_addr().unwrap().to_string());
        let mut s = Syslog::open(&c, "box-u").unwrap();
        for p in 1..=3 {
            s.alert(&alert(p));
        }
        s.drain(Instant::now());
        let st = s.stats();
        assert_eq!((st.sent, st.queue_len, st.dropped()), (3, 0, 0));
        assert!(st.connected);
        let mut buf = [0u8; 4096];
        for p in 1..=3u8 {
            let n = rx.recv(&mut buf).unwrap();
            let m = std::str::from_utf8(&buf[..n]).unwrap();
            let (f, msg) = split5424(m);
            assert_eq!(f[0], format!("<{}>1", 168 + alert_severity(p)));
            let v: serde_json::Value = serde_json::from_str(msg).unwrap();
            assert_eq!(v["alert"]["severity"], p);
            assert_eq!(v["host"], "box-u");
        }
    }

    #[test]
    fn unix_datagrams_reach_the_local_socket() {
        let dir = std::env::temp_dir().join(format!("pn-syslog-unix-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let c = SyslogConfig {
            socket: path.clone(),
            format: SyslogFormat::Rfc3164,
            ..cfg(SyslogTransport::Unix, "")
        };
        let mut s = Syslog::open(&c, "box-x").unwrap();
        s.verdict(&verdict(Level::Warning, "[]"));
        s.drain(Instant::now());
        let mut buf = [0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        let m = std::str::from_utf8(&buf[..n]).unwrap();
        // syslog(3)'s local form: no HOSTNAME.
        let tag = format!("<172>Jan 27 18:32:05 phantomnet[{}]: ", std::process::id());
        assert!(m.starts_with(&tag), "{m}");
        let v: serde_json::Value = serde_json::from_str(&m[tag.len()..]).unwrap();
        assert_eq!(v["host"], "box-x");
        // The daemon goes away: the next message is dropped and counted, nothing panics.
        drop(rx);
        std::fs::remove_file(&path).unwrap();
        s.verdict(&verdict(Level::Warning, "[]"));
        s.drain(Instant::now());
        let st = s.stats();
        assert_eq!((st.sent, st.dropped_send, st.connected), (1, 1, false));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Reads octet-counted frames (`LEN SP MSG`) until `n` arrived.
    fn read_frames(stream: &mut TcpStream, n: usize) -> Vec<String> {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut data = Vec::new();
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while out.len() < n {
            let k = stream.read(&mut buf).unwrap();
            assert!(k > 0, "connection closed after {} frames", out.len());
            data.extend_from_slice(&buf[..k]);
            while let Some(sp) = data.iter().position(|&b| b == b' ') {
                let len: usize = std::str::from_utf8(&data[..sp]).unwrap().parse().unwrap();
                if data.len() < sp + 1 + len {
                    break;
                }
                out.push(String::from_utf8(data[sp + 1..sp + 1 + len].to_vec()).unwrap());
                data.drain(..sp + 1 + len);
            }
        }
        assert!(data.is_empty(), "trailing bytes: {data:?}");
        out
    }

    /// Drains until the queue is empty (the connect completes on loopback at once).
    fn drain_all(s: &mut Syslog, now: Instant) {
        for _ in 0..1000 {
            s.drain(now);
            if s.stats().queue_len == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("queue did not drain: {:?} {:?}", s.stats(), s.last_error());
    }

    #[test]
    fn tcp_uses_octet_counting_and_reconnects_after_the_collector_restarts() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = cfg(
            SyslogTransport::Tcp,
            &listener.local_addr().unwrap().to_string(),
        );
        let mut s = Syslog::open(&c, "box-t").unwrap();
        let t0 = Instant::now();
        for p in 1..=4 {
            s.alert(&alert(p));
        }
        drain_all(&mut s, t0);
        let (mut conn, _) = listener.accept().unwrap();
        let frames = read_frames(&mut conn, 4);
        for f in &frames {
            let (h, msg) = split5424(f);
            assert_eq!(h[5], "alert");
            let v: serde_json::Value = serde_json::from_str(msg).unwrap();
            assert_eq!(v["host"], "box-t");
        }
        assert_eq!(s.stats().connects, 1);
        // The collector restarts: the old connection dies. Writes fail within a few
        // messages (RST → EPIPE); the failed message stays queued, whole.
        drop(conn);
        let mut n = 0;
        while s.stats().connect_failures == 0 {
            s.verdict(&verdict(Level::High, "[]"));
            s.drain(t0);
            n += 1;
            assert!(n < 1000, "a dead connection was never noticed");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!s.stats().connected);
        // Inside the backoff nothing is attempted.
        s.drain(t0 + Duration::from_millis(100));
        assert_eq!(s.stats().connects, 1);
        // After it, a new connection carries what is still queued, frames intact.
        let pending = s.stats().queue_len;
        assert!(pending >= 1);
        drain_all(&mut s, t0 + Duration::from_secs(1));
        assert_eq!(s.stats().connects, 2);
        let (mut conn, _) = listener.accept().unwrap();
        let frames = read_frames(&mut conn, pending);
        assert!(frames.iter().all(|f| split5424(f).0[5] == "verdict"));
        let st = s.stats();
        assert_eq!(
            st.queued,
            st.sent + st.dropped_send + st.dropped_at_exit + st.queue_len as u64
        );
    }

    #[test]
    fn collector_down_fills_the_queue_counts_drops_and_backs_off() {
        let c = SyslogConfig {
            queue: 4,
            reconnect_max_s: 2,
            exit_grace_ms: 5_000,
            ..cfg(
                SyslogTransport::Tcp,
                &format!("127.0.0.1:{}", closed_port()),
            )
        };
        let t = Instant::now();
        let mut s = Syslog::open(&c, "b").unwrap();
        for _ in 0..10 {
            s.alert(&alert(1));
            s.drain(Instant::now());
        }
        let st = s.stats();
        assert_eq!((st.queued, st.dropped_full, st.sent), (4, 6, 0));
        assert!(!st.connected);
        assert!(st.connect_failures >= 1, "{st:?}");
        // The backoff doubles up to reconnect_max_s.
        let now = Instant::now();
        let mut at = now;
        let mut waits = Vec::new();
        for _ in 0..5 {
            let before = s.stats().connect_failures;
            let next = s.next_attempt.unwrap();
            waits.push(next.saturating_duration_since(at).as_millis());
            at = next;
            s.drain(next);
            // Loopback refuses at once; allow a connect still in flight to resolve.
            while s.stats().connect_failures == before {
                std::thread::sleep(Duration::from_millis(1));
                s.drain(next);
            }
        }
        assert!(waits[1..] == [1000, 2000, 2000, 2000], "{waits:?}");
        // At exit: one failed attempt, no waiting out the grace; what is left is counted.
        s.flush_before_exit();
        let st = s.stats();
        assert_eq!((st.dropped_at_exit, st.queue_len), (4, 0));
        assert_eq!(st.dropped(), 10);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(s.last_error().is_some_and(|e| e.contains("127.0.0.1")));
        let mut text = String::new();
        st.prometheus(&mut text);
        assert!(
            text.contains("phantomnet_syslog_dropped_total 10\n"),
            "{text}"
        );
        assert!(text.contains("phantomnet_syslog_messages_total{outcome=\"dropped_full\"} 6\n"));
    }

    #[test]
    fn exit_flush_delivers_what_is_queued() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = cfg(
            SyslogTransport::Tcp,
            &listener.local_addr().unwrap().to_string(),
        );
        let mut s = Syslog::open(&c, "b").unwrap();
        for _ in 0..50 {
            s.verdict(&verdict(Level::Warning, "[]"));
        }
        s.flush_before_exit();
        let st = s.stats();
        assert_eq!((st.sent, st.dropped()), (50, 0));
        let (mut conn, _) = listener.accept().unwrap();
        assert_eq!(read_frames(&mut conn, 50).len(), 50);
    }
}
