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
#   kcat     the calibrator: GENBENCH_PAIRS (default 3) pairs of runs, kcat
#            and the generator taking turns at going first, on the same
#            topic: kcat -P (enable.idempotence, acks=all, linger.ms=5 and
#            the generator's compression, as the generator's own client)
#            pushing the generator's own 256-byte events with their keys,
#            read back from the max phase; the generator at full speed for
#            SECONDS.  Both counted by the topic's end offsets over the time
#            until the last acknowledgement, with the CPU per event and the
#            1-minute load average; the median ratio is printed last as
#            generator_vs_kcat=R;
#   accuracy rate 1,000, 10,000, 50,000 (seed 000's promise) and 90 % of the
#            measured maximum: the achieved average and the worst one-second
#            window, as a deviation from the target.
#
# GENBENCH_BASELINE=DIR (a build's bin directory holding another
# logpipe-generator, e.g. the commit before a change): the kcat phase then
# runs that binary too in every pair, as a second generator on its own port
# and registry key, the three taking turns at going first, and prints its
# figures and ratio beside the generator's: before and after in one run,
# on the same broker at the same load.
#
# Kafka and Redis: LOGPIPE_BENCH_BROKERS and LOGPIPE_BENCH_REDIS to use
# running ones, otherwise a private single-node Kafka and a Redis are started
# with deploy/local/infra.py (the same as the integration tests) and stopped
# at the end. Builds build/bin/logpipe-generator if it is missing. Needs
# kcat (make deps) for the kcat phase, which is skipped without it.
# Loopback only; everything it starts is stopped on exit.
set -eu
cd "$(dirname "$0")/../.."
[ -x build/bin/logpipe-generator ] || make --no-print-directory build/bin/logpipe-generator
exec /usr/bin/python3 - "${1:-15}" <<'EOF'
import json, os, platform, shutil, subprocess, sys, tempfile, time, urllib.request, uuid
from pathlib import Path

sys.path.insert(0, "deploy/local")
import infra as lp

