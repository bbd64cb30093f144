"""test_enricher.py - logpipe-enricher with the metadata service, Redis and Kafka.

What is checked:
  * an event for a known host (by source_ip and by host name) and service
    arrives on the complete topic with every enrichment field; an unknown
    host gives a partial event saying why; invalid records go to the DLQ
    with reason and origin headers;
  * seed 002's log event, sent with its curl command to the producer,
    arrives enriched;
  * a host added while the enricher runs enriches the events sent 1 s after
    the metadata service answered (and, measured, much sooner);
  * with Redis and the metadata service stopped, events keep flowing as
    partial (metadata_unavailable, failed tiers named) without being held,
    and are complete again once both are back; with the tier-1 table on,
    known hosts even stay complete through the outage;
  * two enrichers in one group split the partitions, and across a member
    joining, one killed with SIGKILL, one restarting and one leaving, every
    event produced reaches an output topic (duplicates allowed, none lost).

Outages use a private Redis so that the session's Redis stays up. Events are
written straight to the test's raw topic with tests/bench/kafkatool.c
(helpers in test_metadata.py).
"""

import json
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

import infra as lp
from test_metadata import (consume, host_body, ktool, post, produce,  # noqa: F401 (fixture)
                           uniq, wait_for)

FIELDS = ("datacenter", "environment", "cost_center", "team", "owner", "tier")


def now_rfc3339():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event(service, host=None, source_ip=None, **attrs):
    """A normalised event, as the producer writes it to raw-logs."""
    ev = {"id": str(uuid.uuid4()), "schema_version": 1, "timestamp": now_rfc3339(),
          "received_at": now_rfc3339(), "level": "INFO", "message": "enricher test",
          "service": service, "attributes": attrs}
    if host:
        ev["host"] = host
    if source_ip:
        ev["source_ip"] = source_ip
    return ev


def outputs(ktool, infra, topics, ids, timeout=20):
    """{id: (topic, event)} of the enriched events with these ids, waiting for all."""
    want = set(ids)
    found = {}

    def look():
        for m in consume(ktool, infra.kafka.bootstrap, [topics["complete"], topics["partial"]],
                         wait_ms=10000):
            ev = json.loads(m["value"])
            if ev["id"] in want:
                found[ev["id"]] = (m["topic"], ev, m)
        return want <= set(found)

    wait_for(f"{len(want)} enriched events", look, timeout, 0.2)
    return found


def complete_fields(ev):
    return tuple(ev["enrichment"][f] for f in FIELDS)


SEED_HOST = host_body("new-server", "192.168.1.150")
SEED_SERVICE = {"name": "payment-service", "team": "payments", "owner": "alice",
                "tier": "critical"}
SEED_FIELDS = ("us-west-2", "production", "engineering", "payments", "alice", "critical")


@pytest.fixture
def private_redis():
    """A Redis of this test's own, so that it can be stopped without harm."""
    d = Path(tempfile.mkdtemp(prefix="redis-"))
    r = lp.Redis(d)
    r.start()
    r.wait_ready()
    yield r
    r.stop()


def enricher_metric(services, name, proc="enricher", port=None):
    port = port or services.ports[proc]
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.RequestException:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def metric_value(services, series, port=None):
    """The value of one exact series (name{labels}) on an enricher."""
    port = port or services.ports["enricher"]
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


# ---- tests -----------------------------------------------------------------------------

