//! The host judge thread (`[detection] judge_thread`): host state and each second's
//! verdicts move off the packet loop, and nothing else may change. Judged on the thread or
//! on the loop, a capture gives the same alerts, verdicts (with their reasons), window
//! counts and flows, row for row (alerts in time order: with the thread, thresholded
//! rules' alerts come from the judge and may be stored after later packets' alerts).

use std::path::Path;

use phantomnet::config::Config;
use phantomnet::decode::LinkType;
use phantomnet::runtime::{self, Outputs};
use rusqlite::Connection;

use crate::hardening::write_config;
use crate::util::scenario::*;
use crate::util::{replay_ok, repo, write_pcap, TempDir};
use crate::writer::dump;

/// Every kind of host evidence: signatures (port scan, brute force, SQL injection), a
/// threat-intel hit (the scanner is listed), a changed ARP binding, DNS tunnelling, a
/// spoofed flood that churns the host table, and ICMP errors from the benign LAN.
fn every_kind_of_evidence() -> Capture {
    let mut c = Capture::default();
    let mut rng = Rng(0x1d_9e01);
    benign_lan(&mut c, &mut rng, T0, 30);
    port_scan(&mut c, T0 + 2 * SEC, (NAS, mac(30)), 1500);
    ssh_bruteforce(&mut c, T0 + 3 * SEC, (SCANNER, mac(66)), (NAS, mac(30)), 40);
    dns_tunnel(&mut c, &mut rng, T0 + 5 * SEC, 10, 20);
    sql_injection(&mut c, T0 + 8 * SEC);
    arp_spoof(&mut c, T0 + 11 * SEC);
    syn_flood(&mut c, &mut rng, T0 + 13 * SEC, 20_000, 2_000, TV, 80);
    c.sort();
    c
}

fn count(db: &Path, sql: &str) -> i64 {
    let conn = Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn the_judge_thread_gives_exactly_the_verdicts_judging_on_the_loop_gives() {
    let dir = TempDir::new("judge-same");
    let pcap = dir.path("evidence.pcap");
    write_pcap(&pcap, &every_kind_of_evidence().frames);
    let intel = dir.path("listed.txt");
    std::fs::write(&intel, "192.168.1.66\n").unwrap();
    let intel_list = format!("[{:?}]", intel);
    let mut dumps = Vec::new();
    // A 64-row outbox: the thread's results fill up and are collected hundreds of times. 256
    // hosts: the flood evicts hosts, some of them active in the second being judged.
    for (name, thread) in [("thread", "true"), ("inline", "false")] {
        let cfg = write_config(
            &dir.0,
            &format!("{name}.toml"),
            &[
                ("detection.judge_thread", thread),
                ("detection.intel", &intel_list),
                ("tables.outbox", "64"),
                ("tables.hosts", "256"),
            ],
        );
        let db = dir.path(&format!("{name}.db"));
        replay_ok(&pcap, &cfg, &db);
        // The run judged, and judged every kind of evidence.
        assert!(
            count(&db, "SELECT count(*) FROM window_counts") > 20,
            "{name}"
        );
        for (what, sql) in [
            (
                "intel",
                "SELECT count(*) FROM verdicts WHERE reasons_json LIKE '%intel%'",
            ),
            (
                "arp",
                "SELECT count(*) FROM verdicts WHERE reasons_json LIKE '%ARP%'",
            ),
            (
                "signature",
                "SELECT count(*) FROM verdicts WHERE reasons_json LIKE '%signature%'",
            ),
            (
                "anomaly",
                "SELECT count(*) FROM verdicts WHERE anomaly_score IS NOT NULL",
            ),
        ] {
            assert!(
                count(&db, sql) > 0,
                "{name}: no verdict with {what} evidence"
            );
        }
        dumps.push(dump(&db));
    }
    // Alerts are the same rows; their ids and order may differ: with the
    // thread, thresholded rules alert from the judge, which may store an alert after alerts
    // of later packets (each flush stores its alerts in time order).
    let by_time = |d: &[String]| {
        let mut alerts: Vec<String> = d
            .iter()
            .filter_map(|r| r.strip_prefix("alerts: "))
            .map(|r| r.split_once('|').map_or(r, |(_id, rest)| rest).to_string())
            .collect();
        alerts.sort();
        alerts
    };
    let others = |d: &[String]| -> Vec<String> {
        d.iter()
            .filter(|r| !r.starts_with("alerts: "))
            .cloned()
            .collect()
    };
    let (a, b) = (by_time(&dumps[0]), by_time(&dumps[1]));
    assert!(a.len() > 20, "too few alerts: {}", a.len());
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a, b);
    }
    let (a, b) = (others(&dumps[0]), others(&dumps[1]));
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a, b);
    }
}

