#!/usr/bin/python3
"""gateway_ab.py - paired A/B of two logpipe-gateway builds: CPU per event.

    /usr/bin/python3 tests/bench/gateway_ab.py DIR_A DIR_B [ROUNDS] [SECONDS] [CONNS]

DIR_A and DIR_B hold a logpipe-gateway each (copy build/bin aside before a
change, say).  Starts a private Kafka and Redis (deploy/local/infra.py), one
logpipe-producer from build/bin, and the two gateways in front of it,
configured as ingest_bench.sh configures its gateway (auth, a rate limit in
Redis far above the load, backpressure thresholds out of reach).  Then, for
ROUNDS rounds (default 6), for each connection count of CONNS (default
"256,32"), wrk -t2 POSTs the ingest bench's ~170-byte event to /api/logs
through A and through B for SECONDS each (default 5), A first in odd rounds
and B first in even ones, so that both meet the same load.

Each line: requests/s and the gateway's CPU per accepted event: the run time
of all its threads from /proc/PID/task/*/schedstat (nanoseconds, not clock
ticks), over the run.  The producer is shared, so its state (Kafka's
answers, librdkafka's batches) is the same for both.  Last lines, per
connection count: the medians of A and B and B/A per round.  On a shared
machine the load moves the absolute figures by a third or more; the ratio
of a pair is what to read.
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))
import infra as lp  # noqa: E402

KEY = "bench-key-0123456789"
BODY = ('{"level":"INFO","message":"benchmark event with a typical length of text",'
        '"service":"bench","host":"web-1"}')


def cpu_ns(pid):
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    dirs = {"A": sys.argv[1], "B": sys.argv[2]}
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    secs = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    conns = [int(c) for c in (sys.argv[5] if len(sys.argv) > 5 else "256,32").split(",")]
    for d in dirs.values():
        if not os.access(Path(d) / "logpipe-gateway", os.X_OK):
            print(f"gateway_ab: no {d}/logpipe-gateway", file=sys.stderr)
            return 2
    base = Path(tempfile.mkdtemp(prefix="logpipe-gwab-"))
    started = []
    try:
        kafka, redis = lp.Kafka(base), lp.Redis(base)
        started += [kafka, redis]
        kafka.start()
        redis.start()
        redis.wait_ready(15)
        kafka.wait_ready(120)
        addrs = {"kafka.brokers": kafka.bootstrap, "redis.url": redis.url, "pg.dsn": None}
        ports = {n: lp.free_port() for n in lp.SERVICES}

        def start(name, extra, pm, bin_dir=None, tag=""):
            env = lp.service_env(name, pm, addrs, log_level="warn", extra=extra)
            p = lp.ServiceProc(name, env, base / f"{name}{tag}.log", pm[name], bin_dir,
                               cwd=base / f"{name}{tag}")
            p.start()
            started.append(p)
            p.wait_ready(30)
            return p

        start("producer", {"http.threads": 288}, ports)
        gws = {}
        for v in "AB":
            pm = dict(ports, gateway=lp.free_port())
            extra = {"auth.keys": f"{KEY}:bench:ingest,read",
                     "http.listen": f"127.0.0.1:{pm['gateway']}",
                     "ratelimit.rate": 100000000, "backpressure.lag_normal": 10**12,
                     "backpressure.lag_critical": 10**12}
            gws[v] = (start("gateway", extra, pm, dirs[v], "_" + v), pm["gateway"])
        script = base / "req.lua"
        script.write_text('wrk.method = "POST"\nwrk.body = [=[' + BODY + ']=]\n'
                          'wrk.headers["Content-Type"] = "application/json"\n'
                          f'wrk.headers["X-API-Key"] = "{KEY}"\n')

        def wrk(port, c, s):
            return subprocess.run(["wrk", "-t2", f"-c{c}", f"-d{s}s", "-s", str(script),
                                   f"http://127.0.0.1:{port}/api/logs"],
                                  capture_output=True, text=True, timeout=s + 60).stdout

        for _, port in gws.values():  # warm-up: connections, pools, series
            wrk(port, 32, 2)
        print(f"gateway_ab: A={dirs['A']} B={dirs['B']}, {rounds} rounds of {secs} s, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        res = {}
        for r in range(rounds):
            for c in conns:
                for v in ("AB" if r % 2 == 0 else "BA"):
                    p, port = gws[v]
                    c0 = cpu_ns(p.pid)
                    out = wrk(port, c, secs)
                    c1 = cpu_ns(p.pid)
                    m = re.search(r"(\d+) requests in", out)
                    n = int(m.group(1)) if m else 0
                    non = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
                    ok = n - (int(non.group(1)) if non else 0)
                    us = (c1 - c0) / 1000 / max(ok, 1)
                    res.setdefault((c, v), []).append(us)
                    print(f"round {r + 1} c{c} {v}: {ok / secs:8.0f} req/s  gateway {us:5.2f} "
                          f"us/event  non-2xx {n - ok}  load {os.getloadavg()[0]:.1f}",
                          flush=True)
        for c in conns:
            a, b = res[(c, "A")], res[(c, "B")]
            ratios = [y / x for x, y in zip(a, b)]
            print(f"c{c}: A median {statistics.median(a):.2f} us  B median "
                  f"{statistics.median(b):.2f} us  B/A per round "
                  f"{' '.join(f'{x:.3f}' for x in ratios)}  median "
                  f"{statistics.median(ratios):.3f}", flush=True)
        return 0
    finally:
        for p in reversed(started):
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001
                print(f"gateway_ab: stopping {getattr(p, 'name', p)}: {e}", file=sys.stderr)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
