"""test_spool_dlq.py - a spooled event Kafka refuses for good goes to the DLQ.

The producer spools while Kafka is unreachable; when the drain finds that the
broker refuses a spooled event for good (here: larger than the raw topic's
max.message.bytes), it sends the event to the dead-letter topic with the
reason, counts it in logpipe_spool_dead_lettered_total and moves on, instead
of blocking the spool behind it forever (producer.c: dead_letter).

Kafka is not stopped: the first producer is pointed at a port where nothing
listens, so it spools; the second one, in the same working directory (the
same spool), is pointed at the session's broker.
"""

import json
import subprocess
import uuid

import requests

import infra as lp
from test_metadata import consume, wait_for

EVENTS = 3
MESSAGE = "m" * 2000          # each event alone is over the topic's limit
TOPIC_LIMIT = 1024            # the raw topic's max.message.bytes


def metric(proc, name):
    for line in requests.get(proc.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_spooled_event_refused_for_good_goes_to_dlq(services, topics, infra, ktool):
    brokers = infra.kafka.bootstrap
    raw = f"raw-small-{uuid.uuid4().hex[:8]}"
    r = subprocess.run([ktool, "create", brokers, raw, "2", f"max.message.bytes={TOPIC_LIMIT}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    cfg = {"topics.raw": raw, "topics.dlq": topics["dlq"], "kafka.timeout_ms": 1000}

    # Kafka unreachable: the events are spooled (and answered 202).
    dead = dict(cfg, **{"kafka.brokers": f"127.0.0.1:{lp.free_port()}"})
    prod = services("producer", topics=topics, config={"producer": dead})["producer"]
    ids = []
    for i in range(EVENTS):
        r = requests.post(prod.url + "/api/logs", timeout=30,
                          json={"message": MESSAGE, "service": "spool-dlq", "attributes": {"i": i}})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    assert metric(prod, "logpipe_spool_events") == EVENTS
    assert prod.stop() == 0

    # Kafka reachable, the spool found again: the broker refuses each event,
    # so each goes to the DLQ and the spool empties.
    prod = services("producer", topics=topics, config={"producer": cfg})["producer"]
    wait_for("the spooled events dead-lettered",
             lambda: metric(prod, "logpipe_spool_dead_lettered_total") == EVENTS, 60, 0.25)
    wait_for("the spool empty", lambda: metric(prod, "logpipe_spool_events") == 0, 30, 0.25)

    dlq = consume(ktool, brokers, topics["dlq"], limit=EVENTS, wait_ms=10000)
    assert len(dlq) == EVENTS, dlq
    assert sorted(json.loads(m["value"])["id"] for m in dlq) == sorted(ids)
    for m in dlq:
        h = m["headers"]
        assert h["stage"] == "producer" and h["topic"] == raw, h
        assert "too large" in h["reason"].lower(), h
        assert m["key"] == "spool-dlq"
    # None of them reached the raw topic, and nothing is left to retry.
    assert consume(ktool, brokers, raw, wait_ms=3000) == []
    assert metric(prod, "logpipe_spool_drained_total") == EVENTS
