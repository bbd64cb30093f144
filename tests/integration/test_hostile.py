"""test_hostile.py - hostile HTTP input against every endpoint of every service.

All six services run (real Kafka, Redis, PostgreSQL) and get, over raw
sockets where the protocol itself is broken:

  protocol   garbage request lines, HTTP/0.9 and unknown versions, junk
             methods, NUL bytes in the request line, headers and the
             (percent-encoded) path, header floods (many and huge
             headers), overlong URLs, path traversal, invalid, huge,
             negative and conflicting Content-Length, broken chunked
             encoding, absolute-form and CONNECT/OPTIONS * targets;
  bodies     on every endpoint that takes one: malformed, truncated and
             non-JSON bodies, invalid UTF-8, 10,000-deep nesting, 1e999
             and 2^70, raw and escaped NULs, wrongly typed fields, wrong
             content types, oversized bodies (sent, and only announced),
             and a body cut short by the client;
  methods    every method an endpoint does not serve (405 with Allow);
  paths      traversal, encoded NUL, invalid UTF-8 and overlong ids in the
             wildcard routes, and junk query parameters on the list routes;
  slowness   slowloris headers (one byte every 0.5 s), an idle connection, a
             body trickled one byte every 0.5 s, a body that stops halfway:
             each must end (close, 408 or 400) within the server's request
             timeout plus a margin; the four run at once on every service.

Every answer must be a 4xx from the expected set for the case, or a clean
close, within a bounded time; never a 5xx (505 for an unknown HTTP version
is the one exception, see docs/chaos.md), never a hang.  Throughout, a
probe thread asks every service for GET /health/live twice a second and
each must keep answering; at the end every process must still be running.

Answers are collected per case and service; with HOSTILE_TABLE=FILE the
table is written there as Markdown (it is the "Hostile input" section of
docs/chaos.md).  Every case is strict: an answer outside its expected set
fails (405, 413, 415, 400 for bodies and junk queries, 431/400 for header
floods, 408/close for slow clients), and so does any liveness probe miss.
The only answers recorded rather than failed are the deliberate
Content-Type leniencies in KNOWN, each printed at the end.

The route table below is checked against the sources (lp_http_route,
lp_http_route_async, add_route, gw_route calls, the built-ins of common/src/http.c, and the
patterns metadata-svc builds from its record kinds), both ways, so a new
route without hostile coverage, or a registration the check cannot read,
fails test_route_table_covers_the_sources.
"""

import gzip
import http.client
import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

import infra as lp
from conftest import Services, sanitizer_reports

REPO = Path(__file__).resolve().parents[2]

REQUEST_TIMEOUT = 10.0   # the services' default http.request_timeout_ms / 1000
SLACK = 6.0              # scheduling margin on a busy machine
ANSWER_TIMEOUT = 20.0    # no answer within this is a hang

HOST, SVC = "hostile-host", "hostile-svc"
LOG_ID = str(uuid.uuid4())

# ---- the endpoints (from lp_http_route[_async] / add_route / gw_route in the sources) ----------
# (method, path, body kind).  Body kinds: event, batch, host, service, generator,
# control; None: the endpoint takes no body.

BUILTINS = ["/health/live", "/health/ready", "/health", "/metrics",
            "/actuator/health/liveness", "/actuator/health/readiness", "/actuator/health",
            "/actuator/prometheus"]


def _metadata(prefix=""):
    p = prefix + "/api/metadata"
    return [
        ("GET", f"{p}/hosts", None), ("POST", f"{p}/hosts", "host"),
        ("GET", f"{p}/hosts/by-ip/10.200.0.1", None),
        ("GET", f"{p}/hosts/{HOST}", None), ("PUT", f"{p}/hosts/{HOST}", "host"),
        ("PATCH", f"{p}/hosts/{HOST}", "host"), ("DELETE", f"{p}/hosts/nobody-{HOST}", None),
        ("GET", f"{p}/services", None), ("POST", f"{p}/services", "service"),
        ("GET", f"{p}/services/{SVC}", None), ("PUT", f"{p}/services/{SVC}", "service"),
        ("PATCH", f"{p}/services/{SVC}", "service"),
        ("DELETE", f"{p}/services/nobody-{SVC}", None),
    ]


