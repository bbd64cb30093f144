"""test_spool_sigterm.py - the producer's SIGTERM with its disk spool, real binaries and broker.

  * SIGTERM under load exits 0 within 10 s, and nothing answered 202 is lost;
    with Kafka up, every event answered 202 is in Kafka when the producer has
    exited and its spool is empty (in-flight requests spooled at the signal
    are drained before the exit);
  * SIGTERM with Kafka down exits 0 within 10 s, and what was answered 202
    is stored once after Kafka returns;
  * SIGTERM while the spool drains exits 0 within 10 s, and the drain is
    finished before the exit.

Helpers and fixtures are test_spool.py's.  These tests stop the session's
Kafka broker; each one starts it again, also when it fails.
"""

import json
import re
import threading
import time
import uuid

from test_spool import (Load, Senders, assert_stored_once, kafka_back,  # noqa: F401 (fixtures)
                        metric, post, topic_values, wait_until)


def test_sigterm_under_load_exits_zero_within_10s(services, topics, pg_dsn, kafka_back):
    procs = services("producer", "enricher", "consumer", topics=topics, pg_dsn=pg_dsn)
    prod = procs["producer"]
    load = Load(prod.url, threads=8, tag="term").start()
    time.sleep(3)
    t0 = time.monotonic()
    rc = prod.stop(timeout=15)
    took = time.monotonic() - t0
    load.stop()
    assert rc == 0, (rc, prod.log_tail(20))
    assert took < 10, took
    assert load.statuses.get(202, 0) > 0, load.statuses
    ids = list(load.ids)
    # Whatever was spooled rather than acknowledged goes on the next start.
    services("producer", topics=topics)
    assert_stored_once(pg_dsn, ids, load.marks, load.other_marks)
    print(f"\nSIGTERM under load: exit 0 after {took:.2f} s; {len(ids)} events answered 202, "
          "all stored once")


class SlowBatches(Senders):
    """Threads posting batches of one valid event and `padding` invalid items:
    the producer spends a few hundred milliseconds on each (seconds under
    the sanitizers, on an offload thread of its front) before the event
    reaches the delivery step, so a SIGTERM finds such requests in flight."""

    PAD = {"service": "slow", "level": "INFO", "attributes": {"k": "v"}}  # no message

    def __init__(self, url, tag, threads=2, padding=20000):
        super().__init__(threads)
        self.url = url
        self.tag = tag
        self.tail = ("," + ",".join([json.dumps(self.PAD)] * padding) + "]").encode()
        self.ids = []
        self.statuses = {}
        self._lock = threading.Lock()

    def _run(self, n):
        i = 0
        while not self._stop.is_set():
            i += 1
            head = json.dumps([{"message": f"{self.tag} slow {n}/{i}", "service": "slow"}])
            try:
                status, raw, _ = post(self.url + "/api/logs/batch",
                                      head[:-1].encode() + self.tail, timeout=60)
                ids = [r["id"] for r in json.loads(raw)["results"] if "id" in r] \
                    if status in (202, 207) else []
            except (OSError, ValueError):
                status, ids = "error", []
                time.sleep(0.05)
            with self._lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                self.ids.extend(ids)


