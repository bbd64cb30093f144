"""test_metadata.py - logpipe-metadata against real PostgreSQL, Redis and Kafka.

What is checked:
  * seed 002's `curl -X POST http://localhost:8082/api/metadata/hosts` example,
    run with curl exactly as written (only the port differs);
  * the CRUD round trip for hosts and services: create (201 + Location), get,
    get by address, list with limit/offset, replace (PUT), update (PATCH),
    delete (204), and 404 after;
  * errors: 400 naming the field (bad address, unknown field, missing key,
    key that does not match the path, bad limit), 409 naming the taken
    field (hostname, ipAddress), 404, 405, invalid JSON;
  * every change is on metadata-changes, keyed host:NAME / service:NAME, in
    order, with a tombstone (null value) for a delete;
  * cache-aside: a read fills Redis (host:NAME, hostip:IP), every write
    removes the keys it affects;
  * the start-up resync publishes rows written behind the service's back.

Each test uses a fresh database, its own topics and unique names. Topic
contents come from tests/bench/kafkatool.c, built once per session; the
helpers below are shared with test_enricher.py.
"""

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

import infra as lp

REPO = Path(__file__).resolve().parents[2]
JSON = {"Content-Type": "application/json"}


# ---- helpers shared with test_enricher.py ------------------------------------------------



def consume(tool, brokers, topics, limit=0, idle_ms=500, wait_ms=20000):
    """Every message of the topics (a list or a comma list), oldest first per partition."""
    if not isinstance(topics, str):
        topics = ",".join(topics)
    r = subprocess.run([tool, "consume", brokers, topics, str(limit), str(idle_ms),
                        str(wait_ms)], capture_output=True, text=True,
                       timeout=wait_ms / 1000 + 30)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def consume_until(tool, brokers, topics, n, timeout=20):
    """consume() again until at least n messages are there (bounded)."""
    return wait_for(f"{n} messages on {topics}",
                    lambda: (lambda m: m if len(m) >= n else None)(
                        consume(tool, brokers, topics, wait_ms=5000)), timeout, 0.2)


def produce(tool, brokers, topic, lines):
    """Writes lines (str or dict) to topic, keyed by their "service"; waits for the acks."""
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    r = subprocess.run([tool, "produce", brokers, topic], input=text, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "failed 0" in r.stdout, r.stdout + r.stderr


def wait_for(what, fn, timeout, interval=0.1):
    """fn() until it returns something true; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(interval)


def redis_cli(redis, *args):
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(redis.port), *args],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---- fixtures --------------------------------------------------------------------------

@pytest.fixture
def md(services, topics, pg_dsn):
    """A metadata service on a fresh database and its own topics; returns its URL."""
    services("metadata", topics=topics, pg_dsn=pg_dsn)
    return services.url("metadata")


def post(url, path, body):
    return requests.post(url + path, json=body, timeout=10)


def host_body(name, ip=None, dc="us-west-2", env="production", cc="engineering"):
    b = {"hostname": name, "datacenter": dc, "environment": env, "costCenter": cc}
    if ip:
        b["ipAddress"] = ip
    return b


def assert_error(r, status, code, field=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert r.json()["status"] == "error"
    assert err["code"] == code, r.text
    if field is not None:
        assert err.get("field") == field, r.text


# ---- tests -----------------------------------------------------------------------------

def test_seed_002_curl_example(md):
    port = md.rsplit(":", 1)[1]
    cmd = f"""curl -s -X POST http://localhost:{port}/api/metadata/hosts \\
  -H "Content-Type: application/json" \\
  -d '{{
    "hostname": "new-server",
    "ipAddress": "192.168.1.150",
    "datacenter": "us-west-2",
    "environment": "production",
    "costCenter": "engineering"
  }}' -w '\\n%{{http_code}}'"""
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=30)
    body, status = r.stdout.rsplit("\n", 1)
    assert status == "201", r.stdout
    rec = json.loads(body)
    assert rec["hostname"] == "new-server"
    assert rec["ipAddress"] == "192.168.1.150"
    assert (rec["datacenter"], rec["environment"], rec["costCenter"]) == \
        ("us-west-2", "production", "engineering")
    assert rec["tags"] == {}
    assert rec["createdAt"].endswith("Z") and rec["updatedAt"].endswith("Z")
    got = requests.get(md + "/api/metadata/hosts/new-server", timeout=10)
    assert got.status_code == 200 and got.json() == rec