ROUTES = {
    "producer": [("POST", "/api/logs", "event"), ("POST", "/api/logs/batch", "batch"),
                 ("POST", "/v1/logs", "otlp")],
    "metadata": _metadata(),
    "enricher": [],
    "consumer": [("GET", "/api/logs", None), ("GET", f"/api/logs/{LOG_ID}", None),
                 ("GET", "/api/stats", None)],
    "generator": [("POST", "/api/v1/generator/start", "generator"),
                  ("POST", "/api/v1/generator/stop", None),
                  ("GET", "/api/v1/generator/status", None),
                  ("GET", "/api/v1/generator/catalog", None),
                  ("POST", "/start", "generator"), ("POST", "/stop", None)],
    "gateway": [("GET", "/", None), ("GET", "/api/v1/pipeline", None),
                ("GET", "/api/v1/control/status", None),
                ("POST", "/api/v1/control/hostile/status", "control"),
                ("GET", "/api/logs/health", None), ("POST", "/api/logs", "event"),
                ("GET", "/api/logs", None), ("POST", "/api/logs/batch", "batch"),
                ("POST", "/v1/logs", "otlp"),
                ("GET", f"/api/logs/{LOG_ID}", None), ("GET", "/api/stats", None)]
               + _metadata()
               + [("GET", "/api/v1/generator/status", None),
                  ("POST", "/api/v1/generator/start", "generator"),
                  ("POST", "/api/v1/generator/stop", None),
                  # Seed 004's names.
                  ("GET", "/monitor", None), ("POST", "/start", "generator"),
                  ("POST", "/stop", None), ("GET", "/control/status", None),
                  ("POST", "/control/hostile/status", "control"),
                  ("GET", "/chaos/status", None)],
}
# Route patterns as registered, per service: what the method sweep and the
# source check use.  "*" stands for one or more segments.
PATTERNS = {
    "producer": {"/api/logs": {"POST"}, "/api/logs/batch": {"POST"}, "/v1/logs": {"POST"}},
    "metadata": {"/api/metadata/hosts": {"GET", "POST"},
                 "/api/metadata/hosts/by-ip/*": {"GET"},
                 "/api/metadata/hosts/*": {"GET", "PUT", "PATCH", "DELETE"},
                 "/api/metadata/services": {"GET", "POST"},
                 "/api/metadata/services/*": {"GET", "PUT", "PATCH", "DELETE"}},
    "enricher": {},
    # /api/logs/tail is swept for wrong methods only: a valid GET is a stream
    # that does not end (test_tail.py checks its filters and refusals).
    "consumer": {"/api/logs": {"GET"}, "/api/logs/*": {"GET"}, "/api/stats": {"GET"},
                 "/api/logs/tail": {"GET"}},
    "generator": {"/api/v1/generator/start": {"POST"}, "/api/v1/generator/stop": {"POST"},
                  "/api/v1/generator/status": {"GET"}, "/api/v1/generator/catalog": {"GET"},
                  "/start": {"POST"}, "/stop": {"POST"}},
    "gateway": {"/": {"GET"}, "/api/v1/pipeline": {"GET"},
                "/api/v1/control/*": {"GET", "POST"},
                "/api/logs/health": {"GET"}, "/api/logs": {"GET", "POST"},
                "/api/logs/batch": {"POST"}, "/api/logs/*": {"GET"}, "/api/stats": {"GET"},
                "/v1/logs": {"POST"}, "/api/logs/tail": {"GET"},
                "/api/metadata/hosts": {"GET", "POST", "PUT", "PATCH", "DELETE"},
                "/api/metadata/hosts/*": {"GET", "POST", "PUT", "PATCH", "DELETE"},
                "/api/metadata/services": {"GET", "POST", "PUT", "PATCH", "DELETE"},
                "/api/metadata/services/*": {"GET", "POST", "PUT", "PATCH", "DELETE"},
                "/api/v1/generator/*": {"GET", "POST", "PUT", "PATCH", "DELETE"},
                "/monitor": {"GET"}, "/start": {"POST"}, "/stop": {"POST"},
                "/control/*": {"GET", "POST"}, "/chaos/*": {"GET", "POST"}},
}
SAMPLE = {"*": "x1"}  # what a wildcard becomes in the method sweep
SOURCES = {"producer": "producer", "metadata": "metadata-svc", "enricher": "enricher",
           "consumer": "consumer", "generator": "generator", "gateway": "gateway"}

# ---- raw HTTP ---------------------------------------------------------------------------------

_STATUS = re.compile(rb"^HTTP/\d\.\d (\d{3})")


class Answer:
    """What a raw exchange produced: a status, a clean close, or nothing in time."""

    def __init__(self, status=None, head=b"", body=b"", secs=0.0, outcome="answer"):
        self.status = status
        self.head = head
        self.body = body
        self.secs = secs
        self.outcome = outcome  # answer, close, reset, hang

    def label(self, timed=False):
        if self.outcome == "answer":
            s = str(self.status)
        else:
            s = self.outcome
        return f"{s} ({self.secs:.1f} s)" if timed else s

    def header(self, name):
        for line in self.head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == name.lower().encode():
                return v.strip().decode("latin-1")
        return None

    def __repr__(self):
        return f"<{self.label(True)} {self.head[:200]!r} {self.body[:200]!r}>"


def raw(port, pieces, gap=0.0, shut_wr=False, timeout=ANSWER_TIMEOUT):
    """Sends pieces (bytes or a list of bytes, gap seconds apart) on a fresh
    connection from a helper thread and reads one answer meanwhile.

    The answer is framed by Content-Length; a close before any byte is
    "close" ("reset" when the peer reset); nothing within timeout is "hang".
    """
    if isinstance(pieces, bytes):
        pieces = [pieces]
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    stop = threading.Event()

    def send():
        try:
            for i, p in enumerate(pieces):
                if stop.is_set():
                    return
                if i and gap:
                    if stop.wait(gap):
                        return
                s.sendall(p)
            if shut_wr:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server closed: the answer (or the close) says why

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    data = b""
    outcome = None
    try:
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                outcome = "hang"
                break
            s.settimeout(min(left, 1.0))
            try:
                b = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                outcome = "reset"
                break
            if not b:
                outcome = "close"
                break
            data += b
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
                if not m or len(body) >= int(m.group(1)):
                    break
    finally:
        stop.set()
        secs = time.monotonic() - t0
        s.close()
        sender.join(2)
    m = _STATUS.match(data)
    if m:
        head, _, body = data.partition(b"\r\n\r\n")
        return Answer(int(m.group(1)), head, body, secs)
    if data:  # bytes that are not HTTP: report them as such
        return Answer(None, data[:200], b"", secs, outcome="garbage")
    return Answer(secs=secs, outcome=outcome)


def request_bytes(method, path, body=None, ctype="application/json", extra=b""):
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
    if body is not None:
        if ctype:
            head += f"Content-Type: {ctype}\r\n".encode()
        head += f"Content-Length: {len(body)}\r\n".encode()
    return head + extra + b"\r\n" + (body or b"")


