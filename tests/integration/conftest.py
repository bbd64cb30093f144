"""conftest.py - fixtures that start real Kafka, Redis, PostgreSQL and logpipe binaries.

  infra      (session) Kafka, Redis and PostgreSQL on free 127.0.0.1 ports in a
             temporary directory, with logpipe's topics and migrations; stopped
             at the end of the session, also after failures or SIGTERM.
  services   (test) factory: services("producer", "consumer", ...) starts the
             chosen binaries (LOGPIPE_BIN_DIR, default build/bin) configured by
             infra.service_env(), waits for GET /health/live, and stops them
             after the test; when the test failed, the tail of each service's
             log is printed in the report.
  topics     (test) unique topic names for the five roles, created on the broker,
             for tests that must not see other tests' messages.
  pg_dsn     (test) a fresh database with the migrations applied.

Every wait is bounded. The helpers live in deploy/local/infra.py, shared with
the local runner (`make run`).
"""

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))

import infra as lp  # noqa: E402

# Everything started here, stopped at exit even if pytest is interrupted.
_started = []


def _stop_everything():
    while _started:
        c = _started.pop()
        try:
            c.stop()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            print(f"conftest: stopping {getattr(c, 'name', c)}: {e}", file=sys.stderr)


atexit.register(_stop_everything)


def _sigterm(signum, frame):
    # Turn SIGTERM (CI timeout, kill) into an interrupt so fixtures tear down.
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _sigterm)


# The files that take longest, longest first.  scripts/run-integration.sh
# runs the suite as two pytest-xdist workers with `--dist loadfile` (a file
# at a time, each worker with its own Kafka, Redis and PostgreSQL, so a test
# that stops one stops only its worker's); files are handed out in
# collection order, so the long ones go first and the short ones fill in
# behind them.  Only the order depends on this list, never what runs.
# Measured with --durations=0 (scripts/run-integration.sh prints the top
# 40): test_spool 261 s, test_spool_sigterm 189, test_chaos 143,
# test_gateway 136, test_consumer 116, test_infra 100, test_enricher 81,
# test_otlp 51, test_pipeline_view 38 (worker seconds, loaded machine).
LONGEST_FIRST = ["test_spool.py", "test_spool_sigterm.py", "test_chaos.py", "test_gateway.py",
                 "test_consumer.py", "test_infra.py", "test_enricher.py", "test_otlp.py",
                 "test_pipeline_view.py"]


def pytest_collection_modifyitems(config, items):
    """Long files first (LONGEST_FIRST); within a file, the order as written."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))


# The reasons of skips for something CI's machine always has: a binary that
# `make test` builds ("not built: ...") or a tool that scripts/install-deps.sh
# installs ("missing tool: ...").  With CI=true such a skip is a failure.
MISSING_SKIP = re.compile(r"(Skipped: )?(not built|missing tool)\b")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures know if the test failed.

    With CI=true, a skip for a missing binary or tool is made a failure."""
    outcome = yield
    rep = outcome.get_result()
    if (os.environ.get("CI") == "true" and rep.skipped and isinstance(rep.longrepr, tuple)
            and MISSING_SKIP.match(str(rep.longrepr[2]))):
        rep.outcome = "failed"
        rep.longrepr = (f"{rep.longrepr[2]}: with CI=true this is a failure "
                        "(CI installs every tool and builds every binary)")
    setattr(item, "rep_" + rep.when, rep)


_timings = {}


def pytest_terminal_summary(terminalreporter):
    """One line with how long the infrastructure took to become ready."""
    if _timings:
        terminalreporter.write_line("logpipe: " + ", ".join(
            f"{k} in {v:.1f} s" for k, v in _timings.items()))


def _failed(request):
    return any(getattr(getattr(request.node, "rep_" + w, None), "failed", False)
               for w in ("setup", "call"))