def test_host_crud_round_trip(md):
    name = uniq("web")
    r = post(md, "/api/metadata/hosts", host_body(name, "10.1.2.3") | {"tags": {"rack": "r1"}})
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/api/metadata/hosts/{name}"
    created = r.json()

    assert requests.get(f"{md}/api/metadata/hosts/{name}", timeout=10).json() == created
    assert requests.get(f"{md}/api/metadata/hosts/by-ip/10.1.2.3", timeout=10).json() == created

    # PUT replaces: what is not given becomes null (tags: {}).
    r = requests.put(f"{md}/api/metadata/hosts/{name}", json={"datacenter": "eu-1"}, timeout=10)
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["datacenter"] == "eu-1" and rec["ipAddress"] is None
    assert rec["environment"] is None and rec["tags"] == {}
    assert rec["createdAt"] == created["createdAt"]
    assert requests.get(f"{md}/api/metadata/hosts/by-ip/10.1.2.3", timeout=10).status_code == 404

    # PATCH changes only what is given; IPv6 is stored canonically.
    r = requests.patch(f"{md}/api/metadata/hosts/{name}",
                       json={"ipAddress": "2001:DB8:0:0:0:0:0:7", "environment": "staging"},
                       timeout=10)
    assert r.status_code == 200, r.text
    rec = r.json()
    assert (rec["ipAddress"], rec["datacenter"], rec["environment"]) == \
        ("2001:db8::7", "eu-1", "staging")
    assert requests.get(f"{md}/api/metadata/hosts/by-ip/2001:db8:0::7",
                        timeout=10).json()["hostname"] == name

    r = requests.delete(f"{md}/api/metadata/hosts/{name}", timeout=10)
    assert r.status_code == 204 and r.content == b""
    assert_error(requests.get(f"{md}/api/metadata/hosts/{name}", timeout=10), 404, "not_found")
    assert_error(requests.delete(f"{md}/api/metadata/hosts/{name}", timeout=10), 404,
                 "not_found")


def test_service_crud_and_pagination(md):
    names = sorted(uniq("svc") for _ in range(5))
    for i, n in enumerate(names):
        r = post(md, "/api/metadata/services",
                 {"name": n, "team": "payments", "owner": "alice", "tier": str(i)})
        assert r.status_code == 201, r.text
    page = requests.get(f"{md}/api/metadata/services?limit=2&offset=1", timeout=10).json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [s["name"] for s in page["items"]] == names[1:3]
    rest = requests.get(f"{md}/api/metadata/services?offset=4", timeout=10).json()
    assert [s["name"] for s in rest["items"]] == names[4:]

    r = requests.patch(f"{md}/api/metadata/services/{names[0]}", json={"owner": None},
                       timeout=10)
    assert r.status_code == 200 and r.json()["owner"] is None and r.json()["team"] == "payments"
    r = requests.put(f"{md}/api/metadata/services/{names[0]}",
                     json={"name": names[0], "team": "core", "tier": "critical"}, timeout=10)
    assert r.status_code == 200
    assert (r.json()["team"], r.json()["owner"], r.json()["tier"]) == ("core", None, "critical")
    assert requests.delete(f"{md}/api/metadata/services/{names[0]}", timeout=10).status_code == 204
    assert requests.get(f"{md}/api/metadata/services", timeout=10).json()["total"] == 4


def test_errors_name_the_field(md):
    name = uniq("h")
    assert post(md, "/api/metadata/hosts", host_body(name, "10.9.0.1")).status_code == 201

    assert_error(post(md, "/api/metadata/hosts", host_body(name)), 409, "conflict", "hostname")
    assert_error(post(md, "/api/metadata/hosts", host_body(uniq("h"), "10.9.0.1")), 409,
                 "conflict", "ipAddress")
    assert_error(post(md, "/api/metadata/hosts", host_body(uniq("h"), "10.9.0.300")), 400,
                 "invalid_field", "ipAddress")
    assert_error(post(md, "/api/metadata/hosts", {"datacenter": "x"}), 400, "invalid_field",
                 "hostname")
    assert_error(post(md, "/api/metadata/hosts", {"hostname": "bad name"}), 400,
                 "invalid_field", "hostname")
    assert_error(post(md, "/api/metadata/hosts", {"hostname": "h", "costcenter": "x"}), 400,
                 "invalid_field", "costcenter")
    assert_error(post(md, "/api/metadata/hosts", {"hostname": "h", "tags": ["a"]}), 400,
                 "invalid_field", "tags")
    assert_error(post(md, "/api/metadata/services", {"name": "s", "team": 5}), 400,
                 "invalid_field", "team")
    assert_error(requests.put(f"{md}/api/metadata/hosts/{name}", json={"hostname": "other"},
                              timeout=10), 400, "invalid_field", "hostname")
    assert_error(requests.put(f"{md}/api/metadata/hosts/{uniq('absent')}", json={},
                              timeout=10), 404, "not_found")
    assert_error(requests.get(f"{md}/api/metadata/hosts?limit=0", timeout=10), 400,
                 "invalid_field", "limit")
    assert_error(requests.get(f"{md}/api/metadata/hosts/by-ip/not-an-ip", timeout=10), 400,
                 "invalid_field", "ip")
    assert_error(requests.post(f"{md}/api/metadata/hosts", data="{not json", headers=JSON,
                               timeout=10), 400, "invalid_json")
    r = requests.post(f"{md}/api/metadata/hosts/{name}", json={}, timeout=10)
    assert r.status_code == 405, r.text
    assert "PUT" in r.headers.get("Allow", "")
    # None of the refused writes changed anything.
    assert requests.get(f"{md}/api/metadata/hosts", timeout=10).json()["total"] == 1


