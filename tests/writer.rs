//! The database writer thread (`[output] writer_thread`): it stores exactly what writing on
//! the loop stores, in the same order; in live mode the loop never waits for it, and every
//! row it could not hold is counted, none silently lost.

use std::path::Path;
use std::time::{Duration, Instant};

use phantomnet::decode::LinkType;
use phantomnet::engine::Engine;
use phantomnet::runtime::{self, Detectors, Outputs};
use rusqlite::Connection;

use crate::hardening::write_config;
use crate::util::scenario::*;
use crate::util::{replay_ok, write_pcap, TempDir};

/// A LAN, a port scan, SSH brute force and a spoofed SYN flood: alerts, verdicts, windows
/// and thousands of flows.
fn busy_capture() -> Capture {
    let mut c = Capture::default();
    let mut rng = Rng(0x77_0001);
    benign_lan(&mut c, &mut rng, T0, 40);
    port_scan(&mut c, T0 + 2 * SEC, (NAS, mac(30)), 1500);
    ssh_bruteforce(&mut c, T0 + 3 * SEC, (SCANNER, mac(66)), (NAS, mac(30)), 40);
    syn_flood(&mut c, &mut rng, T0 + 10 * SEC, 30_000, 3_000, TV, 80);
    c.sort();
    c
}

/// Every row of every table the loop writes, in id order, as text.
pub fn dump(db: &Path) -> Vec<String> {
    let conn = Connection::open(db).unwrap();
    let mut rows = Vec::new();
    for (table, order) in [
        ("alerts", "id"),
        ("verdicts", "id"),
        ("flows", "id"),
        ("window_counts", "rowid"),
    ] {
        let mut st = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .unwrap();
        let n = st.column_count();
        let mut q = st.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            let cols: Vec<String> = (0..n)
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect();
            rows.push(format!("{table}: {}", cols.join("|")));
        }
    }
    rows
}

fn count(db: &Path, table: &str) -> usize {
    let conn = Connection::open(db).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap() as usize
}

#[test]
fn the_writer_thread_stores_exactly_what_inline_writing_stores() {
    let dir = TempDir::new("writer-same");
    let pcap = dir.path("busy.pcap");
    write_pcap(&pcap, &busy_capture().frames);
    let mut dumps = Vec::new();
    // A 64-row outbox: hundreds of batches, and the loop often finds the writer busy.
    for (name, thread) in [("thread", "true"), ("inline", "false")] {
        let cfg = write_config(
            &dir.0,
            &format!("{name}.toml"),
            &[("output.writer_thread", thread), ("tables.outbox", "64")],
        );
        let db = dir.path(&format!("{name}.db"));
        replay_ok(&pcap, &cfg, &db);
        assert!(count(&db, "flows") > 20_000, "{name}: too few flows");
        assert!(count(&db, "alerts") > 0 && count(&db, "verdicts") > 0);
        dumps.push(dump(&db));
    }
    assert_eq!(dumps[0].len(), dumps[1].len());
    for (a, b) in dumps[0].iter().zip(&dumps[1]) {
        assert_eq!(a, b);
    }
}

/// Rows the engine has handed to the outputs so far.
fn offered(e: &Engine) -> usize {
    let o = &e.outbox;
    o.alerts.len() + o.verdicts.len() + o.flows.len() + o.windows.len() + o.samples.len()
}

