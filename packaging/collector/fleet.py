#!/usr/bin/env python3
"""Pull the SQLite databases of many PhantomNet appliances (GET /api/db, a consistent
snapshot) and query them together with DuckDB, which ATTACHes SQLite files directly.

    pip install duckdb        # the sqlite extension is fetched on first use
    fleet.py shop-1=http://10.1.0.1:8080 shop-2=http://10.2.0.1:8080 --token SECRET
    fleet.py --days 30 ./dbs/*.db                       # already-fetched files
    fleet.py ... --sql "SELECT site, count(*) FROM alerts GROUP BY site"

Each argument is NAME=URL, a bare URL (named after its host), NAME=FILE.db or FILE.db
(named after the file). Fetched databases are kept in --dir (default ./phantomnet-dbs) as
NAME.db. Views over all sites, each row with a `site` column: verdicts, alerts, flows.
Without --sql it prints the top hosts at HIGH or CRITICAL across all sites over the last
--days days (default 7).
"""
import argparse
import os
import re
import sys
import urllib.parse
import urllib.request

TOP_HIGH = """
SELECT site, host,
       count(*)                                AS high_windows,
       count(*) FILTER (verdict = 'CRITICAL')  AS critical_windows,
       max(risk)                               AS max_risk,
       to_timestamp(min(ts))                   AS first_seen,
       to_timestamp(max(ts))                   AS last_seen
FROM verdicts
WHERE verdict IN ('HIGH', 'CRITICAL') AND ts >= epoch(now()) - {days} * 86400
GROUP BY site, host
ORDER BY high_windows DESC, max_risk DESC
LIMIT 20
"""


def parse_target(arg):
    name, sep, where = arg.partition("=")
    if not sep:
        name, where = "", arg
    if where.startswith(("http://", "https://")):
        name = name or urllib.parse.urlparse(where).hostname or "appliance"
        return name, where.rstrip("/") + "/api/db", None
    name = name or os.path.splitext(os.path.basename(where))[0]
    return name, None, where


def fetch(name, url, token, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name + ".db")
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp, open(path + ".part", "wb") as f:
            while chunk := resp.read(1 << 16):
                f.write(chunk)
    except OSError as e:
        sys.exit(f"fleet.py: {name}: GET {url}: {e}")
    os.replace(path + ".part", path)
    return path


TABLES = ("verdicts", "alerts", "flows")


def copy_sqlite(con, path, schema):
    """Copies the tables the views use from a SQLite file into DuckDB schema `schema`."""
    import sqlite3

    types = {"INTEGER": "BIGINT", "REAL": "DOUBLE", "TEXT": "VARCHAR", "BLOB": "BLOB"}
    src = sqlite3.connect(f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro", uri=True)
    con.execute(f"CREATE SCHEMA {schema}")
    for table in TABLES:
        cols = src.execute(f"PRAGMA table_info({table})").fetchall()
        if not cols:
            sys.exit(f"fleet.py: {path}: no table {table} (not a PhantomNet database?)")
        rows = src.execute(f"SELECT * FROM {table}").fetchall()
        # `flows` is a view (flows are stored in JSON chunks): its columns declare no type,
        # so take it from the values.
        by_value = {int: "BIGINT", float: "DOUBLE", str: "VARCHAR", bytes: "BLOB"}

        def col_type(i, declared):
            if declared:
                return types.get(declared.upper(), "VARCHAR")
            seen = next((type(r[i]) for r in rows if r[i] is not None), str)
            return by_value.get(seen, "VARCHAR")

        decl = ", ".join(f'"{c[1]}" {col_type(i, c[2])}' for i, c in enumerate(cols))
        con.execute(f"CREATE TABLE {schema}.{table} ({decl})")
        if rows:
            marks = ", ".join("?" * len(cols))
            con.executemany(f"INSERT INTO {schema}.{table} VALUES ({marks})", rows)
    src.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="+", metavar="NAME=URL|URL|NAME=FILE|FILE")
    ap.add_argument("--token", default=os.environ.get("PHANTOMNET_TOKEN", ""),
                    help="bearer token (http.token), or $PHANTOMNET_TOKEN")
    ap.add_argument("--dir", default="phantomnet-dbs", help="where fetched databases go")
    ap.add_argument("--days", type=float, default=7, help="window of the default query")
    ap.add_argument("--sql", help="your own query over the verdicts/alerts/flows views")
    args = ap.parse_args()
    try:
        import duckdb
    except ImportError:
        sys.exit("fleet.py: needs DuckDB's Python module: pip install duckdb")

    sites = []
    for t in args.targets:
        name, url, path = parse_target(t)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            sys.exit(f"fleet.py: `{name}`: site names may hold letters, digits, _ . - only")
        if name in (s for s, _ in sites):
            sys.exit(f"fleet.py: site `{name}` given twice")
        if url:
            path = fetch(name, url, args.token, args.dir)
        elif not os.path.isfile(path):
            sys.exit(f"fleet.py: {path}: no such database file")
        sites.append((name, path))

    con = duckdb.connect()
    for i, (name, path) in enumerate(sites):
        try:
            con.execute(f"ATTACH '{path.replace(chr(39), chr(39) * 2)}' AS s{i} (TYPE sqlite, READ_ONLY)")
        except duckdb.Error as e:
            # No sqlite extension (e.g. an offline collector): copy the tables through
            # Python's sqlite3 instead; slower, same views.
            print(f"fleet.py: DuckDB cannot ATTACH {path} ({str(e).splitlines()[0]}); copying it instead",
                  file=sys.stderr)
            copy_sqlite(con, path, f"s{i}")
    for table in TABLES:
        parts = [f"SELECT '{name}' AS site, * FROM s{i}.{table}" for i, (name, _) in enumerate(sites)]
        con.execute(f"CREATE TEMP VIEW {table} AS " + " UNION ALL BY NAME ".join(parts))
    rel = con.sql(args.sql or TOP_HIGH.format(days=float(args.days)))
    if rel is not None:
        rel.show(max_width=200, max_rows=1000)


if __name__ == "__main__":
    main()
