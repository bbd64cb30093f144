#!/bin/sh
# ingest_bench.sh - ingest at line rate: what the broker takes from one
# client, and what the producer (direct) and the gateway in front of it
# accept, in one run on the same machine and the same real broker.
#
# Usage: tests/bench/ingest_bench.sh [SECONDS]   (default 8 s per target)
#   or   make bench BENCH=ingest
#
# Targets, one after the other (wrk -t2, keep-alive, the gateway_bench body):
#   kcat       kcat -P (Debian's kcat; enable.idempotence, acks=all, as the
#              producer's client) pushing the same event as fast as it can:
#              the broker's ceiling for one client on this machine;
#   producer   POST /api/logs straight to logpipe-producer, c32 and c256,
#              and POST /api/logs/batch of 100 events at c32 (producer_batch);
#   gateway    POST /api/logs through logpipe-gateway (auth, rate limit in
#              Redis far above the load), c32 and c256;
#   batch      POST /api/logs/batch of 100 events through the gateway, c32;
#   generator  logpipe-generator at full speed (256 B events, 4 threads,
#              batches of 100), with no enricher or consumer running: the
#              events its topic gained (end offsets) over the time from the
#              start until the last acknowledgement.
# Each row: accepted events/s (202s x events per request), p50/p99, CPU µs
# per accepted event of each process involved (utime+stime deltas from
# /proc/PID/stat, every thread), RSS at the end, and the events the raw
# topic gained (end offsets): at least the accepted count, or the row says
# so.  Also the CPU per event of the two validation paths in-process
# (tests/bench/event_micro.c).  The line before the last:
#   generator_vs_kcat=R   (the generator's rate over kcat's, same run; kcat
#                          pushes the smaller bench event, unkeyed, so this
#                          is a tripwire, tests/bench/generator_bench.sh the
#                          like-for-like comparison)
# Last line:
#   ingest: kcat=N producer_c256=N gateway_c256=N gateway_c32=N batch=N generator=N
# Environment (for profiling runs; the defaults run everything):
#   INGEST_ONLY=batch,producer_batch   run only these targets (kcat,
#              producer_c32, producer_c256, producer_batch, gateway_c32,
#              gateway_c256, batch, generator); the last line then shows 0
#              for the others
#   INGEST_PERF=PREFIX   perf record -g the processes of each target into
#              PREFIX.<target>.<process> (needs perf and the permission)
#   INGEST_CONNS=8,32    the connection counts of the single-event rows
#              (32,256 by default; the last line names only c32 and c256)
#   INGEST_THREADS=1     also print each producer thread's CPU µs per event
#   INGEST_SERVICES=N    single events name N services in turn (wrk's Lua
#              request(), also for N=1): the topic's key, so N spreads them
#              over up to N of its partitions
#   INGEST_AB=DIR        A/B: also a second producer, DIR/logpipe-producer,
#              behind a second gateway; the targets alternate between the
#              two (rows of B end in _b), INGEST_ROUNDS=N times (#1, #2, ...,
#              B first in the even rounds);
#              INGEST_B_SET=key=value,... sets B's producer apart (e.g.
#              kafka.linger_ms=5 with INGEST_AB=build/bin), INGEST_A_SET
#              the same for A's (two builds with one setting in common)
#   INGEST_AB_GATEWAY=DIR   the same for the gateway: the second gateway is
#              DIR/logpipe-gateway (its producer build/bin's, or INGEST_AB's);
#              either variable alone makes the second pair
# Starts its own Kafka and Redis (deploy/local/infra.py) on loopback ports
# and stops everything at the end.  Needs wrk and kcat (make deps).
set -eu
cd "$(dirname "$0")/../.."
for tool in wrk kcat; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "ingest_bench: $tool is missing (make deps, or apt-get install wrk kcat)" >&2
		exit 2
	}
done
for b in gateway producer generator; do
	[ -x build/bin/logpipe-$b ] || { echo "ingest_bench: build first (make)" >&2; exit 2; }
done
exec timeout -k 30 900 /usr/bin/python3 - "$@" <<'PY'
import os, re, shutil, subprocess, sys, tempfile, time, json, urllib.request
from pathlib import Path

sys.path.insert(0, "deploy/local")
import infra as lp  # noqa: E402

secs = int(sys.argv[1]) if len(sys.argv) > 1 else 8
KEY = "bench-key-0123456789"
BODY = ('{"level":"INFO","message":"benchmark event with a typical length of text",'
        '"service":"bench","host":"web-1"}')
