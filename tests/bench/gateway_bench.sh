#!/bin/sh
# gateway_bench.sh - the gateway's own cost next to nginx's, under wrk:
# the same requests straight to the upstream, through logpipe-gateway, and
# through Debian's nginx as a plain reverse proxy in front of the same
# upstream, taking turns in one run on the same machine.
#
# Usage: tests/bench/gateway_bench.sh [SECONDS [CONNECTIONS [ROUNDS]]]
#        (defaults 10 s, 32 connections, 3 rounds; wrk uses 2 threads)
#   or   make bench BENCH=gateway
#
# Three tables: POST /api/logs (one event), POST /api/logs/batch (ten
# events), both answered by the producer after Kafka acknowledges, and GET
# /api/v1/generator/status, a cheap upstream answer, so that the proxies'
# own cost is not hidden behind the producer's wait for Kafka (when
# logpipe-generator is built).  Each row gives req/s, p50 and p99 and the
# CPU time per request of the process wrk talks to (the upstream itself for
# "direct", the gateway, or nginx's master and workers), the figure least
# moved by whatever else loads the machine.
#
# Starts its own Kafka and Redis (deploy/local/infra.py) on free loopback
# ports, a producer, a gateway (auth on, a key sent by wrk; rate limits in
# Redis with a limit far above the load, so every request takes the whole
# path: key hash, limiter, proxy, access log) and nginx with a private
# configuration (keep-alive upstream pool, access log to a file like the
# gateway's).  The targets take turns for ROUNDS rounds, each round starting
# with the next target, so that drift hits them alike; the tables show the
# median round of each, then the paired figures (each proxy against the
# direct run of its own round, median over rounds).  Needs: make, wrk,
# nginx (installed with apt-get when missing: wrk, nginx-light).  Everything
# is stopped at the end.
set -eu
cd "$(dirname "$0")/../.."
PATH="$PATH:/usr/sbin"
# The load tool and the peer proxy are the benchmark's own needs, not the
# project's: installed here, once, like make deps installs the rest.
if ! command -v wrk >/dev/null 2>&1 || ! command -v nginx >/dev/null 2>&1; then
	echo "gateway_bench: installing wrk and nginx-light" >&2
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
		wrk nginx-light >/dev/null 2>&1 ||
		{ $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install \
			-y -qq --no-install-recommends wrk nginx-light >/dev/null; } || true
fi
for tool in wrk nginx; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "gateway_bench: $tool is missing (apt-get install wrk nginx-light)" >&2
		exit 2
	}
done
[ -x build/bin/logpipe-gateway ] && [ -x build/bin/logpipe-producer ] || {
	echo "gateway_bench: build first (make)" >&2
	exit 2
}
exec timeout -k 30 1800 /usr/bin/python3 - "$@" <<'PY'
import os, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, "deploy/local")
import infra as lp  # noqa: E402

secs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
conns = int(sys.argv[2]) if len(sys.argv) > 2 else 32
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
KEY = "bench-key-0123456789"
BODY = ('{"level":"INFO","message":"benchmark event with a typical length of text",'
        '"service":"bench","host":"web-1"}')
BATCH = "[" + ",".join([BODY] * 10) + "]"

base = Path(tempfile.mkdtemp(prefix="logpipe-bench-"))
os.chmod(base, 0o755)
started = []


def stop_all():
    for p in reversed(started):
        try:
            p.stop()
        except Exception as e:  # noqa: BLE001 - best effort
            print(f"gateway_bench: stopping {getattr(p, 'name', p)}: {e}", file=sys.stderr)


