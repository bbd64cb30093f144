"""test_spool.py - the producer's disk spool with the real binaries and broker.

  * Kafka stopped: the producer still answers 202 (from its spool) and stays
    ready; Kafka started again: the spool drains and every id answered 202 is
    stored in PostgreSQL exactly once (producer -> enricher -> consumer).
  * kill -9 of the producer while events are spooled: the restarted producer
    drains them.
  * a full spool answers 503 with Retry-After and makes the producer unready.

SIGTERM (under load, with Kafka down, during a drain) is in
test_spool_sigterm.py, which uses the helpers here: the two files are about
as long as each other, so that `make test` can run them side by side.

Every event sent carries a unique marker, attributes.mark, which the
producer does not use as its id.  A redelivered record cannot make a second
row (the consumer inserts on the event's id), so counting rows per id cannot
see the duplicates that can happen: an event stored again under a new id.
Counting rows per marker can: every marker answered 202 must be stored
exactly once, and one that got another answer (or none) at most once
(test_a_resend_under_a_new_id_is_counted_twice shows that count failing).

These tests stop the session's Kafka broker; each one starts it again, also
when it fails.
"""

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

import infra as lp

SETTLE_TIMEOUT = 120.0




def topic_values(tool, brokers, topic, wait_ms=20000):
    """The values of every message of topic, read from the start (bounded)."""
    r = subprocess.run([tool, "consume", brokers, topic, "0", "1000", str(wait_ms)],
                       capture_output=True, text=True, timeout=wait_ms / 1000 + 30)
    assert r.returncode == 0, r.stderr
    return [json.loads(line)["value"] for line in r.stdout.splitlines() if line.strip()]