def test_known_metadata_arrives_complete(services, topics, pg_dsn, infra, ktool):
    services("metadata", "enricher", topics=topics, pg_dsn=pg_dsn)
    md = services.url("metadata")
    assert post(md, "/api/metadata/hosts", SEED_HOST).status_code == 201
    assert post(md, "/api/metadata/services", SEED_SERVICE).status_code == 201

    by_ip = event("payment-service", source_ip="192.168.1.150")
    by_name = event("payment-service", host="new-server", source_ip="10.255.0.1")
    unknown_host = event("payment-service", host=uniq("ghost"))
    unknown_svc = event(uniq("nobody"), source_ip="192.168.1.150")
    no_host = event("payment-service")
    bad = {"message": "no id", "service": "payment-service"}
    produce(ktool, infra.kafka.bootstrap, topics["raw"],
            [by_ip, by_name, unknown_host, unknown_svc, no_host, bad, "not json"])

    out = outputs(ktool, infra, topics,
                  [e["id"] for e in (by_ip, by_name, unknown_host, unknown_svc, no_host)])
    for ev, by in ((by_ip, "source_ip"), (by_name, "host")):
        topic, got, msg = out[ev["id"]]
        assert topic == topics["complete"], got["enrichment"]
        assert complete_fields(got) == SEED_FIELDS
        assert got["enrichment"]["status"] == "complete"
        assert got["enrichment"]["host"]["name"] == "new-server"
        assert got["enrichment"]["host"]["matched_by"] == by
        assert "missing" not in got["enrichment"]
        assert msg["key"] == "payment-service"
        # The event itself is untouched.
        assert {k: got[k] for k in ev} == ev

    topic, got, _ = out[unknown_host["id"]]
    assert topic == topics["partial"]
    assert got["enrichment"]["missing"] == [
        {"lookup": "host", "by": "host", "value": unknown_host["host"], "reason": "not_found"}]
    assert got["enrichment"]["team"] == "payments" and got["enrichment"]["datacenter"] is None
    topic, got, _ = out[unknown_svc["id"]]
    assert topic == topics["partial"]
    assert [m["lookup"] for m in got["enrichment"]["missing"]] == ["service"]
    assert got["enrichment"]["datacenter"] == "us-west-2"
    topic, got, _ = out[no_host["id"]]
    assert got["enrichment"]["missing"][0]["reason"] == "no_host_field"

    dlq = consume(ktool, infra.kafka.bootstrap, topics["dlq"], limit=2, wait_ms=10000)
    assert len(dlq) == 2
    for m in dlq:
        h = m["headers"]
        assert h["origin_topic"] == topics["raw"] and h["stage"] == "enricher"
        assert int(h["origin_partition"]) >= 0 and int(h["origin_offset"]) >= 0
    reasons = sorted(m["headers"]["reason"] for m in dlq)
    assert reasons[0].startswith("invalid_event: 'id'") and reasons[1].startswith("invalid_json")
    assert sorted(m["value"] for m in dlq) == sorted([json.dumps(bad), "not json"])

    assert enricher_metric(services, "enrichment_attempts_total") == 5
    assert enricher_metric(services, "enrichment_successes_total") == 2
    wait_for("tier 1 to count the host",
             lambda: metric_value(services, 'enrichment_table_records{kind="host"}') == 1, 5)
    assert enricher_metric(services, "kafka_consumer_lag") is not None


def test_seed_002_event_through_the_producer(services, topics, pg_dsn, infra, ktool):
    services("producer", "metadata", "enricher", topics=topics, pg_dsn=pg_dsn)
    md = services.url("metadata")
    assert post(md, "/api/metadata/hosts", host_body("payment-host", "192.168.1.100")) \
        .status_code == 201
    assert post(md, "/api/metadata/services", SEED_SERVICE).status_code == 201
    port = services.ports["producer"]
    cmd = f"""curl -s -X POST http://localhost:{port}/api/logs \\
  -H "Content-Type: application/json" \\
  -d '{{
    "level": "ERROR",
    "message": "Payment processing failed",
    "service": "payment-service",
    "source_ip": "192.168.1.100"
  }}'"""
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=30)
    reply = json.loads(r.stdout)
    assert reply["status"] == "success", r.stdout
    topic, got, _ = outputs(ktool, infra, topics, [reply["id"]])[reply["id"]]
    assert topic == topics["complete"], got
    assert got["message"] == "Payment processing failed" and got["level"] == "ERROR"
    assert complete_fields(got) == SEED_FIELDS


def test_host_added_while_running_enriches_within_1s(services, topics, pg_dsn, infra, ktool):
    services("metadata", "enricher", topics=topics, pg_dsn=pg_dsn)
    md = services.url("metadata")
    assert post(md, "/api/metadata/services", SEED_SERVICE).status_code == 201
    name = uniq("late")
    before = event("payment-service", host=name)
    produce(ktool, infra.kafka.bootstrap, topics["raw"], [before])
    topic, got, _ = outputs(ktool, infra, topics, [before["id"]])[before["id"]]
    assert got["enrichment"]["missing"][0]["reason"] == "not_found"

    assert post(md, "/api/metadata/hosts", host_body(name, dc="dc-late")).status_code == 201
    t0 = time.monotonic()
    sent = []  # (seconds after the 201, event)
    while not sent or sent[-1][0] < 1.3:
        ev = event("payment-service", host=name)
        sent.append((time.monotonic() - t0, ev))
        produce(ktool, infra.kafka.bootstrap, topics["raw"], [ev])
    out = outputs(ktool, infra, topics, [ev["id"] for _, ev in sent])
    first = None
    for at, ev in sent:
        topic, got, _ = out[ev["id"]]
        ok = topic == topics["complete"] and got["enrichment"]["datacenter"] == "dc-late"
        if ok and first is None:
            first = at
        if at >= 1.0:
            assert ok, f"event sent {at:.2f} s after the host was added is {got['enrichment']}"
    print(f"\nfirst complete event was sent {first:.3f} s after the metadata service answered")


