#!/usr/bin/python3
"""storage_bench.py - one logpipe-consumer's store rate beside psql \\copy, and
the query API's latency per filter on a large log_events table.

    /usr/bin/python3 tests/bench/storage_bench.py [--events N] [--rounds R]
                                                  [--rows M] [--runs K]
                                                  [--only store|query] [--case NAME]
                                                  [--variant KEY=VALUE ...] [--hold S]
                                                  [--variant2 KEY=VALUE ...]
                                                  [--set KEY=VALUE ...]
                                                  [--pg NAME=VALUE ...]

On a private Kafka and PostgreSQL started with deploy/local/infra.py (the
integration tests' helpers), unique topics, the migrations of
deploy/migrations:

  store   N events (default 100,000; 20 services, 50 hosts, 5 tenants, a
          twelve-word message, attributes and enrichment objects) written to
          the complete topic, then, R times (default 4) in alternation on an
          emptied table after a CHECKPOINT:
            consumer  one consumer with default settings and a fresh group
                      reads and stores them all: events/s from its first
                      stored batch to the last (so start-up and the group
                      join are not counted), scaled to N;
            \\copy     psql \\copy of the very rows the consumer stored
                      (exported once with \\copy ... TO) into the same table
                      with the same indexes: the ceiling.
            variant   with --variant: the consumer again with those
                      settings on top (e.g. store.writers=1; bin_dir=DIR
                      runs DIR/logpipe-consumer), after \\copy;
            variant2  with --variant2: a second one, after the first.
            pg        with --pg: PostgreSQL restarted with those settings
                      (ALTER SYSTEM), the consumer and \\copy again,
                      then the settings reset and PostgreSQL restarted
                      with infra.py's PG_SETTINGS for the next round; the
                      ratios of each against the same round's first runs.
          The best of each and their ratio, and the median of the rounds'
          ratios (a round's two runs follow each other, so the load they
          ran under is alike).  Each consumer run also prints its batches,
          the store thread's busy share and the consumer's CPU per event.
  query   M rows (default 10,000,000) made by PostgreSQL itself with
          generate_series (60 ms apart back from now, 6.9 days for 10 M;
          levels 5/15/60/12/7/1 % TRACE..FATAL; eight words out of forty and
          a word "reqN" shared by one row in 100,000), indexes rebuilt after
          the load, the per-minute and per-hour counts rebuilt
          (logpipe_counts_rebuild), VACUUM ANALYZE; then K (default 50)
          requests per case (--case: only the cases whose name has NAME)
          through the consumer's HTTP API after 3 warm-up ones: p50 and p99.
          /api/stats of the last day must equal a count of its rows.

Prints a report with the machine and the load average; nothing is written
to the repository.  Builds build/bin/logpipe-consumer if missing; set
LOGPIPE_BIN_DIR to use other binaries.  Loopback only; everything it starts
is stopped on exit.
"""

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))
import infra as lp  # noqa: E402

LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
COLUMNS = ("id, ts, received_at, level, level_rank, service, host, source_ip, tenant, "
           "correlation_id, message, attributes, enrichment, enrichment_status, kafka_topic, "
           "kafka_partition, kafka_offset")

