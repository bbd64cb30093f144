#!/usr/bin/python3
"""protocols_bench.py - the three goal figures of issue 16 (the agents'
protocols), in one run, next to a calibrator from the same run.

    make bench BENCH=protocols
    /usr/bin/python3 tests/bench/protocols_bench.py [--secs S] [--rounds N]
            [--syslog-msgs N] [--syslog-runs N] [--tail-s S] [--tail-rate R]

Part 1 (Kafka and Redis of deploy/local/infra.py, logpipe-producer with
syslog.listen, logpipe-gateway with an API key and limits far above the
load, as tests/bench/ingest_bench.sh; no enricher or consumer):

  kcat      the calibrator: kcat -P (acks=all, idempotent, linger.ms=5)
            pushing the batch benchmark's event as fast as it can: what one
            client gets from this broker on this machine right now.
  otlp_micro
            tests/bench/otlp_micro.c on the same two bodies: the producer's
            CPU per record of each stage of the OTLP path and of the batch
            path's scanner, in-process (thread CPU clock).
  otlp vs batch
            wrk -t2 -c32, keep-alive, S seconds per run (default 8),
            alternately (N rounds, default 2): POST /api/logs/batch of 100
            events (JSON) and POST /v1/logs of the same 100 events as an
            OTLP ExportLogsServiceRequest (application/x-protobuf: one
            resource with service.name and host.name, 100 records with
            severityNumber 9 / severityText INFO and a string body), both
            through the gateway.  Accepted events/s = 2xx answers x 100 /
            time; the raw topic's end offsets must have grown by at least
            that much (checked per run).  otlp_vs_batch = the sum of OTLP
            events over the sum of OTLP time, divided by the same for the
            batch (each round's ratio is printed too).
  syslog    TCP into Kafka: M messages (default 200,000) of about 150 bytes
            over two connections, as fast as the receiver reads them, newline
            framed and octet-counted (RFC 6587), R runs each (default 3).
            The clock runs from the first byte sent until the raw topic's
            end offsets have grown by M.  syslog_tcp = the slowest run.

Part 2 (the stack `make run` starts, deploy/local/runner.py as a library on
free ports, as tests/bench/pipeline_bench.py: Kafka, Redis, PostgreSQL and
the six services, with enricher and consumer; only ratelimit.rate is raised
to 100,000 so that 1,000 events/s from one client is not throttled):

  tail      a client on the gateway's GET /api/logs/tail?service=<unique>
            (its own process) while another process sends R events/s
            (default 1,000) through the gateway for S seconds (default 20):
            POST /api/logs/batch of B events (default 10, so 100 requests/s;
            --tail-batch 1 sends single-event POST /api/logs), from enough
            keep-alive connections (a thread each) that a common schedule,
            not the answers, sets the pace.  Each event carries its send
            time (wall clock, taken just before the request is written) in
            attributes.sent; the tail client notes the wall clock when the
            SSE frame's data line arrives.  tail_p99_ms = p99 of arrival -
            send over every event received; also printed: the same from the
            event's received_at (the producer's clock, ms), how many of the
            accepted events arrived, `dropped` notices, and the CPU (cores)
            each component used during the send, and the split at the row's
            stored_at (the storing transaction's start): send -> stored_at
            (producer, Kafka, enricher, consumer batching) and stored_at ->
            SSE frame (commit, the ring, the consumer's and gateway's
            streaming).

The machine's load average is printed with every part: on the shared
2-CPU VM it moves the figures a lot; repeat the run.  Last line:

    protocols: otlp_vs_batch=R syslog_tcp=N tail_p99_ms=N
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
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
sys.path.insert(0, str(REPO / "tests" / "bench"))
import infra as lp  # noqa: E402

KEY = "bench-key-0123456789"
TOPIC = "raw-logs"
MESSAGE = "benchmark event with a typical length of text"
EVENT = {"level": "INFO", "message": MESSAGE, "service": "bench", "host": "web-1"}
PER_REQUEST = 100


def say(*a):
    print(*a, flush=True)


def load_avg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def ticks(pid):
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    except (OSError, IndexError, ValueError):
        return 0


TCK = os.sysconf("SC_CLK_TCK")


# ---- OTLP protobuf, written from the spec's field numbers ------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_len(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def pb_varint(num, v):
    return varint(num << 3) + varint(v)


def pb_str_value(s):            # AnyValue.string_value = 1
    return pb_len(1, s.encode())


def pb_kv(k, v):                # KeyValue: key = 1, value = 2
    return pb_len(1, k.encode()) + pb_len(2, pb_str_value(v))


def otlp_request(n):
    """An ExportLogsServiceRequest of n records equal to EVENT."""
    resource = pb_len(1, pb_kv("service.name", EVENT["service"])) + \
        pb_len(1, pb_kv("host.name", EVENT["host"]))          # Resource.attributes = 1
    record = pb_varint(2, 9) + pb_len(3, b"INFO") + \
        pb_len(5, pb_str_value(MESSAGE))                        # LogRecord 2, 3, 5
    scope = b"".join(pb_len(2, record) for _ in range(n))      # ScopeLogs.log_records = 2
    rl = pb_len(1, resource) + pb_len(2, scope)                 # ResourceLogs 1, 2
    return pb_len(1, rl)                                        # request.resource_logs = 1


# ---- part 1 ------------------------------------------------------------------------

class Part1:
    def __init__(self, base, args):
        self.base = base
        self.args = args
        self.started = []
        self.kafkatool = base / "kafkatool"

    def count(self):
        return int(subprocess.run([str(self.kafkatool), "count", self.brokers, TOPIC],
                                  capture_output=True, text=True, check=True).stdout.split()[0])

    def start(self):
        kafka, redis = lp.Kafka(self.base), lp.Redis(self.base)
        self.started += [kafka, redis]
        kafka.start()
        redis.start()
        redis.wait_ready(15)
        kafka.wait_ready(120)
        self.brokers = kafka.bootstrap
        kafka.create_topics(dict(lp.TOPICS))  # logpipe's partition counts
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "rdkafka", "jansson"],
                               capture_output=True, text=True, check=True).stdout.split()
        subprocess.run(["cc", "-O2", "-o", str(self.kafkatool), "tests/bench/kafkatool.c"] +
                       flags, check=True, cwd=REPO)
        addrs = {"kafka.brokers": self.brokers, "redis.url": redis.url, "pg.dsn": None}
        self.ports = {n: lp.free_port() for n in lp.SERVICES}
        self.sport = lp.free_port()
        self.procs = {}
        for name, extra in (
            ("producer", {"http.threads": 288, "syslog.listen": f"127.0.0.1:{self.sport}"}),
            ("gateway", {"auth.keys": f"{KEY}:bench:ingest,read",
                         "ratelimit.rate": 100000000, "backpressure.lag_normal": 10**12,
                         "backpressure.lag_critical": 10**12}),
        ):
            env = lp.service_env(name, self.ports, addrs, log_level="warn", extra=extra)
            p = lp.ServiceProc(name, env, self.base / f"{name}.log", self.ports[name],
                               cwd=self.base / name)
            p.start()
            self.started.append(p)
            p.wait_ready(30)
            self.procs[name] = p

    def stop(self):
        for p in reversed(self.started):
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001
                print(f"protocols_bench: stopping {getattr(p, 'name', p)}: {e}",
                      file=sys.stderr)

    # kcat: the broker's ceiling for one client, the calibrator.
    def kcat(self):
        n = 300000
        data = self.base / "kcat.in"
        data.write_text((json.dumps(EVENT, separators=(",", ":")) + "\n") * n)
        before = self.count()
        t = time.monotonic()
        with open(data, "rb") as f:
            k = subprocess.run(["kcat", "-P", "-b", self.brokers, "-t", TOPIC, "-X",
                                "enable.idempotence=true", "-X", "acks=all", "-X",
                                "linger.ms=5"], stdin=f, capture_output=True, timeout=600)
        dur = time.monotonic() - t
        landed = self.count() - before
        rate = n / dur if k.returncode == 0 else 0.0
        say(f"kcat        {rate:9.0f} ev/s  ({n} events in {dur:.1f} s, topic +{landed} "
            f"{'ok' if landed >= n else 'LOST'})  [calibrator]  load {load_avg()}")
        return rate

    def wrk(self, path, body_file, ctype, conns):
        secs = self.args.secs
        script = self.base / "req.lua"
        script.write_text(f'local f = assert(io.open("{body_file}", "rb"))\n'
                          'wrk.body = f:read("*a")\nf:close()\nwrk.method = "POST"\n'
                          f'wrk.headers["Content-Type"] = "{ctype}"\n'
                          f'wrk.headers["X-API-Key"] = "{KEY}"\n')
        out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--latency", "-s",
                              str(script), f"http://127.0.0.1:{self.ports['gateway']}{path}"],
                             capture_output=True, text=True, timeout=secs + 60).stdout

        def lat(label):
            m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
            return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)] \
                if m else float("nan")
        total = re.search(r"(\d+) requests in ([\d.]+)(ms|s)", out)
        n = int(total.group(1)) if total else 0
        dur = float(total.group(2)) / (1000 if total and total.group(3) == "ms" else 1) \
            if total else secs
        non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        bad = int(non2xx.group(1)) if non2xx else 0
        return n - bad, bad, dur, lat("50"), lat("99")

    def http_run(self, label, path, body_file, ctype):
        pids = {k: p.pid for k, p in self.procs.items()}
        t0 = {k: ticks(p) for k, p in pids.items()}
        before = self.count()
        ok, bad, dur, p50, p99 = self.wrk(path, body_file, ctype, 32)
        cpu = {k: ticks(p) - t0[k] for k, p in pids.items()}
        time.sleep(1)  # deliveries of requests cut off when wrk stopped may still land
        landed = self.count() - before
        events = ok * PER_REQUEST
        rate = events / dur if dur else 0.0
        check = "ok" if landed >= events else f"LOST {events - landed}"
        per = "  ".join(f"{k} {1e6 * v / TCK / events:5.1f} us/ev" for k, v in cpu.items()) \
            if events else "-"
        say(f"{label:11s} {rate:9.0f} ev/s  p50 {p50:7.2f} ms  p99 {p99:8.2f} ms  "
            f"non-2xx {bad}  topic +{landed} ({check})  {per}  load {load_avg()}")
        return events, dur, landed >= events and bad == 0

    def perf(self, what, name):
        """perf record -g of the processes `what` (names) until the returned
        stop function is called; nothing without --perf."""
        if not self.args.perf:
            return lambda: None
        out = Path(self.args.perf) / f"{name}.perf.data"
        pids = ",".join(str(self.procs[w].pid) for w in what)
        p = subprocess.Popen(["perf", "record", "-g", "-o", str(out), "-p", pids],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def stop():
            p.send_signal(signal.SIGINT)
            p.wait(60)
            say(f"perf: {out} ({what})")
        return stop

    def otlp_vs_batch(self):
        batch = self.base / "batch.json"
        batch.write_text("[" + ",".join([json.dumps(EVENT, separators=(",", ":"))]
                                        * PER_REQUEST) + "]")
        otlp = self.base / "otlp.pb"
        otlp.write_bytes(otlp_request(PER_REQUEST))
        # One request of each first: both accepted whole.
        gw = f"http://127.0.0.1:{self.ports['gateway']}"
        for path, f, ct in (("/api/logs/batch", batch, "application/json"),
                            ("/v1/logs", otlp, "application/x-protobuf")):
            req = urllib.request.Request(gw + path, data=f.read_bytes(), method="POST",
                                         headers={"Content-Type": ct, "X-API-Key": KEY})
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
                assert r.status in (200, 202), (path, r.status, body)
                if path == "/v1/logs":
                    assert body == b"", f"partialSuccess in the reply: {body!r}"
        say(f"bodies: batch {batch.stat().st_size} bytes, OTLP protobuf "
            f"{otlp.stat().st_size} bytes, {PER_REQUEST} events each")
        # CPU per record of the producer's stages, in-process (tests/bench/otlp_micro.c).
        micro = self.base / "otlp_micro"
        pb_objs = [str(x) for x in (REPO / "build" / "gen").rglob("*.pb-c.o")]
        subprocess.run(["cc", "-O2", "-Icommon/include", "-Iproducer", "-Ibuild/gen", "-o",
                        str(micro), "tests/bench/otlp_micro.c", "build/producer/otlp.o"] +
                       pb_objs + ["build/liblogpipe.a", "-lprotobuf-c", "-lz", "-ljansson",
                                  "-luuid", "-lcrypto", "-lm", "-pthread"], check=True, cwd=REPO)
        say(subprocess.run([str(micro), str(otlp), str(batch), "1000"], capture_output=True,
                           text=True).stdout.rstrip())
        sums = {"batch": [0, 0.0], "otlp": [0, 0.0]}
        ratios, sound = [], True
        for rnd in range(self.args.rounds):
            ev_b, d_b, ok_b = self.http_run(f"batch #{rnd + 1}", "/api/logs/batch", batch,
                                            "application/json")
            stop = self.perf(["producer", "gateway"], "otlp") if rnd == 0 else (lambda: None)
            ev_o, d_o, ok_o = self.http_run(f"otlp #{rnd + 1}", "/v1/logs", otlp,
                                            "application/x-protobuf")
            stop()
            sound &= ok_b and ok_o
            sums["batch"][0] += ev_b
            sums["batch"][1] += d_b
            sums["otlp"][0] += ev_o
            sums["otlp"][1] += d_o
            if ev_b:
                ratios.append((ev_o / d_o) / (ev_b / d_b))
        rb = sums["batch"][0] / sums["batch"][1]
        ro = sums["otlp"][0] / sums["otlp"][1]
        ratio = ro / rb if rb else 0.0
        say(f"otlp/batch  {ratio:.2f} (batch {rb:.0f} ev/s, otlp {ro:.0f} ev/s; per round "
            + ", ".join(f"{r:.2f}" for r in ratios) + ")"
            + ("" if sound else "  SOME RUN LOST EVENTS OR HAD NON-2xx"))
        return ratio

    def syslog(self):
        total = self.args.syslog_msgs
        nconn = 2
        per = total // nconn
        total = per * nconn

        def msg(k, i):
            return (b"<134>1 2026-12-06T23:00:00.000Z web-%d bench %d - [meta@1 seq=\"%d\"] "
                    b"benchmark message over syslog with a typical length" % (k, k, i))

        def framed(k, n, octet):
            if octet:
                return b"".join(b"%d %s" % (len(m), m) for m in (msg(k, i) for i in range(n)))
            return b"".join(msg(k, i) + b"\n" for i in range(n))

        with socket.create_connection(("127.0.0.1", self.sport)) as s:  # warm-up
            s.sendall(framed(99, 1000, False))
        deadline = time.monotonic() + 60
        base = self.count()
        while self.count() - base < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        rates = []
        prod = self.procs["producer"].pid
        stop = self.perf(["producer"], "syslog")
        for octet in (False, True):
            bufs = [framed(k, per, octet) for k in range(nconn)]
            for run in range(self.args.syslog_runs):
                time.sleep(1)
                before = self.count()
                cpu0 = ticks(prod)
                t0 = time.monotonic()

                def send(buf):
                    with socket.create_connection(("127.0.0.1", self.sport)) as s:
                        s.sendall(buf)
                threads = [threading.Thread(target=send, args=(b,)) for b in bufs]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                sent_s = time.monotonic() - t0
                deadline = time.monotonic() + 300
                while (landed := self.count() - before) < total and \
                        time.monotonic() < deadline:
                    time.sleep(0.02)
                el = time.monotonic() - t0
                cpu = (ticks(prod) - cpu0) / TCK
                rate = landed / el
                rates.append(rate)
                say(f"syslog {'octet' if octet else 'newline':7s} #{run + 1} {rate:9.0f} msg/s  "
                    f"({landed} in Kafka after {el:.2f} s, sent in {sent_s:.2f} s; producer "
                    f"{1e6 * cpu / max(landed, 1):.1f} us/msg)"
                    + ("" if landed >= total else "  INCOMPLETE") + f"  load {load_avg()}")
        stop()
        with urllib.request.urlopen(f"{self.procs['producer'].url}/metrics", timeout=10) as r:
            m = {ln.split()[0]: ln.split()[1] for ln in r.read().decode().splitlines()
                 if ln.startswith("syslog_messages_")}
        say("syslog counters: " + ", ".join(f"{k} {v}" for k, v in sorted(m.items())))
        rates.sort()
        say(f"syslog tcp  min {rates[0]:.0f}, median {rates[len(rates) // 2]:.0f}, "
            f"max {rates[-1]:.0f} msg/s over {len(rates)} runs")
        return rates[0]


# ---- part 2: tail latency on make run's stack -----------------------------------------

TAIL_CLIENT = r"""
import datetime, http.client, json, sys, time
port, query, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
c.request("GET", "/api/logs/tail?" + query, headers={"Accept": "text/event-stream"})
r = c.getresponse()
assert r.status == 200, (r.status, r.read(300))
dropped = 0
with open(out, "w") as f:
    event = ""
    while True:
        line = r.fp.readline()
        if not line:
            break
        now = time.time()
        if line.startswith(b": connected"):
            print("connected", flush=True)
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            d = json.loads(line[5:])
            if event == "dropped":
                dropped += d["count"]
                f.write(f"dropped {d['count']}\n")
            else:
                sent = float(d["attributes"]["sent"])
                try:
                    rcv = datetime.datetime.fromisoformat(
                        d["received_at"].replace("Z", "+00:00")).timestamp()
                except (KeyError, ValueError):
                    rcv = float("nan")
                f.write(f"{d['id']} {now - sent:.6f} {now - rcv:.6f} {now:.6f}\n")
            f.flush()
            event = ""