def test_outage_flows_partial_then_complete(services, topics, pg_dsn, infra, ktool,
                                            private_redis):
    # Tiers 2 and 3 only, nothing remembered: every event asks Redis, then
    # the metadata service.
    cfg = {"redis.url": private_redis.url}
    services("metadata", "enricher", topics=topics, pg_dsn=pg_dsn,
             config={"metadata": cfg,
                     "enricher": dict(cfg, **{"table.enabled": "false",
                                              "cache.positive_ttl_ms": "0",
                                              "cache.negative_ttl_ms": "0"})})
    md = services.url("metadata")
    assert post(md, "/api/metadata/hosts", SEED_HOST).status_code == 201
    assert post(md, "/api/metadata/services", SEED_SERVICE).status_code == 201
    ev = event("payment-service", source_ip="192.168.1.150")
    produce(ktool, infra.kafka.bootstrap, topics["raw"], [ev])
    assert outputs(ktool, infra, topics, [ev["id"]])[ev["id"]][0] == topics["complete"]

    private_redis.stop()
    services["metadata"].stop()
    down = []
    for i in range(20):
        down.append(event("payment-service", source_ip="192.168.1.150", seq=i))
        produce(ktool, infra.kafka.bootstrap, topics["raw"], [down[-1]])
    t_sent = time.time()
    out = outputs(ktool, infra, topics, [e["id"] for e in down], timeout=15)
    delays = []
    for e in down:
        topic, got, msg = out[e["id"]]
        assert topic == topics["partial"], got["enrichment"]
        missing = {m["lookup"]: m for m in got["enrichment"]["missing"]}
        assert missing["host"]["reason"] == "metadata_unavailable"
        assert set(missing["host"]["failed_tiers"]) == {"redis", "metadata"}
        assert missing["service"]["reason"] == "metadata_unavailable"
        delays.append(msg["timestamp"] / 1000 - t_sent)
    # None is held for long: the breakers make lookups fail fast.
    assert max(delays) < 5, delays

    private_redis.start()
    private_redis.wait_ready()
    services["metadata"].start()
    services["metadata"].wait_ready()

    def complete_again():
        ev = event("payment-service", source_ip="192.168.1.150")
        produce(ktool, infra.kafka.bootstrap, topics["raw"], [ev])
        topic, got, _ = outputs(ktool, infra, topics, [ev["id"]])[ev["id"]]
        return topic == topics["complete"] and complete_fields(got) == SEED_FIELDS

    wait_for("complete events after Redis and the metadata service returned", complete_again,
             20, 0.5)
    after = [event("payment-service", source_ip="192.168.1.150") for _ in range(5)]
    produce(ktool, infra.kafka.bootstrap, topics["raw"], after)
    out = outputs(ktool, infra, topics, [e["id"] for e in after])
    assert all(out[e["id"]][0] == topics["complete"] for e in after)


def test_tier1_keeps_known_hosts_complete_during_outage(services, topics, pg_dsn, infra, ktool,
                                                        private_redis):
    cfg = {"redis.url": private_redis.url}
    services("metadata", "enricher", topics=topics, pg_dsn=pg_dsn,
             config={"metadata": cfg, "enricher": cfg})
    md = services.url("metadata")
    assert post(md, "/api/metadata/hosts", SEED_HOST).status_code == 201
    assert post(md, "/api/metadata/services", SEED_SERVICE).status_code == 201
    wait_for("the tier-1 table to hold the host and the service",
             lambda: metric_value(services, 'enrichment_table_records{kind="service"}') == 1,
             10)

    private_redis.stop()
    services["metadata"].stop()
    known = [event("payment-service", source_ip="192.168.1.150") for _ in range(10)]
    unknown = event("payment-service", host=uniq("ghost"))
    produce(ktool, infra.kafka.bootstrap, topics["raw"], known + [unknown])
    out = outputs(ktool, infra, topics, [e["id"] for e in known + [unknown]], timeout=15)
    for e in known:
        topic, got, _ = out[e["id"]]
        assert topic == topics["complete"] and complete_fields(got) == SEED_FIELDS
        assert got["enrichment"]["host"]["source"] == "local"
    topic, got, _ = out[unknown["id"]]
    assert topic == topics["partial"]
    assert got["enrichment"]["missing"][0]["reason"] == "metadata_unavailable"
    health = requests.get(services.url("enricher") + "/health", timeout=5)
    assert health.status_code == 200  # Kafka is the only required dependency
    checks = health.json()["checks"]
    assert checks["redis"]["status"] == "DOWN" and checks["metadata-svc"]["status"] == "DOWN"
    private_redis.start()
    private_redis.wait_ready()


