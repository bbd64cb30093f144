#!/bin/sh
# generator_bench.sh - how fast one logpipe-generator writes into Kafka, and
# how exactly it holds a rate.
#
#   tests/bench/generator_bench.sh [SECONDS]     (default 15 s per phase)
#
# Phases, one after the other on a fresh topic with raw-logs' 6 partitions:
#   max      rate 10,000,000/s (no pacing), 256-byte events, then 1 KiB ones:
#            events/s generated, events/s acknowledged by Kafka, and a check
#            that the topic holds exactly the events counted sent;
#   accuracy rate 1,000, 10,000, 50,000 (seed 000's promise) and 90 % of the
#            measured maximum: the achieved average and the worst one-second
#            window, as a deviation from the target.
#
# Kafka and Redis: LOGPIPE_BENCH_BROKERS and LOGPIPE_BENCH_REDIS to use
# running ones, otherwise a private single-node Kafka and a Redis are started
# with deploy/local/infra.py (the same as the integration tests) and stopped
# at the end. Builds build/bin/logpipe-generator if it is missing. Loopback
# only; everything it starts is stopped on exit.
set -eu
cd "$(dirname "$0")/../.."
[ -x build/bin/logpipe-generator ] || make --no-print-directory build/bin/logpipe-generator
exec /usr/bin/python3 - "${1:-15}" <<'EOF'
import json, os, platform, subprocess, sys, tempfile, time, urllib.request, uuid
from pathlib import Path

sys.path.insert(0, "deploy/local")
import infra as lp

SECONDS = float(sys.argv[1])
tmp = Path(tempfile.mkdtemp(prefix="genbench-"))
os.chmod(tmp, 0o711)
started = []


def say(*a):
    print(*a, flush=True)


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def kafkatool():
    out = tmp / "kafkatool"
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "rdkafka", "jansson"],
                           capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["cc", "-O2", "-o", str(out), "tests/bench/kafkatool.c"] + flags, check=True)
    return str(out)


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


try:
    brokers = os.environ.get("LOGPIPE_BENCH_BROKERS")
    redis_url = os.environ.get("LOGPIPE_BENCH_REDIS")
    kafka = None
    if not brokers:
        kafka = lp.Kafka(tmp, topics={})
        started.append(kafka)
        kafka.start()
    if not redis_url:
        redis = lp.Redis(tmp)
        started.append(redis)
        redis.start()
        redis.wait_ready(15)
        redis_url = redis.url
    if kafka:
        kafka.wait_ready(120)
        brokers = kafka.bootstrap
    tool = kafkatool()

    port = lp.free_port()
    url = f"http://127.0.0.1:{port}/api/v1/generator"
    env = lp.service_env("generator", {"generator": port}, {"kafka.brokers": brokers,
                         "redis.url": redis_url, "pg.dsn": None}, log_level="warn",
                         extra={"generator.registry_key": f"logpipe:bench:{uuid.uuid4().hex[:8]}"})
    gen = lp.ServiceProc("generator", env, tmp / "generator.log", port, cwd=tmp / "gen")
    started.append(gen)

    bench_topic = f"bench-{uuid.uuid4().hex[:8]}"
    subprocess.run([lp.topics_tool(), "--brokers", brokers, "--wait", "30",
                    "--create", f"{bench_topic}:6"], check=True, capture_output=True)
    gen.env["LOGPIPE_TOPICS_RAW"] = bench_topic
    gen.start()
    gen.wait_ready(30)

    def count():
        return int(subprocess.run([tool, "count", brokers, bench_topic], capture_output=True,
                                  text=True, check=True).stdout.split()[0])

    def run(params):
        """One run; returns its final status, 1-s rate samples, the time until
        the last acknowledgement and how many messages the topic gained."""
        before = count()
        http("POST", url + "/start", dict(params, duration_s=SECONDS))
        t0 = time.monotonic()
        points = []  # (elapsed_ms, generated) by the run's own clock
        while True:
            time.sleep(0.25)
            st = http("GET", url + "/status")
            if st["state"] == "running":
                points.append((st["elapsed_ms"], st["generated"]))
            elif st["in_flight"] == 0 or time.monotonic() - t0 > SECONDS + 120:
                break
        acked_s = time.monotonic() - t0
        # One-second windows, after the first second (start-up).
        samples, j = [], 0
        for i, (ms, n) in enumerate(points):
            while j < i and ms - points[j][0] >= 1000:
                j += 1
            if j > 0 and points[j - 1][0] >= 1000:
                ms0, n0 = points[j - 1]
                samples.append((n - n0) * 1000 / (ms - ms0))
        return st, samples, acked_s, count() - before

    say(f"generator benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    say(f"machine: {os.cpu_count()} CPUs ({cpu_model()}), Kafka single node on this machine")
    say(f"phase length: {SECONDS:.0f} s each")
    say("")
    best = 0
    for size in (256, 1024):
        params = {"rate": 10000000, "size_bytes": size, "threads": 4, "batch_size": 100}
        st, _, acked_s, landed = run(params)
        gen_rate = st["generated"] / (st["elapsed_ms"] / 1000)
        ack_rate = st["sent"] / acked_s
        ok = "matches" if landed == st["sent"] else f"DIFFERS ({landed})"
        say(f"max, {size} B events, 4 threads, batch 100: {gen_rate:,.0f} events/s generated, "
            f"{ack_rate:,.0f} events/s acknowledged ({gen_rate * size / 1e6:,.1f} MB/s); "
            f"sent {st['sent']:,}, shed {st['rate_limited']:,}, errors {st['errors']}; "
            f"topic end offsets {ok}")
        if size == 256:
            best = gen_rate
    say("")
    targets = [1000, 10000, 50000]
    if best * 0.9 > 1000:
        targets.append(int(best * 0.9 // 1000 * 1000))
    for rate in targets:
        st, samples, _, landed = run({"rate": rate, "size_bytes": 256})
        avg = st["generated"] / (st["elapsed_ms"] / 1000)
        dev = (avg - rate) / rate * 100
        worst = max(samples, key=lambda r: abs(r - rate)) if samples else avg
        label = f"rate {rate:,}"
        if rate == targets[-1] and len(targets) > 3:
            label += " (90 % of max)"
        check = "= sent" if landed == st["sent"] else f"{landed} != sent {st['sent']}"
        say(f"{label}: achieved {avg:,.1f} events/s ({dev:+.2f} %), worst 1-s window "
            f"{(worst - rate) / rate * 100:+.2f} %, shed {st['rate_limited']}, topic {check}")
finally:
    for c in reversed(started):
        try:
            c.stop()
        except Exception as e:  # noqa: BLE001
            print(f"stopping {getattr(c, 'name', c)}: {e}", file=sys.stderr)
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
EOF
