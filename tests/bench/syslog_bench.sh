#!/bin/sh
# syslog_bench.sh - syslog over TCP into Kafka: how many messages a second
# the producer's syslog receiver (producer/syslog.c) makes durable in the
# raw topic.
#
# Usage: tests/bench/syslog_bench.sh [MESSAGES] [CONNECTIONS]
#   or   make bench BENCH=syslog                 (default 400000 over 2)
#
# Starts its own Kafka (deploy/local/infra.py) and logpipe-producer with
# syslog.listen on loopback ports; the senders (Python threads, one TCP
# connection each) write RFC 5424 messages of about 150 bytes, newline
# framed, as fast as the receiver reads them.  The clock runs from the
# first byte sent until the raw topic's end offsets have grown by
# MESSAGES; the rate is MESSAGES / that time.  Also the producer's CPU per
# message (utime+stime of every thread) and its syslog counters (malformed
# and dropped must be 0).  Last line:
#   syslog: tcp=N msg/s
set -eu
cd "$(dirname "$0")/../.."
[ -x build/bin/logpipe-producer ] || { echo "syslog_bench: build first (make)" >&2; exit 2; }
exec timeout -k 30 900 /usr/bin/python3 - "$@" <<'PY'
import os, shutil, socket, subprocess, sys, tempfile, threading, time, urllib.request
from pathlib import Path

sys.path.insert(0, "deploy/local")
import infra as lp  # noqa: E402

total = int(sys.argv[1]) if len(sys.argv) > 1 else 400000
nconn = int(sys.argv[2]) if len(sys.argv) > 2 else 2
TOPIC = "raw-logs"
base = Path(tempfile.mkdtemp(prefix="logpipe-syslog-bench-"))
os.chmod(base, 0o755)
started = []
TCK = os.sysconf("SC_CLK_TCK")


def say(*a):
    print(*a, flush=True)


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])


def topic_count(tool, brokers):
    return int(subprocess.run([str(tool), "count", brokers, TOPIC], capture_output=True,
                              text=True, check=True).stdout.split()[0])


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith("syslog_")}


try:
    kafka = lp.Kafka(base)
    started.append(kafka)
    kafka.start()
    kafka.wait_ready(120)
    brokers = kafka.bootstrap
    tool = base / "kafkatool"
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "rdkafka", "jansson"],
                           capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["cc", "-O2", "-o", str(tool), "tests/bench/kafkatool.c"] + flags, check=True)
    ports = {n: lp.free_port() for n in lp.SERVICES}
    sport = lp.free_port()
    addrs = {"kafka.brokers": brokers, "redis.url": None, "pg.dsn": None}
    env = lp.service_env("producer", ports, addrs, log_level="warn",
                         extra={"syslog.listen": f"127.0.0.1:{sport}"})
    prod = lp.ServiceProc("producer", env, base / "producer.log", ports["producer"],
                          cwd=base / "producer")
    prod.start()
    started.append(prod)
    prod.wait_ready(30)
    say(f"syslog benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the start; {total} messages over "
        f"{nconn} TCP connections; Kafka single node on this machine, topic {TOPIC}")

    def lines(k, n):
        return b"".join(b"<134>1 2026-12-06T23:00:00.000Z web-%d bench %d - "
                        b"[meta@1 seq=\"%d\"] benchmark message over syslog with a typical "
                        b"length\n" % (k, k, i) for i in range(n))

    # Warm-up: the topic exists, the connection to the broker is up.
    with socket.create_connection(("127.0.0.1", sport)) as s:
        s.sendall(lines(99, 1000))
    deadline = time.monotonic() + 60
    while topic_count(tool, brokers) < 1000 and time.monotonic() < deadline:
        time.sleep(0.2)
    before = topic_count(tool, brokers)
    per = total // nconn
    bufs = [lines(k, per) for k in range(nconn)]
    total = per * nconn

    def send(buf):
        with socket.create_connection(("127.0.0.1", sport)) as s:
            s.sendall(buf)

    cpu0 = ticks(prod.pid)
    t0 = time.monotonic()
    threads = [threading.Thread(target=send, args=(b,)) for b in bufs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent_s = time.monotonic() - t0
    deadline = time.monotonic() + 300
    while (landed := topic_count(tool, brokers) - before) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    el = time.monotonic() - t0
    cpu = (ticks(prod.pid) - cpu0) / TCK
    m = metrics(ports["producer"])
    rate = landed / el
    say(f"sent in {sent_s:.2f} s, {landed} in Kafka after {el:.2f} s: {rate:.0f} msg/s; producer "
        f"CPU {1e6 * cpu / max(landed, 1):.1f} us/msg; malformed "
        f"{m.get('syslog_messages_malformed_total', -1):.0f}, dropped "
        f"{m.get('syslog_messages_dropped_total', -1):.0f}"
        + ("" if landed >= total else "  INCOMPLETE"))
    say(f"load average {os.getloadavg()[0]:.1f} at the end")
    say(f"syslog: tcp={rate:.0f} msg/s")
finally:
    for p in reversed(started):
        try:
            p.stop()
        except Exception as e:  # noqa: BLE001
            print(f"syslog_bench: stopping {getattr(p, 'name', p)}: {e}", file=sys.stderr)
    shutil.rmtree(base, ignore_errors=True)
PY
