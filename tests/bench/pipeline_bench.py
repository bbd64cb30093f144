#!/usr/bin/python3
"""pipeline_bench.py - the highest rate the whole pipeline sustains, end to
end, on the stack `make run` starts (issue #15, item 1).

    make bench BENCH=pipeline
    PIPELINE_STEP_S=15 make bench BENCH=pipeline          # quick (smoke) run
    /usr/bin/python3 tests/bench/pipeline_bench.py [--step-s S] [--start R]
                     [--max-rate R] [--bisect K] [--drain-events N] [--quick]
                     [--only drain] [--fill-rows M] [--drain-variant KEY=VALUE]
                     [--drain-rounds R]
    /usr/bin/python3 tests/bench/pipeline_bench.py --steps 10000,20000 --step-s 15
                     --rounds 2 --variant base: --variant l20:enricher.kafka.linger_ms=20

The stack is deploy/local/runner.py's, used as a library: Kafka, Redis and
PostgreSQL and the six services, configured exactly as `make run` configures
them (LOGPIPE_* settings in the environment apply as they do there), the
generator's catalogue loaded into metadata-svc; but every port is a free one
and the data live in a temporary directory, so a `make run` beside it is not
disturbed.  Everything is stopped at the end (the runner's own shutdown).

  ladder   the generator (POST /api/v1/generator/start {"rate", "duration_s"})
           runs steps of S seconds (PIPELINE_STEP_S, default 60) at rates
           START, 2xSTART, 4xSTART ... (default 2,500, so 10,000 is a step)
           until a step fails, then bisects between the last passing and the
           first failing rate (K more steps, default 3).  A step passes when
             - the stored rate is within 2 % of the generated rate, both
               measured over the step less its first quarter (at most 5 s:
               the pipeline filling up is not a rate): the least-squares
               slopes of the generator's acknowledged count (status "sent")
               and the consumer's log_events_processed_total, sampled
               together every 0.25 s (one-sided: stored at least 98 % of
               generated; more is a backlog being worked off, which the
               lag and stored-within-10-s checks judge);
             - the consumer lag at the end of the step (the gateway's
               /api/v1/pipeline stages.consumer.lag: committed offsets) is
               under two seconds' worth of events at that rate;
             - every acknowledged event of the step is a row in PostgreSQL
               (count(*) of log_events) within 10 s after the step;
             - and the generator did produce the rate (a generator that
               cannot is a failed step too: the pipeline was not shown to
               take it).
           Between steps the pipeline is empty (the last check).  Each
           step's line also counts PostgreSQL's checkpoints during it
           (each one is followed by full-page images in the WAL) and the
           autovacuum and autoanalyze runs on log_events' partitions.
  latency  stored_at - received_at (deploy/migrations/001: stored_at is the
           row's DEFAULT now(), the storing transaction's start; received_at
           the generator's wall clock when it made the event) of the rows of
           the 10,000 events/s step: p50 / p99 / max.
  drain    enricher and consumer stopped; N events (PIPELINE_DRAIN_EVENTS,
           default 300,000, 100,000 in quick mode) generated into raw-logs;
           the enricher alone enriches them all and is stopped again; then,
           after a VACUUM and a CHECKPOINT, the consumer alone stores them
           into log_events (as large as the ladder left it): events/s from
           its first stored batch to the last, with the CPU of the consumer
           and of PostgreSQL (and PostgreSQL's by backend: the store and
           probe connections) meanwhile.  The calibrator, in the same run,
           as issue #15 words it ("the same rows into the same table"):
           those very rows exported with psql \\copy ... TO, DELETEd from
           log_events, VACUUM log_events (the heap and index space they took
           is free again, the table as before the drain), CHECKPOINT, then
           timed: \\copy log_events (...) FROM the file, into the same
           partition with the same indexes.  store_vs_copy = consumer rate /
           that \\copy rate.  The rows are back with the consumer's very
           values (stored_at aside), so the per-minute counts (migration 004,
           untouched by DELETE and \\copy) still equal the rows: checked
           after each drain (sum of the counts = count(*)).  For context
           only, the old calibrator is printed too: \\copy of the rows into a
           fresh empty table of the same shape (LIKE log_events INCLUDING
           DEFAULTS INCLUDING INDEXES, with today's partition).
           --drain-variant KEY=VALUE[,KEY=VALUE] (consumer settings, e.g.
           store.writers=2, or bin_dir=DIR for DIR/logpipe-consumer) drains
           again with them after the default drain, one drain per --drain-variant,
           --drain-rounds R times in alternation, each with its own calibrator.
  --only drain  no ladder: --fill-rows rows (default 3,000,000, today's,
           1 ms apart back from now; indexes dropped for the load and
           rebuilt, counts rebuilt, VACUUM ANALYZE) stand for what the
           ladder leaves, then the drain(s): 3-4 minutes instead of 10+.

  steps    (--steps R1,R2,...) instead of the three above: only these rates,
           each step with its own e2e latency; with --variant NAME:SVC.KEY=V,...
           (SVC generator, enricher or consumer; repeatable) each variant's
           settings are applied by restarting the services they name, and
           --rounds N runs every variant N times, the order turning round by
           round, so that A/B share the same minutes of a loaded machine.
           A table of the steps closes the run.

Each step also prints the CPU each component used during it (cores, all
threads; PostgreSQL with its backends), so a failing step shows who had the
CPU, and the same in µs per event: per event acknowledged (generator),
enriched (enricher) or stored (consumer, PostgreSQL) during the step, per
event generated for the rest.  Quick mode (--quick, or PIPELINE_STEP_S under 60): 15 s steps by default,
two bisection steps, 100,000 drain events.  The machine's 1-minute load
average is printed with every step: on the shared 2-CPU VM it moves the
figures by a factor of two or more.  Last line:

    pipeline: sustained=N e2e_p99_ms=N store_vs_copy=R
    pipeline: drain_only store_vs_copy=R                      (--only drain)

Loopback only; bounded in time (every wait has a deadline).
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))
import infra as lp  # noqa: E402
import runner as rn  # noqa: E402
import storage_bench  # noqa: E402  (this directory is the script's)

COLUMNS = ("id, ts, received_at, level, level_rank, service, host, source_ip, tenant, "
           "correlation_id, message, attributes, enrichment, enrichment_status, kafka_topic, "
           "kafka_partition, kafka_offset, trace_id, span_id")
DRAIN_RATE = 20000        # events/s the backlog of the drain phase is generated at
STORE_WITHIN_S = 10.0     # every event of a step stored within this long after it
RATE_TOLERANCE = 0.02     # stored rate within 2 % of the generated rate
LAG_SECONDS = 2.0         # consumer lag under this many seconds' worth of events
SERVICES_TUNED = ("generator", "enricher", "consumer")  # what --variant may set

# --only drain: the rows the ladder would have left, made by PostgreSQL with
# storage_bench.py's synthetic rows (20 services, 50 hosts, 5 tenants, eight
# words out of forty), 1 ms apart back from now: today's partition, as the
# ladder's.
FILL_SQL = storage_bench.LOAD_SQL.replace("interval '60 ms'", "interval '1 ms'")


def say(*a):
    print(*a, flush=True)


def load_avg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def http(method, url, body=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metrics(url):
    """The unlabelled samples of a service's /metrics, by name."""
    out = {}
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#") and "{" not in line:
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
    return out


