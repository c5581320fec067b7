//! End to end: captures built by the test helpers go through `phantomnet replay`, and the
//! SQLite file and EVE output are checked against counts worked out independently.

use std::collections::BTreeSet;
use std::path::Path;

use crate::util::scenario::{self, Capture, Rng, SEC, T0};
use crate::util::{read_eve, run_ok, shared_pcaps, write_pcap, TempDir};

/// Canonical bidirectional 5-tuples of TCP/UDP frames, parsed with etherparse (an
/// independent oracle for the flow table).
fn distinct_flows(c: &Capture) -> usize {
    let mut set = BTreeSet::new();
    for (_, f) in &c.frames {
        let Ok(p) = etherparse::SlicedPacket::from_ethernet(f) else {
            continue;
        };
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            continue;
        };
        let (s, d) = (ip.header().source(), ip.header().destination());
        let (sp, dp, proto) = match p.transport {
            Some(etherparse::TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port(), 6),
            Some(etherparse::TransportSlice::Udp(u)) => (u.source_port(), u.destination_port(), 17),
            _ => continue,
        };
        let a = (s, sp);
        let b = (d, dp);
        set.insert(if a <= b { (a, b, proto) } else { (b, a, proto) });
    }
    set.len()
}

fn count(db: &std::path::Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// `phantomnet replay PCAP --no-model --rules RULES --db DB -c config/phantomnet.toml`, and
/// `more` arguments.
fn replay_with_rules(pcap: &Path, rules: &Path, db: &Path, more: &[&str]) {
    let mut args = vec![
        "replay",
        pcap.to_str().unwrap(),
        "--no-model",
        "--rules",
        rules.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "-c",
        "config/phantomnet.toml",
    ];
    args.extend_from_slice(more);
    run_ok(&args);
}

#[test]
fn replay_writes_exact_counts_to_sqlite_and_eve() {
    let dir = TempDir::new("replay-exact");
    let mut c = Capture::default();
    let mut rng = Rng(7);
    scenario::benign_lan(&mut c, &mut rng, T0, 20);
    scenario::port_scan(
        &mut c,
        T0 + 5 * SEC,
        (scenario::NAS, scenario::mac(30)),
        100,
    );
    c.sort();
    let pcap = dir.path("lan.pcap");
    write_pcap(&pcap, &c.frames);
    // SYNs to the NAS's SMB port: one per NAS session (every 5 s) — and none from the scan,
    // which covers ports 1..=100.
    let rules = dir.path("t.rules");
    std::fs::write(
        &rules,
        "alert tcp any any -> any 445 (msg:\"SMB connection\"; flags:S; sid:1000001; rev:2;)\n",
    )
    .unwrap();
    let (db, eve) = (dir.path("out.db"), dir.path("eve.json"));
    replay_with_rules(&pcap, &rules, &db, &["--eve", eve.to_str().unwrap()]);
    let nas_sessions = 4; // seconds 0, 5, 10, 15
    assert_eq!(
        count(&db, "SELECT count(*) FROM alerts WHERE sid = 1000001"),
        nas_sessions
    );
    assert_eq!(count(&db, "SELECT count(*) FROM alerts WHERE sid = 1000001 AND rev = 2 AND proto = 'TCP' AND dst_port = 445"), nas_sessions);
    let flows = distinct_flows(&c) as i64;
    assert_eq!(count(&db, "SELECT count(*) FROM flows"), flows);
    let events = read_eve(&eve);
    let alerts: Vec<_> = events
        .iter()
        .filter(|e| e["event_type"] == "alert")
        .collect();
    assert_eq!(alerts.len() as i64, nas_sessions);
    for a in &alerts {
        assert_eq!(a["alert"]["signature_id"], 1000001);
        assert_eq!(a["alert"]["signature"], "SMB connection");
        assert_eq!(a["alert"]["gid"], 1);
        assert_eq!(a["dest_port"], 445);
        assert_eq!(a["proto"], "TCP");
        assert!(a["timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-01T00:00:"));
    }
    assert_eq!(
        events.iter().filter(|e| e["event_type"] == "flow").count() as i64,
        flows
    );
    // Windows are counted, SAFE ones too; the table has the contract's columns.
    assert!(
        count(
            &db,
            "SELECT sum(safe + warning + high + critical) FROM window_counts"
        ) > 0
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    for (table, cols) in [
        (
            "verdicts",
            "id, ts, host, verdict, risk, anomaly_score, confidence, reasons_json",
        ),
        (
            "alerts",
            "id, ts, sid, rev, msg, priority, src, src_port, dst, dst_port, proto",
        ),
        ("meta", "key, value"),
    ] {
        conn.prepare(&format!("SELECT {cols} FROM {table} LIMIT 1"))
            .unwrap();
    }
    let schema: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(schema, "phantomnet.features.v1");
}

#[test]
fn truncated_capture_is_a_clear_error_and_keeps_what_was_read() {
    let dir = TempDir::new("truncated");
    let mut c = Capture::default();
    let mut rng = Rng(3);
    scenario::benign_lan(&mut c, &mut rng, T0, 10);
    c.sort();
    let pcap = dir.path("cut.pcap");
    write_pcap(&pcap, &c.frames);
    let bytes = std::fs::read(&pcap).unwrap();
    std::fs::write(&pcap, &bytes[..bytes.len() - 7]).unwrap();
    let db = dir.path("out.db");
    let out = crate::util::bin()
        .args([
            "replay",
            pcap.to_str().unwrap(),
            "--no-model",
            "--db",
            db.to_str().unwrap(),
            "-c",
            "config/phantomnet.toml",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cut.pcap"), "{err}");
    assert!(err.contains("byte"), "{err}");
    // Flows finished before the cut were written.
    assert!(count(&db, "SELECT count(*) FROM flows") > 0);
}

#[test]
fn every_shared_capture_replays() {
    let Some(dir) = shared_pcaps() else {
        eprintln!("skipped: PHANTOMNET_PCAPS is not set");
        return;
    };
    let tmp = TempDir::new("shared");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for p in names {
        let db = tmp.path("s.db");
        let _ = std::fs::remove_file(&db);
        let out = run_ok(&[
            "replay",
            p.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "-c",
            "config/phantomnet.toml",
        ]);
        let log = String::from_utf8_lossy(&out.stderr);
        let line = log
            .lines()
            .find(|l| l.contains("replayed"))
            .unwrap_or("")
            .to_string();
        eprintln!(
            "{}: {}",
            p.file_name().unwrap().to_string_lossy(),
            line.split("replayed").nth(1).unwrap_or("")
        );
    }
}

#[test]
fn learning_mode_trains_switches_and_resumes_after_a_restart() {
    let dir = TempDir::new("learning");
    let cfg = dir.path("learn.toml");
    std::fs::write(
        &cfg,
        "[output]\ndb = \"learn.db\"\n[detection]\nrules = []\nmodel = \"\"\n[http]\nenabled = false\n\
         [learning]\nenabled = true\nduration = 60\ntrees = 20\nsamples = 64\nseed = 3\n",
    )
    .unwrap();
    // First run: 40 s of traffic, not enough to finish learning.
    let mut c = Capture::default();
    let mut rng = Rng(11);
    scenario::benign_lan(&mut c, &mut rng, T0, 40);
    c.sort();
    let first = dir.path("first.pcap");
    write_pcap(&first, &c.frames);
    run_ok(&[
        "replay",
        first.to_str().unwrap(),
        "-c",
        cfg.to_str().unwrap(),
    ]);
    let db = dir.path("learn.db");
    let meta = |k: &str| -> Option<String> {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
            .ok()
    };
    assert_eq!(meta("learning_state").as_deref(), Some("learning"));
    let started = meta("learning_started").unwrap();
    assert!(count(&db, "SELECT count(*) FROM feature_samples") > 0);
    assert!(!dir.path("learned.json").exists());
    // Second run (a restart): the next 40 s. Learning resumes from the stored start and
    // finishes 60 s after it.
    let mut c = Capture::default();
    scenario::benign_lan(&mut c, &mut rng, T0 + 40 * SEC, 40);
    c.sort();
    let second = dir.path("second.pcap");
    write_pcap(&second, &c.frames);
    let out = run_ok(&[
        "replay",
        second.to_str().unwrap(),
        "-c",
        cfg.to_str().unwrap(),
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("resuming"), "{log}");
    assert!(log.contains("switched to"), "{log}");
    assert_eq!(meta("learning_state").as_deref(), Some("done"));
    assert_eq!(meta("learning_started").unwrap(), started);
    let learned = dir.path("learned.json");
    let m = phantomnet::model::Model::load(&learned).unwrap();
    assert_eq!(m.info().on, vec!["live learning".to_string()]);
    assert_eq!(m.info().n_trees, 20);
    // A third start uses the learned model straight away.
    let out = run_ok(&[
        "replay",
        second.to_str().unwrap(),
        "-c",
        cfg.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("using the learned model"));
}

#[test]
fn eval_reports_an_exact_table_for_built_captures() {
    let dir = TempDir::new("eval");
    let mut benign = Capture::default();
    let mut rng = Rng(21);
    scenario::benign_lan(&mut benign, &mut rng, T0, 30);
    benign.sort();
    write_pcap(&dir.path("home.pcap"), &benign.frames);
    let mut scan = Capture::default();
    scenario::benign_lan(&mut scan, &mut rng, T0, 30);
    scenario::port_scan(
        &mut scan,
        T0 + 10 * SEC,
        (scenario::NAS, scenario::mac(30)),
        600,
    );
    scan.sort();
    write_pcap(&dir.path("scan.pcap"), &scan.frames);
    let labels = dir.path("labels.tsv");
    std::fs::write(&labels, "notes\tfile\tlabel\tattack_kind\nhome\thome.pcap\tbenign\t-\nnmap\tscan.pcap\tattack\tportscan\n")
        .unwrap();
    let out = run_ok(&[
        "--log",
        "warn",
        "eval",
        labels.to_str().unwrap(),
        "--json",
        "-c",
        "config/phantomnet.toml",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let caps = v["captures"].as_array().unwrap();
    assert_eq!(caps.len(), 2);
    let (home, attack) = (&caps[0], &caps[1]);
    assert_eq!(home["file"], "home.pcap");
    assert_eq!(home["label"], "benign");
    assert_eq!(home["highest"], "SAFE", "{home}");
    assert_eq!(home["flagged_windows"], 0);
    assert_eq!(home["first_warning_s"], serde_json::Value::Null);
    assert_eq!(home["frames"].as_u64().unwrap() as usize, benign.len());
    assert_eq!(attack["kind"], "portscan");
    assert!(
        attack["highest"] == "HIGH" || attack["highest"] == "CRITICAL",
        "{attack}"
    );
    // The scan starts 10 s in; the first verdict closes the second it is seen in.
    let first = attack["first_warning_s"].as_f64().unwrap();
    assert!((10.0..=12.0).contains(&first), "{attack}");
    assert!(
        attack["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "192.168.1.66"),
        "the scanner is named: {attack}"
    );
    let s = &v["summary"];
    assert_eq!(
        s["attack"],
        serde_json::json!({"captures": 1, "warning": 1, "high": 1})
    );
    assert_eq!(
        s["benign"],
        serde_json::json!({"captures": 1, "warning": 0, "high": 0})
    );
    assert_eq!(s["attack_by_kind"]["portscan"]["high"], 1);
    assert_eq!(s["benign_flagged_windows"], 0);
    // The plain table says the same.
    let out = run_ok(&[
        "--log",
        "warn",
        "eval",
        labels.to_str().unwrap(),
        "-c",
        "config/phantomnet.toml",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("attack captures reaching WARNING: 1/1 (100%)   HIGH: 1/1 (100%)"),
        "{table}"
    );
    assert!(
        table.contains("benign captures reaching WARNING: 0/1 (0%)   HIGH: 0/1 (0%)"),
        "{table}"
    );
}

#[test]
fn live_run_starts_without_its_database_and_writes_once_it_can() {
    if !nix_is_root() {
        eprintln!("skipped: needs root to capture on lo");
        return;
    }
    let dir = TempDir::new("late-db");
    let db_dir = dir.path("not-yet");
    let db = db_dir.join("pn.db");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = crate::util::bin()
        .args([
            "run",
            "-i",
            "lo",
            "-c",
            "config/phantomnet.toml",
            "--duration",
            "16",
        ])
        .args([
            "--db",
            db.to_str().unwrap(),
            "--serve",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Traffic on lo while the database directory does not exist yet, then create it.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..60 {
        let _ = sock.send_to(b"phantomnet late-db test", "127.0.0.1:9");
        std::thread::sleep(std::time::Duration::from_millis(100));
        if i == 20 {
            std::fs::create_dir_all(&db_dir).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("watching anyway"), "{log}");
    assert!(log.contains("writable again"), "{log}");
    // Flows seen while the database was missing were held and written.
    assert!(count(&db, "SELECT count(*) FROM flows") > 0, "{log}");
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A rule that alerts on a count per destination (`track by_dst`: a flood against one host)
/// is evidence against that destination, not against whichever spoofed sender crossed the
/// count; a rule that only rate-limits per destination (`type limit`) still speaks about
/// the sender of the packet it matched.
#[test]
fn rules_counting_per_destination_are_evidence_against_the_destination() {
    let dir = TempDir::new("by-dst");
    let mut c = Capture::default();
    let mut rng = Rng(0xb7d5);
    scenario::syn_flood(&mut c, &mut rng, T0, 6_000, 2_000, scenario::NAS, 445);
    c.sort();
    let pcap = dir.path("flood.pcap");
    write_pcap(&pcap, &c.frames);
    let rules = dir.path("t.rules");
    std::fs::write(
        &rules,
        "alert tcp any any -> any any (msg:\"SYN flood\"; flags:S; threshold:type both, \
         track by_dst, count 500, seconds 1; sid:1000001;)\n\
         alert tcp any any -> any any (msg:\"first SYN\"; flags:S; threshold:type limit, \
         track by_dst, count 1, seconds 60; sid:1000002;)\n",
    )
    .unwrap();
    let db = dir.path("out.db");
    replay_with_rules(&pcap, &rules, &db, &[]);
    let nas = std::net::Ipv4Addr::from(scenario::NAS).to_string();
    assert_eq!(
        count(&db, "SELECT count(*) FROM alerts WHERE sid = 1000001"),
        3
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM alerts WHERE sid = 1000002"),
        1
    );
    let about = |sid: u32, host_is_nas: bool| {
        count(
            &db,
            &format!(
                "SELECT count(*) FROM verdicts WHERE reasons_json LIKE '%\"sid\":{sid}%' \
                 AND (host = '{nas}') = {host_is_nas}"
            ),
        )
    };
    assert_eq!((about(1000001, true), about(1000001, false)), (3, 0));
    assert_eq!((about(1000002, true), about(1000002, false)), (0, 1));
}
