//! The SQLite store: schema and forward migrations, one transaction per tick with cached
//! statements, a bounded retryable batch, retention that keeps the file off a router's
//! flash limits, and the read queries behind the HTTP API.
//!
//! Layout (DESIGN section 6): `verdicts`, `alerts`, `flows`, `meta`, plus `window_counts`
//! (SAFE windows are counted per tick, not stored one by one) and `feature_samples`
//! (learning mode). `flows` is a view over `flow_chunks` (up to 1,024 flows a row, as a
//! dense JSON array the view decodes; docs/DECISIONS.md). Times are Unix seconds as `REAL`;
//! addresses are canonical text; `proto` is Suricata's name; `flow_id` is the 64-bit id
//! bit-cast to SQLite's signed INTEGER (ids below 2^63 read the same in SQL).
//!
//! Writes go through [`Tick`] (`store.begin()` … `commit()`), or through a [`Batch`] the
//! caller fills during a second and hands to [`Store::write`]: a failed write (disk full,
//! read-only medium) rolls the whole transaction back and leaves the batch untouched, so
//! the caller keeps adding to it (it is bounded, and counts what it had to drop) and
//! retries on the next tick.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use serde::Serialize;

use crate::decode::Micros;
use crate::events::{micros_to_secs, proto_name, AlertRow, FlowRow, Level, VerdictRow};
use crate::features::{FeatureVector, N_FEATURES};

/// Page size of new databases. Four times SQLite's default: the writer appends flow chunks
/// of several KiB, and every page in the WAL costs a frame header, a checksum pass, a
/// `pwrite` and, at checkpoint, another copy. On the benchmark capture the checkpointer's
/// time fell by a third (97 → 66 ms) and the writer's by 5 %, the WAL kept at the same bytes
/// (docs/DECISIONS.md, "The database writer thread").
pub const PAGE_SIZE: i64 = 16 << 10;

/// `PRAGMA application_id` of PhantomNet databases ("PhNt"), so we never migrate a stranger's file.
pub const APPLICATION_ID: i32 = 0x5068_4e74;

/// The columns of the `flows` view as schema v3 defined it (its migration creates that view;
/// v4 replaces it with [`flow_columns_sql`]). Kept verbatim: migrations are never edited.
macro_rules! v3_flow_columns_sql {
    () => {
        "c.first_id + j.key AS id, \
         json_extract(j.value, '$[0]') AS flow_id, \
         (c.t0 + json_extract(j.value, '$[1]')) / 1e6 AS start, \
         (c.t0 + json_extract(j.value, '$[1]') + json_extract(j.value, '$[2]')) / 1e6 \
             AS \"end\", \
         json_extract(j.value, '$[3]') AS src, \
         json_extract(j.value, '$[4]') AS src_port, \
         json_extract(j.value, '$[5]') AS dst, \
         json_extract(j.value, '$[6]') AS dst_port, \
         json_extract(j.value, '$[7]') AS proto, \
         json_extract(j.value, '$[8]') AS pkts_to_server, \
         json_extract(j.value, '$[9]') AS pkts_to_client, \
         json_extract(j.value, '$[10]') AS bytes_to_server, \
         json_extract(j.value, '$[11]') AS bytes_to_client, \
         json_extract(j.value, '$[12]') AS tcp_flags, \
         json_extract(j.value, '$[13]') AS reason"
    };
}

/// Dotted-quad text of the IPv4 address held as the integer `$e`.
macro_rules! ipv4_text_sql {
    ($e:literal) => {
        concat!(
            "printf('%d.%d.%d.%d', ",
            $e,
            " >> 24, (",
            $e,
            " >> 16) & 255, (",
            $e,
            " >> 8) & 255, ",
            $e,
            " & 255)"
        )
    };
}

/// An address column from element `$i`: an IPv4 address is stored as its 32-bit integer,
/// an IPv6 address as its canonical text. The element is extracted once in a scalar
/// subquery: written out, each of its five uses parsed the flow's JSON again (a full scan
/// of the view took 1.7 times as long).
macro_rules! addr_sql {
    ($i:literal) => {
        concat!(
            "(SELECT CASE typeof(a) WHEN 'integer' THEN ",
            ipv4_text_sql!("a"),
            " ELSE a END FROM (SELECT j.value ->> ",
            $i,
            " AS a))"
        )
    };
}

/// `proto` from element `$e`: the IP protocol number of every protocol
/// [`proto_name`] names, mapped back to that name, or the name itself as text ("OTHER").
macro_rules! proto_sql {
    ($e:literal) => {
        concat!(
            "CASE ",
            $e,
            " WHEN 6 THEN 'TCP' WHEN 17 THEN 'UDP' WHEN 1 THEN 'ICMP' \
             WHEN 58 THEN 'IPv6-ICMP' WHEN 2 THEN 'IGMP' WHEN 47 THEN 'GRE' WHEN 50 THEN 'ESP' \
             WHEN 51 THEN 'AH' WHEN 132 THEN 'SCTP' WHEN 0 THEN '' ELSE ",
            $e,
            " END"
        )
    };
}

/// `reason` from element `$e`: a code of [`REASONS`], or any other reason as text.
macro_rules! reason_sql {
    ($e:literal) => {
        concat!(
            "CASE ",
            $e,
            " WHEN 0 THEN 'timeout' WHEN 1 THEN 'closed' WHEN 2 THEN 'evicted' \
             WHEN 3 THEN 'shutdown' ELSE ",
            $e,
            " END"
        )
    };
}

/// The columns of the `flows` view (one row per finished flow) over
/// `flow_chunks AS c, json_each(c.rows) AS j`, since schema v4. A chunk's `rows` is a JSON
/// array of arrays, one per flow, as [`push_flow_json`] writes them:
///
/// | element | column |
/// |---|---|
/// | 0 | `flow_id` − (`c.flow_id0` + position in the chunk); the id itself where `flow_id0` is NULL |
/// | 1 | `start`, µs after the chunk's `t0` |
/// | 2, 4 | `src`, `dst`: IPv4 as a 32-bit integer, IPv6 as text |
/// | 3, 5 | `src_port`, `dst_port` |
/// | 6 | `proto`: the protocol number for named protocols, else the name |
/// | 7 | `reason`: 0 timeout, 1 closed, 2 evicted, 3 shutdown, else the text |
/// | 8–13 | `pkts_to_server`, `bytes_to_server`, `tcp_flags`, duration (µs, `end` − `start`), `pkts_to_client`, `bytes_to_client`; trailing zeros are left out |
///
/// Times read as Unix seconds like every other table's. `->>` and `json_each` are in every
/// SQLite since 3.38, so the view reads the same in a user's sqlite3 shell.
macro_rules! flow_columns_sql {
    () => {
        concat!(
            "c.first_id + j.key AS id, \
             coalesce(c.flow_id0 + j.key, 0) + (j.value ->> 0) AS flow_id, \
             (c.t0 + (j.value ->> 1)) / 1e6 AS start, \
             (c.t0 + (j.value ->> 1) + coalesce(j.value ->> 11, 0)) / 1e6 AS \"end\", ",
            addr_sql!("2"),
            " AS src, j.value ->> 3 AS src_port, ",
            addr_sql!("4"),
            " AS dst, j.value ->> 5 AS dst_port, ",
            proto_sql!("(j.value ->> 6)"),
            " AS proto, \
             coalesce(j.value ->> 8, 0) AS pkts_to_server, \
             coalesce(j.value ->> 12, 0) AS pkts_to_client, \
             coalesce(j.value ->> 9, 0) AS bytes_to_server, \
             coalesce(j.value ->> 13, 0) AS bytes_to_client, \
             coalesce(j.value ->> 10, 0) AS tcp_flags, ",
            reason_sql!("(j.value ->> 7)"),
            " AS reason"
        )
    };
}

