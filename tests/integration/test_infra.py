"""test_infra.py - the test harness and `make run`'s runner themselves.

Kafka topics, migrations, Redis, process hygiene (stop leaves nothing behind,
kill -9 and restart recover), the service wrapper, and the runner end to end
with stand-in service binaries, so that these pass whatever state the real
services are in; and `make run`'s settings from the environment: which
LOGPIPE_* variable reaches which service, and a real gateway started by the
runner showing the override it was given.
"""

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

import infra as lp

# A stand-in logpipe service: answers 200 on every GET at LOGPIPE_HTTP_LISTEN,
# exits 0 on SIGTERM. IGNORE_TERM=1 makes it ignore SIGTERM (and fork a child).
FAKE_SERVICE = textwrap.dedent("""\
    #!/usr/bin/python3
    import http.server, os, signal, subprocess, sys
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        subprocess.Popen(["sleep", "600"])
    else:
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    host, port = os.environ["LOGPIPE_HTTP_LISTEN"].rsplit(":", 1)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *a):
            pass
    print("fake service up on", port, flush=True)
    http.server.HTTPServer((host, int(port)), H).serve_forever()
""")


def _fake_bin(d, name, body=FAKE_SERVICE):
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"logpipe-{name}"
    p.write_text(body)
    p.chmod(0o755)
    return p


def _utc_day(offset=0):
    return (datetime.datetime.now(datetime.timezone.utc).date()
            + datetime.timedelta(days=offset)).strftime("%Y%m%d")


# ---- Kafka ------------------------------------------------------------------------

def test_kafka_topics_have_logpipe_partitions(infra):
    topics = infra.kafka.list_topics()
    for name, parts in lp.TOPICS.items():
        assert name in topics, f"topic {name} missing: {topics}"
        want_policy = "compact" if name in lp.COMPACTED_TOPICS else "delete"
        assert topics[name] == (parts, want_policy), f"{name}: {topics[name]}"


def test_topics_tool_is_idempotent(infra):
    r = subprocess.run([lp.topics_tool(), "--brokers", infra.kafka.bootstrap, "--wait", "20"]
                       + lp.topic_args(lp.TOPICS), capture_output=True, text=True, timeout=40)
    assert r.returncode == 0, r.stderr


def test_topics_fixture_makes_unique_topics(infra, topics):
    listed = infra.kafka.list_topics()
    for role, name in topics.items():
        base = lp.TOPIC_ROLES[role]
        assert name != base and name.startswith(base + "-")
        assert listed[name][0] == lp.TOPICS[base]
    assert listed[topics["metadata"]][1] == "compact"


