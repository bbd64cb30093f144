"""infra.py - Kafka, Redis, PostgreSQL and logpipe service processes on this machine.

The local runner (deploy/local/runner.py, behind `make run`) and the
integration tests (tests/integration/) share this module, so that both start
the same things the same way:

  Kafka     a single-node KRaft broker from the jars that scripts/install-deps.sh
            fetched into .cache/kafka/libs; ready when logpipe-topics has
            created logpipe's topics and sees a leader for every partition.
  Redis     redis-server in the foreground, no persistence; ready on PING.
  Postgres  a private cluster made with initdb (as the postgres user when we
            are root) and run by pg_ctl with PG_SETTINGS (checkpoints far
            apart for the write path); ready when pg_isready answers, the
            logpipe database exists and deploy/migrations/ are applied.
  ServiceProc  one logpipe-* binary, configured by LOGPIPE_* environment
            variables (see service_env()); ready when GET /health/live is 200.

Every one of them listens on 127.0.0.1 only, on a given port or a free one,
keeps its files under a base directory, and has start() (returns at once),
wait_ready() (bounded), stop() (SIGTERM, bounded wait, then SIGKILL of the
whole process tree), kill9() and restart() for failure tests. Processes we
fork directly get a parent-death signal (PDEATHSIG) so that they do not
outlive us if we are killed; PostgreSQL daemonises through pg_ctl, so the
runner also records pids under BASE/pids and reaps leftovers on its next start
(reap_stale()).

Only the standard library is used; run it with /usr/bin/python3.
"""

import base64
import ctypes
import hashlib
import http.client
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAFKA_LIBS = REPO / ".cache" / "kafka" / "libs"
MIGRATIONS_DIR = REPO / "deploy" / "migrations"
TOPICS_TOOL_SRC = REPO / "tools" / "logpipe-topics.c"

# logpipe's topics and their partition counts (SPEC "Topics").
TOPICS = {
    "raw-logs": 6,
    "enriched-logs-complete": 6,
    "enriched-logs-partial": 6,
    "logs-dlq": 1,
    "metadata-changes": 1,
}
COMPACTED_TOPICS = {"metadata-changes"}

# The topic each role name in the services' configuration refers to.
TOPIC_ROLES = {
    "raw": "raw-logs",
    "complete": "enriched-logs-complete",
    "partial": "enriched-logs-partial",
    "dlq": "logs-dlq",
    "metadata": "metadata-changes",
}

# Service name (binary logpipe-NAME) -> its port in SPEC.md.
SERVICE_PORTS = {
    "gateway": 8080,
    "producer": 8081,
    "metadata": 8082,
    "enricher": 8083,
    "consumer": 8084,
    "generator": 8085,
}
SERVICES = list(SERVICE_PORTS)

# Signal our directly forked children receive when this process dies. Tests
# keep SIGKILL; the runner switches to SIGTERM so that services drain.
PDEATHSIG = signal.SIGKILL

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class InfraError(RuntimeError):
    """A component could not be started, made ready or stopped."""


