"""test_otlp.py - OTLP/HTTP logs (POST /v1/logs) through the gateway into PostgreSQL.

What is checked, with the real gateway, producer, enricher, consumer, Kafka and
PostgreSQL:
  * the official OpenTelemetry JS SDK (sdk-logs with the OTLP/HTTP protobuf and
    JSON exporters, tests/otlp/export.js, driven by node) exports through the
    gateway, gzip'd or not, and every record is stored once with its fields
    mapped (docs/otlp.md): time, severity, body (a map body kept as JSON),
    service.name, host.name, trace and span ids, resource, scope and record
    attributes;
  * the replies the protocol asks for: 200 with an ExportLogsServiceResponse in
    the request's encoding, partialSuccess counting invalid records (which are
    not stored while the valid ones are), 400 with a google.rpc.Status for a
    body that does not decode, 415 for another type or encoding, 413 for a gzip
    body inflating past the body limit;
  * OTLP JSON's spellings: 64-bit integers as strings or numbers, enum names;
  * trace context end to end: a traceparent on POST /api/logs and
    /api/logs/batch becomes the event's trace_id/span_id, travels as Kafka
    headers on raw-logs and the enriched topic, is stored, and
    GET /api/logs?trace_id= finds the events (and an OTLP record's own ids).

Protobuf bodies the SDK cannot be made to send (invalid records, garbage) are
written with the few lines of encoder below.
"""

import gzip
import json
import os
import shutil
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

import infra as lp

BIN = lp.bin_dir()
OTLP_DIR = Path(__file__).resolve().parents[1] / "otlp"
TRACE = "5b8efff798038103d269b633813fc60c"
SPAN = "eee19b7ec3c1b174"


def need(*names):
    missing = [n for n in names if not (BIN / f"logpipe-{n}").is_file()]
    if missing:
        pytest.skip("not built: " + ", ".join("logpipe-" + n for n in missing))


def wait_for(what, fn, timeout, interval=0.3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout} s (last: {last!r})")


def rows(dsn, where):
    """The stored events matching where, as dicts (row_to_json)."""
    out = lp.psql(dsn, "SELECT row_to_json(e)::jsonb || jsonb_build_object('ts_ms', "
                       f"(extract(epoch FROM ts) * 1000)::bigint) FROM log_events e "
                       f"WHERE {where} ORDER BY ts")
    return [json.loads(line) for line in out.splitlines() if line]


@pytest.fixture
def gw(services, topics, pg_dsn):
    need("gateway", "producer", "enricher", "consumer")
    services("producer", "enricher", "consumer", "gateway", topics=topics, pg_dsn=pg_dsn,
             config={"producer": {"http.max_body": 65536}})
    return services.url("gateway"), pg_dsn


def sdk_export(spec, tmp_path):
    """Runs tests/otlp/export.js on spec; returns its results line."""
    if not shutil.which("node") or not (OTLP_DIR / "node_modules").is_dir():
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=OTLP_DIR, capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, npm_config_cache=str(
                               OTLP_DIR.parents[1] / ".cache" / "npm")))
        if r.returncode != 0:
            pytest.skip(f"the OpenTelemetry JS SDK cannot be installed: {r.stderr[-300:]}")
    path = tmp_path / f"spec-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(spec))
    r = subprocess.run(["node", str(OTLP_DIR / "export.js"), str(path)], capture_output=True,
                       text=True, timeout=60)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0, (out, r.stderr[-2000:])
    return out


@pytest.mark.parametrize("protocol,compression", [("json", "none"), ("proto", "gzip"),
                                                  ("proto", "none")])
