"""test_pipeline.py - events flow from HTTP to PostgreSQL through the real binaries.

producer -> raw-logs -> enricher -> enriched-logs-* -> consumer -> log_events,
with a real Kafka broker, Redis and PostgreSQL. Every event answered 202 must be
stored exactly once; every malformed one must get a 4xx with a JSON error.
"""

import json
import time
import urllib.error
import urllib.request
import uuid

import pytest

import infra as lp

# Every request body shape the seeds send, as written there.
SEED_SHAPES = [
    # seed 001
    {"organizationId": "my-org", "level": "INFO",
     "message": "Application started successfully", "source": "my-service"},
    {"organizationId": "test", "level": "ERROR", "message": "Test error",
     "source": "manual-test"},
    # seed 002
    {"level": "ERROR", "message": "Payment processing failed",
     "service": "payment-service", "source_ip": "192.168.1.100"},
    # seed 003
    {"correlationId": "test-1", "severity": "INFO", "message": "Test", "source": "cli",
     "timestamp": 1234567890000},
    # the rest of the contract's aliases and optional fields
    {"level": "warning", "message": "disk 91% full", "service": "storage",
     "host": "web-01", "timestamp": "2024-01-15T14:23:45.120Z",
     "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "attributes": {"disk": "/dev/sda1"},
     "region": "eu-west-1"},
    {"message": "client supplied id", "service": "billing", "id": str(uuid.uuid4())},
]

MALFORMED = [
    (b"{not json", 400),
    (b"[1, 2, 3]", 400),
    (b'"just a string"', 400),
    (b"{}", 400),
    (json.dumps({"service": "x"}).encode(), 400),                       # no message
    (json.dumps({"message": "no service"}).encode(), 400),
    (json.dumps({"message": "m", "service": "s", "level": "LOUD"}).encode(), 400),
    (json.dumps({"message": "m", "service": "s", "source_ip": "999.1.1.1"}).encode(), 400),
    (json.dumps({"message": "m", "service": "s", "timestamp": "yesterday"}).encode(), 400),
    (json.dumps({"message": "m", "service": "s", "id": "not-a-uuid"}).encode(), 400),
    (json.dumps({"message": "m", "service": "s", "attributes": [1]}).encode(), 400),
    (json.dumps({"message": "x" * 70000, "service": "s"}).encode(), 413),
    (b'{"message": "\xff\xfe", "service": "s"}', 400),                 # invalid UTF-8
]


def post(url, body, content_type="application/json", timeout=15):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def stored_counts(dsn, ids):
    """{id: number of rows} for the given ids."""
    if not ids:
        return {}
    lst = ",".join(f"'{i}'" for i in ids)
    out = lp.psql(dsn, f"SELECT id, count(*) FROM log_events WHERE id IN ({lst}) GROUP BY id")
    res = {}
    for line in out.splitlines():
        if line:
            k, v = line.split("|")
            res[k] = int(v)
    return res


def wait_stored(dsn, ids, timeout=30.0):
    deadline = time.monotonic() + timeout
    counts = {}
    while time.monotonic() < deadline:
        counts = stored_counts(dsn, ids)
        if len(counts) == len(ids):
            return counts
        time.sleep(0.2)
    return counts


def metric(svc, name):
    status, body = svc.get("/metrics", timeout=3)
    assert status == 200
    total = 0.0
    found = False
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


@pytest.fixture
def pipeline(services, topics, pg_dsn):
    procs = services("producer", "enricher", "consumer", topics=topics, pg_dsn=pg_dsn)
    return procs, pg_dsn


def test_every_seed_shape_is_stored_exactly_once(pipeline):
    procs, dsn = pipeline
    url = procs["producer"].url
    ids = []
    for body in SEED_SHAPES:
        status, raw, _ = post(url + "/api/logs", body)
        assert status == 202, (body, status, raw)
        reply = json.loads(raw)
        assert reply["status"] == "success"
        assert reply["message"] == "Log event queued for processing"
        uuid.UUID(reply["id"])
        if "id" in body:
            assert reply["id"] == body["id"]
        ids.append(reply["id"])
    counts = wait_stored(dsn, ids)
    assert counts == {i: 1 for i in ids}

    # The aliases landed in the right columns.
    row = lp.psql(dsn, f"SELECT level, service, tenant, correlation_id, ts FROM log_events "
                       f"WHERE id = '{ids[3]}'")
    level, service, tenant, corr, ts = row.split("|")
    assert (level, service, corr) == ("INFO", "cli", "test-1")
    assert ts.startswith("2009-02-13 23:31:30")
    row = lp.psql(dsn, f"SELECT level, tenant, attributes->>'region' FROM log_events "
                       f"WHERE id = '{ids[4]}'")
    assert row.split("|") == ["WARN", "", "eu-west-1"]
    assert lp.psql(dsn, f"SELECT tenant FROM log_events WHERE id = '{ids[0]}'") == "my-org"