/// Schema v4: the denser flow elements of [`flow_columns_sql`] (about 57 bytes a flood's flow
/// instead of 86: bytes SQLite writes twice, to the WAL and at checkpoint). Every chunk is
/// re-encoded in place with its id, `first_id`, `n`, `t0` and `end`; the `flows` view reads
/// the same columns, types and values as before. An address is stored as an integer only if
/// the view turns that integer back into exactly the old text; ids are relative only where
/// every id of the chunk is within ±2^61, so the view's sum cannot overflow.
const V4_DENSE_FLOWS: &str = concat!(
    r#"
    ALTER TABLE flow_chunks ADD COLUMN flow_id0 INTEGER;
    UPDATE flow_chunks SET flow_id0 = rows ->> '$[0][0]'
        WHERE NOT EXISTS (SELECT 1 FROM json_each(flow_chunks.rows)
            WHERE (value ->> 0) NOT BETWEEN -2305843009213693952 AND 2305843009213693951);
    UPDATE flow_chunks SET rows = (
        -- Each step materialized once per chunk (1,024 rows): inlined, every use of src4
        -- would parse the address again (four times slower).
        WITH v3 AS MATERIALIZED (
            SELECT key AS k, value ->> 0 AS fid, value ->> 1 AS s, value ->> 2 AS d,
                value ->> 3 AS src, value ->> 4 AS sp, value ->> 5 AS dst,
                value ->> 6 AS dp, value ->> 7 AS proto, value ->> 8 AS ps,
                value ->> 9 AS pc, value ->> 10 AS bs, value ->> 11 AS bc,
                value ->> 12 AS fl, value ->> 13 AS reason,
                '[' || replace(value ->> 3, '.', ',') || ']' AS src_j,
                '[' || replace(value ->> 5, '.', ',') || ']' AS dst_j
            FROM json_each(flow_chunks.rows)),
        e AS MATERIALIZED (SELECT *,
                CASE WHEN bc IS NOT 0 THEN 6 WHEN pc IS NOT 0 THEN 5 WHEN d IS NOT 0 THEN 4
                    WHEN fl IS NOT 0 THEN 3 WHEN bs IS NOT 0 THEN 2 WHEN ps IS NOT 0 THEN 1
                    ELSE 0 END AS tail,
                CASE WHEN src NOT GLOB '*[^0-9.]*' AND json_valid(src_j) THEN
                    CASE WHEN json_array_length(src_j) = 4 THEN ((src_j ->> 0) << 24)
                        + ((src_j ->> 1) << 16) + ((src_j ->> 2) << 8) + (src_j ->> 3) END
                END AS src4,
                CASE WHEN dst NOT GLOB '*[^0-9.]*' AND json_valid(dst_j) THEN
                    CASE WHEN json_array_length(dst_j) = 4 THEN ((dst_j ->> 0) << 24)
                        + ((dst_j ->> 1) << 16) + ((dst_j ->> 2) << 8) + (dst_j ->> 3) END
                END AS dst4
            FROM v3)
        SELECT json_group_array(json(
            rtrim(json_array(
                fid - coalesce(flow_chunks.flow_id0 + k, 0), s,
                iif("#,
    ipv4_text_sql!("src4"),
    r#" = src, src4, src), sp,
                iif("#,
    ipv4_text_sql!("dst4"),
    r#" = dst, dst4, dst), dp,
                CASE proto WHEN 'TCP' THEN 6 WHEN 'UDP' THEN 17 WHEN 'ICMP' THEN 1
                    WHEN 'IPv6-ICMP' THEN 58 WHEN 'IGMP' THEN 2 WHEN 'GRE' THEN 47
                    WHEN 'ESP' THEN 50 WHEN 'AH' THEN 51 WHEN 'SCTP' THEN 132 WHEN '' THEN 0
                    ELSE proto END,
                CASE reason WHEN 'timeout' THEN 0 WHEN 'closed' THEN 1 WHEN 'evicted' THEN 2
                    WHEN 'shutdown' THEN 3 ELSE reason END), ']')
            || iif(tail >= 1, ',' || json_quote(ps), '')
            || iif(tail >= 2, ',' || json_quote(bs), '')
            || iif(tail >= 3, ',' || json_quote(fl), '')
            || iif(tail >= 4, ',' || json_quote(d), '')
            || iif(tail >= 5, ',' || json_quote(pc), '')
            || iif(tail >= 6, ',' || json_quote(bc), '')
            || ']') ORDER BY k)
        FROM e);
    DROP VIEW flows;
    CREATE VIEW flows AS SELECT "#,
    flow_columns_sql!(),
    r#" FROM flow_chunks AS c, json_each(c.rows) AS j;
    "#
);

/// Forward migrations: step `i` takes `user_version` `i` to `i + 1`. Append, never edit.
const MIGRATIONS: &[&str] = &[
    // v1: the DESIGN section 6 core.
    r#"
    CREATE TABLE verdicts(
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, host TEXT NOT NULL, verdict TEXT NOT NULL,
        risk INTEGER NOT NULL, anomaly_score REAL, confidence REAL NOT NULL,
        reasons_json TEXT NOT NULL);
    CREATE TABLE alerts(
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, sid INTEGER NOT NULL, rev INTEGER NOT NULL,
        msg TEXT NOT NULL, priority INTEGER NOT NULL, src TEXT NOT NULL,
        src_port INTEGER NOT NULL, dst TEXT NOT NULL, dst_port INTEGER NOT NULL,
        proto TEXT NOT NULL);
    CREATE TABLE flows(
        id INTEGER PRIMARY KEY, flow_id INTEGER NOT NULL, start REAL NOT NULL,
        "end" REAL NOT NULL, src TEXT NOT NULL, src_port INTEGER NOT NULL, dst TEXT NOT NULL,
        dst_port INTEGER NOT NULL, proto TEXT NOT NULL, pkts_to_server INTEGER NOT NULL,
        pkts_to_client INTEGER NOT NULL, bytes_to_server INTEGER NOT NULL,
        bytes_to_client INTEGER NOT NULL, tcp_flags INTEGER NOT NULL, reason TEXT NOT NULL);
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE INDEX verdicts_ts ON verdicts(ts);
    CREATE INDEX alerts_ts ON alerts(ts);
    "#,
    // v2: detector metadata on alerts, a numeric level for range queries, per-host and
    // per-sid indexes for the HTTP API, tick counts and learning-mode samples.
    r#"
    ALTER TABLE alerts ADD COLUMN gid INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE alerts ADD COLUMN category TEXT NOT NULL DEFAULT '';
    ALTER TABLE alerts ADD COLUMN action TEXT NOT NULL DEFAULT 'allowed';
    ALTER TABLE alerts ADD COLUMN flow_id INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE verdicts ADD COLUMN level INTEGER NOT NULL DEFAULT 0;
    UPDATE verdicts SET level = CASE verdict
        WHEN 'WARNING' THEN 1 WHEN 'HIGH' THEN 2 WHEN 'CRITICAL' THEN 3 ELSE 0 END;
    CREATE INDEX verdicts_host_ts ON verdicts(host, ts);
    CREATE INDEX alerts_sid_ts ON alerts(sid, ts);
    CREATE TABLE window_counts(
        ts REAL NOT NULL, safe INTEGER NOT NULL, warning INTEGER NOT NULL,
        high INTEGER NOT NULL, critical INTEGER NOT NULL);
    CREATE INDEX window_counts_ts ON window_counts(ts);
    CREATE TABLE feature_samples(
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, host TEXT NOT NULL,
        f0 REAL NOT NULL, f1 REAL NOT NULL, f2 REAL NOT NULL, f3 REAL NOT NULL,
        f4 REAL NOT NULL, f5 REAL NOT NULL, f6 REAL NOT NULL, f7 REAL NOT NULL,
        f8 REAL NOT NULL, f9 REAL NOT NULL, f10 REAL NOT NULL, f11 REAL NOT NULL,
        f12 REAL NOT NULL, f13 REAL NOT NULL, f14 REAL NOT NULL);
    CREATE INDEX feature_samples_ts ON feature_samples(ts);
    "#,
    // v3: finished flows are stored in chunks of up to FLOWS_PER_CHUNK flows, each a JSON
    // array of rows, and read through the view `flows` with the columns the table had. One
    // B-tree row per flow cost more than everything else PhantomNet does per frame under a
    // spoofed flood (a row per packet); a chunk costs a copy. Existing rows move over with
    // their ids.
    concat!(
        r#"
    CREATE TABLE flow_chunks(
        id INTEGER PRIMARY KEY, first_id INTEGER NOT NULL, n INTEGER NOT NULL,
        t0 INTEGER NOT NULL, "end" REAL NOT NULL, rows TEXT NOT NULL);
    INSERT INTO flow_chunks(first_id, n, t0, "end", rows)
        SELECT min(id), count(*), min(us), max("end"),
            json_group_array(json_array(flow_id, us - t0, end_us - us, src, src_port, dst,
                dst_port, proto, pkts_to_server, pkts_to_client, bytes_to_server,
                bytes_to_client, tcp_flags, reason) ORDER BY id)
        FROM (SELECT *, min(us) OVER (PARTITION BY run, part) AS t0 FROM (
            SELECT *, CAST(round(start * 1e6) AS INTEGER) AS us,
                CAST(round("end" * 1e6) AS INTEGER) AS end_us,
                id - row_number() OVER (ORDER BY id) AS run,
                (row_number() OVER (ORDER BY id) - 1) / 1024 AS part FROM flows))
        GROUP BY run, part ORDER BY min(id);
    DROP TABLE flows;
    CREATE VIEW flows AS SELECT "#,
        v3_flow_columns_sql!(),
        r#" FROM flow_chunks AS c, json_each(c.rows) AS j;
    "#
    ),
    V4_DENSE_FLOWS,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Tables retention trims, oldest rows (lowest rowid) first, with the SQL that counts the
/// rows a set of them holds (a flow chunk holds `n` flows).
const RETAINED: [(&str, &str); 5] = [
    ("alerts", "count(*)"),
    ("verdicts", "count(*)"),
    ("flow_chunks", "coalesce(sum(n), 0)"),
    ("feature_samples", "count(*)"),
    ("window_counts", "count(*)"),
];

const INSERT_ALERT: &str =
    "INSERT INTO alerts(ts, gid, sid, rev, msg, category, priority, action, \
     src, src_port, dst, dst_port, proto, flow_id) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
const INSERT_VERDICT: &str = "INSERT INTO verdicts(ts, host, verdict, level, risk, anomaly_score, \
     confidence, reasons_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
/// One chunk of flows; its flows' ids follow on from the newest chunk's.
const INSERT_FLOW_CHUNK: &str =
    "INSERT INTO flow_chunks(first_id, n, t0, \"end\", flow_id0, rows) \
     VALUES (coalesce((SELECT first_id + n FROM flow_chunks ORDER BY id DESC LIMIT 1), 1), \
     ?1, ?2, ?3, ?4, ?5)";
/// Flows per chunk: about 55 KiB of JSON under a flood, copied once by SQLite into overflow
/// pages.
pub const FLOWS_PER_CHUNK: usize = 1024;

/// A text value from bytes, for `raw_bind_parameter`.
fn text(b: &[u8]) -> rusqlite::types::ToSqlOutput<'_> {
    rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(b))
}

/// The reasons a flow ends with, stored as their index ([`reason_sql`] maps them back).
const REASONS: [&str; 4] = ["timeout", "closed", "evicted", "shutdown"];

/// Flow ids are stored relative to the chunk's `flow_id0` only when every id of the chunk
/// is within ±`REL_ID_BOUND`: then neither the difference nor the view's sum overflows.
const REL_ID_BOUND: i64 = 1 << 61;

/// The chunk's `flow_id0`: the first flow's id, or `None` (absolute ids) if some id is too
/// far from zero to be stored relative to it.
fn chunk_flow_id0(chunk: &[FlowRow]) -> Option<i64> {
    let in_bounds = |f: &FlowRow| (-REL_ID_BOUND..REL_ID_BOUND).contains(&(f.flow_id as i64));
    let first = chunk.first()?;
    chunk.iter().all(in_bounds).then_some(first.flow_id as i64)
}

/// Decimal texts of 0..=99, two bytes each.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849\
5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// Bytes staged on the stack before they are appended to a chunk's text: a flow's row is a
/// dozen numbers of a few digits, and appending each one to the `Vec` (a capacity check and
/// a `memcpy` call per number) cost more than formatting it.
struct Staged<'a> {
    out: &'a mut Vec<u8>,
    buf: [u8; 512],
    len: usize,
}

impl<'a> Staged<'a> {
    fn new(out: &'a mut Vec<u8>) -> Staged<'a> {
        Staged {
            out,
            buf: [0; 512],
            len: 0,
        }
    }

    /// Appends what is staged to the text.
    fn flush(&mut self) {
        self.out.extend_from_slice(&self.buf[..self.len]);
        self.len = 0;
    }

    #[inline]
    fn room(&mut self, n: usize) {
        if self.len + n > self.buf.len() {
            self.flush();
        }
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        self.room(1);
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// A cursor over room reserved for the next `bound` bytes (at most the buffer's 512), so
    /// the bytes and numbers of a flow's row (~13 of them) need no room check each. What
    /// the cursor wrote counts as staged when it is dropped.
    #[inline(always)]
    fn row(&mut self, bound: usize) -> Row<'_> {
        debug_assert!(bound <= self.buf.len());
        self.room(bound);
        let at = self.len;
        Row {
            buf: &mut self.buf,
            len: &mut self.len,
            at,
        }
    }

    /// `"s"`, of any length (a text longer than the buffer goes straight to the output).
    /// Only for texts made here, under the terms of [`Row::str`].
    fn text(&mut self, s: &[u8]) {
        if s.len() + 2 > self.buf.len() {
            debug_assert!(!s.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20));
            self.flush();
            self.out.push(b'"');
            self.out.extend_from_slice(s);
            self.out.push(b'"');
        } else {
            self.row(s.len() + 2).str(s);
        }
    }
}

/// A cursor over room reserved in the staging buffer ([`Staged::row`]): writes index the
/// buffer directly (in bounds by the reservation; a wrong bound panics, never overflows).
struct Row<'b> {
    buf: &'b mut [u8; 512],
    /// The staging buffer's length, set from `at` on drop.
    len: &'b mut usize,
    at: usize,
}

impl Drop for Row<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        *self.len = self.at;
    }
}

impl Row<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.buf[self.at] = b;
        self.at += 1;
    }

    /// `v` in decimal. Most numbers of a flood's flows are single digits (packets, reply
    /// counts, codes): those take one store.
    #[inline(always)]
    fn int(&mut self, v: i64) {
        if (0..10).contains(&v) {
            self.byte(b'0' + v as u8);
        } else {
            self.long_int(v);
        }
    }

    /// `v` in decimal, written back to front into its exact width: four digits a step (two
    /// pairs from a table, computed side by side), in 32-bit arithmetic when it fits (ports,
    /// IPv4 addresses, sizes, time offsets). Half of the writer thread's instructions went
    /// here when each step was one pair, the width came from `ilog10` and every number was
    /// a call.
    #[inline(always)]
    fn long_int(&mut self, v: i64) {
        if v < 0 {
            self.byte(b'-');
        }
        let n = v.unsigned_abs();
        let at = self.at;
        match u32::try_from(n) {
            Ok(n) if n < 100_000_000 => {
                // Up to 8 digits: all eight at once, leading zeros shifted out, stored as
                // one word (the bytes past the number are in the reserved room, and later
                // writes or the length leave them out).
                let d = digits_u32(n);
                let text = eight_digits(n) >> (8 * (8 - d));
                self.buf[at..at + 8].copy_from_slice(&text.to_le_bytes());
                self.at = at + d;
            }
            Ok(n) => {
                // 9 or 10 digits (IPv4 addresses): the first one or two, then eight.
                let top = (n / 100_000_000) as usize;
                let mut i = at;
                if top >= 10 {
                    self.buf[i..i + 2].copy_from_slice(&pair(top));
                    i += 2;
                } else {
                    self.buf[i] = b'0' + top as u8;
                    i += 1;
                }
                let text = eight_digits(n % 100_000_000);
                self.buf[i..i + 8].copy_from_slice(&text.to_le_bytes());
                self.at = i + 8;
            }
            Err(_) => {
                let d = digits_u64(n);
                four_digits_back(&mut self.buf[at..at + d], n);
                self.at = at + d;
            }
        }
    }

    /// `"s"`. Only for texts made here (addresses, protocol and reason names), which hold
    /// nothing JSON would have to escape.
    #[inline(always)]
    fn str(&mut self, s: &[u8]) {
        debug_assert!(!s.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20));
        self.byte(b'"');
        self.buf[self.at..self.at + s.len()].copy_from_slice(s);
        self.at += s.len();
        self.byte(b'"');
    }

    /// An address element: IPv4 as its 32-bit integer, IPv6 as canonical text.
    #[inline(always)]
    fn addr(&mut self, addr: IpAddr, ip: &mut IpText) {
        match addr {
            IpAddr::V4(v4) => self.int(i64::from(u32::from(v4))),
            IpAddr::V6(_) => self.str(ip.set_bytes(addr)),
        }
    }
}