def env_pairs(name):
    """The "key=value,..." list in environment variable name, as a dict."""
    out = {}
    for item in filter(None, os.environ.get(name, "").split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise InfraError(f"{name}: {item!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


# ---- ports ------------------------------------------------------------------

def port_is_free(port, host="127.0.0.1"):
    """True when nothing listens on host:port and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


_handed_out = set()
_port_lock = threading.Lock()
_port_rng = random.Random()  # its own: a test may seed the global one


def _pick_range():
    """The ports free_port picks from: below the kernel's ephemeral range.

    A port the kernel picks for bind(0) comes from the ephemeral range, the
    same range every outgoing connection and every service's inner port
    (the event front's CivetWeb, bound to port 0) is taken from.  Handed to
    a component that starts a moment later, it may be taken meanwhile by
    one of those, and what answers on it is then someone else (a health
    check passes, a route is a 404).  Below that range only ports someone
    chose are bound.  Two pytest-xdist workers get disjoint slices.
    """
    lo, hi = 10000, 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            hi = min(hi, int(f.read().split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    except ValueError:
        count = 1
    if worker.startswith("gw") and worker[2:].isdigit() and count > 1:
        span = (hi - lo) // count
        lo += (int(worker[2:]) % count) * span
        hi = lo + span
    return lo, hi


def free_port(preferred=None, host="127.0.0.1"):
    """preferred when it is free, else a free port below the ephemeral range.

    Ports this process already handed out are not handed out again, so that
    components picked before any of them started do not collide.
    """
    with _port_lock:
        if preferred and preferred not in _handed_out and port_is_free(preferred, host):
            _handed_out.add(preferred)
            return preferred
        lo, hi = _pick_range()
        if hi - lo >= 100:
            for _ in range(200):
                port = _port_rng.randrange(lo, hi)
                if port not in _handed_out and port_is_free(port, host):
                    _handed_out.add(port)
                    return port
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise InfraError("no free port found")


def wait_port_free(port, timeout=10.0, host="127.0.0.1"):
    """Wait (bounded) until nothing listens on port; True when free."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_is_free(port, host):
            return True
        time.sleep(0.1)
    return port_is_free(port, host)


# ---- processes --------------------------------------------------------------

def _proc_stat(pid):
    """(state, ppid, starttime) of pid from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = data[data.rfind(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def pid_alive(pid):
    """True when pid exists and is not a zombie."""
    st = _proc_stat(pid) if pid else None
    return st is not None and st[0] not in ("Z", "X")


def _descendants(pid):
    """All live descendants of pid (children first, breadth-first)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st:
                children.setdefault(st[1], []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _signal_pids(pids, sig):
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_gone(pids, timeout):
    """Wait (bounded) until none of pids is alive; True when all are gone."""
    deadline = time.monotonic() + timeout
    while True:
        live = [p for p in pids if pid_alive(p)]
        if not live:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def kill_tree(pid, timeout=10.0, sig=signal.SIGTERM):
    """Send sig to pid, wait up to timeout, then SIGKILL pid and every descendant.

    Returns True when the process was alive when we came. Children are
    collected before signalling so that ones reparented on the parent's death
    are still found.
    """
    if not pid_alive(pid):
        return False
    tree = [pid] + _descendants(pid)
    _signal_pids([pid], sig)
    if not _wait_gone([pid], timeout):
        tree = list(dict.fromkeys(tree + _descendants(pid)))
        _signal_pids(tree, signal.SIGKILL)
    if not _wait_gone(tree, 5.0):
        _signal_pids(tree, signal.SIGKILL)
        _wait_gone(tree, 5.0)
    return True


def _pdeathsig():
    """preexec_fn: die with our parent (see PDEATHSIG)."""
    _libc.prctl(_PR_SET_PDEATHSIG, int(PDEATHSIG), 0, 0, 0)


def tail(path, lines=40):
    """The last lines of a text file, or '' when it is missing."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _stamp():
    return time.strftime("%Y-%m-%d %H:%M:%S")


class _Proc:
    """A process we fork directly, with its output appended to a log file.

    Subclasses set self.name, self.log_path, self.pid_dir and implement
    _argv() / _env() / _cwd().
    """

    name = "proc"
    stop_timeout = 10.0

    def __init__(self):
        self.proc = None
        self.started_at = None
        self._lock = threading.RLock()

    # What to run; overridden.
    def _argv(self):
        raise NotImplementedError

    def _env(self):
        return dict(os.environ)

    def _cwd(self):
        return None

    def _prepare(self):
        """Write configuration files etc. before each start."""

    @property
    def pid(self):
        p = self.proc
        return p.pid if p is not None and p.poll() is None else None

    def alive(self):
        p = self.proc
        return p is not None and p.poll() is None

    @property
    def returncode(self):
        p = self.proc
        return None if p is None else p.poll()

    def start(self):
        """Fork the process (returns at once); a no-op when it runs.

        Call it from a thread that lives as long as the process should: the
        child's PDEATHSIG fires when the forking thread exits, not only when
        this process does (the main thread, or a long-lived worker)."""
        with self._lock:
            if self.alive():
                return
            self._prepare()
            Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as log:
                log.write(f"==== {_stamp()} starting {self.name}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    self._argv(), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=self._env(), cwd=self._cwd(),
                    start_new_session=True, preexec_fn=_pdeathsig, close_fds=True)
            self.started_at = time.monotonic()
            self._write_pidfile()

    def _write_pidfile(self):
        if not getattr(self, "pid_dir", None) or not self.alive():
            return
        st = _proc_stat(self.proc.pid)
        Path(self.pid_dir).mkdir(parents=True, exist_ok=True)
        Path(self.pid_dir, f"{self.name}.pid").write_text(
            f"{self.proc.pid} {st[2] if st else 0}\n")

    def _remove_pidfile(self):
        if getattr(self, "pid_dir", None):
            try:
                Path(self.pid_dir, f"{self.name}.pid").unlink()
            except FileNotFoundError:
                pass

    def stop(self, timeout=None):
        """SIGTERM, wait up to timeout, then SIGKILL; returns the exit code."""
        timeout = self.stop_timeout if timeout is None else timeout
        with self._lock:
            p = self.proc
            if p is None:
                return None
            if p.poll() is None:
                kill_tree(p.pid, timeout, signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            self._remove_pidfile()
            return p.returncode

    def kill9(self):
        """SIGKILL the process (a crash, for failure tests)."""
        with self._lock:
            p = self.proc
            if p is None or p.poll() is not None:
                return
            kill_tree(p.pid, 0, signal.SIGKILL)
            p.wait(timeout=10)

    def log_tail(self, lines=40):
        return tail(self.log_path, lines)

    def _died(self, what):
        code = self.returncode
        return InfraError(f"{self.name} exited with code {code} {what}; "
                          f"last lines of {self.log_path}:\n{self.log_tail()}")


# ---- Kafka ------------------------------------------------------------------

def topics_tool():
    """Path of logpipe-topics: LOGPIPE_BIN_DIR, build/bin, or built here.

    The last resort compiles tools/logpipe-topics.c with cc into
    .cache/tools, so that Kafka's readiness check does not depend on the rest
    of the tree building.
    """
    for d in (os.environ.get("LOGPIPE_BIN_DIR"), REPO / "build" / "bin"):
        if d:
            p = Path(d) / "logpipe-topics"
            if p.is_file() and os.access(p, os.X_OK) and \
                    p.stat().st_mtime >= TOPICS_TOOL_SRC.stat().st_mtime:
                return str(p)
    out = REPO / ".cache" / "tools" / "logpipe-topics"
    if out.is_file() and out.stat().st_mtime >= TOPICS_TOOL_SRC.stat().st_mtime:
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    r = subprocess.run([cc, "-std=c11", "-D_GNU_SOURCE", "-O2", "-Wall", "-I",
                        str(REPO / "common" / "include"), str(TOPICS_TOOL_SRC),
                        "-o", str(tmp), "-lrdkafka"], capture_output=True, text=True)
    if r.returncode != 0:
        raise InfraError(f"cannot build logpipe-topics:\n{r.stderr}")
    os.replace(tmp, out)
    return str(out)


def topic_args(topics, compacted=COMPACTED_TOPICS):
    """--create arguments for a {name: partitions} dict; names in compacted
    get cleanup.policy=compact."""
    args = []
    for name, parts in topics.items():
        spec = f"{name}:{parts}"
        if name in compacted:
            spec += ":compact"
        args += ["--create", spec]
    return args


def _cluster_id():
    """A random 22-character Kafka cluster id (base64url of 16 bytes)."""
    # Kafka's tool takes the id as a separate argument: it must not start with "-".
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
        if not cid.startswith("-"):
            return cid


class Kafka(_Proc):
    """Single-node Kafka (KRaft: broker and controller in one JVM)."""

    name = "kafka"
    stop_timeout = 20.0

    def __init__(self, base_dir, port=None, controller_port=None, topics=None,
                 heap="512m", log_path=None):
        super().__init__()
        self.base_dir = Path(base_dir)
        self.dir = self.base_dir / "kafka"
        self.data_dir = self.dir / "data"
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.topics = dict(TOPICS if topics is None else topics)
        self.heap = heap
        self.log_path = Path(log_path or self.base_dir / "logs" / "kafka.log")
        self.pid_dir = self.base_dir / "pids"

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def prepare(self):
        """Write the configuration and format the storage once; start() does
        this too, calling it earlier (from any thread) saves time."""
        with self._lock:
            self._prepare()

    def _prepare(self):
        if not any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
            raise InfraError(f"no Kafka jars in {KAFKA_LIBS}: run scripts/install-deps.sh")
        self.dir.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
                         f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            # 50 partitions (the default) makes the first group join slow.
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            # After a kill -9 the restarted broker cannot register until the
            # controller fenced its old incarnation (default 9 s).
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "500",
            # Topics are declared (TOPICS, logpipe-topics); a typo must fail.
            "auto.create.topics.enable": "false",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.retention.hours": "24",
            "log.segment.bytes": str(256 * 1024 * 1024),
        }
        # For measuring broker settings (docs/benchmarks.md).
        props.update(env_pairs("LOGPIPE_KAFKA_PROPS"))
        (self.dir / "server.properties").write_text(
            "".join(f"{k}={v}\n" for k, v in props.items()))
        (self.dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka=INFO\n"
            "log4j.logger.org.apache.kafka=INFO\n"
            "log4j.logger.kafka.request.logger=WARN\n"
            "log4j.logger.state.change.logger=WARN\n"
            "log4j.logger.kafka.log.LogCleaner=WARN\n")
        if not (self.data_dir / "meta.properties").exists():
            self._format()

    def _java(self):
        java_home = os.environ.get("JAVA_HOME")
        if java_home and Path(java_home, "bin", "java").exists():
            return str(Path(java_home, "bin", "java"))
        java = shutil.which("java")
        if not java:
            raise InfraError("no java on PATH: run scripts/install-deps.sh")
        return java

    def _jvm_common(self):
        return [self._java(), "-Djava.awt.headless=true",
                f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
                "-cp", f"{KAFKA_LIBS}/*"]

    def _format(self):
        idfile = self.dir / "cluster.id"
        if not idfile.exists():
            idfile.write_text(_cluster_id() + "\n")
        cid = idfile.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(
            self._jvm_common() + ["-Xmx256m", "-XX:TieredStopAtLevel=1",
                                  "kafka.tools.StorageTool", "format", "-t", cid,
                                  "-c", str(self.dir / "server.properties"),
                                  "--ignore-formatted"],
            capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise InfraError(f"kafka storage format failed:\n{r.stdout}{r.stderr}")

    def _cds_archive(self):
        """Class-data-sharing archive for this JVM and these jars.

        Loading Kafka's classes from a CDS archive cuts the broker's start
        from about 6 s to 4 s on an idle machine and to a third on a busy
        one. The first broker that finds no archive records one when it stops
        cleanly; a mismatched or broken archive is ignored by the JVM.
        """
        try:
            key = os.path.realpath(self._java()) + "\n" + "\n".join(
                sorted(os.listdir(KAFKA_LIBS)))
        except OSError:
            return None
        return KAFKA_LIBS.parent / f"kafka-cds-{hashlib.sha1(key.encode()).hexdigest()[:12]}.jsa"

    def _argv(self):
        jvm = self._jvm_common()
        cds = []
        self._cds_tmp = None
        archive = self._cds_archive()
        if archive is not None and archive.exists():
            cds = [f"-XX:SharedArchiveFile={archive}"]
        elif archive is not None and os.access(archive.parent, os.W_OK):
            self._cds_tmp = archive.with_name(f"{archive.name}.tmp{os.getpid()}-{self.port}")
            cds = [f"-XX:ArchiveClassesAtExit={self._cds_tmp}"]
        # For measuring JVM settings (docs/benchmarks.md): options appended
        # to these; one that picks a collector replaces G1 and its goal.
        extra = os.environ.get("LOGPIPE_KAFKA_JVM_OPTS", "").split()
        gc = [] if any(o.startswith("-XX:+Use") and o.endswith("GC") for o in extra) else [
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]
        return jvm[:1] + [
            f"-Xmx{self.heap}", f"-Xms{self.heap}", *gc, "-XX:+ExitOnOutOfMemoryError",
        ] + extra + cds + jvm[1:] + ["kafka.Kafka", str(self.dir / "server.properties")]

    def _cds_finish(self, clean):
        tmp, self._cds_tmp = getattr(self, "_cds_tmp", None), None
        if tmp is None or not tmp.exists():
            return
        try:
            if clean and tmp.stat().st_size > 0:
                os.replace(tmp, self._cds_archive())
            else:
                tmp.unlink()
        except OSError:
            pass

    def stop(self, timeout=None):
        code = super().stop(timeout)
        self._cds_finish(code in (0, 143, -signal.SIGTERM))
        return code

    def kill9(self):
        super().kill9()
        self._cds_finish(False)

    def wait_ready(self, timeout=120.0):
        """Ready when logpipe-topics created the topics and sees their leaders."""
        deadline = time.monotonic() + timeout
        tool = topics_tool()
        while True:
            if not self.alive():
                raise self._died("while starting")
            left = deadline - time.monotonic()
            if left <= 0:
                raise InfraError(f"kafka on {self.bootstrap} not ready within {timeout:.0f} s; "
                                 f"last lines of {self.log_path}:\n{self.log_tail()}")
            args = [tool, "--brokers", self.bootstrap, "--wait", f"{min(left, 60):.1f}"]
            t = subprocess.Popen(args + topic_args(self.topics), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            while t.poll() is None:
                if not self.alive():
                    t.kill()
                    t.wait()
                    raise self._died("while starting")
                time.sleep(0.1)
            out, err = t.communicate()
            if t.returncode == 0:
                return
            self.last_tool_error = err.strip()
            if "did not answer" not in err and "not ready" not in err \
                    and "not created" not in err:
                raise InfraError(f"logpipe-topics failed: {err.strip()}")

    def list_topics(self, timeout=15.0):
        """{name: (partitions, cleanup_policy)} of every non-internal topic."""
        r = subprocess.run([topics_tool(), "--brokers", self.bootstrap, "--wait",
                            str(timeout), "--list"], capture_output=True, text=True,
                           timeout=timeout + 15)
        if r.returncode != 0:
            raise InfraError(f"logpipe-topics --list failed: {r.stderr.strip()}")
        out = {}
        for line in r.stdout.splitlines():
            name, parts, policy = line.split("\t")
            out[name] = (int(parts), policy)
        return out

    def create_topics(self, topics, compacted=COMPACTED_TOPICS, timeout=30.0):
        """Create more topics ({name: partitions}), e.g. unique ones for a test."""
        r = subprocess.run([topics_tool(), "--brokers", self.bootstrap, "--wait",
                            str(timeout)] + topic_args(topics, compacted),
                           capture_output=True, text=True, timeout=timeout + 15)
        if r.returncode != 0:
            raise InfraError(f"logpipe-topics failed: {r.stderr.strip()}")

    def restart(self, timeout=120.0):
        self.stop()
        wait_port_free(self.port)
        self.start()
        self.wait_ready(timeout)


# ---- Redis ------------------------------------------------------------------

class Redis(_Proc):
    """redis-server in the foreground, cache only (no RDB, no AOF)."""

    name = "redis"
    stop_timeout = 10.0

    def __init__(self, base_dir, port=None, log_path=None):
        super().__init__()
        self.base_dir = Path(base_dir)
        self.dir = self.base_dir / "redis"
        self.port = port or free_port()
        self.log_path = Path(log_path or self.base_dir / "logs" / "redis.log")
        self.pid_dir = self.base_dir / "pids"

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def _prepare(self):
        self.dir.mkdir(parents=True, exist_ok=True)

    def _argv(self):
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        return [exe, "--port", str(self.port), "--bind", "127.0.0.1",
                "--protected-mode", "yes", "--dir", str(self.dir), "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--logfile", "",
                "--databases", "16"]

    def ping(self, timeout=1.0):
        """True when the server answers PING with PONG."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while not self.ping():
            if not self.alive():
                raise self._died("while starting")
            if time.monotonic() >= deadline:
                raise InfraError(f"redis on {self.port} not ready within {timeout:.0f} s")
            time.sleep(0.05)

    def restart(self, timeout=15.0):
        self.stop()
        wait_port_free(self.port)
        self.start()
        self.wait_ready(timeout)


# ---- PostgreSQL ---------------------------------------------------------------

def pg_bindir():
    """Directory of initdb/pg_ctl: the newest /usr/lib/postgresql/N/bin."""
    cands = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if cands:
        return cands[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise InfraError("PostgreSQL server binaries not found: run scripts/install-deps.sh")


def _psql():
    p = pg_bindir() / "psql"
    return str(p) if p.exists() else (shutil.which("psql") or "psql")


def psql(dsn, sql, timeout=30):
    """Run one SQL string with psql; returns its unaligned, tuples-only output."""
    r = subprocess.run([_psql(), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                        "-d", dsn, "-c", sql], capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ, PGCONNECT_TIMEOUT="5"))
    if r.returncode != 0:
        raise InfraError(f"psql failed: {r.stderr.strip()}")
    return r.stdout.strip()


_MIGRATION_RE = re.compile(r"^(\d{3})_[A-Za-z0-9_]+\.sql$")


def migrations(directory=MIGRATIONS_DIR):
    """[(version, path)] of the NNN_name.sql files in order."""
    out = []
    for p in sorted(Path(directory).iterdir()):
        m = _MIGRATION_RE.match(p.name)
        if m:
            out.append((m.group(1), p))
    return out


def apply_migrations(dsn, directory=MIGRATIONS_DIR):
    """Apply the migrations not yet in schema_migrations, each once, in order.

    Each file is its own transaction (BEGIN ... COMMIT inside the file) and
    normally records itself; a file that does not is recorded here. Returns
    the versions applied now.
    """
    have = set()
    if psql(dsn, "SELECT to_regclass('public.schema_migrations') IS NOT NULL") == "t":
        have = set(psql(dsn, "SELECT version FROM schema_migrations").split())
    done = []
    env = dict(os.environ, PGCONNECT_TIMEOUT="5")
    for version, path in migrations(directory):
        if version in have:
            continue
        r = subprocess.run([_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn,
                            "-f", str(path)], capture_output=True, text=True,
                           timeout=300, env=env)
        if r.returncode != 0:
            raise InfraError(f"migration {path.name} failed: {r.stderr.strip()}")
        name = path.stem.split("_", 1)[1]
        psql(dsn, "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, "
                  "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()); "
                  f"INSERT INTO schema_migrations (version, name) VALUES ('{version}', "
                  f"'{name}') ON CONFLICT (version) DO NOTHING")
        done.append(version)
    return done


# Server settings of every local cluster (make run, the tests, the benches),
# written to DATA/logpipe.conf, which postgresql.conf includes, so that ALTER
# SYSTEM (the benches' --pg) still overrides them.  Measured for the write
# path (issue 15; docs/storage.md, "PostgreSQL settings"): with the stock
# max_wal_size (1 GB) a checkpoint comes after about 500 MB of WAL, every
# 10-30 s at 10,000-30,000 events/s, each followed by full-page images of the
# index pages the next rows touch (WAL per row 1.6 KB -> 2.9-6.3 KB on a table
# of 2-3 M rows).  synchronous_commit stays on: the consumer commits Kafka
# offsets after COMMIT returns.
PG_SETTINGS = {
    "shared_buffers": "1GB",
    "wal_buffers": "64MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "wal_compression": "lz4",
}


class Postgres:
    """A private PostgreSQL cluster under BASE/postgres, run by pg_ctl."""

    name = "postgres"

    def __init__(self, base_dir, port=None, db="logpipe", log_path=None, fsync=True):
        self.base_dir = Path(base_dir)
        self.dir = self.base_dir / "postgres"
        self.data_dir = self.dir / "data"
        self.sock_dir = self.dir / "sock"
        self.port = port or free_port()
        self.db = db
        self.fsync = fsync
        self.log_path = Path(log_path or self.base_dir / "logs" / "postgres.log")
        self.started_at = None
        self._lock = threading.RLock()
        self._as_postgres = os.geteuid() == 0

    @property
    def dsn(self):
        return self.dsn_for(self.db)

    def dsn_for(self, db):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def _run(self, argv, timeout=60, check=True):
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise InfraError(f"{Path(argv[4 if self._as_postgres else 0]).name} failed "
                             f"(code {r.returncode}): {r.stdout.strip()} {r.stderr.strip()}")
        return r

    def _chown(self, path):
        if self._as_postgres:
            shutil.chown(path, "postgres", "postgres")

    def _prepare(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            # The postgres user must reach its directories: check the
            # ancestors, open up the ones we own.
            for d in [self.base_dir] + list(self.base_dir.parents):
                mode = d.stat().st_mode
                if not mode & 0o001:
                    if d == self.base_dir or d == self.log_path.parent:
                        os.chmod(d, mode | 0o011)
                    else:
                        raise InfraError(f"postgres cannot enter {d} (mode {oct(mode)}); "
                                         "use a base directory it can reach")
            os.chmod(self.log_path.parent, self.log_path.parent.stat().st_mode | 0o011)
            self._chown(self.dir)
            self.sock_dir.mkdir(exist_ok=True)
            self._chown(self.sock_dir)
            self.log_path.touch()
            self._chown(self.log_path)
        else:
            self.sock_dir.mkdir(exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            if self.data_dir.exists():
                shutil.rmtree(self.data_dir)  # a half-made one from an interrupted initdb
            self._run([str(pg_bindir() / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                       "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions",
                       "--no-sync"], timeout=120)
        self._write_settings()

    def _write_settings(self):
        """DATA/logpipe.conf from PG_SETTINGS, included by postgresql.conf."""
        # For measuring server settings (docs/benchmarks.md).
        settings = dict(PG_SETTINGS, **env_pairs("LOGPIPE_PG_SETTINGS"))
        conf = self.data_dir / "logpipe.conf"
        conf.write_text("# written by deploy/local/infra.py (PG_SETTINGS) at every start\n" +
                        "".join(f"{k} = '{v}'\n" for k, v in settings.items()))
        self._chown(conf)
        main = self.data_dir / "postgresql.conf"
        if "include_if_exists = 'logpipe.conf'" not in main.read_text():
            with open(main, "a") as f:
                f.write("\ninclude_if_exists = 'logpipe.conf'\n")

    @property
    def pid(self):
        """The postmaster's pid from postmaster.pid, when it is running."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if pid_alive(pid) and b"postgres" in cmd else None

    def alive(self):
        return self.pid is not None

    def _remove_stale_locks(self):
        """Lock files of a postmaster that is dead but maybe not yet reaped.

        After a kill -9 the old postmaster lingers as a zombie until init
        reaps it, and PostgreSQL takes the lock files that name it for a live
        server; pid_alive() knows a zombie from a live process.
        """
        for lock in [self.data_dir / "postmaster.pid"] + list(self.sock_dir.glob(".s.PGSQL.*.lock")):
            try:
                pid = int(lock.read_text().split("\n", 1)[0])
            except (OSError, ValueError):
                continue
            if not pid_alive(pid):
                lock.unlink(missing_ok=True)

    def start(self):
        """Start the postmaster (pg_ctl, no wait); a no-op when it runs."""
        with self._lock:
            if self.alive():
                return
            self._prepare()
            self._remove_stale_locks()
            opts = (f"-p {self.port} -k {self.sock_dir} -c listen_addresses=127.0.0.1 "
                    f"-c fsync={'on' if self.fsync else 'off'}")
            with open(self.log_path, "a") as log:
                log.write(f"==== {_stamp()} starting postgres\n")
            self._run([str(pg_bindir() / "pg_ctl"), "-D", str(self.data_dir), "-l",
                       str(self.log_path), "-W", "-o", opts, "start"], timeout=30)
            self.started_at = time.monotonic()

    def ready(self):
        r = subprocess.run([str(pg_bindir() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                            str(self.port), "-U", "postgres", "-d", "postgres", "-t", "1"],
                           capture_output=True)
        return r.returncode == 0

    def wait_ready(self, timeout=60.0):
        """pg_isready, then the database and the migrations."""
        deadline = time.monotonic() + timeout
        seen = False
        while not self.ready():
            seen = seen or self.alive()
            if seen and not self.alive() or \
                    not seen and time.monotonic() - (self.started_at or 0) > 10:
                raise InfraError(f"postgres is not running; last lines of {self.log_path}:\n"
                                 f"{tail(self.log_path)}")
            if time.monotonic() >= deadline:
                raise InfraError(f"postgres on {self.port} not ready within {timeout:.0f} s")
            time.sleep(0.1)
        self.create_database(self.db)

    def create_database(self, db, migrate=True):
        """Create db when missing and apply the migrations; returns its dsn."""
        if not re.match(r"^[a-z_][a-z0-9_]*$", db):
            raise InfraError(f"bad database name '{db}'")
        admin = self.dsn_for("postgres")
        if psql(admin, f"SELECT 1 FROM pg_database WHERE datname = '{db}'") != "1":
            psql(admin, f"CREATE DATABASE {db}")
        if migrate:
            apply_migrations(self.dsn_for(db))
        return self.dsn_for(db)

    def stop(self, timeout=20.0):
        """pg_ctl stop -m fast; SIGKILL the tree if that does not finish in time."""
        with self._lock:
            pid = self.pid
            if pid is None:
                return
            tree = [pid] + _descendants(pid)
            r = self._run([str(pg_bindir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                           "-w", "-t", str(int(timeout)), "stop"],
                          timeout=timeout + 10, check=False)
            if r.returncode != 0 or not _wait_gone(tree, 5.0):
                kill_tree(pid, 0, signal.SIGKILL)
                _signal_pids(tree, signal.SIGKILL)
                _wait_gone(tree, 5.0)

    def kill9(self):
        """SIGKILL the postmaster and all its backends (a crash)."""
        with self._lock:
            pid = self.pid
            if pid is None:
                return
            tree = [pid] + _descendants(pid)
            _signal_pids(tree, signal.SIGKILL)
            _wait_gone(tree, 10.0)

    def restart(self, timeout=60.0):
        self.stop()
        wait_port_free(self.port)
        self.start()
        self.wait_ready(timeout)

    def log_tail(self, lines=40):
        return tail(self.log_path, lines)


# ---- all three ----------------------------------------------------------------

class Infra:
    """Kafka, Redis and PostgreSQL together, started in parallel."""

    def __init__(self, base_dir, kafka_port=None, redis_port=None, pg_port=None,
                 kafka_controller_port=None, topics=None):
        self.base_dir = Path(base_dir)
        self.kafka = Kafka(base_dir, kafka_port, kafka_controller_port, topics)
        self.redis = Redis(base_dir, redis_port)
        self.postgres = Postgres(base_dir, pg_port)
        self.timings = {}  # component -> seconds from start() until it was ready

    def components(self):
        return [self.kafka, self.redis, self.postgres]

    def start(self, timeout=150.0):
        """Start all three and wait until each is ready; stops them on failure."""
        t0 = time.monotonic()
        errors = []

        def run(fn):
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        try:
            # initdb + pg_ctl and Kafka's storage format (a JVM of its own)
            # run in helper threads while Redis starts. The long-lived
            # processes we fork ourselves (Redis, the broker) are forked from
            # this thread: they carry PDEATHSIG, which fires when the forking
            # *thread* exits; PostgreSQL daemonises through pg_ctl instead.
            helpers = [threading.Thread(target=run, args=(fn,), name=name)
                       for name, fn in (("postgres-start", self.postgres.start),
                                        ("kafka-format", self.kafka.prepare))]
            for th in helpers:
                th.start()
            try:
                self.redis.start()
            finally:
                for th in helpers:
                    th.join()
            if errors:
                raise errors[0]
            self.kafka.start()
            self.redis.wait_ready(min(timeout, 15))
            self.timings["redis"] = time.monotonic() - t0
            self.postgres.wait_ready(max(5, timeout - (time.monotonic() - t0)))
            self.timings["postgres"] = time.monotonic() - t0
            self.kafka.wait_ready(max(5, timeout - (time.monotonic() - t0)))
            self.timings["kafka"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - t0

    def stop(self):
        """Stop all three in parallel; every one is tried even if one fails."""
        errors = []

        def one(c):
            try:
                c.stop()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"{c.name}: {e}")

        threads = [threading.Thread(target=one, args=(c,)) for c in self.components()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise InfraError("; ".join(errors))


# ---- logpipe services -----------------------------------------------------------

def bin_dir():
    return Path(os.environ.get("LOGPIPE_BIN_DIR") or REPO / "build" / "bin")


def env_name(key):
    """Config key "a.b" -> environment variable LOGPIPE_A_B."""
    return "LOGPIPE_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


def _addrs(infra):
    """(brokers, redis_url, pg_dsn) from an Infra or a mapping with those keys."""
    if isinstance(infra, dict):
        return infra.get("kafka.brokers"), infra.get("redis.url"), infra.get("pg.dsn")
    return infra.kafka.bootstrap, infra.redis.url, infra.postgres.dsn


def service_config(name, ports, infra, topics=None, group_suffix="", log_level="info",
                   extra=None):
    """The configuration keys (dotted) of service `name`.

    ports maps service names to ports (missing ones take SPEC's); infra is an
    Infra or a dict with kafka.brokers, redis.url and pg.dsn; topics maps the
    roles raw/complete/partial/dlq/metadata to topic names; group_suffix makes
    consumer groups unique (tests); extra adds or overrides keys.
    """
    if name not in SERVICE_PORTS:
        raise ValueError(f"unknown service '{name}'")
    port = lambda n: (ports or {}).get(n, SERVICE_PORTS[n])  # noqa: E731
    url = lambda n: f"http://127.0.0.1:{port(n)}"  # noqa: E731
    t = dict(TOPIC_ROLES, **(topics or {}))
    brokers, redis_url, dsn = _addrs(infra)
    cfg = {
        "http.listen": f"127.0.0.1:{port(name)}",
        "log.level": log_level,
        "kafka.brokers": brokers,
    }
    if name == "producer":
        cfg["topics.raw"] = t["raw"]
    elif name == "enricher":
        cfg.update({
            "kafka.group": "logpipe-enricher" + group_suffix,
            "topics.raw": t["raw"], "topics.complete": t["complete"],
            "topics.partial": t["partial"], "topics.dlq": t["dlq"],
            "topics.metadata": t["metadata"],
            "redis.url": redis_url, "metadata.url": url("metadata"),
        })
    elif name == "consumer":
        cfg.update({
            "kafka.group": "logpipe-consumer" + group_suffix,
            "topics.complete": t["complete"], "topics.partial": t["partial"],
            "topics.dlq": t["dlq"], "pg.dsn": dsn,
        })
    elif name == "metadata":
        cfg.update({"pg.dsn": dsn, "redis.url": redis_url, "topics.metadata": t["metadata"]})
    elif name == "gateway":
        cfg.update({f"upstream.{s}": url(s)
                    for s in ("producer", "consumer", "metadata", "generator", "enricher")})
        cfg["redis.url"] = redis_url
        # No runner to bridge to unless the caller names one (the runner does):
        # a test must not reach whatever listens on the default port.
        cfg["upstream.control"] = ""
        # The lag the backpressure and the pipeline view watch: this run's groups and topics.
        cfg["backpressure.groups"] = (
            f"logpipe-enricher{group_suffix}={t['raw']},"
            f"logpipe-consumer{group_suffix}={t['complete']}+{t['partial']}")
        cfg.update({"topics.raw": t["raw"], "topics.complete": t["complete"],
                    "topics.partial": t["partial"], "topics.dlq": t["dlq"]})
    elif name == "generator":
        cfg.update({"topics.raw": t["raw"], "redis.url": redis_url})
    cfg.update(extra or {})
    return cfg


def service_env(name, ports, infra, **kw):
    """service_config() as LOGPIPE_* environment variables."""
    return {env_name(k): str(v) for k, v in service_config(name, ports, infra, **kw).items()
            if v is not None}


class ServiceProc(_Proc):
    """One logpipe-NAME binary, configured through its environment."""

    stop_timeout = 10.0

    def __init__(self, name, env, log_path, port, bin_dir_=None, args=(), cwd=None,
                 pid_dir=None):
        super().__init__()
        self.name = name
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.port = port
        self.binary = Path(bin_dir_ or bin_dir()) / f"logpipe-{name}"
        self.args = list(args)
        self.cwd = Path(cwd) if cwd else None
        self.pid_dir = pid_dir

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def built(self):
        return self.binary.is_file() and os.access(self.binary, os.X_OK)

    def _prepare(self):
        if not self.built():
            raise InfraError(f"{self.binary} is not built (make all)")
        if self.cwd:
            self.cwd.mkdir(parents=True, exist_ok=True)

    def _argv(self):
        return [str(self.binary)] + self.args

    def _env(self):
        # Our own LOGPIPE_* settings must not leak into the service.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LOGPIPE_") or k == "LOGPIPE_BIN_DIR"}
        env.update(self.env)
        return env

    def _cwd(self):
        return str(self.cwd) if self.cwd else None

    def get(self, path, timeout=1.0):
        """(status, body) of GET path, or (None, error text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException) as e:
            return None, str(e)
        finally:
            conn.close()

    def live(self):
        return self.get("/health/live")[0] == 200

    def wait_ready(self, timeout=15.0, path="/health/live"):
        """Until GET path answers 200; raises (with the log's tail) on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise self._died("before answering " + path)
            if self.get(path)[0] == 200:
                return
            if time.monotonic() >= deadline:
                raise InfraError(f"{self.name} did not answer 200 on {path} within "
                                 f"{timeout:.0f} s; last lines of {self.log_path}:\n"
                                 f"{self.log_tail()}")
            time.sleep(0.1)

    def restart(self, timeout=15.0):
        self.stop()
        wait_port_free(self.port)
        self.start()
        self.wait_ready(timeout)


# ---- leftovers of a killed runner ------------------------------------------------

def reap_stale(base_dir, log=print):
    """Stop processes a previous run under base_dir left behind.

    Directly forked ones are found by BASE/pids/NAME.pid ("pid starttime", so
    a reused pid is never hit); PostgreSQL by its postmaster.pid.
    """
    base_dir = Path(base_dir)
    for f in sorted((base_dir / "pids").glob("*.pid")):
        try:
            pid, start = (int(x) for x in f.read_text().split()[:2])
        except (OSError, ValueError):
            f.unlink(missing_ok=True)
            continue
        st = _proc_stat(pid)
        if st and st[2] == start and pid_alive(pid):
            log(f"stopping {f.stem} (pid {pid}) left over from an earlier run")
            kill_tree(pid, 10.0, signal.SIGTERM)
        f.unlink(missing_ok=True)
    pg = Postgres(base_dir, port=1)
    if (pg.data_dir / "postmaster.pid").exists() and pg.alive():
        log(f"stopping postgres (pid {pg.pid}) left over from an earlier run")
        pg.stop()
