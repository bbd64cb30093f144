#!/usr/bin/python3
"""pg_settings_bench.py - PostgreSQL settings for the write path, measured on
a table that already holds rows, with the checkpoints a sustained load
brings (issue 15).

    /usr/bin/python3 tests/bench/pg_settings_bench.py [--base N] [--load N]
                     [--rounds R] --pg NAME=VALUE [--pg NAME=VALUE ...]

storage_bench.py empties the table and takes a CHECKPOINT before every run
of 100,000 rows: far from a checkpoint, into fresh pages, nothing of what
checkpoints cost a sustained load.  Here one private PostgreSQL (infra.py,
the migrations, fsync on) first gets N rows (default 1,000,000; the query
benchmark's generate_series rows, every index in place), then R rounds
(default 3) of, in alternation:

  stock   PostgreSQL restarted with its stock settings (the boot values of
          every setting --pg or infra.py's PG_SETTINGS name, set with ALTER
          SYSTEM over what infra.py writes); psql \\copy of LOAD
          rows (default 500,000: more WAL than the stock max_wal_size lets
          pass between two checkpoints) in files of 100,000 rows, each its
          own transaction, into today's partition;
  tuned   the same after a restart with the --pg settings (ALTER SYSTEM).

Each prints rows/s, WAL bytes per row and the checkpoints during it.  The
server does the same work for a consumer's COPY as for \\copy, so the ratio
tuned/stock of each round is the settings' effect on the server's side of
the write path.  The load average is printed with every run.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))
sys.path.insert(0, str(REPO / "tests" / "bench"))
import infra as lp  # noqa: E402
from storage_bench import COLUMNS, LOAD_SQL, load_avg, psql, say  # noqa: E402

FILE_ROWS = 100000


def wal_state(dsn):
    lsn, ckpt = psql(dsn, "SELECT pg_current_wal_lsn(), checkpoints_timed + checkpoints_req "
                          "FROM pg_stat_bgwriter").split("|")
    return lsn, int(ckpt)


def restart(pg, settings):
    psql(pg.dsn, "ALTER SYSTEM RESET ALL")
    for k, v in settings.items():
        psql(pg.dsn, f"ALTER SYSTEM SET {k} = '{v}'")
    pg.restart()


def run(pg, files):
    lsn0, ck0 = wal_state(pg.dsn)
    t0 = time.monotonic()
    for f in files:
        psql(pg.dsn, f"\\copy log_events ({COLUMNS}) FROM '{f}'")
    took = time.monotonic() - t0
    lsn1, ck1 = wal_state(pg.dsn)
    rows = len(files) * FILE_ROWS
    wal = float(psql(pg.dsn, f"SELECT pg_wal_lsn_diff('{lsn1}', '{lsn0}')"))
    return rows / took, wal / rows, ck1 - ck0


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=int, default=1000000)
    ap.add_argument("--load", type=int, default=500000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pg", action="append", default=[], metavar="NAME=VALUE", required=True)
    args = ap.parse_args()
    tuned = dict(kv.split("=", 1) for kv in args.pg)
    nfiles = max(1, args.load // FILE_ROWS)

    tmp = Path(tempfile.mkdtemp(prefix="pgsetbench-"))
    os.chmod(tmp, 0o711)
    (tmp / "logs").mkdir()
    pg = lp.Postgres(tmp)
    try:
        pg.start()
        pg.wait_ready(60)
        dsn = pg.dsn
        psql(dsn, "SELECT logpipe_ensure_partitions(8, 1)")
        say(f"loading {args.base:,} rows ...  (load {load_avg()})")
        psql(dsn, LOAD_SQL.replace("{rows}", str(args.base)), timeout=3600)
        psql(dsn, "VACUUM ANALYZE log_events")
        # The files: new ids, times of today (the newest partition the
        # base rows reach, as the consumer's batches do).
        total = 2 * args.rounds * nfiles
        say(f"writing {total} files of {FILE_ROWS:,} rows ...")
        files = []
        for i in range(total):
            f = tmp / f"rows-{i}.copy"
            psql(dsn, "DROP TABLE IF EXISTS bench_src; CREATE UNLOGGED TABLE bench_src "
                      "(LIKE log_events INCLUDING DEFAULTS);" +
                 LOAD_SQL.replace("INSERT INTO log_events", "INSERT INTO bench_src")
                 .replace("{rows}", str(FILE_ROWS))
                 .replace("now() - g * interval '60 ms'", "now() - g * interval '1 ms'"),
                 timeout=600)
            psql(dsn, f"\\copy bench_src ({COLUMNS}) TO '{f}'", timeout=600)
            files.append(f)
        psql(dsn, "DROP TABLE bench_src")
        say(f"  done  (load {load_avg()})")
        names = ", ".join(f"'{k}'" for k in sorted(set(tuned) | set(lp.PG_SETTINGS)))
        stock = dict(line.split("=", 1) for line in psql(
            dsn, f"SELECT name || '=' || boot_val FROM pg_settings WHERE name IN ({names})")
            .splitlines())
        say(f"stock: {stock}")
        res = {"stock": [], "tuned": []}
        for r in range(args.rounds):
            for name, settings in (("stock", stock), ("tuned", tuned)):
                restart(pg, settings)
                chunk, files = files[:nfiles], files[nfiles:]
                rate, wal, ck = run(pg, chunk)
                res[name].append(rate)
                say(f"  round {r + 1} {name}: {rate:,.0f} rows/s, WAL {wal:,.0f} bytes/row, "
                    f"{ck} checkpoints  (load {load_avg()})")
        ratios = [t / s for s, t in zip(res["stock"], res["tuned"])]
        say(f"\npg settings {', '.join(args.pg)}")
        say(f"  base {args.base:,} rows, {nfiles * FILE_ROWS:,} rows per run; stock "
            + ", ".join(f"{x:,.0f}" for x in res["stock"]) + " rows/s; tuned "
            + ", ".join(f"{x:,.0f}" for x in res["tuned"]) + " rows/s; tuned/stock per round "
            + ", ".join(f"{x:.2f}" for x in ratios) + f"; median {sorted(ratios)[len(ratios) // 2]:.2f}"
            f"  (load {load_avg()})")
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