# ---- deliberate deviations ------------------------------------------------------------------------
# Answers that differ from the expected set on purpose (see docs/chaos.md):
# only deliberate leniency belongs here, never a bug.  They are recorded in
# the table and printed, not failed; a 5xx, a hang or a crash always fails.
# Keyed by (service, case prefix).
KNOWN = {
    ("metadata", "wrong content type (form)"):
        "deliberate: `curl -d` without -H sends a form type; the body is parsed as JSON",
    ("gateway", "wrong content type"):
        "the metadata service's and the generator's leniency, passed through",
    ("generator", "wrong content type"):
        "lenient: the generator parses the body as JSON whatever its Content-Type",
}


def known(service, case, target):
    for (svc, prefix), why in KNOWN.items():
        if svc == service and case.startswith(prefix):
            if svc == "gateway" and prefix == "wrong content type" and not (
                    "/api/v1/generator" in target or target == "POST /start" or
                    ("/api/metadata" in target and "(form)" in case)):
                continue
            return why
    return None


# ---- results ----------------------------------------------------------------------------------

# case -> service -> set of answer labels; case order as first seen.
RESULTS = {}
DEVIATIONS = []  # (service, case, target, answer, expected) that do not fail the test


def record(case, service, answer):
    RESULTS.setdefault(case, {}).setdefault(service, set()).add(answer)


def check(failures, service, case, target, ans, expected, strict=True, timed=False):
    """Records ans; appends to failures what is a 5xx, a hang, or (strict) unexpected."""
    label = ans.label()
    record(case, service, ans.label(timed) if timed else label)
    closed = ans.outcome in ("close", "reset")
    ok = (ans.status in expected) or (closed and "close" in expected)
    bad_5xx = ans.status is not None and ans.status >= 500 and ans.status not in expected
    why = None if ok else known(service, case, target)
    if ans.outcome in ("hang", "garbage") or bad_5xx or (strict and not ok and not why):
        failures.append(f"{service} {case} [{target}]: got {ans!r}, want {sorted(map(str, expected))}")
    elif not ok:
        DEVIATIONS.append((service, case, target, label, sorted(map(str, expected)),
                           why or "lenient"))


# ---- fixtures ---------------------------------------------------------------------------------

class Prober(threading.Thread):
    """GET /health/live on every service twice a second; remembers every miss."""

    def __init__(self, procs):
        super().__init__(daemon=True, name="liveness-probe")
        self.procs = procs
        self.misses = []
        self.probes = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.wait(0.5):
            for name, p in self.procs.items():
                t = time.monotonic()
                c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=5)
                try:
                    c.request("GET", "/health/live")
                    r = c.getresponse()
                    r.read()
                    ok = r.status == 200
                    why = r.status
                except (OSError, http.client.HTTPException) as e:
                    ok, why = False, type(e).__name__
                finally:
                    c.close()
                self.probes += 1
                if not ok:
                    self.misses.append((name, why, round(time.monotonic() - t, 1),
                                        time.strftime("%H:%M:%S")))


@pytest.fixture(scope="module")
def stack(infra, infra_dir):
    """All six services on their own topics and database, a host and a service
    record to update, and the liveness probe running."""
    suffix = uuid.uuid4().hex[:8]
    topics = {role: f"{topic}-{suffix}" for role, topic in lp.TOPIC_ROLES.items()}
    infra.kafka.create_topics({topics[r]: lp.TOPICS[t] for r, t in lp.TOPIC_ROLES.items()},
                              compacted={topics["metadata"]})
    dsn = infra.postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    svc = Services(infra, infra_dir / "tests" / f"hostile-{suffix}")
    try:
        procs = svc(*lp.SERVICES, topics=topics, pg_dsn=dsn, log_level="info", timeout=60)
        md = procs["metadata"].port
        for path, body in (("/api/metadata/hosts", {"hostname": HOST, "ipAddress": "10.200.0.1",
                                                     "datacenter": "dc-1"}),
                           ("/api/metadata/services", {"name": SVC, "team": "t"})):
            deadline = time.monotonic() + 90
            while True:  # 503 until its Kafka producer is connected
                a = raw(md, request_bytes("POST", path, json.dumps(body).encode()))
                if a.status in (201, 409) or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
            assert a.status in (201, 409), a
        prober = Prober(procs)
        prober.start()
        yield procs, prober
        prober.halt.set()
        prober.join(10)
    finally:
        failed = [n for n, p in svc.procs.items() if not p.alive()]
        for name in failed:
            print(f"\n---- {name} is not running; last lines of its log ----\n"
                  f"{svc.procs[name].log_tail(80)}")
        svc.stop_all()
    # Hostile input must not make the sanitizer build report anything either.
    reports = sanitizer_reports(svc.workdir / "logs")
    assert not reports, f"sanitizer reports in the services' logs: {reports}"


# ---- the cases --------------------------------------------------------------------------------

DEEP_ARRAY = b"[" * 10000
DEEP_OBJECT = b'{"a":' * 10000
BIG = 2 * 1024 * 1024


def valid_body(kind):
    return {
        "event": {"message": "hostile", "service": "hostile"},
        "batch": [{"message": "hostile", "service": "hostile"}],
        "host": {"hostname": HOST, "datacenter": "dc-2"},
        "service": {"name": SVC, "team": "t2"},
        "generator": {"rate": 1, "duration": 1},
        "control": {},
        "otlp": {"resourceLogs": [{"scopeLogs": [{"logRecords": [
            {"body": {"stringValue": "hostile"}}]}]}]},
    }[kind]


