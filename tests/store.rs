//! Outputs end to end: the SQLite store (schema, migrations, round trips, retention,
//! retryable batches, API queries, backup), EVE JSON lines and threat-intel list files.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use phantomnet::eve::EveWriter;
use phantomnet::events::{micros_to_secs, AlertRow, FlowRow, Level, VerdictRow};
use phantomnet::intel::IntelSet;
use phantomnet::store::{
    Batch, MaxRows, Store, StoreError, StoreOptions, Table, APPLICATION_ID, PAGE_SIZE,
    SCHEMA_VERSION,
};
use rusqlite::Connection;
use serde_json::{json, Value};

/// A scratch directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "phantomnet-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6_doc(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last))
}

/// 2024-02-29T12:00:00.250001Z: a leap day, with odd microseconds.
const T0: i64 = 1_709_208_000_250_001;

fn alert(ts: i64, sid: u32) -> AlertRow<'static> {
    AlertRow {
        ts,
        gid: 1,
        sid,
        rev: 3,
        msg: "ET SCAN \"Nmap\" probe\nline2",
        category: "Attempted Information Leak",
        priority: 2,
        action: "allowed",
        src: v4(192, 168, 1, 23),
        src_port: 51_234,
        dst: v6_doc(1),
        dst_port: 443,
        proto: 6,
        flow_id: 0x7fff_0000_1234_5678,
    }
}

fn verdict(ts: i64, host: IpAddr, level: Level, risk: u8) -> VerdictRow<'static> {
    VerdictRow {
        ts,
        host,
        verdict: level,
        risk,
        anomaly_score: Some(0.734_5),
        confidence: 0.875,
        reasons_json: r#"[{"kind":"anomaly","score":0.7345,"features":["dst_ports"]}]"#,
    }
}

fn flow(end: i64, id: u64) -> FlowRow {
    FlowRow {
        flow_id: id,
        start: end - 2_500_000,
        end,
        src: v4(10, 0, 0, 2),
        src_port: 40_000,
        dst: v4(93, 184, 216, 34),
        dst_port: 80,
        proto: 6,
        pkts_to_server: 7,
        pkts_to_client: 5,
        bytes_to_server: 612,
        bytes_to_client: 4_381,
        tcp_flags: 0x1b,
        reason: "closed",
    }
}

fn no_retention() -> StoreOptions {
    StoreOptions {
        max_rows: MaxRows::default(),
        max_bytes: None,
        ..StoreOptions::default()
    }
}

fn columns(conn: &Connection, table: &str) -> Vec<String> {
    let mut st = conn
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn new_database_has_every_contract_table_and_column() {
    let dir = TempDir::new("schema");
    let db = dir.path("p.db");
    let store = Store::open(&db, &no_retention()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    drop(store);

    let conn = Connection::open(&db).unwrap();
    let want: &[(&str, &[&str])] = &[
        (
            "verdicts",
            &[
                "id",
                "ts",
                "host",
                "verdict",
                "risk",
                "anomaly_score",
                "confidence",
                "reasons_json",
            ],
        ),
        (
            "alerts",
            &[
                "id", "ts", "sid", "rev", "msg", "priority", "src", "src_port", "dst", "dst_port",
                "proto", "gid", "category", "action", "flow_id",
            ],
        ),
        (
            "flows",
            &[
                "id",
                "flow_id",
                "start",
                "end",
                "src",
                "src_port",
                "dst",
                "dst_port",
                "proto",
                "pkts_to_server",
                "pkts_to_client",
                "bytes_to_server",
                "bytes_to_client",
                "tcp_flags",
                "reason",
            ],
        ),
        ("meta", &["key", "value"]),
        (
            "window_counts",
            &["ts", "safe", "warning", "high", "critical"],
        ),
    ];
    for (table, cols) in want {
        let have = columns(&conn, table);
        for c in *cols {
            assert!(have.iter().any(|h| h == c), "{table}.{c} missing: {have:?}");
        }
    }
    let fs = columns(&conn, "feature_samples");
    for c in ["id", "ts", "host"]
        .into_iter()
        .map(String::from)
        .chain((0..15).map(|i| format!("f{i}")))
    {
        assert!(fs.contains(&c), "feature_samples.{c} missing");
    }
    let pragma = |p: &str| -> Value {
        conn.query_row(&format!("PRAGMA {p}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => json!(i),
            rusqlite::types::Value::Text(t) => json!(t),
            other => json!(format!("{other:?}")),
        })
        .unwrap()
    };
    assert_eq!(pragma("journal_mode"), json!("wal"));
    assert_eq!(pragma("auto_vacuum"), json!(2), "INCREMENTAL");
    assert_eq!(pragma("user_version"), json!(SCHEMA_VERSION));
    assert_eq!(pragma("application_id"), json!(APPLICATION_ID));
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for ix in [
        "alerts_ts",
        "verdicts_ts",
        "verdicts_host_ts",
        "feature_samples_ts",
    ] {
        assert!(indexes.iter().any(|i| i == ix), "index {ix}: {indexes:?}");
    }
}

/// The version-1 schema as an older PhantomNet wrote it.
const V1_SCHEMA: &str = r#"
    CREATE TABLE verdicts(id INTEGER PRIMARY KEY, ts REAL NOT NULL, host TEXT NOT NULL,
        verdict TEXT NOT NULL, risk INTEGER NOT NULL, anomaly_score REAL,
        confidence REAL NOT NULL, reasons_json TEXT NOT NULL);
    CREATE TABLE alerts(id INTEGER PRIMARY KEY, ts REAL NOT NULL, sid INTEGER NOT NULL,
        rev INTEGER NOT NULL, msg TEXT NOT NULL, priority INTEGER NOT NULL, src TEXT NOT NULL,
        src_port INTEGER NOT NULL, dst TEXT NOT NULL, dst_port INTEGER NOT NULL,
        proto TEXT NOT NULL);
    CREATE TABLE flows(id INTEGER PRIMARY KEY, flow_id INTEGER NOT NULL, start REAL NOT NULL,
        "end" REAL NOT NULL, src TEXT NOT NULL, src_port INTEGER NOT NULL, dst TEXT NOT NULL,
        dst_port INTEGER NOT NULL, proto TEXT NOT NULL, pkts_to_server INTEGER NOT NULL,
        pkts_to_client INTEGER NOT NULL, bytes_to_server INTEGER NOT NULL,
        bytes_to_client INTEGER NOT NULL, tcp_flags INTEGER NOT NULL, reason TEXT NOT NULL);
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE INDEX verdicts_ts ON verdicts(ts);
    CREATE INDEX alerts_ts ON alerts(ts);
    INSERT INTO verdicts(ts, host, verdict, risk, anomaly_score, confidence, reasons_json)
        VALUES (1700000000.5, '10.0.0.9', 'HIGH', 77, NULL, 0.5, '[]');
    INSERT INTO alerts(ts, sid, rev, msg, priority, src, src_port, dst, dst_port, proto)
        VALUES (1700000001.0, 2001219, 20, 'old alert', 1, '10.0.0.9', 22, '10.0.0.1', 5555, 'TCP');
    INSERT INTO meta VALUES ('model', 'old.json');
    PRAGMA user_version = 1;
"#;

#[test]
fn opening_a_version_1_file_migrates_it_and_keeps_its_rows() {
    let dir = TempDir::new("migrate");
    let db = dir.path("old.db");
    {
        let conn = Connection::open(&db).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.execute_batch(V1_SCHEMA).unwrap();
    }
    let mut store = Store::open(&db, &no_retention()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(
        store.get_meta("model").unwrap().as_deref(),
        Some("old.json")
    );

    // The level column was back-filled from the verdict word.
    let high = store.recent_verdicts(Level::High, 0.0, 10).unwrap();
    assert_eq!(high.len(), 1);
    assert_eq!((high[0].host.as_str(), high[0].risk), ("10.0.0.9", 77));
    assert!(store
        .recent_verdicts(Level::Critical, 0.0, 10)
        .unwrap()
        .is_empty());
    // New alert columns got their defaults.
    let alerts = store.recent_alerts(0.0, None, 10).unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0].gid, alerts[0].action.as_str(), alerts[0].flow_id),
        (1, "allowed", 0)
    );
    // And the new tables work.
    let mut tick = store.begin().unwrap();
    tick.window_counts(T0, [5, 1, 0, 0]).unwrap();
    tick.commit().unwrap();
    assert_eq!(store.verdict_counts(0.0).unwrap().safe, 5);
}

