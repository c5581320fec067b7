//! EVE JSON lines as Suricata writes them, so EveBox, Elastic, Wazuh or Vector can read
//! PhantomNet's alerts, verdicts and flows without a custom parser.
//!
//! Each event is formatted by hand into one reused `String` (no serde, no per-event
//! allocation once the buffer has grown) and appended to the file through a `BufWriter`;
//! the caller flushes once per tick. Timestamps are UTC in Suricata's form
//! `2016-01-27T18:32:05.123456+0000`, from packet time, with a hand-written
//! civil-from-days conversion. Ports are written for TCP, UDP and SCTP only, as Suricata
//! does; `proto` is omitted for non-IP events (e.g. ARP watch alerts).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::decode::Micros;
use crate::events::{proto_name, AlertRow, FlowRow, VerdictRow};

/// Errors name the EVE file and what failed.
#[derive(Debug, thiserror::Error)]
pub enum EveError {
    #[error("cannot open EVE file {} for appending: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("writing EVE file {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// Appends EVE JSON lines to a file (or any `Write`, for tests and stdout).
pub struct EveWriter<W: Write = BufWriter<File>> {
    out: W,
    path: PathBuf,
    buf: String,
    sensor: Option<String>,
    lines: u64,
}

impl EveWriter<BufWriter<File>> {
    /// Opens `path` for appending, creating it if needed.
    pub fn open(path: &Path) -> Result<Self, EveError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| EveError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(EveWriter::from_writer(
            BufWriter::with_capacity(64 * 1024, file),
            path,
        ))
    }
}

impl EveWriter<BufWriter<File>> {
    /// Flushes and reopens the same path, for log rotation (on SIGHUP, as Suricata does).
    pub fn reopen(&mut self) -> Result<(), EveError> {
        self.flush()?;
        let fresh = EveWriter::open(&self.path)?;
        self.out = fresh.out;
        Ok(())
    }
}

impl<W: Write> EveWriter<W> {
    /// Wraps any writer; `name` is what errors call it (e.g. "<stdout>").
    pub fn from_writer(out: W, name: &Path) -> Self {
        EveWriter {
            out,
            path: name.to_path_buf(),
            buf: String::with_capacity(1024),
            sensor: None,
            lines: 0,
        }
    }

