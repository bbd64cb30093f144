"""test_syslog.py - the producer's syslog receiver with the real binary and broker.

  * `logger` (util-linux) sends RFC 5424 and RFC 3164 over TCP (newline
    framing and octet counting) and UDP; each message is found in the raw
    topic with its fields mapped (docs/syslog.md).
  * a line that is not syslog is dead-lettered with the reason in a header,
    and counted.
  * hostile input (garbage, an oversized line, a message never finished,
    more connections than allowed) does not stop the receiver: a message
    sent afterwards still arrives, and the producer still answers HTTP.
"""

import argparse
import json
import os
import random
import socket
import subprocess
import select
import time
import uuid
from datetime import datetime, timezone

import pytest

import infra as lp
from test_spool import metric, wait_until

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/logger"),
                                reason="logger (util-linux / bsdutils) is not installed")


def messages(tool, brokers, topic, want, wait_ms=20000):
    """Up to `want` messages of topic from the start (dicts with value and headers)."""
    r = subprocess.run([tool, "consume", brokers, topic, str(want), "1000", str(wait_ms)],
                       capture_output=True, text=True, timeout=wait_ms / 1000 + 30)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def find(tool, brokers, topic, marks, timeout=30.0):
    """{mark: event} for every marker, each found in one event's message."""
    found = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(found) < len(marks):
        for m in messages(tool, brokers, topic, 1000, wait_ms=5000):
            ev = json.loads(m["value"])
            for mark in marks:
                if mark in ev.get("message", ""):
                    assert mark not in found, f"{mark} is in the topic twice"
                    found[mark] = ev
        if len(found) < len(marks):
            time.sleep(0.5)
    assert set(found) == set(marks), f"missing in {topic}: {set(marks) - set(found)}"
    return found


def logger(port, *args):
    r = subprocess.run(["logger", "-n", "127.0.0.1", "-P", str(port), *args],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def producer(services, topics):
    port = lp.free_port()
    cfg = {"syslog.listen": f"127.0.0.1:{port}", "topics.dlq": topics["dlq"],
           "syslog.message_timeout_ms": 500, "syslog.max_connections": 8}
    prod = services("producer", topics=topics, config={"producer": cfg})["producer"]
    return prod, port


def test_logger_rfc5424_and_rfc3164_over_tcp_and_udp(infra, topics, producer, kafkatool):
    prod, port = producer
    run = uuid.uuid4().hex[:8]
    sent = {
        f"tcp5424-{run}": ["--rfc5424", "-T", "-t", "payments", "-p", "local3.err",
                           "--msgid", "PAY1", "--sd-id", "order@32473",
                           "--sd-param", 'id="42"', "--sd-param", 'note="a \\"quoted\\" \\]"'],
        f"tcp5424oc-{run}": ["--rfc5424", "-T", "--octet-count", "-t", "octets", "-p",
                             "user.debug"],
        f"udp5424-{run}": ["--rfc5424", "-d", "-t", "udpapp", "-p", "daemon.warning"],
        f"tcp3164-{run}": ["--rfc3164", "-T", "-t", "cron", "-i", "-p", "cron.notice"],
        f"udp3164-{run}": ["--rfc3164", "-d", "-t", "kernelish", "-p", "kern.crit"],
    }
    t0 = time.time()
    for mark, args in sent.items():
        logger(port, *args, f"hello {mark}")
    got = find(kafkatool, infra.kafka.bootstrap, topics["raw"], list(sent))
    host = socket.gethostname().split(".")[0]

    ev = got[f"tcp5424-{run}"]
    assert ev["message"] == f"hello tcp5424-{run}"
    assert ev["service"] == "payments"
    assert ev["level"] == "ERROR"
    assert ev["host"].split(".")[0] == host
    assert ev["source_ip"] == "127.0.0.1"
    a = ev["attributes"]
    assert a["syslog.facility"] == "local3" and a["syslog.severity"] == "err"
    assert a["syslog.msgid"] == "PAY1" and a["syslog.format"] == "rfc5424"
    assert a["syslog.sd"]["order@32473"] == {"id": "42", "note": 'a "quoted" ]'}
    assert "timeQuality" in a["syslog.sd"]
    ts = lp_epoch(ev["timestamp"])
    assert t0 - 5 <= ts <= time.time() + 5, ev["timestamp"]

    ev = got[f"tcp5424oc-{run}"]
    assert (ev["service"], ev["level"]) == ("octets", "DEBUG")
    ev = got[f"udp5424-{run}"]
    assert (ev["service"], ev["level"]) == ("udpapp", "WARN")
    assert ev["attributes"]["syslog.facility"] == "daemon"

    ev = got[f"tcp3164-{run}"]
    assert ev["message"] == f"hello tcp3164-{run}"
    assert (ev["service"], ev["level"]) == ("cron", "INFO")
    assert ev["host"].split(".")[0] == host
    assert ev["attributes"]["syslog.format"] == "rfc3164"
    assert ev["attributes"]["syslog.procid"].isdigit()  # logger -i: its pid
    ts = lp_epoch(ev["timestamp"])  # whole seconds, the year inferred
    assert t0 - 5 <= ts <= time.time() + 5, ev["timestamp"]
    ev = got[f"udp3164-{run}"]
    assert (ev["service"], ev["level"]) == ("kernelish", "FATAL")
    assert ev["attributes"]["syslog.severity"] == "crit"
    assert metric(prod, "syslog_messages_delivered_total") >= len(sent)


def lp_epoch(rfc3339):
    return datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp()


def test_malformed_line_is_dead_lettered(infra, topics, producer, kafkatool):
    prod, port = producer
    bad = f"not syslog {uuid.uuid4().hex}"
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"{bad}\n<13>1 - - - - - [broken\n".encode())
    wait_until("two dead letters",
               lambda: len(messages(kafkatool, infra.kafka.bootstrap, topics["dlq"], 2,
                                    wait_ms=3000)) >= 2, 30)
    dead = messages(kafkatool, infra.kafka.bootstrap, topics["dlq"], 2)
    by_value = {m["value"]: m for m in dead}
    assert bad in by_value, dead
    h = by_value[bad]["headers"]
    assert h["source"] == "syslog" and h["stage"] == "producer"
    assert "no PRI" in h["reason"]
    h = by_value["<13>1 - - - - - [broken"]["headers"]
    assert "SD-ELEMENT" in h["reason"], h
    assert metric(prod, "syslog_messages_malformed_total") >= 2


