//! Hardening: hostile and broken input through the real entry points — captures cut at
//! every byte, unknown link types, bad configs, rules and models, a million-frame spoofed
//! flood, odd frames, kill -9 during heavy writing, and a full disk under the database.

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use phantomnet::capture::pcap::PcapWriter;
use phantomnet::runtime::{self, Detectors, ReplayPlan};

use crate::util::frames::{self, eth_ipv4_udp};
use crate::util::scenario::{self, mac, Capture, Rng, SEC, T0};
use crate::util::{bin, repo, TempDir};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A scratch directory on tmpfs when there is one (many SQLite files are opened and
/// fsynced here), else the system temp dir.
fn fast_dir(name: &str) -> TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let p = shm.join(format!("phantomnet-hard-{}-{}", name, std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    } else {
        TempDir::new(name)
    }
}

/// The documented default config with absolute paths to the shipped rules and model, the
/// database in `dir`, and `overrides` (`"section.key"`, raw TOML value) applied line by line.
pub fn write_config(dir: &Path, name: &str, overrides: &[(&str, &str)]) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("config/phantomnet.toml")).unwrap();
    let rules = repo().join("rules/phantomnet.rules");
    let model = repo().join("models/default.json");
    let mut used = vec![false; overrides.len()];
    let mut section = String::new();
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.trim_matches(|c| c == '[' || c == ']').to_string();
        }
        let key = t.split('=').next().unwrap_or("").trim();
        let full = format!("{section}.{key}");
        if let Some(i) = overrides.iter().position(|(k, _)| *k == full) {
            out.push_str(&format!("{key} = {}\n", overrides[i].1));
            used[i] = true;
            continue;
        }
        let line = line
            .replace("\"../rules/phantomnet.rules\"", &format!("{:?}", rules))
            .replace("\"../models/default.json\"", &format!("{:?}", model))
            .replace("\"../phantomnet.db\"", &format!("{:?}", dir.join("pn.db")))
            .replace("\"../rules/", &format!("\"{}/rules/", repo().display()));
        out.push_str(&line);
        out.push('\n');
    }
    for (i, (k, v)) in overrides.iter().enumerate() {
        assert!(
            used[i],
            "override {k} = {v} matches no line of the default config"
        );
    }
    let p = dir.join(name);
    std::fs::write(&p, out).unwrap();
    p
}

