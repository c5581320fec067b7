//! The HTTP side end to end: `phantomnet replay --serve` on built captures, every endpoint
//! checked against the SQLite file, the token, bad parameters, a strict /metrics parser, a
//! real browser, and hostile clients (slow, many, slowloris) that must not slow the loop.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::scenario;
use crate::util::{bin, repo, write_pcap, TempDir};

const TOKEN: &str = "s3cret-t0ken";

/// A running `phantomnet replay --serve` child, killed on drop.
struct Served {
    child: Child,
    addr: SocketAddr,
    /// Lines of the child's stderr, as they come.
    log: mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Served {
    fn start(pcaps: &[&Path], config: &Path, db: &Path) -> Served {
        let mut cmd = bin();
        cmd.arg("--log").arg("info").arg("replay");
        for p in pcaps {
            cmd.arg(p);
        }
        cmd.arg("-c")
            .arg(config)
            .arg("--db")
            .arg(db)
            .arg("--serve")
            .arg("127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no `status page on` line; log so far: {lines:#?}"));
            lines.push(line.clone());
            if let Some(rest) = line.split("status page on http://").nth(1) {
                break rest.trim_end_matches('/').parse().unwrap();
            }
        };
        Served {
            child,
            addr,
            log: rx,
            lines,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the log line that reports the replay's throughput; returns frames/s.
    fn replay_rate(&mut self) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let line = self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("replay did not finish; log: {:#?}", self.lines));
            self.lines.push(line.clone());
            if let Some(rest) = line.split(" s (").nth(1) {
                if line.contains("replayed ") {
                    let n = rest.split(' ').next().unwrap();
                    return n.parse().unwrap();
                }
            }
        }
    }

    /// Waits until the capture is done (so results are final).
    fn wait_done(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = get(self.addr, "/api/status", Some(TOKEN));
            if r.status == 200 {
                let v = r.json();
                if v["capture_done"] == true {
                    return v;
                }
            }
            assert!(Instant::now() < deadline, "capture never finished");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP response, read to the end of the connection.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends raw bytes and reads the whole response (the server closes after each).
fn raw(addr: SocketAddr, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Resp {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = std::str::from_utf8(&buf[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let body = buf[end + 4..].to_vec();
    let r = Resp {
        status,
        headers,
        body,
    };
    let len: usize = r.header("Content-Length").unwrap().parse().unwrap();
    assert_eq!(len, r.body.len(), "Content-Length differs from the body");
    r
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Resp {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}\r\n").as_bytes(),
    )
}

/// A config using the repository's rules and model, with or without a token.
fn write_config(dir: &TempDir, token: &str) -> PathBuf {
    let root = repo();
    let cfg = format!(
        "[http]\ntoken = \"{token}\"\n[detection]\nrules = [\"{}\"]\nmodel = \"{}\"\n",
        root.join("rules/phantomnet.rules").display(),
        root.join("models/default.json").display()
    );
    let p = dir.path("phantomnet.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

/// The demo scenario (scan, brute force, tunnel, injection, ARP spoofing on a home LAN).
fn demo_capture(dir: &TempDir) -> (PathBuf, usize) {
    let c = scenario::demo();
    let p = dir.path("demo.pcap");
    write_pcap(&p, &c.frames);
    (p, c.len())
}

fn sql_i64(db: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn sql_strings(db: &Path, sql: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c.prepare(sql).unwrap();
    st.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn sql_ids(db: &Path, sql: &str) -> Vec<i64> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c.prepare(sql).unwrap();
    st.query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn every_endpoint_answers_from_the_database_and_checks_the_token() {
    let dir = TempDir::new("serve-endpoints");
    let (pcap, n_frames) = demo_capture(&dir);
    let cfg = write_config(&dir, TOKEN);
    let db = dir.path("pn.db");
    let s = Served::start(&[&pcap], &cfg, &db);
    let a = s.addr;

    // /healthz needs no token; everything else does, and a wrong one is refused too.
    let h = get(a, "/healthz", None);
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
    let status = s.wait_done();
    for path in [
        "/",
        "/api/status",
        "/api/verdicts",
        "/api/alerts",
        "/api/hosts",
        "/api/db",
        "/metrics",
        "/nope",
    ] {
        for tok in [
            None,
            Some("wrong"),
            Some("s3cret-t0ke"),
            Some("s3cret-t0ken2"),
        ] {
            let r = get(a, path, tok);
            assert_eq!(r.status, 401, "{path} with {tok:?}: {}", r.text());
            assert!(r.header("WWW-Authenticate").is_some(), "{path}");
            assert!(r.json()["error"].as_str().unwrap().contains("token"));
        }
    }
    // A browser may send the token as the Basic password.
    let basic = raw(
        a,
        b"GET / HTTP/1.1\r\nAuthorization: Basic dXNlcjpzM2NyZXQtdDBrZW4=\r\n\r\n",
    );
    assert_eq!(basic.status, 200);

    // /api/status against the capture and the database.
    assert_eq!(status["frames"], n_frames as u64);
    assert_eq!(status["mode"], "replay");
    assert!(status["rules_loaded"].as_u64().unwrap() > 0);
    assert_eq!(status["model"]["schema"], "phantomnet.features.v1");
    // Host-table figures come from the judge thread (the default), collected at the end.
    assert!(status["hosts"]["active"].as_u64().unwrap() > 0);
    assert_eq!(status["hosts"]["capacity"], 2048);
    let alerts = sql_i64(&db, "SELECT count(*) FROM alerts");
    assert!(alerts > 0);
    assert_eq!(status["alerts"], alerts);
    let words = ["safe", "warning", "high", "critical"];
    for (i, w) in words.iter().enumerate() {
        let col = ["safe", "warning", "high", "critical"][i];
        let from_db = sql_i64(
            &db,
            &format!("SELECT CAST(total({col}) AS INTEGER) FROM window_counts"),
        );
        assert_eq!(status["verdicts"][w], from_db, "{w}");
        assert_eq!(status["verdicts_last_day"][w], from_db, "{w}");
    }
    let stored = sql_i64(&db, "SELECT count(*) FROM verdicts");
    assert_eq!(
        stored,
        status["verdicts"]["warning"].as_i64().unwrap()
            + status["verdicts"]["high"].as_i64().unwrap()
            + status["verdicts"]["critical"].as_i64().unwrap()
    );
    let stages: Vec<&str> = status["latency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "decode",
            "state",
            "detect",
            "score",
            "correlate",
            "store",
            "frame_to_verdict",
            "http"
        ]
    );
    // The loop answered the requests above; each poll's cost was timed.
    assert!(status["latency"][7]["samples"].as_u64().unwrap() >= 1);
    let decode = &status["latency"][0];
    assert_eq!(decode["samples"], (n_frames / 64) as u64);
    assert!(decode["p50_us"].as_f64().unwrap() <= decode["p99_us"].as_f64().unwrap());

    // /api/verdicts: newest first, filtered by level and time, limit honoured.
    let v = get(a, "/api/verdicts?min=HIGH&limit=5", Some(TOKEN)).json();
    assert_eq!(
        ids(&v),
        sql_ids(
            &db,
            "SELECT id FROM verdicts WHERE level >= 2 ORDER BY ts DESC, id DESC LIMIT 5"
        )
    );
    assert!(!ids(&v).is_empty());
    for x in v.as_array().unwrap() {
        assert!(["HIGH", "CRITICAL"].contains(&x["verdict"].as_str().unwrap()));
        let reasons = x["reasons"].as_array().unwrap();
        assert!(!reasons.is_empty());
        assert!(reasons
            .iter()
            .all(|r| !r["text"].as_str().unwrap().is_empty()));
        assert!((0.0..=1.0).contains(&x["confidence"].as_f64().unwrap()));
    }
    let mid = sql_i64(&db, "SELECT CAST(avg(ts) AS INTEGER) FROM verdicts");
    let v = get(
        a,
        &format!("/api/verdicts?min=WARNING&since={mid}&limit=1000"),
        Some(TOKEN),
    )
    .json();
    assert_eq!(
        ids(&v),
        sql_ids(
            &db,
            &format!("SELECT id FROM verdicts WHERE ts >= {mid} ORDER BY ts DESC, id DESC")
        )
    );
    // Limits are capped, not refused.
    let v = get(a, "/api/verdicts?min=SAFE&limit=999999", Some(TOKEN)).json();
    assert_eq!(v.as_array().unwrap().len() as i64, stored.min(1000));

    // /api/alerts: by sid.
    let sid = sql_i64(
        &db,
        "SELECT sid FROM alerts GROUP BY sid ORDER BY count(*) DESC LIMIT 1",
    );
    let v = get(a, &format!("/api/alerts?sid={sid}&limit=1000"), Some(TOKEN)).json();
    assert_eq!(
        ids(&v),
        sql_ids(
            &db,
            &format!(
                "SELECT id FROM alerts WHERE sid = {sid} ORDER BY ts DESC, id DESC LIMIT 1000"
            )
        )
    );
    assert!(v.as_array().unwrap().iter().all(|x| x["sid"] == sid));
    let v = get(a, "/api/alerts?limit=3", Some(TOKEN)).json();
    assert_eq!(v.as_array().unwrap().len(), 3);

    // /api/hosts: one row per flagged host, worst first.
    let v = get(a, "/api/hosts", Some(TOKEN)).json();
    let hosts: BTreeSet<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap().to_string())
        .collect();
    let from_db: BTreeSet<String> = sql_strings(&db, "SELECT DISTINCT host FROM verdicts")
        .into_iter()
        .collect();
    assert_eq!(hosts, from_db);
    let first = &v[0];
    let worst = sql_i64(&db, "SELECT max(level) FROM verdicts");
    assert_eq!(
        first["max_verdict"],
        ["SAFE", "WARNING", "HIGH", "CRITICAL"][worst as usize]
    );

    // /api/db: a consistent SQLite file with the same rows.
    let r = get(a, "/api/db", Some(TOKEN));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/vnd.sqlite3"));
    assert!(r.body.starts_with(b"SQLite format 3\0"));
    let copy = dir.path("copy.db");
    std::fs::write(&copy, &r.body).unwrap();
    for t in ["verdicts", "alerts", "window_counts", "flows"] {
        let q = format!("SELECT count(*) FROM {t}");
        assert_eq!(sql_i64(&copy, &q), sql_i64(&db, &q), "{t}");
    }
    // The snapshot left nothing behind next to the database.
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("snapshot"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // /metrics parses strictly and agrees with the status.
    let r = get(a, "/metrics", Some(TOKEN));
    assert!(r
        .header("Content-Type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = parse_prometheus(&r.text());
    assert_eq!(m.value("phantomnet_frames_total", &[]), n_frames as f64);
    assert_eq!(m.value("phantomnet_alerts_total", &[]), alerts as f64);
    for (w, l) in words.iter().zip(["SAFE", "WARNING", "HIGH", "CRITICAL"]) {
        assert_eq!(
            m.value("phantomnet_verdicts_total", &[("level", l)]),
            status["verdicts"][w].as_f64().unwrap()
        );
    }
    assert_eq!(
        m.value(
            "phantomnet_stage_latency_seconds_count",
            &[("stage", "decode")]
        ),
        (n_frames / 64) as f64
    );
    assert_eq!(
        m.value(
            "phantomnet_decode_errors_total",
            &[("kind", "tcp_truncated")]
        ),
        0.0
    );
    assert!(m.value("phantomnet_rules_loaded", &[]) > 0.0);
    assert!(m.value("phantomnet_http_unauthorized_total", &[]) >= 32.0);
    assert_eq!(m.types["phantomnet_stage_latency_seconds"], "histogram");
    assert_eq!(m.types["phantomnet_http_loop_seconds"], "histogram");
    assert!(m.value("phantomnet_http_loop_seconds_count", &[]) >= 1.0);
    for fam in [
        "phantomnet_kernel_drops_total",
        "phantomnet_flows_active",
        "phantomnet_flows_evicted_total",
        "phantomnet_hosts_active",
        "phantomnet_hosts_evicted_total",
        "phantomnet_threshold_evicted_total",
        "phantomnet_threshold_first_dropped_total",
        "phantomnet_intel_entries",
        "phantomnet_store_backlog_rows",
        "phantomnet_store_write_failures_total",
    ] {
        assert!(m.types.contains_key(fam), "{fam} missing");
    }

    // The page, as served (the browser test looks at it rendered).
    let r = get(a, "/", Some(TOKEN));
    assert_eq!(r.status, 200);
    assert!(r
        .header("Content-Security-Policy")
        .unwrap()
        .contains("default-src 'none'"));
    let page = r.text();
    for needle in [
        "id=chart-verdicts",
        "id=chart-rate",
        "id=verdicts-latest",
        "id=hosts",
        "id=latency",
        "phantomnet.features.v1",
        "changed its MAC",
    ] {
        assert!(page.contains(needle), "page lacks {needle}");
    }
    assert!(!page.contains("src=http") && !page.contains("href=\"http"));

    // HEAD: the head with the body's length, no body.
    let mut st = TcpStream::connect(a).unwrap();
    st.write_all(
        format!("HEAD /api/status HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut buf = Vec::new();
    st.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(text.ends_with("\r\n\r\n"), "HEAD carried a body");
    assert!(!text.contains("Content-Length: 0\r\n"));

    // Bad requests, each naming what was wrong.
    let bad = |path: &str, name: &str| {
        let r = get(a, path, Some(TOKEN));
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(&format!("`{name}`")), "{path}: {e}");
    };
    bad("/api/verdicts?min=LOUD", "min");
    bad("/api/verdicts?since=yesterday", "since");
    bad("/api/verdicts?since=inf", "since");
    bad("/api/verdicts?limit=0", "limit");
    bad("/api/verdicts?limit=-1", "limit");
    bad("/api/verdicts?limit=ten", "limit");
    bad("/api/verdicts?limit=1&limit=2", "limit");
    bad("/api/verdicts?sid=1", "sid");
    bad("/api/alerts?sid=abc", "sid");
    bad("/api/alerts?min=HIGH", "min");
    bad("/api/hosts?limit=1.5", "limit");
    bad("/api/hosts?colour=red", "colour");
    bad("/api/db?x=1", "x");
    bad("/metrics?format=json", "format");
    bad("/api/status?verbose", "verbose");
    let r = get(a, "/api/nothing", Some(TOKEN));
    assert_eq!(r.status, 404);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = raw(
            a,
            format!("{method} /api/status HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}").as_bytes(),
        );
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    }
    let r = raw(a, b"GARBAGE\r\n\r\n");
    assert_eq!(r.status, 400);
    // A request head beyond the cap is refused, not buffered.
    let huge = format!(
        "GET /api/status HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let mut st = TcpStream::connect(a).unwrap();
    let _ = st.write_all(huge.as_bytes());
    let mut buf = Vec::new();
    let _ = st.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
}

type Labels = Vec<(String, String)>;

/// A strictly parsed Prometheus text exposition.
struct Metrics {
    types: BTreeMap<String, String>,
    samples: Vec<(String, Labels, f64)>,
}

impl Metrics {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let hits: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|s| s.2)
            .collect();
        assert_eq!(hits.len(), 1, "{name}{labels:?}: {hits:?}");
        hits[0]
    }
}

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => {
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)),
                "bad value {s:?}"
            );
            s.parse().unwrap_or_else(|_| panic!("bad value {s:?}"))
        }
    }
}

/// Parses `k="v",...}` (after the `{`); returns the labels and the text after the `}`.
fn parse_labels<'a>(s: &'a str, ctx: &str) -> (Labels, &'a str) {
    let b = s.as_bytes();
    let mut labels: Labels = Vec::new();
    let mut i = 0;
    if b.first() == Some(&b'}') {
        return (labels, &s[1..]);
    }
    loop {
        let start = i;
        while b.get(i).is_some_and(|&c| c != b'=') {
            i += 1;
        }
        let name = &s[start..i];
        assert!(
            valid_name(name) && !name.starts_with("__"),
            "label {name:?}: {ctx}"
        );
        assert!(!labels.iter().any(|(k, _)| k == name), "label twice: {ctx}");
        assert_eq!(b.get(i + 1), Some(&b'"'), "{ctx}");
        i += 2;
        let mut val = String::new();
        loop {
            match b.get(i) {
                Some(b'"') => {
                    i += 1;
                    break;
                }
                Some(b'\\') => {
                    val.push(match b.get(i + 1) {
                        Some(b'\\') => '\\',
                        Some(b'"') => '"',
                        Some(b'n') => '\n',
                        _ => panic!("bad label escape: {ctx}"),
                    });
                    i += 2;
                }
                Some(b'\n') | None => panic!("unterminated label value: {ctx}"),
                Some(_) => {
                    let c = s[i..].chars().next().unwrap();
                    val.push(c);
                    i += c.len_utf8();
                }
            }
        }
        labels.push((name.to_string(), val));
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return (labels, &s[i + 1..]),
            _ => panic!("{ctx}"),
        }
    }
}

