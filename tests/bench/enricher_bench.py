#!/usr/bin/python3
"""enricher_bench.py - one logpipe-enricher's throughput with a warm cache, and
the latency it adds.

    /usr/bin/python3 tests/bench/enricher_bench.py [--events N] [--seconds S]
                                                   [--rates R1,R2,...]
                                                   [--set KEY=VALUE ...] [--split]

What it does, on a private Kafka, Redis and PostgreSQL started with
deploy/local/infra.py (the integration tests' helpers) and unique topics:

  setup       1,000 hosts (with addresses) and 100 services written to
              PostgreSQL, published by the metadata service's start-up
              resync, loaded by the enricher's tier-1 table (warm cache);
  throughput  N events (default 300,000; host by name or by address, known
              services) written to raw-logs while the enricher is stopped,
              then the enricher started: events/s from its first to its last
              acknowledged output (kafka_messages_sent_total), the CPU time
              the enricher spent per event (all its threads, so a figure that
              does not depend on what else the machine runs), and the share
              enriched complete;
  latency     at each rate (default 1,000, 5,000 and 10,000 events/s) for S
              seconds (default 15).  The added latency of an event is the
              broker's append time of its enriched copy minus the broker's
              append time of the event in raw-logs (the bench sets
              message.timestamp.type=LogAppendTime on its topics; 1 ms
              resolution; fetch, enrich, produce with acks=all, all
              included); p50 / p99 / p99.9 / max; and the same as received
              by one light consumer reading every topic at once
              (kafka_relay --stamps).  A peer runs at the same time: kafka_relay.c, a
              plain pass-through consumer -> producer with the enricher's
              Kafka client settings, copies raw-logs to a topic of its own,
              and the same consumer measures its copies the same way; the
              peer is what Kafka alone costs at that moment, so the
              difference is the enricher's own share.  From the enricher's
              histograms: the in-process stage (enrichment_batch_seconds:
              from the record being gathered to its output being
              acknowledged) and the look-up + merge step
              (enrichment_latency_seconds), as bucket upper bounds.

--set KEY=VALUE passes an enricher setting (repeatable), e.g.
--set kafka.linger_ms=0; the peer is given the same fetch wait, linger
and Nagle settings.  --split leaves the enriched topics at CreateTime,
so the enricher's latency is divided at its produce call.

Prints a report with the machine; nothing is written to the repository.
Builds build/bin/logpipe-{enricher,metadata} if missing. Loopback only;
everything it starts is stopped on exit.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))
import infra as lp  # noqa: E402

HOSTS, SERVICES = 1000, 100


def say(*a):
    print(*a, flush=True)


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def hist_quantile(m, name, q):
    """Upper bound of the bucket holding quantile q of histogram name."""
    buckets = sorted((float(k.split('le="')[1].rstrip('"}')), v) for k, v in m.items()
                     if k.startswith(name + "_bucket{") and "+Inf" not in k)
    total = m.get(name + "_count", 0)
    for le, count in buckets:
        if total and count >= q * total:
            return le
    return float("inf")


def pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


def cpu_seconds(pid):
    """User + system CPU time of a process, all threads, in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid):
    """CPU seconds per thread name of a process (threads of one name summed)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            out[name] = out.get(name, 0) + cpu_seconds(f"{pid}/task/{tid}")
        except OSError:
            pass
    return out


def build_tool(tmp, name):
    out = tmp / name
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "rdkafka", "jansson"],
                           capture_output=True, text=True, check=True).stdout.split()
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-o", str(out),
                    str(REPO / "tests" / "bench" / f"{name}.c")] + flags, check=True)
    return str(out)


def summary(vals):
    vals = sorted(vals)
    return {"n": len(vals), "p50": pct(vals, 0.50), "p99": pct(vals, 0.99),
            "p999": pct(vals, 0.999), "max": vals[-1] if vals else float("nan")}


def fmt(r):
    return (f"p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, p99.9 {r['p999']:.2f} ms, "
            f"max {r['max']:.2f} ms")


def event_line(i, stamp=False):
    """One normalised event for a known host and service, as JSON text."""
    h = i % HOSTS
    ev = {"id": str(uuid.uuid4()), "schema_version": 1,
          "timestamp": "2026-01-15T14:23:45.123Z", "received_at": "2026-01-15T14:23:45.200Z",
          "level": "INFO", "message": f"request {i} served in {i % 97} ms",
          "service": f"svc-{i % SERVICES}", "attributes": {"path": "/api/v1/items"}}
    if i % 2:
        ev["host"] = f"host-{h}"
    else:
        ev["source_ip"] = f"10.{h // 250}.{h % 250}.1"
    text = json.dumps(ev)
    if stamp:
        text = text[:-1] + ', "sent_us": {{NOW_US}}}'
    return text


class Relay:
    """The peer process, stopped like the services on exit."""

    name = "kafka_relay"

    def __init__(self, proc):
        self.proc = proc

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300000)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--rates", default="1000,5000,10000")
    ap.add_argument("--split", action="store_true",
                    help="leave the enriched topics at CreateTime and split the "
                         "enricher's latency at its produce call")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an enricher setting (repeatable)")
    args = ap.parse_args()
    settings = dict(kv.split("=", 1) for kv in args.set)

    for b in ("enricher", "metadata"):
        if not (REPO / "build" / "bin" / f"logpipe-{b}").exists():
            subprocess.run(["make", "--no-print-directory", f"build/bin/logpipe-{b}"],
                           cwd=REPO, check=True)
    tmp = Path(tempfile.mkdtemp(prefix="enrbench-"))
    os.chmod(tmp, 0o711)
    tool = build_tool(tmp, "kafkatool")
    relay_tool = build_tool(tmp, "kafka_relay")
    inf = lp.Infra(tmp)
    procs = []
    try:
        say(f"starting Kafka, Redis and PostgreSQL in {tmp} ...")
        inf.start(timeout=120)
        brokers = inf.kafka.bootstrap
        suffix = uuid.uuid4().hex[:8]
        topics = {role: f"{t}-{suffix}" for role, t in lp.TOPIC_ROLES.items()}
        inf.kafka.create_topics({topics[r]: lp.TOPICS[t] for r, t in lp.TOPIC_ROLES.items()},
                                compacted={topics["metadata"]})
        peer_topic = f"bench-peer-{suffix}"
        inf.kafka.create_topics({peer_topic: lp.TOPICS["enriched-logs-complete"]},
                                compacted=set())
        # Records carry the broker's append time: the latency below is read
        # from the broker's clock, not from when a busy consumer got around
        # to polling.
        appended = [topics["raw"], peer_topic]
        if not args.split:
            appended += [topics["complete"], topics["partial"]]
        subprocess.run([relay_tool, "--log-append-time", brokers] + appended,
                       check=True, timeout=60)
        ports = {n: lp.free_port() for n in lp.SERVICES}

        # ---- setup: metadata in PostgreSQL, resynced to the topic, loaded by tier 1 ----
        lp.psql(inf.postgres.dsn, f"""
            INSERT INTO host_metadata (hostname, ip_address, datacenter, environment, cost_center)
            SELECT 'host-' || i, '10.' || (i / 250) || '.' || (i % 250) || '.1',
                   'dc-' || (i % 4), 'production', 'cc-' || (i % 10)
            FROM generate_series(0, {HOSTS - 1}) AS i;
            INSERT INTO service_metadata (name, team, owner, tier)
            SELECT 'svc-' || i, 'team-' || (i % 8), 'owner-' || i, 'tier-' || (i % 3)
            FROM generate_series(0, {SERVICES - 1}) AS i;""")

        def start(name, **extra):
            env = lp.service_env(name, ports, inf, topics=topics, log_level="info",
                                 extra=dict(extra, **(settings if name == "enricher" else {})))
            p = lp.ServiceProc(name, env, tmp / "logs" / f"{name}.log", ports[name],
                               cwd=tmp / name)
            p.start()
            procs.append(p)
            p.wait_ready(20)
            return p

        start("metadata")
        enr = start("enricher")
        deadline = time.monotonic() + 30
        while metrics(ports["enricher"]).get('enrichment_table_records{kind="host"}') != HOSTS:
            if time.monotonic() > deadline:
                raise RuntimeError("tier 1 did not load the hosts")
            time.sleep(0.2)
        say(f"tier 1 holds {HOSTS} hosts and {SERVICES} services")
        enr.stop()

        # ---- throughput ----
        n = args.events
        say(f"writing {n} events to {topics['raw']} ...")
        text = "".join(event_line(i) + "\n" for i in range(n))
        r = subprocess.run([tool, "produce", brokers, topics["raw"]], input=text,
                           capture_output=True, text=True, timeout=600)
        assert f"acked {n} failed 0" in r.stdout, r.stdout + r.stderr
        del text
        enr.start()
        enr.wait_ready(20)
        cpu0 = cpu_seconds(enr.pid)
        threads0 = thread_cpu(enr.pid)
        first = last = None
        deadline = time.monotonic() + 600
        while True:
            m = metrics(ports["enricher"])
            sent = m.get("kafka_messages_sent_total", 0)
            t = time.monotonic()
            if sent > 0 and first is None:
                first = (t, sent)
            if sent >= n:
                last = (t, sent)
                break
            if t > deadline:
                raise RuntimeError(f"only {sent} of {n} enriched in time")
            time.sleep(0.05)
        rate = (last[1] - first[1]) / (last[0] - first[0])
        cpu_us = (cpu_seconds(enr.pid) - cpu0) / n * 1e6
        threads = {k: (v - threads0.get(k, 0)) / n * 1e6 for k, v in thread_cpu(enr.pid).items()}
        say("CPU per event by thread: " + ", ".join(
            f"{k} {v:.1f} us" for k, v in sorted(threads.items(), key=lambda kv: -kv[1])
            if v >= 0.1))
        m = metrics(ports["enricher"])
        complete = m.get("enrichment_successes_total", 0)
        say(f"CPU: {cpu_us:.1f} us per event, all threads of the enricher "
            f"(= {1e6 / cpu_us:,.0f} events/s per busy core)")
        say(f"throughput: {rate:,.0f} events/s "
            f"({n} events, {complete / n:.1%} complete, "
            f"enrichment_latency_seconds p99 <= {hist_quantile(m, 'enrichment_latency_seconds', 0.99) * 1e6:.0f} us)")

        # ---- latency at fixed rates, with the pass-through peer alongside ----
        results = []
        offset = n
        relay = subprocess.Popen(
            [relay_tool, brokers, topics["raw"], peer_topic,
             settings.get("kafka.fetch_wait_ms", "10"), settings.get("kafka.linger_ms", "5"),
             settings.get("kafka.nodelay", "true")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(Relay(relay))
        ready = relay.stderr.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"the peer did not get ready: {ready}")
        # librdkafka logs to stderr: keep reading it so the peer never blocks.
        threading.Thread(target=relay.stderr.read, daemon=True).start()
        for target in [int(x) for x in args.rates.split(",") if x]:
            count = int(target * args.seconds)
            before = metrics(ports["enricher"])
            # The consumer writes to a file, never to a pipe: a pipe nobody
            # reads until the end fills within a second and then blocks the
            # consumer, which would then see every copy seconds late.
            # It is kafka_relay --stamps, which prints four fields per
            # record rather than the record as JSON, so that measuring costs
            # little CPU.  The events are generated before the clock starts
            # for the same reason.
            lines = [event_line(offset + i, stamp=True) + "\n" for i in range(count)]
            cfile = open(tmp / f"stamps-{target}.txt", "w+")
            cons = subprocess.Popen(
                [relay_tool, "--stamps", brokers,
                 ",".join([topics["raw"], peer_topic, topics["complete"], topics["partial"]]),
                 str(int((args.seconds + 60) * 1000)), "4000"],
                stdout=cfile, stderr=subprocess.PIPE, text=True)
            # Produce only once every partition is being fetched, so that no
            # copy is read late because its partition started late.
            ready = cons.stderr.readline()
            if ready.strip() != "ready":
                raise RuntimeError(f"consumer did not get ready: {ready}")
            threading.Thread(target=cons.stderr.read, daemon=True).start()
            prod = subprocess.Popen([tool, "produce", brokers, topics["raw"]],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            t0 = time.monotonic()
            done = 0
            while done < count:
                due = min(count, int((time.monotonic() - t0) * target))
                if due > done:
                    prod.stdin.write("".join(lines[done:due]))
                    prod.stdin.flush()
                    done = due
                time.sleep(0.002)
            achieved = count / (time.monotonic() - t0)
            pout, perr = prod.communicate(timeout=120)
            assert "failed 0" in pout, pout + perr
            offset += count
            cons.wait(timeout=args.seconds + 120)
            cfile.seek(0)
            cout = cfile.read()
            cfile.close()
            os.unlink(cfile.name)
            # Per event and copy: the broker's append time (ms) and when the
            # consumer received it (us).
            seen = {"raw": {}, "out": {}, "peer": {}}
            for line in cout.splitlines():
                k, ident, ts, recv = line.split()
                kind = ("raw", "peer")[int(k)] if int(k) < 2 else "out"
                seen[kind][ident] = (int(ts), int(recv))
            raw = seen["raw"]
            del lines

            def lat(kind, field, scale):
                copies = seen[kind]
                return summary((copies[i][field] - raw[i][field]) / scale
                               for i in copies if i in raw)

            added, peer = lat("out", 0, 1), lat("peer", 0, 1)
            added_recv, peer_recv = lat("out", 1, 1000), lat("peer", 1, 1000)
            # When the slowest copies were appended: one stall or many.
            t_first = min(v[0] for v in raw.values()) if raw else 0
            worst = sorted(((seen["out"][i][0] - raw[i][0], raw[i][0] - t_first)
                            for i in seen["out"] if i in raw), reverse=True)
            stalls = sorted({round(t / 100) / 10 for d, t in worst[:max(1, len(worst) // 100)]})
            say(f"    slowest 1% of enriched copies: raw appended at +{stalls[:12]} s "
                f"into the run" if stalls else "    no copies")
            if args.split:
                out = seen["out"]
                say("    --split: raw appended -> enricher's produce call (CreateTime): "
                    + fmt(added) + "\n    --split: produce call -> received: "
                    + fmt(summary((out[i][1] / 1000 - out[i][0]) for i in out)))
            after = metrics(ports["enricher"])
            diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            res = dict(added, target=target, achieved=achieved, sent=count, peer=peer,
                       load=open("/proc/loadavg").read().split()[0],
                       retries=diff.get("enrichment_batch_retries_total", 0),
                       hist_p99_us=hist_quantile(diff, "enrichment_latency_seconds", 0.99) * 1e6,
                       stage_p50=hist_quantile(diff, "enrichment_batch_seconds", 0.50) * 1e3,
                       stage_p99=hist_quantile(diff, "enrichment_batch_seconds", 0.99) * 1e3)
            results.append(res)
            say(f"rate {target:>6}/s (achieved {achieved:,.0f}/s, {added['n']} of {count} "
                f"enriched and {peer['n']} relayed copies matched, load {res['load']}, "
                f"{res['retries']:.0f} batch retries):\n"
                f"    append time raw -> append time of the copy (1 ms resolution):\n"
                f"      enricher            {fmt(added)}\n"
                f"      pass-through peer   {fmt(peer)}\n"
                f"    as received by the measuring consumer:\n"
                f"      enricher            {fmt(added_recv)}\n"
                f"      pass-through peer   {fmt(peer_recv)}\n"
                f"    in process: gathered-to-acknowledged p50 <= {res['stage_p50']:.1f} ms, "
                f"p99 <= {res['stage_p99']:.1f} ms; look-up+merge p99 <= {res['hist_p99_us']:.0f} us")

        cpu = "unknown"
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        say("\n== enricher benchmark ==")
        say(f"date      {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        say(f"machine   {platform.node()}: {os.cpu_count()} CPUs ({cpu}), "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
            f"{platform.system()} {platform.release()}")
        say("setup     single-node Kafka (KRaft), 6 raw partitions, acks=all, everything on "
            "loopback; one enricher, "
            + (", ".join(f"{k}={v}" for k, v in settings.items()) or "default settings"))
        say(f"load      {open('/proc/loadavg').read().split()[0]} (1-minute load average at the end)")
        say(f"warm-cache throughput   {rate:,.0f} events/s; CPU {cpu_us:.1f} us/event "
            f"(= {1e6 / cpu_us:,.0f} events/s per busy core)")
        for res in results:
            say(f"added latency @ {res['target']:>6}/s   p50 {res['p50']:.2f} ms   "
                f"p99 {res['p99']:.2f} ms   p99.9 {res['p999']:.2f} ms   "
                f"(peer p50 {res['peer']['p50']:.2f} ms, p99 {res['peer']['p99']:.2f} ms; "
                f"load {res['load']}; in process: gathered to acknowledged p99 <= "
                f"{res['stage_p99']:.1f} ms, look-up + merge p99 <= {res['hist_p99_us']:.0f} us)")
    finally:
        for p in reversed(procs):
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001 - best effort
                say(f"stopping {p.name}: {e}")
        inf.stop()


if __name__ == "__main__":
    main()
