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
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interface: String::new(),
            promiscuous: true,
            read_timeout_ms: 200,
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
    /// Write finished-flow summaries to the `flows` table and EVE.
    pub flows: bool,
    /// Name of this appliance in events ("" = the host name).
    pub appliance: String,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            db: PathBuf::from("phantomnet.db"),
            eve: PathBuf::new(),
            flows: true,
            appliance: String::new(),
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
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            rules: vec![PathBuf::from("rules/phantomnet.rules")],
            intel: vec![],
            model: PathBuf::from("models/default.json"),
            arp_watch: true,
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
    pub range_breach: u32,
    /// Range guard: a feature breaches when above training max × this factor.
    pub range_factor: f64,
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
            range_breach: 50,
            range_factor: 2.0,
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
    let mut out = match line {
        Some(l) => format!("line {l}: {msg}"),
        None => msg.clone(),
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