"""

TAIL_SENDER = r"""
import http.client, json, sys, threading, time
port, svc, rate, secs, batch = (int(sys.argv[1]), sys.argv[2], float(sys.argv[3]),
                                float(sys.argv[4]), int(sys.argv[5]))
# Each request waits for Kafka's acknowledgement (tens of ms, more on a busy
# machine, a quarter of a second): enough connections that the schedule, not
# the answers, sets the pace.
reqs = rate / batch
nthreads = min(128, max(4, int(reqs / 4)))
acc, bad = [0] * nthreads, [0] * nthreads
codes = {}
t0 = time.monotonic() + 0.2
def run(k):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    per = reqs / nthreads
    i = 0
    while True:
        due = t0 + (i + k / nthreads) / per
        if due - t0 >= secs:
            break
        d = due - time.monotonic()
        if d > 0:
            time.sleep(d)
        sent = "%.6f" % time.time()
        evs = [{"message": "tail latency probe %d-%d-%d" % (k, i, j), "service": svc,
                "level": "INFO", "host": "web-1", "attributes": {"sent": sent}}
               for j in range(batch)]
        if batch == 1:
            c.request("POST", "/api/logs", body=json.dumps(evs[0]),
                      headers={"Content-Type": "application/json"})
        else:
            c.request("POST", "/api/logs/batch", body=json.dumps(evs),
                      headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status == 202:
            acc[k] += batch  # the batch answers 202 only when every event was accepted
        else:
            bad[k] += batch
            codes[r.status] = codes.get(r.status, 0) + 1
        i += 1
ts = [threading.Thread(target=run, args=(k,)) for k in range(nthreads)]
for t in ts: t.start()
for t in ts: t.join()
el = time.monotonic() - t0
print(json.dumps({"accepted": sum(acc), "refused": sum(bad), "codes": codes, "seconds": el}),
      flush=True)
"""


def part2(args):
    import pipeline_bench as pb  # the runner's stack on free ports
    os.environ["LOGPIPE_RATELIMIT_RATE"] = "100000"
    ns = argparse.Namespace(step_s=60)
    b = pb.Bench(ns)
    tmp = b.base
    try:
        b.start()
        gw = b.r.components["gateway"].obj.port
        svc = f"tailbench-{uuid.uuid4().hex[:8]}"
        # Warm up the path (enricher metadata lookups, consumer batches).
        subprocess.run([sys.executable, "-c", TAIL_SENDER, str(gw), svc + "-warm", "200", "3",
                        str(args.tail_batch)],
                       capture_output=True, timeout=60)
        out = tmp / "tail.txt"
        client = subprocess.Popen([sys.executable, "-c", TAIL_CLIENT, str(gw),
                                   f"service={svc}", str(out)], stdout=subprocess.PIPE,
                                  text=True)
        line = client.stdout.readline()
        if line.strip() != "connected":
            raise RuntimeError(f"tail client: {line!r}")
        load0 = load_avg()
        cpu0 = b.cpu()
        sender = subprocess.run([sys.executable, "-c", TAIL_SENDER, str(gw), svc,
                                 str(args.tail_rate), str(args.tail_s), str(args.tail_batch)],
                                capture_output=True, text=True, timeout=args.tail_s + 120)
        res = json.loads(sender.stdout.strip().splitlines()[-1])
        cpu1 = b.cpu()
        deadline = time.monotonic() + 20

        def received():
            try:
                return [ln.split() for ln in out.read_text().splitlines()]
            except OSError:
                return []
        while time.monotonic() < deadline:
            got = received()
            if sum(1 for x in got if x[0] != "dropped") >= res["accepted"]:
                break
            time.sleep(0.2)
        client.send_signal(signal.SIGTERM)
        client.wait(10)
        got = received()
        lats = sorted(float(x[1]) * 1000 for x in got if x[0] != "dropped")
        # From the producer's received_at (ms) on: the pipeline's part.
        pipe = sorted(float(x[2]) * 1000 for x in got if x[0] != "dropped" and len(x) > 2
                      and x[2] != "nan")
        dropped = sum(int(x[1]) for x in got if x[0] == "dropped")
        ids = {x[0] for x in got if x[0] != "dropped"}

        def pct(p, v=lats):
            return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")
        cpu = " ".join(f"{k} {(cpu1[k] - cpu0.get(k, 0)) / res['seconds']:.2f}"
                       for k in sorted(cpu1))
        say(f"tail        sent {res['accepted']} accepted ({res['refused']} refused) in "
            f"{res['seconds']:.1f} s {res['codes']} = {res['accepted'] / res['seconds']:.0f} ev/s; "
            f"tail got {len(lats)} ({len(ids)} distinct), dropped notices {dropped}; "
            f"latency p50 {pct(0.50):.0f} ms  p90 {pct(0.90):.0f} ms  p99 {pct(0.99):.0f} ms  "
            f"max {lats[-1] if lats else float('nan'):.0f} ms  (from received_at: p50 "
            f"{pct(0.5, pipe):.0f} ms, p99 {pct(0.99, pipe):.0f} ms); {args.tail_batch} events "
            f"per request; load {load0} -> {load_avg()}")
        say(f"tail cpu (cores during the send): {cpu}")
        # Where the time goes: the row's stored_at (the storing transaction's
        # start, PostgreSQL's clock = this machine's) against the event's send
        # time and the frame's arrival.
        arrival = {x[0]: float(x[3]) for x in got if x[0] != "dropped" and len(x) > 3}
        sent_at = {x[0]: float(x[3]) - float(x[1]) for x in got if x[0] != "dropped" and len(x) > 3}
        rows = b.psql("SELECT id, extract(epoch FROM stored_at) FROM log_events "
                      f"WHERE service = '{svc}'")
        stored = {ln.split("|")[0]: float(ln.split("|")[1]) for ln in rows.splitlines() if ln}
        to_store = sorted((stored[k] - sent_at[k]) * 1000 for k in stored if k in sent_at)
        to_tail = sorted((arrival[k] - stored[k]) * 1000 for k in stored if k in arrival)
        say(f"tail split  sent -> stored_at p50 {pct(0.5, to_store):.0f} ms, p99 "
            f"{pct(0.99, to_store):.0f} ms; stored_at -> SSE frame p50 {pct(0.5, to_tail):.0f} ms, "
            f"p99 {pct(0.99, to_tail):.0f} ms ({len(stored)} rows)")
        return pct(0.99)
    finally:
        b.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--secs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--syslog-msgs", type=int, default=200000)
    ap.add_argument("--syslog-runs", type=int, default=3)
    ap.add_argument("--tail-s", type=float, default=20.0)
    ap.add_argument("--tail-rate", type=float, default=1000.0)
    ap.add_argument("--tail-batch", type=int, default=10,
                    help="events per request of the tail load (1: POST /api/logs)")
    ap.add_argument("--perf", default="", help="a directory: perf record -g the producer "
                    "(and gateway) during the first OTLP run and the syslog runs")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: http,syslog,tail")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    for tool in ("wrk", "kcat"):
        if not shutil.which(tool):
            sys.exit(f"protocols_bench: {tool} is missing (make deps)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=REPO).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, cwd=REPO).stdout.strip()
    say(f"protocols benchmark, {time.strftime('%Y-%m-%d %H:%M')}, commit {commit}"
        f"{' (with uncommitted changes)' if dirty else ''}, {os.cpu_count()} CPUs, "
        f"load average {load_avg()}")
    ratio = syslog = p99 = float("nan")
    kcat = float("nan")
    if not {"http", "syslog"} <= skip:
        base = Path(tempfile.mkdtemp(prefix="logpipe-protocols-"))
        os.chmod(base, 0o755)
        p1 = Part1(base, args)
        try:
            p1.start()
            kcat = p1.kcat()
            if "http" not in skip:
                ratio = p1.otlp_vs_batch()
            if "syslog" not in skip:
                syslog = p1.syslog()
        finally:
            p1.stop()
            shutil.rmtree(base, ignore_errors=True)
    if "tail" not in skip:
        p99 = part2(args)
    say(f"calibrator: kcat={kcat:.0f} ev/s; load average {load_avg()} at the end")
    say(f"protocols: otlp_vs_batch={ratio:.2f} syslog_tcp={syslog:.0f} tail_p99_ms={p99:.0f}")


if __name__ == "__main__":
    main()