def test_receiver_survives_hostile_input(infra, topics, producer, kafkatool):
    prod, port = producer
    rnd = random.Random(16)
    # Garbage, binary and an oversized line, over TCP and UDP.
    with socket.create_connection(("127.0.0.1", port)) as s:
        for _ in range(200):
            s.sendall(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 300))))
        s.sendall(b"<13>" + b"x" * 200000 + b"\n")
        s.sendall(b"999999999 <13>endless")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for _ in range(100):
            u.sendto(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 2000))),
                     ("127.0.0.1", port))
    # More connections than syslog.max_connections (8): the extra ones are
    # closed at once; one inside a message is cut off after 500 ms.
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
    conns[0].sendall(b"<13>never finished")
    closed, open_ = 0, list(conns)
    deadline = time.monotonic() + 5
    while open_ and time.monotonic() < deadline:
        ready, _, _ = select.select(open_, [], [], 0.2)
        for c in ready:
            try:
                data = c.recv(1)
            except ConnectionResetError:
                data = b""
            if data == b"":
                closed += 1
                open_.remove(c)
        if closed >= 5 and conns[0] not in open_:
            break
    assert conns[0] not in open_, "the unfinished message's connection is still open"
    assert closed >= 5, closed  # 4 refused, and the unfinished message
    assert metric(prod, "syslog_connections_refused_total") >= 4
    assert metric(prod, "syslog_connections_timed_out_total") >= 1
    for c in conns:
        c.close()
    # Still receiving, and the producer still answers.
    mark = f"after-{uuid.uuid4().hex[:8]}"
    wait_until("the receiver to free its slots",
               lambda: metric(prod, "syslog_connections") == 0, 30)
    logger(port, "--rfc5424", "-T", "-t", "survivor", f"still here {mark}")
    ev = find(kafkatool, infra.kafka.bootstrap, topics["raw"], [mark])[mark]
    assert ev["service"] == "survivor"
    assert prod.alive()
    status, _ = prod.get("/health/live", timeout=5)
    assert status == 200


def test_make_run_listens_for_syslog(tmp_path):
    """The runner gives the producer syslog.listen on 127.0.0.1 (5514 when free)."""
    from test_infra import _runner_module
    runner = _runner_module()
    args = argparse.Namespace(base_dir=str(tmp_path), control_port=0, log_level="info")
    r = runner.Runner(args)
    r.build()
    env = r.components["producer"].obj.env
    assert env["LOGPIPE_SYSLOG_LISTEN"] == f"127.0.0.1:{r.ports['syslog']}", env
    assert r.ports["syslog"] == 5514 or not lp.port_is_free(5514)