def test_sigterm_under_load_with_kafka_up_leaves_the_spool_empty(services, topics, infra,
                                                                 kafkatool):
    # Requests in flight at the signal go to the spool rather than to Kafka;
    # the drain must still send them before the exit while Kafka is up, also
    # those that reach the spool a second after the signal.  Several rounds.
    cfg = {"producer": {"http.max_body": 16 << 20, "limits.batch_max_items": 60000}}
    marker = f"term-up-{uuid.uuid4().hex[:10]}"
    ids = []
    rounds = 4
    for rnd in range(rounds):
        prod = services("producer", topics=topics, config=cfg)["producer"]
        log_from = prod.log_path.stat().st_size
        load = Load(prod.url, threads=6, tag=f"{marker} {rnd}").start()
        slow = SlowBatches(prod.url, f"{marker} {rnd}").start()
        t0 = time.monotonic()
        try:
            wait_until("load answered", lambda: load.statuses.get(202, 0) >= 100
                       and slow.statuses.get(207, 0) >= 2, 60)
        except AssertionError as e:
            raise AssertionError(f"{e}: single/small batches {load.statuses} "
                                 f"{load.errors[:3]}, slow batches {slow.statuses}") from None
        waited = time.monotonic() - t0
        t0 = time.monotonic()
        rc = prod.stop(timeout=15)
        took = time.monotonic() - t0
        load.stop()
        slow.stop()
        assert rc == 0, (rc, prod.log_tail(20))
        # No time bound here: a 50,000-item batch being parsed when the signal
        # comes (seconds under the sanitizers) holds the stop past the 9 s
        # budget; test_sigterm_under_load_exits_zero_within_10s checks the bound.
        print(f"round {rnd}: load answered after {waited:.1f} s, stopped in {took:.1f} s")
        assert set(load.statuses) <= {202, 503}, load.statuses
        with open(prod.log_path, errors="replace") as f:
            f.seek(log_from)
            log = f.read()
        # The start finds nothing an earlier round left, the stop leaves nothing.
        said = [ln for ln in log.splitlines() if "spool" in ln and '"debug"' not in ln]
        assert not [ln for ln in said if "bytes) to drain" in ln], said
        # (a purge at the 4 s mark under a slow machine spools, then drains: fine)
        assert not [ln for ln in said if re.search(r"\d+ events stay in the spool", ln)], said
        ids += load.ids + slow.ids
    prod = services("producer", topics=topics, config=cfg)["producer"]
    assert metric(prod, "logpipe_spool_events") == 0, prod.log_tail(20)
    assert "bytes) to drain" not in prod.log_tail(40), prod.log_tail(40)
    prod.stop()

    found = set()
    for v in topic_values(kafkatool, infra.kafka.bootstrap, topics["raw"]):
        ev = json.loads(v)
        if ev.get("message", "").startswith(marker):
            found.add(ev["id"])
    missing = set(ids) - found
    print(f"\nSIGTERM under load with Kafka up, {rounds} rounds: {len(ids)} events answered "
          f"202/207, {len(found)} in the topic")
    assert ids and not missing, f"{len(missing)} of {len(ids)} ids answered 202 are not in Kafka"


def test_sigterm_with_kafka_down_exits_zero_within_10s(services, topics, pg_dsn, kafka_back):
    procs = services("producer", topics=topics, config={"producer": {"kafka.timeout_ms": 30000}})
    prod = procs["producer"]
    kafka_back.stop()
    # Requests in flight wait for a delivery that cannot come before the
    # (long) timeout: the shutdown must not wait for it.
    load = Load(prod.url, threads=4, tag="term-down").start()
    time.sleep(2)
    t0 = time.monotonic()
    rc = prod.stop(timeout=15)
    took = time.monotonic() - t0
    load.stop()
    assert rc == 0, (rc, prod.log_tail(20))
    assert took < 10, took
    ids = list(load.ids)
    kafka_back.start()
    kafka_back.wait_ready(90)
    services("enricher", "consumer", topics=topics, pg_dsn=pg_dsn)
    services("producer", topics=topics)
    assert_stored_once(pg_dsn, ids, load.marks, load.other_marks)
    print(f"\nSIGTERM with Kafka down: exit 0 after {took:.2f} s; {len(ids)} answered 202")


def test_sigterm_drains_the_spool_while_kafka_is_up(services, topics, pg_dsn, kafka_back):
    # Small drain rounds, so that the drain is still running at SIGTERM.
    cfg = {"producer": {"kafka.timeout_ms": 2000, "spool.drain_batch": 50}}
    prod = services("producer", topics=topics, config=cfg)["producer"]
    kafka_back.stop()
    load = Load(prod.url, threads=6, tag="term-drain").start()
    wait_until("events in the spool",
               lambda: (metric(prod, "logpipe_spool_events") or 0) >= 1500, 60)
    load.stop()
    assert set(load.statuses) == {202}, load.statuses
    ids = list(load.ids)
    assert prod.stop(timeout=15) == 0  # Kafka down: they stay on disk

    kafka_back.start()
    kafka_back.wait_ready(90)
    prod = services("producer", topics=topics, config=cfg)["producer"]
    wait_until("the drain to start",
               lambda: (metric(prod, "logpipe_spool_drained_total") or 0) > 0, 60)
    left = metric(prod, "logpipe_spool_events")
    t0 = time.monotonic()
    rc = prod.stop(timeout=15)
    took = time.monotonic() - t0
    assert rc == 0, (rc, prod.log_tail(20))
    assert took < 10, took
    print(f"\nSIGTERM while draining ({left:.0f} events left): exit 0 after {took:.2f} s")

    # Drained before the exit: the next start finds an empty spool.
    prod = services("producer", topics=topics, config=cfg)["producer"]
    assert metric(prod, "logpipe_spool_events") == 0, prod.log_tail(20)
    services("enricher", "consumer", topics=topics, pg_dsn=pg_dsn)
    assert_stored_once(pg_dsn, ids, load.marks, load.other_marks)