/// Powers of ten that fit a `u64`, for digit counts.
const POW10: [u64; 20] = {
    let mut p = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        p[i] = p[i - 1] * 10;
        i += 1;
    }
    p
};

/// Decimal digits of `n` (1 for 0): the bit length times log10(2) (1233 / 4096) is the
/// count or one less, and one comparison decides.
#[inline(always)]
fn digits_u32(n: u32) -> usize {
    let bits = 32 - (n | 1).leading_zeros();
    let t = ((bits * 1233) >> 12) as usize;
    t + usize::from(u64::from(n) >= POW10[t])
}

#[inline(always)]
fn digits_u64(n: u64) -> usize {
    let bits = 64 - (n | 1).leading_zeros();
    let t = ((bits * 1233) >> 12) as usize;
    // t <= 19 (bits <= 64); 10^19 is the largest power a u64 holds.
    t + usize::from(POW10.get(t).is_some_and(|&p| n >= p))
}

/// The eight decimal digits of `n` (below 10^8, with leading zeros) as ASCII, the first
/// digit in the lowest byte: the halves, pairs and digits are split side by side in the
/// lanes of one 64-bit word (multiplying by 10486 / 2^20 divides a lane below 10^4 by 100,
/// by 103 / 2^10 one below 100 by 10; the tests check every value below 10^6 and a sweep).
#[inline(always)]
fn eight_digits(n: u32) -> u64 {
    let n = u64::from(n);
    // 32-bit lanes: the first four digits, then the last four.
    let halves = (n / 10_000) | ((n % 10_000) << 32);
    let hundreds = ((halves * 10_486) >> 20) & 0x0000_007f_0000_007f;
    let pairs = ((halves - hundreds * 100) << 16) | hundreds;
    // 16-bit lanes: four pairs, first first.
    let tens = ((pairs * 103) >> 10) & 0x000f_000f_000f_000f;
    let digits = ((pairs - tens * 10) << 8) | tens;
    digits + 0x3030_3030_3030_3030
}

/// The two text bytes of `d` (0..=99).
#[inline(always)]
fn pair(d: usize) -> [u8; 2] {
    let i = d * 2;
    [DIGIT_PAIRS[i], DIGIT_PAIRS[i + 1]]
}

/// Writes `n` in decimal into the whole of `out` (exactly its width, at least 1), last
/// digits first, four at a time: the two pairs of each step do not wait on each other.
#[inline(always)]
fn four_digits_back<T>(out: &mut [u8], mut n: T)
where
    T: Copy + PartialOrd + From<u16> + std::ops::Div<Output = T> + std::ops::Rem<Output = T>,
    usize: TryFrom<T>,
{
    let small = |x: T| usize::try_from(x).unwrap_or(0);
    let mut i = out.len();
    while n >= T::from(10_000) && i >= 4 {
        let r = small(n % T::from(10_000));
        n = n / T::from(10_000);
        i -= 4;
        out[i..i + 2].copy_from_slice(&pair(r / 100));
        out[i + 2..i + 4].copy_from_slice(&pair(r % 100));
    }
    let mut r = small(n);
    if r >= 100 && i >= 2 {
        i -= 2;
        out[i..i + 2].copy_from_slice(&pair(r % 100));
        r /= 100;
    }
    if r >= 10 && i >= 2 {
        out[i - 2..i].copy_from_slice(&pair(r));
    } else if i >= 1 {
        out[i - 1] = b'0' + r as u8;
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The code of a flow's end reason (its index in [`REASONS`]). The engine's reasons are
/// these very constants, so their addresses usually decide without comparing bytes.
#[inline]
fn reason_code(reason: &str) -> Option<usize> {
    REASONS
        .iter()
        .position(|&r| std::ptr::eq(r, reason))
        .or_else(|| REASONS.iter().position(|&r| r == reason))
}

/// Appends flow `j` of a chunk as the JSON array the `flows` view reads
/// ([`flow_columns_sql`] lists the elements): small integers where the text was long (flow
/// id relative to `flow_id0 + j`, IPv4 addresses, protocol and reason codes), and no trailing
/// zero counters. A one-packet flow of a flood takes about 55 bytes, against 86 as text in
/// schema v3 and 112 with absolute times before that. By hand: through serde this cost more
/// than SQLite's copy.
fn push_flow_json(
    out: &mut Staged<'_>,
    t0: Micros,
    flow_id0: Option<i64>,
    j: usize,
    f: &FlowRow,
    ip: &mut IpText,
) {
    // Up to the reason: a bracket, 6 numbers of at most 20 bytes and their commas, the
    // protocol's number or "OTHER", and two addresses, an IPv6 text taking at most 41.
    let mut row = out.row(1 + 6 * 21 + 8 + 2 * 42);
    row.byte(b'[');
    let id = f.flow_id as i64;
    // In bounds (chunk_flow_id0), so neither operation can overflow.
    row.int(flow_id0.map_or(id, |base| id - (base + j as i64)));
    row.byte(b',');
    row.int(f.start.saturating_sub(t0));
    row.byte(b',');
    row.addr(f.src, ip);
    row.byte(b',');
    row.int(i64::from(f.src_port));
    row.byte(b',');
    row.addr(f.dst, ip);
    row.byte(b',');
    row.int(i64::from(f.dst_port));
    row.byte(b',');
    match proto_name(f.proto) {
        "OTHER" => row.str(b"OTHER"),
        _ => row.int(i64::from(f.proto)),
    }
    row.byte(b',');
    // The reason: its code, or (never from the engine) its text, of any length.
    match reason_code(f.reason) {
        Some(code) => {
            row.int(code as i64);
            drop(row);
        }
        None => {
            drop(row);
            out.text(f.reason.as_bytes());
        }
    }
    // The rest: 6 numbers with their commas, and the bracket.
    let mut row = out.row(6 * 21 + 1);
    let tail = [
        to_i64(f.pkts_to_server),
        to_i64(f.bytes_to_server),
        i64::from(f.tcp_flags),
        f.end.saturating_sub(f.start),
        to_i64(f.pkts_to_client),
        to_i64(f.bytes_to_client),
    ];
    let keep = tail.iter().rposition(|&v| v != 0).map_or(0, |i| i + 1);
    for &v in &tail[..keep] {
        row.byte(b',');
        row.int(v);
    }
    row.byte(b']');
}

const INSERT_WINDOWS: &str =
    "INSERT INTO window_counts(ts, safe, warning, high, critical) VALUES (?1, ?2, ?3, ?4, ?5)";
const INSERT_SAMPLE: &str =
    "INSERT INTO feature_samples(ts, host, f0, f1, f2, f3, f4, f5, f6, f7, \
     f8, f9, f10, f11, f12, f13, f14) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
     ?13, ?14, ?15, ?16, ?17)";

/// Per-table row limits; `None` keeps everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaxRows {
    pub alerts: Option<u64>,
    pub verdicts: Option<u64>,
    pub flows: Option<u64>,
    pub feature_samples: Option<u64>,
    pub window_counts: Option<u64>,
}

impl MaxRows {
    fn for_table(&self, table: &str) -> Option<u64> {
        match table {
            "alerts" => self.alerts,
            "verdicts" => self.verdicts,
            "flow_chunks" => self.flows,
            "feature_samples" => self.feature_samples,
            "window_counts" => self.window_counts,
            _ => None,
        }
    }
}

/// How the store is opened and bounded.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreOptions {
    /// How long a write waits for a lock held by another process (e.g. a user's sqlite3 shell).
    pub busy_timeout: Duration,
    pub max_rows: MaxRows,
    /// Bound on the bytes in use (pages minus free pages); oldest rows of every retained table
    /// are deleted in proportion when exceeded.
    pub max_bytes: Option<u64>,
    /// Hard cap on the database file (`PRAGMA max_page_count`): writes past it fail with
    /// "database or disk is full" instead of filling the medium. Set it above `max_bytes`.
    pub hard_limit_bytes: Option<u64>,
    /// Retention runs after every `retention_every` commits (and after a disk-full error).
    pub retention_every: u32,
    /// Rows deleted per statement, so one retention pass never holds the lock for long.
    pub delete_chunk: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            max_rows: MaxRows {
                alerts: Some(1_000_000),
                verdicts: Some(1_000_000),
                flows: Some(1_000_000),
                feature_samples: Some(2_000_000),
                window_counts: Some(400_000),
            },
            max_bytes: Some(256 << 20),
            hard_limit_bytes: None,
            retention_every: 60,
            delete_chunk: 5_000,
        }
    }
}

impl StoreOptions {
    /// Options from the config's `[retention]` section: one row bound for every retained
    /// table and a byte bound, `0` meaning none for either. Everything else is the default.
    pub fn from_retention(max_rows: u64, max_bytes: u64) -> StoreOptions {
        let rows = (max_rows > 0).then_some(max_rows);
        StoreOptions {
            max_rows: MaxRows {
                alerts: rows,
                verdicts: rows,
                flows: rows,
                feature_samples: rows,
                window_counts: rows,
            },
            max_bytes: (max_bytes > 0).then_some(max_bytes),
            ..StoreOptions::default()
        }
    }
}

/// Everything that can go wrong with the database; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open SQLite database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{} has schema version {found}, newer than version {known} this phantomnet knows; \
         use a newer phantomnet or another database file",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "{} is not a PhantomNet database (application_id {found:#x}, expected {APPLICATION_ID:#x} \
         or an empty file)",
        path.display()
    )]
    Foreign { path: PathBuf, found: i64 },
    #[error("migrating {} from schema version {from} to {}: {source}", path.display(), from + 1)]
    Migrate {
        path: PathBuf,
        from: i64,
        source: rusqlite::Error,
    },
    #[error("writing {what} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error("reading {what} from {}: {source}", path.display())]
    Read {
        path: PathBuf,
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error("backing up {} to {}: {source}", path.display(), dest.display())]
    Backup {
        path: PathBuf,
        dest: PathBuf,
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// The medium or the hard limit is full: retention may free room, retry later.
    pub fn is_full(&self) -> bool {
        self.sqlite_code() == Some(ErrorCode::DiskFull)
    }

    /// The file or its directory is read-only.
    pub fn is_read_only(&self) -> bool {
        self.sqlite_code() == Some(ErrorCode::ReadOnly)
    }

    fn sqlite_code(&self) -> Option<ErrorCode> {
        let source = match self {
            StoreError::Open { source, .. }
            | StoreError::Migrate { source, .. }
            | StoreError::Write { source, .. }
            | StoreError::Read { source, .. }
            | StoreError::Backup { source, .. } => source,
            StoreError::TooNew { .. } | StoreError::Foreign { .. } => return None,
        };
        source.sqlite_error_code()
    }
}

/// Counters for `/metrics` and the status page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    pub commits: u64,
    pub failed_writes: u64,
    pub rows_written: u64,
    pub rows_deleted: u64,
    pub retention_runs: u64,
    pub retention_errors: u64,
}

/// What one retention pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub rows_deleted: u64,
    /// Bytes in use (pages minus free pages) before and after.
    pub used_bytes_before: u64,
    pub used_bytes_after: u64,
}

/// An open PhantomNet database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    opts: StoreOptions,
    commits_since_retention: u32,
    stats: StoreStats,
    /// Reused text form of addresses, so writing rows formats without allocating.
    ip_a: IpText,
    ip_b: IpText,
    /// Reused JSON text of one flow chunk.
    chunk_json: Vec<u8>,
}

