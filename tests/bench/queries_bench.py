#!/usr/bin/python3
"""queries_bench.py - the query API's latency on two data sets of ten million
rows, through the consumer's HTTP API (issue 15, items 3 and 4).

    make bench BENCH=queries
    /usr/bin/python3 tests/bench/queries_bench.py [--rows N] [--runs K]
        [--sets synth,gen] [--case NAME] [--dir DIR] [--fresh] [--keep]
        [--write-costs ROUNDS] [--explain] [--jobs J]

Data sets, each in its own database of one private PostgreSQL 15 (stock
settings, fsync on, started like the integration tests' with
deploy/local/infra.py), made reproducibly:

  synth  the storage bench's rows (tests/bench/storage_bench.py) made by
         PostgreSQL with generate_series: 60 ms apart back from the load's
         time, 20 services, 50 hosts, 5 tenants, levels 5/15/60/12/7/1 %
         TRACE..FATAL, eight words out of forty and "reqN" shared by one row
         in 100,000; here one row in ten also has a trace id (shared by four
         rows in a row).
  gen    the generator's own content: tests/bench/gencopy.c, linked with
         generator/content.c, prints the rows logpipe-generator's events
         become once stored (256-byte events, as `make run` makes them),
         seven days before the load's time with a daily rhythm and error
         bursts; loaded with COPY.

The indexes of the migrations are dropped for the load and built again
after it (a bulk load's way), the per-minute and per-hour counts rebuilt,
VACUUM ANALYZE.  A database already loaded with N rows in DIR (default
/tmp/logpipe-qbench, kept between runs unless --fresh; --keep leaves the
cluster's files there at the end, otherwise they are deleted) is reused
when its load is less than --max-age-h hours old (default 12; the cases are
relative to the load's time): loading both sets takes 20-40 minutes on the
shared 2-CPU machine.  Migrations added since the load are applied to it.

Then, per data set, one consumer (Kafka unreachable: only its query API is
used) answers K (default 20) requests per case after 3 warm-up ones: p50,
p99, max, beside a calibrator from the same run: COPY of 100,000 of the
set's rows into an index-free table (rows/s and the backend's CPU per
row).  /api/stats of the last day must equal a count of its rows, and a
common word's page must equal the plain query's.  --write-costs R also
measures, per index of log_events (and a few candidates), COPY of 200,000
of the gen set's rows into a table with the primary key and that index
against the primary key alone, with an index-free table as the calibrator:
rows/s and the COPY backend's CPU time per row (R rounds, best of each);
--runs 0 skips the queries.  --explain prints EXPLAIN ANALYZE of each
case's plain statement (without the walk or the race, within 20 s).

Last line: `queries: rows=N worst_p99_ms=N` (the worst p99 of every case of
both sets).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))
import infra as lp  # noqa: E402

COLUMNS = ("id, ts, received_at, stored_at, level, level_rank, service, host, source_ip, "
           "tenant, correlation_id, message, attributes, enrichment, enrichment_status, "
           "kafka_topic, kafka_partition, kafka_offset, trace_id, span_id")

# The storage bench's rows (storage_bench.py LOAD_SQL), with a trace id on
# one row in ten.
SYNTH_SQL = """
INSERT INTO log_events (id, ts, received_at, level, level_rank, service, host, source_ip,
                        tenant, correlation_id, message, attributes, enrichment,
                        enrichment_status, kafka_topic, kafka_partition, kafka_offset,
                        trace_id, span_id)