def post(url, body, content_type="application/json", timeout=30, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers=dict(headers or {}, **{"Content-Type": content_type}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def metric(svc, name):
    status, body = svc.get("/metrics", timeout=5)
    assert status == 200, body
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_until(what, pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stored_counts(dsn, ids):
    """{id: rows} for the ids that are stored (queried in chunks)."""
    ids = list(ids)
    res = {}
    for i in range(0, len(ids), 500):
        lst = ",".join(f"'{x}'" for x in ids[i:i + 500])
        out = lp.psql(dsn, "SELECT id, count(*) FROM log_events "
                           f"WHERE id IN ({lst}) GROUP BY id")
        for line in out.splitlines():
            if line:
                k, v = line.split("|")
                res[k] = int(v)
    return res


def new_mark(tag):
    """A marker unique to one sent event (attributes.mark)."""
    return f"{tag}-{uuid.uuid4().hex}"


def marked(body, mark):
    """body (an event) with attributes.mark set."""
    return dict(body, attributes=dict(body.get("attributes") or {}, mark=mark))


def mark_counts(dsn, marks):
    """{mark: rows} for the markers that are stored (queried in chunks)."""
    marks = list(marks)
    res = {}
    for i in range(0, len(marks), 500):
        lst = ",".join(f"'{x}'" for x in marks[i:i + 500])
        out = lp.psql(dsn, "SELECT attributes->>'mark', count(*) FROM log_events "
                           f"WHERE attributes->>'mark' IN ({lst}) GROUP BY 1")
        for line in out.splitlines():
            if line:
                k, v = line.split("|")
                res[k] = int(v)
    return res


def assert_stored_once(dsn, ids, marks, others=(), timeout=SETTLE_TIMEOUT):
    """Every id answered 202 is stored, and every marker answered 202 has
    exactly one row; the markers of `others` (sent, not answered 202) have
    at most one."""
    counts = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = stored_counts(dsn, ids)
        if len(counts) == len(ids):
            break
        time.sleep(0.5)
    missing = set(ids) - set(counts)
    assert not missing, f"{len(missing)} of {len(ids)} ids answered 202 are not stored"
    per_mark = mark_counts(dsn, list(marks) + list(others))
    lost = [m for m in marks if m not in per_mark]
    doubles = {m: n for m, n in per_mark.items() if n > 1}
    assert not doubles, f"{len(doubles)} events stored more than once: {list(doubles.items())[:5]}"
    assert not lost, f"{len(lost)} of {len(marks)} markers answered 202 are not stored: {lost[:5]}"


class Senders:
    """Threads running self._run(n) until stop(); subclasses send."""

    def __init__(self, threads):
        self.threads = threads
        self._stop = threading.Event()
        self._workers = []

    def start(self):
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in self._workers:
            t.join(60)


class Load(Senders):
    """Threads posting single events and batches; keeps every id answered 202."""

    def __init__(self, url, threads=8, batch_every=5, tag="load", batch_size=10):
        super().__init__(threads)
        self.url = url
        self.batch_every = batch_every
        self.batch_size = batch_size
        self.tag = tag
        self.ids = []
        self.marks = []          # markers of the events answered 202
        self.other_marks = []    # markers of events sent and not answered 202
        self.statuses = {}
        self.errors = []
        self.sent = 0
        self._lock = threading.Lock()

    def _record(self, status, ids, marks, others):
        with self._lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.ids.extend(ids)
            self.marks.extend(marks)
            self.other_marks.extend(others)

    def _run(self, n):
        i = 0
        while not self._stop.is_set():
            i += 1
            marks = []
            try:
                if i % self.batch_every == 0:
                    marks = [new_mark(self.tag) for _ in range(self.batch_size)]
                    items = [marked({"message": f"{self.tag} {n}/{i}/{k}",
                                     "service": f"svc-{k % 3}"}, marks[k])
                             for k in range(self.batch_size)]
                    with self._lock:
                        self.sent += len(items)
                    status, raw, _ = post(self.url + "/api/logs/batch", items)
                    ids, ok = [], []
                    if status in (202, 207):
                        for m, r in zip(marks, json.loads(raw)["results"]):
                            if r.get("status") == "accepted" and "id" in r:
                                ids.append(r["id"])
                                ok.append(m)
                    self._record(status, ids, ok, [m for m in marks if m not in ok])
                else:
                    marks = [new_mark(self.tag)]
                    with self._lock:
                        self.sent += 1
                    status, raw, _ = post(self.url + "/api/logs",
                                          marked({"message": f"{self.tag} {n}/{i}",
                                                  "service": "spooler", "level": "WARN"},
                                                 marks[0]))
                    if status == 202:
                        self._record(status, [json.loads(raw)["id"]], marks, [])
                    else:
                        self._record(status, [], [], marks)
            except (OSError, ValueError) as e:  # connection refused while stopping, etc.
                with self._lock:
                    self.errors.append(repr(e))
                    self.other_marks.extend(marks)
                time.sleep(0.05)


@pytest.fixture
def kafka_back(infra):
    """Makes sure the session's broker runs again after the test."""
    yield infra.kafka
    if not infra.kafka.alive():
        infra.kafka.start()
    infra.kafka.wait_ready(90)


def spool_check(proc):
    status, body = proc.get("/health", timeout=5)
    return status, json.loads(body)["checks"]["spool"]


def test_a_resend_under_a_new_id_is_counted_twice(services, topics, pg_dsn):
    """The check the other tests rely on can fail: a client that resends an
    event it got no answer for (here: sends it twice, no id of its own) makes
    two rows under two ids.  Per id each is stored once; per marker the
    event is stored twice, and assert_stored_once says so."""
    procs = services("producer", "enricher", "consumer", topics=topics, pg_dsn=pg_dsn)
    url = procs["producer"].url
    mark = new_mark("resend")
    ids = []
    for _ in range(2):
        status, raw, _ = post(url + "/api/logs",
                              marked({"message": "sent twice", "service": "spool"}, mark))
        assert status == 202, raw
        ids.append(json.loads(raw)["id"])
    assert ids[0] != ids[1]
    wait_until("both rows", lambda: len(stored_counts(pg_dsn, ids)) == 2, SETTLE_TIMEOUT)
    assert stored_counts(pg_dsn, ids) == {ids[0]: 1, ids[1]: 1}
    assert mark_counts(pg_dsn, [mark]) == {mark: 2}
    with pytest.raises(AssertionError, match="1 events stored more than once"):
        assert_stored_once(pg_dsn, ids, [mark])


def test_kafka_down_spools_then_drains_exactly_once(services, topics, pg_dsn, kafka_back):
    procs = services("producer", "enricher", "consumer", topics=topics, pg_dsn=pg_dsn,
                     config={"producer": {"kafka.timeout_ms": 3000}})
    prod = procs["producer"]
    url = prod.url

    # Kafka up: straight through, nothing spooled.
    ids, marks = [], []
    for i in range(20):
        marks.append(new_mark("before"))
        status, raw, _ = post(url + "/api/logs",
                              marked({"message": f"before {i}", "service": "spool"}, marks[-1]))
        assert status == 202, raw
        ids.append(json.loads(raw)["id"])
    assert metric(prod, "logpipe_spool_written_total") == 0

    kafka_back.stop()
    t0 = time.monotonic()
    load = Load(url, threads=8, tag="down").start()
    # Past the delivery timeout of the first requests, then straight to the spool.
    wait_until("events in the spool",
               lambda: (metric(prod, "logpipe_spool_events") or 0) >= 1000, 60)
    load.stop()
    down_s = time.monotonic() - t0
    assert load.statuses.get(202, 0) > 0, load.statuses
    assert set(load.statuses) == {202}, (load.statuses, load.errors[:3])
    assert not load.errors, load.errors[:3]
    ids += load.ids
    marks += load.marks
    spooled = metric(prod, "logpipe_spool_written_total")
    assert spooled >= len(load.ids), (spooled, len(load.ids))
    print(f"\nkafka down {down_s:.1f} s: {len(load.ids)} events answered 202 "
          f"({len(load.ids) / down_s:.0f}/s, first ones waited out the delivery timeout), "
          f"spool {metric(prod, 'logpipe_spool_bytes'):.0f} bytes, "
          f"{metric(prod, 'logpipe_spool_fsyncs_total'):.0f} fsyncs")

    # Still ready, and /health says why.
    status, body = prod.get("/health/ready", timeout=5)
    assert status == 200, body
    _, chk = spool_check(prod)
    assert chk["status"] == "UP" and chk["required"] is True, chk
    assert "events" in chk["detail"], chk
    assert metric(prod, "logpipe_spool_events") > 0

    t1 = time.monotonic()
    kafka_back.start()
    kafka_back.wait_ready(90)
    wait_until("the spool to drain",
               lambda: metric(prod, "logpipe_spool_events") == 0, SETTLE_TIMEOUT)
    drain_s = time.monotonic() - t1
    assert metric(prod, "logpipe_spool_drained_total") == spooled
    print(f"drained {spooled:.0f} events {drain_s:.1f} s after starting Kafka "
          f"(broker start included)")

    # Kafka back: events go straight to Kafka again.
    for i in range(10):
        marks.append(new_mark("after"))
        status, raw, _ = post(url + "/api/logs",
                              marked({"message": f"after {i}", "service": "spool"}, marks[-1]))
        assert status == 202, raw
        ids.append(json.loads(raw)["id"])
    assert_stored_once(pg_dsn, ids, marks, load.other_marks)
    assert metric(prod, "logpipe_spool_written_total") == spooled


def test_spooled_events_keep_their_trace_context(services, topics, pg_dsn, kafka_back,
                                                 kafkatool):
    """An event sent with a traceparent while Kafka is down is spooled; once
    Kafka is back, its record on the raw topic carries the same trace headers
    as a directly produced one, and it is stored with its trace_id.  Both
    request paths (the scanned single event, the batch) and an event whose
    body has a trace_id of its own (no span: trace_id header only)."""
    procs = services("producer", "enricher", "consumer", topics=topics, pg_dsn=pg_dsn,
                     config={"producer": {"kafka.timeout_ms": 2000}})
    prod = procs["producer"]
    trace = uuid.uuid4().hex
    span = "00f067aa0ba902b7"
    own = uuid.uuid4().hex
    tp = {"traceparent": f"00-{trace}-{span}-01"}
    kafka_back.stop()
    ids = {}
    status, raw, _ = post(prod.url + "/api/logs",
                          {"message": "one", "service": "spooltrace"}, headers=tp)
    assert status == 202, raw
    ids[json.loads(raw)["id"]] = (trace, span)
    status, raw, _ = post(prod.url + "/api/logs/batch",
                          [{"message": "two", "service": "spooltrace"},
                           {"message": "three", "service": "spooltrace", "trace_id": own}],
                          headers=tp)
    assert status == 202, raw
    res = json.loads(raw)["results"]
    ids[res[0]["id"]] = (trace, span)
    ids[res[1]["id"]] = (own, None)
    assert metric(prod, "logpipe_spool_written_total") == 3

    kafka_back.start()
    kafka_back.wait_ready(90)
    wait_until("the spool to drain",
               lambda: metric(prod, "logpipe_spool_events") == 0, SETTLE_TIMEOUT)
    r = subprocess.run([kafkatool, "consume", kafka_back.bootstrap, topics["raw"], "0", "100",
                        "5000"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    recs = {json.loads(m["value"])["id"]: m for m in map(json.loads, r.stdout.splitlines())}
    assert set(recs) == set(ids), recs
    for eid, (t, s) in ids.items():
        want = {"trace_id": t}
        if s:
            want.update(span_id=s, traceparent=f"00-{t}-{s}-01")
        assert recs[eid]["headers"] == want, recs[eid]
    wait_until("the events stored",
               lambda: len(stored_counts(pg_dsn, ids)) == len(ids), SETTLE_TIMEOUT)
    out = lp.psql(pg_dsn, "SELECT id, trace_id, coalesce(span_id, '') FROM log_events "
                          "WHERE service = 'spooltrace'")
    got = {line.split("|")[0]: tuple(line.split("|")[1:]) for line in out.splitlines() if line}
    assert got == {k: (t, s or "") for k, (t, s) in ids.items()}, got


def test_kill9_while_spooled_then_restart_drains(services, topics, pg_dsn, kafka_back):
    cfg = {"producer": {"kafka.timeout_ms": 2000}}
    procs = services("producer", "enricher", "consumer", topics=topics, pg_dsn=pg_dsn,
                     config=cfg)
    prod = procs["producer"]
    kafka_back.stop()

    load = Load(prod.url, threads=6, tag="crash").start()
    wait_until("events in the spool",
               lambda: (metric(prod, "logpipe_spool_events") or 0) >= 300, 60)
    # A crash in the middle of the load: what was answered 202 must survive.
    prod.kill9()
    load.stop()
    assert load.statuses.get(202, 0) > 0, load.statuses
    assert set(load.statuses) == {202}, load.statuses
    ids = list(load.ids)

    kafka_back.start()
    kafka_back.wait_ready(90)
    prod = services("producer", topics=topics, config=cfg)["producer"]
    recovered = metric(prod, "logpipe_spool_events")
    print(f"\nkill -9 with {len(ids)} events answered 202; "
          f"the restarted producer found {recovered:.0f} in its spool")
    assert_stored_once(pg_dsn, ids, load.marks, load.other_marks)
    wait_until("the spool to drain", lambda: metric(prod, "logpipe_spool_events") == 0, 60)


def test_spool_full_is_503_with_retry_after(services, topics, kafka_back):
    procs = services("producer", topics=topics,
                     config={"producer": {"spool.max_bytes": 65536,
                                          "spool.segment_bytes": 16384,
                                          "kafka.timeout_ms": 1000}})
    prod = procs["producer"]
    kafka_back.stop()
    statuses = []
    big = "x" * 2000
    for i in range(60):
        status, raw, headers = post(prod.url + "/api/logs", {"message": big, "service": "full"})
        statuses.append(status)
        if status == 503:
            err = json.loads(raw)["error"]
            assert err["code"] == "spool_full", err
            assert int(headers["Retry-After"]) >= 1, headers
            break
    assert statuses[0] == 202 and statuses[-1] == 503, statuses
    # Full: no longer ready, and /health says so.
    status, chk = spool_check(prod)
    assert chk["status"] == "DOWN" and chk["detail"].startswith("full"), chk
    status, _ = prod.get("/health/ready", timeout=5)
    assert status == 503
