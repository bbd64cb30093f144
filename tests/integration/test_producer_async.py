"""test_producer_async.py - the producer's ingest routes hold no thread per request (issue 14, item 2).

POST /api/logs, /api/logs/batch and /v1/logs are async routes: the event
front's loop defers the request and librdkafka's delivery-report thread (or
the spool writer after its fdatasync) answers it.  So a producer with only
4 HTTP worker threads and kafka.linger_ms = 1000 (every acknowledgement
takes about a second) answers 200 concurrent single-event POSTs, all 202,
in a few seconds: they wait for Kafka together.  Were each request to hold
a worker until Kafka's acknowledgement, 4 workers would take 200 / 4
lingers, about 50 s, and the clients below would time out.

Every 202's event must be on the raw topic: the 202 still comes only after
Kafka's acknowledgement.
"""

import http.client
import json
import threading
import time

from test_spool import topic_values

CLIENTS = 200
THREADS = 4
LINGER_MS = 1000
# All 200 go in one or two lingers when nothing holds a thread; held
# threads would need CLIENTS / THREADS lingers (50 s).
DEADLINE_S = 15.0


def _post_one(port, i, barrier, results):
    body = json.dumps({"service": "async-wire", "level": "INFO",
                       "message": f"concurrent event {i}"}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S + 5)
    try:
        conn.connect()
        barrier.wait(timeout=30)
        conn.request("POST", "/api/logs", body=body,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        results[i] = (r.status, r.read(), time.monotonic())
    except Exception as e:  # a timeout is the failure this test looks for
        results[i] = (None, repr(e).encode(), time.monotonic())
    finally:
        conn.close()


def test_200_concurrent_posts_with_4_threads_all_202(services, topics, infra, kafkatool):
    procs = services("producer", topics=topics, log_level="info",
                     config={"producer": {"http.threads": THREADS,
                                          "kafka.linger_ms": LINGER_MS}})
    assert procs["producer"].alive()
    port = services.ports["producer"]
    results = [None] * CLIENTS
    barrier = threading.Barrier(CLIENTS + 1)
    threads = [threading.Thread(target=_post_one, args=(port, i, barrier, results), daemon=True)
               for i in range(CLIENTS)]
    for t in threads:
        t.start()
    barrier.wait(timeout=30)
    t0 = time.monotonic()
    for t in threads:
        t.join(timeout=DEADLINE_S + 30)
    assert all(res is not None for res in results), "a client thread did not finish"
    statuses = {}
    for st, _, _ in results:
        statuses[st] = statuses.get(st, 0) + 1
    assert statuses == {202: CLIENTS}, (statuses, [r for r in results if r[0] != 202][:3])
    took = max(res[2] for res in results) - t0
    assert took < DEADLINE_S, f"200 requests took {took:.1f} s with {THREADS} threads"

    ids = {json.loads(body)["id"] for _, body, _ in results}
    assert len(ids) == CLIENTS
    found = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ids <= found:
        for v in topic_values(kafkatool, infra.kafka.bootstrap, topics["raw"], wait_ms=5000):
            found.add(json.loads(v).get("id"))
    missing = ids - found
    assert not missing, f"{len(missing)} events answered 202 are not on the raw topic"
    print(f"\n{CLIENTS} concurrent POSTs, {THREADS} HTTP threads, linger {LINGER_MS} ms: "
          f"all 202 in {took:.2f} s, all on the raw topic")


def _post(port, path, body, ctype="application/json", close=False):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": ctype}
        if close:
            headers["Connection"] = "close"
        conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


OTLP_ONE = {"resourceLogs": [{"resource": {"attributes": [
    {"key": "service.name", "value": {"stringValue": "async-otlp"}}]},
    "scopeLogs": [{"logRecords": [{"severityText": "INFO",
                                   "body": {"stringValue": "otlp event"}}]}]}]}


def test_the_routes_on_either_front(services, topics, infra, kafkatool):
    """The same three routes answer the same with http.front = civetweb (a
    worker waits for the answer), and with the event front whether the front
    serves the request (kept alive) or passes it to CivetWeb (Connection:
    close); every accepted event is on the raw topic."""
    want = set()
    for front in ("civetweb", "events"):
        procs = services("producer", topics=topics, log_level="info",
                         config={"producer": {"http.front": front, "http.threads": 2}})
        port = services.ports["producer"]
        for close in (False, True):
            tag = f"{front}-{'close' if close else 'kept'}"
            st, doc = _post(port, "/api/logs", {"service": "async-wire", "message": tag},
                            close=close)
            assert st == 202, (tag, st, doc)
            want.add(doc["id"])
            st, doc = _post(port, "/api/logs/batch",
                            [{"service": "async-wire", "message": f"{tag} {k}"} for k in range(3)]
                            + [{"service": "async-wire"}], close=close)
            assert st == 207, (tag, st, doc)
            want.update(r["id"] for r in doc["results"] if "id" in r)
            st, doc = _post(port, "/api/logs", {"service": "async-wire"}, close=close)
            assert st == 400, (tag, st, doc)
            st, doc = _post(port, "/v1/logs", OTLP_ONE, close=close)
            assert st == 200, (tag, st, doc)
        assert procs["producer"].stop(timeout=15) == 0
    assert len(want) == 16
    found = {json.loads(v).get("id")
             for v in topic_values(kafkatool, infra.kafka.bootstrap, topics["raw"], wait_ms=5000)}
    assert want <= found, want - found


def test_sigterm_answers_the_deferred_requests(services, topics, infra, kafkatool):
    """SIGTERM while kept-alive clients' requests wait for Kafka (a 1 s
    linger keeps many deferred at once): the producer exits 0 within 10 s,
    and every event answered 202 is on the raw topic once it has exited
    (what went to the spool at the signal is drained before the exit)."""
    procs = services("producer", topics=topics, log_level="info",
                     config={"producer": {"http.threads": THREADS,
                                          "kafka.linger_ms": LINGER_MS}})
    prod = procs["producer"]
    port = services.ports["producer"]
    ids, statuses, lock = [], {}, threading.Lock()
    stop = threading.Event()

    def client(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = 0
        while not stop.is_set() and i < 10000:
            i += 1
            try:
                conn.request("POST", "/api/logs",
                             body=json.dumps({"service": "async-term",
                                              "message": f"term {n}/{i}"}).encode(),
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                st, body = r.status, r.read()
            except (OSError, http.client.HTTPException):
                # The server closed the connection (stopping): no reply was due
                # for a request it had not read.
                st, body = None, b""
                conn.close()
                if stop.is_set():
                    break
                time.sleep(0.05)
            with lock:
                statuses[st] = statuses.get(st, 0) + 1
                if st == 202:
                    ids.append(json.loads(body)["id"])
        conn.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(32)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and statuses.get(202, 0) < 64:
        time.sleep(0.1)
    assert statuses.get(202, 0) >= 64, statuses
    t0 = time.monotonic()
    rc = prod.stop(timeout=15)
    took = time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join(timeout=40)
    assert rc == 0, (rc, prod.log_tail(20))
    assert took < 10, took
    assert set(statuses) <= {202, 503, None}, statuses
    found = {json.loads(v).get("id")
             for v in topic_values(kafkatool, infra.kafka.bootstrap, topics["raw"], wait_ms=5000)}
    missing = set(ids) - found
    assert not missing, f"{len(missing)} of {len(ids)} events answered 202 are not on the topic"
    print(f"\nSIGTERM with deferred requests: exit 0 after {took:.2f} s; {statuses}, "
          "every 202 on the raw topic")
