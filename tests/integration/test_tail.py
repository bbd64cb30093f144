"""test_tail.py - the live tail, GET /api/logs/tail (consumer/tail.h, gateway/stream.h).

What is checked, with a real Kafka and PostgreSQL behind the consumer:
  * a tail client reading its socket incrementally, straight from the
    consumer and through the gateway, receives the events stored after it
    connected, in order, filtered (service, min_level), each with a growing
    id, and a heartbeat comment while nothing matches;
  * a client reconnecting with Last-Event-ID gets every event after that id,
    without a gap, also through the gateway;
  * a client that does not read while more than tail.buffer events are
    stored gets `event: dropped` with a count, then the newest events, while
    every event is stored all the same;
  * tail.max_clients: one client more gets 503; through the gateway, a client
    that closes frees its slot; HEAD answers the head only;
  * the gateway's auth: no key 401, an ingest key 403, a read key streams
    its key's tenant only (direct: X-Tenant-ID confines, 403 for another).

Events are written to the enriched topics with tests/bench/kafkatool.c.
Every wait is bounded.
"""

import json
import socket
import time
import uuid
from urllib.parse import urlparse

import pytest
import requests

from test_consumer import event, metric, produce, sql, wait_until


def stored(dsn, service_prefix):
    return sql(dsn, "SELECT count(*) FROM log_events WHERE service LIKE %s",
               (service_prefix + "%",))[0][0]


