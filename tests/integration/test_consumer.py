"""test_consumer.py - logpipe-consumer against a real Kafka and PostgreSQL.

What is checked:
  * events on both enriched topics are stored once each, with their Kafka
    origin and enrichment; the same event twice (or resent with its id under
    another timestamp) is one row, and the duplicate is counted; a record
    delivered again that the probe let through to the direct COPY falls back
    to the staging path on the key conflict;
  * PostgreSQL stopped and started mid-stream: readiness goes 503 while it
    is down, the consumer resumes by itself, nothing is lost or doubled;
  * kill -9 of the consumer mid-stream: nothing lost or doubled after restart;
  * a record that is not JSON, an event without a service and a row the
    database refuses (a CHECK constraint added for the test) go to the DLQ
    topic with reason and origin headers, while their batch-mates are stored;
  * the query API: every filter returns exactly the expected rows newest
    first, keyset pages walk the whole set without gaps or repeats even with
    inserts between pages, /api/logs/{id}, /api/stats, 400s naming the
    parameter, and the gateway's X-Tenant-ID confining every query;
  * retention drops exactly the daily partitions older than retention.days,
    also when a UTC midnight falls during the test, and runs again every
    partitions.interval_s, not only at start;
  * creating a day's partition waits for an insert of that day still in
    flight into the default partition, and moves its row, instead of failing;
  * end to end: events posted to the producer come out of the query API.

Each test uses its own topics and its own database.  Records are written to
and read from Kafka with tests/bench/kafkatool.c, compiled once per session.
Every wait is bounded.  The store rate and the query latency on ten million
rows are measured by tests/bench/storage_bench.py (make bench BENCH=storage).
"""

import base64
import json
import random
import subprocess
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2
import pytest
import requests


REPO = Path(__file__).resolve().parents[2]
LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]


# ---- helpers -------------------------------------------------------------------