# The rows of the query benchmark (see the module comment).
LOAD_SQL = """
INSERT INTO log_events (""" + COLUMNS + """)
SELECT gen_random_uuid(), t, t, (ARRAY['TRACE','DEBUG','INFO','WARN','ERROR','FATAL'])[r + 1],
       r, 'svc-' || (g % 20), 'host-' || (g % 50), '10.0.0.' || (g % 250), 't' || (g % 5),
       'c-' || g,
       w[1 + (g * 7) % 40] || ' ' || w[1 + (g * 13) % 40] || ' ' || w[1 + (g * 17) % 40] || ' ' ||
       w[1 + (g * 29) % 40] || ' ' || w[1 + (g * 31) % 40] || ' ' || w[1 + (g * 37) % 40] || ' ' ||
       w[1 + (g * 41) % 40] || ' ' || w[1 + (g * 43) % 40] || ' req' || (g % 100000),
       jsonb_build_object('i', g, 'path', '/api/v1/x'),
       '{"status":"complete","team":"core","datacenter":"dc1"}', 'complete', 'bench', g % 6, g
FROM generate_series(1, {rows}) g,
     LATERAL (SELECT now() - g * interval '60 ms' AS t,
                     CASE WHEN (g * 31) % 100 < 5 THEN 0 WHEN (g * 31) % 100 < 20 THEN 1
                          WHEN (g * 31) % 100 < 80 THEN 2 WHEN (g * 31) % 100 < 92 THEN 3
                          WHEN (g * 31) % 100 < 99 THEN 4 ELSE 5 END AS r) x,
     (SELECT string_to_array('user login request payment order timeout database cache miss '
             'hit retry failed succeeded connection refused started stopped disk memory cpu '
             'latency queue worker job scheduled completed error warning upstream downstream '
             'session token expired invalid checkout cart search index shard replica', ' ')
             AS w) words;
"""


def say(*a):
    print(*a, flush=True)


def load_avg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def psql(dsn, sql, timeout=3600):
    """Runs sql with psql; returns its unaligned, tuples-only output."""
    r = subprocess.run([lp._psql(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                        "-d", dsn, "-c", sql], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"psql failed: {r.stderr.strip()}\n{sql[:200]}")
    return r.stdout.strip()


def build_kafkatool(tmp):
    out = tmp / "kafkatool"
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "rdkafka", "jansson"],
                           capture_output=True, text=True, check=True).stdout.split()
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-o", str(out),
                    str(REPO / "tests" / "bench" / "kafkatool.c")] + flags, check=True)
    return str(out)


def metrics(port):
    """The unlabelled samples of the consumer on port, by name."""
    out = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#") and "{" not in line:
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
    return out


def processed(port):
    """log_events_processed_total of the consumer on port."""
    return metrics(port).get("log_events_processed_total", 0.0)


