#!/usr/bin/python3
"""json_column_bench.py - what PostgreSQL's COPY pays per row to take the
two JSON columns of log_events (attributes, enrichment) as jsonb, as json
and as plain text (the floor: no validation at all).

    /usr/bin/python3 tests/bench/json_column_bench.py [--rows N] [--rounds R]

One private PostgreSQL (infra.py).  N rows (default 300,000) of a
generator-like pair of objects (six attributes; the enricher's host and
service objects) written once to a COPY file, then, R rounds (default 3),
psql \\copy of that file into a fresh two-column table of each type in
turn.  Prints µs per row and rows/s of each; the differences between the
types are the input functions' (jsonb_in, json_in), everything else being
the same work.  Migration 007 chose json on these figures
(docs/benchmarks.md, "jsonb or json").
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))
sys.path.insert(0, str(REPO / "tests" / "bench"))
import infra as lp  # noqa: E402
from storage_bench import load_avg, psql, say  # noqa: E402

SOURCE = """CREATE UNLOGGED TABLE src AS SELECT
  jsonb_build_object('user_id', 'u-' || (g % 5000), 'path', '/api/v1/orders/' || (g % 977),
                     'method', 'GET', 'status', 200 + (g % 5), 'latency_ms', g % 900,
                     'region', 'eu-west-1')::text AS a,
  '{"host":{"datacenter":"dc1","rack":"r12","os":"debian-12","ip":"10.1.2.3"},'
  '"service":{"team":"payments","tier":"critical","owner":"ops@example.com"},'
  '"status":"complete"}'::text AS e
FROM generate_series(1, {rows}) g"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jsoncol-"))
    os.chmod(tmp, 0o755)
    (tmp / "logs").mkdir()
    pg = lp.Postgres(tmp)
    try:
        pg.start()
        pg.wait_ready(60)
        rows = tmp / "rows.copy"
        psql(pg.dsn, SOURCE.replace("{rows}", str(args.rows)), timeout=600)
        psql(pg.dsn, f"\\copy src TO '{rows}'", timeout=600)
        say(f"json columns: {args.rows:,} rows per run, load {load_avg()}")
        for r in range(args.rounds):
            for typ in ("jsonb", "json", "text"):
                psql(pg.dsn, f"DROP TABLE IF EXISTS t; CREATE TABLE t (a {typ}, e {typ})")
                t0 = time.monotonic()
                psql(pg.dsn, f"\\copy t FROM '{rows}'", timeout=600)
                took = time.monotonic() - t0
                say(f"  round {r + 1} {typ:5s} {took / args.rows * 1e6:6.2f} us/row "
                    f"({args.rows / took:,.0f} rows/s)  load {load_avg()}")
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