SELECT gen_random_uuid(), t, t, (ARRAY['TRACE','DEBUG','INFO','WARN','ERROR','FATAL'])[r + 1],
       r, 'svc-' || (g % 20), 'host-' || (g % 50), '10.0.0.' || (g % 250), 't' || (g % 5),
       'c-' || g,
       w[1 + (g * 7) % 40] || ' ' || w[1 + (g * 13) % 40] || ' ' || w[1 + (g * 17) % 40] || ' ' ||
       w[1 + (g * 29) % 40] || ' ' || w[1 + (g * 31) % 40] || ' ' || w[1 + (g * 37) % 40] || ' ' ||
       w[1 + (g * 41) % 40] || ' ' || w[1 + (g * 43) % 40] || ' req' || (g % 100000),
       jsonb_build_object('i', g, 'path', '/api/v1/x'),
       '{"status":"complete","team":"core","datacenter":"dc1"}', 'complete', 'bench', g % 6, g,
       CASE WHEN g % 40 < 4 THEN md5('trace' || (g / 40)) END,
       CASE WHEN g % 40 < 4 THEN substr(md5('span' || g), 1, 16) END
FROM generate_series(1, {rows}) g,
     LATERAL (SELECT {now} - g * interval '60 ms' AS t,
                     CASE WHEN (g * 31) % 100 < 5 THEN 0 WHEN (g * 31) % 100 < 20 THEN 1
                          WHEN (g * 31) % 100 < 80 THEN 2 WHEN (g * 31) % 100 < 92 THEN 3
                          WHEN (g * 31) % 100 < 99 THEN 4 ELSE 5 END AS r) x,
     (SELECT string_to_array('user login request payment order timeout database cache miss '
             'hit retry failed succeeded connection refused started stopped disk memory cpu '
             'latency queue worker job scheduled completed error warning upstream downstream '
             'session token expired invalid checkout cart search index shard replica', ' ')
             AS w) words;
"""

SETS = ("synth", "gen")


def say(*a):
    print(*a, flush=True)


def load_avg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def psql(dsn, sql, timeout=7200):
    r = subprocess.run([lp._psql(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                        "-d", dsn, "-c", sql], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"psql failed: {r.stderr.strip()}\n{sql[:300]}")
    return r.stdout.strip()


def rfc3339(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def build_gencopy(out):
    """tests/bench/gencopy.c linked with the generator's content and liblogpipe."""
    lib = REPO / "build" / "liblogpipe.a"
    if not lib.exists():
        subprocess.run(["make", "--no-print-directory", "build/liblogpipe.a"], cwd=REPO,
                       check=True)
    subprocess.run([os.environ.get("CC", "cc"), "-std=c11", "-D_GNU_SOURCE", "-O2", "-Wall",
                    "-Wextra", "-Werror", "-I" + str(REPO / "common" / "include"), "-o", str(out),
                    str(REPO / "tests" / "bench" / "gencopy.c"),
                    str(REPO / "generator" / "content.c"), str(lib),
                    "-ljansson", "-luuid", "-lcrypto", "-lm", "-pthread"], check=True)
    return out


def index_defs(dsn):
    """(name, CREATE INDEX ...) of log_events's indexes but the primary key."""
    rows = psql(dsn, "SELECT indexname || '|' || indexdef FROM pg_indexes "
                     "WHERE schemaname = 'public' AND tablename = 'log_events' "
                     "AND indexname <> 'log_events_pkey' ORDER BY 1").splitlines()
    # pg_indexes spells a partitioned index "ON ONLY", which would build it
    # for the parent alone.
    return [(r.split("|", 1)[0], r.split("|", 1)[1].replace(" ON ONLY ", " ON "))
            for r in rows if r]