SECONDS = float(sys.argv[1])
PAIRS = int(os.environ.get("GENBENCH_PAIRS", "3"))
COMPRESSION = "lz4"  # the generator's kafka.compression, set below; kcat uses the same
TCK = os.sysconf("SC_CLK_TCK")
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
                         extra={"generator.registry_key": f"logpipe:bench:{uuid.uuid4().hex[:8]}",
                                "kafka.compression": COMPRESSION})
    gen = lp.ServiceProc("generator", env, tmp / "generator.log", port, cwd=tmp / "gen")
    started.append(gen)

    bench_topic = f"bench-{uuid.uuid4().hex[:8]}"
    subprocess.run([lp.topics_tool(), "--brokers", brokers, "--wait", "30",
                    "--create", f"{bench_topic}:6"], check=True, capture_output=True)
    gen.env["LOGPIPE_TOPICS_RAW"] = bench_topic
    gen.start()
    gen.wait_ready(30)
    base = None
    if os.environ.get("GENBENCH_BASELINE"):
        bport = lp.free_port()
        benv = lp.service_env("generator", {"generator": bport}, {
            "kafka.brokers": brokers, "redis.url": redis_url, "pg.dsn": None},
            log_level="warn", extra={
                "generator.registry_key": f"logpipe:bench:{uuid.uuid4().hex[:8]}",
                "kafka.compression": COMPRESSION})
        benv["LOGPIPE_TOPICS_RAW"] = bench_topic
        (tmp / "base").mkdir()
        base = lp.ServiceProc("generator", benv, tmp / "baseline.log", bport,
                              bin_dir_=os.environ["GENBENCH_BASELINE"], cwd=tmp / "base")
        started.append(base)
        base.start()
        base.wait_ready(30)
        base_url = f"http://127.0.0.1:{bport}/api/v1/generator"

    def count():
        # Tried again: on a loaded machine a metadata or watermark request
        # of a topic just created can time out.
        for attempt in range(5):
            r = subprocess.run([tool, "count", brokers, bench_topic], capture_output=True,
                               text=True)
            if r.returncode == 0:
                return int(r.stdout.split()[0])
            time.sleep(1)
        raise RuntimeError(f"kafkatool count: {r.stderr.strip()}")

    def ticks(pid):
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])

    def load():
        return os.getloadavg()[0]

    def run(params, url=url):
        """One run; returns its final status, 1-s rate samples, the time until
        the last acknowledgement and how many messages the topic gained."""
        before = count()
        t0 = time.monotonic()
        http("POST", url + "/start", dict(params, duration_s=SECONDS))
        points = []  # (elapsed_ms, generated) by the run's own clock
        while True:
            time.sleep(0.25 if time.monotonic() - t0 < SECONDS else 0.05)
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
    ratio = None
    if not shutil.which("kcat"):
        say("kcat phase skipped: no kcat (make deps)")
    else:
        # kcat's input: the generator's own 256-byte events, key TAB value,
        # as the max phase wrote them (about 600,000, repeated if fewer).
        dump = subprocess.run(["kcat", "-C", "-b", brokers, "-t", bench_topic, "-e", "-q",
                               "-c", "600000", "-f", "%k\t%s\n"], capture_output=True,
                              check=True, timeout=300).stdout
        kin = tmp / "kcat.in"
        lines = max(dump.count(b"\n"), 1)
        kin.write_bytes(dump * max(1, 600000 // lines))
        nk = lines * max(1, 600000 // lines)

        def run_kcat():
            before, c0, t0 = count(), os.times(), time.monotonic()
            with open(kin, "rb") as f:
                subprocess.run(["kcat", "-P", "-K", "\t", "-b", brokers, "-t", bench_topic,
                                "-X", "enable.idempotence=true", "-X", "acks=all",
                                "-X", "linger.ms=5", "-X", f"compression.type={COMPRESSION}"],
                               stdin=f, check=True, timeout=600)
            dt, c1 = time.monotonic() - t0, os.times()
            n = count() - before
            cpu = c1.children_user + c1.children_system - c0.children_user - c0.children_system
            return n / dt, 1e6 * cpu / max(n, 1)

        def run_gen(proc=gen, url=url):
            c0 = ticks(proc.pid)
            st, _, acked_s, landed = run({"rate": 10000000, "size_bytes": 256, "threads": 4,
                                          "batch_size": 100}, url)
            return landed / acked_s, 1e6 * (ticks(proc.pid) - c0) / TCK / max(landed, 1)

        say(f"kcat calibrator: {nk:,} of the generator's 256 B events with their keys, "
            f"idempotent, acks=all, linger.ms=5, compression {COMPRESSION}; rates by the "
            "topic's end offsets until the last acknowledgement")
        ratios, bratios = [], []
        who_all = ["kcat", "generator"] + (["baseline"] if base else [])
        for i in range(PAIRS):
            res = {}
            k = i % len(who_all)
            order = who_all[k:] + who_all[:k] if base else (
                who_all if i % 2 == 0 else who_all[::-1])
            for who in order:
                la = load()
                if who == "kcat":
                    rate, us = run_kcat()
                elif who == "generator":
                    rate, us = run_gen()
                else:
                    rate, us = run_gen(base, base_url)
                res[who] = (rate, us, la)
            k, g = res["kcat"], res["generator"]
            ratios.append(g[0] / k[0])
            line = (f"pair {i + 1}: kcat {k[0]:,.0f} events/s ({k[1]:.1f} us CPU/event, "
                    f"load {k[2]:.1f}), generator {g[0]:,.0f} events/s ({g[1]:.1f} us "
                    f"CPU/event, load {g[2]:.1f}): {g[0] / k[0]:.2f}")
            if base:
                b = res["baseline"]
                bratios.append(b[0] / k[0])
                line += (f"; baseline {b[0]:,.0f} events/s ({b[1]:.1f} us CPU/event, "
                         f"load {b[2]:.1f}): {b[0] / k[0]:.2f}")
            say(line)
        ratio = sorted(ratios)[len(ratios) // 2]
        if base:
            say(f"baseline_vs_kcat={sorted(bratios)[len(bratios) // 2]:.2f} "
                f"(median of {PAIRS}, {os.environ['GENBENCH_BASELINE']})")
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
    if ratio is not None:
        say("")
        say(f"generator_vs_kcat={ratio:.2f} (median of {PAIRS} pairs)")
finally:
    for c in reversed(started):
        try:
            c.stop()
        except Exception as e:  # noqa: BLE001
            print(f"stopping {getattr(c, 'name', c)}: {e}", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
EOF