    /// The sensor name written into every event as `"host"`, like Suricata's `sensor-name`.
    pub fn set_sensor_name(&mut self, name: Option<&str>) {
        self.sensor = name.map(str::to_string);
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn alert(&mut self, a: &AlertRow<'_>) -> Result<(), EveError> {
        self.buf.clear();
        format_alert(&mut self.buf, self.sensor.as_deref(), a);
        self.emit()
    }

    pub fn verdict(&mut self, v: &VerdictRow<'_>) -> Result<(), EveError> {
        self.buf.clear();
        format_verdict(&mut self.buf, self.sensor.as_deref(), v);
        self.emit()
    }

    pub fn flow(&mut self, f: &FlowRow) -> Result<(), EveError> {
        self.buf.clear();
        format_flow(&mut self.buf, self.sensor.as_deref(), f);
        self.emit()
    }

    /// Pushes buffered lines to the file; call once per tick.
    pub fn flush(&mut self) -> Result<(), EveError> {
        self.out.flush().map_err(|source| EveError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// The underlying writer (tests read back what was written).
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    fn emit(&mut self) -> Result<(), EveError> {
        self.buf.push('\n');
        self.out
            .write_all(self.buf.as_bytes())
            .map_err(|source| EveError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.lines += 1;
        Ok(())
    }
}

/// Appends one alert event (without the newline) to `out`.
pub fn format_alert(out: &mut String, sensor: Option<&str>, a: &AlertRow<'_>) {
    header(out, sensor, a.ts, a.flow_id, "alert");
    endpoints(out, a.src, a.src_port, a.dst, a.dst_port, a.proto);
    out.push_str(",\"alert\":{\"action\":");
    json_str(out, a.action);
    let _ = write!(
        out,
        ",\"gid\":{},\"signature_id\":{},\"rev\":{},\"signature\":",
        a.gid, a.sid, a.rev
    );
    json_str(out, a.msg);
    out.push_str(",\"category\":");
    json_str(out, a.category);
    let _ = write!(out, ",\"severity\":{}}}}}", a.priority);
}

/// Appends one verdict event (without the newline) to `out`. The reasons array is embedded
/// as JSON; if it is not a valid JSON array it is kept as text in one `invalid` reason.
pub fn format_verdict(out: &mut String, sensor: Option<&str>, v: &VerdictRow<'_>) {
    header(out, sensor, v.ts, 0, "verdict");
    out.push_str(",\"src_ip\":\"");
    push_ip(out, v.host);
    out.push_str("\",\"verdict\":{\"host\":\"");
    push_ip(out, v.host);
    out.push_str("\",\"level\":\"");
    out.push_str(v.verdict.as_str());
    let _ = write!(out, "\",\"risk\":{},\"anomaly_score\":", v.risk);
    match v.anomaly_score {
        Some(s) => json_f64(out, s),
        None => out.push_str("null"),
    }
    out.push_str(",\"confidence\":");
    json_f64(out, v.confidence);
    out.push_str(",\"reasons\":");
    let raw = v.reasons_json.trim();
    if raw.starts_with('[') && serde_json::from_str::<serde::de::IgnoredAny>(raw).is_ok() {
        // Valid JSON: a raw newline can only be whitespace between tokens here.
        for c in raw.chars() {
            out.push(if c == '\n' || c == '\r' { ' ' } else { c });
        }
    } else {
        out.push_str("[{\"kind\":\"invalid\",\"text\":");
        json_str(out, v.reasons_json);
        out.push_str("}]");
    }
    out.push_str("}}");
}

/// Appends one flow event (without the newline) to `out`, timestamped at the flow's end.
pub fn format_flow(out: &mut String, sensor: Option<&str>, f: &FlowRow) {
    header(out, sensor, f.end, f.flow_id, "flow");
    endpoints(out, f.src, f.src_port, f.dst, f.dst_port, f.proto);
    let _ = write!(
        out,
        ",\"flow\":{{\"pkts_toserver\":{},\"pkts_toclient\":{},\"bytes_toserver\":{},\
         \"bytes_toclient\":{},\"start\":\"",
        f.pkts_to_server, f.pkts_to_client, f.bytes_to_server, f.bytes_to_client
    );
    timestamp(out, f.start);
    out.push_str("\",\"end\":\"");
    timestamp(out, f.end);
    let age = (f.end - f.start).max(0) / 1_000_000;
    let _ = write!(out, "\",\"age\":{age},\"state\":\"{}\"", flow_state(f));
    out.push_str(",\"reason\":");
    json_str(out, f.reason);
    out.push('}');
    if f.proto == 6 {
        let _ = write!(out, ",\"tcp\":{{\"tcp_flags\":\"{:02x}\"", f.tcp_flags);
        const NAMES: [&str; 8] = ["fin", "syn", "rst", "psh", "ack", "urg", "ecn", "cwr"];
        for (bit, name) in NAMES.iter().enumerate() {
            if f.tcp_flags & (1 << bit) != 0 {
                let _ = write!(out, ",\"{name}\":true");
            }
        }
        out.push('}');
    }
    out.push('}');
}

/// Suricata's flow `state`: closed once FIN/RST was seen (or the flow ended as closed),
/// established once the responder answered, new otherwise.
fn flow_state(f: &FlowRow) -> &'static str {
    const FIN: u8 = 0x01;
    const RST: u8 = 0x04;
    if f.reason == "closed" || (f.proto == 6 && f.tcp_flags & (FIN | RST) != 0) {
        "closed"
    } else if f.pkts_to_client > 0 {
        "established"
    } else {
        "new"
    }
}

fn header(out: &mut String, sensor: Option<&str>, ts: Micros, flow_id: u64, kind: &str) {
    out.push_str("{\"timestamp\":\"");
    timestamp(out, ts);
    out.push('"');
    if flow_id != 0 {
        let _ = write!(out, ",\"flow_id\":{flow_id}");
    }
    if let Some(name) = sensor {
        out.push_str(",\"host\":");
        json_str(out, name);
    }
    out.push_str(",\"event_type\":\"");
    out.push_str(kind);
    out.push('"');
}

fn endpoints(out: &mut String, src: IpAddr, sport: u16, dst: IpAddr, dport: u16, proto: u8) {
    let ports = matches!(proto, 6 | 17 | 132);
    out.push_str(",\"src_ip\":\"");
    push_ip(out, src);
    out.push('"');
    if ports {
        let _ = write!(out, ",\"src_port\":{sport}");
    }
    out.push_str(",\"dest_ip\":\"");
    push_ip(out, dst);
    out.push('"');
    if ports {
        let _ = write!(out, ",\"dest_port\":{dport}");
    }
    let name = proto_name(proto);
    if !name.is_empty() {
        out.push_str(",\"proto\":\"");
        out.push_str(name);
        out.push('"');
    }
}

/// Canonical text (RFC 5952 for IPv6); needs no escaping.
fn push_ip(out: &mut String, ip: IpAddr) {
    let _ = write!(out, "{ip}");
}

/// A JSON number, or `null` for NaN and infinities (which JSON cannot carry).
fn json_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        out.push_str("null");
    }
}

/// Appends `s` as a JSON string literal with quotes, escaping `"`, `\` and control characters.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

/// Appends `ts` as `YYYY-MM-DDTHH:MM:SS.ffffff+0000` (UTC).
pub fn timestamp(out: &mut String, ts: Micros) {
    let secs = ts.div_euclid(1_000_000);
    let micros = ts.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}+0000",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
}