class Nginx(lp._Proc):
    name = "nginx"

    def __init__(self, d, port, upstream_port, generator_port):
        super().__init__()
        self.d, self.port, self.log_path = d, port, d / "nginx.out"
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
        (d / "nginx.conf").write_text(f"""
worker_processes auto;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # The services are CivetWeb, a thread per connection that closes idle
    # connections after 500 ms: keep fewer idle connections than its threads
    # (2 workers x 16 < 64) and let them go before it does.
    upstream producer {{ server 127.0.0.1:{upstream_port}; keepalive 16; keepalive_timeout 400ms; }}
    upstream generator {{ server 127.0.0.1:{generator_port}; keepalive 16; keepalive_timeout 400ms; }}
    server {{
        listen 127.0.0.1:{port};
        location /api/v1/generator/ {{
            proxy_pass http://generator;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
        location / {{
            proxy_pass http://producer;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
""")

    def _argv(self):
        return [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(self.d), "-c",
                str(self.d / "nginx.conf")]


def wait_http(port, path, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            import http.client
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            if c.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"gateway_bench: nothing answers on port {port}")


def cpu_ticks(pids):
    """utime + stime of the processes (every thread), in clock ticks."""
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def with_children(pid):
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return [pid] + [int(k) for k in kids]


def wrk(port, headers, path, body, pids):
    script = base / "req.lua"
    hdr = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    post = ('wrk.method = "POST"\nwrk.body = [=[' + body + ']=]\n'
            'wrk.headers["Content-Type"] = "application/json"\n') if body else ""
    script.write_text(post + hdr)
    t0 = cpu_ticks(pids)
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--latency", "-s",
                         str(script), f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=secs + 60).stdout
    ticks = cpu_ticks(pids) - t0

    def lat(label):
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = re.search(r"(\d+) requests in", out)
    n = int(total.group(1)) if total else 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "p50": lat("50"), "p99": lat("99"),
            "cpu": 1e6 * ticks / os.sysconf("SC_CLK_TCK") / n if n and pids else float("nan"),
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "errors": errors.group(0) if errors else ""}