/// New files get the larger page; a file made with another page size keeps it (SQLite can
/// only change it by rewriting the whole file), and the checkpoint point follows each in
/// bytes.
#[test]
fn new_files_use_16_kib_pages_and_old_files_keep_theirs() {
    use phantomnet::writer::{checkpoint_frames, CHECKPOINT_BYTES};
    let dir = TempDir::new("page-size");
    let fresh = Store::open(&dir.path("new.db"), &no_retention()).unwrap();
    assert_eq!(fresh.page_size().unwrap(), PAGE_SIZE);
    assert_eq!(PAGE_SIZE, 16 << 10);
    let db = dir.path("old.db");
    {
        let conn = Connection::open(&db).unwrap();
        conn.pragma_update(None, "page_size", 4096).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.execute_batch(V1_SCHEMA).unwrap();
    }
    let old = Store::open(&db, &no_retention()).unwrap();
    assert_eq!(old.page_size().unwrap(), 4096);
    assert_eq!(checkpoint_frames(4096), 1000);
    assert_eq!(checkpoint_frames(PAGE_SIZE), 250);
    let big = checkpoint_frames(65536) * 65536;
    assert!(
        big <= CHECKPOINT_BYTES && CHECKPOINT_BYTES - big < 65536,
        "{big}"
    );
}

#[test]
fn a_newer_schema_is_refused_naming_both_versions() {
    let dir = TempDir::new("newer");
    let db = dir.path("new.db");
    drop(Store::open(&db, &no_retention()).unwrap());
    Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = Store::open(&db, &no_retention()).err().unwrap();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }));
    let msg = err.to_string();
    assert!(msg.contains(&db.display().to_string()), "{msg}");
    assert!(msg.contains("version 99"), "{msg}");
    assert!(msg.contains(&format!("version {SCHEMA_VERSION}")), "{msg}");
}

#[test]
fn a_foreign_database_is_refused() {
    let dir = TempDir::new("foreign");
    let db = dir.path("other.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t(x)")
        .unwrap();
    let msg = Store::open(&db, &no_retention()).err().unwrap().to_string();
    assert!(msg.contains("not a PhantomNet database"), "{msg}");
    assert!(msg.contains("other.db"), "{msg}");
}

#[test]
fn an_unopenable_path_names_the_file() {
    let db = Path::new("/nonexistent-dir/phantomnet/x.db");
    let msg = Store::open(db, &no_retention()).err().unwrap().to_string();
    assert!(msg.contains("/nonexistent-dir/phantomnet/x.db"), "{msg}");
}