/// Days since 1970-01-01 → proleptic Gregorian (year, month, day); Howard Hinnant's
/// `civil_from_days`, valid for every i64 day count a timestamp can produce.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(t: Micros) -> String {
        let mut s = String::new();
        timestamp(&mut s, t);
        s
    }

    #[test]
    fn civil_from_days_matches_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(16_860), (2016, 2, 29));
        assert_eq!(civil_from_days(-25_508), (1900, 3, 1));
        assert_eq!(civil_from_days(-25_509), (1900, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
    }

    #[test]
    fn civil_from_days_is_consecutive_over_centuries() {
        // Walk day by day from 1600 to 2400 and check every step is the next calendar day.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mdays = |y: i64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut prev = civil_from_days(-135_140);
        assert_eq!(prev, (1600, 1, 1));
        for day in -135_139..157_000 {
            let cur = civil_from_days(day);
            let (y, m, d) = prev;
            let expect = if d < mdays(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            assert_eq!(cur, expect, "day {day}");
            prev = cur;
        }
    }

    #[test]
    fn timestamps_of_known_instants() {
        assert_eq!(ts(1_453_919_525_123_456), "2016-01-27T18:32:05.123456+0000");
        assert_eq!(ts(0), "1970-01-01T00:00:00.000000+0000");
        assert_eq!(ts(-1), "1969-12-31T23:59:59.999999+0000");
        assert_eq!(ts(951_782_400_000_001), "2000-02-29T00:00:00.000001+0000");
        assert_eq!(ts(946_684_799_999_999), "1999-12-31T23:59:59.999999+0000");
        assert_eq!(ts(1_456_790_399_000_000), "2016-02-29T23:59:59.000000+0000");
        assert_eq!(
            ts(-2_203_891_200_000_000),
            "1900-03-01T00:00:00.000000+0000"
        );
        assert_eq!(ts(4_107_542_400_000_000), "2100-03-01T00:00:00.000000+0000");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\te\u{1}f\u{7f}é✓");
        assert_eq!(s, r#""a\"b\\c\nd\te\u0001f\u007fé✓""#);
        let v: String = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\te\u{1}f\u{7f}é✓");
    }
}