def cpu_seconds(pid):
    """User + system CPU time of a process, all threads, in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rfc3339(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event_lines(n):
    rnd = random.Random(7)
    words = ("user login request payment order timeout database cache miss hit retry "
             "failed connection refused started stopped disk memory latency").split()
    now = datetime.now(timezone.utc)
    out = []
    for i in range(n):
        ts = rfc3339(now - timedelta(milliseconds=7 * i))
        out.append(json.dumps({
            "id": str(uuid.uuid4()), "schema_version": 1, "timestamp": ts,
            "received_at": ts, "level": rnd.choice(LEVELS),
            "message": " ".join(rnd.choice(words) for _ in range(12)) + f" #{i}",
            "service": f"svc-{i % 20}", "host": f"host-{i % 50}", "source_ip": "10.0.0.1",
            "tenant": f"t{i % 5}", "correlation_id": f"c-{i}",
            "attributes": {"i": i, "path": "/api/v1/x"},
            "enrichment": {"status": "complete", "team": "core", "datacenter": "dc1"}}))
    return "\n".join(out) + "\n"


class Bench:
    def __init__(self, inf, tmp, topics, settings):
        self.inf = inf
        self.settings = settings
        self.tmp = tmp
        self.topics = topics
        self.dsn = inf.postgres.dsn
        self.procs = []

    def consumer(self, group, **extra):
        port = lp.free_port()
        cfg = {"kafka.group": group, "retention.days": 0}
        cfg.update(self.settings)
        cfg.update(extra)
        # bin_dir (a --variant's) runs another build of the consumer.
        bin_dir = cfg.pop("bin_dir", None)
        env = lp.service_env("consumer", {"consumer": port}, self.inf, topics=self.topics,
                             extra=cfg)
        p = lp.ServiceProc("consumer", env, self.tmp / "logs" / f"consumer-{group}.log", port,
                           bin_dir_=bin_dir, cwd=self.tmp / "consumer")
        p.start()
        self.procs.append(p)
        p.wait_ready(30)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001 - best effort
                say(f"stopping {p.name}: {e}")
        self.procs = []

    # ---- store rate ----

    def empty_table(self):
        psql(self.dsn, "TRUNCATE log_events, log_events_minute, log_events_hour")
        psql(self.dsn, "CHECKPOINT")
        self.wal0 = self.wal_state()

    def wal_state(self):
        """The WAL position and the number of checkpoints so far."""
        lsn, ckpt = psql(self.dsn, "SELECT pg_current_wal_lsn(), checkpoints_timed + "
                                   "checkpoints_req FROM pg_stat_bgwriter").split("|")
        return lsn, int(ckpt)

    def wal_note(self, n):
        """WAL written per row and checkpoints since empty_table()."""
        lsn, ckpt = self.wal_state()
        wal = float(psql(self.dsn, f"SELECT pg_wal_lsn_diff('{lsn}', '{self.wal0[0]}')"))
        return f"WAL {wal / n:,.0f} bytes/row, {ckpt - self.wal0[1]} checkpoints"

    def consumer_run(self, n, extra=None):
        self.empty_table()
        p = self.consumer(f"bench-{uuid.uuid4().hex[:8]}", **(extra or {}))
        deadline = time.monotonic() + 120
        while (n0 := processed(p.port)) == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the consumer stored nothing in 120 s")
            time.sleep(0.005)
        t0 = time.monotonic()
        m0, cpu0 = metrics(p.port), cpu_seconds(p.pid)
        deadline = t0 + 900
        while (done := processed(p.port)) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {n} stored in 900 s")
            time.sleep(0.01)
        wall = time.monotonic() - t0
        took = wall * n / (n - n0)
        m1, cpu1 = metrics(p.port), cpu_seconds(p.pid)
        store = m1["log_event_processing_time_sum"] - m0["log_event_processing_time_sum"]
        batches = m1["log_event_processing_time_count"] - m0["log_event_processing_time_count"]
        # Where the time went: the store thread's share of the wall time in
        # transactions, and the consumer's own CPU per event.
        say(f"    {batches:.0f} batches of {(n - n0) / max(batches, 1):.0f} on average, "
            f"{store / max(batches, 1) * 1000:.1f} ms each; store thread busy "
            f"{store / wall:.0%} of the time; consumer CPU "
            f"{(cpu1 - cpu0) / (n - n0) * 1e6:.1f} us/event")
        self.stop_all()
        say(f"    {self.wal_note(n)}")
        stored = psql(self.dsn, "SELECT count(*), count(DISTINCT id) FROM log_events")
        if stored != f"{n}|{n}":
            raise RuntimeError(f"stored (rows|ids) {stored}, expected {n}|{n}")
        return took

    def copy_run(self, path):
        self.empty_table()
        t0 = time.monotonic()
        psql(self.dsn, f"\\copy log_events ({COLUMNS}) FROM '{path}'")
        took = time.monotonic() - t0
        say(f"    {self.wal_note(int(psql(self.dsn, 'SELECT count(*) FROM log_events')))}")
        return took

    def pg_settings(self, settings):
        """Restarts PostgreSQL with settings (ALTER SYSTEM); empty: infra.py's PG_SETTINGS."""
        psql(self.dsn, "ALTER SYSTEM RESET ALL")
        for k, v in settings.items():
            psql(self.dsn, f"ALTER SYSTEM SET {k} = '{v}'")
        self.inf.postgres.restart()
        for k, v in settings.items():
            got = psql(self.dsn, f"SHOW {k}")
            say(f"    {k} = {got}")

    def store(self, tool, n, rounds, variant=None, variant2=None, pg=None):
        say(f"writing {n} events to {self.topics['complete']} ...")
        text = event_lines(n)
        r = subprocess.run([tool, "produce", self.inf.kafka.bootstrap, self.topics["complete"]],
                           input=text, capture_output=True, text=True, timeout=900)
        if f"acked {n} failed 0" not in r.stdout:
            raise RuntimeError(r.stdout + r.stderr)
        del text
        rows = self.tmp / "rows.copy"
        cons, copy, var, var2, pgc, pgp = [], [], [], [], [], []
        for i in range(rounds):
            cons.append(self.consumer_run(n))
            say(f"  consumer round {i + 1}: {n / cons[-1]:,.0f} events/s  (load {load_avg()})")
            if i == 0:
                psql(self.dsn, f"\\copy (SELECT {COLUMNS} FROM log_events) TO '{rows}'")
            copy.append(self.copy_run(rows))
            say(f"  \\copy round {i + 1}:   {n / copy[-1]:,.0f} rows/s    (load {load_avg()})")
            if variant:
                var.append(self.consumer_run(n, variant))
                say(f"  variant round {i + 1}:  {n / var[-1]:,.0f} events/s  (load {load_avg()})")
            if variant2:
                var2.append(self.consumer_run(n, variant2))
                say(f"  variant2 round {i + 1}: {n / var2[-1]:,.0f} events/s  (load {load_avg()})")
            if pg:
                self.pg_settings(pg)
                pgc.append(self.consumer_run(n))
                say(f"  pg consumer round {i + 1}: {n / pgc[-1]:,.0f} events/s  "
                    f"(load {load_avg()})")
                pgp.append(self.copy_run(rows))
                say(f"  pg \\copy round {i + 1}:   {n / pgp[-1]:,.0f} rows/s    "
                    f"(load {load_avg()})")
                self.pg_settings({})
        # On a shared machine the load drifts between rounds: besides the
        # best of each, the median of the ratios of each round's two runs,
        # which were taken one right after the other.
        c, p = min(cons), min(copy)
        pairs = sorted(pc / cc for cc, pc in zip(cons, copy))
        out = {"events": n, "consumer": n / c, "copy": n / p, "ratio": p / c,
               "pair_ratio": pairs[len(pairs) // 2],
               "consumer_runs": [n / x for x in cons], "copy_runs": [n / x for x in copy]}
        if var:
            vpairs = sorted(pc / vc for vc, pc in zip(var, copy))
            out.update({"variant": n / min(var), "variant_ratio": p / min(var),
                        "variant_pair_ratio": vpairs[len(vpairs) // 2],
                        "variant_runs": [n / x for x in var]})
        if var2:
            vpairs = sorted(pc / vc for vc, pc in zip(var2, copy))
            out.update({"variant2": n / min(var2), "variant2_ratio": p / min(var2),
                        "variant2_pair_ratio": vpairs[len(vpairs) // 2],
                        "variant2_runs": [n / x for x in var2]})
        if pgc:
            def med(xs):
                xs = sorted(xs)
                return xs[len(xs) // 2]
            out.update({"pg_consumer": n / min(pgc), "pg_copy": n / min(pgp),
                        "pg_pair_ratio": med([pp / pc for pc, pp in zip(pgc, pgp)]),
                        "pg_consumer_gain": med([c0 / c1 for c0, c1 in zip(cons, pgc)]),
                        "pg_copy_gain": med([p0 / p1 for p0, p1 in zip(copy, pgp)]),
                        "pg_consumer_runs": [n / x for x in pgc],
                        "pg_copy_runs": [n / x for x in pgp]})
        return out

    # ---- query latency ----

    def load(self, rows):
        say(f"loading {rows:,} rows with generate_series ...")
        t0 = time.monotonic()
        # The indexes (whatever the migrations made) are dropped for the load
        # and built again after it, as a bulk load would.
        idx = psql(self.dsn, "SELECT indexname || '|' || indexdef FROM pg_indexes "
                             "WHERE schemaname = 'public' AND tablename = 'log_events' "
                             "AND indexname <> 'log_events_pkey'").splitlines()
        drops = "".join(f"DROP INDEX {line.split('|', 1)[0]};" for line in idx)
        psql(self.dsn, "SELECT logpipe_ensure_partitions(8, 1);" + drops +
             "ALTER TABLE log_events DROP CONSTRAINT log_events_pkey;")
        psql(self.dsn, "SET maintenance_work_mem = '512MB';" + LOAD_SQL.replace("{rows}",
                                                                               str(rows)))
        say(f"  rows in {time.monotonic() - t0:.0f} s; building indexes ...")
        psql(self.dsn, "SET maintenance_work_mem = '512MB';"
             "ALTER TABLE log_events ADD PRIMARY KEY (id, ts);" +
             # pg_indexes spells a partitioned index "ON ONLY", which
             # would build it for the parent alone.
             "".join(line.split("|", 1)[1].replace(" ON ONLY ", " ON ") + ";"
                     for line in idx))
        # The consumer keeps the per-minute and per-hour counts as it stores;
        # rows loaded behind its back are counted by a rebuild.
        psql(self.dsn, "SELECT logpipe_counts_rebuild('-infinity', 'infinity')")
        psql(self.dsn, "VACUUM ANALYZE log_events")
        psql(self.dsn, "VACUUM ANALYZE log_events_minute")
        psql(self.dsn, "VACUUM ANALYZE log_events_hour")
        say(f"  loaded and indexed in {time.monotonic() - t0:.0f} s")

    def query(self, rows, runs, only_case=None):
        if int(psql(self.dsn, "SELECT count(*) FROM log_events")) != rows:
            self.empty_table()
            self.load(rows)
        p = self.consumer(f"bench-q-{uuid.uuid4().hex[:8]}")
        base = f"http://127.0.0.1:{p.port}"

        def get(path, params):
            url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(url, timeout=60) as r:
                    body = r.read()
            except urllib.error.HTTPError as e:
                say(f"  {url}: {e.code} {e.read()[:300]!r}")
                return None, None
            return (time.monotonic() - t0) * 1000, json.loads(body)

        now = datetime.now(timezone.utc)
        some_id = psql(self.dsn, "SELECT id FROM log_events WHERE ts < now() - interval "
                                 "'2 days' LIMIT 1")
        page1 = get("/api/logs", {})[1]
        deep = get("/api/logs", {"to": rfc3339(now - timedelta(days=3)), "limit": 1})[1]
        hour = {"from": rfc3339(now - timedelta(days=3, hours=1)),
                "to": rfc3339(now - timedelta(days=3))}
        cases = [
            ("newest 50, no filter", "/api/logs", {}),
            ("service", "/api/logs", {"service": "svc-7"}),
            ("level exact (ERROR, 7 %)", "/api/logs", {"level": "ERROR"}),
            ("level exact (FATAL, 1 %)", "/api/logs", {"level": "FATAL"}),
            ("level minimum (>= ERROR)", "/api/logs", {"min_level": "ERROR"}),
            ("host", "/api/logs", {"host": "host-13"}),
            ("tenant", "/api/logs", {"tenant": "t3"}),
            ("text, common word", "/api/logs", {"text": "timeout"}),
            ("text, two words", "/api/logs", {"text": "payment refused"}),
            ("text, rare word", "/api/logs", {"text": "req12345"}),
            ("from/to, 1 hour 3 days ago", "/api/logs", hour),
            ("combined service+level+1 day", "/api/logs",
             {"service": "svc-3", "level": "ERROR", "from": rfc3339(now - timedelta(days=1))}),
            ("combined service+host+tenant", "/api/logs",
             {"service": "svc-3", "host": "host-13", "tenant": "t3"}),
            ("next page (cursor)", "/api/logs", {"cursor": page1["next_cursor"]}),
            ("next page, 3 days back", "/api/logs", {"cursor": deep["next_cursor"]}),
            ("limit=1000", "/api/logs", {"limit": 1000}),
            ("by id", f"/api/logs/{some_id}", {}),
            ("/api/stats, 1 hour", "/api/stats", hour),
            ("/api/stats, 24 hours", "/api/stats", {}),
            ("/api/stats, 24 hours, tenant+min_level", "/api/stats",
             {"tenant": "t3", "min_level": "WARN"}),
            ("/api/stats, 7 days", "/api/stats", {"from": rfc3339(now - timedelta(days=7))}),
            # host is not in the counts: these count the day's rows.
            ("/api/stats, 24 hours, host (rows)", "/api/stats", {"host": "host-13"}),
        ]
        if only_case:
            cases = [c for c in cases if only_case in c[0]]
        # The stats must be what counting the rows gives.
        day = {"from": rfc3339(now - timedelta(days=1)), "to": rfc3339(now)}
        got = get("/api/stats", day)[1]
        want = int(psql(self.dsn, f"SELECT count(*) FROM log_events WHERE ts >= "
                                  f"'{day['from']}' AND ts < '{day['to']}'"))
        if got["total"] != want:
            raise RuntimeError(f"/api/stats total {got['total']}, the rows {want}")
        out = []
        for name, path, params in cases:
            n = max(5, runs // 10) if "(rows)" in name else runs
            took, failed = [], 0
            for i in range(n + 3):
                ms, got = get(path, params)
                if ms is None:
                    failed += 1
                    continue
                body = got
                if i >= 3:
                    took.append(ms)
            if not took:
                out.append({"name": name, "runs": n, "p50": float("nan"),
                            "p99": float("nan"), "failed": failed})
                say(f"  {name:32s} every request failed")
                continue
            took.sort()
            res = {"name": name, "runs": n, "p50": took[len(took) // 2],
                   "p99": took[min(len(took) - 1, int(len(took) * 0.99))], "failed": failed}
            if path == "/api/logs":
                res["rows"] = body["count"]
            out.append(res)
            say(f"  {name:32s} p50 {res['p50']:8.1f} ms   p99 {res['p99']:8.1f} ms   "
                f"({n} runs, {failed} failed, load {load_avg()})")
        self.stop_all()
        return out


def machine():
    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
            f"{platform.system()} {platform.release()}")


def main():
    # SIGTERM unwinds like ^C, so that everything started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--rows", type=int, default=10000000)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--only", choices=("store", "query"))
    ap.add_argument("--case", help="only the query cases whose name contains this")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a consumer setting for every run (default: the defaults)")
    ap.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                    help="store: also run, in each round after \\copy, a consumer with "
                         "these settings on top")
    ap.add_argument("--variant2", action="append", default=[], metavar="KEY=VALUE",
                    help="store: a second variant, run after the first in each round")
    ap.add_argument("--pg", action="append", default=[], metavar="NAME=VALUE",
                    help="store: also run, in each round, the consumer and \\copy on "
                         "PostgreSQL restarted with these settings")
    ap.add_argument("--hold", type=int, default=0,
                    help="seconds to keep PostgreSQL up at the end, for a look at it")
    args = ap.parse_args()

    if not os.environ.get("LOGPIPE_BIN_DIR") and \
            not (REPO / "build" / "bin" / "logpipe-consumer").exists():
        subprocess.run(["make", "--no-print-directory", "build/bin/logpipe-consumer"],
                       cwd=REPO, check=True)
    tmp = Path(tempfile.mkdtemp(prefix="storebench-"))
    os.chmod(tmp, 0o711)
    tool = build_kafkatool(tmp)
    inf = lp.Infra(tmp)
    b = None
    store = query = None
    try:
        say(f"starting Kafka, Redis and PostgreSQL in {tmp} ...")
        inf.start(timeout=150)
        suffix = uuid.uuid4().hex[:8]
        topics = {role: f"{t}-{suffix}" for role, t in lp.TOPIC_ROLES.items()}
        inf.kafka.create_topics({topics[r]: lp.TOPICS[t] for r, t in lp.TOPIC_ROLES.items()},
                                compacted={topics["metadata"]})
        b = Bench(inf, tmp, topics, dict(kv.split("=", 1) for kv in args.set))
        version = psql(inf.postgres.dsn, "SHOW server_version")
        if args.only != "query":
            say("== store rate ==")
            store = b.store(tool, args.events, args.rounds,
                            dict(kv.split("=", 1) for kv in args.variant),
                            dict(kv.split("=", 1) for kv in args.variant2),
                            dict(kv.split("=", 1) for kv in args.pg))
        if args.only != "store":
            say("== query latency ==")
            query = b.query(args.rows, args.runs, args.case)

        say("\n== storage benchmark ==")
        say(f"date      {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        say(f"machine   {machine()}")
        say(f"setup     PostgreSQL {version} (fsync on, infra.py's PG_SETTINGS), single-node Kafka "
            "(KRaft); one consumer, "
            + (", ".join(args.set) if args.set else "default settings")
            + "; everything on loopback")
        say(f"load      {load_avg()} (load average at the end)")
        if store:
            say(f"store     {store['events']:,} events: consumer {store['consumer']:,.0f} "
                f"events/s, psql \\copy {store['copy']:,.0f} rows/s, ratio "
                f"{store['ratio']:.0%} (best of {len(store['consumer_runs'])} each; median of "
                f"the rounds' ratios {store['pair_ratio']:.0%}; runs "
                + ", ".join(f"{x:,.0f}" for x in store["consumer_runs"]) + " vs "
                + ", ".join(f"{x:,.0f}" for x in store["copy_runs"]) + ")")
            if "variant" in store:
                say(f"variant   {', '.join(args.variant)}: {store['variant']:,.0f} events/s, "
                    f"ratio {store['variant_ratio']:.0%} (median of the rounds' ratios "
                    f"{store['variant_pair_ratio']:.0%}; runs "
                    + ", ".join(f"{x:,.0f}" for x in store["variant_runs"]) + ")")
            if "variant2" in store:
                say(f"variant2  {', '.join(args.variant2)}: {store['variant2']:,.0f} events/s, "
                    f"ratio {store['variant2_ratio']:.0%} (median of the rounds' ratios "
                    f"{store['variant2_pair_ratio']:.0%}; runs "
                    + ", ".join(f"{x:,.0f}" for x in store["variant2_runs"]) + ")")
            if "pg_consumer" in store:
                say(f"pg        {', '.join(args.pg)}: consumer {store['pg_consumer']:,.0f} "
                    f"events/s, \\copy {store['pg_copy']:,.0f} rows/s (best of each; "
                    f"median of the rounds' ratios {store['pg_pair_ratio']:.0%}); against the "
                    f"same round's first runs, median: consumer x"
                    f"{store['pg_consumer_gain']:.2f}, \\copy x{store['pg_copy_gain']:.2f}; runs "
                    + ", ".join(f"{x:,.0f}" for x in store["pg_consumer_runs"]) + " vs "
                    + ", ".join(f"{x:,.0f}" for x in store["pg_copy_runs"]) + ")")
        if query:
            say(f"query     {args.rows:,} rows, through the consumer's HTTP API")
            say("| filter | p50 ms | p99 ms | failed |")
            say("|---|---:|---:|---:|")
            for r in query:
                say(f"| {r['name']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['failed']} |")
    finally:
        if b:
            b.stop_all()
        try:
            if args.hold > 0:
                say(f"holding postgres {inf.postgres.dsn} for {args.hold} s ...")
                time.sleep(args.hold)
        finally:
            inf.stop()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