@pytest.fixture(scope="session")
def infra_dir():
    """A temporary directory PostgreSQL (running as postgres) can enter.

    Kept, with its logs, when a test failed."""
    d = Path(tempfile.mkdtemp(prefix="logpipe-it-"))
    os.chmod(d, 0o711)
    yield d
    if os.environ.get("LOGPIPE_KEEP_TMP"):
        print(f"\nconftest: kept {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def infra(infra_dir):
    """Kafka, Redis and PostgreSQL, ready (topics created, migrations applied)."""
    inf = lp.Infra(infra_dir)
    _started.append(inf)
    try:
        inf.ready_seconds = inf.start(timeout=150)
        _timings["infra ready"] = inf.ready_seconds
        _timings.update((f"{k} ready", v) for k, v in inf.timings.items())
    except lp.InfraError as e:
        pytest.fail(f"infrastructure did not start: {e}", pytrace=False)
    yield inf
    t0 = time.monotonic()
    try:
        inf.stop()
        _timings["stopped"] = time.monotonic() - t0
    finally:
        if inf in _started:
            _started.remove(inf)


class Services:
    """What the `services` fixture hands a test: a factory and the started services."""

    def __init__(self, infra, workdir):
        self.infra = infra
        self.workdir = workdir
        # A port for every service up front, so that whichever subset a test
        # starts, each one's upstream URLs point at the others.
        self.ports = {name: lp.free_port() for name in lp.SERVICES}
        self.procs = {}
        self.run_id = uuid.uuid4().hex[:8]

    def __call__(self, *names, topics=None, pg_dsn=None, config=None, log_level="debug",
                 wait=True, timeout=20.0, args=()):
        """Start the named services; returns {name: ServiceProc} of those.

        topics: role -> topic name (the `topics` fixture); pg_dsn: a database
        other than infra's; config: {service: {"dotted.key": value}} extra or
        overriding settings. Consumer groups get a per-test suffix.
        """
        started = {}
        for name in names:
            if name in self.procs and self.procs[name].alive():
                raise lp.InfraError(f"{name} is already running in this test")
            extra = dict((config or {}).get(name, {}))
            if pg_dsn and name in ("consumer", "metadata"):
                extra.setdefault("pg.dsn", pg_dsn)
            env = lp.service_env(name, self.ports, self.infra, topics=topics,
                                 group_suffix="-" + self.run_id, log_level=log_level,
                                 extra=extra)
            proc = lp.ServiceProc(name, env, self.workdir / "logs" / f"{name}.log",
                                  self.ports[name], args=args, cwd=self.workdir / name)
            proc.start()
            _started.append(proc)
            self.procs[name] = proc
            started[name] = proc
        if wait:
            for proc in started.values():
                proc.wait_ready(timeout)
        return started

    def __getitem__(self, name):
        return self.procs[name]

    def url(self, name):
        return f"http://127.0.0.1:{self.ports[name]}"

    def stop_all(self):
        for proc in self.procs.values():
            try:
                proc.stop()
            finally:
                if proc in _started:
                    _started.remove(proc)


# What AddressSanitizer, LeakSanitizer and UBSan print when they find
# something (scripts/test-all.sh runs the suite on the sanitizer build).
SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak|Thread)Sanitizer|runtime error: ")


def sanitizer_reports(log_dir):
    """{log file: first report line} of the logs under log_dir that hold one."""
    found = {}
    for path in sorted(Path(log_dir).glob("*.log")):
        with open(path, errors="replace") as f:
            for line in f:
                if SANITIZER_REPORT.search(line):
                    found[path.name] = line.strip()[:300]
                    break
    return found


@pytest.fixture
def services(infra, infra_dir, request):
    workdir = infra_dir / "tests" / f"{request.node.name[:60]}-{uuid.uuid4().hex[:6]}"
    svc = Services(infra, workdir)
    yield svc
    svc.stop_all()
    if _failed(request):
        for name, proc in svc.procs.items():
            print(f"\n---- last lines of {name} ({proc.log_path}) ----\n{proc.log_tail(60)}")
    # Checked after the stop, so that leaks found at exit count too; every
    # service a test starts (extra instances too) logs under workdir/logs.
    reports = sanitizer_reports(svc.workdir / "logs")
    assert not reports, f"sanitizer reports in the services' logs: {reports}"


@pytest.fixture
def topics(infra):
    """Unique topics for the five roles, created with logpipe's partition counts."""
    suffix = uuid.uuid4().hex[:8]
    names = {role: f"{topic}-{suffix}" for role, topic in lp.TOPIC_ROLES.items()}
    infra.kafka.create_topics({names[r]: lp.TOPICS[t] for r, t in lp.TOPIC_ROLES.items()},
                              compacted={names["metadata"]})
    return names


@pytest.fixture
def pg_dsn(infra):
    """A fresh database, migrated."""
    return infra.postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def kafkatool():
    """tests/bench/kafkatool.c (produce, consume, count, create topics) built
    into a temporary directory, once per session."""
    tmp = Path(tempfile.mkdtemp(prefix="kafkatool-"))
    out = tmp / "kafkatool"
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "rdkafka", "jansson"],
                           capture_output=True, text=True, check=True).stdout.split()
    r = subprocess.run([os.environ.get("CC", "cc"), "-O2", "-o", str(out),
                        str(REPO / "tests" / "bench" / "kafkatool.c")] + flags,
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"cannot build kafkatool:\n{r.stderr}", pytrace=False)
    yield str(out)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def ktool(kafkatool):
    """The same tool under the name test_metadata.py and its users know."""
    return kafkatool