class Tail:
    """An SSE client on a raw socket: frames are parsed as bytes arrive."""

    def __init__(self, base, query="", last_id=None, rcvbuf=None, timeout=20.0, headers=None):
        u = urlparse(base)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((u.hostname, u.port))
        req = (f"GET /api/logs/tail{'?' + query if query else ''} HTTP/1.1\r\n"
               f"Host: {u.netloc}\r\nAccept: text/event-stream\r\n")
        if last_id is not None:
            req += f"Last-Event-ID: {last_id}\r\n"
        for k, v in (headers or {}).items():
            req += f"{k}: {v}\r\n"
        self.sock.sendall((req + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, f"closed before the head: {self.buf!r}"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, v in
                        (line.split(":", 1) for line in lines[1:])}
        self.eof = False

    def frame(self, deadline):
        """The next frame as a dict (id, event, data, comment), or None at the end."""
        while b"\n\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no whole frame in time; have {self.buf[-300:]!r}"
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                self.eof = True
                return None
            self.buf += chunk
        block, self.buf = self.buf.split(b"\n\n", 1)
        f = {}
        for line in block.decode().split("\n"):
            if line.startswith(":"):
                f["comment"] = line[1:].strip()
            else:
                k, _, v = line.partition(":")
                f[k] = v[1:] if v.startswith(" ") else v
        return f

    def wait_connected(self, timeout=10.0):
        f = self.frame(time.monotonic() + timeout)
        assert f == {"comment": "connected"}, f

    def events(self, n, timeout=30.0, keep=None):
        """The next n data frames (dropped notices and comments go to keep)."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            f = self.frame(deadline)
            assert f is not None, f"stream ended after {len(out)} of {n} events"
            if "data" in f and f.get("event", "message") == "message":
                f["json"] = json.loads(f["data"])
                out.append(f)
            elif keep is not None:
                keep.append(f)
        return out

    def close(self):
        self.sock.close()


def start(services, topics, pg_dsn, gateway=False, gateway_extra=None, **tail):
    cfg = {"batch.max_ms": 50}
    cfg.update({"tail." + k: v for k, v in tail.items()})
    names = ("consumer", "gateway") if gateway else ("consumer",)
    config = {"consumer": cfg}
    if gateway:
        suffix = "-" + services.run_id
        config["gateway"] = {
            "backpressure.groups": (f"logpipe-consumer{suffix}="
                                    f"{topics['complete']}+{topics['partial']}"),
        }
        config["gateway"].update(gateway_extra or {})
    services(*names, topics=topics, pg_dsn=pg_dsn, config=config)
    url = services.url("consumer")
    wait_until("consumer ready", lambda: requests.get(url + "/health/ready", timeout=5)
               .status_code == 200)
    return url, services.url("gateway") if gateway else None


def batch(tag, n, start=0, **kw):
    return [event(service=f"{tag}-{'a' if i % 2 == 0 else 'b'}",
                  level="ERROR" if i % 4 == 0 else "INFO", message=f"tail {tag} {i}",
                  attributes={"i": i}, **kw)
            for i in range(start, start + n)]


def test_tail_direct_and_through_gateway(infra, services, topics, pg_dsn, kafkatool):
    brokers = infra.kafka.bootstrap
    tag = "t" + uuid.uuid4().hex[:6]
    cons, gw = start(services, topics, pg_dsn, gateway=True, heartbeat_ms=300)

    # Stored before anyone tails: never shown.
    produce(kafkatool, brokers, topics["complete"], batch(tag, 6, start=1000))
    wait_until("earlier events stored", lambda: stored(pg_dsn, tag) == 6)

    direct = Tail(cons, f"service={tag}-a")
    via_gw = Tail(gw, f"service={tag}-a&min_level=ERROR")
    assert direct.status == 200 and via_gw.status == 200, (direct.status, via_gw.status)
    assert direct.headers["content-type"].startswith("text/event-stream")
    assert via_gw.headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in via_gw.headers
    direct.wait_connected()
    via_gw.wait_connected()
    # Quiet: heartbeats come through both.
    beats = []
    deadline = time.monotonic() + 10
    while len(beats) < 2:
        beats.append(via_gw.frame(deadline))
    assert all(b == {"comment": "keepalive"} for b in beats), beats

    evs = batch(tag, 20)
    produce(kafkatool, brokers, topics["complete"], evs[:10])
    produce(kafkatool, brokers, topics["partial"], evs[10:])
    want_direct = [e["id"] for e in evs if e["service"] == f"{tag}-a"]
    want_gw = [e["id"] for e in evs if e["service"] == f"{tag}-a" and e["level"] == "ERROR"]
    got_direct = direct.events(len(want_direct))
    got_gw = via_gw.events(len(want_gw))
    # Kafka keeps order within a partition only: the order is the storing
    # order, which the ids tell.
    assert sorted(f["json"]["id"] for f in got_direct) == sorted(want_direct)
    assert sorted(f["json"]["id"] for f in got_gw) == sorted(want_gw)
    for got in (got_direct, got_gw):
        ids = [int(f["id"]) for f in got]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert got_direct[0]["json"]["message"].startswith(f"tail {tag} ")
    # The same event has the same id on both paths.
    by_event = {f["json"]["id"]: f["id"] for f in got_direct}
    assert all(by_event[f["json"]["id"]] == f["id"] for f in got_gw)
    direct.close()
    via_gw.close()

    # The gateway's X-Tenant-ID confines a tail as it does a query.
    acme = Tail(cons, "", headers={"X-Tenant-ID": "acme"})
    assert Tail(cons, "tenant=other", headers={"X-Tenant-ID": "acme"}).status == 403
    acme.wait_connected()
    mixed = batch(tag, 4, start=100, tenant="other") + batch(tag, 4, start=200, tenant="acme")
    produce(kafkatool, brokers, topics["complete"], mixed)
    got = acme.events(4)
    assert sorted(f["json"]["id"] for f in got) == sorted(e["id"] for e in mixed[4:])
    acme.close()

    # A bad filter is refused before the stream starts, through the gateway too.
    r = requests.get(gw + "/api/logs/tail?min_level=LOUD", timeout=10)
    assert r.status_code == 400 and "min_level" in r.text, r.text


def test_tail_resumes_with_last_event_id(infra, services, topics, pg_dsn, kafkatool):
    brokers = infra.kafka.bootstrap
    tag = "r" + uuid.uuid4().hex[:6]
    cons, gw = start(services, topics, pg_dsn, gateway=True)

    t = Tail(gw, f"text={tag}")
    t.wait_connected()
    first = batch(tag, 10)
    produce(kafkatool, brokers, topics["complete"], first)
    got = t.events(4)
    t.close()
    last = got[-1]["id"]
    assert {f["json"]["id"] for f in got} <= {e["id"] for e in first}

    second = batch(tag, 10, start=10)
    produce(kafkatool, brokers, topics["complete"], second)
    wait_until("all stored", lambda: stored(pg_dsn, tag) == 20)
    for base in (gw, cons):
        t = Tail(base, f"text={tag}", last_id=last)
        rest = t.events(16)
        t.close()
        seen = [f["json"]["id"] for f in got + rest]
        assert sorted(seen) == sorted(e["id"] for e in first + second)
        ids = [int(f["id"]) for f in rest]
        assert ids[0] == int(last) + 1 and ids == list(range(ids[0], ids[0] + 16))


def test_slow_client_gets_dropped(infra, services, topics, pg_dsn, kafkatool):
    brokers = infra.kafka.bootstrap
    tag = "s" + uuid.uuid4().hex[:6]
    cons, _ = start(services, topics, pg_dsn, buffer=50, max_clients=1)

    slow = Tail(cons, "", rcvbuf=4096)
    slow.wait_connected()
    # One more client than tail.max_clients allows.
    r = requests.get(cons + "/api/logs/tail", timeout=10)
    assert r.status_code == 503 and "Retry-After" in r.headers, r.status_code

    n = 600
    pad = "x" * 1500
    evs = [event(service=f"{tag}-a", message=f"slow {i} {pad}") for i in range(n)]
    produce(kafkatool, brokers, topics["complete"], evs)
    # Storing did not wait for the client that reads nothing.
    wait_until("all stored", lambda: stored(pg_dsn, tag) == n)

    notes = []
    got = []
    deadline = time.monotonic() + 30
    while not got or got[-1]["json"]["id"] != evs[-1]["id"]:
        f = slow.frame(deadline)
        assert f is not None, "the stream ended"
        if f.get("event") == "dropped":
            notes.append(json.loads(f["data"]))
        elif "data" in f:
            f["json"] = json.loads(f["data"])
            got.append(f)
    assert metric(cons, "consumer_tail_clients") == 1
    slow.close()
    assert notes and all(x["count"] > 0 for x in notes), notes
    # What came is in order, and with what was dropped adds up to every event.
    ids = [int(f["id"]) for f in got]
    assert ids == sorted(ids)
    assert len(got) + sum(x["count"] for x in notes) == n
    assert len(got) < n
    assert metric(cons, "consumer_tail_dropped_total") == sum(x["count"] for x in notes)
    assert metric(cons, "consumer_tail_refused_total") == 1


def test_tail_ends_when_the_client_goes_away(infra, services, topics, pg_dsn, kafkatool):
    """Through the gateway, a client that closes frees its consumer slot
    (found by the next heartbeat's failed write): with tail.max_clients 1 a
    new tail is served again."""
    cons, gw = start(services, topics, pg_dsn, gateway=True, max_clients=1, heartbeat_ms=200)
    # HEAD: the head only, it does not stream (nor take the slot for long).
    for base in (cons, gw):
        r = requests.head(base + "/api/logs/tail", timeout=10)
        assert r.status_code == 200, (base, r.status_code)
        assert r.headers["Content-Type"].startswith("text/event-stream")
    first = Tail(gw)
    first.wait_connected()
    r = requests.get(gw + "/api/logs/tail", timeout=10)
    assert r.status_code == 503, r.status_code
    first.close()

    def served():
        t = Tail(gw)
        ok = t.status == 200
        t.close()
        return ok
    wait_until("a new tail served once the first one's slot is free", served, timeout=20,
               interval=0.3)

    # Open tails do not hold a stop up: both services end them and exit cleanly.
    def opened():
        t = Tail(gw)
        if t.status == 200:
            return t
        t.close()
        return None
    held = [wait_until("the slot free again (the last probe's)", opened, timeout=20,
                       interval=0.3)]
    held[0].wait_connected()
    for name in ("gateway", "consumer"):
        t0 = time.monotonic()
        assert services[name].stop(timeout=8) == 0, name
        assert time.monotonic() - t0 < 8, name
    assert held[0].frame(time.monotonic() + 5) is None  # the stream ended


def test_tail_needs_the_read_scope_and_keeps_to_the_keys_tenant(infra, services, topics,
                                                                 pg_dsn, kafkatool):
    keys = "ing-key-0001:acme:ingest;read-key-0001:acme:read"
    cons, gw = start(services, topics, pg_dsn, gateway=True,
                     gateway_extra={"auth.keys": keys})
    assert Tail(gw).status == 401
    assert Tail(gw, headers={"X-API-Key": "ing-key-0001"}).status == 403
    # The key's tenant, not the one a client claims.
    t = Tail(gw, headers={"X-API-Key": "read-key-0001", "X-Tenant-ID": "other"})
    assert t.status == 200, t.status
    t.wait_connected()
    tag = "k" + uuid.uuid4().hex[:6]
    evs = batch(tag, 3, tenant="other") + batch(tag, 3, start=3, tenant="acme")
    produce(kafkatool, infra.kafka.bootstrap, topics["complete"], evs)
    got = t.events(3)
    assert sorted(f["json"]["id"] for f in got) == sorted(e["id"] for e in evs[3:])
    t.close()