impl Store {
    /// Creates or opens `path`, sets WAL and synchronous=NORMAL, and migrates the schema
    /// forward. A file written by a newer PhantomNet (or by another program) is refused.
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(opts.busy_timeout).map_err(open_err)?;
        conn.set_prepared_statement_cache_capacity(16);

        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(open_err)?;
        let app_id: i64 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(open_err)?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(open_err)?;
        let fresh = version == 0 && tables == 0;
        if !fresh && app_id != i64::from(APPLICATION_ID) {
            return Err(StoreError::Foreign {
                path: path.to_path_buf(),
                found: app_id,
            });
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        if fresh {
            // Only possible before the first table exists (an existing file keeps its size).
            conn.pragma_update(None, "page_size", PAGE_SIZE)
                .map_err(open_err)?;
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
                .map_err(open_err)?;
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .map_err(open_err)?;
        }
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!(
                "{}: the file system refused WAL (journal_mode is {mode}); readers will block writes",
                path.display()
            );
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        // Truncate the WAL back to 4 MiB after checkpoints: flash space is scarce.
        conn.pragma_update(None, "journal_size_limit", 4_i64 << 20)
            .map_err(open_err)?;
        // RAM is scarce too (16 MB budget on a router): a page cache of at most CACHE_KIB
        // (SQLite's default is 2000 KiB, reached as the file outgrows it) and no memory-mapped
        // reads (their pages count against the process on small boxes). The writer only touches
        // the right edge of each table and index and retention the left: a few dozen pages.
        const CACHE_KIB: i64 = 512;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)
            .map_err(open_err)?;
        conn.pragma_update(None, "mmap_size", 0_i64)
            .map_err(open_err)?;
        if let Some(limit) = opts.hard_limit_bytes {
            let page_size: i64 = conn
                .pragma_query_value(None, "page_size", |r| r.get(0))
                .map_err(open_err)?;
            let pages = (to_i64(limit) / page_size.max(512)).max(16);
            conn.pragma_update(None, "max_page_count", pages)
                .map_err(open_err)?;
        }

        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            opts: opts.clone(),
            commits_since_retention: 0,
            stats: StoreStats::default(),
            ip_a: IpText::new(),
            ip_b: IpText::new(),
            chunk_json: Vec::new(),
        };
        store.migrate(version)?;
        Ok(store)
    }

    fn migrate(&mut self, from: i64) -> Result<(), StoreError> {
        let start = usize::try_from(from).unwrap_or(0);
        for (i, step) in MIGRATIONS.iter().enumerate().skip(start) {
            let err = |source| StoreError::Migrate {
                path: self.path.clone(),
                from: i as i64,
                source,
            };
            let tx = self.conn.transaction().map_err(err)?;
            tx.execute_batch(step).map_err(err)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(err)?;
            tx.commit().map_err(err)?;
            if i > 0 || from > 0 {
                log::info!(
                    "{}: migrated schema to version {}",
                    self.path.display(),
                    i + 1
                );
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// The schema version in the file (after `open`, always `SCHEMA_VERSION`).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|source| self.read_err("user_version", source))
    }

    /// Starts the tick's transaction. Dropping the [`Tick`] without `commit` rolls back.
    pub fn begin(&mut self) -> Result<Tick<'_>, StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|source| StoreError::Write {
                path: self.path.clone(),
                what: "a transaction start",
                source,
            })?;
        Ok(Tick {
            store: self,
            rows: 0,
            open: true,
        })
    }

    /// Writes a whole batch in one transaction. On error nothing of it is stored and the
    /// batch is unchanged: keep it and call again later. Clear it after `Ok`.
    pub fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let result = self.write_inner(batch);
        if let Err(e) = &result {
            self.stats.failed_writes += 1;
            if e.is_full() {
                // Free room now rather than at the next scheduled pass.
                self.retention_after_commit(true);
            }
        }
        result
    }

    fn write_inner(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let mut tick = self.begin()?;
        for a in batch.alerts() {
            tick.alert(&a)?;
        }
        for v in batch.verdicts() {
            tick.verdict(&v)?;
        }
        tick.flows(&batch.flows)?;
        for (ts, counts) in &batch.windows {
            tick.window_counts(*ts, *counts)?;
        }
        for (ts, host, x) in &batch.samples {
            tick.feature_sample(*ts, *host, x)?;
        }
        tick.commit()
    }

    fn retention_after_commit(&mut self, force: bool) {
        self.commits_since_retention = self.commits_since_retention.saturating_add(1);
        if !force && self.commits_since_retention < self.opts.retention_every.max(1) {
            return;
        }
        self.commits_since_retention = 0;
        if let Err(e) = self.enforce_retention() {
            self.stats.retention_errors += 1;
            log::warn!("retention: {e}");
        }
    }

    /// Deletes the oldest rows over each table's row limit, then, if the bytes in use still
    /// exceed `max_bytes`, the oldest share of every retained table; then returns free pages
    /// beyond `max_bytes` to the file system with `PRAGMA incremental_vacuum`. Runs on its own every
    /// `retention_every` commits.
    pub fn enforce_retention(&mut self) -> Result<RetentionReport, StoreError> {
        self.stats.retention_runs += 1;
        let before = self.used_bytes()?;
        let mut deleted = 0;
        for (table, rows) in RETAINED {
            if let Some(max) = self.opts.max_rows.for_table(table) {
                if let Some(cut) = self.row_bound_cut(table, max)? {
                    let (lo, _) = self.rowid_range(table)?;
                    deleted += self.delete_through(table, rows, lo, cut)?;
                }
            }
        }
        if let Some(max_bytes) = self.opts.max_bytes {
            // A few passes at most: each deletes a proportional share plus a margin.
            for _ in 0..4 {
                let used = self.used_bytes()?;
                if used <= max_bytes {
                    break;
                }
                let share = ((used - max_bytes) as f64 / used as f64 + 0.05).min(1.0);
                for (table, rows) in RETAINED {
                    let (lo, hi) = self.rowid_range(table)?;
                    if hi < lo {
                        continue;
                    }
                    let n = ((hi - lo + 1) as f64 * share).ceil() as i64;
                    if n > 0 {
                        deleted += self.delete_through(table, rows, lo, lo + n - 1)?;
                    }
                }
            }
        }
        if deleted > 0 {
            self.shrink_to_byte_bound()?;
        }
        self.stats.rows_deleted += deleted;
        Ok(RetentionReport {
            rows_deleted: deleted,
            used_bytes_before: before,
            used_bytes_after: self.used_bytes()?,
        })
    }

    /// Returns free pages to the file system only as far as the file exceeds `max_bytes`.
    /// Pages freed by retention are otherwise kept for the next inserts: giving them back and
    /// growing the file again cost a fifth of all store time under a flood, and rewrote the
    /// same flash pages twice.
    fn shrink_to_byte_bound(&mut self) -> Result<(), StoreError> {
        let Some(max_bytes) = self.opts.max_bytes else {
            return Ok(());
        };
        let q = |p: &str| -> Result<i64, StoreError> {
            self.conn
                .pragma_query_value(None, p, |r| r.get(0))
                .map_err(|source| self.read_err("page counts", source))
        };
        let page_size = q("page_size")?.max(512);
        let excess = q("page_count")? - to_i64(max_bytes) / page_size;
        let pages = excess.min(q("freelist_count")?);
        if pages <= 0 {
            return Ok(());
        }
        // Each step of this pragma frees one page: step it to the end (execute_batch
        // would step once).
        self.conn
            .prepare(&format!("PRAGMA incremental_vacuum({pages})"))
            .and_then(|mut st| {
                let mut rows = st.query([])?;
                while rows.next()?.is_some() {}
                Ok(())
            })
            .map_err(|source| self.write_err("incremental vacuum", source))
    }

    /// The highest rowid of `table` that must go so that at most `max` rows remain, if any.
    /// For `flow_chunks` the rows are the flows in them, and whole chunks go.
    fn row_bound_cut(&self, table: &'static str, max: u64) -> Result<Option<i64>, StoreError> {
        if table == "flow_chunks" {
            let sql = "SELECT max(id) FROM (SELECT id, sum(n) OVER (ORDER BY id DESC) AS kept \
                       FROM flow_chunks) WHERE kept > ?1";
            return self
                .conn
                .prepare_cached(sql)
                .and_then(|mut st| st.query_row([to_i64(max)], |r| r.get(0)))
                .map_err(|source| self.read_err("flow counts", source));
        }
        let (lo, hi) = self.rowid_range(table)?;
        Ok((hi >= lo && (hi - lo + 1) as u64 > max).then(|| hi - to_i64(max)))
    }

    /// Deletes rows with rowid in `lo..=cut`, `delete_chunk` rows per statement, and returns
    /// how many rows (by the `rows` count expression) went.
    fn delete_through(
        &mut self,
        table: &'static str,
        rows: &'static str,
        lo: i64,
        cut: i64,
    ) -> Result<u64, StoreError> {
        let chunk = i64::from(self.opts.delete_chunk.max(1));
        let mut next = lo;
        let mut deleted = 0u64;
        let count = format!("SELECT {rows} FROM {table} WHERE rowid <= ?1");
        let delete = format!("DELETE FROM {table} WHERE rowid <= ?1");
        while next <= cut {
            let end = cut.min(next.saturating_add(chunk - 1));
            let n: i64 = self
                .conn
                .prepare_cached(&count)
                .and_then(|mut st| st.query_row([end], |r| r.get(0)))
                .map_err(|source| self.read_err("retention counts", source))?;
            self.conn
                .prepare_cached(&delete)
                .and_then(|mut st| st.execute([end]))
                .map_err(|source| self.write_err("retention deletes", source))?;
            deleted += n.max(0) as u64;
            next = end + 1;
        }
        Ok(deleted)
    }

    fn rowid_range(&self, table: &'static str) -> Result<(i64, i64), StoreError> {
        let sql = format!("SELECT min(rowid), max(rowid) FROM {table}");
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut st| {
                st.query_row([], |r| {
                    Ok((
                        r.get::<_, Option<i64>>(0)?.unwrap_or(0),
                        r.get::<_, Option<i64>>(1)?.unwrap_or(-1),
                    ))
                })
            })
            .map_err(|source| self.read_err("row counts", source))
    }

    /// Bytes the database uses: (pages − free pages) × page size.
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let q = |p: &str| -> Result<i64, StoreError> {
            self.conn
                .pragma_query_value(None, p, |r| r.get(0))
                .map_err(|source| self.read_err("page counts", source))
        };
        let used = (q("page_count")? - q("freelist_count")?).max(0) * q("page_size")?;
        Ok(used as u64)
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .and_then(|mut st| st.execute([key, value]))
            .map(|_| ())
            .map_err(|source| self.write_err("meta", source))
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
            .map_err(|source| self.read_err("meta", source))
    }

    /// Verdicts at or above `min_level` with `ts >= since` (Unix seconds), newest first.
    pub fn recent_verdicts(
        &self,
        min_level: Level,
        since: f64,
        limit: u32,
    ) -> Result<Vec<VerdictRecord>, StoreError> {
        let sql = "SELECT id, ts, host, verdict, risk, anomaly_score, confidence, reasons_json \
                   FROM verdicts WHERE ts >= ?1 AND level >= ?2 ORDER BY ts DESC, id DESC LIMIT ?3";
        self.query_vec(
            "verdicts",
            sql,
            params![since, min_level.index(), limit],
            |r| {
                let reasons_json: String = r.get(7)?;
                Ok(VerdictRecord {
                    id: r.get(0)?,
                    ts: r.get(1)?,
                    host: r.get(2)?,
                    verdict: r.get(3)?,
                    risk: r.get(4)?,
                    anomaly_score: r.get(5)?,
                    confidence: r.get(6)?,
                    reasons: serde_json::from_str(&reasons_json)
                        .unwrap_or(serde_json::Value::String(reasons_json)),
                })
            },
        )
    }

    /// Alerts with `ts >= since`, optionally of one sid, newest first.
    pub fn recent_alerts(
        &self,
        since: f64,
        sid: Option<u32>,
        limit: u32,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        let sql = "SELECT id, ts, gid, sid, rev, msg, category, priority, action, src, src_port, \
                   dst, dst_port, proto, flow_id FROM alerts \
                   WHERE ts >= ?1 AND (?2 IS NULL OR sid = ?2) ORDER BY ts DESC, id DESC LIMIT ?3";
        self.query_vec("alerts", sql, params![since, sid, limit], |r| {
            Ok(AlertRecord {
                id: r.get(0)?,
                ts: r.get(1)?,
                gid: r.get(2)?,
                sid: r.get(3)?,
                rev: r.get(4)?,
                msg: r.get(5)?,
                category: r.get(6)?,
                priority: r.get(7)?,
                action: r.get(8)?,
                src: r.get(9)?,
                src_port: r.get(10)?,
                dst: r.get(11)?,
                dst_port: r.get(12)?,
                proto: r.get(13)?,
                flow_id: r.get::<_, i64>(14)? as u64,
            })
        })
    }

    /// Finished flows that ended at or after `since`, newest first.
    pub fn recent_flows(&self, since: f64, limit: u32) -> Result<Vec<FlowRecord>, StoreError> {
        // Only the chunks that hold such flows are unpacked (a chunk's end is its latest).
        let sql = concat!(
            "SELECT * FROM (SELECT ",
            flow_columns_sql!(),
            " FROM flow_chunks AS c, json_each(c.rows) AS j WHERE c.\"end\" >= ?1) \
             WHERE \"end\" >= ?1 ORDER BY \"end\" DESC, id DESC LIMIT ?2"
        );
        self.query_vec("flows", sql, params![since, limit], |r| {
            Ok(FlowRecord {
                id: r.get(0)?,
                flow_id: r.get::<_, i64>(1)? as u64,
                start: r.get(2)?,
                end: r.get(3)?,
                src: r.get(4)?,
                src_port: r.get(5)?,
                dst: r.get(6)?,
                dst_port: r.get(7)?,
                proto: r.get(8)?,
                pkts_to_server: r.get::<_, i64>(9)? as u64,
                pkts_to_client: r.get::<_, i64>(10)? as u64,
                bytes_to_server: r.get::<_, i64>(11)? as u64,
                bytes_to_client: r.get::<_, i64>(12)? as u64,
                tcp_flags: r.get(13)?,
                reason: r.get(14)?,
            })
        })
    }

    /// One row per host with a stored verdict since `since`: its latest verdict, its worst
    /// level and risk, and how many verdicts of each level above SAFE it got. Worst first.
    pub fn hosts(&self, since: f64, limit: u32) -> Result<Vec<HostSummary>, StoreError> {
        let sql = "SELECT host, ts, verdict, risk, max_level, max_risk, n1, n2, n3 FROM ( \
                     SELECT host, ts, verdict, risk, \
                       row_number() OVER (PARTITION BY host ORDER BY ts DESC, id DESC) AS rn, \
                       max(level) OVER (PARTITION BY host) AS max_level, \
                       max(risk) OVER (PARTITION BY host) AS max_risk, \
                       sum(level = 1) OVER (PARTITION BY host) AS n1, \
                       sum(level = 2) OVER (PARTITION BY host) AS n2, \
                       sum(level = 3) OVER (PARTITION BY host) AS n3 \
                     FROM verdicts WHERE ts >= ?1) \
                   WHERE rn = 1 ORDER BY max_level DESC, max_risk DESC, ts DESC, host LIMIT ?2";
        self.query_vec("hosts", sql, params![since, limit], |r| {
            let max_level: i64 = r.get(4)?;
            Ok(HostSummary {
                host: r.get(0)?,
                last_ts: r.get(1)?,
                last_verdict: r.get(2)?,
                last_risk: r.get(3)?,
                max_verdict: level_word(max_level).to_string(),
                max_risk: r.get(5)?,
                warning: r.get::<_, i64>(6)? as u64,
                high: r.get::<_, i64>(7)? as u64,
                critical: r.get::<_, i64>(8)? as u64,
            })
        })
    }

    /// Host-windows judged at each level since `since`, summed from the per-tick counts.
    pub fn verdict_counts(&self, since: f64) -> Result<LevelCounts, StoreError> {
        let sql = "SELECT total(safe), total(warning), total(high), total(critical) \
                   FROM window_counts WHERE ts >= ?1";
        self.conn
            .prepare_cached(sql)
            .and_then(|mut st| {
                st.query_row([since], |r| {
                    Ok(LevelCounts {
                        safe: r.get::<_, f64>(0)? as u64,
                        warning: r.get::<_, f64>(1)? as u64,
                        high: r.get::<_, f64>(2)? as u64,
                        critical: r.get::<_, f64>(3)? as u64,
                    })
                })
            })
            .map_err(|source| self.read_err("window counts", source))
    }

    /// Host-windows judged at each level, summed into buckets of `bucket_s` seconds (keyed by
    /// the bucket's start) for `ts >= since`, oldest first: the status page's chart.
    pub fn window_series(
        &self,
        since: f64,
        bucket_s: f64,
    ) -> Result<Vec<(f64, LevelCounts)>, StoreError> {
        let sql = "SELECT CAST(ts / ?2 AS INTEGER) AS b, total(safe), total(warning), \
                   total(high), total(critical) FROM window_counts WHERE ts >= ?1 \
                   GROUP BY b ORDER BY b";
        self.query_vec(
            "window series",
            sql,
            params![since, bucket_s.max(1.0)],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as f64 * bucket_s.max(1.0),
                    LevelCounts {
                        safe: r.get::<_, f64>(1)? as u64,
                        warning: r.get::<_, f64>(2)? as u64,
                        high: r.get::<_, f64>(3)? as u64,
                        critical: r.get::<_, f64>(4)? as u64,
                    },
                ))
            },
        )
    }

    /// Learning-mode samples with `ts >= since`, sorted by time then host (as training needs).
    pub fn feature_samples(
        &self,
        since: f64,
        limit: u32,
    ) -> Result<Vec<FeatureSample>, StoreError> {
        let sql =
            "SELECT ts, host, f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14 \
                   FROM feature_samples WHERE ts >= ?1 ORDER BY ts, host, id LIMIT ?2";
        self.query_vec("feature samples", sql, params![since, limit], |r| {
            let mut features = [0f32; N_FEATURES];
            for (i, f) in features.iter_mut().enumerate() {
                *f = r.get::<_, f64>(i + 2)? as f32;
            }
            Ok(FeatureSample {
                ts: r.get(0)?,
                host: r.get(1)?,
                features,
            })
        })
    }

    /// Row count of one of our tables (for status and tests).
    pub fn count(&self, table: Table) -> Result<u64, StoreError> {
        let sql = match table {
            // Without unpacking every chunk.
            Table::Flows => "SELECT coalesce(sum(n), 0) FROM flow_chunks".to_string(),
            _ => format!("SELECT count(*) FROM {}", table.name()),
        };
        self.conn
            .query_row(&sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|source| self.read_err("row counts", source))
    }

    /// Copies a consistent snapshot of the database to `dest` (overwritten) with SQLite's
    /// online backup API; the copy is a self-contained file (rollback journal, not WAL).
    pub fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        let err = |source| StoreError::Backup {
            path: self.path.clone(),
            dest: dest.to_path_buf(),
            source,
        };
        let mut out = Connection::open(dest).map_err(err)?;
        {
            let backup = rusqlite::backup::Backup::new(&self.conn, &mut out).map_err(err)?;
            // One step copies every page under one read lock: a consistent snapshot.
            backup
                .run_to_completion(i32::MAX, Duration::from_millis(10), None)
                .map_err(err)?;
        }
        out.pragma_update(None, "journal_mode", "DELETE")
            .map_err(err)?;
        Ok(())
    }

    fn query_vec<T, P: rusqlite::Params>(
        &self,
        what: &'static str,
        sql: &str,
        params: P,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut st| st.query_map(params, f)?.collect())
            .map_err(|source| self.read_err(what, source))
    }

    fn read_err(&self, what: &'static str, source: rusqlite::Error) -> StoreError {
        StoreError::Read {
            path: self.path.clone(),
            what,
            source,
        }
    }

    fn write_err(&self, what: &'static str, source: rusqlite::Error) -> StoreError {
        StoreError::Write {
            path: self.path.clone(),
            what,
            source,
        }
    }
}