#[test]
fn every_row_kind_round_trips_exactly() {
    let dir = TempDir::new("roundtrip");
    let mut store = Store::open(&dir.path("r.db"), &no_retention()).unwrap();
    let a = alert(T0, 2_010_935);
    let mut a6 = alert(T0 + 1, 7);
    a6.src = IpAddr::V6(Ipv6Addr::new(
        0xfe80, 0, 0, 0, 0x0211, 0x22ff, 0xfe33, 0x4455,
    ));
    a6.proto = 58;
    a6.flow_id = u64::MAX;
    a6.gid = 9_000;
    let v_high = verdict(T0 + 2, v4(10, 0, 0, 9), Level::High, 81);
    let mut v_warn = verdict(T0 + 3, v6_doc(0xab), Level::Warning, 35);
    v_warn.anomaly_score = None;
    let f = flow(T0 + 4, 42);
    let x: [f32; 15] = std::array::from_fn(|i| i as f32 * 0.1 + 1e-7);

    let mut tick = store.begin().unwrap();
    tick.alert(&a).unwrap();
    tick.alert(&a6).unwrap();
    tick.verdict(&v_high).unwrap();
    tick.verdict(&v_warn).unwrap();
    tick.flow(&f).unwrap();
    tick.window_counts(T0, [120, 3, 1, 0]).unwrap();
    tick.window_counts(T0 + 1_000_000, [118, 2, 0, 1]).unwrap();
    tick.feature_sample(T0, v4(10, 0, 0, 9), &x).unwrap();
    tick.commit().unwrap();
    store.set_meta("model", "models/default.json").unwrap();
    store.set_meta("model", "models/v2.json").unwrap();

    let alerts = store.recent_alerts(0.0, None, 10).unwrap();
    assert_eq!(alerts.len(), 2);
    let (r6, r) = (&alerts[0], &alerts[1]);
    assert_eq!(r.ts, micros_to_secs(T0));
    assert_eq!((r.gid, r.sid, r.rev, r.priority), (1, 2_010_935, 3, 2));
    assert_eq!(r.msg, a.msg);
    assert_eq!(r.category, "Attempted Information Leak");
    assert_eq!(r.action, "allowed");
    assert_eq!((r.src.as_str(), r.src_port), ("192.168.1.23", 51_234));
    assert_eq!((r.dst.as_str(), r.dst_port), ("2001:db8::1", 443));
    assert_eq!(r.proto, "TCP");
    assert_eq!(r.flow_id, 0x7fff_0000_1234_5678);
    assert_eq!(r6.src, "fe80::211:22ff:fe33:4455");
    assert_eq!(
        (r6.proto.as_str(), r6.gid, r6.flow_id),
        ("IPv6-ICMP", 9_000, u64::MAX)
    );
    assert_eq!(
        store.recent_alerts(0.0, Some(7), 10).unwrap(),
        vec![r6.clone()]
    );

    let verdicts = store.recent_verdicts(Level::Warning, 0.0, 10).unwrap();
    assert_eq!(verdicts.len(), 2);
    let w = &verdicts[0];
    assert_eq!(w.ts, micros_to_secs(T0 + 3));
    assert_eq!(
        (w.host.as_str(), w.verdict.as_str(), w.risk),
        ("2001:db8::ab", "WARNING", 35)
    );
    assert_eq!((w.anomaly_score, w.confidence), (None, 0.875));
    let h = &verdicts[1];
    assert_eq!(h.anomaly_score, Some(0.734_5));
    assert_eq!(
        h.reasons,
        json!([{"kind": "anomaly", "score": 0.7345, "features": ["dst_ports"]}])
    );
    // The API struct serialises with the reasons as an array, not a string.
    let js = serde_json::to_value(h).unwrap();
    assert_eq!(js["reasons"][0]["kind"], "anomaly");
    assert_eq!(js["verdict"], "HIGH");

    let flows = store.recent_flows(0.0, 10).unwrap();
    assert_eq!(flows.len(), 1);
    let fr = &flows[0];
    assert_eq!(fr.flow_id, 42);
    assert_eq!(
        (fr.start, fr.end),
        (micros_to_secs(f.start), micros_to_secs(f.end))
    );
    assert_eq!(
        (fr.src.as_str(), fr.src_port, fr.dst.as_str(), fr.dst_port),
        ("10.0.0.2", 40_000, "93.184.216.34", 80)
    );
    assert_eq!(fr.proto, "TCP");
    assert_eq!(
        (
            fr.pkts_to_server,
            fr.pkts_to_client,
            fr.bytes_to_server,
            fr.bytes_to_client
        ),
        (7, 5, 612, 4_381)
    );
    assert_eq!((fr.tcp_flags, fr.reason.as_str()), (0x1b, "closed"));

    let counts = store.verdict_counts(0.0).unwrap();
    assert_eq!(
        (counts.safe, counts.warning, counts.high, counts.critical),
        (238, 5, 1, 1)
    );
    let later = store.verdict_counts(micros_to_secs(T0 + 1)).unwrap();
    assert_eq!(later.safe, 118);

    let samples = store.feature_samples(0.0, 10).unwrap();
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].ts, micros_to_secs(T0));
    assert_eq!(samples[0].host, "10.0.0.9");
    assert_eq!(samples[0].features, x, "f32 → REAL → f32 is exact");

    assert_eq!(
        store.get_meta("model").unwrap().as_deref(),
        Some("models/v2.json")
    );
    assert_eq!(store.get_meta("absent").unwrap(), None);
    assert_eq!(store.stats().rows_written, 8);
}

#[test]
fn a_dropped_tick_rolls_back() {
    let dir = TempDir::new("rollback");
    let mut store = Store::open(&dir.path("r.db"), &no_retention()).unwrap();
    {
        let mut tick = store.begin().unwrap();
        tick.alert(&alert(T0, 1)).unwrap();
    }
    assert_eq!(store.count(Table::Alerts).unwrap(), 0);
    let mut tick = store.begin().unwrap();
    tick.alert(&alert(T0, 1)).unwrap();
    tick.commit().unwrap();
    assert_eq!(store.count(Table::Alerts).unwrap(), 1);
}

#[test]
fn queries_filter_order_and_summarise_hosts() {
    let dir = TempDir::new("queries");
    let mut store = Store::open(&dir.path("q.db"), &no_retention()).unwrap();
    let a = v4(10, 0, 0, 5);
    let b = v6_doc(7);
    let c = v4(10, 0, 0, 6);
    let s = 1_000_000;
    let mut batch = Batch::new(100);
    batch.verdict(&verdict(T0, a, Level::Warning, 30)).unwrap();
    batch
        .verdict(&verdict(T0 + s, a, Level::Critical, 95))
        .unwrap();
    batch
        .verdict(&verdict(T0 + 2 * s, a, Level::Warning, 40))
        .unwrap();
    batch.verdict(&verdict(T0 + s, b, Level::High, 70)).unwrap();
    batch
        .verdict(&verdict(T0 - 100 * s, c, Level::Critical, 99))
        .unwrap();
    for i in 0..5 {
        batch
            .alert(&alert(T0 + i * s, 100 + (i as u32 % 2)))
            .unwrap();
    }
    store.write(&batch).unwrap();

    let since = micros_to_secs(T0 - s);
    let hosts = store.hosts(since, 10).unwrap();
    assert_eq!(hosts.len(), 2, "c is older than the window");
    let ha = &hosts[0];
    assert_eq!(ha.host, "10.0.0.5");
    assert_eq!((ha.last_verdict.as_str(), ha.last_risk), ("WARNING", 40));
    assert_eq!(ha.last_ts, micros_to_secs(T0 + 2 * s));
    assert_eq!((ha.max_verdict.as_str(), ha.max_risk), ("CRITICAL", 95));
    assert_eq!((ha.warning, ha.high, ha.critical), (2, 0, 1));
    let hb = &hosts[1];
    assert_eq!(
        (hb.host.as_str(), hb.max_verdict.as_str(), hb.high),
        ("2001:db8::7", "HIGH", 1)
    );
    assert_eq!(store.hosts(since, 1).unwrap().len(), 1);

    let v = store.recent_verdicts(Level::High, since, 10).unwrap();
    assert_eq!(
        v.iter()
            .map(|r| (r.host.as_str(), r.risk))
            .collect::<Vec<_>>(),
        vec![("2001:db8::7", 70), ("10.0.0.5", 95)],
        "same ts: newest id first"
    );
    let all = store.recent_verdicts(Level::Safe, 0.0, 3).unwrap();
    assert_eq!(
        all.iter().map(|r| r.risk).collect::<Vec<_>>(),
        vec![40, 70, 95]
    );

    let alerts = store
        .recent_alerts(micros_to_secs(T0 + s), Some(101), 10)
        .unwrap();
    assert_eq!(alerts.len(), 2);
    assert!(alerts[0].ts > alerts[1].ts);
    assert!(alerts.iter().all(|r| r.sid == 101));
}