fn count(db: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Rows in `flows`, 0 while the database or table does not exist yet.
/// Flows committed to `db` (0 before it exists), counted from the chunk headers: counting
/// through the `flows` view unpacks every chunk, seconds for millions of flows.
fn count_or_zero(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .and_then(|c| {
            c.query_row("SELECT coalesce(sum(n), 0) FROM flow_chunks", [], |r| {
                r.get(0)
            })
        })
        .unwrap_or(0)
}

fn integrity(db: &Path) -> String {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_no_panic(what: &str, out: &std::process::Output) {
    let err = stderr_of(out);
    assert!(
        !err.contains("panicked") && out.status.code().is_some() && out.status.code() != Some(101),
        "{what}: phantomnet crashed ({}): {err}",
        out.status
    );
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tiny blocking HTTP GET; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // tiny_http may answer chunked; the JSON/HTML we look for survives the chunk headers
    // except where a chunk boundary splits it, which small bodies never do.
    Ok((status, body.to_string()))
}

/// Extracts the JSON object of a (possibly chunked) HTTP body.
pub fn json_body(body: &str) -> serde_json::Value {
    let start = body.find(['{', '[']).unwrap_or(0);
    let end = body.rfind(['}', ']']).map_or(body.len(), |e| e + 1);
    serde_json::from_str(&body[start..end]).unwrap_or_else(|e| panic!("bad JSON {body}: {e}"))
}

/// Sends SIGTERM (the `kill` utility; no unsafe FFI in tests).
fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------
// Bad input: truncated captures
// ---------------------------------------------------------------------------------------

/// `n` one-frame UDP flows (distinct source ports) of varying length, and where each
/// record starts in the pcap file.
fn one_frame_flows(n: u16) -> (Vec<u8>, Vec<usize>) {
    let mut owned = Vec::new();
    for i in 0..n {
        let payload = vec![b'x'; usize::from(i % 37) * 3];
        owned.push((
            T0 + i64::from(i) * 1000,
            eth_ipv4_udp(
                mac(1),
                mac(2),
                [192, 168, 1, 10],
                [192, 168, 1, 20],
                10_000 + i,
                9999,
                &payload,
            ),
        ));
    }
    let borrowed: Vec<(i64, &[u8])> = owned.iter().map(|(t, f)| (*t, f.as_slice())).collect();
    let bytes = frames::pcap_file(1, &borrowed);
    let mut starts = vec![24usize];
    for (_, f) in &owned {
        let next = starts.last().unwrap() + 16 + f.len();
        starts.push(next);
    }
    assert_eq!(*starts.last().unwrap(), bytes.len());
    (bytes, starts)
}

/// What a capture cut to `cut` bytes must give: the complete records before the cut, and
/// the byte offset the error must name (None when the cut falls on a record boundary).
fn expect_cut(starts: &[usize], cut: usize) -> (usize, Option<usize>) {
    if cut < 24 {
        return (0, Some(0));
    }
    let complete = starts.iter().skip(1).filter(|&&e| e <= cut).count();
    if starts.contains(&cut) {
        (complete, None)
    } else {
        (complete, Some(starts[complete]))
    }
}

#[test]
fn capture_cut_at_every_byte_of_its_first_kib_keeps_what_was_read() {
    let dir = fast_dir("cut-every");
    let (bytes, starts) = one_frame_flows(120);
    assert!(bytes.len() > 4096);
    let cfg = phantomnet::config::Config::load(&repo().join("config/phantomnet.toml")).unwrap();
    let mut rng = Rng(0x00ff_50e7);
    let mut cuts: Vec<usize> = (0..=1024).collect();
    cuts.extend((0..64).map(|_| 1025 + rng.below((bytes.len() - 1025) as u64) as usize));
    let pcap = dir.path("cut.pcap");
    for cut in cuts {
        std::fs::write(&pcap, &bytes[..cut]).unwrap();
        let db = dir.path(&format!("cut-{cut}.db"));
        let plan = ReplayPlan {
            pcaps: vec![pcap.clone()],
            db: Some(db.clone()),
            eve: None,
            serve: None,
        };
        let det = Detectors {
            rules: None,
            intel: None,
            model: None,
        };
        let result = runtime::replay(cfg.clone(), det, &plan);
        let (complete, err_at) = expect_cut(&starts, cut);
        match (result, err_at) {
            (Ok(_), None) => {}
            (Err(e), Some(at)) => {
                let msg = e.to_string();
                assert!(msg.contains("cut.pcap"), "cut {cut}: {msg}");
                assert!(msg.contains(&format!("byte {at}")), "cut {cut}: {msg}");
            }
            (Ok(_), Some(at)) => {
                panic!("cut {cut}: replay succeeded, expected an error at byte {at}")
            }
            (Err(e), None) => panic!("cut {cut} falls on a record boundary, yet: {e}"),
        }
        // Every complete record before the cut is one finished flow, stored.
        let stored = if db.exists() {
            count(&db, "SELECT count(*) FROM flows")
        } else {
            0
        };
        assert_eq!(stored, complete as i64, "cut at byte {cut}");
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
        }
    }
}

#[test]
fn replay_binary_names_file_and_offset_of_a_cut_capture() {
    let dir = fast_dir("cut-bin");
    let (bytes, starts) = one_frame_flows(60);
    let mut rng = Rng(99);
    let mut cuts: Vec<usize> = vec![0, 1, 3, 4, 23, 24, 25, 39, 40, starts[1], starts[1] + 1];
    cuts.extend((0..1024).step_by(131));
    cuts.extend((0..6).map(|_| 1024 + rng.below((bytes.len() - 1024) as u64) as usize));
    for cut in cuts {
        let pcap = dir.path(&format!("c{cut}.pcap"));
        std::fs::write(&pcap, &bytes[..cut]).unwrap();
        let db = dir.path(&format!("c{cut}.db"));
        let out = bin()
            .args(["--log", "warn", "replay"])
            .arg(&pcap)
            .args(["--no-model", "-c", "config/phantomnet.toml", "--db"])
            .arg(&db)
            .output()
            .unwrap();
        assert_no_panic(&format!("cut {cut}"), &out);
        let (complete, err_at) = expect_cut(&starts, cut);
        let err = stderr_of(&out);
        match err_at {
            None => assert!(out.status.success(), "cut {cut}: {err}"),
            Some(at) => {
                assert_eq!(out.status.code(), Some(2), "cut {cut}: {err}");
                assert!(err.contains(&format!("c{cut}.pcap")), "{err}");
                assert!(err.contains(&format!("byte {at}")), "cut {cut}: {err}");
            }
        }
        if cut >= 24 {
            assert_eq!(count(&db, "SELECT count(*) FROM flows"), complete as i64);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bad input: link types, configs, rules, models
// ---------------------------------------------------------------------------------------

/// A minimal little-endian pcapng: section header, one interface of `linktype`, one
/// enhanced packet block holding `frame`.
fn pcapng_one(linktype: u16, frame: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let block = |v: &mut Vec<u8>, ty: u32, body: &[u8]| {
        let len = 12 + body.len().div_ceil(4) * 4;
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(&(len as u32).to_le_bytes());
        v.extend_from_slice(body);
        v.resize(v.len() + (len - 12 - body.len()), 0);
        v.extend_from_slice(&(len as u32).to_le_bytes());
    };
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    block(&mut v, 0x0a0d_0d0a, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&linktype.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&65535u32.to_le_bytes());
    block(&mut v, 1, &idb);
    let mut epb = Vec::new();
    epb.extend_from_slice(&0u32.to_le_bytes());
    epb.extend_from_slice(&0u32.to_le_bytes());
    epb.extend_from_slice(&0u32.to_le_bytes());
    epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    epb.extend_from_slice(frame);
    block(&mut v, 6, &epb);
    v
}

#[test]
fn unknown_link_types_are_clear_errors_naming_them() {
    let dir = fast_dir("linktype");
    let frame = eth_ipv4_udp(mac(1), mac(2), [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"x");
    let cases: Vec<(String, Vec<u8>, &str, &str)> = vec![
        (
            "wifi.pcap".into(),
            frames::pcap_file(105, &[(T0, &frame)]),
            "105",
            "IEEE 802.11",
        ),
        (
            "user.pcap".into(),
            frames::pcap_file(147, &[(T0, &frame)]),
            "147",
            "DLT_USER",
        ),
        (
            "odd.pcap".into(),
            frames::pcap_file(60_000, &[(T0, &frame)]),
            "60000",
            "unknown",
        ),
        (
            "radiotap.pcapng".into(),
            pcapng_one(127, &frame),
            "127",
            "radiotap",
        ),
    ];
    for (name, bytes, number, label) in cases {
        let p = dir.path(&name);
        std::fs::write(&p, bytes).unwrap();
        let out = bin()
            .args(["--log", "warn", "replay"])
            .arg(&p)
            .args(["--no-model", "-c", "config/phantomnet.toml", "--db"])
            .arg(dir.path("l.db"))
            .output()
            .unwrap();
        assert_no_panic(&name, &out);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        for want in [name.as_str(), number, label, "byte", "supported"] {
            assert!(err.contains(want), "{name}: `{want}` missing from: {err}");
        }
    }
}

fn check(config: &Path) -> std::process::Output {
    let out = bin()
        .args(["--log", "warn", "check", "-c"])
        .arg(config)
        .output()
        .unwrap();
    assert_no_panic(&config.display().to_string(), &out);
    out
}

#[test]
fn config_unknown_keys_name_the_key_and_suggest_the_nearest() {
    let dir = fast_dir("cfg-unknown");
    let cases = [
        ("[tables]\nflow = 100\n", "flow", "flows", 2),
        (
            "[capture]\nread_timeout = 100\n",
            "read_timeout",
            "read_timeout_ms",
            2,
        ),
        ("[detection]\nrule = []\n", "rule", "rules", 2),
        ("[http]\nenabled = true\ntokn = \"x\"\n", "tokn", "token", 3),
        (
            "[verdict]\nwarning_risks = 10\n",
            "warning_risks",
            "warning_risk",
            2,
        ),
        ("[tabels]\nflows = 100\n", "tabels", "tables", 1),
    ];
    for (i, (text, bad, nearest, line)) in cases.iter().enumerate() {
        let p = dir.path(&format!("u{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let out = check(&p);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(&format!("u{i}.toml")), "{err}");
        assert!(err.contains(&format!("`{bad}`")), "{text}: {err}");
        assert!(
            err.contains(&format!("did you mean `{nearest}`")),
            "{text}: no suggestion of `{nearest}`: {err}"
        );
        assert!(err.contains(&format!("line {line}")), "{text}: {err}");
    }
}

#[test]
fn config_bad_values_name_the_key_and_what_was_expected() {
    let dir = fast_dir("cfg-bad");
    let cases: [(&str, &str, &str, &str); 13] = [
        ("tables.flows", "3", "tables.flows", "16 ..= 4194304"),
        ("tables.hosts", "99999999", "tables.hosts", "16 ..= 1048576"),
        ("tables.outbox", "1", "tables.outbox", "64 ..= 1048576"),
        ("tables.tracked", "0", "tables.tracked", "16 ..= 1048576"),
        ("timeouts.udp", "0", "timeouts.udp", "1 ..= 86400"),
        (
            "capture.read_timeout_ms",
            "0",
            "capture.read_timeout_ms",
            "1 ..= 5000",
        ),
        ("http.bind", "\"localhost\"", "http.bind", "address:port"),
        (
            "verdict.high_risk",
            "10",
            "verdict.warning_risk",
            "warning_risk < high_risk",
        ),
        (
            "verdict.range_factor",
            "0.5",
            "verdict.range_factor",
            ">= 1.0",
        ),
        ("learning.trees", "0", "learning.trees", "1 ..= 1000"),
        ("learning.samples", "1", "learning.samples", "2 ..= 65536"),
        // Wrong TOML types are caught by the parser; the message names line and type.
        (
            "tables.flows",
            "\"many\"",
            "line 22: key `tables.flows`",
            "invalid type",
        ),
        (
            "capture.promiscuous",
            "\"yes\"",
            "line 10: key `capture.promiscuous`",
            "expected a boolean",
        ),
    ];
    for (i, (key, value, names, expected)) in cases.iter().enumerate() {
        let p = write_config(dir.0.as_path(), &format!("b{i}.toml"), &[(key, value)]);
        let out = check(&p);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{key} = {value}: {err}");
        assert!(err.contains(&format!("b{i}.toml")), "{err}");
        assert!(
            err.contains(names),
            "{key} = {value}: `{names}` missing: {err}"
        );
        assert!(
            err.contains(expected),
            "{key} = {value}: `{expected}` missing: {err}"
        );
    }
    // And the untouched default passes.
    let ok = write_config(dir.0.as_path(), "ok.toml", &[]);
    let out = check(&ok);
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn rule_files_with_broken_lines_skip_each_named_by_file_and_line() {
    let dir = fast_dir("rules-broken");
    let good = "alert tcp any any -> any 80 (msg:\"good\"; content:\"GET\"; sid:1; rev:1;)";
    // One broken line of each kind, each on a line of its own.
    let broken = [
        "alert tcp any any -> any 80 (msg:\"no sid\"; content:\"x\";)",
        "alert tcp any any -> any 80 msg:\"no parens\"; sid:2;",
        "alert tcp any any -> any 80 (msg:\"unterminated; sid:3;)",
        "alert foo any any -> any 80 (msg:\"bad proto\"; sid:4;)",
        "alert tcp any any <> (msg:\"missing ports\"; sid:5;)",
        "alert tcp 999.1.1.1 any -> any 80 (msg:\"bad address\"; sid:6;)",
        "alert tcp any 70000 -> any 80 (msg:\"bad port\"; sid:7;)",
        "alert tcp any any -> any 80 (msg:\"unknown var\"; sid:8;) ",
        "alert tcp $NOPE any -> any 80 (msg:\"undefined variable\"; sid:9;)",
        "alert tcp any any -> any 80 (msg:\"bad content\"; content:\"|zz|\"; sid:10;)",
        "alert tcp any any -> any 80 (msg:\"bad pcre\"; pcre:\"/(/\"; sid:11;)",
        "alert tcp any any -> any 80 (msg:\"bad flags\"; flags:Q; sid:12;)",
        "alert tcp any any -> any 80 (msg:\"unknown keyword\"; frobnicate:3; sid:13;)",
        "alert tcp any any -> any 80 (msg:\"bad sid\"; sid:abc;)",
        "banana tcp any any -> any 80 (msg:\"bad action\"; sid:14;)",
        "alert tcp any any -> any 80 (msg:\"dup\"; content:\"GET\"; sid:1; rev:1;)",
        "alert",
        "\u{0}\u{1}\u{fffd} garbage",
    ];
    let mut text = format!("# comment line\n\n{good}\n");
    let first = 4; // line number of broken[0]
    for b in broken {
        text.push_str(b);
        text.push('\n');
    }
    text.push_str("alert udp any any -> any 53 (msg:\"good too\"; sid:100; rev:1;)\n");
    let rules = dir.path("broken.rules");
    std::fs::write(&rules, &text).unwrap();
    let cfg = write_config(
        dir.0.as_path(),
        "r.toml",
        &[("detection.rules", &format!("[{:?}]", rules))],
    );
    let out = check(&cfg);
    let err = stderr_of(&out);
    assert!(
        out.status.success(),
        "broken rules are skipped, not fatal: {err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Some broken lines are not errors in every engine (the trailing space of line 11, the
    // duplicate sid); what must hold: every line reported is one of ours, named by line,
    // and the good rules load.
    let mut named = 0;
    for (i, b) in broken.iter().enumerate() {
        let line = first + i;
        let tag = format!("broken.rules:{line}:");
        if err.contains(&tag) {
            named += 1;
        } else {
            eprintln!("line {line} accepted: {b}");
        }
    }
    assert!(
        named >= broken.len() - 3,
        "only {named} broken lines reported: {err}"
    );
    let loaded: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("rules: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rule count in: {stdout}"));
    assert_eq!(loaded + named, broken.len() + 2, "{stdout}\n{err}");
    // Nothing reported for the comment, the blank line or the good rules.
    for line in [1, 2, 3, first + broken.len()] {
        assert!(!err.contains(&format!("broken.rules:{line}:")), "{err}");
    }
}

#[test]
fn every_model_validation_error_is_named_by_check() {
    use serde_json::{json, Value};
    let dir = fast_dir("model-bad");
    let base: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("models/default.json")).unwrap())
            .unwrap();
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "format",
            Box::new(|m| m["format"] = json!("phantomnet.iforest.v0")),
            "`format` is `phantomnet.iforest.v0`",
        ),
        (
            "schema",
            Box::new(|m| {
                m["schema"]["name"] = json!("phantomnet.features.v0");
                m["schema"]["hash"] = json!("0000");
            }),
            "phantomnet.features.v0",
        ),
        (
            "feature-count",
            Box::new(|m| {
                m["schema"]["features"].as_array_mut().unwrap().pop();
            }),
            "`schema.features`",
        ),
        (
            "feature-name",
            Box::new(|m| m["schema"]["features"][3] = json!("dst_hostz")),
            "dst_hostz",
        ),
        (
            "max-samples",
            Box::new(|m| m["max_samples"] = json!(1)),
            "`max_samples` is 1",
        ),
        (
            "c-psi",
            Box::new(|m| m["c_psi"] = json!(3.5)),
            "`c_psi` is 3.5",
        ),
        (
            "n-trees",
            Box::new(|m| m["n_trees"] = json!(99)),
            "`n_trees` is 99",
        ),
        (
            "array-length",
            Box::new(|m| {
                m["trees"][2]["threshold"].as_array_mut().unwrap().pop();
            }),
            "tree 2: `threshold` has",
        ),
        (
            "empty-tree",
            Box::new(|m| {
                for k in ["feature", "threshold", "left", "right", "n_samples"] {
                    m["trees"][1][k] = json!([]);
                }
            }),
            "tree 1 has no nodes",
        ),
        (
            "child-range",
            Box::new(|m| m["trees"][0]["left"][0] = json!(1_000_000)),
            "child 1000000 is out of range",
        ),
        (
            "cycle",
            Box::new(|m| m["trees"][0]["left"][1] = json!(0)),
            "tree 0 node 0 is reached twice",
        ),
        (
            "feature-index",
            Box::new(|m| m["trees"][0]["feature"][0] = json!(15)),
            "feature index 15 is out of range",
        ),
        (
            "leaf-root",
            Box::new(|m| {
                m["trees"][0]["feature"][0] = json!(-1);
                m["trees"][0]["left"][0] = json!(-1);
                m["trees"][0]["right"][0] = json!(-1);
            }),
            "tree 0 node 1",
        ),
        (
            "n-samples",
            Box::new(|m| m["trees"][0]["n_samples"][0] = json!(7)),
            "`n_samples` is 7",
        ),
        (
            "calibration-order",
            Box::new(|m| m["calibration"]["score"]["p99"] = json!(0.99)),
            "`calibration.",
        ),
        (
            "calibration-features",
            Box::new(|m| {
                m["calibration"]["features"]["max"]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }),
            "`calibration.",
        ),
        (
            "not-json",
            Box::new(|m| *m = json!("truncated")),
            "not a valid model file",
        ),
    ];
    for (name, mutate, want) in cases {
        let mut m = base.clone();
        mutate(&mut m);
        let path = dir.path(&format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string(&m).unwrap()).unwrap();
        let cfg = write_config(
            dir.0.as_path(),
            &format!("{name}.toml"),
            &[("detection.model", &format!("{:?}", path))],
        );
        let out = check(&cfg);
        let err = stderr_of(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: check accepted a bad model: {err}"
        );
        assert!(
            err.contains(&format!("{name}.json")),
            "{name}: file not named: {err}"
        );
        assert!(err.contains(want), "{name}: `{want}` missing from: {err}");
    }
    // A model file cut in the middle is a JSON error with its line and column.
    let text = serde_json::to_string(&base).unwrap();
    let path = dir.path("cut.json");
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    let cfg = write_config(
        dir.0.as_path(),
        "cut.toml",
        &[("detection.model", &format!("{:?}", path))],
    );
    let out = check(&cfg);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cut.json") && err.contains("column"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Hostile traffic
// ---------------------------------------------------------------------------------------

/// Memory the configured capacities imply for the default config, in bytes: the flow and
/// host tables (every per-slot array of `LruTable`, index included), the outbox and the
/// retry batch at their bounds, and a fixed allowance for code, SQLite's page cache, the
/// rules, the model, capture buffers and the HTTP threads.
pub struct MemoryBound {
    pub flows: u64,
    pub hosts: u64,
    pub outbox: u64,
    pub batch: u64,
    pub fixed: u64,
}

impl MemoryBound {
    pub fn for_config(cfg: &phantomnet::config::Config) -> MemoryBound {
        use std::mem::size_of;
        // keys, values, hashes (u64), last_seen (i64), class (u8), prev and next (u32),
        // and an index of (2 × capacity).next_power_of_two() u64 entries.
        let index = |cap: usize| (cap * 2).next_power_of_two() * 8;
        let table = |cap: usize, key: usize, val: usize| -> u64 {
            let index = index(cap);
            (cap * (key + val + 8 + 8 + 1 + 4 + 4) + index) as u64
        };
        let t = &cfg.tables;
        let flows = table(
            t.flows,
            size_of::<Option<phantomnet::flow::FlowKey>>(),
            size_of::<phantomnet::flow::Flow>(),
        );
        let hosts = table(
            t.hosts,
            size_of::<Option<phantomnet::flow::Addr16>>(),
            size_of::<phantomnet::host::Host>(),
        ) + (t.hosts * 4) as u64 // the active-host list
            // the doorkeeper's ring of first sightings and its index
            + (t.hosts * size_of::<phantomnet::host::Held>() + index(t.hosts)) as u64;
        let outbox = (t.outbox
            * (size_of::<phantomnet::engine::AlertRec>()
                + size_of::<phantomnet::engine::VerdictRec>()
                + size_of::<phantomnet::events::FlowRow>()
                + size_of::<phantomnet::engine::SampleRec>()
                + 40)) as u64;
        // Outputs keeps up to 8 × outbox rows for retries (its vectors start at 1024 rows
        // and double, so they end at that bound); each row may carry up to 256 bytes of
        // text (messages, reasons).
        let batch = (t.outbox * 8 * (size_of::<phantomnet::events::FlowRow>() + 256)) as u64;
        MemoryBound {
            flows,
            hosts,
            outbox,
            batch,
            fixed: 16 << 20,
        }
    }

    pub fn total(&self) -> u64 {
        self.flows + self.hosts + self.outbox + self.batch + self.fixed
    }
}

/// Writes a spoofed-source SYN flood of `n` frames at `per_sec` against `victim`:25565,
/// generated in chunks with `scenario::syn_flood` and streamed to a pcap (constant memory).
fn write_flood(path: &Path, n: u64, per_sec: u64, victim: [u8; 4]) {
    let mut w = PcapWriter::create(path, 1).unwrap();
    let mut rng = Rng(0xf100d);
    // A little ordinary traffic to and from the victim first, so it is a known host.
    let mut c = Capture::default();
    scenario::benign_lan(&mut c, &mut rng, T0, 5);
    c.sort();
    for (ts, f) in &c.frames {
        w.write(*ts, f, f.len() as u32).unwrap();
    }
    let chunk = 50_000u64;
    let start = T0 + 5 * SEC;
    let mut done = 0;
    while done < n {
        let k = chunk.min(n - done);
        let mut c = Capture::default();
        let t0 = start + (done * 1_000_000 / per_sec) as i64;
        scenario::syn_flood(&mut c, &mut rng, t0, k, per_sec, victim, 25565);
        for (ts, f) in &c.frames {
            w.write(*ts, f, f.len() as u32).unwrap();
        }
        done += k;
    }
    w.finish().unwrap();
}

/// Starts `phantomnet replay ... --serve ADDR` (which keeps serving after the capture) and
/// waits until /api/status says the capture is done; returns the child (the caller stops
/// it with `stop`) and the status.
#[allow(clippy::zombie_processes)]
fn replay_and_serve(
    args: &[&std::ffi::OsStr],
    timeout: Duration,
) -> (Child, String, serde_json::Value) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = bin()
        .args(["--log", "warn", "replay"])
        .args(args)
        .args(["--serve", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if let Ok((200, body)) = http_get(&addr, "/api/status") {
            let v = json_body(&body);
            if v["capture_done"] == serde_json::Value::Bool(true) {
                return (child, addr, v);
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("replay exited ({st}) instead of serving: {err}");
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("replay did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(mut child: Child) -> String {
    sigterm(&child);
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    if status.is_none() {
        let _ = child.kill();
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        status.is_some(),
        "phantomnet did not stop on SIGTERM: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Slow-ish (a million frames, ~20 s of packet time): runs in `cargo test` all the same.
#[test]
fn million_frame_spoofed_syn_flood_stays_within_the_memory_bound_and_is_judged() {
    let dir = fast_dir("flood");
    let victim = scenario::NAS;
    let n = 1_000_000;
    let pcap = dir.path("flood.pcap");
    let t = Instant::now();
    write_flood(&pcap, n, 50_000, victim);
    eprintln!(
        "generated {n} flood frames in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let db = dir.path("flood.db");
    let cfg_path = repo().join("config/phantomnet.toml");
    let t = Instant::now();
    let (child, _addr, status) = replay_and_serve(
        &[
            pcap.as_os_str(),
            "-c".as_ref(),
            cfg_path.as_os_str(),
            "--db".as_ref(),
            db.as_os_str(),
        ],
        Duration::from_secs(300),
    );
    let secs = t.elapsed().as_secs_f64();
    let hwm = proc_kib(child.id(), "VmHWM").unwrap() * 1024;
    let log = stop(child);

    let cfg = phantomnet::config::Config::load(&cfg_path).unwrap();
    let bound = MemoryBound::for_config(&cfg);
    eprintln!(
        "flood: {} frames replayed in {secs:.1} s; peak RSS {:.1} MiB; bound {:.1} MiB \
         (flows {:.1} + hosts {:.1} + outbox {:.1} + retry batch {:.1} + fixed {:.1}); \
         flows evicted {}, hosts evicted {}, sightings dropped {}",
        status["frames"],
        hwm as f64 / 1048576.0,
        bound.total() as f64 / 1048576.0,
        bound.flows as f64 / 1048576.0,
        bound.hosts as f64 / 1048576.0,
        bound.outbox as f64 / 1048576.0,
        bound.batch as f64 / 1048576.0,
        bound.fixed as f64 / 1048576.0,
        status["flows"]["evicted"],
        status["hosts"]["evicted"],
        status["hosts"]["held_dropped"],
    );
    assert!(status["frames"].as_u64().unwrap() >= n, "{status}");
    assert!(
        hwm <= bound.total(),
        "peak RSS {hwm} over the bound {}",
        bound.total()
    );
    // A million spoofed sources overflow the flow table and the hosts' doorkeeper: what
    // they push out is counted, not grown. Each source is seen once, so none gets a host.
    assert!(
        status["flows"]["evicted"].as_u64().unwrap() > 500_000,
        "{status}"
    );
    assert!(
        status["hosts"]["held_dropped"].as_u64().unwrap() > 500_000,
        "{status}"
    );
    assert!(
        status["hosts"]["evicted"].as_u64().unwrap() < 1_000,
        "{status}"
    );
    assert!(status["flows"]["active"].as_u64().unwrap() <= cfg.tables.flows as u64);
    assert!(status["hosts"]["active"].as_u64().unwrap() <= cfg.tables.hosts as u64);
    let victim_ip = Ipv4Addr::from(victim).to_string();
    let judged = count(
        &db,
        &format!(
            "SELECT count(*) FROM verdicts WHERE host = '{victim_ip}' AND verdict IN ('HIGH', 'CRITICAL')"
        ),
    );
    assert!(
        judged > 0,
        "no HIGH/CRITICAL verdict about the victim {victim_ip}; log: {log}"
    );
    assert_eq!(integrity(&db), "ok");
}

/// Odd frames, each with the decode outcome it must have.
fn odd_frames() -> Vec<(
    &'static str,
    Vec<u8>,
    u32,
    Option<phantomnet::decode::DecodeError>,
)> {
    use frames::*;
    use phantomnet::decode::DecodeError as E;
    let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let (a6, b6) = (
        [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
    );
    let eth4 = |ip: Vec<u8>| ethernet(mac(1), mac(2), 0x0800, &ip);
    let eth6 = |ip: Vec<u8>| ethernet(mac(1), mac(2), 0x86dd, &ip);
    let udp = udp_datagram(5000, 9999, b"abcdefgh");
    let tcp = tcp_segment(5000, 80, 0x02, 1, 0, &[], b"");
    let mut v = vec![
        ("zero-length", vec![], 0, Some(E::LinkTruncated)),
        ("zero captured of 60", vec![], 60, Some(E::LinkTruncated)),
        (
            "ethernet header only",
            ethernet(mac(1), mac(2), 0x0800, &[]),
            14,
            Some(E::Ipv4Truncated),
        ),
        (
            "jumbo 9000",
            eth4(ipv4_packet(
                a,
                b,
                17,
                64,
                1,
                false,
                0,
                &[],
                &udp_datagram(1, 2, &vec![7u8; 8958]),
            )),
            9014,
            None,
        ),
        (
            "largest IPv4 packet",
            eth4(ipv4_packet(
                a,
                b,
                17,
                64,
                2,
                false,
                0,
                &[],
                &udp_datagram(1, 2, &vec![7u8; 65507]),
            )),
            65549,
            None,
        ),
        // IPv4 fragments: first with the UDP header, then an overlapping one at offset 0
        // with different bytes, a middle one, a tiny first fragment cutting the TCP header,
        // and a "ping of death" whose offset + length passes 65535.
        (
            "fragment first",
            eth4(ipv4_packet(a, b, 17, 64, 9, true, 0, &[], &udp)),
            0,
            None,
        ),
        (
            "fragment overlapping",
            eth4(ipv4_packet(a, b, 17, 64, 9, true, 0, &[], &[0xff; 16])),
            0,
            None,
        ),
        (
            "fragment middle",
            eth4(ipv4_packet(a, b, 17, 64, 9, true, 8, &[], &[1; 8])),
            0,
            None,
        ),
        (
            "fragment tiny tcp",
            eth4(ipv4_packet(a, b, 6, 64, 10, true, 0, &[], &tcp[..8])),
            0,
            Some(E::TcpTruncated),
        ),
        (
            "ping of death",
            eth4(ipv4_packet(a, b, 1, 64, 11, false, 65528, &[], &[0; 100])),
            0,
            None,
        ),
        // Broken IPv4 headers.
        (
            "ihl below 5",
            {
                let mut p = ipv4_packet(a, b, 17, 64, 1, false, 0, &[], &udp);
                p[0] = 0x43;
                eth4(p)
            },
            0,
            Some(E::Ipv4BadHeader),
        ),
        (
            "ihl past the packet",
            {
                let mut p = ipv4_packet(a, b, 17, 64, 1, false, 0, &[], &[]);
                p[0] = 0x4f;
                eth4(p)
            },
            0,
            Some(E::Ipv4BadHeader),
        ),
        (
            "tcp offset below 5",
            {
                let mut t = tcp.clone();
                t[12] = 0x20;
                eth4(ipv4_packet(a, b, 6, 64, 1, false, 0, &[], &t))
            },
            0,
            Some(E::TcpBadOffset),
        ),
        // IPv6 extension headers: a length that runs past the packet, two fragment headers
        // (the second inside the first's fragment), hop-by-hop after routing (out of order),
        // a 40-deep stack of destination options, and a non-first fragment (no L4 header).
        (
            "ext header past the end",
            {
                let mut e = ipv6_ext(17, &[0; 6]);
                e[1] = 200;
                eth6(ipv6_packet(a6, b6, 60, 64, &e))
            },
            0,
            Some(E::Ipv6ExtTruncated),
        ),
        (
            "two fragment headers",
            {
                let mut p = ipv6_frag(44, 0, true, 7);
                p.extend(ipv6_frag(17, 0, true, 8));
                p.extend(&udp);
                eth6(ipv6_packet(a6, b6, 44, 64, &p))
            },
            0,
            None,
        ),
        (
            "hop-by-hop after routing",
            {
                let mut p = ipv6_ext(0, &[0, 0, 0, 0, 0, 0]);
                p.extend(ipv6_ext(17, &[1, 4, 0, 0, 0, 0]));
                p.extend(&udp);
                eth6(ipv6_packet(a6, b6, 43, 64, &p))
            },
            0,
            None,
        ),
        (
            "40 destination options",
            {
                let mut p = Vec::new();
                for _ in 0..39 {
                    p.extend(ipv6_ext(60, &[1, 4, 0, 0, 0, 0]));
                }
                p.extend(ipv6_ext(17, &[1, 4, 0, 0, 0, 0]));
                p.extend(&udp);
                eth6(ipv6_packet(a6, b6, 60, 64, &p))
                // Past the decoder's bound of 16 extension headers: stopped and counted.
            },
            0,
            Some(E::Ipv6ExtTruncated),
        ),
        (
            "non-first ipv6 fragment",
            {
                let mut p = ipv6_frag(6, 1232, false, 9);
                p.extend(&[0xaa; 40]);
                eth6(ipv6_packet(a6, b6, 44, 64, &p))
            },
            0,
            None,
        ),
        (
            "overlapping ipv6 fragments",
            {
                let mut p = ipv6_frag(17, 0, true, 10);
                p.extend(&[0x55; 24]);
                eth6(ipv6_packet(a6, b6, 44, 64, &p))
            },
            0,
            None,
        ),
        (
            "ipv6 jumbogram",
            {
                // Payload length 0 with a hop-by-hop Jumbo Payload option (RFC 2675).
                let mut hbh = vec![17u8, 0, 0xc2, 4];
                let body = 70_000u32;
                hbh.extend_from_slice(&(body + 8).to_be_bytes());
                let mut p = ipv6_packet(a6, b6, 0, 64, &hbh);
                p[4] = 0;
                p[5] = 0;
                // UDP length 0 in a jumbogram (RFC 2675 section 4).
                p.extend_from_slice(&[0, 1, 0, 2, 0, 0, 0, 0]);
                p.extend(vec![3u8; body as usize - 8]);
                eth6(p)
            },
            0,
            None,
        ),
        (
            "deep vlan stack",
            with_vlan_tags(
                &eth4(ipv4_packet(a, b, 17, 64, 1, false, 0, &[], &udp)),
                &[
                    (1, 0x8100),
                    (2, 0x8100),
                    (3, 0x8100),
                    (4, 0x8100),
                    (5, 0x8100),
                    (6, 0x88a8),
                ],
            ),
            0,
            None,
        ),
    ];
    for f in &mut v {
        if f.2 == 0 {
            f.2 = f.1.len() as u32;
        }
    }
    v
}

#[test]
fn fragments_extension_header_tricks_zero_length_and_jumbo_frames() {
    use phantomnet::decode::{decode, LinkType};
    let frames = odd_frames();
    // Each frame alone: the decoder's verdict.
    let mut wrong = Vec::new();
    for (name, f, wire, want) in &frames {
        let m = decode(LinkType::Ethernet, f, *wire);
        if m.error != *want {
            wrong.push(format!("{name}: {:?}, expected {want:?}", m.error));
        }
        if (name.contains("fragment") || name.contains("ping of death")) && !m.frag.is_fragment {
            wrong.push(format!("{name}: not flagged as a fragment"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // All of them, many times, through the whole engine with the default detectors.
    let cfg = phantomnet::config::Config::load(&repo().join("config/phantomnet.toml")).unwrap();
    let det = runtime::load_detectors(&cfg).unwrap();
    let mut engine = runtime::build_engine(&cfg, det, false);
    let rounds = 200;
    for r in 0..rounds {
        for (i, (_, f, wire, _)) in frames.iter().enumerate() {
            let ts = T0 + r * SEC / 10 + i as i64;
            engine.process_frame(ts, LinkType::Ethernet, f, *wire);
        }
        engine.outbox.clear();
    }
    engine.finish_second();
    let s = &engine.stats;
    assert_eq!(s.frames, rounds as u64 * frames.len() as u64);
    for (name, _, _, want) in &frames {
        if let Some(e) = want {
            assert!(
                s.decode_errors[e.index()] >= rounds as u64,
                "{name}: {:?} not counted",
                e
            );
        }
    }
    // And through `phantomnet replay` from a capture.
    let dir = fast_dir("odd");
    let pcap = dir.path("odd.pcap");
    let mut w = PcapWriter::create(&pcap, 1).unwrap();
    for r in 0..20 {
        for (i, (_, f, wire, _)) in frames.iter().enumerate() {
            w.write(T0 + r * SEC + i as i64, f, *wire).unwrap();
        }
    }
    w.finish().unwrap();
    let out = bin()
        .args(["--log", "warn", "replay"])
        .arg(&pcap)
        .args(["-c", "config/phantomnet.toml", "--db"])
        .arg(dir.path("odd.db"))
        .output()
        .unwrap();
    assert_no_panic("odd.pcap", &out);
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn a_record_beyond_the_largest_snaplen_is_a_clear_error() {
    let dir = fast_dir("huge-record");
    let small = eth_ipv4_udp(mac(1), mac(2), [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"x");
    let huge = vec![0u8; phantomnet::capture::pcap::MAX_RECORD + 1];
    let bytes = frames::pcap_file(1, &[(T0, &small), (T0 + 1, &huge)]);
    let p = dir.path("huge.pcap");
    std::fs::write(&p, bytes).unwrap();
    let out = bin()
        .args(["--log", "warn", "replay"])
        .arg(&p)
        .args(["--no-model", "-c", "config/phantomnet.toml", "--db"])
        .arg(dir.path("h.db"))
        .output()
        .unwrap();
    assert_no_panic("huge.pcap", &out);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let at = 24 + 16 + small.len();
    assert!(
        err.contains("huge.pcap") && err.contains(&format!("byte {at}")),
        "{err}"
    );
    assert_eq!(count(&dir.path("h.db"), "SELECT count(*) FROM flows"), 1);
}

// ---------------------------------------------------------------------------------------
// Crash safety
// ---------------------------------------------------------------------------------------

/// Slow-ish (20 kill -9 cycles): runs in `cargo test` all the same.
#[test]
fn kill_9_during_heavy_writing_twenty_times_loses_no_committed_row() {
    let dir = TempDir::new("kill9"); // a real disk, not tmpfs: fsync and WAL as deployed
    let pcap = dir.path("flood.pcap");
    // Every spoofed SYN is a new flow; once the table is full each one evicts another,
    // and every eviction is a flow row: a steady stream of large transactions.
    write_flood(&pcap, 1_000_000, 20_000, scenario::NAS);
    let db = dir.path("crash.db");
    // No retention during the test: every row ever committed must stay.
    let cfg = write_config(
        dir.0.as_path(),
        "k.toml",
        &[
            ("retention.max_rows", "1000000000"),
            ("retention.max_bytes", "0"),
        ],
    );
    let mut rng = Rng(0x9);
    let mut before_total = 0i64;
    for round in 0..20 {
        let mut child = bin()
            .args(["--log", "error", "replay"])
            .arg(&pcap)
            .args(["--no-model", "-c"])
            .arg(&cfg)
            .arg("--db")
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until this run has committed something (start-up is slow on a busy
        // machine), then a random while longer, so the kill lands amid writing.
        let t = Instant::now();
        while count_or_zero(&db) <= before_total && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.below(250)));
        // Read what is committed, from another connection, just before the kill.
        // (0, 0) when not created yet (killed before its first commit).
        let (n, max_id) = rusqlite::Connection::open(&db)
            .and_then(|c| {
                c.query_row(
                    "SELECT coalesce(sum(n), 0), coalesce(max(first_id + n - 1), 0) \
                     FROM flow_chunks",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
            })
            .unwrap_or_default();
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: replay ended before the kill; make the capture longer"
        );
        assert_eq!(integrity(&db), "ok", "round {round}");
        // Flows with ids up to max_id (whole chunks: a chunk is committed or not at all).
        let kept = count(
            &db,
            &format!(
                "SELECT coalesce(sum(n), 0) FROM flow_chunks WHERE first_id + n - 1 <= {max_id}"
            ),
        );
        assert_eq!(
            kept, n,
            "round {round}: rows committed before the kill went missing"
        );
        let total = count_or_zero(&db);
        assert!(
            total >= before_total,
            "round {round}: {total} < {before_total}"
        );
        assert!(
            n > before_total || round == 0,
            "round {round}: nothing written while running"
        );
        eprintln!("kill -9 round {round}: {n} rows before the kill, {total} after, integrity ok");
        before_total = total;
    }
    // The next start carries on appending to the same file.
    let small = dir.path("small.pcap");
    let (bytes, _) = one_frame_flows(50);
    std::fs::write(&small, bytes).unwrap();
    let out = bin()
        .args(["--log", "warn", "replay"])
        .arg(&small)
        .args(["--no-model", "-c"])
        .arg(&cfg)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(count(&db, "SELECT count(*) FROM flows"), before_total + 50);
    assert_eq!(integrity(&db), "ok");
}

// ---------------------------------------------------------------------------------------
// Full or read-only storage
// ---------------------------------------------------------------------------------------

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop (even on failure).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(name: &str, size: &str) -> Option<Tmpfs> {
        let dir =
            std::env::temp_dir().join(format!("phantomnet-tmpfs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .ok()?
            .success();
        ok.then_some(Tmpfs { dir })
    }
    fn remount(&self, opts: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {opts}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Frames of a spoofed flood (every frame a new flow; evictions make flow rows).
fn flood_frames(n: u64, seed: u64) -> Vec<(i64, Vec<u8>)> {
    let mut c = Capture::default();
    let mut rng = Rng(seed);
    scenario::syn_flood(&mut c, &mut rng, T0, n, 20_000, scenario::NAS, 80);
    c.frames
}

#[test]
fn full_then_roomy_storage_keeps_detecting_bounded_and_retrying() {
    use phantomnet::decode::LinkType;
    if !is_root() {
        eprintln!("skipped: mounting a tiny tmpfs needs root");
        return;
    }
    let Some(fs) = Tmpfs::mount("full", "1m") else {
        eprintln!("skipped: cannot mount tmpfs here");
        return;
    };
    let db = fs.dir.join("full.db");
    let mut cfg = phantomnet::config::Config::load(&repo().join("config/phantomnet.toml")).unwrap();
    cfg.retention.max_rows = 1_000_000_000;
    cfg.retention.max_bytes = 0;
    cfg.tables.flows = 1024;
    let det = Detectors {
        rules: None,
        intel: None,
        model: None,
    };
    let mut engine = runtime::build_engine(&cfg, det, false);
    let mut out = runtime::Outputs::open(&cfg, Some(&db), None).unwrap();
    let bound = cfg.tables.outbox * 8;
    let frames = flood_frames(400_000, 5);
    let mut chunks = frames.chunks(2_000);
    let mut feed =
        |engine: &mut phantomnet::engine::Engine, out: &mut runtime::Outputs, k: usize| {
            for _ in 0..k {
                let Some(ch) = chunks.next() else {
                    return false;
                };
                for (ts, f) in ch {
                    engine.process_frame(*ts, LinkType::Ethernet, f, f.len() as u32);
                }
                out.flush(engine);
            }
            true
        };
    // 1. Write until the 1 MiB file system is full.
    let mut stored_before_full = 0;
    let mut rounds = 0;
    while out.last_store_error.is_none() {
        stored_before_full = count(&db, "SELECT count(*) FROM flows");
        assert!(feed(&mut engine, &mut out, 1), "never filled 1 MiB");
        rounds += 1;
    }
    let err = out.last_store_error.clone().unwrap();
    eprintln!("disk full after {rounds} flushes, {stored_before_full} flow rows stored: {err}");
    assert!(err.contains("full.db"), "{err}");
    // 2. Keep going while full: frames are still processed and judged, the backlog stays
    //    bounded, what cannot be kept is counted, nothing stored is damaged.
    let frames_before = engine.stats.frames;
    feed(&mut engine, &mut out, 40);
    assert!(engine.stats.frames >= frames_before + 40 * 2_000);
    assert!(out.last_store_error.is_some());
    assert!(
        out.backlog() <= bound,
        "backlog {} over {bound}",
        out.backlog()
    );
    assert!(
        out.dropped() > 0,
        "a long outage must drop (and count) rows"
    );
    assert!(out.store_failures > 1);
    assert_eq!(integrity(&db), "ok");
    assert!(count(&db, "SELECT count(*) FROM flows") >= stored_before_full);
    // 3. Room again: the next flush retries and drains the backlog.
    fs.remount("rw,size=256m");
    let backlog = out.backlog();
    assert!(backlog > 0);
    let all_rows = "SELECT (SELECT count(*) FROM flows) + (SELECT count(*) FROM window_counts) \
                    + (SELECT count(*) FROM verdicts) + (SELECT count(*) FROM alerts)";
    let stored = count(&db, all_rows);
    assert!(feed(&mut engine, &mut out, 1));
    // The writer thread writes in the background: wait for it before looking.
    out.sync();
    assert_eq!(out.last_store_error, None, "write did not recover");
    assert_eq!(out.backlog(), 0);
    // The whole backlog went in with the retry.
    assert!(count(&db, all_rows) >= stored + backlog as i64);
    assert_eq!(integrity(&db), "ok");
    drop(out);
}

#[test]
fn replay_onto_a_full_disk_keeps_going_and_says_so_once() {
    if !is_root() {
        eprintln!("skipped: mounting a tiny tmpfs needs root");
        return;
    }
    let Some(fs) = Tmpfs::mount("replay-full", "600k") else {
        eprintln!("skipped: cannot mount tmpfs here");
        return;
    };
    let dir = fast_dir("replay-full");
    let pcap = dir.path("flood.pcap");
    write_flood(&pcap, 200_000, 20_000, scenario::NAS);
    let db = fs.dir.join("r.db");
    let cfg = write_config(dir.0.as_path(), "f.toml", &[("tables.flows", "1024")]);
    let (child, _addr, status) = replay_and_serve(
        &[
            pcap.as_os_str(),
            "-c".as_ref(),
            cfg.as_os_str(),
            "--db".as_ref(),
            db.as_os_str(),
        ],
        Duration::from_secs(120),
    );
    let log = stop(child);
    eprintln!("status.store: {}", status["store"]);
    assert!(status["frames"].as_u64().unwrap() >= 200_000, "{status}");
    let last = status["store"]["last_error"].as_str().unwrap_or("");
    assert!(last.contains("r.db"), "{status}");
    assert!(
        status["store"]["write_failures"].as_u64().unwrap() > 1,
        "{status}"
    );
    assert!(status["store"]["backlog_rows"].as_u64().unwrap() <= 8 * 8192);
    // Still detecting: the flood is judged even though nothing more can be stored.
    let v = &status["verdicts"];
    assert!(
        ["HIGH", "high", "CRITICAL", "critical"]
            .iter()
            .filter_map(|k| v[*k].as_u64())
            .sum::<u64>()
            > 0,
        "{status}"
    );
    let warnings = log.matches("database write failed").count();
    assert_eq!(warnings, 1, "the error is logged once per interval: {log}");
    assert_eq!(integrity(&db), "ok");
}

/// Regression (hardening): `retention.max_rows = 0` became a bound of zero rows, so the
/// first retention pass emptied every table. 0 now means no row bound, as for max_bytes.
#[test]
fn retention_max_rows_zero_keeps_every_row() {
    use phantomnet::store::{Batch, Store};
    let dir = fast_dir("retention-zero");
    let mut cfg = phantomnet::config::Config::default();
    cfg.retention.max_rows = 0;
    cfg.retention.max_bytes = 0;
    let opts = runtime::store_options(&cfg);
    assert_eq!(opts.max_rows.flows, None);
    let db = dir.path("r0.db");
    let mut store = Store::open(&db, &opts).unwrap();
    let mut batch = Batch::new(1000);
    for i in 0..500u16 {
        let row = phantomnet::events::FlowRow {
            flow_id: u64::from(i),
            start: T0,
            end: T0 + 1,
            src: Ipv4Addr::new(10, 0, 0, 1).into(),
            src_port: i,
            dst: Ipv4Addr::new(10, 0, 0, 2).into(),
            dst_port: 80,
            proto: 6,
            pkts_to_server: 1,
            pkts_to_client: 0,
            bytes_to_server: 60,
            bytes_to_client: 0,
            tcp_flags: 2,
            reason: "timeout",
        };
        batch.flow(&row).unwrap();
    }
    store.write(&batch).unwrap();
    store.enforce_retention().unwrap();
    drop(store);
    assert_eq!(count(&db, "SELECT count(*) FROM flows"), 500);
}