/// Parses the text format (0.0.4) and fails on anything a strict reader would reject:
/// bad names, label syntax or escapes, values, HELP/TYPE after samples or twice, a family
/// split in two, duplicate series, and histograms whose buckets are not cumulative, do not
/// end in `+Inf`, or disagree with `_count`.
fn parse_prometheus(text: &str) -> Metrics {
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps = BTreeSet::new();
    let mut finished = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    let mut seen = BTreeSet::new();
    for (no, line) in text.lines().enumerate() {
        let ctx = format!("line {}: {line}", no + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kw = parts.next().unwrap();
            let name = parts.next().unwrap_or_else(|| panic!("{ctx}"));
            assert!(valid_name(name), "{ctx}");
            match kw {
                "HELP" => {
                    assert!(helps.insert(name.to_string()), "HELP twice: {ctx}");
                    let help = parts.next().unwrap_or("");
                    let mut chars = help.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' {
                            assert!(
                                matches!(chars.next(), Some('\\' | 'n')),
                                "bad escape: {ctx}"
                            );
                        }
                    }
                }
                "TYPE" => {
                    let t = parts.next().unwrap_or_else(|| panic!("{ctx}"));
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{ctx}"
                    );
                    assert!(
                        types.insert(name.to_string(), t.to_string()).is_none(),
                        "TYPE twice: {ctx}"
                    );
                }
                _ => {}
            }
            if let Some(c) = current.take() {
                if c != name {
                    finished.insert(c);
                }
            }
            assert!(!finished.contains(name), "family {name} split: {ctx}");
            current = Some(name.to_string());
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{ctx}");
        // name{labels} value
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => panic!("{ctx}"),
        };
        assert!(valid_name(name), "{ctx}");
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(r) => parse_labels(r, &ctx),
            None => (Vec::new(), rest),
        };
        let rest = rest.strip_prefix(' ').unwrap_or_else(|| panic!("{ctx}"));
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap());
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("bad timestamp: {ctx}"));
        }
        assert!(fields.next().is_none(), "{ctx}");
        // Which family does it belong to?
        let family = current
            .clone()
            .unwrap_or_else(|| panic!("sample before TYPE: {ctx}"));
        let kind = types.get(&family).map(String::as_str).unwrap_or("untyped");
        let ok = match kind {
            "histogram" => [
                format!("{family}_bucket"),
                format!("{family}_sum"),
                format!("{family}_count"),
            ]
            .contains(&name.to_string()),
            _ => name == family,
        };
        assert!(ok, "sample {name} outside its family {family}: {ctx}");
        if kind == "counter" {
            assert!(value >= 0.0, "negative counter: {ctx}");
        }
        let mut key = labels.clone();
        key.sort();
        assert!(
            seen.insert((name.to_string(), key)),
            "duplicate series: {ctx}"
        );
        samples.push((name.to_string(), labels, value));
    }
    // Histograms: per label set, `le` ascending, cumulative, ending in +Inf == _count.
    for (fam, t) in &types {
        if t != "histogram" {
            continue;
        }
        let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        for (n, l, v) in &samples {
            if *n == format!("{fam}_bucket") {
                let le = l
                    .iter()
                    .find(|(k, _)| k == "le")
                    .expect("bucket without le");
                let rest: Vec<_> = l.iter().filter(|(k, _)| k != "le").cloned().collect();
                groups
                    .entry(rest)
                    .or_default()
                    .push((parse_value(&le.1), *v));
            }
        }
        assert!(!groups.is_empty(), "{fam} has no buckets");
        for (labels, b) in groups {
            assert!(
                b.windows(2).all(|w| w[0].0 < w[1].0),
                "{fam}{labels:?}: le not ascending"
            );
            assert!(
                b.windows(2).all(|w| w[0].1 <= w[1].1),
                "{fam}{labels:?}: not cumulative"
            );
            let (le, inf) = *b.last().unwrap();
            assert!(le.is_infinite(), "{fam}{labels:?}: no +Inf bucket");
            let find = |suffix: &str| {
                samples
                    .iter()
                    .find(|(n, l, _)| {
                        *n == format!("{fam}{suffix}")
                            && l.iter().all(|kv| labels.contains(kv))
                            && l.len() == labels.len()
                    })
                    .unwrap_or_else(|| panic!("{fam}{labels:?}: no {suffix}"))
                    .2
            };
            assert_eq!(find("_count"), inf, "{fam}{labels:?}: +Inf != _count");
            assert!(find("_sum") >= 0.0);
        }
    }
    Metrics { types, samples }
}