#[test]
fn a_full_disk_keeps_the_batch_for_a_retry() {
    let dir = TempDir::new("full");
    let db = dir.path("full.db");
    let tight = StoreOptions {
        hard_limit_bytes: Some(96 * 1024),
        ..no_retention()
    };
    let mut store = Store::open(&db, &tight).unwrap();
    let mut batch = Batch::new(5_000);
    let long = "x".repeat(200);
    let mut row = alert(T0, 1);
    row.msg = &long;
    for i in 0..2_000 {
        row.ts = T0 + i;
        row.sid = i as u32;
        batch.alert(&row).unwrap();
    }
    let err = store.write(&batch).unwrap_err();
    assert!(err.is_full(), "{err}");
    assert!(err.to_string().contains("full.db"), "{err}");
    assert_eq!(store.count(Table::Alerts).unwrap(), 0, "all or nothing");
    assert_eq!(batch.len(), 2_000, "the batch is intact");
    assert_eq!(store.stats().failed_writes, 1);
    drop(store);

    // Room again (here: a larger limit); the same batch goes in once, complete.
    let mut store = Store::open(&db, &no_retention()).unwrap();
    store.write(&batch).unwrap();
    assert_eq!(store.count(Table::Alerts).unwrap(), 2_000);
    let newest = store.recent_alerts(0.0, None, 1).unwrap();
    assert_eq!((newest[0].sid, newest[0].msg.len()), (1_999, 200));
    batch.clear();
    assert!(batch.is_empty());
}

#[test]
fn retention_options_from_the_config_section() {
    let o = StoreOptions::from_retention(200_000, 0);
    assert_eq!(o.max_rows.alerts, Some(200_000));
    assert_eq!(o.max_rows.window_counts, Some(200_000));
    assert_eq!(o.max_bytes, None);
    let o = StoreOptions::from_retention(0, 64 << 20);
    assert_eq!(o.max_rows, MaxRows::default());
    assert_eq!(o.max_bytes, Some(64 << 20));
}

#[test]
fn a_full_batch_drops_and_counts() {
    let mut batch = Batch::new(3);
    for i in 0..3 {
        batch.flow(&flow(T0 + i, i as u64)).unwrap();
    }
    assert!(batch.alert(&alert(T0, 1)).is_err());
    assert!(batch.window_counts(T0, [1, 0, 0, 0]).is_err());
    assert_eq!((batch.len(), batch.dropped()), (3, 2));
    batch.clear();
    batch.alert(&alert(T0, 1)).unwrap();
    assert_eq!(batch.alerts().next().unwrap(), alert(T0, 1));
}

#[test]
fn row_retention_deletes_the_oldest() {
    let dir = TempDir::new("rows");
    let opts = StoreOptions {
        max_rows: MaxRows {
            alerts: Some(100),
            window_counts: Some(10),
            ..MaxRows::default()
        },
        max_bytes: None,
        retention_every: 5,
        delete_chunk: 7,
        ..StoreOptions::default()
    };
    let mut store = Store::open(&dir.path("rows.db"), &opts).unwrap();
    let mut batch = Batch::new(100);
    for tick in 0..25i64 {
        for j in 0..10i64 {
            let n = tick * 10 + j;
            batch.alert(&alert(T0 + n * 1_000, n as u32)).unwrap();
        }
        batch.window_counts(T0 + tick, [1, 0, 0, 0]).unwrap();
        batch.flow(&flow(T0 + tick, tick as u64)).unwrap();
        store.write(&batch).unwrap();
        batch.clear();
    }
    // Retention ran after commit 25: exactly the newest 100 alerts remain.
    assert_eq!(store.count(Table::Alerts).unwrap(), 100);
    let oldest = store.recent_alerts(0.0, None, 1_000).unwrap();
    assert_eq!(oldest.last().unwrap().sid, 150);
    assert_eq!(oldest.first().unwrap().sid, 249);
    assert_eq!(store.count(Table::WindowCounts).unwrap(), 10);
    assert_eq!(store.count(Table::Flows).unwrap(), 25, "no bound on flows");
    assert_eq!(store.stats().rows_deleted, 150 + 15);
    assert_eq!(store.stats().retention_runs, 5);
}