class Feeder(threading.Thread):
    """Writes events to a topic at a steady rate through one kafkatool process."""

    def __init__(self, tool, brokers, topic, rate):
        super().__init__(daemon=True)
        self.proc = subprocess.Popen([tool, "produce", brokers, topic], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.rate = rate
        self.ids = []
        self.stop_flag = threading.Event()

    def run(self):
        services = [f"svc-{i}" for i in range(12)]  # keys spread over the partitions
        n = 0
        t0 = time.monotonic()
        while not self.stop_flag.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            lines = []
            while n < due:
                ev = event(services[n % len(services)], host=f"h{n % 7}")
                self.ids.append(ev["id"])
                lines.append(json.dumps(ev) + "\n")
                n += 1
            if lines:
                self.proc.stdin.write("".join(lines))
                self.proc.stdin.flush()
            time.sleep(0.02)

    def finish(self):
        self.stop_flag.set()
        self.join(10)
        out, err = self.proc.communicate(input="", timeout=60)
        assert self.proc.returncode == 0 and "failed 0" in out, out + err
        return self.ids


def test_two_instances_split_partitions_and_lose_nothing(services, topics, infra, ktool):
    cfg = {"redis.url": "", "metadata.url": "", "table.enabled": "false",
           "kafka.session_timeout_ms": "6000"}
    a = services("enricher", topics=topics, config={"enricher": cfg})["enricher"]
    port_b = lp.free_port()
    env_b = lp.service_env("enricher", dict(services.ports, enricher=port_b), infra,
                           topics=topics, group_suffix="-" + services.run_id, log_level="debug",
                           extra=cfg)
    b = lp.ServiceProc("enricher", env_b, services.workdir / "logs" / "enricher-b.log", port_b,
                       cwd=services.workdir / "enricher-b")
    feeder = Feeder(ktool, infra.kafka.bootstrap, topics["raw"], rate=400)

    def log_size(proc):
        return proc.log_path.stat().st_size if proc.log_path.exists() else 0

    def assigned_since(proc, offset, n):
        """proc logged "n partitions assigned" after byte `offset` of its log."""
        with open(proc.log_path, errors="replace") as f:
            f.seek(offset)
            return f"kafka: {n} partitions assigned" in f.read()

    def enriching(port=None):
        """Waits until the enricher on `port` (a's by default) enriches more."""
        before = enricher_metric(services, "enrichment_attempts_total", port=port) or 0
        wait_for("the enricher enriching", lambda: (enricher_metric(
            services, "enrichment_attempts_total", port=port) or 0) > before, 20, 0.1)

    try:
        feeder.start()
        enriching()
        b.start()
        b.wait_ready()
        # Both get a share of the six partitions and both enrich.
        wait_for("the two enrichers to split the partitions",
                 lambda: assigned_since(b, 0, 3), 30)
        enriching()
        enriching(port_b)

        # A crash: a's partitions move to b after the session timeout.
        at = log_size(b)
        a.kill9()
        wait_for("b taking every partition", lambda: assigned_since(b, at, 6), 30, 0.2)
        enriching(port_b)

        # a comes back and the group rebalances again.
        at = log_size(a)
        a.start()
        a.wait_ready()
        wait_for("a taking its share again", lambda: assigned_since(a, at, 3), 30, 0.2)
        enriching()

        # An orderly leave: b's partitions go back to a.
        at = log_size(a)
        b.stop()
        wait_for("a taking every partition", lambda: assigned_since(a, at, 6), 30, 0.2)
        enriching()
    finally:
        ids = feeder.finish()
        if b.alive():
            b.stop()
    assert len(ids) > 1000
    found = {}

    def all_there():
        found.clear()
        for m in consume(ktool, infra.kafka.bootstrap, [topics["complete"], topics["partial"]],
                         wait_ms=30000):
            i = json.loads(m["value"])["id"]
            found[i] = found.get(i, 0) + 1
        lost = set(ids) - set(found)
        return not lost

    wait_for("every event produced to reach an output topic", all_there, 60, 1)
    dups = sum(c - 1 for c in found.values())
    print(f"\n{len(ids)} events, none lost, {dups} delivered twice across the rebalances")
