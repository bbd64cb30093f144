"""test_generator.py - logpipe-generator against a real Kafka and Redis.

What is checked:
  * start / status / stop over REST, and that every event counted `sent` is
    in the topic (the sum of its end offsets), none more;
  * a run with a duration stops by itself at the rate asked (within 2 %);
  * the events are the producer's normalised schema, keyed by service, at the
    size asked (seed 004's size_kb);
  * bad requests get a 400 that names the field; a second start restarts;
  * seed 000's bare `curl -X POST .../start` and seed 004's /start and /stop;
  * two instances share one rate through Redis, and keep their share while
    Redis is down (it is restarted before the test ends);
  * the metrics the seeds promise.

Each test uses its own topics and its own Redis registry key. Every wait is
bounded. Message counts come from tests/bench/kafkatool.c (`count`: the sum of
the high watermarks; `consume`: the messages), compiled once per session.
"""

import json
import subprocess
import time
import uuid
from pathlib import Path

import requests

import infra as lp

REPO = Path(__file__).resolve().parents[2]

REQUIRED = ("id", "schema_version", "timestamp", "received_at", "level", "message", "service",
            "host", "source_ip")
LEVELS = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"}




def topic_count(tool, brokers, topic):
    r = subprocess.run([tool, "count", brokers, topic], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[0])


def topic_messages(tool, brokers, topic, limit):
    r = subprocess.run([tool, "consume", brokers, topic, str(limit), "1000", "20000"],
                       capture_output=True, text=True, timeout=40)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