#[test]
fn byte_retention_shrinks_the_file() {
    let dir = TempDir::new("bytes");
    let db = dir.path("bytes.db");
    let mut store = Store::open(&db, &no_retention()).unwrap();
    let mut batch = Batch::new(20_000);
    let reasons = format!(
        "[{}]",
        vec!["{\"kind\":\"signature\",\"sid\":1}"; 20].join(",")
    );
    for i in 0..10_000i64 {
        let mut v = verdict(
            T0 + i,
            v4(10, 0, (i / 256) as u8, i as u8),
            Level::Warning,
            30,
        );
        v.reasons_json = &reasons;
        batch.verdict(&v).unwrap();
    }
    let t = Instant::now();
    store.write(&batch).unwrap();
    eprintln!(
        "store: one transaction of 10,000 verdicts in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let before = store.used_bytes().unwrap();
    assert!(before > 4 << 20, "{before}");
    drop(store);

    let limit = 1 << 20;
    let opts = StoreOptions {
        max_bytes: Some(limit),
        ..no_retention()
    };
    let mut store = Store::open(&db, &opts).unwrap();
    let report = store.enforce_retention().unwrap();
    assert_eq!(report.used_bytes_before, before);
    assert!(report.used_bytes_after <= limit, "{report:?}");
    let page_count: i64 = {
        let conn = Connection::open(&db).unwrap();
        conn.query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap()
    };
    assert!(
        (page_count as u64) * 4096 <= limit + 64 * 1024,
        "file shrank: {page_count} pages"
    );
    // The newest verdicts survived.
    let left = store.count(Table::Verdicts).unwrap();
    assert!(left > 0 && left < 10_000, "{left}");
    let newest = store.recent_verdicts(Level::Safe, 0.0, 1).unwrap();
    assert_eq!(newest[0].ts, micros_to_secs(T0 + 9_999));
}

#[test]
fn backup_is_a_consistent_standalone_copy() {
    let dir = TempDir::new("backup");
    let mut store = Store::open(&dir.path("live.db"), &no_retention()).unwrap();
    let mut tick = store.begin().unwrap();
    for i in 0..50 {
        tick.alert(&alert(T0 + i, i as u32)).unwrap();
    }
    tick.commit().unwrap();
    store.set_meta("schema", "phantomnet.features.v1").unwrap();
    let snap = dir.path("snap.db");
    store.backup_to(&snap).unwrap();
    // Still writable afterwards, and the copy does not see later rows.
    let mut tick = store.begin().unwrap();
    tick.alert(&alert(T0 + 99, 99)).unwrap();
    tick.commit().unwrap();

    let conn = Connection::open(&snap).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 50);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
    drop(conn);
    let copy = Store::open(&snap, &no_retention()).unwrap();
    assert_eq!(
        copy.get_meta("schema").unwrap().as_deref(),
        Some("phantomnet.features.v1")
    );

    let err = store
        .backup_to(Path::new("/nonexistent-dir/snap.db"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent-dir/snap.db") && err.contains("live.db"),
        "{err}"
    );
}

// ---- EVE JSON ----

fn eve_lines(write: impl FnOnce(&mut EveWriter<Vec<u8>>)) -> Vec<Value> {
    let mut w = EveWriter::from_writer(Vec::new(), Path::new("<memory>"));
    write(&mut w);
    w.flush().unwrap();
    let text = String::from_utf8(w.get_ref().clone()).unwrap();
    assert!(text.ends_with('\n'));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn eve_alert_has_suricata_fields() {
    let a = alert(1_453_919_525_123_456, 2_010_935);
    let lines = eve_lines(|w| w.alert(&a).unwrap());
    assert_eq!(
        lines[0],
        json!({
            "timestamp": "2016-01-27T18:32:05.123456+0000",
            "flow_id": 0x7fff_0000_1234_5678_u64,
            "event_type": "alert",
            "src_ip": "192.168.1.23",
            "src_port": 51234,
            "dest_ip": "2001:db8::1",
            "dest_port": 443,
            "proto": "TCP",
            "alert": {
                "action": "allowed",
                "gid": 1,
                "signature_id": 2010935,
                "rev": 3,
                "signature": "ET SCAN \"Nmap\" probe\nline2",
                "category": "Attempted Information Leak",
                "severity": 2
            }
        })
    );
}

#[test]
fn eve_sensor_name_and_portless_protocols() {
    let mut a = alert(0, 5);
    a.proto = 1;
    a.flow_id = 0;
    a.src = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201));
    let mut arp = alert(-1, 6);
    arp.proto = 0;
    arp.gid = 3;
    let lines = eve_lines(|w| {
        w.set_sensor_name(Some("router \"lan\""));
        w.alert(&a).unwrap();
        w.set_sensor_name(None);
        w.alert(&arp).unwrap();
    });
    let l = &lines[0];
    assert_eq!(l["host"], "router \"lan\"");
    assert_eq!(l["timestamp"], "1970-01-01T00:00:00.000000+0000");
    assert_eq!(l["proto"], "ICMP");
    assert_eq!(l["src_ip"], "::ffff:192.0.2.1");
    assert!(l.get("src_port").is_none() && l.get("dest_port").is_none());
    assert!(l.get("flow_id").is_none());
    let l = &lines[1];
    assert!(l.get("host").is_none());
    assert!(l.get("proto").is_none());
    assert_eq!(l["timestamp"], "1969-12-31T23:59:59.999999+0000");
    assert_eq!(l["alert"]["gid"], 3);
}

#[test]
fn eve_verdict_embeds_reasons_as_json() {
    let v = verdict(951_782_400_000_000, v6_doc(0xab), Level::Critical, 97);
    let mut bad = verdict(951_782_400_000_000, v4(10, 0, 0, 1), Level::Warning, 20);
    bad.anomaly_score = None;
    bad.reasons_json = "not json\n";
    let mut multiline = verdict(0, v4(10, 0, 0, 2), Level::High, 60);
    multiline.reasons_json = "[\n  {\"kind\": \"intel\",\n   \"list\": \"drop\"}\n]";
    let lines = eve_lines(|w| {
        w.verdict(&v).unwrap();
        w.verdict(&bad).unwrap();
        w.verdict(&multiline).unwrap();
        assert_eq!(w.lines(), 3);
    });
    assert_eq!(lines.len(), 3, "one event per line");
    assert_eq!(
        lines[0],
        json!({
            "timestamp": "2000-02-29T00:00:00.000000+0000",
            "event_type": "verdict",
            "src_ip": "2001:db8::ab",
            "verdict": {
                "host": "2001:db8::ab",
                "level": "CRITICAL",
                "risk": 97,
                "anomaly_score": 0.7345,
                "confidence": 0.875,
                "reasons": [{"kind": "anomaly", "score": 0.7345, "features": ["dst_ports"]}]
            }
        })
    );
    assert_eq!(lines[1]["verdict"]["anomaly_score"], Value::Null);
    assert_eq!(
        lines[1]["verdict"]["reasons"],
        json!([{"kind": "invalid", "text": "not json\n"}])
    );
    assert_eq!(
        lines[2]["verdict"]["reasons"],
        json!([{"kind": "intel", "list": "drop"}])
    );
}

