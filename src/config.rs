//! TOML configuration → validated `Config`. Every key has a documented default
//! (config/phantomnet.toml); unknown keys and bad values are errors that name the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Interface for `run` ("" = must be given with -i).
    pub interface: String,
    pub promiscuous: bool,
    pub read_timeout_ms: u64,
    /// Capture through a TPACKET_V3 memory-mapped ring instead of pnet (src/capture/ring.rs).
    pub ring: bool,
    /// The ring's size in MiB (1 ..= 1024).
    pub ring_mb: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interface: String::new(),
            promiscuous: true,
            read_timeout_ms: 200,
            ring: false,
            ring_mb: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TablesConfig {
    pub flows: usize,
    pub hosts: usize,
    /// Entries of the rule-threshold tracking table.
    pub tracked: usize,
    /// Alerts, verdicts and flow summaries held between ticks before a forced flush.
    pub outbox: usize,
}

impl Default for TablesConfig {
    fn default() -> Self {
        TablesConfig {
            flows: 16_384,
            hosts: 2_048,
            tracked: 4_096,
            outbox: 8_192,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Idle seconds before a flow of that kind ends.
    pub tcp: u64,
    pub udp: u64,
    pub other: u64,
    /// Seconds a TCP flow lingers after FIN/RST.
    pub closed: u64,
    /// Idle seconds before a host's state is dropped.
    pub host: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            tcp: 600,
            udp: 60,
            other: 30,
            closed: 10,
            host: 900,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// SQLite database file.
    pub db: PathBuf,
    /// EVE JSON lines file ("" = off).
    pub eve: PathBuf,
    /// Write finished-flow summaries to the database (the `flows` view) and EVE.
    pub flows: bool,
    /// Name of this appliance in events ("" = the host name).
    pub appliance: String,
    /// Write to the database from a thread of its own, so the packet loop never waits on
    /// the disk (false: write on the loop).
    pub writer_thread: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            db: PathBuf::from("phantomnet.db"),
            eve: PathBuf::new(),
            flows: true,
            appliance: String::new(),
            writer_thread: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Most rows kept per table (alerts, verdicts, flows, feature samples).
    pub max_rows: u64,
    /// Most bytes the database file may hold (0 = no byte bound).
    pub max_bytes: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_rows: 200_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    pub bind: String,
    /// Bearer token required on every endpoint but /healthz ("" = none).
    pub token: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            bind: "127.0.0.1:8080".into(),
            token: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    /// Suricata-style rule files.
    pub rules: Vec<PathBuf>,
    /// Threat-intel lists (one address/CIDR per line, Spamhaus DROP, iprep CSV, FireHOL).
    pub intel: Vec<PathBuf>,
    /// Isolation Forest model file ("" = no anomaly detection).
    pub model: PathBuf,
    /// Watch ARP for changed IP→MAC bindings.
    pub arp_watch: bool,
    /// Keep host state and judge host windows (features, forest, correlation) on a thread
    /// of its own, beside the packet loop, where there is more than one CPU core (false: on
    /// the loop).
    pub judge_thread: bool,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            rules: vec![
                PathBuf::from("rules/phantomnet.rules"),
                PathBuf::from("rules/phantomnet-threats.rules"),
            ],
            intel: vec![],
            model: PathBuf::from("models/default.json"),
            arp_watch: true,
            judge_thread: true,
        }
    }
}

/// Weights (risk points) and thresholds that turn evidence into verdicts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerdictConfig {
    pub warning_risk: u32,
    pub high_risk: u32,
    pub critical_risk: u32,
    /// Host-windows with fewer packets (sent + received) are not judged by the model.
    pub min_window_packets: u32,
    pub anomaly_rare: u32,
    pub anomaly_very_rare: u32,
    pub anomaly_extreme: u32,
    /// "Extreme" means a score at least this far above the highest training score.
    pub extreme_margin: f64,
    pub range_breach: u32,
    /// Range guard: a feature breaches when above training max × this factor.
    pub range_factor: f64,
    /// Range guard on log-scaled counts and rates: also at least this much above the
    /// training maximum, in raw units (packets/s, flows, hosts, ports).
    pub range_floor: f64,
    pub signature_p1: u32,
    pub signature_p2: u32,
    pub signature_p3: u32,
    pub signature_p4: u32,
    pub extra_signature: u32,
    pub intel: u32,
    pub arp_change: u32,
}