try:
    inf_kafka = lp.Kafka(base)
    inf_redis = lp.Redis(base)
    started += [inf_kafka, inf_redis]
    inf_kafka.start()
    inf_redis.start()
    inf_redis.wait_ready(15)
    inf_kafka.wait_ready(90)
    addrs = {"kafka.brokers": inf_kafka.bootstrap, "redis.url": inf_redis.url, "pg.dsn": None}
    ports = {n: lp.free_port() for n in lp.SERVICES}
    procs = {}
    for name, extra in (
        ("producer", {"http.threads": 64}),
        ("gateway", {"auth.keys": f"{KEY}:bench:ingest,read", "http.listen": f"127.0.0.1:{ports['gateway']}",
                     "ratelimit.rate": 100000000, "backpressure.lag_normal": 10**12,
                     "backpressure.lag_critical": 10**12}),
    ):
        env = lp.service_env(name, ports, addrs, log_level="info", extra=extra)
        p = lp.ServiceProc(name, env, base / f"{name}.log", ports[name], cwd=base / name)
        p.start()
        started.append(p)
        p.wait_ready(30)
        procs[name] = p
    nginx_port = lp.free_port()
    ng = Nginx(base / "nginx", nginx_port, ports["producer"], ports["generator"])
    ng.start()
    started.append(ng)
    wait_http(nginx_port, "/health/live")
    have_gen = (lp.bin_dir() / "logpipe-generator").is_file()
    if have_gen:
        env = lp.service_env("generator", ports, addrs, log_level="warn",
                             extra={"http.threads": 64})
        p = lp.ServiceProc("generator", env, base / "generator.log", ports["generator"],
                           cwd=base / "generator")
        p.start()
        started.append(p)
        p.wait_ready(30)
        procs["generator"] = p

    cpu = subprocess.run(["sh", "-c", "nproc; grep -m1 'model name' /proc/cpuinfo"],
                         capture_output=True, text=True).stdout.split("\n")
    machine = (f"{cpu[0]} CPUs ({cpu[1].split(':')[-1].strip() if len(cpu) > 1 else '?'}), "
               f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f} "
               "at the start")

    def bench(title, upstream, path, body):
        targets = [
            ("direct", ports[upstream], {}, [procs[upstream].pid]),
            ("gateway", ports["gateway"], {"X-API-Key": KEY}, [procs["gateway"].pid]),
            ("nginx", nginx_port, {}, with_children(ng.pid)),
        ]
        for _, port, h, _ in targets:  # warm-up: connections, Kafka metadata, batches
            wrk_warm = ["wrk", "-t1", "-c4", "-d2s", f"http://127.0.0.1:{port}/health/live"]
            subprocess.run(wrk_warm, capture_output=True, timeout=30)
        rows = {label: [] for label, _, _, _ in targets}
        for r in range(rounds):
            # Each round starts with the next target, so that a drifting
            # machine (Kafka warming up, a neighbour's load) favours none.
            for label, port, h, pids in targets[r % 3:] + targets[:r % 3]:
                res = wrk(port, h, path, body, pids)
                rows[label].append(res)
                print(f"{title} round {r + 1}: {label:8s} {res['rps']:9.0f} req/s  "
                      f"p50 {res['p50']:7.2f} ms  p99 {res['p99']:7.2f} ms  "
                      f"front CPU {res['cpu']:5.1f} us/req  "
                      f"non-2xx {res['non2xx']} {res['errors']}", flush=True)
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        load = os.getloadavg()[0]
        print(f"\n{title}: wrk -t2 -c{conns} -d{secs}s, median of {rounds} rounds; {machine}, "
              f"load average {load:.1f} at the end")
        print(f"{'target':9s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'CPU us/req':>10s} "
              f"{'non-2xx':>8s}")
        summary = {}
        for label, _, _, _ in targets:
            rr = rows[label]
            summary[label] = {k: med([x[k] for x in rr]) for k in ("rps", "p50", "p99", "cpu")}
            b = summary[label]
            print(f"{label:9s} {b['rps']:9.0f} {b['p50']:8.2f} {b['p99']:8.2f} {b['cpu']:10.1f} "
                  f"{sum(x['non2xx'] for x in rr):8d}")
        bad = sum(x["non2xx"] for rr in rows.values() for x in rr)
        if bad:
            print(f"WARNING: {bad} answers were not 2xx; this table does not measure the route")
        d = summary["direct"]
        for label in ("gateway", "nginx"):
            b = summary[label]
            print(f"added by {label:8s}: {100 * (1 - b['rps'] / d['rps']):5.1f} % fewer req/s, "
                  f"p50 {b['p50'] - d['p50']:+.2f} ms, p99 {b['p99'] - d['p99']:+.2f} ms")
        # The same, paired: each proxy against the direct run of its own
        # round, then the median over rounds; and how often each is ahead.
        paired = {}
        for label in ("gateway", "nginx"):
            paired[label] = {
                "rps": med([100 * (1 - x["rps"] / y["rps"])
                            for x, y in zip(rows[label], rows["direct"])]),
                "p50": med([x["p50"] - y["p50"] for x, y in zip(rows[label], rows["direct"])]),
                "p99": med([x["p99"] - y["p99"] for x, y in zip(rows[label], rows["direct"])]),
            }
        ahead = sum(g["rps"] >= n["rps"] for g, n in zip(rows["gateway"], rows["nginx"]))
        for label in ("gateway", "nginx"):
            q = paired[label]
            print(f"paired   {label:8s}: {q['rps']:5.1f} % fewer req/s, p50 {q['p50']:+.2f} ms, "
                  f"p99 {q['p99']:+.2f} ms (medians of per-round differences)")
        print(f"gateway served at least nginx's req/s in {ahead} of {rounds} rounds")
        print(flush=True)

    bench("POST /api/logs", "producer", "/api/logs", BODY)
    bench("POST /api/logs/batch (10 events)", "producer", "/api/logs/batch", BATCH)
    if have_gen:
        bench("GET /api/v1/generator/status", "generator", "/api/v1/generator/status", None)
finally:
    stop_all()
    if os.environ.get("LOGPIPE_KEEP_TMP"):
        print(f"gateway_bench: kept {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
PY