def test_sdk_export_is_stored_with_its_fields(gw, tmp_path, protocol, compression):
    url, dsn = gw
    run = uuid.uuid4().hex[:10]
    svc = f"otel-{protocol}-{run}"
    spec = {
        "url": url + "/v1/logs", "protocol": protocol, "compression": compression,
        "resource": {"service.name": svc, "host.name": "otel-host-1",
                     "deployment.environment": "test"},
        "scope": {"name": "checkout.logger", "version": "1.2.3"},
        "records": [
            {"severityNumber": 17, "severityText": "ERROR", "body": "payment failed",
             "attributes": {"order.id": "o-17", "n": 0, "retry": True, "amount": 12.5},
             "timestampMs": 1700000000123, "traceId": TRACE, "spanId": SPAN},
            {"severityNumber": 0, "severityText": "warning",
             "body": {"event": "cache_miss", "keys": ["a", "b"], "count": 2},
             "attributes": {"n": 1}, "timestampMs": 1700000001000},
            {"severityNumber": 10, "body": "plain info", "attributes": {"n": 2},
             "timestampMs": 1700000002000},
        ],
    }
    out = sdk_export(spec, tmp_path)
    assert len(out["results"]) == 1, out  # one export request, all three records

    got = wait_for("the three records stored", lambda: (
        lambda r: r if len(r) == 3 else None)(rows(dsn, f"service = '{svc}'")), 60)
    by_n = {r["attributes"]["n"]: r for r in got}
    assert sorted(by_n) == [0, 1, 2]

    err = by_n[0]
    assert err["message"] == "payment failed"
    assert err["level"] == "ERROR"
    assert err["host"] == "otel-host-1"
    assert err["ts_ms"] == 1700000000123
    assert err["correlation_id"] == TRACE
    a = err["attributes"]
    assert a["order.id"] == "o-17" and a["retry"] is True and a["amount"] == 12.5
    assert a["otel.resource"]["deployment.environment"] == "test"
    assert "service.name" not in a["otel.resource"] and "host.name" not in a["otel.resource"]
    assert a["otel.scope"]["name"] == "checkout.logger"
    assert a["otel.scope"]["version"] == "1.2.3"

    warn = by_n[1]
    assert warn["level"] == "WARN"
    body = {"event": "cache_miss", "keys": ["a", "b"], "count": 2}
    assert warn["attributes"]["otel.body"] == body
    assert json.loads(warn["message"]) == body
    assert warn["attributes"]["otel.severity_text"] == "warning"

    assert by_n[2]["level"] == "INFO" and by_n[2]["message"] == "plain info"


# ---- hand-made bodies ----------------------------------------------------------

def _varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_bytes(num, data):
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def pb_str(num, s):
    return pb_bytes(num, s.encode())


def pb_int(num, v):
    return _varint(num << 3) + _varint(v)


def pb_fixed64(num, v):
    return _varint(num << 3 | 1) + struct.pack("<Q", v)


def pb_kv(key, value):
    return pb_str(1, key) + pb_bytes(2, pb_str(1, value))


def pb_request(service, records):
    resource = pb_bytes(1, pb_bytes(1, pb_kv("service.name", service)))
    scope_logs = b"".join(pb_bytes(2, r) for r in records)
    return pb_bytes(1, resource + pb_bytes(2, scope_logs))


def pb_record(body, trace=b"", ts_ns=0, sev=9):
    rec = pb_fixed64(1, ts_ns) + pb_int(2, sev) + pb_bytes(5, pb_str(1, body))
    if trace:
        rec += pb_bytes(9, trace)
    return rec


def pb_fields(data):
    """{field number: [values]} of one protobuf message (varints and bytes)."""
    out, i = {}, 0
    while i < len(data):
        key, i = _read_varint(data, i)
        if key & 7 == 0:
            v, i = _read_varint(data, i)
        elif key & 7 == 2:
            n, i = _read_varint(data, i)
            v, i = data[i:i + n], i + n
        else:
            raise ValueError(f"wire type {key & 7}")
        out.setdefault(key >> 3, []).append(v)
    return out


def _read_varint(data, i):
    shift = n = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def post(url, data, content_type, **headers):
    return requests.post(url + "/v1/logs", data=data, timeout=15,
                         headers=dict({"Content-Type": content_type}, **headers))