def typed_bodies(kind):
    """Bodies with a field of the wrong type or range, per endpoint kind."""
    big = 2 ** 70
    return {
        "event": [{"message": 123, "service": "s"}, {"message": "m", "service": ["s"]},
                  {"message": "m", "service": "s", "level": 5},
                  {"message": "m", "service": "s", "timestamp": True},
                  {"message": "m", "service": "s", "timestamp": big},
                  {"message": "m", "service": "s", "attributes": "x"},
                  {"message": "m", "service": "s", "id": 42},
                  {"message": "m", "service": "s", "source_ip": 1234},
                  [{"message": "m", "service": "s"}]],
        "batch": [[1, "x", None, []], [], "text", [{"message": 5, "service": {}}]],
        "host": [{"hostname": 5}, {"hostname": ["h"]},
                 {"hostname": HOST, "ipAddress": 12},
                 {"hostname": HOST, "ipAddress": "999.1.1.1"},
                 {"hostname": HOST, "tags": "x"}, {"hostname": HOST, "datacenter": {"a": 1}},
                 [HOST]],
        "service": [{"name": 5}, {"name": SVC, "tier": []}, {"name": SVC, "team": {}},
                    [SVC]],
        "generator": [{"rate": "fast"}, {"rate": -5}, {"rate": big}, {"threads": "x"},
                      {"duration": []}, {"size": -1}, {"batch_size": big}, [1]],
        "control": [{"x": big}, [None]],
        "otlp": [{"resourceLogs": 5}, {"resourceLogs": [5]},
                 {"resourceLogs": [{"scopeLogs": "x"}]},
                 {"resourceLogs": [{"resource": {"attributes": [{"key": 5}]}}]}, [1]],
    }[kind]