#[test]
fn strict_prometheus_parser_rejects_what_it_should() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"\"} 1\n";
    assert_eq!(parse_prometheus(ok).value("a_total", &[("k", "v\"")]), 1.0);
    for bad in [
        "a_total 1",                                                      // no newline
        "# TYPE a counter\na{k=\"v} 1\n",                                 // open quote
        "# TYPE a counter\na{k=\"\\x\"} 1\n",                             // bad escape
        "# TYPE a counter\na 1\n# TYPE b gauge\nb 1\n# TYPE a counter\n", // TYPE twice
        "# TYPE a counter\na one\n",                                      // bad value
        "# TYPE a counter\na 1\na 2\n",                                   // duplicate
        "# TYPE 1a counter\n1a 1\n",                                      // bad name
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0\nh_count 1\n", // no +Inf
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 1\n", // count differs
    ] {
        let r = std::panic::catch_unwind(|| parse_prometheus(bad));
        assert!(r.is_err(), "accepted: {bad:?}");
    }
}

/// Headless Chromium, if installed.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|b| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {b}"))
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        })
}

fn chromium_run(bin: &Path, profile: &Path, extra: &[&str], url: &str) -> std::process::Output {
    let mut c = std::process::Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    c.output().unwrap()
}

#[test]
fn status_page_renders_in_a_real_browser() {
    let Some(chrome) = chromium() else {
        eprintln!("skipped: chromium not installed (apt-get install -y chromium)");
        return;
    };
    let dir = TempDir::new("serve-browser");
    let (pcap, n_frames) = demo_capture(&dir);
    let cfg = write_config(&dir, "");
    let db = dir.path("pn.db");
    let s = Served::start(&[&pcap], &cfg, &db);
    let _ = s.wait_done_open();
    let url = format!("http://{}/", s.addr);
    let out = chromium_run(
        &chrome,
        &dir.path("profile"),
        &["--dump-dom", "--virtual-time-budget=3000"],
        &url,
    );
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("<main id=\"main\">"),
        "no rendered page (stderr: {})",
        String::from_utf8_lossy(&out.stderr)
    );
    // What a person reads: the capture, the frame count, flagged hosts with plain-words
    // reasons, charts, the model, latency rows.
    let n = phantomnet::page::count(n_frames as u64);
    assert!(
        dom.contains(&format!("<span class=\"v\" id=\"frames\">{n}</span>")),
        "frames tile"
    );
    assert!(dom.contains("demo.pcap"));
    let verdicts = dom.matches("<article class=\"verdict\">").count();
    let stored = sql_i64(&db, "SELECT count(*) FROM verdicts");
    assert_eq!(verdicts as i64, stored.min(12));
    assert!(dom.contains("changed its MAC"));
    assert!(dom.contains("<svg id=\"chart-verdicts\""));
    assert!(dom.matches("<rect class=\"HIGH\"").count() >= 1);
    assert!(dom.contains("<svg id=\"chart-rate\""));
    assert!(dom.contains("phantomnet.features.v1"));
    for stage in [
        "decode",
        "state",
        "detect",
        "score",
        "correlate",
        "store",
        "frame_to_verdict",
    ] {
        assert!(dom.contains(&format!("data-stage=\"{stage}\"")), "{stage}");
    }
    let hosts = sql_i64(&db, "SELECT count(DISTINCT host) FROM verdicts");
    assert_eq!(
        dom.matches("<tr class=\"host\">").count() as i64,
        hosts.min(10)
    );
    // A phone-sized screenshot for people to look at.
    let shot = repo().join("target").join("serve-status-page.png");
    let out = chromium_run(
        &chrome,
        &dir.path("profile2"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=420,2400",
            "--virtual-time-budget=3000",
        ],
        &url,
    );
    let meta = std::fs::metadata(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(meta.len() > 10_000);
    eprintln!("screenshot: {}", shot.display());
}

