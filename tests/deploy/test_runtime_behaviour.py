"""What can run here without a Docker engine: the migration runner of the
migrate image against a real PostgreSQL (twice, and two at once), and the
image's HEALTHCHECK command against a real gateway binary."""
import os
import re
import shutil
import socket
import subprocess
import time
import uuid

from deploylib import BIN, DEPLOY, DOCKERFILE, REPO, dockerfile_stages
from harness import Skip, check, need_tool

MIGRATE = DEPLOY / "docker" / "migrate.sh"
MIGRATIONS = DEPLOY / "migrations"
PG_ADMIN = os.environ.get("LOGPIPE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _psql(dsn, sql):
    return subprocess.run(["psql", "-X", "-q", "-At", "-d", dsn, "-c", sql],
                          capture_output=True, text=True, timeout=30)


def _db():
    need_tool("psql")
    if _psql(PG_ADMIN, "SELECT 1").returncode != 0:
        raise Skip(f"no PostgreSQL at {PG_ADMIN} (set LOGPIPE_TEST_PG_ADMIN)")
    name = "lp_deploy_" + uuid.uuid4().hex[:10]
    r = _psql(PG_ADMIN, f"CREATE DATABASE {name}")
    check(r.returncode == 0, r.stderr)
    return name, re.sub(r"/[^/]*$", "/" + name, PG_ADMIN)


def _migrate(dsn):
    env = dict(os.environ, LOGPIPE_PG_DSN=dsn, LOGPIPE_MIGRATIONS_DIR=str(MIGRATIONS),
               LOGPIPE_MIGRATE_WAIT_S="30")
    return subprocess.Popen(["sh", str(MIGRATE)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_migrate_applies_each_migration_once_even_when_run_together():
    name, dsn = _db()
    try:
        versions = sorted(p.name[:3] for p in MIGRATIONS.glob("[0-9][0-9][0-9]_*.sql"))
        procs = [_migrate(dsn), _migrate(dsn)]  # two init containers at once
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, outs):
            check(p.returncode == 0, f"migrate exit {p.returncode}: {err}")
        applied = [ln for _, err in outs for ln in err.splitlines() if ln.startswith("applying")]
        check(len(applied) == len(versions), f"applied {applied}, want each of {versions} once")
        r = _psql(dsn, "SELECT version FROM schema_migrations ORDER BY version")
        check(r.stdout.split() == versions, f"schema_migrations {r.stdout.split()} != {versions}")
        p = _migrate(dsn)  # and again: nothing to do
        out, err = p.communicate(timeout=60)
        check(p.returncode == 0 and "applying" not in err, f"re-run: {err}")
        check(_psql(dsn, "SELECT to_regclass('public.log_events') IS NOT NULL").stdout.strip() == "t",
              "log_events not created")
    finally:
        _psql(PG_ADMIN, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_migrate_fails_on_a_broken_migration(tmp=None):
    name, dsn = _db()
    d = REPO / ".cache" / f"migtest-{uuid.uuid4().hex[:6]}"
    try:
        d.mkdir(parents=True)
        (d / "001_ok.sql").write_text("CREATE TABLE ok (x int);\n")
        (d / "002_bad.sql").write_text("CREATE TABLE bad (x nosuchtype);\n")
        env = dict(os.environ, LOGPIPE_PG_DSN=dsn, LOGPIPE_MIGRATIONS_DIR=str(d))
        r = subprocess.run(["sh", str(MIGRATE)], env=env, capture_output=True, text=True,
                           timeout=60)
        check(r.returncode != 0, "a failing migration must fail the job")
        got = _psql(dsn, "SELECT version FROM schema_migrations ORDER BY 1").stdout.split()
        check(got == ["001"], f"recorded {got}, want only 001")
    finally:
        shutil.rmtree(d, ignore_errors=True)
        _psql(PG_ADMIN, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthcheck_cmd():
    hc = [a for i, a in dockerfile_stages()["runtime"] if i == "HEALTHCHECK"][0]
    return hc.split(" CMD ", 1)[1]


def test_image_healthcheck_follows_readiness():
    exe = BIN / "logpipe-gateway"
    if not exe.exists():
        raise Skip("logpipe-gateway not built")
    need_tool("curl")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
    env.update(LOGPIPE_HTTP_LISTEN=f"127.0.0.1:{port}", LOGPIPE_KAFKA_BROKERS="",
               LOGPIPE_REDIS_URL="", LOGPIPE_LOG_LEVEL="error")
    proc = subprocess.Popen([str(exe)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    cmd = _healthcheck_cmd()
    hc_env = dict(os.environ, LOGPIPE_HEALTH_PORT=str(port))
    try:
        deadline = time.monotonic() + 30
        ok = False
        while time.monotonic() < deadline and proc.poll() is None:
            r = subprocess.run(["sh", "-c", cmd], env=hc_env, capture_output=True, timeout=10)
            if r.returncode == 0:
                ok = True
                break
            time.sleep(0.2)
        check(ok, f"HEALTHCHECK never passed against a running gateway "
                  f"(exit {proc.poll()}): {proc.stderr.read() if proc.poll() is not None else ''}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    check(proc.returncode == 0, f"the gateway did not exit 0 on SIGTERM: {proc.returncode}")
    r = subprocess.run(["sh", "-c", cmd], env=hc_env, capture_output=True, timeout=10)
    check(r.returncode == 1, f"HEALTHCHECK must exit 1 with nothing listening, got {r.returncode}")