impl Default for VerdictConfig {
    fn default() -> Self {
        VerdictConfig {
            warning_risk: 20,
            high_risk: 50,
            critical_risk: 80,
            min_window_packets: 4,
            anomaly_rare: 20,
            anomaly_very_rare: 30,
            anomaly_extreme: 50,
            extreme_margin: 0.05,
            range_breach: 50,
            range_factor: 2.0,
            range_floor: 25.0,
            signature_p1: 50,
            signature_p2: 35,
            signature_p3: 25,
            signature_p4: 15,
            extra_signature: 10,
            intel: 40,
            arp_change: 50,
        }
    }
}

/// How events travel to a syslog collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    /// One datagram per event to `server`.
    Udp,
    /// A TCP stream to `server` with octet-counted framing (RFC 6587).
    Tcp,
    /// Datagrams to the local syslog socket (`socket`, usually /dev/log).
    Unix,
}

/// How a syslog message around the EVE JSON is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    /// `<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG` (RFC 5424).
    Rfc5424,
    /// `<PRI>Mmm dd hh:mm:ss HOST APP[PID]: MSG` (BSD syslog, RFC 3164; over the unix socket
    /// without HOST, as syslog(3) writes it) for daemons that do not parse RFC 5424.
    Rfc3164,
}

/// EVE events (alerts and verdicts) to a syslog collector; see src/syslog.rs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    pub enabled: bool,
    pub transport: SyslogTransport,
    /// `host:port` of the collector (udp, tcp). Resolved once at start-up.
    pub server: String,
    /// Local datagram socket (unix).
    pub socket: PathBuf,
    pub format: SyslogFormat,
    /// Facility name: kern, user, daemon, auth, syslog, ..., local0 ..= local7.
    pub facility: String,
    /// APP-NAME of every message (collectors filter on it).
    pub app_name: String,
    /// HOSTNAME of every message ("" = the appliance name).
    pub hostname: String,
    /// Verdicts at or above this level are sent: WARNING, HIGH or CRITICAL.
    pub min_level: String,
    /// Alerts with a priority number at most this are sent (1 = highest .. 4; 0 = no alerts).
    pub alert_priority: u8,
    /// Messages waiting to be sent; when full, new events are dropped and counted.
    pub queue: usize,
    /// Largest message in bytes; larger events are dropped and counted.
    pub max_message: usize,
    /// Longest wait between reconnection attempts, in seconds (the backoff doubles up to it).
    pub reconnect_max_s: u64,
    /// At exit, how long to keep trying to deliver what is queued, in milliseconds.
    pub exit_grace_ms: u64,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            enabled: false,
            transport: SyslogTransport::Udp,
            server: "127.0.0.1:514".into(),
            socket: PathBuf::from("/dev/log"),
            format: SyslogFormat::Rfc5424,
            facility: "local5".into(),
            app_name: "phantomnet".into(),
            hostname: String::new(),
            min_level: "WARNING".into(),
            alert_priority: 4,
            queue: 1024,
            max_message: 16_384,
            reconnect_max_s: 60,
            exit_grace_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearningConfig {
    /// Learn the network: store feature samples, then train and switch models.
    pub enabled: bool,
    /// Seconds of packet time to learn before training.
    pub duration: u64,
    pub trees: usize,
    pub samples: usize,
    pub seed: u64,
}

impl Default for LearningConfig {
    fn default() -> Self {
        LearningConfig {
            enabled: false,
            duration: 86_400,
            trees: 100,
            samples: 256,
            seed: 1,
        }
    }
}

/// How `run` behaves as a system service.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// When `run` starts as root: the user (name or numeric id) it switches to right after
    /// opening the capture socket ("" = stay root, with a warning).
    pub user: String,
    /// Group (name or numeric id) to switch to ("" = the user's primary group).
    pub group: String,
}

