#!/bin/sh
# spool_bench.sh - the producer's disk spool under wrk: how many events per
# second it answers 202 while Kafka is down (every one fdatasync'd, with
# group commit), and how fast the spool drains once Kafka is back.
#
# Usage: tests/bench/spool_bench.sh [SECONDS [CONNECTIONS]]
#        (defaults 15 s, 32 connections; wrk uses 2 threads)
#
# Steps: a producer is started against a Kafka port where nothing listens
# yet (kafka.timeout_ms 1000, so the breaker opens within a few seconds);
# wrk POSTs one event per request for SECONDS (the warm-up until the breaker
# is open is not measured); then Kafka (KRaft, deploy/local/infra.py) starts
# on that port and the drain is timed from its first drained event to the
# last, by polling logpipe_spool_drained_total.  Prints one table and the
# spool's fsync count (appends per fdatasync shows the group commit).
# Needs: make, wrk.  Everything is stopped at the end.
set -eu
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null 2>&1 || {
	echo "spool_bench: wrk is missing (apt-get install wrk)" >&2
	exit 2
}
[ -x "${LOGPIPE_BIN_DIR:-build/bin}/logpipe-producer" ] || {
	echo "spool_bench: build first (make)" >&2
	exit 2
}
exec timeout -k 30 1200 /usr/bin/python3 - "$@" <<'PY'
import os, re, shutil, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

sys.path.insert(0, "deploy/local")
import infra as lp  # noqa: E402

secs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
conns = int(sys.argv[2]) if len(sys.argv) > 2 else 32
BODY = ('{"level":"INFO","message":"benchmark event with a typical length of text",'
        '"service":"bench","host":"web-1"}')

base = Path(tempfile.mkdtemp(prefix="logpipe-spoolbench-"))
os.chmod(base, 0o755)
started = []


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("logpipe_spool_") or line.startswith("circuit_breaker_state"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def wrk(port, seconds):
    script = base / "req.lua"
    script.write_text('wrk.method = "POST"\nwrk.body = [[' + BODY + ']]\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency", "-s",
                          str(script), f"http://127.0.0.1:{port}/api/logs"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout

    def lat(label):
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50": lat("50"), "p99": lat("99"),
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


try:
    kport = lp.free_port()
    kafka = lp.Kafka(base, port=kport)
    ports = {n: lp.free_port() for n in lp.SERVICES}
    addrs = {"kafka.brokers": kafka.bootstrap, "redis.url": None, "pg.dsn": None}
    env = lp.service_env("producer", ports, addrs, log_level="info",
                         extra={"http.threads": 64, "kafka.timeout_ms": 1000})
    prod = lp.ServiceProc("producer", env, base / "producer.log", ports["producer"],
                          cwd=base / "producer")
    prod.start()
    started.append(prod)
    prod.wait_ready(30)
    port = ports["producer"]

    # Warm-up: the first deliveries time out, the breaker opens.
    wrk(port, 4)
    m0 = metrics(port)
    assert m0.get('circuit_breaker_state{name="kafka"}') == 1, m0
    down = wrk(port, secs)
    m1 = metrics(port)
    written = m1["logpipe_spool_written_total"] - m0["logpipe_spool_written_total"]
    appends_per_sync = m1["logpipe_spool_written_total"] / max(1, m1["logpipe_spool_fsyncs_total"])
    pending = m1["logpipe_spool_events"]

    started.append(kafka)
    t_start = time.monotonic()
    kafka.start()
    kafka.wait_ready(120)
    t_ready = time.monotonic()
    first = last = None
    prev = metrics(port)["logpipe_spool_drained_total"]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        m = metrics(port)
        d = m["logpipe_spool_drained_total"]
        now = time.monotonic()
        if d > prev and first is None:
            first = (now, prev)
        prev = d
        if m["logpipe_spool_events"] == 0:
            last = (now, d)
            break
        time.sleep(0.05)
    if first is None or last is None:
        raise SystemExit("spool_bench: the spool did not drain within 600 s")
    drained = last[1] - first[1]
    drain_s = max(last[0] - first[0], 1e-3)

    print(f"\nspool_bench: {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, "
          f"wrk -t2 -c{conns}, {secs} s, spool in {base}")
    print(f"{'phase':34} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    print(f"{'POST /api/logs, Kafka down (spool)':34} {down['rps']:>10.0f} {down['p50']:>8.2f} "
          f"{down['p99']:>8.2f} {down['non2xx']:>8d}")
    print(f"{'drain to Kafka once it is back':34} {drained / drain_s:>10.0f}")
    print(f"\n{written:.0f} events spooled in {secs} s, {appends_per_sync:.1f} appends per "
          f"fdatasync; {pending:.0f} drained in {drain_s:.1f} s "
          f"(Kafka took {t_ready - t_start:.1f} s to start)")
finally:
    for p in reversed(started):
        try:
            p.stop()
        except Exception as e:  # noqa: BLE001 - best effort
            print(f"spool_bench: stopping {getattr(p, 'name', p)}: {e}", file=sys.stderr)
    shutil.rmtree(base, ignore_errors=True)
PY
