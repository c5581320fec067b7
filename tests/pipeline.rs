//! End to end: captures built by the test helpers go through `phantomnet replay`, and the
//! SQLite file and EVE output are checked against counts worked out independently.

use std::collections::BTreeSet;

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
    run_ok(&[
        "replay",
        pcap.to_str().unwrap(),
        "--no-model",
        "--rules",
        rules.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--eve",
        eve.to_str().unwrap(),
        "-c",
        "config/phantomnet.toml",
    ]);
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