def test_changes_published_in_order_with_tombstones(md, infra, topics, ktool):
    name = uniq("feed")
    assert post(md, "/api/metadata/hosts", host_body(name, "10.7.0.1")).status_code == 201
    assert requests.patch(f"{md}/api/metadata/hosts/{name}", json={"datacenter": "dc-2"},
                          timeout=10).status_code == 200
    assert post(md, "/api/metadata/services", {"name": name, "team": "t"}).status_code == 201
    assert requests.delete(f"{md}/api/metadata/hosts/{name}", timeout=10).status_code == 204
    # A refused write publishes nothing.
    assert post(md, "/api/metadata/services", {"name": name}).status_code == 409

    msgs = consume(ktool, infra.kafka.bootstrap, topics["metadata"], limit=4, wait_ms=10000)
    assert [m["key"] for m in msgs] == [f"host:{name}", f"host:{name}", f"service:{name}",
                                        f"host:{name}"]
    values = [json.loads(m["value"]) if m["value"] is not None else None for m in msgs]
    assert values[0]["datacenter"] == "us-west-2" and values[0]["ipAddress"] == "10.7.0.1"
    assert values[1]["datacenter"] == "dc-2"
    assert values[2]["team"] == "t"
    assert values[3] is None  # tombstone
    assert len(consume(ktool, infra.kafka.bootstrap, topics["metadata"], wait_ms=3000)) == 4
    assert lp.TOPICS["metadata-changes"] >= 1
    parts, policy = infra.kafka.list_topics()[topics["metadata"]]
    assert policy == "compact"


def test_cache_aside_fills_and_invalidates(md, infra):
    name = uniq("cached")
    assert post(md, "/api/metadata/hosts", host_body(name, "10.8.0.1")).status_code == 201
    assert redis_cli(infra.redis, "EXISTS", f"host:{name}") == "0"
    requests.get(f"{md}/api/metadata/hosts/{name}", timeout=10)
    requests.get(f"{md}/api/metadata/hosts/by-ip/10.8.0.1", timeout=10)
    assert json.loads(redis_cli(infra.redis, "GET", f"host:{name}"))["ipAddress"] == "10.8.0.1"
    assert json.loads(redis_cli(infra.redis, "GET", "hostip:10.8.0.1"))["hostname"] == name

    # A write removes every key it affects, the old address included.
    r = requests.patch(f"{md}/api/metadata/hosts/{name}", json={"ipAddress": "10.8.0.2"},
                       timeout=10)
    assert r.status_code == 200
    assert redis_cli(infra.redis, "EXISTS", f"host:{name}", "hostip:10.8.0.1") == "0"
    assert requests.get(f"{md}/api/metadata/hosts/{name}",
                        timeout=10).json()["ipAddress"] == "10.8.0.2"
    assert json.loads(redis_cli(infra.redis, "GET", f"host:{name}"))["ipAddress"] == "10.8.0.2"
    assert requests.get(f"{md}/api/metadata/hosts/by-ip/10.8.0.1", timeout=10).status_code == 404

    assert requests.delete(f"{md}/api/metadata/hosts/{name}", timeout=10).status_code == 204
    assert redis_cli(infra.redis, "EXISTS", f"host:{name}") == "0"


def test_resync_publishes_rows_written_behind_its_back(services, topics, pg_dsn, infra, ktool):
    name = uniq("sql")
    lp.psql(pg_dsn, f"INSERT INTO service_metadata (name, team, owner, tier) "
                    f"VALUES ('{name}', 'db', 'dba', 'gold')")
    services("metadata", topics=topics, pg_dsn=pg_dsn)
    msgs = consume_until(ktool, infra.kafka.bootstrap, topics["metadata"], 1)
    assert msgs[0]["key"] == f"service:{name}"
    assert json.loads(msgs[0]["value"])["owner"] == "dba"