/// The engine API: results reach the outbox only when collected, all of them after a
/// waiting sync, with the same counters as judging inline; settings reach the thread.
#[test]
fn judged_results_are_collected_with_their_counters() {
    let cfg = Config::load(&repo().join("config/phantomnet.toml")).unwrap();
    let frames = every_kind_of_evidence().frames;
    let mut results = Vec::new();
    for threaded in [true, false] {
        let det = runtime::load_detectors(&cfg).unwrap();
        let mut e = runtime::build_engine(&cfg, det, false);
        if threaded {
            e.start_judge_thread().unwrap();
        }
        assert_eq!(e.judge_threaded(), threaded);
        e.set_collect_samples(true);
        let mut verdicts = Vec::new();
        let mut samples = 0;
        let mut windows = 0;
        for (i, (ts, f)) in frames.iter().enumerate() {
            e.process_frame(*ts, LinkType::Ethernet, f, f.len() as u32);
            if i % 500 == 0 || e.outbox.pressing() || e.judged_pressing() {
                e.sync_judged(false);
                verdicts.extend(e.outbox.verdicts.drain(..).map(|v| (v.ts, v.host, v.level)));
                samples += e.outbox.samples.drain(..).count();
                windows += e.outbox.windows.drain(..).count();
                e.outbox.clear();
            }
        }
        e.finish_second();
        e.sync_judged(true);
        verdicts.extend(e.outbox.verdicts.drain(..).map(|v| (v.ts, v.host, v.level)));
        samples += e.outbox.samples.drain(..).count();
        windows += e.outbox.windows.drain(..).count();
        let s = &e.stats;
        assert!(samples > 100 && windows > 20 && !verdicts.is_empty());
        assert_eq!(s.outbox_drops, 0);
        let counts = e.host_counts();
        assert!(counts.active > 0 && counts.capacity == cfg.tables.hosts);
        results.push((verdicts, samples, windows, s.windows, s.verdicts, counts));
    }
    assert_eq!(results[0], results[1]);
}

/// `Outputs` are not needed to judge: a pipeline-less engine with the thread stops cleanly
/// when dropped mid-capture (nothing waits forever).
#[test]
fn an_engine_with_the_judge_thread_drops_cleanly_mid_capture() {
    let cfg = Config::load(&repo().join("config/phantomnet.toml")).unwrap();
    let det = runtime::load_detectors(&cfg).unwrap();
    let mut e = runtime::build_engine(&cfg, det, false);
    e.start_judge_thread().unwrap();
    let dir = TempDir::new("judge-drop");
    let mut out = Outputs::open(&cfg, Some(&dir.path("d.db")), None).unwrap();
    for (ts, f) in every_kind_of_evidence().frames.iter().take(30_000) {
        e.process_frame(*ts, LinkType::Ethernet, f, f.len() as u32);
    }
    e.sync_judged(false);
    out.flush(&mut e);
    drop(e);
}

/// With one CPU core the thread could only take turns with the loop: hosts are judged on the
/// loop, and the log says so.
#[test]
fn one_core_judges_on_the_loop() {
    let dir = TempDir::new("judge-one-core");
    let db = dir.path("one.db");
    let demo = repo().join("tests/data/demo.pcap");
    let cfg = repo().join("config/phantomnet.toml");
    let run = |cpus: &str| {
        std::process::Command::new("taskset")
            .args(["-c", cpus])
            .arg(env!("CARGO_BIN_EXE_phantomnet"))
            .args(["--log", "info", "replay"])
            .arg(&demo)
            .arg("-c")
            .arg(&cfg)
            .arg("--db")
            .arg(&db)
            .output()
    };
    let Ok(one) = run("0") else {
        eprintln!("skipped: no taskset here");
        return;
    };
    assert!(one.status.success());
    let log = String::from_utf8_lossy(&one.stderr);
    assert!(
        log.contains("one CPU core: hosts are judged on the packet loop"),
        "{log}"
    );
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        let two = run("0,1").unwrap();
        assert!(two.status.success());
        assert!(!String::from_utf8_lossy(&two.stderr).contains("one CPU core"));
    }
}