/// The tables we own, for [`Store::count`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Alerts,
    Verdicts,
    Flows,
    Meta,
    WindowCounts,
    FeatureSamples,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Alerts => "alerts",
            Table::Verdicts => "verdicts",
            Table::Flows => "flows",
            Table::Meta => "meta",
            Table::WindowCounts => "window_counts",
            Table::FeatureSamples => "feature_samples",
        }
    }
}

/// One tick's open transaction. Every insert uses a cached prepared statement; dropping
/// the tick without [`Tick::commit`] rolls everything back.
pub struct Tick<'a> {
    store: &'a mut Store,
    rows: u64,
    open: bool,
}

impl Tick<'_> {
    pub fn alert(&mut self, a: &AlertRow<'_>) -> Result<(), StoreError> {
        let s = &mut *self.store;
        let src = s.ip_a.set(a.src);
        let dst = s.ip_b.set(a.dst);
        s.conn
            .prepare_cached(INSERT_ALERT)
            .and_then(|mut st| {
                st.execute(params![
                    micros_to_secs(a.ts),
                    a.gid,
                    a.sid,
                    a.rev,
                    a.msg,
                    a.category,
                    a.priority,
                    a.action,
                    src,
                    a.src_port,
                    dst,
                    a.dst_port,
                    proto_name(a.proto),
                    a.flow_id as i64,
                ])
            })
            .map_err(|source| write_err(&s.path, "an alert", source))?;
        self.rows += 1;
        Ok(())
    }

    pub fn verdict(&mut self, v: &VerdictRow<'_>) -> Result<(), StoreError> {
        let s = &mut *self.store;
        let host = s.ip_a.set(v.host);
        s.conn
            .prepare_cached(INSERT_VERDICT)
            .and_then(|mut st| {
                st.execute(params![
                    micros_to_secs(v.ts),
                    host,
                    v.verdict.as_str(),
                    v.verdict.index(),
                    v.risk,
                    v.anomaly_score,
                    v.confidence,
                    v.reasons_json,
                ])
            })
            .map_err(|source| write_err(&s.path, "a verdict", source))?;
        self.rows += 1;
        Ok(())
    }

    pub fn flow(&mut self, f: &FlowRow) -> Result<(), StoreError> {
        self.flows(std::slice::from_ref(f))
    }

    /// Many finished flows, in chunks of [`FLOWS_PER_CHUNK`]: one B-tree row per flow
    /// spent more than a microsecond each in SQLite (floods end hundreds of thousands of flows
    /// a minute); a chunk is one JSON text, formatted here and copied once.
    pub fn flows(&mut self, rows: &[FlowRow]) -> Result<(), StoreError> {
        let s = &mut *self.store;
        for chunk in rows.chunks(FLOWS_PER_CHUNK) {
            let json = &mut s.chunk_json;
            json.clear();
            let t0 = chunk.iter().map(|f| f.start).min().unwrap_or(0);
            let flow_id0 = chunk_flow_id0(chunk);
            let mut end = Micros::MIN;
            {
                let mut out = Staged::new(json);
                out.byte(b'[');
                for (i, f) in chunk.iter().enumerate() {
                    if i > 0 {
                        out.byte(b',');
                    }
                    push_flow_json(&mut out, t0, flow_id0, i, f, &mut s.ip_a);
                    end = end.max(f.end);
                }
                out.byte(b']');
            }
            s.conn
                .prepare_cached(INSERT_FLOW_CHUNK)
                .and_then(|mut st| {
                    st.raw_bind_parameter(1, chunk.len() as i64)?;
                    st.raw_bind_parameter(2, t0)?;
                    st.raw_bind_parameter(3, micros_to_secs(end))?;
                    st.raw_bind_parameter(4, flow_id0)?;
                    st.raw_bind_parameter(5, text(json))?;
                    st.raw_execute()
                })
                .map_err(|source| write_err(&s.path, "flows", source))?;
            self.rows += chunk.len() as u64;
        }
        Ok(())
    }

    /// How many host-windows closed at `ts` at each level (indexed by `Level::index`).
    pub fn window_counts(&mut self, ts: Micros, counts: [u64; 4]) -> Result<(), StoreError> {
        let s = &mut *self.store;
        s.conn
            .prepare_cached(INSERT_WINDOWS)
            .and_then(|mut st| {
                st.execute(params![
                    micros_to_secs(ts),
                    to_i64(counts[0]),
                    to_i64(counts[1]),
                    to_i64(counts[2]),
                    to_i64(counts[3]),
                ])
            })
            .map_err(|source| write_err(&s.path, "window counts", source))?;
        self.rows += 1;
        Ok(())
    }

    /// One host-window's features, kept for training in learning mode.
    pub fn feature_sample(
        &mut self,
        ts: Micros,
        host: IpAddr,
        x: &FeatureVector,
    ) -> Result<(), StoreError> {
        let s = &mut *self.store;
        let host = s.ip_a.set(host);
        let f = |i: usize| f64::from(x[i]);
        s.conn
            .prepare_cached(INSERT_SAMPLE)
            .and_then(|mut st| {
                st.execute(params![
                    micros_to_secs(ts),
                    host,
                    f(0),
                    f(1),
                    f(2),
                    f(3),
                    f(4),
                    f(5),
                    f(6),
                    f(7),
                    f(8),
                    f(9),
                    f(10),
                    f(11),
                    f(12),
                    f(13),
                    f(14),
                ])
            })
            .map_err(|source| write_err(&s.path, "a feature sample", source))?;
        self.rows += 1;
        Ok(())
    }

    /// Commits the tick; every `retention_every` commits, retention runs (its errors are
    /// logged and counted, never returned: the rows are safely stored by then).
    pub fn commit(mut self) -> Result<(), StoreError> {
        let s = &mut *self.store;
        s.conn
            .execute_batch("COMMIT")
            .map_err(|source| write_err(&s.path, "a commit", source))?;
        self.open = false;
        s.stats.commits += 1;
        s.stats.rows_written += self.rows;
        s.retention_after_commit(false);
        Ok(())
    }
}

