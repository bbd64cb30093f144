#!/usr/bin/env python3
"""producer_kafka_bench.py - the producer's Kafka client settings, measured.

Usage: /usr/bin/python3 tests/bench/producer_kafka_bench.py [--secs N] [--rounds R]
           [--variant NAME=key=value,key=value ...] [--no-submit]
   or  make bench BENCH=producer_kafka

On one private single-node Kafka (deploy/local/infra.py, as the ingest
bench), each variant of the producer's client settings (kafka.linger_ms,
kafka.nodelay, kafka.batch_size, kafka.max_in_flight) in turn, ROUNDS times,
the variants in a different order each round (interleaved, so that the
machine's load drifts over all of them alike):

  wrk -t2 POST /api/logs straight to logpipe-producer, c32 and c256, and
  POST /api/logs/batch of 100 events, c32 (CivetWeb, a worker thread per
  request in flight: http.threads 288);
  build/producer/tests/bench_submit: producer_submit in-process, 32 and 256
  single events in flight from one thread (what an event-driven front gets).

With --gateway (a private Redis too), each variant's producer also sits
behind a logpipe-gateway (auth, rate limit far above the load, as the ingest
bench) and the same three loads go through it: gw_c32, gw_c256,
gw_batch100_c32, with the CPU of both processes per event.

Each round starts with a calibrator: kcat -P of 100,000 events (idempotent,
acks=all, linger.ms=5) on the same broker.  Each row: accepted events/s,
p50/p99 ms, the producer's CPU µs per accepted event, events the topic
gained (>= accepted, "ok"), and the 1-minute load average.  Last, a
summary: per variant and target, the median of the rounds.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "local"))
import infra as lp  # noqa: E402

BODY = ('{"level":"INFO","message":"benchmark event with a typical length of text",'
        '"service":"bench","host":"web-1"}')
BATCH = "[" + ",".join([BODY] * 100) + "]"
TOPIC = "raw-logs"
GW_KEY = "bench-key-0123456789"
TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_VARIANTS = [
    "l0=kafka.linger_ms=0",
    "l1=kafka.linger_ms=1",
    "l2=kafka.linger_ms=2",
    "l5=kafka.linger_ms=5",
    "l0nd=kafka.linger_ms=0,kafka.nodelay=true",
    "l1nd=kafka.linger_ms=1,kafka.nodelay=true",
    "l5nd=kafka.linger_ms=5,kafka.nodelay=true",
    "l1if1=kafka.linger_ms=1,kafka.max_in_flight=1",
    "l1b64k=kafka.linger_ms=1,kafka.batch_size=65536",
]


def say(*a):
    print(*a, flush=True)


def ticks(pid):
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    except (OSError, IndexError, ValueError):
        return 0


def load1():
    return os.getloadavg()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--secs", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variant", action="append", default=None,
                    help="NAME=key=value[,key=value...] (repeatable)")
    ap.add_argument("--no-submit", action="store_true", help="skip the in-process rows")
    ap.add_argument("--gateway", action="store_true",
                    help="also run the loads through a gateway in front of the producer")
    ap.add_argument("--bin-dir", default=str(ROOT / "build" / "bin"))
    args = ap.parse_args()
    variants = []
    for v in args.variant or DEFAULT_VARIANTS:
        name, _, kv = v.partition("=")
        variants.append((name, dict(x.split("=", 1) for x in kv.split(",") if x)))
    submit_bin = Path(args.bin_dir).parent / "producer" / "tests" / "bench_submit"
    if not args.no_submit and not submit_bin.is_file():
        sys.exit(f"producer_kafka_bench: build {submit_bin} first "
                 "(make build/producer/tests/bench_submit), or pass --no-submit")
    for tool in ("wrk", "kcat"):
        if not shutil.which(tool):
            sys.exit(f"producer_kafka_bench: {tool} is missing (make deps)")

    base = Path(tempfile.mkdtemp(prefix="logpipe-pkb-"))
    os.chmod(base, 0o755)
    secs = args.secs
    results = {}  # (variant, target) -> [(rate, p50, p99, cpu)]
    kafka = None
    redis = None
    kafkatool = base / "kafkatool"

    def topic_count():
        return int(subprocess.run([str(kafkatool), "count", kafka.bootstrap, TOPIC],
                                  capture_output=True, text=True, check=True).stdout.split()[0])

    def wrk(port, path, body, conns, dsecs=None, headers=None):
        script = base / "req.lua"
        script.write_text('wrk.method = "POST"\nwrk.body = [=[' + body + ']=]\n'
                          'wrk.headers["Content-Type"] = "application/json"\n' +
                          "".join(f'wrk.headers["{k}"] = "{v}"\n'
                                  for k, v in (headers or {}).items()))
        out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{dsecs or secs}s", "--latency", "-s",
                              str(script), f"http://127.0.0.1:{port}{path}"],
                             capture_output=True, text=True, timeout=secs + 60).stdout

        def lat(label):
            m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
            return (float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
                    if m else float("nan"))
        total = re.search(r"(\d+) requests in ([\d.]+)(ms|s)", out)
        n = int(total.group(1)) if total else 0
        dur = (float(total.group(2)) / (1000 if total.group(3) == "ms" else 1)) if total else secs
        non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        bad = int(non2xx.group(1)) if non2xx else 0
        return n - bad, bad, dur, lat("50"), lat("99")

    def record(variant, target, rate, p50, p99, cpu, landed, events, bad):
        results.setdefault((variant, target), []).append((rate, p50, p99, cpu))
        check = ("ok" if landed >= events else f"LOST {events - landed}") if events else "-"
        say(f"  {variant:7s} {target:12s} {rate:9.0f} ev/s  p50 {p50:7.2f} ms  "
            f"p99 {p99:8.2f} ms  cpu {cpu:6.1f} us/ev  non-2xx {bad}  topic +{landed} ({check})"
            f"  load {load1():.1f}")

    try:
        kafka = lp.Kafka(base)
        kafka.start()
        if args.gateway:
            redis = lp.Redis(base)
            redis.start()
            redis.wait_ready(15)
        kafka.wait_ready(120)
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "rdkafka", "jansson"],
                               capture_output=True, text=True, check=True).stdout.split()
        subprocess.run(["cc", "-O2", "-o", str(kafkatool),
                        str(ROOT / "tests/bench/kafkatool.c")] + flags, check=True)
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        say(f"producer Kafka settings bench, {time.strftime('%Y-%m-%d %H:%M')} UTC, commit {rev}, "
            f"{os.cpu_count()} CPUs, load average {load1():.1f}; {secs} s per target, "
            f"{args.rounds} rounds, {len(variants)} variants")
        data = base / "kcat.in"
        data.write_text((BODY + "\n") * 100000)
        for rnd in range(args.rounds):
            order = variants if rnd % 2 == 0 else list(reversed(variants))
            if rnd >= 2:
                order = order[rnd % len(order):] + order[:rnd % len(order)]
            before = topic_count()
            t = time.monotonic()
            with open(data, "rb") as f:
                subprocess.run(["kcat", "-P", "-b", kafka.bootstrap, "-t", TOPIC, "-X",
                                "enable.idempotence=true", "-X", "acks=all", "-X",
                                "linger.ms=5"], stdin=f, check=True, timeout=600)
            dur = time.monotonic() - t
            say(f"round {rnd + 1}: calibrator kcat -P {100000 / dur:.0f} ev/s "
                f"(topic +{topic_count() - before}), load {load1():.1f}")
            results.setdefault(("kcat", "calibrator"), []).append((100000 / dur, 0, 0, 0))
            for name, kv in order:
                port = lp.free_port()
                extra = {"http.threads": 288}
                extra.update(kv)
                env = lp.service_env("producer", {"producer": port},
                                     {"kafka.brokers": kafka.bootstrap, "redis.url": None,
                                      "pg.dsn": None}, log_level="warn", extra=extra)
                wd = base / f"p-{name}-{rnd}"
                proc = lp.ServiceProc("producer", env, base / f"producer-{name}-{rnd}.log", port,
                                      bin_dir_=args.bin_dir, cwd=wd)
                proc.start()
                gw = None
                try:
                    proc.wait_ready(30)
                    pids = [proc.pid]
                    loads = [("", port, {})]
                    if args.gateway:
                        gport = lp.free_port()
                        genv = lp.service_env(
                            "gateway", {"gateway": gport, "producer": port},
                            {"kafka.brokers": kafka.bootstrap, "redis.url": redis.url,
                             "pg.dsn": None}, log_level="warn",
                            extra={"auth.keys": f"{GW_KEY}:bench:ingest,read",
                                   "ratelimit.rate": 100000000,
                                   "backpressure.lag_normal": 10**12,
                                   "backpressure.lag_critical": 10**12})
                        gw = lp.ServiceProc("gateway", genv, base / f"gateway-{name}-{rnd}.log",
                                            gport, bin_dir_=args.bin_dir,
                                            cwd=base / f"g-{name}-{rnd}")
                        gw.start()
                        gw.wait_ready(30)
                        pids.append(gw.pid)
                        loads.append(("gw_", gport, {"X-API-Key": GW_KEY}))
                    for prefix, lport, hdr in loads:
                        # warm-up: metadata, connections
                        wrk(lport, "/api/logs", BODY, 8, 2, hdr)
                        for target, path, body, conns, per in (
                                ("c32", "/api/logs", BODY, 32, 1),
                                ("c256", "/api/logs", BODY, 256, 1),
                                ("batch100_c32", "/api/logs/batch", BATCH, 32, 100)):
                            t0, before = sum(ticks(x) for x in pids), topic_count()
                            ok, bad, dur, p50, p99 = wrk(lport, path, body, conns, None, hdr)
                            cpu_ticks = sum(ticks(x) for x in pids) - t0
                            time.sleep(1)  # deliveries of requests wrk cut off may still land
                            events = ok * per
                            record(name, prefix + target, events / dur, p50, p99,
                                   1e6 * cpu_ticks / TCK / events if events else 0,
                                   topic_count() - before, events, bad)
                finally:
                    if gw:
                        gw.stop()
                    proc.stop()
                if args.no_submit:
                    continue
                senv = dict(os.environ, **env)
                senv["LOGPIPE_HTTP_LISTEN"] = f"127.0.0.1:{lp.free_port()}"
                senv["LOGPIPE_SPOOL_DIR"] = str(base / f"s-{name}-{rnd}")
                senv["LOGPIPE_HTTP_THREADS"] = "2"
                for window in (32, 256):
                    before = topic_count()
                    out = subprocess.run([str(submit_bin), str(secs), str(window), "one"],
                                         env=senv, capture_output=True, text=True,
                                         timeout=secs + 60).stdout
                    m = re.search(r"([\d.]+) ev/s\s+p50 ([\d.]+) ms\s+p99 ([\d.]+) ms\s+"
                                  r"cpu ([\d.]+) us/ev\s+non-2xx (\d+)\s+\((\d+) requests", out)
                    if not m:
                        say(f"  {name:7s} submit_w{window}: no result: {out.strip()!r}")
                        continue
                    rate, p50, p99, cpu = (float(m.group(i)) for i in range(1, 5))
                    record(name, f"submit_w{window}", rate, p50, p99, cpu,
                           topic_count() - before, 0, int(m.group(5)))
        say("")
        say("summary: median over the rounds (events/s, p99 ms, CPU us/event of the producer, "
            "+ the gateway in gw_ rows)")
        targets = ["c32", "c256", "batch100_c32"] + ([] if args.no_submit else
                                                      ["submit_w32", "submit_w256"])
        if args.gateway:
            targets += ["gw_c32", "gw_c256", "gw_batch100_c32"]
        say(f"  {'variant':8s}" + "".join(f"{t:>28s}" for t in targets))
        for name, _ in variants:
            cells = []
            for t in targets:
                r = results.get((name, t), [])
                if not r:
                    cells.append(f"{'-':>28s}")
                    continue
                cells.append(f"{statistics.median(x[0] for x in r):>10.0f} "
                             f"{statistics.median(x[2] for x in r):>8.1f} "
                             f"{statistics.median(x[3] for x in r):>7.1f}")
            say(f"  {name:8s}" + "".join(cells))
        cal = [x[0] for x in results.get(("kcat", "calibrator"), [])]
        say(f"  kcat calibrator per round: {', '.join(f'{c:.0f}' for c in cal)} ev/s; "
            f"load average {load1():.1f} at the end")
    finally:
        if redis:
            try:
                redis.stop()
            except Exception as e:  # noqa: BLE001
                print(f"producer_kafka_bench: stopping redis: {e}", file=sys.stderr)
        if kafka:
            try:
                kafka.stop()
            except Exception as e:  # noqa: BLE001
                print(f"producer_kafka_bench: stopping kafka: {e}", file=sys.stderr)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