BATCH = "[" + ",".join([BODY] * 100) + "]"
TOPIC = "raw-logs"
base = Path(tempfile.mkdtemp(prefix="logpipe-ingest-"))
os.chmod(base, 0o755)
started = []
TCK = os.sysconf("SC_CLK_TCK")


def say(*a):
    print(*a, flush=True)


def ticks(pid):
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    except (OSError, IndexError, ValueError):
        return 0


def rss_mb(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


kafkatool = base / "kafkatool"


def topic_count(brokers):
    return int(subprocess.run([str(kafkatool), "count", brokers, TOPIC], capture_output=True,
                              text=True, check=True).stdout.split()[0])


SERVICES = int(os.environ.get("INGEST_SERVICES", "0"))


def wrk(port, path, body, conns, headers):
    script = base / "req.lua"
    lua = ('wrk.method = "POST"\nwrk.body = [=[' + body + ']=]\n'
           'wrk.headers["Content-Type"] = "application/json"\n' +
           "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items()))
    if SERVICES and body == BODY:
        # Single events of SERVICES services, in turn: the raw topic's key,
        # so they spread over its partitions (one service: one partition).
        names = [f"bench-{i}" for i in range(SERVICES)]
        lua += ("local bodies = {" + ",".join(
            "[=[" + body.replace('"service":"bench"', f'"service":"{n}"') + "]=]"
            for n in names) + "}\nlocal i = 0\n"
            "request = function()\n  i = i % #bodies + 1\n"
            "  return wrk.format(nil, nil, nil, bodies[i])\nend\n")
    script.write_text(lua)
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--latency", "-s",
                          str(script), f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=secs + 60).stdout

    def lat(label):
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)] if m else float("nan")
    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s)", out)
    n = int(total.group(1)) if total else 0
    dur = float(total.group(2)) / (1000 if total and total.group(3) == "ms" else 1) if total else secs
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    bad = int(non2xx.group(1)) if non2xx else 0
    return n - bad, bad, dur, lat("50"), lat("99")


rows = {}
ONLY = set(filter(None, os.environ.get("INGEST_ONLY", "").split(",")))
PERF = os.environ.get("INGEST_PERF", "")
THREADS = os.environ.get("INGEST_THREADS", "") not in ("", "0")


AB = os.environ.get("INGEST_AB", "")
AB_GATEWAY = os.environ.get("INGEST_AB_GATEWAY", "")
ROUNDS = int(os.environ.get("INGEST_ROUNDS", "1"))


def want(label):
    return not ONLY or label.split("#")[0].removesuffix("_b") in ONLY


def thread_ticks(pid):
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            raw = (t / "stat").read_text()
            name = raw[raw.index("(") + 1:raw.rindex(")")]
            f = raw.rsplit(")", 1)[1].split()
            out[(t.name, name)] = int(f[11]) + int(f[12])
        except (OSError, ValueError, IndexError):
            pass
    return out