/// The whole configuration as written in TOML.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub capture: CaptureConfig,
    pub tables: TablesConfig,
    pub timeouts: TimeoutsConfig,
    pub output: OutputConfig,
    pub retention: RetentionConfig,
    pub http: HttpConfig,
    pub detection: DetectionConfig,
    /// Rule address variables (HOME_NET, EXTERNAL_NET, ...).
    pub vars: std::collections::BTreeMap<String, String>,
    /// Rule port variables (HTTP_PORTS, ...).
    pub port_vars: std::collections::BTreeMap<String, String>,
    pub verdict: VerdictConfig,
    pub learning: LearningConfig,
    pub syslog: SyslogConfig,
    pub service: ServiceConfig,
    /// Where the config came from (for messages); not a TOML key.
    #[serde(skip)]
    pub origin: String,
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths inside it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg = Config::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        Ok(cfg)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: describe_toml_error(text, &e),
        })?;
        cfg.origin = origin.to_string();
        cfg.validate()?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.output.db);
        fix(&mut self.output.eve);
        fix(&mut self.detection.model);
        fix(&mut self.syslog.socket);
        self.detection.rules.iter_mut().for_each(fix);
        self.detection.intel.iter_mut().for_each(fix);
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Checks ranges and cross-key rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.tables;
        if !(16..=4_194_304).contains(&t.flows) {
            return Err(self.invalid(
                "tables.flows",
                format!("{} is out of range (expected 16 ..= 4194304)", t.flows),
            ));
        }
        if !(16..=1_048_576).contains(&t.hosts) {
            return Err(self.invalid(
                "tables.hosts",
                format!("{} is out of range (expected 16 ..= 1048576)", t.hosts),
            ));
        }
        if !(16..=1_048_576).contains(&t.tracked) {
            return Err(self.invalid(
                "tables.tracked",
                format!("{} is out of range (expected 16 ..= 1048576)", t.tracked),
            ));
        }
        if !(64..=1_048_576).contains(&t.outbox) {
            return Err(self.invalid(
                "tables.outbox",
                format!("{} is out of range (expected 64 ..= 1048576)", t.outbox),
            ));
        }
        for (k, v) in [
            ("timeouts.tcp", self.timeouts.tcp),
            ("timeouts.udp", self.timeouts.udp),
            ("timeouts.other", self.timeouts.other),
            ("timeouts.closed", self.timeouts.closed),
            ("timeouts.host", self.timeouts.host),
        ] {
            if !(1..=86_400).contains(&v) {
                return Err(self.invalid(
                    k,
                    format!("{v} is out of range (expected 1 ..= 86400 seconds)"),
                ));
            }
        }
        if self.capture.read_timeout_ms == 0 || self.capture.read_timeout_ms > 5_000 {
            return Err(self.invalid(
                "capture.read_timeout_ms",
                format!(
                    "{} is out of range (expected 1 ..= 5000)",
                    self.capture.read_timeout_ms
                ),
            ));
        }
        if !(1..=crate::capture::ring::MAX_RING_MB).contains(&self.capture.ring_mb) {
            return Err(self.invalid(
                "capture.ring_mb",
                format!(
                    "{} is out of range (expected 1 ..= {} MiB)",
                    self.capture.ring_mb,
                    crate::capture::ring::MAX_RING_MB
                ),
            ));
        }
        if self.http.enabled && self.http.bind.parse::<std::net::SocketAddr>().is_err() {
            return Err(self.invalid(
                "http.bind",
                format!(
                    "`{}` is not an address:port like 127.0.0.1:8080",
                    self.http.bind
                ),
            ));
        }
        if self.output.db.as_os_str().is_empty() {
            return Err(self.invalid("output.db", "must name a database file"));
        }
        let v = &self.verdict;
        if !(v.warning_risk >= 1
            && v.warning_risk < v.high_risk
            && v.high_risk < v.critical_risk
            && v.critical_risk <= 100)
        {
            return Err(self.invalid(
                "verdict.warning_risk",
                format!(
                    "thresholds must satisfy 1 <= warning_risk < high_risk < critical_risk <= 100 (got {}, {}, {})",
                    v.warning_risk, v.high_risk, v.critical_risk
                ),
            ));
        }
        if !(v.range_factor.is_finite() && v.range_factor >= 1.0) {
            return Err(self.invalid(
                "verdict.range_factor",
                format!("{} must be a number >= 1.0", v.range_factor),
            ));
        }
        if !(v.extreme_margin.is_finite() && (0.0..=1.0).contains(&v.extreme_margin)) {
            return Err(self.invalid(
                "verdict.extreme_margin",
                format!("{} must be a number in 0 ..= 1", v.extreme_margin),
            ));
        }
        if !(v.range_floor.is_finite() && v.range_floor >= 0.0) {
            return Err(self.invalid(
                "verdict.range_floor",
                format!("{} must be a number >= 0", v.range_floor),
            ));
        }
        if self.service.user.is_empty() && !self.service.group.is_empty() {
            return Err(self.invalid(
                "service.group",
                format!(
                    "`{}` is set but service.user is empty (expected a user to switch to as well)",
                    self.service.group
                ),
            ));
        }
        let l = &self.learning;
        if l.trees == 0 || l.trees > 1000 {
            return Err(self.invalid(
                "learning.trees",
                format!("{} is out of range (expected 1 ..= 1000)", l.trees),
            ));
        }
        if l.samples < 2 || l.samples > 65_536 {
            return Err(self.invalid(
                "learning.samples",
                format!("{} is out of range (expected 2 ..= 65536)", l.samples),
            ));
        }
        if l.enabled && l.duration < 60 {
            return Err(self.invalid(
                "learning.duration",
                format!("{} is too short (expected at least 60 seconds)", l.duration),
            ));
        }
        self.validate_syslog()?;
        Ok(())
    }

    fn validate_syslog(&self) -> Result<(), ConfigError> {
        let s = &self.syslog;
        if crate::syslog::facility_code(&s.facility).is_none() {
            return Err(self.invalid(
                "syslog.facility",
                format!(
                    "`{}` is not a facility (expected one of: {})",
                    s.facility,
                    crate::syslog::FACILITIES.join(", ")
                ),
            ));
        }
        match s.min_level.parse::<crate::events::Level>() {
            Ok(crate::events::Level::Safe) | Err(_) => {
                return Err(self.invalid(
                    "syslog.min_level",
                    format!(
                        "`{}` is not a verdict level (expected WARNING, HIGH or CRITICAL)",
                        s.min_level
                    ),
                ))
            }
            Ok(_) => {}
        }
        if s.alert_priority > 4 {
            return Err(self.invalid(
                "syslog.alert_priority",
                format!(
                    "{} is out of range (expected 0 ..= 4; 0 sends no alerts)",
                    s.alert_priority
                ),
            ));
        }
        if !(1..=1_048_576).contains(&s.queue) {
            return Err(self.invalid(
                "syslog.queue",
                format!(
                    "{} is out of range (expected 1 ..= 1048576 messages)",
                    s.queue
                ),
            ));
        }
        if !(480..=65_000).contains(&s.max_message) {
            return Err(self.invalid(
                "syslog.max_message",
                format!(
                    "{} is out of range (expected 480 ..= 65000 bytes; a UDP datagram holds at most 65507)",
                    s.max_message
                ),
            ));
        }
        if !(1..=3_600).contains(&s.reconnect_max_s) {
            return Err(self.invalid(
                "syslog.reconnect_max_s",
                format!(
                    "{} is out of range (expected 1 ..= 3600 seconds)",
                    s.reconnect_max_s
                ),
            ));
        }
        if s.exit_grace_ms > 60_000 {
            return Err(self.invalid(
                "syslog.exit_grace_ms",
                format!("{} is out of range (expected 0 ..= 60000)", s.exit_grace_ms),
            ));
        }
        if s.app_name.is_empty()
            || s.app_name.len() > 48
            || !s.app_name.bytes().all(|b| (33..=126).contains(&b))
        {
            return Err(self.invalid(
                "syslog.app_name",
                format!(
                    "`{}` must be 1 to 48 printable ASCII characters without spaces (RFC 5424 APP-NAME)",
                    s.app_name
                ),
            ));
        }
        if s.hostname.len() > 255 || !s.hostname.bytes().all(|b| (33..=126).contains(&b)) {
            return Err(self.invalid(
                "syslog.hostname",
                format!(
                    "`{}` must be at most 255 printable ASCII characters without spaces (RFC 5424 HOSTNAME)",
                    s.hostname
                ),
            ));
        }
        if s.enabled && s.transport != SyslogTransport::Unix {
            if let Err(msg) = crate::syslog::split_host_port(&s.server) {
                return Err(self.invalid("syslog.server", msg));
            }
        }
        if s.enabled && s.transport == SyslogTransport::Unix && s.socket.as_os_str().is_empty() {
            return Err(self.invalid("syslog.socket", "must name a socket such as /dev/log"));
        }
        Ok(())
    }
}