class Gen:
    """A generator's REST API."""

    def __init__(self, url):
        self.url = url

    def post(self, path, body=None, raw=None, **kw):
        if body is not None:
            kw["json"] = body
        if raw is not None:
            kw["data"] = raw
        return requests.post(self.url + path, timeout=15, **kw)

    def start(self, body=None, path="/api/v1/generator/start"):
        r = self.post(path, body)
        assert r.status_code == 200, r.text
        return r.json()

    def stop(self, path="/api/v1/generator/stop"):
        r = self.post(path)
        assert r.status_code == 200, r.text
        return r.json()

    def status(self):
        r = requests.get(self.url + "/api/v1/generator/status", timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if pred(st):
                return st
            if time.monotonic() >= deadline:
                raise AssertionError(f"generator: {what} not seen within {timeout} s: {st}")
            time.sleep(0.1)


def gen_config(**extra):
    """Settings for one test's generators: a registry of their own."""
    cfg = {"generator.registry_key": f"logpipe:test:{uuid.uuid4().hex[:10]}"}
    cfg.update(extra)
    return cfg


def start_generator(services, topics, **extra):
    procs = services("generator", topics=topics, config={"generator": gen_config(**extra)})
    return Gen(procs["generator"].url)


def test_start_status_stop_and_every_sent_event_is_in_kafka(infra, services, topics, kafkatool):
    g = start_generator(services, topics)
    st = g.status()
    assert st["running"] is False and st["state"] == "idle"
    assert st["target_rate"] == 1000 and st["threads"] == 4 and st["batch_size"] == 10

    res = g.start({"rate": 400, "threads": 2, "batch_size": 5, "size_bytes": 512})
    assert res["status"] == "started"
    assert res["generator"]["running"] is True
    st = g.wait(lambda s: s["sent"] >= 600, 15, "600 events sent")
    assert st["running"] is True and st["state"] == "running"
    assert st["target_rate"] == 400 and st["threads"] == 2 and st["size_bytes"] == 512
    assert st["started_at"] and st["stopped_at"] is None
    assert st["instances"] == 1 and st["redis"] == "ok"

    res = g.stop()
    assert res["status"] == "stopped"
    st = g.status()
    assert st["running"] is False and st["state"] == "stopped" and st["stopped_at"]
    assert st["in_flight"] == 0 and st["errors"] == 0
    assert st["sent"] == st["generated"] > 0
    assert topic_count(kafkatool, infra.kafka.bootstrap, topics["raw"]) == st["sent"]

    # Stopped means stopped: nothing more arrives.
    time.sleep(0.5)
    assert g.status()["generated"] == st["generated"]
    assert topic_count(kafkatool, infra.kafka.bootstrap, topics["raw"]) == st["sent"]
    assert g.stop()["status"] == "not_running"


def test_duration_stops_by_itself_at_the_rate(infra, services, topics, kafkatool):
    g = start_generator(services, topics)
    g.start({"rate": 1000, "duration_s": 3})
    st = g.wait(lambda s: s["state"] == "completed", 15, "the run completing")
    st = g.wait(lambda s: s["in_flight"] == 0, 10, "all deliveries reported")
    assert st["running"] is False
    assert abs(st["generated"] - 3000) <= 60, st
    assert abs(st["elapsed_ms"] - 3000) < 100, st
    assert st["sent"] == st["generated"]
    assert topic_count(kafkatool, infra.kafka.bootstrap, topics["raw"]) == st["sent"]


def test_events_are_normalised_keyed_by_service_and_sized(infra, services, topics, kafkatool):
    g = start_generator(services, topics)
    # Seed 004's request, with a duration so that it ends by itself.
    g.start({"size_kb": 1, "rate": 200, "duration_s": 1})
    st = g.wait(lambda s: s["state"] == "completed" and s["in_flight"] == 0, 15, "completion")
    assert st["size_bytes"] == 1024
    msgs = topic_messages(kafkatool, infra.kafka.bootstrap, topics["raw"], st["sent"])
    assert len(msgs) == st["sent"]
    ids, services_seen, levels = set(), set(), set()
    for m in msgs:
        assert len(m["value"].encode()) == 1024
        ev = json.loads(m["value"])
        for f in REQUIRED:
            assert f in ev, (f, ev)
        assert m["key"] == ev["service"]
        assert ev["schema_version"] == 1
        assert ev["level"] in LEVELS
        assert ev["source_ip"].startswith("192.168.1.")
        assert ev["attributes"]["generator"] == st["instance_id"]
        ids.add(ev["id"])
        services_seen.add(ev["service"])
        levels.add(ev["level"])
    assert len(ids) == len(msgs), "ids are unique"
    assert len(services_seen) >= 6
    assert {"INFO", "DEBUG", "WARN"} <= levels


def test_largest_events_reach_kafka(infra, services, topics, kafkatool):
    g = start_generator(services, topics)
    g.start({"size_bytes": 900000, "rate": 4, "duration_s": 1.1})  # events at 0.25 s … 1 s
    st = g.wait(lambda s: s["state"] == "completed" and s["in_flight"] == 0, 20, "completion")
    assert st["errors"] == 0 and st["sent"] == st["generated"] == 4, st
    msgs = topic_messages(kafkatool, infra.kafka.bootstrap, topics["raw"], 4)
    assert [len(m["value"].encode()) for m in msgs] == [900000] * 4


def test_bad_requests_name_the_field_and_start_restarts(services, topics):
    g = start_generator(services, topics)
    for body, code, field in [
        ({"rate": -1}, "invalid_field", "rate"),
        ({"rate": "fast"}, "invalid_field", "rate"),
        ({"threads": 0}, "invalid_field", "threads"),
        ({"batch_size": 2.5}, "invalid_field", "batch_size"),
        ({"size_bytes": 10 ** 9}, "invalid_field", "size_bytes"),
        ({"size_bytes": 100, "size_kb": 1}, "invalid_field", "size_kb"),
        ({"duration_s": -3}, "invalid_field", "duration_s"),
        ({"rtae": 10}, "unknown_field", "rtae"),
    ]:
        r = g.post("/api/v1/generator/start", body)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert r.json()["status"] == "error"
        assert (err["code"], err["field"]) == (code, field), (body, err)
        assert field in err["message"]
    r = g.post("/api/v1/generator/start", raw=b'{"rate": ', headers={"Content-Type":
                                                                       "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert g.status()["running"] is False

    assert g.start({"rate": 100})["status"] == "started"
    res = g.start({"rate": 200})
    assert res["status"] == "restarted"
    assert res["generator"]["target_rate"] == 200 and res["generator"]["running"] is True
    assert g.stop()["status"] == "stopped"


def test_seed_commands(infra, services, topics, kafkatool):
    g = start_generator(services, topics, **{"generator.rate": 50})
    # Seed 000: curl -X POST http://localhost:8090/api/v1/generator/start (no body).
    r = requests.post(g.url + "/api/v1/generator/start", timeout=15)
    assert r.status_code == 200, r.text
    assert r.json()["generator"]["target_rate"] == 50
    g.wait(lambda s: s["sent"] > 0, 10, "events sent")
    r = requests.post(g.url + "/api/v1/generator/stop", timeout=15)
    assert r.status_code == 200 and r.json()["status"] == "stopped"
    # Seed 004: curl -X POST -H "Content-Type: application/json"
    #           -d '{"size_kb": 1, "rate": 10}' http://localhost:5000/start
    r = requests.post(g.url + "/start", data='{"size_kb": 1, "rate": 10}',
                      headers={"Content-Type": "application/json"}, timeout=15)
    assert r.status_code == 200, r.text
    assert r.json()["generator"]["size_bytes"] == 1024
    g.wait(lambda s: s["sent"] > 0, 10, "events sent")
    r = requests.post(g.url + "/stop", timeout=15)
    assert r.status_code == 200 and r.json()["status"] == "stopped"
    # Query parameters, as a plain HTML form would send them.
    r = requests.post(g.url + "/api/v1/generator/start?rate=20&duration_s=0.5", timeout=15)
    assert r.status_code == 200 and r.json()["generator"]["target_rate"] == 20
    g.wait(lambda s: s["state"] == "completed", 10, "completion")


def test_health_catalog_and_metrics(services, topics):
    g = start_generator(services, topics)
    h = requests.get(g.url + "/health", timeout=5).json()
    assert h["checks"]["kafka"]["required"] is True
    assert h["checks"]["redis"]["required"] is False
    assert requests.get(g.url + "/health/ready", timeout=5).status_code == 200
    cat = requests.get(g.url + "/api/v1/generator/catalog", timeout=5).json()
    assert {"hostname", "ipAddress", "datacenter"} <= set(cat["hosts"][0])
    assert "payment-service" in {s["name"] for s in cat["services"]}
    assert set(cat["services"][0]) == {"name", "team", "owner", "tier"}
    assert cat["placement"]["payment-service"] == ["api-01", "api-02"]

    g.start({"rate": 300})
    g.wait(lambda s: s["sent"] >= 300, 10, "300 events sent")
    text = requests.get(g.url + "/metrics", timeout=5).text
    g.stop()
    st = g.status()
    text = requests.get(g.url + "/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values["log_events_generated_total"] == st["generated"]
    assert values["kafka_messages_sent_total"] == st["sent"]
    assert values["log_events_rate_limited_total"] == 0
    assert values["log_generation_rate_current"] == 0
    assert values['circuit_breaker_state{name="kafka"}'] == 0
    assert values['circuit_breaker_state{name="redis"}'] == 0


def test_catalog_loads_into_metadata_svc(services, topics, pg_dsn):
    """The catalogue's objects are metadata-svc's POST bodies as they stand."""
    procs = services("generator", "metadata", topics=topics, pg_dsn=pg_dsn,
                     config={"generator": gen_config()})
    cat = requests.get(procs["generator"].url + "/api/v1/generator/catalog", timeout=5).json()
    md = procs["metadata"].url + "/api/metadata"
    for kind in ("hosts", "services"):
        for obj in cat[kind]:
            r = requests.post(f"{md}/{kind}", json=obj, timeout=10)
            assert r.status_code == 201, (kind, obj, r.status_code, r.text)
    r = requests.get(f"{md}/hosts/web-01", timeout=10)
    assert r.status_code == 200 and r.json()["ipAddress"] == "192.168.1.101", r.text


def _second_generator(services, infra, topics, key, instance_id):
    """Another generator on its own port, sharing the registry key."""
    port = lp.free_port()
    env = lp.service_env("generator", {"generator": port}, infra, topics=topics,
                         extra={"generator.registry_key": key,
                                "generator.instance_id": instance_id})
    proc = lp.ServiceProc("generator", env, services.workdir / "logs" / "generator-b.log",
                          port, cwd=services.workdir / "generator-b")
    proc.start()
    try:
        proc.wait_ready(20)
    except Exception:
        proc.stop()
        raise
    return proc


def _window_rate(gens, seconds):
    """Events/s all gens generated together over a window of `seconds`."""
    t0 = time.monotonic()
    n0 = sum(g.status()["generated"] for g in gens)
    time.sleep(seconds)
    n1 = sum(g.status()["generated"] for g in gens)
    return (n1 - n0) / (time.monotonic() - t0)


def test_two_instances_share_one_rate_through_redis(infra, services, topics):
    key = f"logpipe:test:{uuid.uuid4().hex[:10]}"
    a = Gen(services("generator", topics=topics, config={"generator": {
        "generator.registry_key": key, "generator.instance_id": "gen-a",
        "generator.instance_ttl_ms": 1500}})["generator"].url)
    proc_b = _second_generator(services, infra, topics, key, "gen-b")
    b = Gen(proc_b.url)
    redis_stopped = False
    try:
        a.start({"rate": 1000})
        b.start({"rate": 1000})
        for g in (a, b):
            g.wait(lambda s: s["instances"] == 2 and s["instance_rate"] == 500, 10,
                   "the rate shared by two")
        rate = _window_rate([a, b], 3.0)
        assert abs(rate - 1000) <= 50, rate

        # Redis down: each keeps its last share instead of taking the whole rate.
        infra.redis.stop()
        redis_stopped = True
        a.wait(lambda s: s["redis"] == "unreachable", 10, "redis seen unreachable")
        assert requests.get(a.url + "/health/ready", timeout=5).status_code == 200
        rate = _window_rate([a, b], 2.0)
        assert abs(rate - 1000) <= 60, rate
        for g in (a, b):
            st = g.status()
            assert st["instances"] == 2 and st["instance_rate"] == 500 and st["running"]
        infra.redis.start()
        infra.redis.wait_ready(15)
        redis_stopped = False
        a.wait(lambda s: s["redis"] == "ok", 15, "redis seen again")

        # One stops: the other takes the whole rate at its next heartbeats.
        b.stop()
        a.wait(lambda s: s["instances"] == 1 and s["instance_rate"] == 1000, 10,
               "the whole rate taken over")
        rate = _window_rate([a], 2.0)
        assert abs(rate - 1000) <= 50, rate
        a.stop()
    finally:
        if redis_stopped:
            infra.redis.start()
            infra.redis.wait_ready(15)
        proc_b.stop()