def slope(points):
    """Least-squares slope of [(t, count)]: events per second."""
    n = len(points)
    if n < 2:
        return float("nan")
    mt = sum(t for t, _ in points) / n
    mc = sum(c for _, c in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (c - mc) for t, c in points) / den if den else float("nan")


def cpu_seconds(pid):
    """User + system CPU time of a process (all threads), 0 when it is gone."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_tree(pid):
    """CPU time of a process and its live descendants, each with its reaped
    children's (PostgreSQL: the postmaster and its backends, including the
    backends that ended, such as a psql session's)."""
    total = 0.0
    for p in [pid] + lp._descendants(pid):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


class QuietRunner(rn.Runner):
    """The runner with every port a free one (make run prefers SPEC's)."""

    def _port(self, key, preferred):
        return lp.free_port()


class Bench:
    def __init__(self, args):
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="logpipe-pbench-"))
        os.chmod(self.base, 0o755)
        (self.base / "logs").mkdir()
        ns = argparse.Namespace(base_dir=str(self.base), control_port=0, log_level="info",
                                no_services=False, chaos=False)
        self.r = QuietRunner(ns)
        self.steps = []

    # ---- the stack ----

    def url(self, name):
        return self.r.components[name].address

    @property
    def dsn(self):
        return self.r.components["postgres"].obj.dsn

    def psql(self, sql, timeout=600):
        return lp.psql(self.dsn, sql, timeout=timeout)

    def start(self):
        r = self.r
        lp.PDEATHSIG = signal.SIGTERM  # as the runner: services drain if we die
        r.build()
        for comp in r.components.values():
            comp.thread.start()
        if not r.start_infra():
            raise RuntimeError("the infrastructure did not start")
        r.start_services()
        deadline = time.monotonic() + 60
        while bad := {n: c.state for n, c in r.components.items() if c.state != "running"}:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not running: {bad}; logs in {self.base / 'logs'}")
            time.sleep(0.2)
        r.seed_metadata()
        # The pipeline view answers once it has its first sample.
        deadline = time.monotonic() + 60
        while not self.pipeline().get("ready", True):
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway's pipeline view never got ready")
            time.sleep(0.5)

    def stop(self):
        self.r.shutdown()

    def control(self, name, action):
        reply = self.r.components[name].submit(action)
        if not reply.wait(180) or reply.error:
            raise RuntimeError(f"{action} {name}: {reply.error or 'timed out'}")
        if action == "start":
            deadline = time.monotonic() + 60
            while not self.r.components[name].obj.live():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not live 60 s after its start")
                time.sleep(0.1)

    def pipeline(self):
        status, body = http("GET", self.url("gateway") + "/api/v1/pipeline")
        if status != 200:
            raise RuntimeError(f"/api/v1/pipeline answered {status}: {body!r:.200}")
        return body

    def gen_status(self):
        return http("GET", self.url("generator") + "/api/v1/generator/status")[1]

    def gen_start(self, rate, seconds):
        status, body = http("POST", self.url("generator") + "/api/v1/generator/start",
                            {"rate": rate, "duration_s": seconds})
        if status != 200:
            raise RuntimeError(f"generator start answered {status}: {body!r:.300}")

    def gen_wait_done(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            st = self.gen_status()
            if st["state"] != "running" and st.get("in_flight", 0) == 0:
                return st
            if time.monotonic() > deadline:
                raise RuntimeError(f"generator still {st['state']} after {timeout:.0f} s")
            time.sleep(0.1)

    def cpu(self):
        """CPU seconds so far of each component (PostgreSQL: with its backends)."""
        out = {}
        for name, comp in self.r.components.items():
            pid = comp.obj.pid
            if pid:
                pids = [pid] + (lp._descendants(pid) if name == "postgres" else [])
                out[name] = sum(cpu_seconds(p) for p in pids)
        return out

    def processed(self):
        return metrics(self.url("consumer")).get("log_events_processed_total", 0.0)

    def enriched(self):
        return metrics(self.url("enricher")).get("kafka_messages_sent_total", 0.0)

    def checkpoints(self):
        """Checkpoints PostgreSQL has made so far (timed and requested)."""
        return int(self.psql("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"))

    def autovacuums(self):
        """Autovacuum and autoanalyze runs on log_events' partitions so far."""
        return int(self.psql("SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0) "
                             "FROM pg_stat_user_tables WHERE relname LIKE 'log_events%'"))

    def rows(self):
        return int(self.psql("SELECT count(*) FROM log_events"))

    # ---- one step of the ladder ----

    def step(self, rate):
        S = self.args.step_s
        skip = min(5.0, S / 4)
        rows0, proc0 = self.rows(), self.processed()
        ckpt0, av0 = self.checkpoints(), self.autovacuums()
        load0 = load_avg()
        cpu0 = self.cpu()
        enr0 = self.enriched()
        self.gen_start(rate, S)
        t0 = time.monotonic()
        # Both counters every 0.25 s; the rates are the least-squares slopes
        # over the step less its warm-up, so that the consumer's batches
        # (up to batch.max_ms apart) do not make a staircase look like a rate.
        samples = []
        while (t := time.monotonic()) < t0 + S - 0.3:
            if t >= t0 + skip:
                g, p = self.gen_status()["sent"], self.processed()
                samples.append(((t + time.monotonic()) / 2, g, p))
            time.sleep(0.25)
        gen_rate = slope([(t, g) for t, g, _ in samples])
        stored_rate = slope([(t, p) for t, _, p in samples])
        st = self.gen_wait_done(S + 30)
        t_end = time.monotonic()
        # Who had the CPU during the step, in cores (of os.cpu_count()).
        cpu1 = self.cpu()
        proc1, enr1 = self.processed(), self.enriched()
        cores = {n: (cpu1[n] - cpu0.get(n, 0)) / (t_end - t0) for n in cpu1}
        pl = self.pipeline()
        lag = (pl.get("stages") or {}).get("consumer", {}).get("lag")
        sent = st["sent"]
        unstored_end = int(sent - (self.processed() - proc0))
        # Every acknowledged event a row within 10 s.
        deadline = t_end + STORE_WITHIN_S
        while (stored := self.rows() - rows0) < sent and time.monotonic() < deadline:
            time.sleep(0.25)
        store_s = time.monotonic() - t_end
        res = {"rate": rate, "gen_rate": gen_rate, "stored_rate": stored_rate, "sent": sent,
               "errors": st.get("errors", 0), "rate_limited": st.get("rate_limited", 0),
               "lag": lag, "unstored_end": unstored_end, "stored": stored,
               "store_s": store_s, "load0": load0, "load1": load_avg(),
               "started_at": st.get("started_at"), "stopped_at": st.get("stopped_at"),
               "cores": cores, "checkpoints": self.checkpoints() - ckpt0,
               "autovacuums": self.autovacuums() - av0}
        why = []
        if gen_rate < rate * (1 - RATE_TOLERANCE) or res["errors"] or res["rate_limited"]:
            why.append(f"generator made {gen_rate:,.0f}/s of {rate:,}/s "
                       f"(errors {res['errors']}, shed {res['rate_limited']})")
        # One-sided: a stored rate above the generated one over the window
        # is the pipeline catching up with what the warm-up or a stall left
        # queued (a backlog it works off), not a failure to keep up.
        if stored_rate < (1 - RATE_TOLERANCE) * gen_rate:
            why.append(f"stored {stored_rate:,.0f}/s vs generated {gen_rate:,.0f}/s")
        if lag is None:
            why.append("consumer lag unknown")
        elif lag >= LAG_SECONDS * rate:
            why.append(f"consumer lag {lag:,} >= {LAG_SECONDS * rate:,.0f}")
        if stored < sent:
            why.append(f"{sent - stored:,} of {sent:,} not stored {STORE_WITHIN_S:.0f} s after")
        res["ok"] = not why
        res["why"] = "; ".join(why)
        self.steps.append(res)
        say(f"  step {rate:>7,}/s: generated {gen_rate:>9,.0f}/s stored {stored_rate:>9,.0f}/s "
            f"lag {lag if lag is not None else '?'} (unstored {unstored_end:,}) "
            f"all {sent:,} stored after {store_s:.1f} s  load {load0} -> {res['load1']}  "
            + ("PASS" if res["ok"] else "FAIL: " + res["why"]))
        say("    CPU during the step, cores: " + ", ".join(
            f"{n} {c:.2f}" for n, c in sorted(cores.items(), key=lambda kv: -kv[1])))
        if sent:
            # The same per event each one handled during the step: steadier
            # than rates under load.  The generator's events are the ones
            # acknowledged; the enricher's the ones it sent on, the
            # consumer's and PostgreSQL's the ones stored (behind a backlog
            # they are fewer than the step's); the rest per generated event.
            done = {"enricher": enr1 - enr0, "consumer": proc1 - proc0,
                    "postgres": proc1 - proc0}
            res["us_per_event"] = {n: (cpu1[n] - cpu0.get(n, 0)) * 1e6 /
                                   max(1.0, done.get(n, sent)) for n in cpu1}
            say("    CPU per event, us: " + ", ".join(
                f"{n} {u:.1f}" for n, u in sorted(res["us_per_event"].items(),
                                                 key=lambda kv: -kv[1]))
                + f"; all {sum(res['us_per_event'].values()):.1f}")
        if stored < sent:
            # The next step must start on an empty pipeline.
            deadline = time.monotonic() + 300
            while self.rows() - rows0 < sent:
                if time.monotonic() > deadline:
                    raise RuntimeError("the pipeline did not empty in 5 minutes")
                time.sleep(1)
        return res

    def ladder(self):
        args = self.args
        rate, last_ok, first_bad = args.start, None, None
        say(f"ladder: {args.step_s:.0f} s steps from {args.start:,}/s, doubling, "
            f"then {args.bisect} bisection steps")
        while rate <= args.max_rate:
            res = self.step(rate)
            if not res["ok"]:
                first_bad = rate
                break
            last_ok = rate
            rate *= 2
        if first_bad is None:
            say(f"  every step up to {args.max_rate:,}/s passed (--max-rate)")
            return last_ok
        lo, hi = last_ok or 0, first_bad
        for _ in range(args.bisect):
            mid = int(round((lo + hi) / 2, -2))
            if mid <= lo or mid >= hi:
                break
            if self.step(mid)["ok"]:
                lo = mid
            else:
                hi = mid
        return lo

    def e2e(self, rate=10000):
        """p50/p99/max of stored_at - received_at of the rows of the step at rate."""
        res = next((s for s in self.steps if s["rate"] == rate), None)
        if res is None:
            say(f"  no {rate:,}/s step on the ladder: running one")
            res = self.step(rate)
        return self.step_e2e(res)

    def step_e2e(self, res):
        """p50/p99/max of stored_at - received_at of the rows of one step."""
        rate = res["rate"]
        q = self.psql(
            "SELECT count(*), percentile_disc(0.5) WITHIN GROUP (ORDER BY d), "
            "percentile_disc(0.99) WITHIN GROUP (ORDER BY d), max(d) FROM "
            "(SELECT extract(epoch FROM stored_at - received_at) * 1000 AS d FROM log_events "
            f"WHERE received_at >= '{res['started_at']}' AND "
            f"received_at <= '{res['stopped_at']}') x")
        n, p50, p99, mx = q.split("|")
        return {"rate": rate, "n": int(n), "p50": float(p50), "p99": float(p99),
                "max": float(mx), "step_ok": res["ok"]}

    # ---- chosen steps under settings variants (A/B) ----

    def apply(self, settings):
        """Restarts the services whose settings differ from settings
        ({service: {dotted key: value}}; a key missing from the map returns
        to the value the stack started with)."""
        for name in SERVICES_TUNED:
            proc = self.r.components[name].obj
            if not hasattr(proc, "env0"):
                proc.env0 = dict(proc.env)
            want = dict(proc.env0)
            want.update({lp.env_name(k): str(v) for k, v in settings.get(name, {}).items()})
            if want != proc.env:
                self.control(name, "stop")
                proc.env = want
                self.control(name, "start")
        # A restarted consumer or enricher rejoins its group first.
        deadline = time.monotonic() + 60
        while (self.pipeline().get("stages") or {}).get("consumer", {}).get("lag") is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)

    def variants(self):
        """Each round runs every variant's steps, the variants' order
        turning round by round, so that A and B share the same minutes."""
        args = self.args
        names = [v[0] for v in args.variant] or ["defaults"]
        table = dict(args.variant) or {"defaults": {}}
        rows = []
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                say(f"round {rnd + 1}, variant {name}: {table[name] or 'defaults'}")
                self.apply(table[name])
                if args.warmup_s:
                    self.gen_start(args.steps[0], args.warmup_s)
                    self.gen_wait_done(args.warmup_s + 30)
                    time.sleep(2)
                for rate in args.steps:
                    res = self.step(rate)
                    lat = self.step_e2e(res)
                    say(f"    e2e p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms, "
                        f"max {lat['max']:.0f} ms ({lat['n']:,} rows)")
                    rows.append((rnd + 1, name, res, lat))
        return rows

    # ---- consumer drain vs \copy ----

    def fill(self, rows):
        """rows rows of today made by PostgreSQL (generate_series, 1 ms apart
        back from now), indexes dropped for the load and rebuilt, the counts
        rebuilt, VACUUM ANALYZE: a table as large as the ladder leaves, in a
        fraction of its time (--only drain)."""
        say(f"fill: {rows:,} rows with generate_series (load {load_avg()})")
        t0 = time.monotonic()
        idx = self.psql("SELECT indexname || '|' || indexdef FROM pg_indexes "
                        "WHERE schemaname = 'public' AND tablename = 'log_events' "
                        "AND indexname <> 'log_events_pkey'").splitlines()
        self.psql("".join(f"DROP INDEX {line.split('|', 1)[0]};" for line in idx) +
                  "ALTER TABLE log_events DROP CONSTRAINT log_events_pkey;")
        self.psql("SET maintenance_work_mem = '256MB';" + FILL_SQL.replace("{rows}", str(rows)))
        # pg_indexes spells a partitioned index "ON ONLY", which would build
        # it for the parent alone.
        self.psql("SET maintenance_work_mem = '256MB';"
                  "ALTER TABLE log_events ADD PRIMARY KEY (id, ts);" +
                  "".join(line.split("|", 1)[1].replace(" ON ONLY ", " ON ") + ";"
                          for line in idx))
        # Rows loaded behind the consumer's back are counted by a rebuild.
        self.psql("SELECT logpipe_counts_rebuild('-infinity', 'infinity')")
        for t in ("log_events", "log_events_minute", "log_events_hour"):
            self.psql(f"VACUUM ANALYZE {t}")
        say(f"  filled in {time.monotonic() - t0:.0f} s (load {load_avg()})")

    def counts_consistent(self):
        """The per-minute counts (migration 004) equal the rows they count."""
        q = self.psql("SELECT (SELECT coalesce(sum(n), 0) FROM log_events_minute) || '|' || "
                      "(SELECT coalesce(sum(n), 0) FROM log_events_hour) || '|' || "
                      "(SELECT count(*) FROM log_events)")
        minute, hour, rows = (int(x) for x in q.split("|"))
        return minute == hour == rows, f"minute {minute:,} hour {hour:,} rows {rows:,}"

    def log_statements(self, on):
        """Every statement's duration in PostgreSQL's log (--statements), or
        no more; returns the log's size, where the next ones start."""
        self.psql("ALTER SYSTEM SET log_min_duration_statement = 0" if on else
                  "ALTER SYSTEM RESET log_min_duration_statement")
        self.psql("SELECT pg_reload_conf()")
        time.sleep(0.5)  # the backends take the new setting at their next command
        return self.r.components["postgres"].obj.log_path.stat().st_size

    def statement_times(self, since):
        """Seconds PostgreSQL spent per kind of statement, by its log from
        offset since: {kind: (count, seconds)}."""
        kinds = (("COPY log_events ", "COPY rows"), ("COPY logpipe_stage_keys", "COPY count keys"),
                 ("INSERT INTO log_events_minute", "add counts"), ("COMMIT", "COMMIT"),
                 ("BEGIN", "BEGIN"), ("logpipe_ids_stored", "probe"), ("ANY($1", "probe"),
                 ("COPY logpipe_stage ", "COPY staging"), ("WITH ins AS", "staging INSERT"))
        out = {}
        with open(self.r.components["postgres"].obj.log_path, errors="replace") as f:
            f.seek(since)
            for line in f:
                i = line.find("duration: ")
                if i < 0:
                    continue
                ms, _, rest = line[i + 10:].partition(" ms")
                kind = next((k for pat, k in kinds if pat in rest), None)
                if kind is None:
                    # psql's \copy spells its COPY its own way.
                    kind = "COPY rows" if re.search(r"copy\s+log_events\b", rest, re.I) else \
                        "other"
                n, t = out.get(kind, (0, 0.0))
                out[kind] = (n + 1, t + float(ms) / 1000)
        return out

    def drain(self, settings=None):
        """The consumer alone stores a backlog of N enriched events; then the
        calibrator, psql \\copy of those rows into log_events again (see the
        module comment).  settings: {LOGPIPE_*: value} for this consumer run
        (the consumer is restarted with them; the next drain takes them off)."""
        n = self.args.drain_events
        label = " ".join(f"{k}={v}" for k, v in (settings or {}).items()) or "defaults"
        say(f"drain ({label}): enricher and consumer stopped, {n:,} events generated at "
            f"{DRAIN_RATE:,}/s into raw-logs")
        self.control("consumer", "stop")
        self.control("enricher", "stop")
        cons = self.r.components["consumer"].obj
        if not hasattr(self, "consumer_env"):
            self.consumer_env = dict(cons.env)
        if not hasattr(self, "consumer_binary"):
            self.consumer_binary = cons.binary
        settings = dict(settings or {})
        bin_dir = settings.pop("LOGPIPE_BIN_DIR", None)
        cons.binary = Path(bin_dir) / "logpipe-consumer" if bin_dir else self.consumer_binary
        cons.env = dict(self.consumer_env, **settings)
        self.gen_start(DRAIN_RATE, max(1, round(n / DRAIN_RATE)))
        sent = self.gen_wait_done(n / DRAIN_RATE + 120)["sent"]
        self.control("enricher", "start")
        deadline = time.monotonic() + 600
        while metrics(self.url("enricher")).get("kafka_messages_sent_total", 0) < sent:
            if time.monotonic() > deadline:
                raise RuntimeError("the enricher did not enrich the backlog in 10 minutes")
            time.sleep(0.2)
        self.control("enricher", "stop")
        say(f"  {sent:,} events enriched; enricher stopped, consumer alone now "
            f"(load {load_avg()})")
        self.psql("VACUUM log_events")
        self.psql("CHECKPOINT")
        since = self.psql("SELECT now()")
        rows0 = self.rows()
        pg = self.r.components["postgres"].obj.pid
        cpu0 = {}
        if self.args.statements:
            log0 = self.log_statements(True)
        self.control("consumer", "start")
        url = self.url("consumer")
        deadline = time.monotonic() + 600
        while (n0 := metrics(url).get("log_events_processed_total", 0)) == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the consumer stored nothing in 10 minutes")
            time.sleep(0.005)
        t0 = time.monotonic()
        m0 = metrics(url)
        stack0 = self.cpu()
        cpu0["consumer"] = cpu_seconds(cons.pid)
        cpu0["postgres"] = cpu_tree(pg)
        while (done := metrics(url).get("log_events_processed_total", 0)) < sent:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the consumer stored only {done:,.0f} of {sent:,}")
            time.sleep(0.01)
        wall = time.monotonic() - t0
        store_rate = (done - n0) / wall
        m1 = metrics(url)
        stack1 = self.cpu()
        stack = ", ".join(f"{n} {(stack1[n] - stack0.get(n, 0)) / wall:.2f}" for n in
                          sorted(stack1, key=lambda n: stack0.get(n, 0) - stack1[n]))
        batches = m1.get("log_event_processing_time_count", 0) - m0.get(
            "log_event_processing_time_count", 0)
        busy = (m1.get("log_event_processing_time_sum", 0) -
                m0.get("log_event_processing_time_sum", 0)) / wall
        cpu_c = (cpu_seconds(cons.pid) - cpu0["consumer"]) / wall
        cpu_p = (cpu_tree(pg) - cpu0["postgres"]) / wall
        # PostgreSQL's CPU by backend: the consumer's store connection(s)
        # (last statement a COMMIT), its probe connection and the rest.
        roles = {}
        for line in self.psql("SELECT pid || '|' || coalesce(backend_type, '') || '|' || "
                              "left(coalesce(query, ''), 30) FROM pg_stat_activity "
                              "WHERE pid <> pg_backend_pid()").splitlines():
            bpid, btype, q = line.split("|", 2)
            role = ("store" if q.startswith(("COMMIT", "ROLLBACK")) else
                    "probe" if "logpipe_ids_stored" in q or "ANY($1" in q else
                    btype if btype != "client backend" else "other")
            roles[role] = roles.get(role, 0.0) + cpu_seconds(int(bpid))
        backends = ", ".join(f"{k} {v:.1f}" for k, v in sorted(roles.items(),
                                                                 key=lambda kv: -kv[1]) if v)
        stored = self.rows() - rows0
        if self.args.statements:
            self.log_statements(False)
            times = self.statement_times(log0)
            say("    PostgreSQL's time by statement (log_min_duration_statement = 0), s: " +
                ", ".join(f"{k} {t:.2f} ({n})" for k, (n, t) in
                          sorted(times.items(), key=lambda kv: -kv[1][1])))
        say(f"  consumer alone: {store_rate:,.0f} events/s ({stored:,} rows, "
            f"CPU consumer {cpu_c:.2f} postgres {cpu_p:.2f} cores, load {load_avg()})")
        say(f"    {batches:.0f} batches ({(done - n0) / max(batches, 1):,.0f} events each), "
            f"the store thread busy {busy:.0%} of the time")
        say(f"    PostgreSQL CPU seconds by backend since the consumer started: {backends}")
        say(f"    CPU during the drain, cores: {stack}")
        self.control("enricher", "start")

        # The calibrator: the same rows, out of log_events and \copy-ed back
        # into it, the table as large as it was before the consumer's drain.
        rows_file = self.base / "rows.copy"
        where = f"WHERE stored_at >= '{since}'"
        self.psql(f"\\copy (SELECT {COLUMNS} FROM log_events {where}) TO '{rows_file}'")
        deleted = int(self.psql(f"WITH d AS (DELETE FROM log_events {where} RETURNING 1) "
                                "SELECT count(*) FROM d"))
        self.psql("VACUUM log_events")
        self.psql("CHECKPOINT")
        if self.args.statements:
            log0 = self.log_statements(True)
        t0, pcpu0 = time.monotonic(), cpu_tree(pg)
        self.psql(f"\\copy log_events ({COLUMNS}) FROM '{rows_file}'")
        copy_s = time.monotonic() - t0
        copy_cpu = (cpu_tree(pg) - pcpu0) / copy_s
        if self.args.statements:
            self.log_statements(False)
            times = self.statement_times(log0)
            say("    \\copy's COPY in PostgreSQL's log, s: " +
                ", ".join(f"{k} {t:.2f} ({n})" for k, (n, t) in times.items()))
        copied = self.rows() - rows0
        copy_rate = copied / copy_s
        say(f"  psql \\copy of the same {copied:,} rows ({deleted:,} deleted first) into "
            f"log_events: {copy_rate:,.0f} rows/s (CPU postgres {copy_cpu:.2f} cores, "
            f"load {load_avg()})")
        if copied != stored or deleted != stored:
            raise RuntimeError(f"the calibrator lost rows: stored {stored:,}, "
                               f"deleted {deleted:,}, copied back {copied:,}")

        # For context (not in the ratio): the old calibrator, a fresh table
        # of the same shape.
        today = self.psql("SELECT (now() AT TIME ZONE 'UTC')::date")
        self.psql(
            "DROP TABLE IF EXISTS bench_copy;"
            "CREATE TABLE bench_copy (LIKE log_events INCLUDING DEFAULTS INCLUDING INDEXES) "
            "PARTITION BY RANGE (ts);"
            "CREATE TABLE bench_copy_default PARTITION OF bench_copy DEFAULT;"
            f"CREATE TABLE bench_copy_today PARTITION OF bench_copy FOR VALUES FROM "
            f"('{today}'::timestamp AT TIME ZONE 'UTC') TO "
            f"(('{today}'::date + 1)::timestamp AT TIME ZONE 'UTC');"
            "CHECKPOINT")
        t0 = time.monotonic()
        self.psql(f"\\copy bench_copy ({COLUMNS}) FROM '{rows_file}'")
        fresh_rate = int(self.psql("SELECT count(*) FROM bench_copy")) / (time.monotonic() - t0)
        say(f"  (context) psql \\copy of them into an empty table of the same shape: "
            f"{fresh_rate:,.0f} rows/s")
        self.psql("DROP TABLE bench_copy")
        rows_file.unlink()
        ok, counts = self.counts_consistent()
        say(f"  per-minute counts {'equal the rows' if ok else 'DIFFER from the rows'}: "
            f"{counts}")
        if not ok:
            raise RuntimeError(f"the per-minute counts differ from the rows: {counts}")
        return {"events": sent, "store_rate": store_rate, "copy_rate": copy_rate,
                "ratio": store_rate / copy_rate, "stored": stored, "copied": copied,
                "fresh_rate": fresh_rate, "label": label, "load": load_avg(),
                "cpu_consumer": cpu_c, "cpu_postgres": cpu_p, "copy_cpu": copy_cpu,
                "busy": busy}