def test_json_partial_success_and_spellings(gw):
    url, dsn = gw
    svc = f"otel-json-{uuid.uuid4().hex[:8]}"
    req = {"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
        "scopeLogs": [{"logRecords": [
            {"timeUnixNano": "1700000000000000000", "severityNumber": 9,
             "body": {"stringValue": "good 1"},
             "attributes": [{"key": "big", "value": {"intValue": "9007199254740993"}}],
             "traceId": TRACE.upper(), "spanId": SPAN},
            {"timeUnixNano": 1700000001000000000, "severityNumber": "SEVERITY_NUMBER_WARN",
             "body": {"stringValue": "good 2"},
             "attributes": [{"key": "small", "value": {"intValue": 7}}]},
            {"body": {"stringValue": "bad trace id"}, "traceId": "abc"},
            {"body": {"stringValue": "bad value"},
             "attributes": [{"key": "x", "value": {"boolValue": "yes"}}]},
        ]}]}]}
    r = post(url, json.dumps(req), "application/json")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    ps = r.json()["partialSuccess"]
    assert int(ps["rejectedLogRecords"]) == 2
    assert "traceId" in ps["errorMessage"]

    got = wait_for("the two valid records stored", lambda: (
        lambda x: x if len(x) == 2 else None)(rows(dsn, f"service = '{svc}'")), 60)
    assert [g["message"] for g in got] == ["good 1", "good 2"]
    assert got[0]["attributes"]["big"] == 9007199254740993
    assert got[0]["correlation_id"] == TRACE
    assert got[1]["level"] == "WARN" and got[1]["attributes"]["small"] == 7

    # All valid: an empty response, no partialSuccess.
    ok = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "x"}}]}]}]}
    r = post(url, json.dumps(ok), "application/json")
    assert r.status_code == 200 and r.json() == {}, r.text
    # gzip'd JSON.
    r = post(url, gzip.compress(json.dumps(ok).encode()), "application/json",
             **{"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json() == {}, r.text


def test_protobuf_partial_success(gw):
    url, dsn = gw
    svc = f"otel-pb-{uuid.uuid4().hex[:8]}"
    body = pb_request(svc, [pb_record("pb good", bytes.fromhex(TRACE), 1700000000000000000),
                            pb_record("pb bad id", b"\x01\x02\x03")])
    r = post(url, body, "application/x-protobuf")
    assert r.status_code == 200, r.content
    assert r.headers["Content-Type"] == "application/x-protobuf"
    ps = pb_fields(pb_fields(r.content)[1][0])
    assert ps[1] == [1] and b"traceId" in ps[2][0]
    got = wait_for("the valid record stored", lambda: rows(dsn, f"service = '{svc}'"), 60)
    assert [g["message"] for g in got] == ["pb good"]
    assert got[0]["correlation_id"] == TRACE

    r = post(url, pb_request(svc, [pb_record("fine")]), "application/x-protobuf")
    assert r.status_code == 200 and r.content == b"", r.content


def test_refusals_are_the_protocols(gw):
    url, _ = gw
    # Not protobuf: 400 with a google.rpc.Status (code 3, INVALID_ARGUMENT).
    r = post(url, b"\xff\xff\xff\xff garbage", "application/x-protobuf")
    assert r.status_code == 400, r.content
    st = pb_fields(r.content)
    assert st[1] == [3] and st[2][0]
    r = post(url, b"{not json", "application/json")
    assert r.status_code == 400 and r.json()["code"] == 3, r.text
    r = post(url, b"[1, 2]", "application/json")
    assert r.status_code == 400 and r.json()["code"] == 3, r.text
    # Another type or encoding.
    assert post(url, b"x", "text/plain").status_code == 415
    assert post(url, b"x", "application/json", **{"Content-Encoding": "br"}).status_code == 415
    # Broken gzip, and gzip inflating past the producer's 64 KiB body limit.
    r = post(url, b"\x1f\x8b\x08\x00broken", "application/json", **{"Content-Encoding": "gzip"})
    assert r.status_code == 400, r.text
    bomb = gzip.compress(b" " * (2 << 20))
    r = post(url, bomb, "application/json", **{"Content-Encoding": "gzip"})
    assert r.status_code == 413, r.text
    # Nesting deeper than the decoder's bound, in both encodings: refused whole.
    deep = pb_str(1, "leaf")
    for _ in range(200):
        deep = pb_bytes(6, pb_bytes(1, pb_str(1, "k") + pb_bytes(2, deep)))
    rec = pb_bytes(5, deep)
    r = post(url, pb_bytes(1, pb_bytes(2, pb_bytes(2, rec))), "application/x-protobuf")
    assert r.status_code == 400, r.content
    deep_json = '{"stringValue":"x"}'
    for _ in range(40):
        deep_json = '{"kvlistValue":{"values":[{"key":"k","value":%s}]}}' % deep_json
    doc = '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":%s}]}]}]}' % deep_json
    r = post(url, gzip.compress(doc.encode()), "application/json",
             **{"Content-Encoding": "gzip"})
    assert r.status_code == 400, r.text
    # And the producer still serves.
    ok = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "y"}}]}]}]}
    assert post(url, json.dumps(ok), "application/json").status_code == 200