#[test]
fn live_mode_never_waits_for_a_blocked_writer_and_counts_what_it_drops() {
    let dir = TempDir::new("writer-live");
    let db = dir.path("live.db");
    let mut cfg =
        phantomnet::config::Config::load(&crate::util::repo().join("config/phantomnet.toml"))
            .unwrap();
    cfg.tables.outbox = 64;
    cfg.retention.max_rows = 0;
    cfg.retention.max_bytes = 0;
    let det = Detectors {
        rules: None,
        intel: None,
        model: None,
    };
    let mut engine = runtime::build_engine(&cfg, det, false);
    let mut out = Outputs::open(&cfg, Some(&db), None).unwrap();
    assert!(
        out.writer.is_some(),
        "the default config writes from a thread"
    );
    out.wait_for_writer = false;
    let bound = cfg.tables.outbox * 8;
    let frames = busy_capture().frames;
    let mut total = 0;
    let mut feed = |engine: &mut Engine, out: &mut Outputs, frames: &[(i64, Vec<u8>)]| {
        let mut slowest = Duration::ZERO;
        for (i, (ts, f)) in frames.iter().enumerate() {
            engine.process_frame(*ts, LinkType::Ethernet, f, f.len() as u32);
            if engine.outbox.pressing() || i % 256 == 0 {
                total += offered(engine);
                let t = Instant::now();
                out.flush(engine);
                slowest = slowest.max(t.elapsed());
                assert!(
                    out.backlog() <= bound,
                    "backlog {} over {bound}",
                    out.backlog()
                );
            }
        }
        slowest
    };
    let (first, rest) = frames.split_at(frames.len() / 2);

    // Another process holds the write lock: the writer waits in SQLite's busy handler
    // (5 s), the loop goes on.
    let locker = Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let slowest = feed(&mut engine, &mut out, first);
    assert!(
        slowest < Duration::from_secs(2),
        "a flush waited {slowest:?} for the blocked writer"
    );
    assert!(out.dropped() > 0, "a blocked writer must cost rows here");
    assert_eq!(count(&db, "flows"), 0);
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    // The writer gets the lock on its next try; what it held goes in.
    out.sync();
    let after_unblock = count(&db, "flows");
    assert!(after_unblock > 0);

    // Unblocked: the rest goes in, and once written nothing is unaccounted for.
    feed(&mut engine, &mut out, rest);
    engine.finish_second();
    while !engine.drain_flows() {
        total += offered(&engine);
        out.flush(&mut engine);
    }
    total += offered(&engine);
    out.flush(&mut engine);
    out.sync();
    assert_eq!(out.backlog(), 0);
    let stored: usize = ["alerts", "verdicts", "flows", "window_counts"]
        .iter()
        .map(|t| count(&db, t))
        .sum();
    eprintln!(
        "stored {stored}, dropped {}, offered {total}",
        out.dropped()
    );
    assert!(count(&db, "flows") > after_unblock);
    assert_eq!(
        stored as u64 + out.dropped(),
        total as u64,
        "stored {stored} + dropped {} != offered {total}",
        out.dropped()
    );
}

/// A finished flow row, distinct per `n`.
fn flow_row(n: u64) -> phantomnet::events::FlowRow {
    phantomnet::events::FlowRow {
        flow_id: n + 1,
        start: T0 + n as i64,
        end: T0 + n as i64 + 5,
        src: std::net::IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]),
        src_port: 1024 + (n % 50_000) as u16,
        dst: std::net::IpAddr::from([192, 168, 1, 30]),
        dst_port: 80,
        proto: 6,
        pkts_to_server: 1 + n % 7,
        pkts_to_client: n % 3,
        bytes_to_server: 60 + n % 900,
        bytes_to_client: 0,
        tcp_flags: 0x02,
        reason: "evicted",
    }
}