def test_topics_tool_fails_clearly_without_broker():
    port = lp.free_port()
    t0 = time.monotonic()
    r = subprocess.run([lp.topics_tool(), "--brokers", f"127.0.0.1:{port}", "--wait", "1",
                        "--create", "x:1"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "did not answer metadata" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 10


def test_topics_tool_usage_errors():
    r = subprocess.run([lp.topics_tool(), "--brokers", "127.0.0.1:1", "--create", "bad"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "NAME:PARTITIONS" in r.stderr


# ---- PostgreSQL -----------------------------------------------------------------------

def test_migrations_applied_once(infra):
    dsn = infra.postgres.dsn
    versions = lp.psql(dsn, "SELECT string_agg(version, ' ' ORDER BY version) "
                            "FROM schema_migrations")
    assert versions.split() == [v for v, _ in lp.migrations()]
    for table in ("log_events", "log_events_default", "host_metadata", "service_metadata"):
        assert lp.psql(dsn, f"SELECT to_regclass('{table}') IS NOT NULL") == "t", table
    assert lp.apply_migrations(dsn) == []


def test_daily_partitions_exist(infra):
    parts = set(lp.psql(infra.postgres.dsn, """
        SELECT string_agg(c.relname, ' ') FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'log_events'::regclass""").split())
    for off in range(-1, 8):
        assert f"log_events_{_utc_day(off)}" in parts, sorted(parts)
    assert "log_events_default" in parts


def test_ensure_partitions_moves_rows_out_of_default(infra, pg_dsn):
    q = lambda sql: lp.psql(pg_dsn, sql)  # noqa: E731
    q("INSERT INTO log_events (id, ts, message, service) VALUES "
      "('0190a3c4-0000-7000-8000-000000000001', now() + interval '40 days', 'later', 's')")
    assert q("SELECT tableoid::regclass FROM log_events") == "log_events_default"
    assert int(q("SELECT logpipe_ensure_partitions(0, 41)")) >= 30
    assert q("SELECT tableoid::regclass FROM log_events") == f"log_events_{_utc_day(40)}"
    assert q("SELECT logpipe_ensure_partitions(0, 41)") == "0"
    assert q("SELECT count(*) FROM log_events WHERE to_tsvector('simple', message) "
             "@@ plainto_tsquery('simple', 'later')") == "1"


def test_metadata_tables(infra, pg_dsn):
    q = lambda sql: lp.psql(pg_dsn, sql)  # noqa: E731
    q("INSERT INTO host_metadata (hostname) VALUES ('a'), ('b')")  # NULL ip twice is fine
    q("INSERT INTO host_metadata (hostname, ip_address) VALUES ('c', '10.0.0.1')")
    with pytest.raises(lp.InfraError, match="duplicate key"):
        q("INSERT INTO host_metadata (hostname, ip_address) VALUES ('d', '10.0.0.1')")
    q("INSERT INTO service_metadata (name, team, tier) VALUES ('api', 'core', 'gold')")
    assert q("SELECT tags::text FROM service_metadata") == "{}"


# ---- Redis ---------------------------------------------------------------------------

def test_redis_ping(infra):
    assert infra.redis.ping()
    with socket.create_connection(("127.0.0.1", infra.redis.port), timeout=2) as s:
        s.sendall(b"*3\r\n$3\r\nSET\r\n$2\r\nlp\r\n$2\r\nok\r\n*2\r\n$3\r\nGET\r\n$2\r\nlp\r\n")
        data = b""
        while not data.endswith(b"ok\r\n"):
            chunk = s.recv(64)
            assert chunk, data
            data += chunk
    assert data == b"+OK\r\n$2\r\nok\r\n"


# ---- process hygiene -------------------------------------------------------------------

def _tree(pid):
    return [pid] + lp._descendants(pid) if pid else []


def test_kill9_restart_and_stop_leave_no_process(infra_dir):
    """A second, private set: crash each server, bring it back, stop all, nothing left."""
    own = lp.Infra(infra_dir / "hygiene")
    own.start(timeout=90)
    pids = set()
    try:
        for comp in own.components():
            pids.update(_tree(comp.pid))
        ports = [own.kafka.port, own.kafka.controller_port, own.redis.port, own.postgres.port]

        for comp in (own.redis, own.postgres, own.kafka):
            old = _tree(comp.pid)
            comp.kill9()
            assert not any(lp.pid_alive(p) for p in old), f"{comp.name} survived kill9"
            comp.restart()
            pids.update(_tree(comp.pid))
        assert own.redis.ping()
        assert lp.psql(own.postgres.dsn, "SELECT count(*) FROM schema_migrations") == \
            str(len(lp.migrations()))
        assert "raw-logs" in own.kafka.list_topics()
    finally:
        own.stop()
    left = [p for p in pids if lp.pid_alive(p)]
    assert not left, f"processes left after stop(): {left}"
    for port in ports:
        assert lp.wait_port_free(port, 5), f"port {port} still in use"


def test_service_proc_lifecycle(tmp_path):
    bindir = tmp_path / "bin"
    _fake_bin(bindir, "producer")
    port = lp.free_port()
    env = lp.service_env("producer", {"producer": port},
                         {"kafka.brokers": "127.0.0.1:1", "redis.url": None, "pg.dsn": None})
    proc = lp.ServiceProc("producer", env, tmp_path / "producer.log", port, bin_dir_=bindir)
    proc.start()
    proc.wait_ready(10)
    pid = proc.pid
    assert proc.stop() == 0
    assert not lp.pid_alive(pid)
    assert "fake service up" in proc.log_tail()

    # One that ignores SIGTERM and has a child: SIGKILL after the timeout, child too.
    stubborn = lp.ServiceProc("producer", dict(env, IGNORE_TERM="1"),
                              tmp_path / "stubborn.log", port, bin_dir_=bindir)
    stubborn.start()
    stubborn.wait_ready(10)
    tree = _tree(stubborn.pid)
    assert len(tree) >= 2
    t0 = time.monotonic()
    assert stubborn.stop(timeout=1) == -signal.SIGKILL
    assert time.monotonic() - t0 < 8
    assert not any(lp.pid_alive(p) for p in tree)

    # One that exits at once: wait_ready says so, with the log.
    _fake_bin(bindir, "gateway", "#!/bin/sh\necho 'cannot start: no config'\nexit 3\n")
    thin = lp.ServiceProc("gateway", {}, tmp_path / "gw.log", lp.free_port(), bin_dir_=bindir)
    thin.start()
    with pytest.raises(lp.InfraError, match="cannot start: no config"):
        thin.wait_ready(10)
    assert thin.returncode == 3


def test_service_env_keys():
    addrs = {"kafka.brokers": "127.0.0.1:9", "redis.url": "redis://127.0.0.1:8",
             "pg.dsn": "postgresql://postgres@127.0.0.1:7/logpipe"}
    ports = dict(lp.SERVICE_PORTS, producer=18081)
    env = {n: lp.service_env(n, ports, addrs) for n in lp.SERVICES}
    for n, e in env.items():
        assert e["LOGPIPE_HTTP_LISTEN"] == f"127.0.0.1:{ports[n]}"
        assert e["LOGPIPE_KAFKA_BROKERS"] == "127.0.0.1:9"
        assert "LOGPIPE_LOG_LEVEL" in e
    assert env["producer"]["LOGPIPE_TOPICS_RAW"] == "raw-logs"
    assert env["enricher"]["LOGPIPE_METADATA_URL"] == "http://127.0.0.1:8082"
    assert env["enricher"]["LOGPIPE_TOPICS_METADATA"] == "metadata-changes"
    assert env["consumer"]["LOGPIPE_PG_DSN"].endswith("/logpipe")
    assert env["consumer"]["LOGPIPE_KAFKA_GROUP"] == "logpipe-consumer"
    assert env["gateway"]["LOGPIPE_UPSTREAM_PRODUCER"] == "http://127.0.0.1:18081"
    assert env["metadata"]["LOGPIPE_REDIS_URL"] == "redis://127.0.0.1:8"
    assert env["generator"]["LOGPIPE_TOPICS_RAW"] == "raw-logs"


def test_services_fixture_starts_and_stops(services, tmp_path, monkeypatch):
    _fake_bin(tmp_path, "producer")
    _fake_bin(tmp_path, "consumer")
    monkeypatch.setenv("LOGPIPE_BIN_DIR", str(tmp_path))
    procs = services("producer", "consumer")
    assert set(procs) == {"producer", "consumer"}
    assert procs["consumer"].live()
    assert procs["consumer"].env["LOGPIPE_KAFKA_GROUP"].startswith("logpipe-consumer-")
    assert procs["consumer"].env["LOGPIPE_PG_DSN"] == services.infra.postgres.dsn


# ---- the runner behind `make run` -------------------------------------------------------

def _http(method, url, timeout=150):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _lines_until(proc, pattern, timeout, seen):
    """Read proc's stdout until a line matches pattern (bounded)."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        if not sel.select(timeout=0.5):
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace")
            seen.append(text)
            m = re.search(pattern, text)
            if m:
                return m
    raise AssertionError(f"runner never printed /{pattern}/; output:\n" + "\n".join(seen))


def test_runner_starts_supervises_and_stops_cleanly(infra_dir):
    tmp = infra_dir / "runner-test"  # reachable by the postgres user, unlike tmp_path
    base = tmp / "run"
    bindir = tmp / "bin"
    _fake_bin(bindir, "producer")
    _fake_bin(bindir, "gateway", "#!/bin/sh\necho thin gateway\nexit 1\n")
    env = dict(os.environ, LOGPIPE_BIN_DIR=str(bindir), PYTHONUNBUFFERED="1")
    runner = subprocess.Popen(
        [sys.executable, str(lp.REPO / "deploy" / "local" / "runner.py"), "--base-dir",
         str(base), "--control-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    out = []
    try:
        m = _lines_until(runner, r"control\s+http://127\.0\.0\.1:(\d+)/control/status", 120, out)
        ctl = f"http://127.0.0.1:{m.group(1)}"

        code, st = _http("GET", ctl + "/control/status")
        assert code == 200
        comps = st["components"]
        assert set(comps) == {"kafka", "redis", "postgres", "gateway", "producer", "metadata",
                              "enricher", "consumer", "generator"}
        for name in ("kafka", "redis", "postgres", "producer"):
            assert comps[name]["state"] == "running", comps[name]
        assert comps["metadata"]["state"] == "missing"
        assert comps["gateway"]["state"] in ("backoff", "starting")
        pids = {c["pid"] for c in comps.values() if c["pid"]}
        pids.update(lp._descendants(comps["postgres"]["pid"]))

        code, r = _http("POST", ctl + "/control/redis/restart")
        assert code == 200 and r["state"]["state"] == "running", r
        pids.add(r["state"]["pid"])
        code, r = _http("POST", ctl + "/control/producer/stop")
        assert code == 200 and r["state"]["state"] == "stopped"
        code, r = _http("POST", ctl + "/control/producer/start")
        assert code == 200 and r["state"]["state"] == "running", r
        pids.add(r["state"]["pid"])
        assert _http("POST", ctl + "/control/nosuch/stop")[0] == 404
        assert _http("GET", ctl + "/control/producer/stop")[0] == 405

        code, r = _http("POST", ctl + "/chaos/enable")
        assert code == 200 and r["enabled"] is True
        assert _http("GET", ctl + "/chaos/status")[1]["targets"] == \
            ["kafka", "enricher", "consumer", "postgres", "redis"]
        assert _http("POST", ctl + "/chaos/disable")[1]["enabled"] is False
        assert "history" in _http("GET", ctl + "/chaos/history")[1]

        gw = _http("GET", ctl + "/control/gateway/status")[1]
        assert gw["restarts"] <= 6, gw  # backoff, not a crash loop

        runner.send_signal(signal.SIGTERM)
        _lines_until(runner, r"all stopped", 90, out)
        assert runner.wait(timeout=30) == 0
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(timeout=10)
    assert lp._wait_gone(list(pids), 5), \
        f"left: {[p for p in pids if lp.pid_alive(p)]}\n" + "\n".join(out)
    # Nothing anywhere still runs from the runner's directory.
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            assert str(base).encode() not in cmd, f"pid {entry} left: {cmd!r}"


# ---- settings for `make run` from the environment ---------------------------------------

def _runner_module():
    sys.path.insert(0, str(lp.REPO / "deploy" / "local"))
    try:
        import runner
    finally:
        sys.path.pop(0)
    return runner


def test_runner_resolves_environment_overrides():
    runner = _runner_module()
    keys = {
        "gateway": {"LOGPIPE_RATELIMIT_RATE": "ratelimit.rate", "LOGPIPE_LOG_LEVEL": "log.level",
                    "LOGPIPE_HTTP_LISTEN": "http.listen",
                    "LOGPIPE_UPSTREAM_PRODUCER": "upstream.producer",
                    "LOGPIPE_CONFIG": "--config"},
        "producer": {"LOGPIPE_LOG_LEVEL": "log.level", "LOGPIPE_HTTP_LISTEN": "http.listen",
                     "LOGPIPE_KAFKA_BROKERS": "kafka.brokers", "LOGPIPE_CONFIG": "--config"},
    }
    env = {
        "PATH": "/usr/bin",
        "LOGPIPE_BIN_DIR": "/x",                      # the runner's own
        "LOGPIPE_RATELIMIT_RATE": "50000",            # the gateway's only
        "LOGPIPE_LOG_LEVEL": "debug",                 # every service's ...
        "LOGPIPE_GATEWAY__LOG_LEVEL": "warn",         # ... but this one's
        "LOGPIPE_PRODUCER__CONFIG": "/etc/p.conf",    # a file for one service
        "LOGPIPE_HTTP_LISTEN": "0.0.0.0:1",           # the runner's choice
        "LOGPIPE_GATEWAY__UPSTREAM_PRODUCER": "http://elsewhere",  # likewise
        "LOGPIPE_NO_SUCH_KEY": "1",
        "LOGPIPE_PRODUCER__RATELIMIT_RATE": "5",      # not a producer setting
    }
    applied, notes = runner.resolve_overrides(env, keys)
    assert applied == {
        "gateway": {"LOGPIPE_RATELIMIT_RATE": "50000", "LOGPIPE_LOG_LEVEL": "warn"},
        "producer": {"LOGPIPE_LOG_LEVEL": "debug", "LOGPIPE_CONFIG": "/etc/p.conf"},
    }, applied
    text = "\n".join(notes)
    for want in ("gateway: ratelimit.rate=50000 (LOGPIPE_RATELIMIT_RATE)",
                 "gateway: log.level=warn (LOGPIPE_GATEWAY__LOG_LEVEL)",
                 "producer: log.level=debug (LOGPIPE_LOG_LEVEL)",
                 "producer: --config=/etc/p.conf (LOGPIPE_PRODUCER__CONFIG)",
                 "ignored LOGPIPE_HTTP_LISTEN: http.listen is the runner's choice",
                 "ignored LOGPIPE_GATEWAY__UPSTREAM_PRODUCER: upstream.producer is the runner's",
                 "ignored LOGPIPE_NO_SUCH_KEY: no service has this setting",
                 "ignored LOGPIPE_PRODUCER__RATELIMIT_RATE: producer has no setting"):
        assert want in text, (want, notes)
    assert "LOGPIPE_BIN_DIR" not in text and "PATH" not in text


def test_runner_keys_come_from_the_binaries_help():
    runner = _runner_module()
    gw = lp.bin_dir() / "logpipe-gateway"
    if not gw.is_file():
        pytest.skip("logpipe-gateway is not built")
    keys = runner.service_keys(gw)
    assert keys["LOGPIPE_RATELIMIT_RATE"] == "ratelimit.rate"
    assert keys["LOGPIPE_HTTP_LISTEN"] == "http.listen"
    assert runner.service_keys(lp.REPO / "no" / "such" / "binary") == {}


def test_make_run_takes_settings_from_the_environment(infra_dir):
    """LOGPIPE_RATELIMIT_RATE=50000 make run: the gateway's /api/logs/health
    shows normal_limit 50000; a per-service variable reaches its service; an
    address the stack depends on is not overridden; the banner says so."""
    gw_bin = lp.bin_dir() / "logpipe-gateway"
    if not gw_bin.is_file():
        pytest.skip("logpipe-gateway is not built")
    tmp = infra_dir / "runner-settings-test"
    base = tmp / "run"
    bindir = tmp / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    link = bindir / "logpipe-gateway"
    if not link.exists():
        link.symlink_to(gw_bin)
    env = dict(os.environ, LOGPIPE_BIN_DIR=str(bindir), PYTHONUNBUFFERED="1",
               LOGPIPE_RATELIMIT_RATE="50000", LOGPIPE_GATEWAY__BACKPRESSURE_FLOOR="123",
               LOGPIPE_HTTP_LISTEN="0.0.0.0:1", LOGPIPE_NO_SUCH_KEY="1")
    runner = subprocess.Popen(
        [sys.executable, str(lp.REPO / "deploy" / "local" / "runner.py"), "--base-dir",
         str(base), "--control-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    out = []
    try:
        _lines_until(runner, r"^try: curl", 150, out)  # the banner's last line
        banner = "\n".join(out)
        m = re.search(r"^\s+gateway\s+(http://127\.0\.0\.1:\d+)/", banner, re.M)
        assert m, banner
        gw = m.group(1)
        assert "settings from the environment:" in banner, banner
        assert "gateway: ratelimit.rate=50000 (LOGPIPE_RATELIMIT_RATE)" in banner, banner
        assert "gateway: backpressure.floor=123 (LOGPIPE_GATEWAY__BACKPRESSURE_FLOOR)" in banner
        assert "ignored LOGPIPE_HTTP_LISTEN: http.listen is the runner's choice" in banner
        assert "ignored LOGPIPE_NO_SUCH_KEY: no service has this setting" in banner

        deadline = time.monotonic() + 30
        while True:
            try:
                code, health = _http("GET", gw + "/api/logs/health", timeout=5)
                if code == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the gateway never answered\n" + banner
            time.sleep(0.3)
        assert health["normal_limit"] == 50000, health
        assert health["floor"] == 123, health
        runner.send_signal(signal.SIGTERM)
        _lines_until(runner, r"all stopped", 90, out)
        assert runner.wait(timeout=30) == 0
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(timeout=10)