def test_batch_array_and_ndjson(pipeline):
    procs, dsn = pipeline
    url = procs["producer"].url + "/api/logs/batch"
    good = [{"message": f"batch event {i}", "service": "batcher", "level": "DEBUG"}
            for i in range(50)]
    status, raw, _ = post(url, good)
    assert status == 202, raw
    reply = json.loads(raw)
    assert len(reply["results"]) == 50
    ids = [r["id"] for r in reply["results"]]
    assert [r["index"] for r in reply["results"]] == list(range(50))

    # NDJSON with one bad line in the middle: 207, results in request order.
    lines = [json.dumps({"message": "nd 0", "service": "nd"}), "{broken",
             json.dumps({"message": "nd 2", "source": "nd"}),
             json.dumps({"service": "nd"})]
    status, raw, _ = post(url, "\n".join(lines).encode(), "application/x-ndjson")
    assert status == 207, raw
    res = json.loads(raw)["results"]
    assert [r["status"] for r in res] == ["accepted", "rejected", "accepted", "rejected"]
    assert res[1]["error"]["code"] and res[3]["error"]["code"]
    ids += [res[0]["id"], res[2]["id"]]

    # JSON Lines is an NDJSON type too, parameters aside.
    lines = [json.dumps({"message": f"jl {i}", "service": "jl"}) for i in range(2)]
    status, raw, _ = post(url, "\n".join(lines).encode(), "application/jsonl; charset=utf-8")
    assert status == 202, raw
    ids += [r["id"] for r in json.loads(raw)["results"]]

    # Nothing valid at all: 400.
    status, raw, _ = post(url, [{"service": "x"}, 5])
    assert status == 400, raw
    assert [r["status"] for r in json.loads(raw)["results"]] == ["rejected", "rejected"]

    counts = wait_stored(dsn, ids)
    assert counts == {i: 1 for i in ids}


def test_malformed_input_gets_json_4xx(pipeline):
    procs, dsn = pipeline
    url = procs["producer"].url + "/api/logs"
    before = int(lp.psql(dsn, "SELECT count(*) FROM log_events"))
    for body, want in MALFORMED:
        status, raw, _ = post(url, body)
        assert status == want, (body[:60], status, raw[:200])
        err = json.loads(raw)
        assert err["status"] == "error", raw
        assert err["error"]["code"] and err["error"]["message"], raw
    status, raw, _ = post(url, SEED_SHAPES[0], content_type="text/plain")
    assert status == 415, raw
    assert json.loads(raw)["error"]["code"]
    # The media type is compared whole (issue 18): a type that merely starts
    # with application/json is not JSON; JSON Lines is for batches only.
    for ctype in ("application/jsonl", "application/jsonfoo"):
        status, raw, _ = post(url, SEED_SHAPES[0], content_type=ctype)
        assert status == 415, (ctype, raw)
        assert ctype in json.loads(raw)["error"]["message"], raw
    status, raw, _ = post(url + "/batch", [SEED_SHAPES[0]], content_type="application/jsonfoo")
    assert status == 415, raw
    # Nothing malformed reached storage (give the pipeline a moment).
    time.sleep(1.0)
    assert int(lp.psql(dsn, "SELECT count(*) FROM log_events")) == before
    assert procs["producer"].alive()


def test_processed_counter_counts_stored_events(pipeline):
    procs, dsn = pipeline
    url = procs["producer"].url + "/api/logs/batch"
    status, raw, _ = post(url, [{"message": f"m{i}", "service": "count"} for i in range(20)])
    assert status == 202
    ids = [r["id"] for r in json.loads(raw)["results"]]
    assert len(wait_stored(dsn, ids)) == 20
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (metric(procs["consumer"], "log_events_processed_total") or 0) >= 20:
            break
        time.sleep(0.2)
    assert metric(procs["consumer"], "log_events_processed_total") >= 20


def test_all_six_services_serve_health_and_metrics(services, topics, pg_dsn):
    procs = services("producer", "enricher", "consumer", "metadata", "generator", "gateway",
                     topics=topics, pg_dsn=pg_dsn)
    for name, p in procs.items():
        for path in ("/health/live", "/health", "/metrics"):
            status, body = p.get(path, timeout=5)
            assert status in (200, 503), (name, path, status, body[:200])
            if path == "/health":
                doc = json.loads(body)
                assert doc["status"] in ("UP", "DOWN"), (name, doc)
        status, body = p.get("/health/live", timeout=5)
        assert status == 200, (name, body)
        # Ready within a few seconds: every dependency is up.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, body = p.get("/health/ready", timeout=5)
            if status == 200:
                break
            time.sleep(0.3)
        assert status == 200, (name, body[:300])