#[test]
fn eve_flow_has_suricata_flow_object() {
    let mut f = flow(1_456_790_399_000_000, 77);
    let mut udp = flow(1_456_790_399_000_000, 78);
    udp.proto = 17;
    udp.tcp_flags = 0;
    udp.reason = "timeout";
    udp.pkts_to_client = 0;
    f.start = f.end - 61_500_000;
    let lines = eve_lines(|w| {
        w.flow(&f).unwrap();
        w.flow(&udp).unwrap();
    });
    assert_eq!(
        lines[0],
        json!({
            "timestamp": "2016-02-29T23:59:59.000000+0000",
            "flow_id": 77,
            "event_type": "flow",
            "src_ip": "10.0.0.2",
            "src_port": 40000,
            "dest_ip": "93.184.216.34",
            "dest_port": 80,
            "proto": "TCP",
            "flow": {
                "pkts_toserver": 7,
                "pkts_toclient": 5,
                "bytes_toserver": 612,
                "bytes_toclient": 4381,
                "start": "2016-02-29T23:58:57.500000+0000",
                "end": "2016-02-29T23:59:59.000000+0000",
                "age": 61,
                "state": "closed",
                "reason": "closed"
            },
            "tcp": {"tcp_flags": "1b", "fin": true, "syn": true, "psh": true, "ack": true}
        })
    );
    assert_eq!(lines[1]["flow"]["state"], "new");
    assert_eq!(lines[1]["flow"]["reason"], "timeout");
    assert_eq!(lines[1]["proto"], "UDP");
    assert!(lines[1].get("tcp").is_none());
}

#[test]
fn eve_file_is_appended_to() {
    let dir = TempDir::new("eve");
    let path = dir.path("eve.json");
    for sid in [1, 2] {
        let mut w = EveWriter::open(&path).unwrap();
        w.alert(&alert(T0, sid)).unwrap();
        w.flush().unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let sids: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["alert"]["signature_id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(sids, vec![1, 2]);

    // Rotation: after the file is moved away, reopen writes to a new file at the path.
    let mut w = EveWriter::open(&path).unwrap();
    let rotated = dir.path("eve.json.1");
    std::fs::rename(&path, &rotated).unwrap();
    w.alert(&alert(T0, 3)).unwrap();
    w.reopen().unwrap();
    w.alert(&alert(T0, 4)).unwrap();
    w.flush().unwrap();
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        3
    );
    let fresh = std::fs::read_to_string(&path).unwrap();
    assert_eq!(fresh.lines().count(), 1);
    assert!(fresh.contains("\"signature_id\":4"));
    let err = EveWriter::open(Path::new("/nonexistent-dir/eve.json"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent-dir/eve.json"), "{err}");
}

// ---- threat intel ----

#[test]
fn intel_lists_load_from_files_in_order() {
    let dir = TempDir::new("intel");
    let drop = dir.path("drop.txt");
    let rep = dir.path("reputation.list");
    std::fs::write(
        &drop,
        "; Spamhaus DROP\n203.0.113.0/24 ; SBL1\n2001:db8:bad::/48 ; SBL2\n",
    )
    .unwrap();
    std::fs::write(&rep, "203.0.113.9,5,120\n198.51.100.1,1,10\nbogus\n").unwrap();
    let (set, report) = IntelSet::load(&[
        ("spamhaus-drop".to_string(), drop.clone()),
        ("iprep".to_string(), rep.clone()),
    ])
    .unwrap();
    assert_eq!(report.entries(), 4);
    assert_eq!(report.bad_lines(), 1);
    assert!(report.lists[1].warnings[0].starts_with(&format!("{}:3: ", rep.display())));
    let hit = set.lookup(v4(203, 0, 113, 8)).unwrap();
    assert_eq!(
        (set.list_name(hit.list), hit.note),
        ("spamhaus-drop", "SBL1")
    );
    let hit = set.lookup(v4(203, 0, 113, 9)).unwrap();
    assert_eq!(
        (set.list_name(hit.list), hit.category, hit.score),
        ("iprep", "5", Some(120))
    );
    let hit = set.lookup("2001:db8:bad:ffff::1".parse().unwrap()).unwrap();
    assert_eq!(hit.note, "SBL2");
    assert!(set.lookup("2001:db8:bae::".parse().unwrap()).is_none());
    assert!(set.lookup(v4(198, 51, 100, 2)).is_none());
}

#[test]
fn intel_loads_100k_entries_quickly() {
    let dir = TempDir::new("intel100k");
    let path = dir.path("big.netset");
    let mut text = String::with_capacity(3 << 20);
    text.push_str("# FireHOL-style netset, generated\n");
    let mut s: u32 = 0x1234_5678;
    for i in 0..100_000u32 {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        let a = Ipv4Addr::from(s);
        match i % 10 {
            0 => text.push_str(&format!("{a}/24\n")),
            1 => text.push_str(&format!("{},3,{}\n", a, i % 128)),
            2 => text.push_str(&format!("2001:db8:{:x}:{:x}::/64\n", s >> 16, s & 0xffff)),
            3 => text.push_str(&format!("{a} ; SBL{i}\n")),
            _ => text.push_str(&format!("{a}\n")),
        }
    }
    std::fs::write(&path, &text).unwrap();
    let t = Instant::now();
    let (set, report) = IntelSet::load(&[("big".to_string(), path)]).unwrap();
    let took = t.elapsed();
    eprintln!(
        "intel: loaded {} entries into {} v4 + {} v6 ranges in {:.1} ms",
        report.entries(),
        report.v4_ranges,
        report.v6_ranges,
        took.as_secs_f64() * 1e3
    );
    assert_eq!(report.entries(), 100_000);
    assert_eq!(report.bad_lines(), 0);
    assert!(took.as_secs_f64() < 1.0, "took {took:?}");
    let first = Ipv4Addr::from({
        let mut s: u32 = 0x1234_5678;
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    });
    assert!(set.lookup(IpAddr::V4(first)).is_some());
    let t = Instant::now();
    let mut hits = 0u32;
    for i in 0..1_000_000u32 {
        hits += u32::from(
            set.lookup(IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761))))
                .is_some(),
        );
    }
    eprintln!(
        "intel: 1M lookups in {:.1} ms ({hits} hits)",
        t.elapsed().as_secs_f64() * 1e3
    );
}