/// Checkpoints run on their own thread with their own connection, so the writer's commits
/// only append to the WAL. Even under batches without a pause (where a checkpoint running
/// beside the writer never quite finishes) the WAL stays bounded while ~30 MB of rows go
/// through it, every row arrives, and closing leaves no WAL behind.
#[test]
fn checkpoints_run_on_their_own_thread_and_keep_the_wal_small() {
    use phantomnet::sched::Policy;
    use phantomnet::store::{Batch, Store, StoreOptions};
    use phantomnet::writer::{Writer, CHECKPOINT_BYTES};
    let dir = TempDir::new("writer-checkpoint");
    let db = dir.path("ck.db");
    let wal = dir.path("ck.db-wal");
    let store = Store::open(&db, &StoreOptions::default()).unwrap();
    let mut w = Writer::start(store, Policy::Batch).unwrap();
    let per_batch = 20_000u64;
    let batches = 30u64;
    let mut batch = Batch::new(per_batch as usize);
    let mut max_wal = 0u64;
    let mut n = 0u64;
    for _ in 0..batches {
        for _ in 0..per_batch {
            batch.flow(&flow_row(n)).unwrap();
            n += 1;
        }
        assert!(w.send(batch).is_none(), "the writer thread is gone");
        let back = w.poll(true).unwrap().expect("the batch comes back");
        assert!(back.result.is_ok(), "{:?}", back.result);
        batch = back.batch;
        batch.clear();
        max_wal = max_wal.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    // The last nudge may still be at work: give the checkpoint thread a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.checkpoints().0 == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (by_thread, backstops) = w.checkpoints();
    assert!(by_thread >= 1, "no checkpoint ran on the checkpoint thread");
    // The backstop (twice the checkpoint point, whatever the page size), plus the batch that
    // crossed it (~1.1 MB of rows and their index pages).
    let bound = 2 * (CHECKPOINT_BYTES as u64) + (4 << 20);
    assert!(
        max_wal <= bound,
        "the WAL reached {max_wal} bytes (bound {bound}; {by_thread} checkpoints, {backstops} backstops)"
    );
    drop(w);
    assert_eq!(count(&db, "flows"), n as usize);
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "a WAL is left behind after close"
    );
}

/// A reader that holds an old snapshot (a user's sqlite3 shell in a transaction) keeps the
/// WAL from being copied back, so the WAL passes the backstop on every batch; the writer's
/// own checkpoint must then give up at once, not wait out the busy timeout for the reader.
#[test]
fn a_reader_holding_a_snapshot_never_stalls_the_writer() {
    use phantomnet::sched::Policy;
    use phantomnet::store::{Batch, Store, StoreOptions};
    use phantomnet::writer::Writer;
    let dir = TempDir::new("writer-reader");
    let db = dir.path("rd.db");
    let store = Store::open(&db, &StoreOptions::default()).unwrap();
    let mut w = Writer::start(store, Policy::Batch).unwrap();
    let reader = Connection::open(&db).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let before: i64 = reader
        .query_row("SELECT count(*) FROM flows", [], |r| r.get(0))
        .unwrap();
    let mut batch = Batch::new(20_000);
    let mut n = 0u64;
    let mut slowest = Duration::ZERO;
    for _ in 0..12 {
        for _ in 0..20_000 {
            batch.flow(&flow_row(n)).unwrap();
            n += 1;
        }
        let t = Instant::now();
        assert!(w.send(batch).is_none(), "the writer thread is gone");
        let back = w.poll(true).unwrap().expect("the batch comes back");
        // The backstop runs after the batch is handed back: the next round trip waits for it.
        slowest = slowest.max(t.elapsed());
        assert!(back.result.is_ok(), "{:?}", back.result);
        batch = back.batch;
        batch.clear();
    }
    assert!(w.send(batch).is_none());
    let t = Instant::now();
    let _ = w.poll(true).unwrap();
    slowest = slowest.max(t.elapsed());
    // StoreOptions' busy timeout is 5 s: a checkpoint that waited for the reader would
    // take that long at least once.
    assert!(slowest < Duration::from_secs(3), "a write took {slowest:?}");
    // The reader's snapshot never moved.
    let still: i64 = reader
        .query_row("SELECT count(*) FROM flows", [], |r| r.get(0))
        .unwrap();
    assert_eq!(still, before);
    reader.execute_batch("COMMIT").unwrap();
    drop(w);
    assert_eq!(count(&db, "flows"), n as usize);
}