def machine():
    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
            f"{platform.system()} {platform.release()}")


def parse_variant(text):
    """'NAME:svc.key=v,svc.key=v' -> (NAME, {svc: {key: v}})."""
    name, _, spec = text.partition(":")
    out = {}
    for item in filter(None, spec.split(",")):
        key, eq, value = item.partition("=")
        svc, _, key = key.partition(".")
        if not eq or svc not in SERVICES_TUNED or not key:
            raise argparse.ArgumentTypeError(
                f"{item!r}: want SERVICE.KEY=VALUE, SERVICE one of {', '.join(SERVICES_TUNED)}")
        out.setdefault(svc, {})[key] = value
    return name, out


def on_stack(b, work):
    """Starts the stack, returns work()'s result and stops it; the services'
    logs stay behind when work fails."""
    try:
        b.start()
        say(f"stack up in {b.base} (load {load_avg()})")
        result = work()
    except BaseException:
        say(f"pipeline_bench: failed; the services' logs are kept in {b.base / 'logs'}")
        raise
    finally:
        b.stop()
    shutil.rmtree(b.base, ignore_errors=True)
    return result


def main():
    # SIGTERM unwinds like ^C, so that everything started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env_step = os.environ.get("PIPELINE_STEP_S")
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 15 s steps, 2 bisection steps, 100,000 drain events")
    ap.add_argument("--step-s", type=float, default=None, help="seconds per step (60)")
    ap.add_argument("--start", type=int, default=2500, help="first rate of the ladder")
    ap.add_argument("--max-rate", type=int, default=640000)
    ap.add_argument("--bisect", type=int, default=None, help="bisection steps (3)")
    ap.add_argument("--drain-events", type=int,
                    default=int(os.environ.get("PIPELINE_DRAIN_EVENTS", 0)) or None)
    ap.add_argument("--steps", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="run only these rates (comma-separated), each with its e2e "
                         "latency, no ladder and no drain")
    ap.add_argument("--variant", action="append", type=parse_variant, default=[],
                    metavar="NAME:SVC.KEY=V[,SVC.KEY=V]",
                    help="with --steps: settings to run them under, e.g. "
                         "'l20:enricher.kafka.linger_ms=20' (the services named are "
                         "restarted); repeat for A/B, the order turning each round")
    ap.add_argument("--rounds", type=int, default=1, help="with --steps: rounds of the variants")
    ap.add_argument("--warmup-s", type=float, default=5,
                    help="with --steps: unmeasured seconds at the first rate after a restart")
    ap.add_argument("--only", choices=["drain"],
                    help="drain: no ladder; --fill-rows rows made first, then the drain(s)")
    ap.add_argument("--fill-rows", type=int, default=3000000,
                    help="rows in log_events before the drain with --only drain (3,000,000)")
    ap.add_argument("--drain-variant", action="append", default=[], metavar="KEY=VALUE[,...]",
                    help="consumer settings (store.writers=2; bin_dir=DIR: "
                         "DIR/logpipe-consumer) for one more drain after each default "
                         "one; repeatable, one drain per --drain-variant")
    ap.add_argument("--statements", action="store_true",
                    help="each drain: PostgreSQL's time per kind of statement (its log)")
    ap.add_argument("--drain-rounds", type=int, default=1,
                    help="drains (default, then variant) in alternation (1)")
    args = ap.parse_args()
    if args.variant and not args.steps:
        ap.error("--variant needs --steps")
    variants = []
    for arg in args.drain_variant:
        variant = {}
        for kv in arg.split(","):
            k, sep, v = kv.partition("=")
            if not sep:
                ap.error(f"--drain-variant {arg}: KEY=VALUE[,KEY=VALUE...]")
            variant["LOGPIPE_" + k.upper().replace(".", "_")] = v
        variants.append(variant)
    if args.step_s is None:
        args.step_s = float(env_step) if env_step else (15.0 if args.quick else 60.0)
    quick = args.quick or args.step_s < 60
    if args.bisect is None:
        args.bisect = 2 if quick else 3
    if args.drain_events is None:
        args.drain_events = 100000 if quick else 300000

    for b in ("gateway", "producer", "enricher", "consumer", "metadata", "generator"):
        if not (lp.bin_dir() / f"logpipe-{b}").exists():
            say(f"pipeline_bench: {lp.bin_dir()}/logpipe-{b} is missing: build first (make)")
            return 2
    say(f"pipeline bench: {'quick mode, ' if quick else ''}{args.step_s:.0f} s steps; "
        f"load {load_avg()}")
    b = Bench(args)
    t_start = time.monotonic()
    if args.steps:
        rows = on_stack(b, b.variants)
        say("\n== pipeline steps ==")
        say(f"date      {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        say(f"machine   {machine()}")
        say("round variant        rate  stored/s  load   e2e p50/p99 ms  CPU us/event "
            "(generator enricher consumer kafka postgres all)  result")
        for rnd, name, s, lat in rows:
            u = s.get("us_per_event", {})
            say(f"{rnd:5} {name:12} {s['rate']:6} {s['stored_rate']:9,.0f} "
                f"{s['load0'].split()[0]:>5}  {lat['p50']:5.0f} / {lat['p99']:5.0f}  "
                + " ".join(f"{u.get(n, 0):5.1f}" for n in
                           ("generator", "enricher", "consumer", "kafka", "postgres"))
                + f" {sum(u.values()):6.1f}  " + ("pass" if s["ok"] else "FAIL"))
        return 0
    def measure():
        if args.only == "drain":
            sustained, lat = None, None
            b.fill(args.fill_rows)
        else:
            sustained = b.ladder()
            lat = b.e2e(10000)
            say(f"e2e stored_at - received_at at 10,000/s: p50 {lat['p50']:.0f} ms, "
                f"p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms ({lat['n']:,} rows"
                + ("" if lat["step_ok"] else "; that step FAILED") + ")")
        drains = []
        for _ in range(args.drain_rounds):
            drains.append(b.drain())
            for variant in variants:
                drains.append(b.drain(variant))
        return sustained, lat, drains

    sustained, lat, drains = on_stack(b, measure)
    dr = drains[0]

    say("\n== pipeline benchmark ==")
    say(f"date      {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    say(f"machine   {machine()}")
    say("setup     make run's stack (deploy/local/runner.py) on free ports, default settings; "
        + ("drains only" if args.only == "drain" else f"{args.step_s:.0f} s steps")
        + f"; took {time.monotonic() - t_start:.0f} s")
    say(f"load      {load_avg()} (1, 5, 15-minute load average at the end)")
    if args.only == "drain":
        say(f"table     {args.fill_rows:,} rows made with generate_series before the drains")
    for s in b.steps:
        say(f"step {s['rate']:>7,}/s  generated {s['gen_rate']:>9,.0f}/s  stored "
            f"{s['stored_rate']:>9,.0f}/s  lag {s['lag'] if s['lag'] is not None else '?':>7}  "
            f"stored all after {s['store_s']:4.1f} s  load {s['load0'].split()[0]}-"
            f"{s['load1'].split()[0]}  checkpoints {s['checkpoints']}  "
            f"autovacuum/analyze {s['autovacuums']}  "
            + ("pass" if s["ok"] else "FAIL (" + s["why"] + ")"))
    if lat is not None:
        say(f"sustained {sustained or 0:,} events/s (highest passing step)")
        say(f"e2e       stored_at - received_at at 10,000/s: p50 {lat['p50']:.0f} ms, "
            f"p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms")
    for d in drains:
        say(f"drain     ({d['label']}) consumer alone {d['store_rate']:,.0f} events/s, psql "
            f"\\copy of the same {d['copied']:,} rows into log_events {d['copy_rate']:,.0f} "
            f"rows/s: {d['ratio']:.2f}  (into an empty table {d['fresh_rate']:,.0f} rows/s; "
            f"CPU consumer {d['cpu_consumer']:.2f} postgres {d['cpu_postgres']:.2f} cores, "
            f"\\copy's postgres {d['copy_cpu']:.2f}; store thread busy {d['busy']:.0%}; "
            f"load {d['load'].split()[0]})")
    if lat is None:
        say(f"pipeline: drain_only store_vs_copy={dr['ratio']:.2f}")
    else:
        say(f"pipeline: sustained={sustained or 0} e2e_p99_ms={lat['p99']:.0f} "
            f"store_vs_copy={dr['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