impl Drop for Tick<'_> {
    fn drop(&mut self) {
        if self.open {
            // After a failed statement or COMMIT; if SQLite already rolled back, this fails
            // harmlessly.
            let _ = self.store.conn.execute_batch("ROLLBACK");
        }
    }
}

thread_local! {
    /// Frames in the WAL after the latest commit made on this thread through a connection
    /// whose checkpoints were handed off ([`Store::hand_off_checkpoints`]).
    static WAL_FRAMES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// The WAL hook of a connection that no longer checkpoints on commit: it only notes the
/// WAL's length (SQLite's own auto-checkpoint is this same hook, so installing it turns
/// that off).
fn note_wal_frames(_: &rusqlite::hooks::Wal, frames: std::os::raw::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(frames));
    Ok(())
}

/// A second connection to a store's file that only runs checkpoints, so the connection
/// that writes never waits on a checkpoint's fsyncs (src/writer.rs).
#[derive(Debug)]
pub struct Checkpointer {
    conn: Connection,
    path: PathBuf,
}

impl Checkpointer {
    /// A passive checkpoint: copies every WAL frame no reader or writer still needs into the
    /// database file, fsyncs, and never blocks the writer. Returns whether every frame was
    /// copied.
    pub fn run(&self) -> Result<bool, StoreError> {
        passive_checkpoint(&self.conn, &self.path)
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)` on `conn`: true when it was not refused (another
/// checkpoint running) and every frame in the WAL was copied.
fn passive_checkpoint(conn: &Connection, path: &Path) -> Result<bool, StoreError> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(r.get::<_, i64>(0)? == 0 && r.get::<_, i64>(1)? == r.get::<_, i64>(2)?)
    })
    .map_err(|source| write_err(path, "a checkpoint", source))
}

impl Store {
    /// Hands this connection's WAL checkpoints to a second connection, returned to run them
    /// on another thread: from now on a commit here only appends to the WAL, and
    /// [`Store::wal_frames`] tells how long the WAL has grown. `None` (and nothing changed)
    /// when the database has no WAL (in memory, or the file system refused WAL).
    pub fn hand_off_checkpoints(&mut self) -> Result<Option<Checkpointer>, StoreError> {
        let open_err = |source| StoreError::Open {
            path: self.path.clone(),
            source,
        };
        let mode: String = self
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") || self.conn.path().is_none_or(str::is_empty) {
            return Ok(None);
        }
        let conn = Connection::open(&self.path).map_err(open_err)?;
        conn.busy_timeout(self.opts.busy_timeout)
            .map_err(open_err)?;
        // The checkpoint's fsyncs are what makes committed rows durable in WAL mode.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "cache_size", -64_i64)
            .map_err(open_err)?;
        WAL_FRAMES.with(|f| f.set(0));
        self.conn.wal_hook(Some(note_wal_frames));
        Ok(Some(Checkpointer {
            conn,
            path: self.path.clone(),
        }))
    }

    /// Frames in the WAL after the latest commit on this thread, once checkpoints were handed
    /// off (a frame is one page, [`Store::page_size`] bytes).
    pub fn wal_frames(&self) -> i64 {
        i64::from(WAL_FRAMES.with(std::cell::Cell::get))
    }

    /// The database's page size: [`PAGE_SIZE`] for a file this version created, whatever
    /// it was created with otherwise.
    pub fn page_size(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(|source| StoreError::Open {
                path: self.path.clone(),
                source,
            })
    }

    /// A passive checkpoint on this connection, between its transactions: what SQLite's own
    /// auto-checkpoint does, and the backstop when the WAL has grown past what the
    /// checkpoint thread keeps up with (run it holding that thread's lock: SQLite refuses a
    /// second checkpoint while one runs). With no write in progress it copies every frame
    /// no reader still needs, so the next commit starts the WAL over from its beginning. It
    /// never waits for readers: a reader holding an old snapshot (a user's sqlite3 shell)
    /// only keeps the WAL from starting over, as it always did. Returns whether every frame
    /// was copied.
    pub fn checkpoint(&self) -> Result<bool, StoreError> {
        passive_checkpoint(&self.conn, &self.path)
    }
}

fn write_err(path: &Path, what: &'static str, source: rusqlite::Error) -> StoreError {
    StoreError::Write {
        path: path.to_path_buf(),
        what,
        source,
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn level_word(level: i64) -> &'static str {
    usize::try_from(level)
        .ok()
        .and_then(|i| Level::ALL.get(i))
        .map_or("SAFE", |l| l.as_str())
}

/// A verdict as the HTTP API returns it; `reasons` is the stored JSON array itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerdictRecord {
    pub id: i64,
    pub ts: f64,
    pub host: String,
    pub verdict: String,
    pub risk: u8,
    pub anomaly_score: Option<f64>,
    pub confidence: f64,
    pub reasons: serde_json::Value,
}

/// An alert as the HTTP API returns it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertRecord {
    pub id: i64,
    pub ts: f64,
    pub gid: u32,
    pub sid: u32,
    pub rev: u32,
    pub msg: String,
    pub category: String,
    pub priority: u8,
    pub action: String,
    pub src: String,
    pub src_port: u16,
    pub dst: String,
    pub dst_port: u16,
    pub proto: String,
    pub flow_id: u64,
}

/// A finished flow as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowRecord {
    pub id: i64,
    pub flow_id: u64,
    pub start: f64,
    pub end: f64,
    pub src: String,
    pub src_port: u16,
    pub dst: String,
    pub dst_port: u16,
    pub proto: String,
    pub pkts_to_server: u64,
    pub pkts_to_client: u64,
    pub bytes_to_server: u64,
    pub bytes_to_client: u64,
    pub tcp_flags: u8,
    pub reason: String,
}

/// Per-host summary for `/api/hosts`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostSummary {
    pub host: String,
    pub last_ts: f64,
    pub last_verdict: String,
    pub last_risk: u8,
    pub max_verdict: String,
    pub max_risk: u8,
    pub warning: u64,
    pub high: u64,
    pub critical: u64,
}

/// Host-windows per level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LevelCounts {
    pub safe: u64,
    pub warning: u64,
    pub high: u64,
    pub critical: u64,
}

/// One stored learning-mode sample.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeatureSample {
    pub ts: f64,
    pub host: String,
    pub features: FeatureVector,
}

/// Returned when a [`Batch`] is at its row bound; the row was dropped and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the store's write backlog is full ({0} rows); row dropped")]
pub struct BatchFull(pub usize);

/// A byte range in the batch's text arena.
#[derive(Clone, Copy, Debug)]
struct Span(u32, u32);

#[derive(Clone, Copy, Debug)]
struct AlertRec {
    ts: Micros,
    gid: u32,
    sid: u32,
    rev: u32,
    msg: Span,
    category: Span,
    priority: u8,
    action: Span,
    src: IpAddr,
    src_port: u16,
    dst: IpAddr,
    dst_port: u16,
    proto: u8,
    flow_id: u64,
}

#[derive(Clone, Copy, Debug)]
struct VerdictRec {
    ts: Micros,
    host: IpAddr,
    verdict: Level,
    risk: u8,
    anomaly_score: Option<f64>,
    confidence: f64,
    reasons_json: Span,
}

/// Rows waiting to be written: filled during a tick, written with [`Store::write`], cleared
/// after success. Bounded: past `max_rows` new rows are dropped and counted. Strings are
/// copied into one arena, so a cleared batch refills without allocating.
#[derive(Debug)]
pub struct Batch {
    text: String,
    alerts: Vec<AlertRec>,
    verdicts: Vec<VerdictRec>,
    flows: Vec<FlowRow>,
    windows: Vec<(Micros, [u64; 4])>,
    samples: Vec<(Micros, IpAddr, FeatureVector)>,
    max_rows: usize,
    dropped: u64,
}

impl Batch {
    /// A batch holding at most `max_rows` rows (all kinds together).
    pub fn new(max_rows: usize) -> Batch {
        let pre = max_rows.min(1024);
        Batch {
            text: String::with_capacity(pre * 64),
            alerts: Vec::with_capacity(pre),
            verdicts: Vec::with_capacity(pre),
            flows: Vec::with_capacity(pre),
            windows: Vec::with_capacity(pre.min(64)),
            samples: Vec::with_capacity(pre),
            max_rows,
            dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.alerts.len()
            + self.verdicts.len()
            + self.flows.len()
            + self.windows.len()
            + self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows dropped because the batch was full, since it was created.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Changes the bound (rows already held stay, even above it).
    pub fn set_max_rows(&mut self, max_rows: usize) {
        self.max_rows = max_rows;
    }

    /// Returns the count of dropped rows and restarts it (the batch changes hands).
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Appends `newer`'s rows after this batch's own, up to the bound (what does not fit is
    /// dropped and counted here). Used when a write failed: the unwritten rows come first.
    pub fn append(&mut self, newer: &Batch) {
        for a in newer.alerts() {
            let _ = self.alert(&a);
        }
        for v in newer.verdicts() {
            let _ = self.verdict(&v);
        }
        for f in &newer.flows {
            let _ = self.flow(f);
        }
        for &(ts, counts) in &newer.windows {
            let _ = self.window_counts(ts, counts);
        }
        for (ts, host, x) in &newer.samples {
            let _ = self.feature_sample(*ts, *host, x);
        }
    }

    /// Forgets the rows (after a successful write), keeping the buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.alerts.clear();
        self.verdicts.clear();
        self.flows.clear();
        self.windows.clear();
        self.samples.clear();
    }

    fn room(&mut self) -> Result<(), BatchFull> {
        if self.len() >= self.max_rows {
            self.dropped += 1;
            Err(BatchFull(self.max_rows))
        } else {
            Ok(())
        }
    }

    fn put(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(s);
        Span(
            u32::try_from(start).unwrap_or(u32::MAX),
            u32::try_from(s.len()).unwrap_or(0),
        )
    }

    fn get(&self, span: Span) -> &str {
        let (a, n) = (span.0 as usize, span.1 as usize);
        self.text.get(a..a + n).unwrap_or("")
    }

    pub fn alert(&mut self, a: &AlertRow<'_>) -> Result<(), BatchFull> {
        self.room()?;
        let rec = AlertRec {
            ts: a.ts,
            gid: a.gid,
            sid: a.sid,
            rev: a.rev,
            msg: self.put(a.msg),
            category: self.put(a.category),
            priority: a.priority,
            action: self.put(a.action),
            src: a.src,
            src_port: a.src_port,
            dst: a.dst,
            dst_port: a.dst_port,
            proto: a.proto,
            flow_id: a.flow_id,
        };
        self.alerts.push(rec);
        Ok(())
    }

    pub fn verdict(&mut self, v: &VerdictRow<'_>) -> Result<(), BatchFull> {
        self.room()?;
        let rec = VerdictRec {
            ts: v.ts,
            host: v.host,
            verdict: v.verdict,
            risk: v.risk,
            anomaly_score: v.anomaly_score,
            confidence: v.confidence,
            reasons_json: self.put(v.reasons_json),
        };
        self.verdicts.push(rec);
        Ok(())
    }

    pub fn flow(&mut self, f: &FlowRow) -> Result<(), BatchFull> {
        self.room()?;
        self.flows.push(*f);
        Ok(())
    }

    /// Many flow rows at once (one copy); those beyond the bound are dropped and counted.
    pub fn flows_from(&mut self, rows: &[FlowRow]) {
        let room = self.max_rows.saturating_sub(self.len());
        let take = room.min(rows.len());
        self.flows.extend_from_slice(&rows[..take]);
        self.dropped += (rows.len() - take) as u64;
    }

    pub fn window_counts(&mut self, ts: Micros, counts: [u64; 4]) -> Result<(), BatchFull> {
        self.room()?;
        self.windows.push((ts, counts));
        Ok(())
    }

    pub fn feature_sample(
        &mut self,
        ts: Micros,
        host: IpAddr,
        x: &FeatureVector,
    ) -> Result<(), BatchFull> {
        self.room()?;
        self.samples.push((ts, host, *x));
        Ok(())
    }

    /// The batched alerts, borrowed back as rows.
    pub fn alerts(&self) -> impl Iterator<Item = AlertRow<'_>> + '_ {
        self.alerts.iter().map(|a| AlertRow {
            ts: a.ts,
            gid: a.gid,
            sid: a.sid,
            rev: a.rev,
            msg: self.get(a.msg),
            category: self.get(a.category),
            priority: a.priority,
            action: self.get(a.action),
            src: a.src,
            src_port: a.src_port,
            dst: a.dst,
            dst_port: a.dst_port,
            proto: a.proto,
            flow_id: a.flow_id,
        })
    }

    pub fn verdicts(&self) -> impl Iterator<Item = VerdictRow<'_>> + '_ {
        self.verdicts.iter().map(|v| VerdictRow {
            ts: v.ts,
            host: v.host,
            verdict: v.verdict,
            risk: v.risk,
            anomaly_score: v.anomaly_score,
            confidence: v.confidence,
            reasons_json: self.get(v.reasons_json),
        })
    }

    pub fn flows(&self) -> &[FlowRow] {
        &self.flows
    }
}

/// Decimal text of every octet value, left-aligned, and its length.
const OCTET_TEXT: [([u8; 3], u8); 256] = {
    let mut t = [([0u8; 3], 0u8); 256];
    let mut v = 0;
    while v < 256 {
        let (h, d, u) = ((v / 100) as u8, (v / 10 % 10) as u8, (v % 10) as u8);
        t[v] = if v >= 100 {
            ([b'0' + h, b'0' + d, b'0' + u], 3)
        } else if v >= 10 {
            ([b'0' + d, b'0' + u, 0], 2)
        } else {
            ([b'0' + u, 0, 0], 1)
        };
        v += 1;
    }
    t
};

/// The text of an address in a fixed buffer: formatting a row never allocates.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    pub(crate) fn new() -> IpText {
        IpText {
            buf: [0; 48],
            len: 0,
        }
    }

    /// Formats `ip` canonically (RFC 5952 for IPv6) and returns the text.
    pub(crate) fn set(&mut self, ip: IpAddr) -> &str {
        self.set_bytes(ip);
        self.as_str()
    }

    /// As [`IpText::set`], as ASCII bytes.
    pub(crate) fn set_bytes(&mut self, ip: IpAddr) -> &[u8] {
        self.len = 0;
        match ip {
            // By hand: `Display` through `fmt::write` cost as much as binding the whole row.
            IpAddr::V4(v4) => {
                // "a.b.c.d" from a table of the 256 octet texts: at most 15 bytes, so it
                // always fits; written into a scratch array without per-byte checks.
                let mut out = [0u8; 16];
                let mut n = 0;
                for (i, o) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out[n] = b'.';
                        n += 1;
                    }
                    let (digits, len) = OCTET_TEXT[usize::from(o)];
                    out[n..n + 3].copy_from_slice(&digits);
                    n += usize::from(len);
                }
                self.buf[..n].copy_from_slice(&out[..n]);
                self.len = n;
            }
            // Cannot fail: the longest address text (45 bytes) fits.
            IpAddr::V6(_) => {
                let _ = write!(self, "{ip}");
            }
        }
        &self.buf[..self.len]
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// One xorshift64 step: repeatable pseudo-random inputs for the tests.
#[cfg(test)]
fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[cfg(test)]
mod tests {
    use super::IpText;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn staged_ints_are_what_display_writes() {
        let mut out = Vec::new();
        let mut all = Vec::new();
        for v in [
            0i64,
            1,
            9,
            10,
            11,
            99,
            100,
            -1,
            -9,
            -10,
            1 << 40,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ]
        .into_iter()
        // Every length, at its edges (10^k - 1, 10^k, 10^k + 1, both signs), and a stretch
        // of small numbers where the two-digit steps meet the last digit.
        .chain((1..19).flat_map(|k| {
            let p = 10i64.pow(k);
            [p - 1, p, p + 1, -(p - 1), -p, -(p + 1)]
        }))
        .chain(-1000..=12_345)
        .chain([u32::MAX as i64, 4_294_967_294, 167_772_161])
        {
            out.clear();
            super::Staged::new(&mut out).row(20).int(v);
            assert_eq!(std::str::from_utf8(&out).unwrap(), v.to_string());
            all.push(v);
        }
        // Every number below 10^6 and the edges of the eight-digit step.
        for v in (0..1_000_000)
            .chain(99_999_990..100_000_010)
            .chain(4_294_967_200..=4_294_967_295)
        {
            out.clear();
            super::Staged::new(&mut out).row(20).int(v);
            assert_eq!(std::str::from_utf8(&out).unwrap(), v.to_string());
        }
        // A sweep of random magnitudes: every width of u32 and i64, both signs.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            let x = super::xorshift(&mut x);
            let v = (x >> (x % 64)) as i64;
            let v = if x & (1 << 20) != 0 {
                v.wrapping_neg()
            } else {
                v
            };
            out.clear();
            super::Staged::new(&mut out).row(20).int(v);
            assert_eq!(std::str::from_utf8(&out).unwrap(), v.to_string());
        }
        // All of them through one staging buffer, which fills and is appended many times.
        out.clear();
        let mut st = super::Staged::new(&mut out);
        for (i, &v) in all.iter().enumerate() {
            if i > 0 {
                st.byte(b',');
            }
            st.row(20).int(v);
            if i % 1000 == 0 {
                st.text(b"OTHER");
            }
        }
        drop(st);
        let want: Vec<String> = all
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if i % 1000 == 0 {
                    format!("{v}\"OTHER\"")
                } else {
                    v.to_string()
                }
            })
            .collect();
        assert_eq!(std::str::from_utf8(&out).unwrap(), want.join(","));
        // A text longer than the buffer goes straight to the output, in order.
        out.clear();
        let long = vec![b'x'; 600];
        let mut st = super::Staged::new(&mut out);
        st.row(20).int(7);
        st.row(20).int(-12_345);
        st.text(&long);
        st.row(20).int(i64::MIN);
        st.text(b"y");
        drop(st);
        let want = format!("7-12345\"{}\"{}\"y\"", "x".repeat(600), i64::MIN);
        assert_eq!(std::str::from_utf8(&out).unwrap(), want);
    }

    #[test]
    fn eight_digits_are_what_display_writes() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for i in 0..1_000_000u32 {
            let x = super::xorshift(&mut x);
            let n = match i % 4 {
                0 => i,
                1 => 99_999_999 - i,
                _ => (x % 100_000_000) as u32,
            };
            let text = super::eight_digits(n).to_le_bytes();
            assert_eq!(std::str::from_utf8(&text).unwrap(), format!("{n:08}"));
        }
    }

    #[test]
    fn ip_text_matches_display() {
        let mut t = IpText::new();
        let mut x: u32 = 0x1234_5678;
        let mut cases: Vec<IpAddr> = [0u32, 1, 9, 10, 99, 100, 255, 0xffff_ffff, 0x0a00_0001]
            .into_iter()
            .map(|v| IpAddr::V4(Ipv4Addr::from(v)))
            .collect();
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            cases.push(IpAddr::V4(Ipv4Addr::from(x)));
        }
        cases.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
        cases.push(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 1, 0, 0, 1)));
        for ip in cases {
            assert_eq!(t.set(ip), ip.to_string());
        }
    }
}

#[cfg(test)]
mod open_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Per-connection memory pragmas are set on every open, fresh file or existing one
    /// (they are not stored in the file).
    #[test]
    fn open_bounds_the_page_cache_and_maps_nothing() {
        let dir = std::env::temp_dir().join(format!("pn-store-open-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        for _fresh_then_existing in 0..2 {
            let store = Store::open(&path, &StoreOptions::default()).unwrap();
            let q = |p: &str| -> i64 {
                store
                    .conn
                    .pragma_query_value(None, p, |r| r.get(0))
                    .unwrap()
            };
            assert_eq!(q("cache_size"), -512, "cache_size in KiB (negative)");
            assert_eq!(q("mmap_size"), 0);
            assert_eq!(q("journal_size_limit"), 4 << 20);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod flow_encoding_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn udp_flood_flow(flow_id: u64, start: Micros) -> FlowRow {
        FlowRow {
            flow_id,
            start,
            end: start,
            src: IpAddr::V4(Ipv4Addr::new(103, 150, 75, 26)),
            src_port: 161,
            dst: IpAddr::V4(Ipv4Addr::new(10, 10, 10, 10)),
            dst_port: 54_609,
            proto: 17,
            pkts_to_server: 1,
            pkts_to_client: 0,
            bytes_to_server: 68,
            bytes_to_client: 0,
            tcp_flags: 0,
            reason: "evicted",
        }
    }

    fn element(t0: Micros, flow_id0: Option<i64>, j: usize, f: &FlowRow) -> String {
        let mut out = Vec::new();
        push_flow_json(
            &mut Staged::new(&mut out),
            t0,
            flow_id0,
            j,
            f,
            &mut IpText::new(),
        );
        String::from_utf8(out).unwrap()
    }

    /// The rows of `flows` staged through one buffer, as a chunk is written.
    fn staged_at_once(t0: Micros, flow_id0: Option<i64>, flows: &[FlowRow]) -> String {
        let mut out = Vec::new();
        let mut ip = IpText::new();
        {
            let mut st = Staged::new(&mut out);
            for (j, f) in flows.iter().enumerate() {
                push_flow_json(&mut st, t0, flow_id0, j, f, &mut ip);
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// One staging buffer over many rows (as a chunk is written: the buffer fills and is
    /// appended mid-row) writes what a fresh one per row does.
    #[test]
    fn a_chunk_staged_at_once_equals_its_rows_staged_one_by_one() {
        let addrs = [
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)),
            IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)),
            IpAddr::V4(Ipv4Addr::new(0, 0, 0, 9)),
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || super::xorshift(&mut x);
        let flows: Vec<FlowRow> = (0..3000u64)
            .map(|i| {
                let mut f = udp_flood_flow(i + 7, 1_000_000 + (next() % 5_000_000) as i64);
                f.src = match next() % 4 {
                    0 => IpAddr::V4(Ipv4Addr::from(next() as u32)),
                    _ => addrs[(next() % addrs.len() as u64) as usize],
                };
                f.dst = addrs[(next() % addrs.len() as u64) as usize];
                f.pkts_to_server = next() % 1000;
                f.bytes_to_server = next() % 10_000_000;
                f.end = f.start + (next() % 100_000) as i64;
                f
            })
            .collect();
        let (t0, id0) = (1_000_000, Some(7));
        let at_once = staged_at_once(t0, id0, &flows);
        let one_by_one: String = flows
            .iter()
            .enumerate()
            .map(|(j, f)| element(t0, id0, j, f))
            .collect();
        assert_eq!(at_once, one_by_one);
    }

    /// Rows at every extreme (longest IPv6 texts on both ends, unnamed protocols, an end
    /// reason of unknown length beyond the staging buffer, the largest counters) are what
    /// `Display` writes, through one staging buffer.
    #[test]
    fn rows_at_the_extremes_match_an_independent_formatter() {
        let long_reason: &'static str = Box::leak("r".repeat(700).into_boxed_str());
        let v6 = IpAddr::V6(Ipv6Addr::new(
            0xffff, 0xfffe, 0xfffd, 0xfffc, 0xfffb, 0xfffa, 0xfff9, 0xfff8,
        ));
        assert_eq!(v6.to_string().len(), 39);
        let addrs = [
            v6,
            IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(0, 0, 0, 1)),
        ];
        let reasons = ["timeout", "closed", "evicted", "shutdown", "x", long_reason];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || super::xorshift(&mut x);
        let (t0, id0) = (1_000_000, Some(7i64));
        let mut flows = Vec::new();
        for i in 0..2000u64 {
            let mut f = udp_flood_flow(7 + i, t0 + (next() >> (next() % 64)) as i64 / 2);
            f.src = addrs[(next() % 4) as usize];
            f.dst = addrs[(next() % 4) as usize];
            f.src_port = next() as u16;
            f.dst_port = next() as u16;
            f.proto = next() as u8;
            f.reason = reasons[(next() % 6) as usize];
            f.pkts_to_server = next() >> (next() % 64);
            f.bytes_to_server = u64::MAX >> (next() % 64);
            f.pkts_to_client = next() >> (next() % 64);
            f.bytes_to_client = if i % 7 == 0 { 0 } else { next() };
            f.tcp_flags = next() as u8;
            f.end = f.start.saturating_add((next() >> (next() % 64)) as i64 / 2);
            flows.push(f);
        }
        let expected = |j: usize, f: &FlowRow| {
            let addr = |a: IpAddr| match a {
                IpAddr::V4(v4) => u32::from(v4).to_string(),
                IpAddr::V6(_) => format!("\"{a}\""),
            };
            let proto = match proto_name(f.proto) {
                "OTHER" => "\"OTHER\"".to_string(),
                _ => f.proto.to_string(),
            };
            let reason = match REASONS.iter().position(|&r| r == f.reason) {
                Some(code) => code.to_string(),
                None => format!("\"{}\"", f.reason),
            };
            let tail = [
                to_i64(f.pkts_to_server),
                to_i64(f.bytes_to_server),
                i64::from(f.tcp_flags),
                f.end - f.start,
                to_i64(f.pkts_to_client),
                to_i64(f.bytes_to_client),
            ];
            let keep = tail.iter().rposition(|&v| v != 0).map_or(0, |i| i + 1);
            let mut e = format!(
                "[{},{},{},{},{},{},{},{}",
                f.flow_id as i64 - (7 + j as i64),
                f.start - t0,
                addr(f.src),
                f.src_port,
                addr(f.dst),
                f.dst_port,
                proto,
                reason
            );
            for v in &tail[..keep] {
                e.push_str(&format!(",{v}"));
            }
            e.push(']');
            e
        };
        let out = staged_at_once(t0, id0, &flows);
        let want: String = flows
            .iter()
            .enumerate()
            .map(|(j, f)| expected(j, f))
            .collect();
        assert_eq!(out, want);
    }

    /// The format the view decodes, element by element (flow_columns_sql's table).
    #[test]
    fn a_flood_flow_is_a_short_array_of_small_integers() {
        let f = udp_flood_flow(53_863, 1_000_004_651);
        // The 4th flow of a chunk whose first id is 53,860: relative id 0.
        assert_eq!(
            element(1_000_000_000, Some(53_860), 3, &f),
            "[0,4651,1737902874,161,168430090,54609,17,2,1,68]"
        );
        // v3 wrote the same flow as
        // [53863,4651,0,"103.150.75.26",161,"10.10.10.10",54609,"UDP",1,0,68,0,0,"evicted"]
        // (84 bytes); this is 50.
        let mut g = f;
        g.src = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        g.proto = 99;
        g.reason = "x";
        g.end = g.start + 7;
        g.pkts_to_client = 2;
        g.tcp_flags = 0x12;
        assert_eq!(
            element(1_000_000_000, None, 3, &g),
            "[53863,4651,\"2001:db8::1\",161,168430090,54609,\"OTHER\",\"x\",1,68,18,7,2]"
        );
    }

    #[test]
    fn ids_far_from_zero_make_the_chunk_absolute() {
        let near = udp_flood_flow(5, 0);
        let minus_one = udp_flood_flow(u64::MAX, 0);
        let far = udp_flood_flow(0x7fff_0000_1234_5678, 0);
        assert_eq!(chunk_flow_id0(&[near, minus_one]), Some(5));
        assert_eq!(chunk_flow_id0(&[near, far]), None);
        assert_eq!(chunk_flow_id0(&[]), None);
        assert_eq!(
            element(0, Some(5), 1, &minus_one).split(',').next(),
            Some("[-7")
        );
    }

    /// A v3 file made by the v3 SQL itself (flow rows in the v1 table, moved into chunks by
    /// the v3 migration), plus a chunk as the v3 writer wrote it: the v4 migration keeps every
    /// chunk's id and bounds and every value the view shows, and writes exactly what the v4
    /// writer writes for the same flows.
    #[test]
    fn migrating_v3_chunks_keeps_the_view_and_matches_the_writer() {
        let dir = std::env::temp_dir().join(format!("pn-store-v3v4-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v3.db");
        let v6: IpAddr = "fe80::211:22ff:fe33:4455".parse().unwrap();
        let t0: Micros = 1_709_208_000_250_001;
        let flows: Vec<FlowRow> = (0..1_100u64)
            .map(|i| {
                let mut f = udp_flood_flow(1_000 + i * (i % 3), t0 + i as i64 * 997);
                f.end = f.start + (i as i64 % 4) * 1_234_567;
                f.src = match i % 5 {
                    0 => v6,
                    1 => IpAddr::V4(Ipv4Addr::from(u32::MAX)),
                    2 => IpAddr::V4(Ipv4Addr::from(0)),
                    _ => IpAddr::V4(Ipv4Addr::from((i as u32).wrapping_mul(2_654_435_761))),
                };
                f.proto = [6, 17, 1, 58, 2, 47, 50, 51, 132, 0, 99][i as usize % 11];
                f.reason = ["timeout", "closed", "evicted", "shutdown", "x"][i as usize % 5];
                f.pkts_to_server = i % 2;
                f.bytes_to_server = (i % 2) * 60;
                f.tcp_flags = (i % 7) as u8;
                f.pkts_to_client = i % 6 / 5;
                f.bytes_to_client = (i % 6 / 5) * (1 << 40);
                f
            })
            .collect();
        let mut ip = IpText::new();
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.execute_batch("BEGIN").unwrap();
            for (i, f) in flows.iter().enumerate() {
                let src = ip.set(f.src).to_string();
                let dst = ip.set(f.dst).to_string();
                conn.execute(
                    "INSERT INTO flows VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, \
                     ?12, ?13, ?14, ?15)",
                    params![
                        i as i64 + 1,
                        f.flow_id as i64,
                        micros_to_secs(f.start),
                        micros_to_secs(f.end),
                        src,
                        f.src_port,
                        dst,
                        f.dst_port,
                        proto_name(f.proto),
                        f.pkts_to_server as i64,
                        f.pkts_to_client as i64,
                        f.bytes_to_server as i64,
                        f.bytes_to_client as i64,
                        f.tcp_flags,
                        f.reason
                    ],
                )
                .unwrap();
            }
            conn.execute_batch("COMMIT").unwrap();
            conn.execute_batch(MIGRATIONS[2]).unwrap();
            // As the v3 writer wrote chunks: one with an id far from zero, and one a user's
            // tool might have inserted with a non-canonical IPv4 text, kept as text.
            conn.execute_batch(
                r#"INSERT INTO flow_chunks(first_id, n, t0, "end", rows) VALUES
                   (1101, 2, 1709208001000000, 1709208001.5,
                    '[[9223090566172966520,0,0,"45.152.16.91",161,"10.10.10.10",12294,"UDP",1,0,75,0,0,"evicted"],[3,500000,0,"010.0.0.1",53,"1.2.3",0,"","1",0,0,0,0,"shutdown"]]');
                   PRAGMA user_version = 3;"#,
            )
            .unwrap();
        }
        let dump = |conn: &Connection| -> Vec<String> {
            let mut st = conn.prepare("SELECT * FROM flows ORDER BY id").unwrap();
            let n = st.column_count();
            st.query_map([], |r| {
                let mut row = String::new();
                for c in 0..n {
                    let v: rusqlite::types::Value = r.get(c)?;
                    row.push_str(&format!("{v:?}|"));
                }
                Ok(row)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        let chunk_bounds = "SELECT id, first_id, n, t0, \"end\" FROM flow_chunks ORDER BY id";
        let bounds = |conn: &Connection| -> Vec<(i64, i64, i64, i64, f64)> {
            conn.prepare(chunk_bounds)
                .unwrap()
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let bytes = |conn: &Connection| -> i64 {
            conn.query_row("SELECT sum(length(rows)) FROM flow_chunks", [], |r| {
                r.get(0)
            })
            .unwrap()
        };
        let conn = Connection::open(&path).unwrap();
        let (v3_view, v3_bounds, v3_bytes) = (dump(&conn), bounds(&conn), bytes(&conn));
        assert_eq!(v3_view.len(), 1_102);
        assert_eq!(
            v3_bounds.len(),
            3,
            "two chunks from the v3 SQL, one as written"
        );
        drop(conn);

        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        assert_eq!(store.schema_version().unwrap(), 4);
        let conn = Connection::open(&path).unwrap();
        assert_eq!(dump(&conn), v3_view);
        assert_eq!(bounds(&conn), v3_bounds);
        let v4_bytes = bytes(&conn);
        assert!(
            v4_bytes * 10 < v3_bytes * 8,
            "{v3_bytes} -> {v4_bytes} bytes"
        );
        assert_eq!(store.count(Table::Flows).unwrap(), 1_102);

        // The migrated chunks hold exactly what the writer writes for the same flows.
        let mut st = conn
            .prepare("SELECT t0, flow_id0, rows FROM flow_chunks ORDER BY id LIMIT 2")
            .unwrap();
        let chunks: Vec<(i64, Option<i64>, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut next = 0;
        for (t0, flow_id0, rows) in &chunks {
            let n = FLOWS_PER_CHUNK.min(flows.len() - next);
            let chunk = &flows[next..next + n];
            assert_eq!(*flow_id0, chunk_flow_id0(chunk));
            let mut want = b"[".to_vec();
            for (j, f) in chunk.iter().enumerate() {
                if j > 0 {
                    want.push(b',');
                }
                // A row at a time: the staging buffer's own flushes are not under test here.
                push_flow_json(&mut Staged::new(&mut want), *t0, *flow_id0, j, f, &mut ip);
            }
            want.push(b']');
            assert_eq!(rows.as_bytes(), &want[..]);
            next += n;
        }
        assert_eq!(next, flows.len());
        let (flow_id0, last): (Option<i64>, String) = conn
            .query_row(
                "SELECT flow_id0, rows FROM flow_chunks ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(flow_id0, None, "an id beyond 2^61 keeps the chunk absolute");
        assert_eq!(
            last,
            "[[9223090566172966520,0,764940379,161,168430090,12294,17,2,1,75],\
             [3,500000,\"010.0.0.1\",53,\"1.2.3\",0,0,3,\"1\"]]"
        );
        drop(st);
        drop((conn, store));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