/// Turns a toml error into one line naming the key (with a nearest-key suggestion for
/// unknown keys) and the line number.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let key = e.span().and_then(|s| key_at(text, s.start));
    let mut out = match (line, key) {
        (Some(l), Some(k)) => format!("line {l}: key `{k}`: {msg}"),
        (Some(l), None) => format!("line {l}: {msg}"),
        _ => msg.clone(),
    };
    // serde: "unknown field `x`, expected one of `a`, `b`"
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some(end) = rest.find('`') {
            let bad = &rest[..end];
            let expected: Vec<&str> = rest[end..].split('`').skip(2).step_by(2).collect();
            if let Some(best) = nearest(bad, &expected) {
                out.push_str(&format!(" (did you mean `{best}`?)"));
            }
        }
    }
    out
}

/// The dotted key (`section.key`) of the `key = value` line holding byte `at`, so a type
/// error names the key and not just the line. `None` off such a line.
fn key_at(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let end = text.get(at..)?.find('\n').map_or(text.len(), |i| at + i);
    let key = text.get(start..end)?.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with('#') || key.starts_with('[') {
        return None;
    }
    let section = text
        .get(..start)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    Some(match section {
        Some(s) if !s.is_empty() => format!("{s}.{key}"),
        _ => key.to_string(),
    })
}