def rfc3339(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event(ts=None, **fields):
    """A normalised event as the enricher writes it (event.h)."""
    ts = ts or datetime.now(timezone.utc)
    ev = {"id": str(uuid.uuid4()), "schema_version": 1, "timestamp": rfc3339(ts),
          "received_at": rfc3339(ts), "level": "INFO", "message": "hello",
          "service": "svc", "attributes": {}}
    ev.update(fields)
    return ev


def produce(tool, brokers, topic, records):
    """Writes records (dicts as JSON, str as is) one per message; all acked."""
    lines = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    r = subprocess.run([tool, "produce", brokers, topic], input=lines, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and f"acked {len(records)} failed 0" in r.stdout, \
        (r.stdout, r.stderr)


def consume(tool, brokers, topic, want, wait_ms=15000):
    """Reads up to `want` messages of topic from the start (bounded)."""
    r = subprocess.run([tool, "consume", brokers, topic, str(want), "500", str(wait_ms)],
                       capture_output=True, text=True, timeout=wait_ms / 1000 + 30)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def topic_count(tool, brokers, topic):
    """Sum of the high watermarks of topic."""
    r = subprocess.run([tool, "count", brokers, topic], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[0])


def sql(dsn, query, args=()):
    with psycopg2.connect(dsn, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchall() if cur.description else None


def wait_until(what, fn, timeout=30.0, interval=0.1):
    """Calls fn until it returns something true; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (requests.RequestException, psycopg2.Error) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def metric(url, name):
    """Sum of the samples of `name` (any labels) at url/metrics."""
    total = 0.0
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def stored_count(dsn, where="true", args=()):
    return sql(dsn, f"SELECT count(*), count(DISTINCT id) FROM log_events WHERE {where}",
               args)[0]


def assert_counts_match_rows(dsn):
    """log_events_minute and log_events_hour hold exactly the counts of the rows."""
    for table, col, fn in (("log_events_minute", "minute", "logpipe_minute"),
                           ("log_events_hour", "hour", "logpipe_hour")):
        rows = {r[:5]: r[5] for r in sql(dsn, f"SELECT {fn}(ts), tenant, service, level, "
                                              "level_rank, count(*) FROM log_events "
                                              "GROUP BY 1, 2, 3, 4, 5")}
        kept = {r[:5]: r[5] for r in sql(dsn, f"SELECT {col}, tenant, service, level, "
                                              f"level_rank, n FROM {table}")}
        assert kept == rows, table


def start_consumer(services, topics, pg_dsn, **config):
    cfg = {"batch.max_ms": 50}
    cfg.update({k.replace("_", ".", 1): v for k, v in config.items()})
    svc = services("consumer", topics=topics, pg_dsn=pg_dsn, config={"consumer": cfg})
    url = services.url("consumer")
    wait_until("consumer ready", lambda: requests.get(url + "/health/ready", timeout=5)
               .status_code == 200)
    return svc["consumer"], url


# ---- storing ---------------------------------------------------------------------

def test_stores_each_event_once(infra, services, topics, pg_dsn, kafkatool):
    brokers = infra.kafka.bootstrap
    base = datetime.now(timezone.utc) - timedelta(minutes=5)
    complete = [event(base + timedelta(seconds=i), service=f"s{i % 3}", host=f"h{i % 2}",
                      tenant="acme", correlation_id=f"c{i}", source_ip="10.0.0.1",
                      message=f"tab\there, newline\nthere, backslash \\ {i}",
                      attributes={"i": i, "nested": {"k": "v\\w"}},
                      enrichment={"status": "complete", "team": "core"},
                      extra_top_level=i)
                for i in range(40)]
    partial = [event(base + timedelta(seconds=100 + i), level="WARN",
                     enrichment={"status": "partial", "missing": ["host"]})
               for i in range(20)]
    twice = event(base, message="sent twice")
    resent = dict(twice, timestamp=rfc3339(base + timedelta(seconds=3)))  # same id, new ts
    proc, url = start_consumer(services, topics, pg_dsn)

    produce(kafkatool, brokers, topics["complete"], complete + [twice, twice])
    produce(kafkatool, brokers, topics["partial"], partial + [twice])
    wait_until("63 records consumed", lambda: metric(url, "log_events_consumed_total") >= 63)
    produce(kafkatool, brokers, topics["partial"], [resent])  # a later batch
    wait_until("64 records consumed", lambda: metric(url, "log_events_consumed_total") >= 64)
    wait_until("all stored", lambda: stored_count(pg_dsn) == (61, 61))
    # "Consumed" counts a record when its batch is gathered; wait until every
    # one is either stored or counted as a duplicate.
    wait_until("64 records stored or skipped",
               lambda: metric(url, "log_events_processed_total")
               + metric(url, "log_events_duplicates_total") >= 64)
    time.sleep(0.5)
    assert stored_count(pg_dsn) == (61, 61)
    assert metric(url, "log_events_processed_total") == 61
    assert metric(url, "log_events_duplicates_total") == 3
    assert_counts_match_rows(pg_dsn)

    row = sql(pg_dsn, "SELECT message, attributes, enrichment, enrichment_status, level_rank, "
                      "kafka_topic, kafka_offset >= 0, host, tenant, correlation_id, source_ip "
                      "FROM log_events WHERE id = %s", (complete[7]["id"],))[0]
    assert row[0] == complete[7]["message"]
    assert row[1] == {"i": 7, "nested": {"k": "v\\w"}, "extra_top_level": 7}
    assert row[2] == {"status": "complete", "team": "core"}
    assert row[3:7] == ("complete", 2, topics["complete"], True)
    assert row[7:] == ("h1", "acme", "c7", "10.0.0.1")
    assert sql(pg_dsn, "SELECT enrichment_status, level FROM log_events WHERE id = %s",
               (partial[0]["id"],))[0] == ("partial", "WARN")

    health = requests.get(url + "/health", timeout=5).json()
    assert health["checks"]["postgres"]["status"] == "UP"
    assert health["checks"]["postgres"]["circuit_breaker"] == "closed"
    assert health["checks"]["kafka"]["status"] == "UP"

    # SIGTERM: an orderly stop, well within 10 s.
    t0 = time.monotonic()
    assert proc.stop() == 0
    assert time.monotonic() - t0 < 10


def test_direct_copy_conflict_falls_back_to_staging(infra, services, topics, pg_dsn, kafkatool):
    """A batch the probe finds fresh takes the direct COPY; when a row is in
    fact stored already (same id and timestamp), the COPY fails on the
    primary key and the batch must go down the staging path (store.c),
    stored as a duplicate, not refused as a bad row and dead-lettered.
    dedup_by_id off makes the probe look only at the batch itself and the
    one before it, so a record delivered again two batches later passes it."""
    brokers = infra.kafka.bootstrap
    again, other = event(message="delivered again"), event(message="in between")
    _, url = start_consumer(services, topics, pg_dsn, store_dedup_by_id="false",
                            retry_max_attempts=2)
    produce(kafkatool, brokers, topics["complete"], [again])
    wait_until("the first delivery stored", lambda: metric(url, "log_events_processed_total") == 1)
    produce(kafkatool, brokers, topics["complete"], [other])
    wait_until("the batch in between stored",
               lambda: metric(url, "log_events_processed_total") == 2)
    produce(kafkatool, brokers, topics["complete"], [again])
    wait_until("the second delivery counted as a duplicate",
               lambda: metric(url, "log_events_duplicates_total") == 1)
    assert stored_count(pg_dsn) == (2, 2)
    assert metric(url, "log_events_processed_total") == 2
    assert topic_count(kafkatool, brokers, topics["dlq"]) == 0
    assert metric(url, "log_events_errors_total") == 0


def test_postgres_restart_mid_stream(infra, services, topics, pg_dsn, kafkatool):
    brokers = infra.kafka.bootstrap
    events = [event(message=f"outage {i}", service=f"s{i % 4}") for i in range(3000)]
    _, url = start_consumer(services, topics, pg_dsn)
    produced = threading.Event()
    errors = []

    def writer():
        try:
            for i in range(0, len(events), 100):
                produce(kafkatool, brokers, topics["complete"], events[i:i + 100])
                time.sleep(0.05)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
        finally:
            produced.set()

    th = threading.Thread(target=writer)
    th.start()
    try:
        wait_until("some rows stored", lambda: stored_count(pg_dsn)[0] > 0, timeout=30)
        infra.postgres.stop()
        down_at = time.monotonic()
        wait_until("ready 503 while postgres is down",
                   lambda: requests.get(url + "/health/ready", timeout=5).status_code == 503,
                   timeout=20)
        health = requests.get(url + "/health", timeout=5).json()
        assert health["checks"]["postgres"]["status"] == "DOWN"
        time.sleep(max(0.0, 4 - (time.monotonic() - down_at)))
        infra.postgres.start()
        infra.postgres.wait_ready(30)
    finally:
        th.join(120)
    assert not errors, errors
    assert produced.is_set()
    wait_until("all 3000 stored", lambda: stored_count(pg_dsn)[0] >= 3000, timeout=60)
    time.sleep(0.5)
    assert stored_count(pg_dsn) == (3000, 3000)
    assert_counts_match_rows(pg_dsn)
    wait_until("ready again",
               lambda: requests.get(url + "/health/ready", timeout=5).status_code == 200,
               timeout=20)
    assert metric(url, "consumer_paused") == 0


def test_kill9_mid_stream_loses_and_doubles_nothing(infra, services, topics, pg_dsn,
                                                     kafkatool):
    brokers = infra.kafka.bootstrap
    events = [event(message=f"crash {i}") for i in range(4000)]
    proc, url = start_consumer(services, topics, pg_dsn, batch_max_events=200)
    produce(kafkatool, brokers, topics["partial"], events)
    wait_until("some rows stored", lambda: stored_count(pg_dsn)[0] > 0, timeout=30)
    proc.kill9()
    stored_at_crash = stored_count(pg_dsn)[0]
    proc.start()
    proc.wait_ready(20)
    wait_until("all 4000 stored", lambda: stored_count(pg_dsn)[0] >= 4000, timeout=60)
    time.sleep(0.5)
    assert stored_count(pg_dsn) == (4000, 4000), f"{stored_at_crash} stored at the crash"
    assert_counts_match_rows(pg_dsn)


def test_batches_in_flight_are_committed_only_once_stored(infra, services, topics, pg_dsn,
                                                    kafkatool):
    """The loop thread gathers the next batch while the store thread writes
    one (consumer.c), so two batches can be gathered and not yet stored.
    With the table locked against inserts, one is stuck in its COPY and the
    next waits for the store thread; a kill -9 then must find neither
    batch's offsets committed: after a restart every event is stored, once.
    A batch whose offsets were committed when it was handed over (or before
    its transaction committed) would be lost here."""
    brokers = infra.kafka.bootstrap
    first = [event(message=f"before the lock {i}") for i in range(100)]
    stuck = [event(message=f"behind the lock {i}") for i in range(500)]
    # No probe (dedup_by_id off): the loop thread never touches the table,
    # so it gathers and queues while the store thread waits for the lock.
    proc, url = start_consumer(services, topics, pg_dsn, batch_max_events=100,
                               batch_max_ms=2000, store_dedup_by_id="false")
    produce(kafkatool, brokers, topics["complete"], first)
    wait_until("the first batch stored", lambda: stored_count(pg_dsn)[0] == 100)
    lock = psycopg2.connect(pg_dsn)
    try:
        with lock.cursor() as cur:
            cur.execute("LOCK TABLE log_events IN SHARE MODE")  # inserts wait
        produce(kafkatool, brokers, topics["complete"], stuck)
        # One batch in the store thread (waiting for the lock), one waiting.
        wait_until("two more batches gathered",
                   lambda: metric(url, "log_events_consumed_total") >= 300)
        wait_until("the store thread waiting for the lock",
                   lambda: sql(pg_dsn, "SELECT count(*) FROM pg_stat_activity "
                                       "WHERE wait_event_type = 'Lock' "
                                       "AND query LIKE '%%COPY log_events%%'")[0][0] == 1)
        proc.kill9()
    finally:
        lock.rollback()
        lock.close()
    proc.start()
    proc.wait_ready(20)
    wait_until("all 600 stored", lambda: stored_count(pg_dsn)[0] >= 600, timeout=60)
    time.sleep(0.5)
    assert stored_count(pg_dsn) == (600, 600)
    assert_counts_match_rows(pg_dsn)


def test_a_stored_row_in_one_writers_part_rolls_back_every_part(infra, services, topics,
                                                                pg_dsn, kafkatool):
    """The direct path COPYs a batch on two connections at once (store.writers
    2), each its half in a transaction of its own.  A row of the second half
    already stored (same id and timestamp; no probe, dedup_by_id off) fails
    that COPY: the first half must not be committed either, so the batch is
    stored once through the staging path with that one row skipped."""
    brokers = infra.kafka.bootstrap
    first = [event(message=f"first {i}") for i in range(100)]
    proc, url = start_consumer(services, topics, pg_dsn, store_dedup_by_id="false",
                               store_writers=2, batch_max_ms=3000)
    produce(kafkatool, brokers, topics["complete"], first)
    wait_until("100 stored", lambda: stored_count(pg_dsn)[0] == 100)
    assert proc.stop() == 0
    # One batch of 600 when the consumer is back: halves of 300, the
    # duplicate in the second.
    second = [event(level="ERROR", message=f"second {i}") for i in range(599)]
    second.insert(500, first[0])
    produce(kafkatool, brokers, topics["complete"], second)
    proc.start()
    proc.wait_ready(20)
    wait_until("699 stored", lambda: stored_count(pg_dsn)[0] >= 699)
    wait_until("600 records stored or skipped",
               lambda: metric(url, "log_events_processed_total")
               + metric(url, "log_events_duplicates_total") >= 600)
    time.sleep(0.5)
    assert stored_count(pg_dsn) == (699, 699)
    assert metric(url, "log_events_duplicates_total") == 1
    assert metric(url, "log_events_processed_total") == 599
    assert_counts_match_rows(pg_dsn)


def test_poison_messages_go_to_dlq(infra, services, topics, pg_dsn, kafkatool):
    brokers = infra.kafka.bootstrap
    # A row the database refuses although it is a valid event.  (A trigger,
    # not a CHECK constraint: partitions made later by LIKE would lack it.)
    sql(pg_dsn, "CREATE FUNCTION it_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.message = 'poison-pg' THEN RAISE EXCEPTION 'it_poison: refused' "
                "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$; "
                "CREATE TRIGGER it_poison BEFORE INSERT ON log_events FOR EACH ROW "
                "EXECUTE FUNCTION it_poison()")
    good = [event(message=f"good {i}", service="poison-test") for i in range(30)]
    refused = event(message="poison-pg", service="poison-test")
    no_service = {k: v for k, v in event().items() if k != "service"}
    records = good[:10] + ["this is {not json"] + good[10:20] + [refused, no_service] + good[20:]
    _, url = start_consumer(services, topics, pg_dsn, batch_max_ms=500, retry_max_attempts=2)
    produce(kafkatool, brokers, topics["complete"], records)

    wait_until("3 dead letters", lambda: topic_count(kafkatool, brokers, topics["dlq"]) >= 3)
    dead = consume(kafkatool, brokers, topics["dlq"], 3)
    assert len(dead) == 3, dead
    by_reason = {d["headers"]["reason"]: d for d in dead}
    assert set(by_reason) == {"invalid_json", "invalid_event", "db_rejected"}
    assert by_reason["invalid_json"]["value"] == "this is {not json"
    assert json.loads(by_reason["db_rejected"]["value"])["id"] == refused["id"]
    assert "it_poison" in by_reason["db_rejected"]["headers"]["error"]
    assert "service" in by_reason["invalid_event"]["headers"]["error"]
    for d in dead:
        h = d["headers"]
        assert h["origin_topic"] == topics["complete"]
        assert int(h["origin_partition"]) >= 0 and int(h["origin_offset"]) >= 0
        assert h["stage"] == "consumer"
    wait_until("the good ones stored", lambda: stored_count(pg_dsn)[0] == 30)
    assert stored_count(pg_dsn, "message = 'poison-pg'")[0] == 0
    assert metric(url, "log_events_errors_total") == 3


KAFKA_MAX = 1000000  # librdkafka's message.max.bytes, the consumer's DLQ producer's too


def test_dead_letter_too_large_for_the_dlq_is_cut_and_nothing_waits(
        infra, services, topics, pg_dsn, kafkatool):
    """Issue #18, item 2: a record just under Kafka's limit that must be
    dead-lettered is over it once the DLQ headers are added.  Kafka refuses
    that for good; it used to be retried for ever and held every later
    batch.  It must go to the DLQ cut, with its reason and its size, and
    the events after it must be stored."""
    brokers = infra.kafka.bootstrap
    big = "x" * (KAFKA_MAX - 100)  # not JSON: dead-lettered as invalid_json
    after = [event(message=f"after {i}", service="big-test") for i in range(5)]
    _, url = start_consumer(services, topics, pg_dsn, batch_max_ms=100)
    produce(kafkatool, brokers, topics["complete"], [big])
    # The events after it in a later batch: the one that used to wait.
    wait_until("the big record's batch gathered",
               lambda: metric(url, "consumer_batch_size_count") >= 1)
    produce(kafkatool, brokers, topics["complete"], after)

    wait_until("the events after it stored", lambda: stored_count(pg_dsn)[0] == 5)
    dead = consume(kafkatool, brokers, topics["dlq"], 2, wait_ms=5000)
    assert len(dead) == 1, [d["headers"] for d in dead]
    h = dead[0]["headers"]
    assert h["reason"] == "invalid_json" and h["stage"] == "consumer"
    assert h["origin_topic"] == topics["complete"] and int(h["origin_offset"]) >= 0
    assert int(h["truncated"]) == len(big)
    assert dead[0]["value"] == big[:65536]
    assert metric(url, "log_events_errors_total") == 1
    assert metric(url, "consumer_dead_letters_truncated_total") == 1


# ---- the query API -----------------------------------------------------------------

@pytest.fixture
def stored_set(infra, services, topics, pg_dsn, kafkatool):
    """120 events with known fields stored through Kafka; (url, events, dsn)."""
    rnd = random.Random(5)
    base = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
    words = ["disk", "full", "timeout", "payment", "login", "cache", "miss"]
    events = []
    for i in range(120):
        # Every fourth pair shares a timestamp, so the id breaks the tie.
        ts = base + timedelta(seconds=(i // 2) * 30 if i % 4 < 2 else i * 30)
        events.append(event(ts, service=rnd.choice(["api", "web", "db"]),
                            host=rnd.choice(["h1", "h2"]),
                            tenant=rnd.choice(["acme", "globex"]),
                            level=rnd.choice(LEVELS),
                            message=" ".join(rnd.sample(words, 3)) + f" n{i}"))
    _, url = start_consumer(services, topics, pg_dsn)
    produce(kafkatool, infra.kafka.bootstrap, topics["complete"], events)
    wait_until("120 stored", lambda: stored_count(pg_dsn)[0] == 120)
    return url, events, pg_dsn


def newest_first(events):
    return sorted(events, key=lambda e: (e["timestamp"], e["id"]), reverse=True)


def get_logs(url, **params):
    r = requests.get(url + "/api/logs", params=params, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success" and body["count"] == len(body["logs"])
    return body


def walk(url, page, **params):
    """Every page of a query; returns the ids in order and the page count."""
    ids, cursor, pages = [], None, 0
    while True:
        p = dict(params, limit=page)
        if cursor:
            p["cursor"] = cursor
        body = get_logs(url, **p)
        ids += [e["id"] for e in body["logs"]]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            return ids, pages
        assert pages < 200


def test_filters_return_exactly_the_matching_rows(stored_set):
    url, events, _ = stored_set
    rank = {lv: i for i, lv in enumerate(LEVELS)}
    t_from = sorted(e["timestamp"] for e in events)[30]
    t_to = sorted(e["timestamp"] for e in events)[90]
    from_ms = int(datetime.strptime(t_from, "%Y-%m-%dT%H:%M:%S.%fZ")
                  .replace(tzinfo=timezone.utc).timestamp() * 1000)
    cases = [
        ({}, lambda e: True),
        ({"service": "api"}, lambda e: e["service"] == "api"),
        ({"host": "h2"}, lambda e: e["host"] == "h2"),
        ({"tenant": "globex"}, lambda e: e["tenant"] == "globex"),
        ({"level": "error"}, lambda e: e["level"] == "ERROR"),
        ({"min_level": "WARN"}, lambda e: rank[e["level"]] >= 3),
        ({"q": "disk timeout"}, lambda e: "disk" in e["message"] and "timeout" in e["message"]),
        ({"text": "payment"}, lambda e: "payment" in e["message"].split()),
        ({"from": t_from, "to": t_to}, lambda e: t_from <= e["timestamp"] < t_to),
        ({"from": str(from_ms)}, lambda e: e["timestamp"] >= t_from),
        ({"service": "web", "min_level": "info", "tenant": "acme"},
         lambda e: e["service"] == "web" and rank[e["level"]] >= 2 and e["tenant"] == "acme"),
    ]
    for params, keep in cases:
        want = [e["id"] for e in newest_first([e for e in events if keep(e)])]
        body = get_logs(url, limit=1000, **params)
        assert [e["id"] for e in body["logs"]] == want, params
        assert body["next_cursor"] is None
    # The rows carry the event's fields back.
    one = get_logs(url, limit=1)["logs"][0]
    src = next(e for e in events if e["id"] == one["id"])
    for k in ("timestamp", "received_at", "level", "message", "service", "host", "tenant"):
        assert one[k] == src[k], k
    assert "stored_at" in one and one["enrichment_status"] == "complete"


def test_pages_walk_everything_once_under_inserts(stored_set, infra, topics, kafkatool):
    url, events, dsn = stored_set
    want = [e["id"] for e in newest_first(events)]
    ids, pages = walk(url, 7)
    assert ids == want and pages == 18
    ids, _ = walk(url, 9, service="api")
    assert ids == [e["id"] for e in newest_first([e for e in events if e["service"] == "api"])]

    # Newer and older rows arrive between pages: the walk started before them
    # neither repeats nor skips any row that sorts after its cursor.
    first = get_logs(url, limit=10)
    newer = [event(datetime.now(timezone.utc), message="late newer") for _ in range(5)]
    produce(kafkatool, infra.kafka.bootstrap, topics["partial"], newer)
    wait_until("5 more stored", lambda: stored_count(dsn)[0] == 125)
    seen, cursor = [e["id"] for e in first["logs"]], first["next_cursor"]
    while cursor:
        body = get_logs(url, limit=10, cursor=cursor)
        seen += [e["id"] for e in body["logs"]]
        cursor = body["next_cursor"]
    assert seen == want

    # The plain "ts_us:id" form of a cursor is accepted too.
    last = get_logs(url, limit=1)["logs"][0]
    ts_us = sql(dsn, "SELECT (extract(epoch FROM ts) * 1000000)::bigint FROM log_events "
                     "WHERE id = %s", (last["id"],))[0][0]
    body = get_logs(url, limit=1, cursor=f"{ts_us}:{last['id']}")
    assert body["logs"][0]["id"] != last["id"]


def test_walk_and_its_fallback_give_the_plain_querys_pages(infra, services, topics, pg_dsn,
                                                         kafkatool):
    """Pages with a word or two fields first walk the newest rows of one
    index (query.c, the walk: 100 rows per row of the page and one more);
    a page the walk cannot fill is run in full.  Both must give exactly the
    rows, order and cursors of the plain query.  450 events: a page of 1 walks
    200 rows, so "alpha" (every third event) and api+WARN fill it from the
    walk, "omega" (the 4 oldest) and api+FATAL (rare) go to the race."""
    rnd = random.Random(11)
    base = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=3)
    events = []
    for i in range(450):
        # Pairs share a timestamp now and then, so the id breaks the tie.
        ts = base + timedelta(seconds=(i // 2) * 20 if i % 5 == 0 else i * 10)
        words = ["alpha"] if i % 3 == 0 else []
        words += ["omega"] if i < 4 else []
        words += rnd.sample(["disk", "cache", "login", "queue"], 2)
        level = "FATAL" if i in (7, 300) else rnd.choice(["INFO", "WARN", "ERROR"])
        events.append(event(ts, service=rnd.choice(["api", "web"]), level=level,
                            host=rnd.choice(["h1", "h2", "h3"]),
                            message=" ".join(words) + f" n{i}"))
    _, url = start_consumer(services, topics, pg_dsn)
    produce(kafkatool, infra.kafka.bootstrap, topics["complete"], events)
    wait_until("450 stored", lambda: stored_count(pg_dsn)[0] == 450)
    # Statistics, so that the planner's estimate sends the dense filters to
    # the walk and the rare ones to the race (query_walk_worth).
    sql(pg_dsn, "ANALYZE log_events")
    cases = [
        ({"text": "alpha"}, lambda e: "alpha" in e["message"].split()),
        ({"text": "omega"}, lambda e: "omega" in e["message"].split()),
        ({"text": "alpha disk"},
         lambda e: {"alpha", "disk"} <= set(e["message"].split())),
        ({"service": "api", "level": "WARN"},
         lambda e: e["service"] == "api" and e["level"] == "WARN"),
        ({"service": "api", "level": "FATAL"},
         lambda e: e["service"] == "api" and e["level"] == "FATAL"),
        ({"host": "h2", "min_level": "ERROR", "text": "cache"},
         lambda e: e["host"] == "h2" and e["level"] in ("ERROR", "FATAL")
         and "cache" in e["message"].split()),
    ]
    for params, keep in cases:
        want = [e["id"] for e in newest_first([e for e in events if keep(e)])]
        assert want, params
        for page in (1, 3, 50):
            ids, pages = walk(url, page, **params)
            assert ids == want, (params, page)
            assert pages == max(1, -(-len(want) // page)), (params, page, pages)
        # The first page of "alpha" comes from the walk, the whole of "omega"
        # from the fallback; the answer is the same as without a walk.
        body = get_logs(url, limit=2, **params)
        assert [e["id"] for e in body["logs"]] == want[:2], params


def test_get_by_id_and_stats(stored_set):
    url, events, _ = stored_set
    e = events[17]
    r = requests.get(f"{url}/api/logs/{e['id']}", timeout=5)
    assert r.status_code == 200
    assert r.json()["log"]["message"] == e["message"]
    r = requests.get(f"{url}/api/logs/{uuid.uuid4()}", timeout=5)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = requests.get(f"{url}/api/logs/not-a-uuid", timeout=5)
    assert r.status_code == 400 and "id" in r.json()["error"]["message"]

    body = requests.get(url + "/api/stats", timeout=5).json()
    assert body["total"] == 120
    for lv in LEVELS:
        assert body["by_level"][lv] == sum(1 for x in events if x["level"] == lv)
    for svc in ("api", "web", "db"):
        assert body["by_service"][svc] == sum(1 for x in events if x["service"] == svc)
    body = requests.get(url + "/api/stats", params={"service": "db"}, timeout=5).json()
    assert body["total"] == sum(1 for x in events if x["service"] == "db")


def test_stats_from_counts_equal_the_rows(infra, services, topics, pg_dsn, kafkatool):
    """/api/stats adds up the per-minute and per-hour counts: after fresh
    batches, redelivered ones (some rows new, most already stored) and ids
    resent under another timestamp, it answers what counting the rows
    answers, for every filter and for ranges cut anywhere."""
    brokers = infra.kafka.bootstrap
    rnd = random.Random(11)
    now = datetime.now(timezone.utc)
    events = []
    for i in range(400):
        fields = {"service": rnd.choice(["api", "web", "db"]), "host": rnd.choice(["h1", "h2"]),
                  "level": rnd.choice(LEVELS), "message": f"m{i}"}
        if i % 5:
            fields["tenant"] = rnd.choice(["acme", "globex"])
        # Spread over three hours, at odd seconds and milliseconds.
        events.append(event(now - timedelta(seconds=rnd.uniform(1, 3 * 3600)), **fields))
    _, url = start_consumer(services, topics, pg_dsn)
    produce(kafkatool, brokers, topics["complete"], events[:280])
    wait_until("280 stored", lambda: stored_count(pg_dsn)[0] == 280)
    # Redelivered: 80 already stored with 20 new ones in the same batches
    # (the staging path), and 10 ids resent under a new timestamp.
    resent = [dict(e, timestamp=rfc3339(now - timedelta(seconds=rnd.uniform(1, 60))))
              for e in events[:10]]
    produce(kafkatool, brokers, topics["partial"], events[200:300] + resent)
    wait_until("300 stored", lambda: stored_count(pg_dsn)[0] == 300)
    produce(kafkatool, brokers, topics["complete"], events[300:])
    wait_until("400 stored", lambda: stored_count(pg_dsn)[0] == 400)
    wait_until("every record stored or skipped",
               lambda: metric(url, "log_events_processed_total")
               + metric(url, "log_events_duplicates_total") >= 490)
    assert metric(url, "log_events_duplicates_total") == 90
    assert_counts_match_rows(pg_dsn)

    rank = {lv: i for i, lv in enumerate(LEVELS)}

    def ts(e):
        return datetime.strptime(e["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ") \
            .replace(tzinfo=timezone.utc)

    def at(s):
        return rfc3339(now - timedelta(seconds=s))

    cases = [
        ({}, lambda e: True),
        ({"service": "db"}, lambda e: e["service"] == "db"),
        ({"tenant": "globex"}, lambda e: e.get("tenant") == "globex"),
        ({"level": "ERROR"}, lambda e: e["level"] == "ERROR"),
        ({"min_level": "WARN", "service": "api"},
         lambda e: rank[e["level"]] >= 3 and e["service"] == "api"),
        ({"host": "h2"}, lambda e: e["host"] == "h2"),          # counted over the rows
        ({"text": "m7"}, lambda e: e["message"] == "m7"),
        ({"from": at(2.5 * 3600 + 7.123), "to": at(1799.5)}, None),  # hours, minutes, rows
        ({"from": at(1500.25), "to": at(400.75)}, None),             # minutes and rows
        ({"from": at(3000.5), "to": at(2990.5)}, None),              # within a minute or two
        ({"from": at(5000.5)}, None),
        ({"from": at(3 * 3600 + 100), "to": rfc3339(now + timedelta(hours=1)),
          "tenant": "acme", "min_level": "DEBUG"}, None),
    ]
    for params, keep in cases:
        def want(e, params=params, keep=keep):
            if keep:
                return keep(e)
            t = rfc3339(ts(e))
            return (t >= params["from"] and ("to" not in params or t < params["to"])
                    and e.get("tenant") == params.get("tenant", e.get("tenant"))
                    and rank[e["level"]] >= rank[params.get("min_level", "TRACE")])
        kept = [e for e in events if want(e)]
        body = requests.get(url + "/api/stats", params=params, timeout=10).json()
        assert body["status"] == "success", body
        assert body["total"] == len(kept), params
        assert body["by_level"] == {lv: sum(1 for e in kept if e["level"] == lv)
                                    for lv in LEVELS}, params
        assert body["by_service"] == {s: n for s in ("api", "web", "db")
                                      if (n := sum(1 for e in kept if e["service"] == s))}, \
            params


def test_gateway_tenant_confines_queries(stored_set):
    url, events, _ = stored_set
    acme = {"X-Tenant-ID": "acme"}
    body = requests.get(url + "/api/logs", params={"limit": 1000}, headers=acme,
                        timeout=5).json()
    assert [e["id"] for e in body["logs"]] == \
        [e["id"] for e in newest_first([e for e in events if e["tenant"] == "acme"])]
    r = requests.get(url + "/api/logs", params={"tenant": "globex"}, headers=acme, timeout=5)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    other = next(e for e in events if e["tenant"] == "globex")
    assert requests.get(f"{url}/api/logs/{other['id']}", headers=acme,
                        timeout=5).status_code == 404
    mine = next(e for e in events if e["tenant"] == "acme")
    assert requests.get(f"{url}/api/logs/{mine['id']}", headers=acme,
                        timeout=5).status_code == 200
    stats = requests.get(url + "/api/stats", headers=acme, timeout=5).json()
    assert stats["total"] == sum(1 for e in events if e["tenant"] == "acme")


def test_bad_parameters_are_400(infra, services, topics, pg_dsn):
    _, url = start_consumer(services, topics, pg_dsn)
    cases = [
        ({"level": "LOUD"}, "level"), ({"min_level": "x"}, "min_level"),
        ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "many"}, "limit"),
        ({"from": "yesterday"}, "from"), ({"to": "2024-02-30T00:00:00Z"}, "to"),
        ({"from": "2000", "to": "1000"}, "from"),
        ({"cursor": "garbage"}, "cursor"), ({"service": "s" * 300}, "service"),
        # Well-formed, but before year 1: no position PostgreSQL can compare with.
        ({"cursor": f"-9223372036854775808:{uuid.uuid4()}"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(f"-62135596800000001:{uuid.uuid4()}".encode())
          .decode().rstrip("=")}, "cursor"),
        ({"from": "-62135596800001"}, "from"), ({"to": "0000-06-01T00:00:00Z"}, "to"),
    ]
    for params, name in cases:
        r = requests.get(url + "/api/logs", params=params, timeout=5)
        assert r.status_code == 400, (params, r.text)
        err = r.json()["error"]
        assert err["code"] == "invalid_parameter" and f"'{name}'" in err["message"], params
    # The earliest accepted times work, also as the end of the stats' default day.
    r = requests.get(url + "/api/logs", params={"cursor": f"-62135596800000000:{uuid.uuid4()}",
                                                "from": "0001-01-01T00:00:00Z"}, timeout=5)
    assert r.status_code == 200 and r.json()["logs"] == [], r.text
    r = requests.get(url + "/api/stats", params={"to": "0001-01-01T12:00:00Z"}, timeout=5)
    assert r.status_code == 200 and r.json()["total"] == 0, r.text


# ---- retention ----------------------------------------------------------------------

def utc_today():
    return datetime.now(timezone.utc).date()


def partitions(dsn):
    return {r[0] for r in sql(dsn, "SELECT c.relname FROM pg_inherits i JOIN pg_class c "
                                   "ON c.oid = i.inhrelid WHERE i.inhparent = "
                                   "'log_events'::regclass")}


def pname(day):
    return "log_events_" + day.strftime("%Y%m%d")


def test_retention_drops_only_old_partitions(infra, services, topics, pg_dsn):
    # Every day below is absolute (from day0, the UTC date at the start), and
    # the result is checked against what retention leaves on day0 or on the
    # UTC date at the end: the consumer may run its pass on either side of a
    # midnight that falls during the test.
    day0 = utc_today()
    sql(pg_dsn, "SELECT logpipe_ensure_partitions(20, 0)")
    rows = [day0 - timedelta(days=d) for d in (15, 8, 7, 3)]
    for day in rows:
        sql(pg_dsn, "INSERT INTO log_events (id, ts, message, service) VALUES (%s, %s, 'old', "
                    "'retention')", (str(uuid.uuid4()),
                                     datetime.combine(day, datetime.min.time(), timezone.utc)
                                     + timedelta(hours=12)))
    # Older than any partition: lands in the default partition.
    sql(pg_dsn, "INSERT INTO log_events (id, ts, message, service) VALUES (%s, now() - "
                "interval '400 days', 'ancient', 'retention')", (str(uuid.uuid4()),))
    # Rows written by hand are counted by a rebuild.
    assert sql(pg_dsn, "SELECT logpipe_counts_rebuild('-infinity', 'infinity')")[0][0] == 5
    assert_counts_match_rows(pg_dsn)

    assert pname(day0 - timedelta(days=19)) in partitions(pg_dsn)
    start_consumer(services, topics, pg_dsn, retention_days=7)
    wait_until("old partitions dropped",
               lambda: pname(day0 - timedelta(days=8)) not in partitions(pg_dsn), timeout=30)
    have = partitions(pg_dsn)
    left = sorted(r[0] for r in sql(pg_dsn, "SELECT (ts AT TIME ZONE 'UTC')::date FROM "
                                            "log_events WHERE service = 'retention'"))
    day1 = utc_today()

    def left_by_retention_on(today):
        """What is wrong with `have` and `left` for a pass on `today` ("" if nothing)."""
        wrong = [f"{pname(today - timedelta(days=d))} kept" for d in range(8, 21)
                 if pname(today - timedelta(days=d)) in have]
        wrong += [f"{pname(today - timedelta(days=d))} dropped" for d in range(0, 8)
                  if pname(today - timedelta(days=d)) not in have]
        want = sorted(d for d in rows if d >= today - timedelta(days=7))
        if left != want:
            wrong.append(f"rows left on {left}, want {want}")
        return "; ".join(wrong)

    verdicts = {d: left_by_retention_on(d) for d in {day0, day1}}
    assert "" in verdicts.values(), verdicts
    for days in range(1, 8):  # and the ones ahead
        assert pname(day0 + timedelta(days=days)) in have, days
    assert "log_events_default" in have
    # The counts of the dropped days go in the same pass.
    wait_until("old counts deleted",
               lambda: sql(pg_dsn, "SELECT count(*) FROM log_events_hour")[0][0] == len(left))
    assert_counts_match_rows(pg_dsn)


def test_retention_runs_again_every_interval(infra, services, topics, pg_dsn):
    """Retention is not only a start-up pass: it runs again every
    partitions.interval_s (an hour by default; 1 s here), so a partition
    that became too old while the consumer runs is dropped."""
    proc, _ = start_consumer(services, topics, pg_dsn, retention_days=7,
                             partitions_interval_s=1)
    # After the first pass (its log line), old partitions appear, as if
    # the days had gone by; only a later pass can drop them.
    wait_until("the first partition pass",
               lambda: "partitions: " in proc.log_path.read_text(errors="replace"))
    # (Not listed afterwards: the next pass may already be dropping them.)
    day0 = utc_today()
    old = {pname(day0 - timedelta(days=d)) for d in range(8, 13)}
    assert sql(pg_dsn, "SELECT logpipe_ensure_partitions(12, 0)")[0][0] >= len(old) - 1
    sql(pg_dsn, "INSERT INTO log_events (id, ts, message, service) VALUES (%s, %s, 'old', "
                "'retention')", (str(uuid.uuid4()),
                                 datetime.combine(day0 - timedelta(days=10),
                                                  datetime.min.time(), timezone.utc)))
    wait_until("a later pass to drop them", lambda: not old & partitions(pg_dsn), timeout=30)
    wait_until("the old row gone", lambda: sql(
        pg_dsn, "SELECT count(*) FROM log_events WHERE service = 'retention'")[0][0] == 0)


def test_ids_stored_asks_the_days_partitions_and_the_default_one(pg_dsn):
    """logpipe_ids_stored (the direct path's dedup probe): an id stored in a
    daily partition of the window's days, or in the default partition within
    the window, is found; outside them it is not."""
    now = datetime.now(timezone.utc)
    sql(pg_dsn, "SELECT logpipe_ensure_partitions(5, 1)")
    recent, old, ancient = (str(uuid.uuid4()) for _ in range(3))
    for i, ts in ((recent, now), (old, now - timedelta(days=4)),
                  (ancient, now - timedelta(days=400))):
        sql(pg_dsn, "INSERT INTO log_events (id, ts, message, service) VALUES (%s, %s, 'm', "
                    "'probe')", (i, ts))

    def stored(ids, lo, hi):
        return sql(pg_dsn, "SELECT logpipe_ids_stored(%s::uuid[], %s, %s)",
                   (ids, lo, hi))[0][0]

    day = timedelta(days=1)
    assert stored([str(uuid.uuid4()), recent], now - day, now + day)
    assert not stored([str(uuid.uuid4())], now - day, now + day)
    assert not stored([old], now - day, now + day)
    assert stored([old], now - 5 * day, now - 3 * day)
    assert stored([ancient], now - 401 * day, now - 399 * day)
    assert not stored([ancient], now - day, now + day)


def test_new_partition_waits_for_inserts_into_the_default_one(pg_dsn):
    """logpipe_ensure_partitions() moves a day's rows out of the default
    partition before attaching that day's partition; an insert of such a
    row still in flight must be waited for and moved too, not make the
    attach fail (migration 003's lock)."""
    today = datetime.now(timezone.utc).date()
    far = datetime.combine(today + timedelta(days=30), datetime.min.time(), timezone.utc)
    # Every day up to the one before exists, so that the call below has that
    # day's partition alone to make (and takes no lock before it).
    sql(pg_dsn, "SELECT logpipe_ensure_partitions(0, 29)")
    early = str(uuid.uuid4())
    sql(pg_dsn, "INSERT INTO log_events (id, ts, message, service) VALUES (%s, %s, 'm', 's')",
        (early, far + timedelta(hours=1)))
    late = str(uuid.uuid4())
    writer = psycopg2.connect(pg_dsn, connect_timeout=5)
    result = {}
    try:
        cur = writer.cursor()  # psycopg2 opens a transaction: held until commit
        cur.execute("INSERT INTO log_events (id, ts, message, service) VALUES (%s, %s, 'm', "
                    "'s')", (late, far + timedelta(hours=2)))

        def ensure():
            try:
                result["created"] = sql(pg_dsn, "SELECT logpipe_ensure_partitions(0, 30)")[0][0]
            except psycopg2.Error as e:
                result["error"] = e

        th = threading.Thread(target=ensure)
        th.start()
        wait_until("the partition creation waiting for the insert", lambda: sql(
            pg_dsn, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND position('logpipe_ensure_partitions' IN query) > 0")[0][0] == 1,
            timeout=20)
        writer.commit()
        th.join(30)
        assert not th.is_alive()
    finally:
        writer.close()
    assert "error" not in result, result
    assert result["created"] == 1
    part = "log_events_" + far.strftime("%Y%m%d")
    where = sql(pg_dsn, "SELECT id::text, tableoid::regclass::text FROM log_events "
                        "WHERE id IN (%s, %s)", (early, late))
    assert sorted(where) == sorted([(early, part), (late, part)])


# ---- end to end ---------------------------------------------------------------------

def test_end_to_end_through_producer_and_enricher(infra, services, topics, pg_dsn):
    services("producer", "enricher", topics=topics,
             config={"enricher": {"metadata.url": "http://127.0.0.1:9"}})
    # retention.days 0: seed 003's example is from 2009.
    _, url = start_consumer(services, topics, pg_dsn, retention_days=0)
    bodies = [
        {"organizationId": "my-org", "level": "INFO", "source": "my-service",
         "message": "Application started successfully"},
        {"correlationId": "test-1", "severity": "INFO", "message": "Test", "source": "cli",
         "timestamp": 1234567890000},
    ]
    ids = []
    for b in bodies:
        r = requests.post(services.url("producer") + "/api/logs", json=b, timeout=10)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    for i, b in zip(ids, bodies):
        got = wait_until(f"{i} queryable", lambda: (lambda r: r.status_code == 200 and r.json())(
            requests.get(f"{url}/api/logs/{i}", timeout=5)), timeout=30)["log"]
        assert got["message"] == b["message"]
        assert got["service"] == b["source"]
    assert get_logs(url, tenant="my-org")["logs"][0]["id"] == ids[0]
    assert get_logs(url, to="1234567890001")["logs"][0]["correlation_id"] == "test-1"