def body_cases(kind):
    """(case, body bytes, content type, expected) for an endpoint taking `kind`."""
    good = json.dumps(valid_body(kind)).encode()
    if kind == "control":
        # The gateway's bridge to the local runner is not configured in tests:
        # every POST is answered before its body matters.
        expect = {400, 404}
    else:
        expect = {400}
    key = {"event": "message", "batch": "message", "host": "hostname", "service": "name",
           "generator": "mode", "control": "x", "otlp": "resourceLogs"}[kind]
    obj = valid_body(kind)
    one = obj[0] if isinstance(obj, list) else obj
    wrap = (lambda s: b"[" + s + b"]") if isinstance(obj, list) else (lambda s: s)
    with_field = lambda raw_value: wrap(  # noqa: E731
        json.dumps(one)[:-1].encode() + b', "' + key.encode() + b'_x": ' + raw_value + b"}")
    out = [
        ("malformed JSON", b'{"message": "m" "service": }', "application/json", expect),
        ("truncated JSON", good[:len(good) // 2], "application/json", expect),
        ("not JSON", b"hello world", "application/json", expect),
        # The generator starts with its defaults when the body is empty.
        ("empty body", b"", "application/json",
         expect | ({200} if kind == "generator" else set())),
        ("invalid UTF-8", wrap(b'{"' + key.encode() + b'": "\xff\xfe\xc3\x28"}'),
         "application/json", expect),
        ("deep nesting (10k '[')", DEEP_ARRAY, "application/json", expect),
        ("deep nesting (10k '{')", DEEP_OBJECT, "application/json", expect),
        ("number 1e999", with_field(b"1e999"), "application/json", expect),
        ("integer 2^70", with_field(str(2 ** 70).encode()), "application/json",
         expect | ({202} if kind in ("event", "batch") else set())),
        ("raw NUL in a string", wrap(b'{"' + key.encode() + b'": "a\x00b"}'),
         "application/json", expect),
        ("escaped \\u0000 in a string", wrap(b'{"' + key.encode() + b'": "a\\u0000b"}'),
         "application/json", expect),
        ("wrong content type (text/plain)", good, "text/plain", {415} | (expect - {400})),
        ("wrong content type (form)", good, "application/x-www-form-urlencoded",
         {415} | (expect - {400})),
    ]
    for i, b in enumerate(typed_bodies(kind)):
        out.append((f"wrongly typed fields #{i + 1}", json.dumps(b).encode(), "application/json",
                    expect))
    if kind == "batch":
        # One object is a one-line NDJSON batch: accepting it is fair.
        out.append(("batch: one object, not an array",
                    json.dumps({"message": "m", "service": "hostile"}).encode(),
                    "application/json", {202, 400}))
    return out


# A harmless POST route per service for the framing cases (the generator's
# start would start a run; enricher and consumer serve no POST at all).
POST_TARGET = {"gateway": "/api/logs", "producer": "/api/logs",
               "metadata": "/api/metadata/hosts", "generator": "/api/v1/generator/stop",
               "enricher": "/health/live", "consumer": "/health/live"}


def protocol_cases(service):
    """(case, pieces, expected, strict) on GET /health/live or a POST route."""
    post = (f"POST {POST_TARGET[service]} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\n").encode()
    many = b"".join(b"X-Flood-%d: v\r\n" % i for i in range(100))
    return [
        ("garbage request line", b"\x16\x03\x01 GARBAGE \xff\r\n\r\n", {400, "close"}, True),
        ("HTTP/0.9 request", b"GET /health/live\r\n\r\n", {400, "close"}, True),
        ("unknown HTTP version 9.9", b"GET /health/live HTTP/9.9\r\n\r\n",
         {400, 505, "close"}, True),
        ("junk method", b"FOO /health/live HTTP/1.1\r\nHost: x\r\n\r\n", {400, 405, 501}, True),
        ("TRACE", b"TRACE /health/live HTTP/1.1\r\nHost: x\r\n\r\n", {405, 400}, True),
        ("NUL in the request line", b"GET /health/\x00live HTTP/1.1\r\nHost: x\r\n\r\n",
         {400, "close"}, True),
        ("NUL in a header", b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
         {400, "close"}, True),
        ("encoded NUL in the path (%00)", b"GET /health/live%00.json HTTP/1.1\r\nHost: x\r\n\r\n",
         {400, 404}, True),
        ("100 headers", b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n",
         {431, 400, "close"}, True),
        ("one 64 KiB header", b"GET /health/live HTTP/1.1\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n",
         {431, 400, "close"}, True),
        ("9 KB URL", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", {404, 414}, True),
        ("100 KB URL", b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
         {414, 400, 431, "close"}, True),
        ("path traversal ../", b"GET /../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
         {404, 400}, True),
        ("path traversal %2e%2e", b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
         {404, 400}, True),
        ("absolute-form target", b"GET http://evil.example/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
         {400, 404, "close"}, True),
        ("CONNECT", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: x\r\n\r\n",
         {400, 405, "close"}, True),
        ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", {400, 404, 405, "close"}, True),
        ("Content-Length: -1", post + b"Content-Length: -1\r\n\r\n{}", {400, "close"}, True),
        ("Content-Length: abc", post + b"Content-Length: abc\r\n\r\n{}", {400, "close"}, True),
        ("Content-Length: 10^30", post + b"Content-Length: " + b"9" * 30 + b"\r\n\r\n{}",
         {413, 400, "close"}, True),
        ("Content-Length: 10^12, no body", post + b"Content-Length: 1000000000000\r\n\r\n",
         {413}, True),
        ("two different Content-Lengths", post + b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
         {400, "close"}, True),
        ("bad chunk size", post + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
         {400, "close"}, True),
        ("chunk size 2^72", post + b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nabc\r\n",
         {400, 413, "close"}, True),
        ("chunked 2 MiB body", [post + b"Transfer-Encoding: chunked\r\n\r\n"]
         + [b"10000\r\n" + b" " * 0x10000 + b"\r\n"] * 32 + [b"0\r\n\r\n"], {413, "close"}, True),
        ("Transfer-Encoding and Content-Length",
         post + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         {400, "close"}, True),
    ]


def flat(pieces):
    return pieces if isinstance(pieces, list) else [pieces]


def expected_methods(service, pattern):
    return PATTERNS[service][pattern]


# ---- tests ------------------------------------------------------------------------------------

SERVICE_NAMES = ["gateway", "producer", "metadata", "enricher", "consumer", "generator"]


def _c_split(text):
    """Splits a C initializer list's text at its top-level commas."""
    out, depth, cur, q = [], 0, "", None
    for ch in text:
        if q:
            cur += ch
            q = None if ch == q and not cur.endswith("\\" + q) else q
            continue
        if ch in "\"'":
            q = ch
        elif ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _struct_instances(folder):
    """{struct type: [{member: C text}]} of every `const struct T NAME = {...};`
    in folder, members named from T's definition in folder's headers."""
    members, inst = {}, {}
    texts = {f: f.read_text(errors="replace") for f in sorted(folder.glob("*.[ch]"))}
    for text in texts.values():
        for m in re.finditer(r"struct (\w+) \{([^}]*)\};", text):
            body = re.sub(r"/\*.*?\*/", "", m.group(2), flags=re.S)
            names = []
            for i, d in enumerate(x.strip() for x in body.split(";") if x.strip()):
                # A member this cannot name (a function pointer, a bit-field)
                # still takes its place.
                n = re.findall(r"(\w+)\s*(?:\[[^]]*\])?\s*$", d)
                names.append(n[0] if n else f"?{i}")
            members[m.group(1)] = names
    for text in texts.values():
        for m in re.finditer(r"const struct (\w+) \w+ = \{(.*?)\};", text, re.S):
            if m.group(1) in members:
                vals = _c_split(m.group(2))
                inst.setdefault(m.group(1), []).append(dict(zip(members[m.group(1)], vals)))
    return inst


def source_routes(folder):
    """The route patterns the C sources in folder register (lp_http_route,
    lp_http_route_async, add_route, gw_route), plus a list of calls whose pattern could not be
    worked out.  A pattern argument may be a string literal, an element of a
    string array in the same file (meta_patterns[i]), a buffer filled by
    snprintf(buf, ..., "fmt", EXPR) in the same file, or a member of a struct
    (co->k->path): then each `const struct T X = {...}` of the folder gives
    one value, and an `if (co->k->FIELD >= 0)` right before the call is
    evaluated against the same instance.  A wrapper passing on its own
    `pattern` parameter is skipped: the calls of the wrapper are read."""
    call = re.compile(r"\b(?:lp_http_route(?:_async)?|add_route|gw_route)\(\s*[\w>.-]+\s*,\s*"
                      r"(?:NULL|\"[A-Z]+\"|\w+\[\w+\])\s*,\s*([^,]+?)\s*,")
    inst = _struct_instances(folder)
    found, unknown = set(), []
    for src in sorted(folder.glob("*.c")):
        text = src.read_text(errors="replace")
        for m in call.finditer(text):
            arg = m.group(1)
            line_start = text.rfind("\n", 0, m.start()) + 1
            prev = text[:line_start].rstrip().rsplit("\n", 1)[-1].strip()
            where = f"{src.name}:{text.count(chr(10), 0, m.start()) + 1} {arg}"
            if arg.startswith('"'):
                found.add(arg.strip('"'))
                continue
            if re.fullmatch(r"(?:\w+->)?pattern", arg):
                continue  # a wrapper's own parameter (gateway's add_slot): its callers count
            am = re.fullmatch(r"(\w+)\[\w+\]", arg)
            if am:
                arr = re.search(r"\b" + am.group(1) + r"\[\]\s*=\s*\{([^}]*)\}", text)
                if arr and re.findall(r'"(/[^"]*)"', arr.group(1)):
                    found.update(re.findall(r'"(/[^"]*)"', arr.group(1)))
                else:
                    unknown.append(where)
                continue
            fmt, expr = "%s", arg
            sm = re.search(r"snprintf\(\s*" + re.escape(arg) + r'\s*,[^,]*,\s*"([^"]*)"\s*,'
                           r"\s*([^)]+?)\s*\)", text)
            if sm:
                fmt, expr = sm.group(1), sm.group(2)
            mm = re.fullmatch(r"[\w>.-]*(?:->|\.)(\w+)", expr)
            owners = [t for t, lst in inst.items() if lst and mm and mm.group(1) in lst[0]]
            if not mm or fmt.count("%s") != 1 or len(owners) != 1:
                unknown.append(where)
                continue
            guard = re.fullmatch(r"if \([\w>.-]*(?:->|\.)(\w+) >= (-?\d+)\)", prev)
            for obj in inst[owners[0]]:
                if guard and not int(obj[guard.group(1)]) >= int(guard.group(2)):
                    continue
                found.add(fmt.replace("%s", obj[mm.group(1)].strip('"'), 1))
    return found, unknown


def test_route_table_covers_the_sources():
    """The route patterns written in each service's source are exactly
    PATTERNS (plus the built-ins of common/src/http.c, which every service
    serves): a new route without hostile coverage fails, and so does a
    pattern here that no longer exists, or a registration this check cannot
    read."""
    http_c = (REPO / "common" / "src" / "http.c").read_text()
    table = re.search(r"\} builtins\[\] = \{(.*?)\};", http_c, re.S)
    assert table, "the built-in routes' table in common/src/http.c"
    builtins = re.findall(r'\{ "(/[^"]*)",', table.group(1))
    assert builtins == BUILTINS, (builtins, BUILTINS)
    problems, counts = [], {}
    for service, folder in SOURCES.items():
        found, unknown = source_routes(REPO / folder)
        problems += [f"{service}: cannot read the pattern of {u}" for u in unknown]
        if service == "gateway":
            found.discard("/*")  # the catch-all 404 route
        counts[service] = len(found) + len(builtins)
        want = set(PATTERNS[service])
        problems += [f"{service}: {p} without hostile-input coverage" for p in sorted(found - want)]
        problems += [f"{service}: {p} in PATTERNS but not in the sources"
                     for p in sorted(want - found)]
    print(f"\nroutes found in the sources (built-ins included): {counts}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_protocol_abuse(stack, service):
    procs, _ = stack
    port = procs[service].port
    failures = []
    for case, pieces, expected, strict in protocol_cases(service):
        ans = raw(port, flat(pieces))
        check(failures, service, case, "raw", ans, expected, strict)
    assert procs[service].alive(), procs[service].log_tail(60)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_hostile_bodies(stack, service):
    procs, _ = stack
    port = procs[service].port
    failures = []
    targets = [(m, p, k) for m, p, k in ROUTES[service] if k]
    for method, path, kind in targets:
        for case, body, ctype, expected in body_cases(kind):
            ans = raw(port, request_bytes(method, path, body, ctype))
            check(failures, service, case, f"{method} {path}", ans, expected)
            if kind == "generator" and ans.status and ans.status < 300:
                raw(port, request_bytes("POST", path.replace("start", "stop"), b"{}"))
        # Oversized: sent in full, and only announced.
        big = b'{"message": "' + b"x" * BIG + b'", "service": "s"}'
        ans = raw(port, [request_bytes(method, path, None)[:-2]
                         + f"Content-Type: application/json\r\nContent-Length: {len(big)}\r\n\r\n"
                         .encode(), big])
        check(failures, service, "2 MiB body", f"{method} {path}", ans, {413, "close"})
        ans = raw(port, request_bytes(method, path, None)[:-2]
                  + b"Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n")
        check(failures, service, "Content-Length 1 GiB, body never sent", f"{method} {path}",
              ans, {413})
        # Truncated: announces 1000 bytes, sends 10, closes its side.
        ans = raw(port, request_bytes(method, path, None)[:-2]
                  + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                  + b'{"message"', shut_wr=True)
        check(failures, service, "truncated body, then close", f"{method} {path}", ans,
              {400, "close"})
    if not targets:
        # No endpoint here takes a body: the built-ins must refuse one they
        # do not serve, and a GET with a body must not confuse them.
        ans = raw(port, request_bytes("POST", "/health/live", b"{}"))
        check(failures, service, "body on a GET-only route (POST)", "POST /health/live", ans,
              {405})
        ans = raw(port, request_bytes("GET", "/health/live", b"[" * 5000))
        check(failures, service, "GET with a hostile body", "GET /health/live", ans, {200, 400})
        big = b"x" * BIG
        ans = raw(port, [request_bytes("GET", "/health/live", None)[:-2]
                         + f"Content-Length: {len(big)}\r\n\r\n".encode(), big])
        check(failures, service, "2 MiB body", "GET /health/live", ans, {413, "close"})
    assert procs[service].alive(), procs[service].log_tail(60)
    assert not failures, "\n".join(failures)


# Issue 18: handlers parse bodies as JSON whatever their Content-Type (the
# producer took any "application/json..." prefix, the metadata service a form
# type, the generator anything), while the depth limit ran only for JSON
# types: 5,000 '[' typed application/jsonl killed the producer (through the
# gateway too), form-typed the metadata service, text/plain the generator.
DEEP_TYPES = ["application/jsonl", "application/x-ndjson", "application/x-www-form-urlencoded",
              "text/plain", None, "application/json; charset=utf-8"]
DEEP_BODIES = [("5k '['", b"[" * 5000), ("5k '{\"a\":'", b'{"a":' * 5000),
               ("5k '[' after a string with brackets", b'["]]]]",' + b"[" * 5000)]


def _all_alive(procs):
    return {n: p.returncode for n, p in procs.items() if not p.alive()}


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_deep_nesting_whatever_the_content_type(stack, service):
    """A deeply nested body gets a 4xx on every route of every service that
    takes a body (a POST to /health/live where none does), whatever its
    Content-Type, and every service stays alive and answering."""
    procs, _ = stack
    port = procs[service].port
    targets = [(m, p) for m, p, k in ROUTES[service] if k] or [("POST", "/health/live")]
    failures = []
    for method, path in targets:
        for ctype in DEEP_TYPES:
            for name, body in DEEP_BODIES:
                case = f"deep nesting, {name}, each Content-Type"
                target = f"{method} {path}, Content-Type: {ctype or '(none)'}"
                ans = raw(port, request_bytes(method, path, body, ctype))
                check(failures, service, case, target, ans, set(range(400, 500)))
                dead = _all_alive(procs)
                assert not dead, (f"{case} [{target}] killed {dead}: {ans!r}\n"
                                  + "\n".join(procs[n].log_tail(20) for n in dead))
                live = raw(port, request_bytes("GET", "/health/live"))
                if live.status != 200:
                    failures.append(f"{service}: /health/live after {case} [{target}]: "
                                    f"{live!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_wrong_methods(stack, service):
    procs, _ = stack
    port = procs[service].port
    failures = []
    patterns = dict(PATTERNS[service])
    patterns.update({p: {"GET"} for p in BUILTINS})
    for pattern, allowed in patterns.items():
        path = pattern.replace("*", SAMPLE["*"])
        if service == "gateway" and path.startswith("/api/v1/control/"):
            path = "/api/v1/control/status"
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            if method in allowed:
                continue
            body = b"{}" if method in ("POST", "PUT", "PATCH") else None
            want = {405}
            if pattern == "/api/metadata/hosts/by-ip/*":
                # hosts/* serves these methods too: "by-ip/x1" is then a
                # hostname, and an invalid one.
                want = {400, 404, 405}
            ans = raw(port, request_bytes(method, path, body))
            check(failures, service, "wrong method", f"{method} {path}", ans, want)
            if ans.status == 405 and not ans.header("Allow"):
                failures.append(f"{service}: 405 without Allow for {method} {path}")
    assert not failures, "\n".join(failures)


def path_cases(service):
    """(case, method, path, expected, strict) for the wildcard and list routes."""
    out = []
    if service in ("consumer", "gateway"):
        for case, pid in (("id: not a UUID", "not-a-uuid"), ("id: ../../etc/passwd",
                                                              "..%2f..%2fetc%2fpasswd"),
                          ("id: encoded NUL", f"{LOG_ID}%00"),
                          ("id: invalid UTF-8", "%ff%fe"), ("id: 5000 chars", "a" * 5000)):
            out.append((case, "GET", f"/api/logs/{pid}", {400, 404}, True))
        for case, q in (("query: limit=1e999", "limit=1e999"), ("query: limit=-1", "limit=-1"),
                        ("query: limit=2^70", f"limit={2 ** 70}"),
                        ("query: limit=abc", "limit=abc"), ("query: level=LOUD", "level=LOUD"),
                        ("query: from=yesterday", "from=yesterday"),
                        ("query: cursor=garbage", "cursor=%ff%00!!"),
                        ("query: text with invalid UTF-8", "text=%ff%fe"),
                        ("query: text with NUL", "text=a%00b"),
                        ("query: 8 KB", "text=" + "q" * 8000)):
            out.append((case, "GET", f"/api/logs?{q}", {400}, True))
    if service in ("metadata", "gateway"):
        p = "/api/metadata"
        out += [
            ("id: encoded NUL", "GET", f"{p}/hosts/{HOST}%00x", {400, 404}, True),
            ("id: ../../etc/passwd", "GET", f"{p}/hosts/..%2f..%2fetc%2fpasswd", {400, 404}, True),
            ("id: invalid UTF-8", "GET", f"{p}/services/%ff%fe", {400, 404}, True),
            ("id: 5000 chars", "GET", f"{p}/services/{'a' * 5000}", {400, 404}, True),
            ("by-ip: not an address", "GET", f"{p}/hosts/by-ip/999.999.1.1", {400, 404}, True),
            ("query: limit=1e999", "GET", f"{p}/hosts?limit=1e999", {400}, True),
            ("query: limit=-1", "GET", f"{p}/hosts?limit=-1", {400}, True),
            ("query: offset=2^70", "GET", f"{p}/services?offset={2 ** 70}", {400}, True),
            ("query: limit=abc", "GET", f"{p}/services?limit=abc", {400}, True),
        ]
    if service in ("generator", "gateway"):
        out.append(("id: unknown generator route", "GET", "/api/v1/generator/%00", {400, 404},
                    True))
    out.append(("unknown path", "GET", "/no/such/" + "x" * 100, {404}, True))
    out.append(("encoded NUL in the path (%00)", "GET", "/health%00/live", {400, 404}, True))
    return out


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_hostile_paths_and_queries(stack, service):
    procs, _ = stack
    port = procs[service].port
    failures = []
    for case, method, path, expected, strict in path_cases(service):
        ans = raw(port, request_bytes(method, path))
        check(failures, service, case, f"{method} {path[:60]}", ans, expected, strict)
    assert procs[service].alive(), procs[service].log_tail(60)
    assert not failures, "\n".join(failures)


def test_slow_clients_all_services_at_once(stack):
    """Slowloris headers, an idle connection, a trickled and a stalled body on
    every service at once: each ends within the request timeout and a margin."""
    procs, _ = stack
    slow_head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 60 + b"\r\n\r\n"
    body_head = (b"POST /health/live HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n")
    cases = [
        ("slowloris: headers one byte per 0.5 s", [bytes([b]) for b in slow_head], 0.5,
         {400, 408, "close"}, REQUEST_TIMEOUT + SLACK),
        ("idle connection, nothing sent", [b""], 0.0, {400, 408, "close"},
         REQUEST_TIMEOUT + SLACK),
        ("body trickled one byte per 0.5 s", [body_head] + [b" "] * 200, 0.5,
         {400, 408, "close"}, REQUEST_TIMEOUT + SLACK),
        ("body stops halfway, connection kept open", [body_head + b" " * 500], 0.0,
         {400, 408, "close"}, 2 * REQUEST_TIMEOUT + SLACK),
    ]
    results = {}
    threads = []

    def one(service, case, pieces, gap, bound):
        results[(service, case)] = raw(procs[service].port, pieces, gap=gap,
                                       timeout=bound + 10)

    for service in SERVICE_NAMES:
        for case, pieces, gap, expected, bound in cases:
            t = threading.Thread(target=one, args=(service, case, pieces, gap, bound))
            t.start()
            threads.append(t)
    for t in threads:
        t.join(120)
    failures = []
    for service in SERVICE_NAMES:
        for case, pieces, gap, expected, bound in cases:
            ans = results.get((service, case))
            if ans is None:
                failures.append(f"{service} {case}: no result")
                continue
            check(failures, service, case, "raw", ans, expected, timed=True)
            if ans.secs > bound:
                failures.append(f"{service} {case}: ended after {ans.secs:.1f} s, "
                                f"bound {bound:.0f} s ({ans!r})")
        assert procs[service].alive(), procs[service].log_tail(60)
    assert not failures, "\n".join(failures)


def _pb(num, data):
    """One protobuf length-delimited field (the OTLP cases below)."""
    def varint(n):
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)
    return varint(num << 3 | 2) + varint(len(data)) + data


def otlp_cases():
    """(case, body, content type, extra header lines, expected) for POST /v1/logs."""
    deep = _pb(1, b"leaf")
    for _ in range(5000):  # AnyValue -> kvlist -> KeyValue -> AnyValue ...
        deep = _pb(6, _pb(1, _pb(1, b"k") + _pb(2, deep)))
    deep = _pb(1, _pb(2, _pb(2, _pb(5, deep))))
    deep_json = b'{"kvlistValue":{"values":[{"key":"k","value":' * 3000
    gz = b"Content-Encoding: gzip\r\n"
    return [
        ("otlp: protobuf garbage", b"\xff" * 64, "application/x-protobuf", b"", {400}),
        ("otlp: protobuf cut inside a field", _pb(1, b"x" * 100)[:20], "application/x-protobuf",
         b"", {400}),
        ("otlp: protobuf nested 20k messages deep", deep, "application/x-protobuf", b"", {400}),
        ("otlp: JSON kvlist nested 3000 deep, gzip'd", gzip.compress(deep_json),
         "application/json", gz, {400}),
        ("otlp: gzip bomb (64 MiB of zeros in 64 KiB)", gzip.compress(b"\0" * (64 << 20)),
         "application/x-protobuf", gz, {400, 413}),
        ("otlp: broken gzip", b"\x1f\x8b\x08\x00" + b"\xaa" * 100, "application/json", gz,
         {400}),
        ("otlp: unknown encoding", b"{}", "application/json", b"Content-Encoding: br\r\n",
         {415}),
        ("otlp: empty protobuf (no records)", b"", "application/x-protobuf", b"", {200}),
    ]


@pytest.mark.parametrize("service", ["producer", "gateway"])
def test_hostile_otlp(stack, service):
    """POST /v1/logs: hostile protobuf, gzip and nesting are refused with a
    4xx, never a crash (CivetWeb's small stacks) or an unbounded inflate."""
    procs, _ = stack
    port = procs[service].port
    failures = []
    for case, body, ctype, extra, expected in otlp_cases():
        ans = raw(port, request_bytes("POST", "/v1/logs", body, ctype, extra))
        check(failures, service, case, "POST /v1/logs", ans, expected)
    assert procs[service].alive(), procs[service].log_tail(60)
    assert not failures, "\n".join(failures)


def write_table(path):
    services = SERVICE_NAMES
    lines = ["| input | " + " | ".join(services) + " |",
             "|---|" + "---|" * len(services)]
    for case, per in RESULTS.items():
        cells = []
        for s in services:
            got = per.get(s)
            cells.append(", ".join(sorted(got, key=str)) if got else "n/a")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    Path(path).write_text("\n".join(lines) + "\n")


def test_zz_everyone_kept_serving(stack):
    """Last: the probe never missed, every service is alive; writes the table."""
    procs, prober = stack
    time.sleep(1.0)
    out = os.environ.get("HOSTILE_TABLE")
    if out:
        write_table(out)
    if DEVIATIONS:
        print("\nanswers outside the expected set, recorded and not failed:")
        for d in DEVIATIONS:
            print("  ", d)
    dead = {n: p.returncode for n, p in procs.items() if not p.alive()}
    assert not dead, dead
    for n, p in procs.items():
        assert p.get("/health/live", timeout=5)[0] == 200, n
    assert prober.probes > 0
    assert not prober.misses, f"/health/live missed during hostile input: {prober.misses[:20]}"
