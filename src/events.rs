//! The records PhantomNet emits — alerts, verdicts, finished flows — in the plain form the
//! outputs (SQLite, EVE JSON, HTTP) share. Produced by the engine, written on ticks.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::decode::Micros;

/// Verdict level, ordered `Safe < Warning < High < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Level {
    #[default]
    Safe,
    Warning,
    High,
    Critical,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Safe, Level::Warning, Level::High, Level::Critical];

    /// The word stored in SQLite and EVE: SAFE, WARNING, HIGH, CRITICAL.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Safe => "SAFE",
            Level::Warning => "WARNING",
            Level::High => "HIGH",
            Level::Critical => "CRITICAL",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "SAFE" => Ok(Level::Safe),
            "WARNING" => Ok(Level::Warning),
            "HIGH" => Ok(Level::High),
            "CRITICAL" => Ok(Level::Critical),
            _ => Err(format!(
                "`{s}` is not a verdict level (expected SAFE, WARNING, HIGH or CRITICAL)"
            )),
        }
    }
}

/// Converts packet time to Unix seconds as stored in SQLite (`REAL`).
pub fn micros_to_secs(ts: Micros) -> f64 {
    ts as f64 / 1e6
}

/// Name of an IP protocol number as Suricata writes it in EVE (`TCP`, `UDP`, `ICMP`, ...).
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        1 => "ICMP",
        2 => "IGMP",
        6 => "TCP",
        17 => "UDP",
        47 => "GRE",
        50 => "ESP",
        51 => "AH",
        58 => "IPv6-ICMP",
        132 => "SCTP",
        0 => "",
        _ => "OTHER",
    }
}

/// One signature, intel or built-in detector hit, ready to write.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlertRow<'a> {
    pub ts: Micros,
    /// 1 for rules unless the rule says otherwise; built-in detectors use their own gids.
    pub gid: u32,
    pub sid: u32,
    pub rev: u32,
    pub msg: &'a str,
    /// Suricata classtype description ("Attempted Information Leak"), or "" if none.
    pub category: &'a str,
    /// 1 (highest) .. 4.
    pub priority: u8,
    /// "allowed" for alert rules, "blocked" for drop rules (we never block: IDS mode).
    pub action: &'a str,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    /// IP protocol number (0 for non-IP, e.g. ARP).
    pub proto: u8,
    /// Flow id shared by all events of one flow (0 when none).
    pub flow_id: u64,
}

/// One host-window verdict above SAFE, ready to write.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VerdictRow<'a> {
    pub ts: Micros,
    pub host: IpAddr,
    pub verdict: Level,
    /// 0–100.
    pub risk: u8,
    /// Isolation Forest score in 0..1 (None when no model is loaded).
    pub anomaly_score: Option<f64>,
    /// 0–1.
    pub confidence: f64,
    /// JSON array of reason objects (see correlate.rs).
    pub reasons_json: &'a str,
}

/// Summary of a finished (expired, closed or evicted) flow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowRow {
    pub flow_id: u64,
    pub start: Micros,
    pub end: Micros,
    /// Initiator (client) and responder (server).
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub proto: u8,
    pub pkts_to_server: u64,
    pub pkts_to_client: u64,
    pub bytes_to_server: u64,
    pub bytes_to_client: u64,
    /// TCP flags seen in either direction, OR-ed.
    pub tcp_flags: u8,
    /// Why it ended: "timeout", "closed" (FIN/RST), "evicted" or "shutdown".
    pub reason: &'static str,
}