#[test]
fn many_flows_in_one_tick_keep_every_field_and_order() {
    // 100 rows: three multi-row statements of 32 and four single-row ones.
    let dir = TempDir::new("manyflows");
    let mut store = Store::open(&dir.path("f.db"), &no_retention()).unwrap();
    let rows: Vec<FlowRow> = (0..100u64)
        .map(|i| FlowRow {
            flow_id: 1_000 + i,
            start: T0 + i as i64,
            end: T0 + 10 * i as i64,
            src: v4(10, (i / 7) as u8, 200, i as u8),
            src_port: 1_000 + i as u16,
            dst: if i % 2 == 0 {
                v4(192, 168, 1, 1)
            } else {
                "2001:db8::1".parse().unwrap()
            },
            dst_port: 443 - i as u16,
            proto: if i % 3 == 0 { 17 } else { 6 },
            pkts_to_server: i,
            pkts_to_client: 2 * i,
            bytes_to_server: 3 * i,
            bytes_to_client: 4 * i,
            tcp_flags: i as u8,
            reason: if i % 2 == 0 { "timeout" } else { "evicted" },
        })
        .collect();
    let mut batch = Batch::new(1_000);
    for r in &rows {
        batch.flow(r).unwrap();
    }
    store.write(&batch).unwrap();
    let mut got = store.recent_flows(0.0, 1_000).unwrap();
    assert_eq!(got.len(), 100);
    got.sort_by_key(|f| f.flow_id);
    for (r, g) in rows.iter().zip(&got) {
        assert_eq!(g.flow_id, r.flow_id);
        assert_eq!(
            (g.start, g.end),
            (micros_to_secs(r.start), micros_to_secs(r.end))
        );
        assert_eq!(g.src, r.src.to_string());
        assert_eq!(g.dst, r.dst.to_string());
        assert_eq!((g.src_port, g.dst_port), (r.src_port, r.dst_port));
        assert_eq!(g.proto, if r.proto == 17 { "UDP" } else { "TCP" });
        assert_eq!(
            (
                g.pkts_to_server,
                g.pkts_to_client,
                g.bytes_to_server,
                g.bytes_to_client
            ),
            (
                r.pkts_to_server,
                r.pkts_to_client,
                r.bytes_to_server,
                r.bytes_to_client
            )
        );
        assert_eq!((g.tcp_flags, g.reason.as_str()), (r.tcp_flags, r.reason));
    }
}

/// A flow unlike its neighbours in every column.
fn varied_flow(i: u64) -> FlowRow {
    FlowRow {
        flow_id: 1_000 + i,
        start: T0 + i as i64 * 997,
        end: T0 + i as i64 * 997 + (i as i64 % 5) * 1_234_567,
        src: v4(10, (i / 7) as u8, 200, i as u8),
        src_port: 1_000 + i as u16,
        dst: if i % 2 == 0 {
            v4(192, 168, 1, 1)
        } else {
            "2001:db8::1".parse().unwrap()
        },
        dst_port: 443u16.wrapping_sub(i as u16),
        proto: [6, 17, 1, 58, 0, 99][i as usize % 6],
        pkts_to_server: i,
        pkts_to_client: 2 * i,
        bytes_to_server: 3 * i + (1 << 40),
        bytes_to_client: 4 * i,
        tcp_flags: i as u8,
        reason: ["timeout", "evicted", "closed", "shutdown"][i as usize % 4],
    }
}

type FlowTuple = (
    i64,
    i64,
    f64,
    f64,
    String,
    i64,
    String,
    i64,
    String,
    (i64, i64, i64, i64),
    i64,
    String,
);