impl Served {
    /// `wait_done` for a server without a token.
    fn wait_done_open(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = get(self.addr, "/api/status", None);
            if r.status == 200 && r.json()["capture_done"] == true {
                return r.json();
            }
            assert!(Instant::now() < deadline, "capture never finished");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Threads and resident memory of a process, from /proc.
fn proc_usage(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:"))
}

/// The demo capture given `copies` times: enough frames for a replay that lasts a while.
fn long_replay(dir: &TempDir, copies: usize) -> (Vec<PathBuf>, PathBuf) {
    let (pcap, _) = demo_capture(dir);
    (vec![pcap; copies], write_config(dir, TOKEN))
}

fn replay_rate(pcaps: &[PathBuf], cfg: &Path, db: &Path, during: impl FnOnce(&Served)) -> f64 {
    replay_rate_and_loop_time(pcaps, cfg, db, during).0
}

/// Replays with `during` run once the server is up; returns frames/s and, from /metrics
/// afterwards, the wall time the loop spent answering HTTP (s) and in how many ticks.
fn replay_rate_and_loop_time(
    pcaps: &[PathBuf],
    cfg: &Path,
    db: &Path,
    during: impl FnOnce(&Served),
) -> (f64, f64, f64) {
    let _ = std::fs::remove_file(db);
    let refs: Vec<&Path> = pcaps.iter().map(PathBuf::as_path).collect();
    let mut s = Served::start(&refs, cfg, db);
    during(&s);
    let rate = s.replay_rate();
    std::thread::sleep(Duration::from_millis(1100)); // past the rendered-page cache
    let m = parse_prometheus(&get(s.addr, "/metrics", Some(TOKEN)).text());
    (
        rate,
        m.value("phantomnet_http_loop_seconds_sum", &[]),
        m.value("phantomnet_http_loop_seconds_count", &[]),
    )
}

#[test]
fn hostile_clients_do_not_slow_the_loop_and_stay_bounded() {
    let dir = TempDir::new("serve-hostile");
    let (pcaps, cfg) = long_replay(&dir, 150);
    let db = dir.path("pn.db");
    // Size the replay to last about two seconds on this machine, so the clients below
    // overlap it whatever the build's speed.
    let rate = replay_rate(&pcaps, &cfg, &db, |_| {});
    let copies = ((rate * 2.0 / 2186.0) as usize).clamp(150, 3000);
    let pcaps = vec![pcaps[0].clone(); copies];

    // Three conditions, interleaved twice (best of each). The replay rates are printed, not
    // asserted: on this shared VM the best of five of one condition fell 43% below another's
    // with the loop's own HTTP time at 0.05 ms, and alone they swing ±40% either way. What
    // the clients cost the loop is its own time answering HTTP, asserted below.
    let mut peak_threads = 0;
    let mut peak_rss = 0;
    let mut base_rss = 0;
    let mut results: Vec<(String, Option<&str>, u16)> = Vec::new();
    let (mut base, mut slow, mut flood) = (0.0f64, 0.0f64, 0.0f64);
    let (mut loop_time, mut loop_ticks, mut slow_loop) = (0.0f64, 0.0f64, 0.0f64);
    for _ in 0..2 {
        // No clients.
        base = base.max(replay_rate(&pcaps, &cfg, &db, |_| {}));
        // A client that sends its request one byte per second, and one that asks for the
        // database and reads it one byte per second.
        let (rate, slow_loop_s, _) = replay_rate_and_loop_time(&pcaps, &cfg, &db, |s| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let Ok(mut c) = TcpStream::connect(addr) else {
                    return;
                };
                for b in b"GET /api/status HTTP/1.1\r\n\r\n" {
                    if c.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
            std::thread::spawn(move || {
                let Ok(mut c) = TcpStream::connect(addr) else {
                    return;
                };
                let req = format!("GET /api/db HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
                if c.write_all(req.as_bytes()).is_err() {
                    return;
                }
                let mut b = [0u8; 1];
                while let Ok(1) = c.read(&mut b) {
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        });
        slow = slow.max(rate);
        slow_loop = slow_loop.max(slow_loop_s);
        // 200 connections at once: 20 slowloris clients that never finish their request,
        // and 180 asking for every endpoint without a token, with a wrong one, or with the
        // right one.
        results.clear();
        let (rate, loop_s, ticks) = replay_rate_and_loop_time(&pcaps, &cfg, &db, |s| {
            let (_, rss0) = proc_usage(s.pid());
            base_rss = rss0;
            let addr = s.addr;
            let mut idle = Vec::new();
            for _ in 0..20 {
                if let Ok(mut c) = TcpStream::connect(addr) {
                    let _ = c.write_all(b"GET /api/status HTTP/1.1\r\nX-A: ");
                    idle.push(c);
                }
            }
            let (tx, rx) = mpsc::channel();
            let paths = [
                "/",
                "/api/status",
                "/api/verdicts",
                "/api/alerts",
                "/api/hosts",
                "/metrics",
            ];
            let mut handles = Vec::new();
            for i in 0..180 {
                let tx = tx.clone();
                let path = paths[i % paths.len()].to_string();
                let tok: Option<&'static str> = match i % 3 {
                    0 => None,
                    1 => Some("wrong"),
                    _ => Some(TOKEN),
                };
                handles.push(std::thread::spawn(move || {
                    let auth = tok
                        .map(|t| format!("Authorization: Bearer {t}\r\n"))
                        .unwrap_or_default();
                    let req = format!("GET {path} HTTP/1.1\r\n{auth}\r\n");
                    let Ok(mut c) = TcpStream::connect(addr) else {
                        return;
                    };
                    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                    if c.write_all(req.as_bytes()).is_err() {
                        return;
                    }
                    let mut buf = Vec::new();
                    let _ = c.read_to_end(&mut buf);
                    if buf.is_empty() {
                        return;
                    }
                    let _ = tx.send((path, tok, parse_response(&buf).status));
                }));
            }
            drop(tx);
            for _ in 0..20 {
                let (t, rss) = proc_usage(s.pid());
                peak_threads = peak_threads.max(t);
                peak_rss = peak_rss.max(rss);
                std::thread::sleep(Duration::from_millis(25));
            }
            for h in handles {
                let _ = h.join();
            }
            results = rx.iter().collect();
            drop(idle);
        });
        flood = flood.max(rate);
        loop_time = loop_time.max(loop_s);
        loop_ticks = loop_ticks.max(ticks);
    }

    eprintln!(
        "replay frames/s: baseline {base:.0}, with 1-byte/s clients {slow:.0} ({:+.1}%), \
         with 200 connections {flood:.0} ({:+.1}%); peak threads {peak_threads}, \
         RSS {base_rss} → {peak_rss} kB",
        (slow / base - 1.0) * 100.0,
        (flood / base - 1.0) * 100.0
    );
    eprintln!(
        "the loop spent {:.2} ms answering HTTP with the slow clients, {:.1} ms in \
         {loop_ticks} ticks with the flood ({copies} copies of the demo capture per replay)",
        slow_loop * 1e3,
        loop_time * 1e3
    );
    assert!(slow_loop < 0.05, "slow clients cost the loop {slow_loop} s");
    // Generous bounds: the machine is shared; the figures above are the measurement.
    assert!(loop_time < 0.5, "the loop spent {loop_time} s on HTTP");
    // main, the HTTP I/O thread, the database writer and its checkpoint thread (+ a snapshot
    // thread at most): bounded whatever the 200 clients do.
    assert!(peak_threads <= 5, "threads: {peak_threads}");
    assert!(
        peak_rss < base_rss + 64 * 1024,
        "RSS grew from {base_rss} to {peak_rss} kB"
    );
    assert_eq!(results.len(), 180);
    for (path, tok, status) in &results {
        match tok {
            // Answered, or told to retry if more than MAX_INFLIGHT waited for the loop.
            Some(t) if *t == TOKEN => assert!(
                [200, 503].contains(status),
                "{path} with the token: {status}"
            ),
            _ => assert_eq!(*status, 401, "{path} with {tok:?}"),
        }
    }
    let ok = results.iter().filter(|r| r.2 == 200).count();
    let unauthorized = results.iter().filter(|r| r.2 == 401).count();
    eprintln!(
        "flood: {} answered: {ok} × 200, {unauthorized} × 401, {} × 503",
        results.len(),
        results.len() - ok - unauthorized
    );
}

/// CPU time this thread has run, in ns (Linux schedstat): unlike wall time, it does not
/// count the time other processes on a shared machine take the CPU away.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// What the latency timing costs: the engine over the shared benchmark capture with timing
/// on and off, alternating, best of four each (thread CPU time) after a warm-up run, plus
/// a bound from first principles (clock reads made × the cost of one). A measurement, so
/// it is ignored by default: `bash ../shared/bench/make-bench-pcap.sh /tmp/bench.pcap`,
/// then `PHANTOMNET_BENCH_PCAP=/tmp/bench.pcap cargo test --release --test tests
/// instrumentation_overhead -- --ignored --nocapture`.
#[test]
#[ignore = "measurement on the benchmark capture (PHANTOMNET_BENCH_PCAP); run with --release"]
fn instrumentation_overhead_is_under_five_percent() {
    use phantomnet::capture::{self, Next};
    use phantomnet::runtime;
    let Some(pcap) = std::env::var_os("PHANTOMNET_BENCH_PCAP").map(PathBuf::from) else {
        eprintln!("skipped: PHANTOMNET_BENCH_PCAP is not set");
        return;
    };
    let cfg = phantomnet::config::Config::load(&repo().join("config/phantomnet.toml")).unwrap();
    // (CPU s, wall s, frames, histogram records)
    let run = |timing: bool| -> (f64, f64, u64, u64) {
        let det = runtime::load_detectors(&cfg).unwrap();
        let mut e = runtime::build_engine(&cfg, det, false);
        e.stats.timing_disabled = !timing;
        let mut src = capture::open_file(&pcap).unwrap();
        let t = Instant::now();
        let c = thread_cpu_ns();
        loop {
            match src.next_frame().unwrap() {
                Next::Frame(f) => e.process_frame(f.ts, f.link, f.data, f.wire_len),
                Next::Idle(now) => e.tick(now),
                Next::End => break,
            }
            if e.outbox.pressing() {
                e.outbox.clear();
            }
        }
        e.finish_second();
        let cpu = (thread_cpu_ns() - c) as f64 / 1e9;
        let wall = t.elapsed().as_secs_f64();
        let records: u64 = e.stats.latency.iter().map(|h| h.count).sum();
        (cpu, wall, e.stats.frames, records)
    };
    run(true); // warm the page cache and the allocator
    let (mut on, mut off, mut on_wall, mut off_wall) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    let (mut frames, mut records) = (0, 0);
    for round in 0..4 {
        // Alternate which goes first, so drift in the machine's load favours neither.
        let (a, b) = if round % 2 == 0 {
            let off = run(false);
            (off, run(true))
        } else {
            let on = run(true);
            (run(false), on)
        };
        assert_eq!(a.3, 0, "timing off still recorded");
        assert!(b.3 >= b.2 / 64, "timing on recorded only {}", b.3);
        eprintln!(
            "round {round}: off {:.3} s CPU ({:.3} s wall), on {:.3} s CPU ({:.3} s wall)",
            a.0, a.1, b.0, b.1
        );
        (frames, records) = (b.2, b.3);
        off = off.min(a.0);
        on = on.min(b.0);
        off_wall = off_wall.min(a.1);
        on_wall = on_wall.min(b.1);
    }
    // The bound: every record reads the clock at most twice more than it would without
    // timing (frame_to_verdict once per second, score once per host-window at most).
    let n = 2_000_000u32;
    let t = Instant::now();
    let mut x = t;
    for _ in 0..n {
        x = std::hint::black_box(Instant::now());
    }
    let clock_ns = (x - t).as_nanos() as f64 / f64::from(n);
    let bound = records as f64 * 2.0 * clock_ns / 1e9 / off * 100.0;
    let overhead = (on / off - 1.0) * 100.0;
    eprintln!(
        "instrumentation overhead: {overhead:+.2}% CPU ({:+.2}% wall) over {frames} frames \
         ({:.0} frames/s off, {:.0} on); clock reads bound it at {bound:.2}% \
         ({records} records, {clock_ns:.1} ns per clock read)",
        (on_wall / off_wall - 1.0) * 100.0,
        frames as f64 / off,
        frames as f64 / on,
    );
    assert!(bound < 5.0, "clock reads alone cost {bound:.2}%");
    assert!(overhead < 5.0, "timing costs {overhead:.2}% CPU");
}

#[test]
fn status_page_shows_learning_progress() {
    let dir = TempDir::new("serve-learning");
    let (pcap, _) = demo_capture(&dir);
    let root = repo();
    let cfg = dir.path("learn.toml");
    std::fs::write(
        &cfg,
        format!(
            "[http]\ntoken = \"{TOKEN}\"\n[detection]\nrules = [\"{}\"]\nmodel = \"\"\n\
             [learning]\nenabled = true\nduration = 3600\n",
            root.join("rules/phantomnet.rules").display()
        ),
    )
    .unwrap();
    let db = dir.path("pn.db");
    let s = Served::start(&[&pcap], &cfg, &db);
    let status = s.wait_done();
    let p = &status["learning"]["progress"];
    assert_eq!(p["state"], "learning", "{status}");
    let progress = p["progress"].as_f64().unwrap();
    // The demo capture spans about a minute of the hour to learn.
    assert!((0.01..0.02).contains(&progress), "{progress}");
    let stored = sql_i64(&db, "SELECT count(*) FROM feature_samples");
    assert!(stored > 0);
    assert_eq!(status["learning"]["samples_stored"], stored);
    std::thread::sleep(Duration::from_millis(1100)); // past the rendered-page cache
    let page = get(s.addr, "/", Some(TOKEN)).text();
    let want = format!(
        "{:.0}% ({} of 1 h), {} feature samples stored",
        progress * 100.0,
        phantomnet::page::duration(p["elapsed"].as_f64().unwrap()),
        phantomnet::page::count(stored as u64)
    );
    assert!(page.contains("learning this network"), "{page}");
    let shown = page
        .split("id=learning>")
        .nth(1)
        .unwrap_or("")
        .split("</dd>")
        .next();
    assert!(page.contains(&want), "page shows {shown:?}, not {want:?}");
}