def test_rate_limited_export_is_told_when_to_retry(services, topics, pg_dsn):
    """Past the gateway's ingest limit an export gets the protocol's
    retryable 429 with Retry-After (the SDKs' exporters wait that long), and
    is admitted again once the window has passed."""
    need("gateway", "producer")
    services("producer", "gateway", topics=topics, pg_dsn=pg_dsn,
             config={"gateway": {"ratelimit.rate": 3}})
    url = services.url("gateway")
    doc = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"body": {"stringValue": "limited"}}]}]}]})
    codes = [post(url, doc, "application/json") for _ in range(12)]
    statuses = [r.status_code for r in codes]
    assert set(statuses) <= {200, 429}, statuses
    assert 200 in statuses and 429 in statuses, statuses
    limited = next(r for r in codes if r.status_code == 429)
    wait = int(limited.headers["Retry-After"])
    assert 1 <= wait <= 2, limited.headers
    time.sleep(wait)
    r = post(url, doc, "application/json")
    assert r.status_code == 200, r.text


# ---- trace context ---------------------------------------------------------------

def consume(tool, brokers, topic, wait_ms=5000):
    r = subprocess.run([tool, "consume", brokers, topic, "0", "500", str(wait_ms)],
                       capture_output=True, text=True, timeout=wait_ms / 1000 + 30)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def test_trace_context_end_to_end(gw, services, topics, infra, kafkatool):
    url, dsn = gw
    trace = uuid.uuid4().hex
    tp = f"00-{trace}-00f067aa0ba902b7-01"
    svc = f"traced-{uuid.uuid4().hex[:8]}"
    r = requests.post(url + "/api/logs", json={"message": "one", "service": svc},
                      headers={"traceparent": tp}, timeout=15)
    assert r.status_code == 202, r.text
    one = r.json()["id"]
    r = requests.post(url + "/api/logs/batch", json=[{"message": "two", "service": svc}],
                      headers={"traceparent": tp}, timeout=15)
    assert r.status_code == 202, r.text
    two = r.json()["results"][0]["id"]
    # An OTLP record's own ids win over the request's traceparent.
    otlp = {"resourceLogs": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": svc}}]},
        "scopeLogs": [{"logRecords": [{"body": {"stringValue": "three"},
                                       "traceId": trace, "spanId": "1111111111111111"}]}]}]}
    r = requests.post(url + "/v1/logs", json=otlp, headers={"traceparent": tp}, timeout=15)
    assert r.status_code == 200 and r.json() == {}, r.text

    def found():
        r = requests.get(url + "/api/logs", params={"trace_id": trace.upper()}, timeout=10)
        assert r.status_code == 200, r.text
        logs = r.json()["logs"]
        seen.append(r.text[:3000])
        return logs if len(logs) == 3 else None
    seen = []
    try:
        logs = wait_for("the three events found by trace_id", found, 30)
    finally:
        print("last answer:", seen[-1:] , rows(dsn, f"service = '{svc}'"))
    by_msg = {x["message"]: x for x in logs}
    assert {x["trace_id"] for x in logs} == {trace}
    # The gateway continues the caller's trace with a span of its own.
    assert by_msg["one"]["span_id"] and by_msg["one"]["id"] == one
    assert by_msg["two"]["id"] == two
    assert by_msg["three"]["span_id"] == "1111111111111111"
    r = requests.get(url + "/api/logs", params={"trace_id": "nothex"}, timeout=10)
    assert r.status_code == 400, r.text

    # The headers on every topic the events passed.
    for role in ("raw", "complete", "partial"):
        msgs = [m for m in consume(kafkatool, infra.kafka.bootstrap, topics[role])
                if json.loads(m["value"]).get("service") == svc]
        if role == "raw":
            assert len(msgs) == 3, msgs
        for m in msgs:
            h = m["headers"]
            assert h["trace_id"] == trace, m
            ev = json.loads(m["value"])
            assert h["span_id"] == ev["span_id"]
            assert h["traceparent"] == f"00-{trace}-{ev['span_id']}-01"
    enriched = [m for role in ("complete", "partial")
                for m in consume(kafkatool, infra.kafka.bootstrap, topics[role])
                if json.loads(m["value"]).get("service") == svc]
    assert len(enriched) == 3

    # The gateway's access lines name the trace beside the request id.
    def access_lines():
        text = services["gateway"].log_path.read_text(errors="replace")
        lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
        got = [x for x in lines if x.get("msg") == "access" and x.get("trace_id") == trace]
        return got if len(got) >= 3 else None
    got = wait_for("the access lines with the trace id", access_lines, 15)
    assert {"/api/logs", "/api/logs/batch", "/v1/logs"} <= {x["path"] for x in got}, got
    assert all(x["request_id"] not in ("", "-") for x in got), got