def row(label, pids, run, per_request=1):
    """Runs one target; pids: {name: pid} of the processes to account."""
    if not want(label):
        return 0
    t0 = {k: ticks(p) for k, p in pids.items()}
    th0 = thread_ticks(pids["producer"]) if THREADS and "producer" in pids else {}
    before = topic_count(brokers)
    perfs = [subprocess.Popen(["perf", "record", "-g", "-o", f"{PERF}.{label}.{k}", "-p",
                               str(p), "--", "sleep", str(max(secs - 2, 1))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for k, p in pids.items()] if PERF else []
    ok, bad, dur, p50, p99 = run()
    for perf in perfs:
        perf.wait()
    after_run = {k: ticks(p) - t0[k] for k, p in pids.items()}
    # Deliveries of requests cut off when wrk stopped may still land.
    time.sleep(1)
    landed = topic_count(brokers) - before
    events = ok * per_request
    rate = events / dur if dur else 0
    cpu = "  ".join(f"{k} {1e6 * v / TCK / events:6.1f} us, {rss_mb(pids[k]):5.0f} MB"
                    for k, v in after_run.items()) if events else "-"
    check = "ok" if landed >= events else f"LOST {events - landed}"
    say(f"{label:16s} {rate:9.0f} ev/s  p50 {p50:7.2f} ms  p99 {p99:8.2f} ms  "
        f"non-2xx {bad:5d}  topic +{landed} ({check})  {cpu}  load {os.getloadavg()[0]:.1f}")
    if th0 and events:
        th1 = thread_ticks(pids["producer"])
        per = {}
        for (tid, name), v in th1.items():
            per[name] = per.get(name, 0) + v - th0.get((tid, name), 0)
        say("    producer threads (us/event): " + ", ".join(
            f"{n} {1e6 * v / TCK / events:.2f}" for n, v in
            sorted(per.items(), key=lambda kv: -kv[1]) if v))
    rows[label] = rate
    return rate


try:
    kafka = lp.Kafka(base)
    redis = lp.Redis(base)
    started += [kafka, redis]
    kafka.start()
    redis.start()
    redis.wait_ready(15)
    kafka.wait_ready(120)
    brokers = kafka.bootstrap
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "rdkafka", "jansson"],
                           capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["cc", "-O2", "-o", str(kafkatool), "tests/bench/kafkatool.c"] + flags,
                   check=True)
    micro = base / "event_micro"
    subprocess.run(["cc", "-O2", "-Icommon/include", "-o", str(micro), "tests/bench/event_micro.c",
                    "build/liblogpipe.a", "-ljansson", "-luuid", "-lcrypto", "-lm", "-pthread"],
                   check=True)
    addrs = {"kafka.brokers": brokers, "redis.url": redis.url, "pg.dsn": None}
    ports = {n: lp.free_port() for n in lp.SERVICES}
    procs = {}

    def start(name, extra, port_map, bin_dir=None, tag=""):
        env = lp.service_env(name, port_map, addrs, log_level="warn", extra=extra)
        p = lp.ServiceProc(name, env, base / f"{name}{tag}.log", port_map[name], bin_dir,
                           cwd=base / f"{name}{tag}")
        p.start()
        started.append(p)
        p.wait_ready(30)
        return p

    def gateway_extra(port):
        return {"auth.keys": f"{KEY}:bench:ingest,read", "http.listen": f"127.0.0.1:{port}",
                "ratelimit.rate": 100000000, "backpressure.lag_normal": 10**12,
                "backpressure.lag_critical": 10**12}
    extra_a = {"http.threads": 288}
    extra_a.update(kv.split("=", 1) for kv in
                   filter(None, os.environ.get("INGEST_A_SET", "").split(",")))
    procs["producer"] = start("producer", extra_a, ports)
    procs["gateway"] = start("gateway", gateway_extra(ports["gateway"]), ports)
    procs["generator"] = start("generator", {"http.threads": 8,
                                             "generator.registry_key": "logpipe:ingest-bench"},
                               ports)
    # (tag, producer pid, gateway pid, their ports) of each variant.
    variants = [("", procs["producer"].pid, procs["gateway"].pid, ports)]
    if AB or AB_GATEWAY:
        ports_b = dict(ports, producer=lp.free_port(), gateway=lp.free_port())
        extra_b = {"http.threads": 288}
        extra_b.update(kv.split("=", 1) for kv in
                       filter(None, os.environ.get("INGEST_B_SET", "").split(",")))
        pb = start("producer", extra_b, ports_b, AB or None, "_b")
        gb = start("gateway", gateway_extra(ports_b["gateway"]), ports_b, AB_GATEWAY or None,
                   "_b")
        variants.append(("_b", pb.pid, gb.pid, ports_b))
    say(f"ingest benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the start; {secs} s per target; "
        f"Kafka single node on this machine, topic {TOPIC}")
    say(subprocess.run([str(micro), "50000"], capture_output=True, text=True).stdout.rstrip())
    for _, _, _, pm in variants:  # warm-up
        for port in (pm["producer"], pm["gateway"]):
            subprocess.run(["wrk", "-t1", "-c4", "-d2s",
                            f"http://127.0.0.1:{port}/health/live"],
                           capture_output=True, timeout=30)

    # kcat: as many events as it pushes in about secs seconds.
    n_kcat = 400000
    data = base / "kcat.in"
    data.write_text((BODY + "\n") * n_kcat)

    def run_kcat():
        t = time.monotonic()
        with open(data, "rb") as f:
            k = subprocess.Popen(["kcat", "-P", "-b", brokers, "-t", TOPIC, "-X",
                                  "enable.idempotence=true", "-X", "acks=all", "-X",
                                  "linger.ms=5"], stdin=f, stderr=subprocess.PIPE)
            _, err = k.communicate(timeout=secs * 20 + 60)
        return n_kcat if k.returncode == 0 else 0, 0 if k.returncode == 0 else 1, \
            time.monotonic() - t, float("nan"), float("nan")

    # kcat is a child: its CPU comes from the children's times.
    if want("kcat"):
        c0 = os.times()
        before = topic_count(brokers)
        ok, bad, dur, _, _ = run_kcat()
        c1 = os.times()
        landed = topic_count(brokers) - before
        cpu = (c1.children_user + c1.children_system - c0.children_user - c0.children_system)
        rows["kcat"] = ok / dur
        say(f"{'kcat':16s} {ok / dur:9.0f} ev/s  ({ok} events in {dur:.1f} s)  "
            f"topic +{landed} ({'ok' if landed >= ok else 'LOST'})  "
            f"kcat {1e6 * cpu / max(ok, 1):6.1f} us")

    H = {"X-API-Key": KEY}

    conns = [int(c) for c in os.environ.get("INGEST_CONNS", "32,256").split(",") if c]

    def targets(tag, prod, gw, pm):
        for c in conns:
            row(f"producer_c{c}{tag}", {"producer": prod},
                lambda c=c: wrk(pm["producer"], "/api/logs", BODY, c, {}))
        row(f"producer_batch{tag}", {"producer": prod},
            lambda: wrk(pm["producer"], "/api/logs/batch", BATCH, 32, {}), per_request=100)
        for c in conns:
            row(f"gateway_c{c}{tag}", {"gateway": gw, "producer": prod},
                lambda c=c: wrk(pm["gateway"], "/api/logs", BODY, c, H))
        row(f"batch{tag}", {"gateway": gw, "producer": prod},
            lambda: wrk(pm["gateway"], "/api/logs/batch", BATCH, 32, H), per_request=100)
    # With INGEST_AB the variants take turns, target by target, round by round,
    # the first one first in odd rounds and second in even ones (A B B A ...).
    for rnd in range(ROUNDS):
        for tag, prod, gw, pm in (variants if rnd % 2 == 0 else variants[::-1]):
            targets(tag + (f"#{rnd + 1}" if ROUNDS > 1 else ""), prod, gw, pm)

    if want("generator"):
        # The generator at full speed; no enricher or consumer runs here.
        url = f"http://127.0.0.1:{ports['generator']}/api/v1/generator"

        def http(method, u, body=None):
            req = urllib.request.Request(u, data=json.dumps(body).encode() if body else None,
                                         method=method, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())
        g = procs["generator"].pid
        t0, before = ticks(g), topic_count(brokers)
        w0 = time.monotonic()
        http("POST", url + "/start", {"rate": 10000000, "size_bytes": 256, "threads": 4,
                                      "batch_size": 100, "duration_s": secs})
        while True:
            time.sleep(0.25 if time.monotonic() - w0 < secs else 0.05)
            st = http("GET", url + "/status")
            if st["state"] != "running" and st["in_flight"] == 0:
                break
        acked_s = time.monotonic() - w0
        landed = topic_count(brokers) - before
        # Counted by the topic, not by the generator: what Kafka acknowledged
        # from the start until the last acknowledgement.
        gen_rate = landed / acked_s
        rows["generator"] = gen_rate
        say(f"{'generator':16s} {gen_rate:9.0f} ev/s  topic +{landed} in {acked_s:.1f} s, sent "
            f"{st['sent']}, shed {st['rate_limited']} "
            f"({'ok' if landed >= st['sent'] else 'LOST'})  generator "
            f"{1e6 * (ticks(g) - t0) / TCK / max(landed, 1):6.1f} us, {rss_mb(g):5.0f} MB")
    say(f"load average {os.getloadavg()[0]:.1f} at the end")
    say(f"generator_vs_kcat={rows['generator'] / rows['kcat']:.2f}"
        if rows.get("kcat") and rows.get("generator")
        else "generator_vs_kcat=-")
    say("ingest: " + " ".join(f"{k}={rows.get(k, 0):.0f}" for k in
                              ("kcat", "producer_c256", "gateway_c256", "gateway_c32", "batch",
                               "generator")))
finally:
    for p in reversed(started):
        try:
            p.stop()
        except Exception as e:  # noqa: BLE001
            print(f"ingest_bench: stopping {getattr(p, 'name', p)}: {e}", file=sys.stderr)
    shutil.rmtree(base, ignore_errors=True)
PY