/// The candidate closest to `word` by edit distance, if reasonably close.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(word, c);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.filter(|(d, c)| *d <= (c.len().max(word.len()) / 2).max(2))
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::parse("", "test").unwrap();
        assert_eq!(c.tables.flows, 16_384);
        assert_eq!(c.http.bind, "127.0.0.1:8080");
    }

    #[test]
    fn capture_ring_keys_are_read_and_checked() {
        let c = Config::parse("[capture]\nring = true\nring_mb = 64\n", "c").unwrap();
        assert!(c.capture.ring);
        assert_eq!(c.capture.ring_mb, 64);
        assert!(!Config::parse("", "c").unwrap().capture.ring);
        for bad in ["0", "1025"] {
            let e = Config::parse(&format!("[capture]\nring_mb = {bad}\n"), "c")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("capture.ring_mb") && e.contains("1 ..= 1024"),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_key_is_named_with_suggestion() {
        let e = Config::parse("[tables]\nflow = 10\n", "cfg.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cfg.toml"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("`flow`"), "{e}");
        assert!(e.contains("did you mean `flows`"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::parse("[tables]\nflows = 3\n", "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tables.flows"), "{e}");
        let e = Config::parse("[http]\nbind = \"nope\"\n", "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.bind"), "{e}");
        let e = Config::parse("[tables]\nflows = \"many\"\n", "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = Config::parse("[verdict]\nhigh_risk = 5\n", "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("verdict.warning_risk"), "{e}");
    }

    /// Regression (hardening): a wrong TOML type named the line but not the key.
    #[test]
    fn type_errors_name_the_dotted_key() {
        let e = Config::parse("[capture]\n\n[tables]\nflows = \"many\"\n", "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 4: key `tables.flows`"), "{e}");
        let e = Config::parse("[capture]\npromiscuous = \"yes\" # comment = x\n", "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `capture.promiscuous`"), "{e}");
        assert_eq!(key_at("a = 1\n[x]\nb=2", 13).as_deref(), Some("x.b"));
        assert_eq!(key_at("a = 1\n", 2).as_deref(), Some("a"));
        assert_eq!(key_at("[x]\n", 1), None);
        assert_eq!(key_at("", 5), None);
    }

    #[test]
    fn syslog_section_is_validated_by_key() {
        let c = Config::parse(
            "[syslog]\nenabled = true\ntransport = \"tcp\"\nserver = \"logs.lan:6514\"\nfacility = \"local0\"\nmin_level = \"HIGH\"\n",
            "c",
        )
        .unwrap();
        assert_eq!(c.syslog.transport, SyslogTransport::Tcp);
        for (text, key) in [
            ("transport = \"sctp\"", "line 2"),
            ("facility = \"local9\"", "syslog.facility"),
            ("min_level = \"SAFE\"", "syslog.min_level"),
            ("min_level = \"LOUD\"", "syslog.min_level"),
            ("alert_priority = 5", "syslog.alert_priority"),
            ("queue = 0", "syslog.queue"),
            ("max_message = 70000", "syslog.max_message"),
            ("app_name = \"phantom net\"", "syslog.app_name"),
            ("hostname = \"a b\"", "syslog.hostname"),
            ("enabled = true\nserver = \"nohost\"", "syslog.server"),
            ("reconnect_max_s = 0", "syslog.reconnect_max_s"),
        ] {
            let e = Config::parse(&format!("[syslog]\n{text}\n"), "c")
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        // A disabled section is not held to a server it will never use.
        Config::parse("[syslog]\nserver = \"nohost\"\n", "c").unwrap();
    }

    #[test]
    fn relative_paths_resolve_against_the_config_dir() {
        let dir = std::env::temp_dir().join(format!("pn-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(&p, "[detection]\nrules = [\"r/a.rules\", \"/abs.rules\"]\n").unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.detection.rules[0], dir.join("r/a.rules"));
        assert_eq!(c.detection.rules[1], PathBuf::from("/abs.rules"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