/// Every row of the `flows` view in id order, as a plain SQLite reader sees it.
fn flows_in_view(db: &Path) -> Vec<FlowTuple> {
    let conn = Connection::open(db).unwrap();
    let mut st = conn
        .prepare(
            "SELECT id, flow_id, start, \"end\", src, src_port, dst, dst_port, proto, \
             pkts_to_server, pkts_to_client, bytes_to_server, bytes_to_client, tcp_flags, \
             reason FROM flows ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            (r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?),
            r.get(13)?,
            r.get(14)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn expected_tuple(id: i64, f: &FlowRow) -> FlowTuple {
    (
        id,
        f.flow_id as i64,
        micros_to_secs(f.start),
        micros_to_secs(f.end),
        f.src.to_string(),
        i64::from(f.src_port),
        f.dst.to_string(),
        i64::from(f.dst_port),
        phantomnet::events::proto_name(f.proto).to_string(),
        (
            f.pkts_to_server as i64,
            f.pkts_to_client as i64,
            f.bytes_to_server as i64,
            f.bytes_to_client as i64,
        ),
        i64::from(f.tcp_flags),
        f.reason.to_string(),
    )
}

#[test]
fn flows_span_chunks_and_read_back_exactly_through_the_view() {
    // 2,500 flows over two ticks: chunks of 1,024 and 976, then 500 (a tick's flows start a
    // new chunk); ids run on across chunks and ticks.
    let dir = TempDir::new("chunks");
    let db = dir.path("c.db");
    let mut store = Store::open(&db, &no_retention()).unwrap();
    let rows: Vec<FlowRow> = (0..2_500).map(varied_flow).collect();
    let mut batch = Batch::new(10_000);
    for r in &rows[..2_000] {
        batch.flow(r).unwrap();
    }
    store.write(&batch).unwrap();
    batch.clear();
    for r in &rows[2_000..] {
        batch.flow(r).unwrap();
    }
    store.write(&batch).unwrap();
    assert_eq!(store.count(Table::Flows).unwrap(), 2_500);
    let chunks: Vec<(i64, i64)> = Connection::open(&db)
        .unwrap()
        .prepare("SELECT first_id, n FROM flow_chunks ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(chunks, vec![(1, 1_024), (1_025, 976), (2_001, 500)]);
    let want: Vec<FlowTuple> = rows
        .iter()
        .enumerate()
        .map(|(i, f)| expected_tuple(i as i64 + 1, f))
        .collect();
    assert_eq!(flows_in_view(&db), want);
    // The API query unpacks only chunks that can hold recent flows, and agrees with the view.
    let since = micros_to_secs(rows[2_400].end);
    let recent = store.recent_flows(since, 5).unwrap();
    let mut newest: Vec<&FlowTuple> = want.iter().filter(|t| t.3 >= since).collect();
    newest.sort_by(|a, b| b.3.total_cmp(&a.3).then(b.0.cmp(&a.0)));
    let got: Vec<(i64, f64)> = recent.iter().map(|f| (f.id, f.end)).collect();
    let expect: Vec<(i64, f64)> = newest.iter().take(5).map(|t| (t.0, t.3)).collect();
    assert_eq!(got, expect);
}

#[test]
fn flow_row_retention_drops_whole_oldest_chunks_and_counts_flows() {
    let dir = TempDir::new("flowret");
    let opts = StoreOptions {
        max_rows: MaxRows {
            flows: Some(2_000),
            ..MaxRows::default()
        },
        max_bytes: None,
        retention_every: 1,
        delete_chunk: 1,
        ..StoreOptions::default()
    };
    let db = dir.path("r.db");
    let mut store = Store::open(&db, &opts).unwrap();
    let mut batch = Batch::new(10_000);
    let mut next = 0u64;
    for _tick in 0..6 {
        for _ in 0..700 {
            batch.flow(&varied_flow(next)).unwrap();
            next += 1;
        }
        store.write(&batch).unwrap();
        batch.clear();
    }
    // 4,200 flows in six chunks of 700: the newest two (1,400) fit, a third would not.
    assert_eq!(store.count(Table::Flows).unwrap(), 1_400);
    assert_eq!(store.stats().rows_deleted, 2_800);
    let got = flows_in_view(&db);
    assert_eq!(got.len(), 1_400);
    assert_eq!(got[0], expected_tuple(2_801, &varied_flow(2_800)));
    assert_eq!(got[1_399], expected_tuple(4_200, &varied_flow(4_199)));
}

/// A file from before flow chunks, with flow ids 1-1,500 and 1,601-2,300 (a user deleted
/// some): every row keeps its id and values, and new flows carry on after the highest id.
#[test]
fn migrating_flow_rows_into_chunks_keeps_ids_and_values() {
    let dir = TempDir::new("migflows");
    let db = dir.path("old.db");
    {
        let conn = Connection::open(&db).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.execute_batch(V1_SCHEMA).unwrap();
    }
    // Rows as versions 1 and 2 wrote them (the flows table did not change between them):
    // times in seconds, proto and reason as text. One transaction (not 2,200 syncs).
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        let mut st = conn
            .prepare(
                "INSERT INTO flows(id, flow_id, start, \"end\", src, src_port, dst, dst_port, \
                 proto, pkts_to_server, pkts_to_client, bytes_to_server, bytes_to_client, \
                 tcp_flags, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
                 ?13, ?14, ?15)",
            )
            .unwrap();
        let mut want = Vec::new();
        for i in 0..2_200u64 {
            let id = if i < 1_500 { i + 1 } else { i + 101 } as i64;
            let f = varied_flow(i);
            let t = expected_tuple(id, &f);
            st.execute(rusqlite::params![
                t.0, t.1, t.2, t.3, t.4, t.5, t.6, t.7, t.8, t.9 .0, t.9 .1, t.9 .2, t.9 .3, t.10,
                t.11
            ])
            .unwrap();
            want.push(t);
        }
        drop(st);
        conn.execute_batch("COMMIT").unwrap();
        drop(conn);
        let mut store = Store::open(&db, &no_retention()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.count(Table::Flows).unwrap(), 2_200);
        assert_eq!(flows_in_view(&db), want);
        // New flows carry on after the highest id.
        let mut batch = Batch::new(10);
        batch.flow(&varied_flow(9_999)).unwrap();
        store.write(&batch).unwrap();
        let all = flows_in_view(&db);
        assert_eq!(
            all.last().unwrap(),
            &expected_tuple(2_301, &varied_flow(9_999))
        );
    }
}

/// The view maps every stored code back exactly: all 256 protocol numbers (named ones are
/// stored as numbers, the rest as "OTHER"), every reason and an unknown one, IPv4 extremes,
/// and flow ids on both sides of the bound where a chunk falls back to absolute ids.
#[test]
fn every_protocol_reason_and_id_reads_back_through_the_view() {
    let dir = TempDir::new("codes");
    let db = dir.path("c.db");
    let mut store = Store::open(&db, &no_retention()).unwrap();
    let reasons = ["timeout", "closed", "evicted", "shutdown", "x"];
    let mut ticks: Vec<Vec<FlowRow>> = vec![(0..256u64)
        .map(|p| {
            let mut f = varied_flow(p);
            f.proto = p as u8;
            f.reason = reasons[p as usize % reasons.len()];
            f.src = v4(0, 0, 0, 0);
            f.dst = v4(255, 255, 255, 255);
            f
        })
        .collect()];
    // Ids that read back only if no sum in the view overflows: -1 and 0 as SQL integers sit
    // next to each other (relative), i64::MAX and i64::MIN do not (absolute).
    for ids in [[u64::MAX, 0, 1 << 60], [i64::MAX as u64, 1 << 63, 7]] {
        ticks.push(
            ids.iter()
                .enumerate()
                .map(|(i, &id)| FlowRow {
                    flow_id: id,
                    ..varied_flow(i as u64)
                })
                .collect(),
        );
    }
    let mut want = Vec::new();
    let mut batch = Batch::new(1_000);
    for tick in &ticks {
        for f in tick {
            batch.flow(f).unwrap();
            want.push(expected_tuple(want.len() as i64 + 1, f));
        }
        store.write(&batch).unwrap();
        batch.clear();
    }
    let got = flows_in_view(&db);
    assert_eq!(got, want);
    assert_eq!(got[6].8, "TCP");
    assert_eq!(got[99].8, "OTHER");
    assert_eq!(got[4].11, "x");
    let flow_id0: Vec<Option<i64>> = Connection::open(&db)
        .unwrap()
        .prepare("SELECT flow_id0 FROM flow_chunks ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(flow_id0, vec![Some(1_000), Some(-1), None]);
}

/// Bytes per flow are what SQLite writes twice under a flood (WAL, then checkpoint): a
/// one-packet UDP flood flow must stay a short array of small integers.
#[test]
fn a_flood_flow_takes_about_fifty_bytes() {
    let dir = TempDir::new("dense");
    let db = dir.path("d.db");
    let mut store = Store::open(&db, &no_retention()).unwrap();
    let mut batch = Batch::new(2_000);
    let mut x: u32 = 0x9e37_79b9;
    for i in 0..1_024u64 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        batch
            .flow(&FlowRow {
                flow_id: 800_000 + i,
                start: T0 + i as i64 * 11,
                end: T0 + i as i64 * 11,
                src: IpAddr::V4(Ipv4Addr::from(x)),
                src_port: 161,
                dst: v4(10, 10, 10, 10),
                dst_port: 1_024 + (x % 60_000) as u16,
                proto: 17,
                pkts_to_server: 1,
                pkts_to_client: 0,
                bytes_to_server: 68 + u64::from(x % 8),
                bytes_to_client: 0,
                tcp_flags: 0,
                reason: "evicted",
            })
            .unwrap();
    }
    store.write(&batch).unwrap();
    let per_flow: f64 = Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT sum(length(rows)) * 1.0 / sum(n) FROM flow_chunks",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // Schema v3 took 86 bytes for such a flow.
    assert!((45.0..53.0).contains(&per_flow), "{per_flow} bytes a flow");
}