class DataSet:
    def __init__(self, pg, name, rows, tool):
        self.pg = pg
        self.name = name
        self.rows = rows
        self.tool = tool
        self.dsn = pg.dsn_for(name)

    def loaded_at(self):
        """The load's time (epoch s) when this set holds self.rows rows, else None."""
        if psql(self.pg.dsn_for("postgres"),
                f"SELECT 1 FROM pg_database WHERE datname = '{self.name}'") != "1":
            return None
        if psql(self.dsn, "SELECT to_regclass('public.bench_load') IS NOT NULL") != "t":
            return None
        got = psql(self.dsn, "SELECT rows || '|' || extract(epoch FROM loaded_at)::bigint "
                             "FROM bench_load")
        if not got or int(got.split("|")[0]) != self.rows:
            return None
        return int(got.split("|")[1])

    def migration_indexes(self):
        """The migrations' indexes of log_events, read from a scratch database."""
        admin = self.pg.dsn_for("postgres")
        psql(admin, "DROP DATABASE IF EXISTS bench_defs")
        self.pg.create_database("bench_defs")
        idx = index_defs(self.pg.dsn_for("bench_defs"))
        psql(admin, "DROP DATABASE bench_defs")
        return idx

    def rows_loaded(self):
        """The load's time (datetime) when the rows are in (bench_rows), else None."""
        if psql(self.pg.dsn_for("postgres"),
                f"SELECT 1 FROM pg_database WHERE datname = '{self.name}'") != "1" or \
                psql(self.dsn, "SELECT to_regclass('public.bench_rows') IS NOT NULL") != "t":
            return None
        got = psql(self.dsn, "SELECT rows || '|' || extract(epoch FROM loaded_at)::bigint "
                             "FROM bench_rows")
        if not got or int(got.split("|")[0]) != self.rows:
            return None
        return datetime.fromtimestamp(int(got.split("|")[1]), timezone.utc)

    def load_rows(self):
        """The rows, without indexes; recorded in bench_rows."""
        say(f"[{self.name}] loading {self.rows:,} rows (load {load_avg()}) ...")
        t0 = time.monotonic()
        admin = self.pg.dsn_for("postgres")
        psql(admin, f"DROP DATABASE IF EXISTS {self.name}")
        self.pg.create_database(self.name)
        idx = index_defs(self.dsn)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        psql(self.dsn, "SELECT logpipe_ensure_partitions(8, 1);" +
             "".join(f"DROP INDEX {n};" for n, _ in idx) +
             "ALTER TABLE log_events DROP CONSTRAINT log_events_pkey;")
        if self.name == "synth":
            psql(self.dsn, SYNTH_SQL.replace("{rows}", str(self.rows))
                 .replace("{now}", f"timestamptz '{now.isoformat()}'"))
        else:
            gen = subprocess.Popen([str(self.tool), "--rows", str(self.rows), "--now-ms",
                                    str(int(now.timestamp() * 1000)), "--seed", "15"],
                                   stdout=subprocess.PIPE)
            r = subprocess.run([lp._psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn,
                                "-c", f"COPY log_events ({COLUMNS}) FROM STDIN"],
                               stdin=gen.stdout, capture_output=True, text=True)
            gen.stdout.close()
            if gen.wait() != 0 or r.returncode != 0:
                raise RuntimeError(f"loading {self.name} failed: {r.stderr.strip()}")
        psql(self.dsn, "CREATE TABLE bench_rows (rows bigint, loaded_at timestamptz);"
                       f"INSERT INTO bench_rows VALUES ({self.rows}, '{now.isoformat()}')")
        say(f"[{self.name}]   rows in {time.monotonic() - t0:.0f} s (load {load_avg()})")

    def build_indexes(self, jobs):
        """The migrations' indexes (those missing), built partition by partition
        on jobs connections, then declared on the parent, which attaches the
        partitions' indexes instead of building them again; one session
        building them all in turn took over 15 minutes per index on the
        loaded 2-CPU machine."""
        t0 = time.monotonic()
        idx = self.migration_indexes()
        parts = psql(self.dsn, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON "
                               "c.oid = i.inhrelid WHERE i.inhparent = 'log_events'::regclass "
                               "ORDER BY 1").split()
        have = set(psql(self.dsn, "SELECT indexdef FROM pg_indexes WHERE schemaname = "
                                  "'public'").splitlines())
        pk = psql(self.dsn, "SELECT count(*) FROM pg_constraint WHERE conname = "
                            "'log_events_pkey'") == "1"
        work = []
        for part in parts:
            if not pk and psql(self.dsn, "SELECT count(*) FROM pg_constraint WHERE conrelid = "
                                         f"'{part}'::regclass AND contype = 'p'") == "0":
                work.append(f"ALTER TABLE {part} ADD PRIMARY KEY (id, ts)")
            for name, d in idx:
                on_part = (d.replace(f"INDEX {name} ", f"INDEX {part}_{name[len('log_events_'):]} ", 1)
                           .replace(" ON public.log_events ", f" ON public.{part} "))
                if on_part not in have:
                    work.append(on_part)
        say(f"[{self.name}] building {len(work)} indexes of {len(parts)} partitions on "
            f"{jobs} connections (load {load_avg()}) ...")
        running = []
        while work or running:
            while work and len(running) < jobs:
                sql = work.pop(0)
                running.append((sql, subprocess.Popen(
                    [lp._psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn, "-c",
                     "SET maintenance_work_mem = '256MB'; " + sql],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
            time.sleep(0.2)
            for sql, p in list(running):
                if p.poll() is not None:
                    running.remove((sql, p))
                    if p.returncode != 0:
                        raise RuntimeError(f"{sql}: {p.stderr.read().strip()}")
        psql(self.dsn, ("" if pk else "ALTER TABLE log_events ADD PRIMARY KEY (id, ts);") +
             "".join(d.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1) + ";"
                     for _, d in idx))
        say(f"[{self.name}]   indexes in {time.monotonic() - t0:.0f} s (load {load_avg()})")

    def load(self, jobs):
        t0 = time.monotonic()
        now = self.rows_loaded()
        if now is None:
            self.load_rows()
            now = self.rows_loaded()
        self.build_indexes(jobs)
        psql(self.dsn, "SELECT logpipe_counts_rebuild('-infinity', 'infinity')")
        for t in ("log_events", "log_events_minute", "log_events_hour"):
            psql(self.dsn, f"VACUUM ANALYZE {t}")
        psql(self.dsn, "DROP TABLE IF EXISTS bench_load;"
                       "CREATE TABLE bench_load (rows bigint, loaded_at timestamptz);"
                       f"INSERT INTO bench_load VALUES ({self.rows}, '{now.isoformat()}')")
        say(f"[{self.name}]   loaded and indexed in {time.monotonic() - t0:.0f} s "
            f"(load {load_avg()})")

    def ensure(self, max_age_h, fresh, jobs):
        if fresh:
            psql(self.pg.dsn_for("postgres"), f"DROP DATABASE IF EXISTS {self.name}")
        at = self.loaded_at()
        if at is not None and time.time() - at < max_age_h * 3600:
            # The indexes of migrations added since the load, built the fast
            # way first (the migration then finds them).
            self.build_indexes(jobs)
            applied = lp.apply_migrations(self.dsn)
            if applied:
                say(f"[{self.name}] migrations {', '.join(applied)} applied to the loaded set")
            say(f"[{self.name}] reusing the set loaded at "
                f"{datetime.fromtimestamp(at, timezone.utc):%Y-%m-%d %H:%M} UTC")
            return at
        self.load(jobs)
        return self.loaded_at()


def cases_for(ds, at):
    """(name, path, params) of the query table for data set ds loaded at at."""
    now = datetime.fromtimestamp(at, timezone.utc)
    hour = {"from": rfc3339(now - timedelta(days=3, hours=1)),
            "to": rfc3339(now - timedelta(days=3))}
    trace = psql(ds.dsn, "SELECT trace_id FROM log_events WHERE trace_id IS NOT NULL AND "
                         f"ts < '{rfc3339(now - timedelta(days=3))}' LIMIT 1")
    if ds.name == "synth":
        svc, lvl, common, rare = "svc-7", "ERROR", "timeout", "req12345"
        both = {"service": "svc-3", "level": "ERROR"}
    else:
        svc, lvl, common = "payment-service", "ERROR", "authorized"
        # The service+level case (checkout-api is not in this
        # catalogue): a critical service's warnings.
        both = {"service": "order-service", "level": "WARN"}
        # A user number that a few rows mention.
        rare = psql(ds.dsn, "SELECT split_part(message, ' ', 2) FROM log_events WHERE "
                            "service = 'user-service' AND message LIKE 'user %' AND "
                            f"ts < '{rfc3339(now - timedelta(days=2))}' LIMIT 1")
    return [
        ("newest 50", "/api/logs", {}),
        ("service=", "/api/logs", {"service": svc}),
        (f"level={lvl}", "/api/logs", {"level": lvl}),
        ("service+level", "/api/logs", both),
        (f"text= common ({common})", "/api/logs", {"text": common}),
        (f"text= rare ({rare})", "/api/logs", {"text": rare}),
        ("text= no match", "/api/logs", {"text": "zzzznomatch"}),
        ("trace_id=", "/api/logs", {"trace_id": trace}),
        ("time range (1 h, 3 days ago)", "/api/logs", hour),
        ("cursor, page 2", "/api/logs", {"cursor": "@page1"}),
        ("cursor, 3 days back", "/api/logs", {"cursor": "@deep"}),
        ("cursor, common word page 2", "/api/logs", {"text": common, "cursor": "@word1"}),
        ("/api/stats 24 h", "/api/stats", {}),
    ]


class Api:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path, params):
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            say(f"  {url}: {e.code} {e.read()[:300]!r}")
            return None, None
        return (time.monotonic() - t0) * 1000, json.loads(body)


def start_consumer(ds, tmp):
    port = lp.free_port()
    env = {lp.env_name(k): str(v) for k, v in {
        "http.listen": port, "pg.dsn": ds.dsn, "retention.days": 0,
        # Only the query API is used: no Kafka.
        "kafka.brokers": f"127.0.0.1:{lp.free_port()}", "log.level": "warn",
        "kafka.group": f"qbench-{ds.name}"}.items()}
    p = lp.ServiceProc("consumer", env, tmp / f"consumer-{ds.name}.log", port,
                       cwd=tmp / f"consumer-{ds.name}")
    p.start()
    p.wait_ready(30)
    return p


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def calibrate(ds, tmp, n=100000):
    """COPY of n of the set's rows into an index-free table, in this run:
    rows/s (and the backend's CPU µs per row) tell how fast the machine was
    when the latencies were taken."""
    rows = tmp / "cal.copy"
    psql(ds.dsn, f"\\copy (SELECT {COLUMNS} FROM log_events WHERE ts >= (SELECT max(ts) FROM "
                 f"log_events) - interval '2 days' ORDER BY ts LIMIT {n}) TO '{rows}'")
    sess = Session(ds.dsn)
    try:
        sess.run("DROP TABLE IF EXISTS cal; CREATE TABLE cal (LIKE log_events INCLUDING DEFAULTS);")
        c0, t0 = sess.cpu(), time.monotonic()
        sess.run(f"\\copy cal ({COLUMNS}) FROM '{rows}'")
        wall, cpu = time.monotonic() - t0, sess.cpu() - c0
        sess.run("DROP TABLE cal;")
    finally:
        sess.close()
    rows.unlink()
    return {"set": ds.name, "rows_s": n / wall, "cpu_us": cpu / n * 1e6, "load": load_avg()}


def measure(ds, at, runs, only, tmp, explain):
    p = start_consumer(ds, tmp)
    api = Api(p.port)
    now = datetime.fromtimestamp(at, timezone.utc)
    out = []
    try:
        # /api/stats of the last day is the count of its rows.
        day = {"from": rfc3339(now - timedelta(days=1)), "to": rfc3339(now)}
        got = api.get("/api/stats", day)[1]
        want = int(psql(ds.dsn, f"SELECT count(*) FROM log_events WHERE ts >= "
                                f"'{day['from']}' AND ts < '{day['to']}'"))
        if got is None or got["total"] != want:
            raise RuntimeError(f"[{ds.name}] /api/stats total {got and got['total']}, "
                               f"the rows {want}")
        cases = cases_for(ds, at)
        common = [c for c in cases if c[0].startswith("text= common")][0][2]["text"]
        cursors = {
            "@page1": api.get("/api/logs", {})[1]["next_cursor"],
            "@deep": api.get("/api/logs", {"to": rfc3339(now - timedelta(days=3)),
                                           "limit": 1})[1]["next_cursor"],
            "@word1": api.get("/api/logs", {"text": common})[1]["next_cursor"],
        }
        # The common word's first two pages are those of the plain query.
        check_word_pages(ds, api, common)
        if only:
            cases = [c for c in cases if only in c[0]]
        for name, path, params in cases:
            params = {k: cursors.get(v, v) for k, v in params.items()}
            took, failed, rows = [], 0, None
            for i in range(runs + 3):
                ms, body = api.get(path, params)
                if ms is None:
                    failed += 1
                    continue
                if i >= 3:
                    took.append(ms)
                rows = body.get("count", body.get("total"))
            if not took:
                out.append({"set": ds.name, "name": name, "failed": failed})
                say(f"  [{ds.name}] {name:34s} every request failed")
                continue
            r = {"set": ds.name, "name": name, "runs": len(took), "p50": pct(took, 0.5),
                 "p99": pct(took, 0.99), "max": max(took), "failed": failed, "rows": rows,
                 "load": load_avg()}
            out.append(r)
            say(f"  [{ds.name}] {name:34s} p50 {r['p50']:7.1f}  p99 {r['p99']:7.1f}  "
                f"max {r['max']:7.1f} ms  ({r['runs']} runs, {failed} failed, rows {rows}, "
                f"load {r['load']})")
            if explain and path == "/api/logs":
                print_explain(ds, params)
    finally:
        p.stop()
    return out


def check_word_pages(ds, api, word):
    """The API's first two pages of a common word = the plain SQL's 100 rows."""
    want = psql(ds.dsn, "SELECT id FROM log_events WHERE to_tsvector('simple', message) @@ "
                        f"plainto_tsquery('simple', '{word}') ORDER BY ts DESC, id DESC "
                        "LIMIT 100").split()
    p1 = api.get("/api/logs", {"text": word})[1]
    p2 = api.get("/api/logs", {"text": word, "cursor": p1["next_cursor"]})[1]
    got = [e["id"] for e in p1["logs"] + p2["logs"]]
    if got != want:
        raise RuntimeError(f"[{ds.name}] text={word}: the API's pages differ from the "
                           "plain query's")


def print_explain(ds, params):
    """EXPLAIN ANALYZE of what query.c sends for params (built the same way)."""
    conds = ["true"]
    for k, v in params.items():
        if k in ("service", "host", "tenant", "trace_id"):
            conds.append(f"{k} = '{v}'")
        elif k == "level":
            rank = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"].index(v)
            conds.append(f"level_rank = {rank}")
        elif k == "text":
            conds.append(f"to_tsvector('simple', message) @@ plainto_tsquery('simple', '{v}')")
        elif k == "from":
            conds.append(f"ts >= '{v}'")
        elif k == "to":
            conds.append(f"ts < '{v}'")
    # The plain statement, without the walk or the race: for a rare word it
    # may read the whole table, hence the timeout.
    try:
        plan = psql(ds.dsn, "SET jit = off; SET statement_timeout = '20s'; "
                            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id FROM "
                            "log_events WHERE " + " AND ".join(conds) +
                    " ORDER BY ts DESC, id DESC LIMIT 51")
    except RuntimeError as e:
        say(f"      (plain statement: {str(e).splitlines()[0]})")
        return
    for line in plan.splitlines()[:14]:
        say("      " + line)


# ---- write cost per index ------------------------------------------------------

class Session:
    """One psql session on a pipe, so that its backend's CPU time can be read
    around a statement (/proc/PID/stat of the server process: the server
    runs on this machine)."""

    def __init__(self, dsn):
        self.p = subprocess.Popen([lp._psql(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                                   "-d", dsn], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.pid = int(self.run("SELECT pg_backend_pid();")[0])

    def run(self, sql):
        """Runs sql; returns its output lines (waits for a marker)."""
        self.p.stdin.write(sql + "\n\\echo __done__\n")
        self.p.stdin.flush()
        out = []
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("psql ended: " + "".join(out))
            if line.strip() == "__done__":
                return out
            out.append(line.strip())

    def cpu(self):
        f = open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def write_costs(ds, tmp, n=200000, rounds=1):
    """COPY of n of the set's rows (the newest, in time order) into a fresh
    table with the primary key and one index, against the primary key alone
    and no index at all (the calibrator): wall-clock rows/s and the COPY
    backend's CPU time per row, which the machine's load moves far less;
    rounds times in turn, best of each."""
    rows = tmp / "costs.copy"
    psql(ds.dsn, f"\\copy (SELECT {COLUMNS} FROM log_events WHERE ts >= (SELECT max(ts) FROM "
                 f"log_events) - interval '2 days' ORDER BY ts LIMIT {n}) TO '{rows}'")
    idx = [(name, d) for name, d in index_defs(ds.dsn)]
    gin = [d for name, d in idx if "USING gin" in d]
    # Candidates beside the migrations' indexes.
    extra = [("candidate: BRIN (ts)", ["PK", "CREATE INDEX ON log_events USING brin (ts)"]),
             ("candidate: (tenant, ts desc, id desc) WHERE tenant IS NOT NULL",
              ["PK", "CREATE INDEX ON log_events (tenant, ts DESC, id DESC) "
                     "WHERE tenant IS NOT NULL"]),
             ("candidate: (tenant, ts desc, id desc), full",
              ["PK", "CREATE INDEX ON log_events (tenant, ts DESC, id DESC)"]),
             ("candidate: (service, level_rank, ts desc, id desc)",
              ["PK", "CREATE INDEX ON log_events (service, level_rank, ts DESC, id DESC)"])]
    if gin:
        extra.append(("candidate: GIN with fastupdate = off",
                      ["PK", gin[0] + " WITH (fastupdate = off)"]))
    variants = [("no index", []), ("primary key only", ["PK"])] + \
        [(name, ["PK", d]) for name, d in idx] + extra + \
        [("all (the migrations' set)", ["PK"] + [d for _, d in idx])]
    best = {}
    sess = Session(ds.dsn)
    try:
        for rnd in range(rounds):
            for name, parts in variants:
                sql = ["DROP TABLE IF EXISTS wc",
                       "CREATE TABLE wc (LIKE log_events INCLUDING DEFAULTS)"]
                for d in parts:
                    if d == "PK":
                        sql.append("ALTER TABLE wc ADD PRIMARY KEY (id, ts)")
                        continue
                    if d.split()[2] != "ON":  # unnamed: each table names its own
                        d = d.replace("INDEX " + d.split()[2] + " ", "INDEX ", 1)
                    sql.append(d.replace(" ON public.log_events ", " ON wc ")
                               .replace(" ON log_events ", " ON wc "))
                sess.run("; ".join(sql) + "; CHECKPOINT;")
                c0, t0 = sess.cpu(), time.monotonic()
                sess.run(f"\\copy wc ({COLUMNS}) FROM '{rows}'")
                wall, cpu = time.monotonic() - t0, sess.cpu() - c0
                rate, us = n / wall, cpu / n * 1e6
                old = best.get(name)
                best[name] = (max(rate, old[0]) if old else rate, min(us, old[1]) if old else us)
                say(f"  [{ds.name}] round {rnd + 1} {name:56s} {rate:9,.0f} rows/s  "
                    f"{us:5.1f} us CPU/row (load {load_avg()})")
        sess.run("DROP TABLE IF EXISTS wc;")
    finally:
        sess.close()
    rows.unlink()
    return best


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--sets", default="synth,gen")
    ap.add_argument("--case", help="only the cases whose name has this")
    ap.add_argument("--dir", default=os.environ.get("QUERIES_BENCH_DIR", "/tmp/logpipe-qbench"))
    ap.add_argument("--fresh", action="store_true", help="load the data sets again")
    ap.add_argument("--keep", action="store_true",
                    help="leave the loaded cluster in --dir for the next run")
    ap.add_argument("--max-age-h", type=float, default=12)
    ap.add_argument("--jobs", type=int, default=3,
                    help="connections building the indexes after a load")
    ap.add_argument("--write-costs", type=int, default=0, metavar="ROUNDS",
                    help="measure each index's write cost, ROUNDS rounds (gen set)")
    ap.add_argument("--explain", action="store_true")
    args = ap.parse_args()

    if not (lp.bin_dir() / "logpipe-consumer").exists():
        subprocess.run(["make", "--no-print-directory", "build/bin/logpipe-consumer"],
                       cwd=REPO, check=True)
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o711)
    tmp = base / "run"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tool = build_gencopy(tmp / "gencopy")
    lp.reap_stale(base, log=say)
    pg = lp.Postgres(base)
    results, costs, cals = [], {}, []
    t0 = time.monotonic()
    say(f"queries bench: {args.rows:,} rows per set, cluster in {base} (load {load_avg()})")
    try:
        pg.start()
        pg.wait_ready(120)
        for name in args.sets.split(","):
            ds = DataSet(pg, name, args.rows, tool)
            at = ds.ensure(args.max_age_h, args.fresh, args.jobs)
            if args.write_costs and name == "gen":
                costs = write_costs(ds, tmp, rounds=args.write_costs)
            if args.runs > 0:
                cals.append(calibrate(ds, tmp))
                say(f"[{name}] calibrator: COPY into an index-free table "
                    f"{cals[-1]['rows_s']:,.0f} rows/s, {cals[-1]['cpu_us']:.1f} us CPU/row "
                    f"(load {cals[-1]['load']})")
                results += measure(ds, at, args.runs, args.case, tmp, args.explain)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip()
        say("\n== query benchmark ==")
        say(f"date      {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, commit {commit}, "
            f"took {time.monotonic() - t0:.0f} s")
        say(f"setup     PostgreSQL {psql(pg.dsn_for('postgres'), 'SHOW server_version')} "
            "(infra.py's PG_SETTINGS, fsync on); one consumer, default settings; "
            f"{args.runs} requests per case after 3 warm-up ones")
        say(f"load      {load_avg()} (load average at the end)")
        for c in cals:
            say(f"calibrator [{c['set']}] COPY of 100,000 of its rows into an index-free table: "
                f"{c['rows_s']:,.0f} rows/s, {c['cpu_us']:.1f} us CPU/row (load {c['load']})")
        if costs:
            base_rate, base_cpu = costs["primary key only"]
            say("write cost: COPY of 200,000 gen rows into a fresh table; calibrator = "
                "no index, same run")
            say("| index (with the primary key) | COPY rows/s | vs primary key only | "
                "backend CPU µs/row | CPU added by the index, µs/row |")
            say("|---|---:|---:|---:|---:|")
            for k, (v, c) in costs.items():
                say(f"| {k} | {v:,.0f} | {v / base_rate:.2f} | {c:.1f} | {c - base_cpu:+.1f} |")
        say("| set | case | p50 ms | p99 ms | max ms | rows | load |")
        say("|---|---|---:|---:|---:|---:|---|")
        for r in results:
            if "p50" in r:
                say(f"| {r['set']} | {r['name']} | {r['p50']:.1f} | {r['p99']:.1f} | "
                    f"{r['max']:.1f} | {r['rows']} | {r['load']} |")
            else:
                say(f"| {r['set']} | {r['name']} | failed | | | | |")
        if results:
            worst = max(r.get("p99", float("inf")) for r in results)
            say(f"queries: rows={args.rows} worst_p99_ms={worst:.0f}")
    finally:
        pg.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
