#!/usr/bin/python3
"""runner.py - what `make run` executes: logpipe and its infrastructure as local processes.

Starts a single-node Kafka (KRaft), Redis and PostgreSQL with their data under
.run/ (kept across runs), then the six services on their SPEC ports, prints
the URLs, and supervises: a service or server that dies is restarted with
exponential backoff (1 s doubling to 60 s, reset after a minute of uptime), so
a binary that still exits at once is retried now and then, not in a loop.
Ctrl-C (SIGINT), SIGTERM or SIGHUP stops everything it started, services first,
then the infrastructure, and checks that no process is left; a second Ctrl-C
kills at once.

Each component is owned by one worker thread that executes its actions
(start, stop, restart, shutdown) in order and supervises it in between, so
the control endpoint, the chaos scheduler and the supervisor never act on a
component at the same time. The processes are forked from these long-lived
threads on purpose: they carry a parent-death signal that fires when the
forking thread ends (see infra.PDEATHSIG).

Control endpoint (loopback only, JSON; seed 004's control API and Chaos Nurse):

  GET  /control/status                     every component, and chaos
  GET  /control/<component>/status
  POST /control/<component>/{stop,start,restart}
  POST /chaos/enable, /chaos/disable
  GET  /chaos/status, /chaos/history       last 20 actions, newest first

Settings (see docs/configuration.md, "make run"): every service setting can be
given in the runner's environment. LOGPIPE_<KEY> (as each binary's --help
lists it) goes to every service that has that setting; LOGPIPE_<SERVICE>__<KEY>
(LOGPIPE_GATEWAY__RATELIMIT_RATE) to that service only, and wins over the
first; LOGPIPE_<SERVICE>__CONFIG names a settings file for one service. What
the runner itself decides because the stack depends on it (where each service
listens and where it finds Kafka, Redis, PostgreSQL and the other services)
is not overridden; the banner lists what was applied and what was ignored.

Components: kafka redis postgres gateway producer metadata enricher consumer
generator. Chaos acts about every 10 s on kafka, enricher, consumer, postgres
or redis (never the gateway, nor the runner): a running target is stopped or
restarted, a stopped one started; what it stopped is started again after 30 s
at the latest, at most two targets are down at once, and disabling chaos
starts whatever it left stopped.
"""

import argparse
import collections
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infra  # noqa: E402

INFRA = ["kafka", "redis", "postgres"]
# Start order: what others call first; the gateway last.
SERVICE_ORDER = ["metadata", "producer", "enricher", "consumer", "generator", "gateway"]
COMPONENTS = INFRA + SERVICE_ORDER
ACTIONS = ("start", "stop", "restart")

PREFERRED = {"kafka": 9092, "kafka-controller": 9093, "redis": 6390, "postgres": 5440,
             "control": 8090, "syslog": 5514}
CHAOS_TARGETS = ["kafka", "enricher", "consumer", "postgres", "redis"]
CHAOS_INTERVAL = 10.0      # seconds between chaos actions
CHAOS_MAX_DOWN = 30.0      # a target chaos stopped is started after this long
CHAOS_MAX_STOPPED = 2      # at most this many targets down at once

# Settings the runner chooses because the stack depends on them: the
# addresses each service listens on and finds the others at, and the data
# directories the pipeline view measures.  An override of one is ignored
# (and said so): a gateway listening elsewhere than the banner says, or a
# producer writing to another Kafka, is a broken stack, not a setting.
PINNED = re.compile(r"^(http\.listen|kafka\.brokers|redis\.url|pg\.dsn|metadata\.url|"
                    r"upstream\..+|pipeline\.(kafka|pg)_data_dir)$")
# LOGPIPE_* variables that are the runner's or the tests' own, not settings.
NOT_SETTINGS = {"LOGPIPE_BIN_DIR"}

BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0
STABLE_AFTER = 60.0        # uptime after which the backoff resets
INFRA_READY_TIMEOUT = 120.0
SERVICE_LIVE_WAIT = 10.0   # a start waits this long for /health/live

_log_file = None
_say_lock = threading.Lock()


def say(msg):
    """One line for the person at the terminal, also kept in .run/logs/runner.log."""
    line = f"runner: {msg}"
    with _say_lock:
        print(line, flush=True)
        if _log_file:
            _log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            _log_file.flush()


class Reply:
    """The outcome of one submitted action, waited for by whoever submitted it."""

    def __init__(self):
        self.done = threading.Event()
        self.result = None
        self.error = None

    def wait(self, timeout):
        return self.done.wait(timeout)


class Component:
    """One supervised process (an infra server or a service) and its worker thread."""

    def __init__(self, name, obj, kind, address, runner):
        self.name = name          # component name used by the control API
        self.obj = obj            # infra.Kafka / Redis / Postgres / ServiceProc
        self.kind = kind          # "infra" or "service"
        self.address = address    # what clients connect to (URL or host:port)
        self.runner = runner      # the Runner, for its stopping flag
        self.desired = "stopped"  # what the supervisor keeps it at
        self.state = "stopped"    # stopped|starting|running|backoff|missing|stopping|failed
        self.restarts = 0         # restarts after unexpected exits
        self.last_exit = None     # exit code of the last unexpected exit
        self.last_error = None    # last start failure, as text
        self.started = None       # monotonic time of the last start
        self.up_since = None      # wall time since when it is running
        self.backoff = 0.0        # current restart delay
        self.next_try = 0.0       # monotonic time of the next restart attempt
        self.busy = None          # the action being executed, if any
        self.slow_reported = False  # "not answering /health/live yet" said once
        self.missing_checked = 0.0  # last look for a binary that was not built
        self.q = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"worker-{name}", daemon=True)

    # ---- API for other threads ----

    def submit(self, action):
        reply = Reply()
        self.q.put((action, reply))
        return reply

    def drain(self):
        """Drop queued actions (at shutdown); their submitters get an error."""
        while True:
            try:
                _, reply = self.q.get_nowait()
            except queue.Empty:
                return
            reply.error = "runner is shutting down"
            reply.done.set()

    def status(self):
        pid = self.obj.pid
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "desired": self.desired,
            "busy": self.busy,
            "pid": pid,
            "port": self.obj.port,
            "address": self.address,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_error": self.last_error,
            "uptime_s": round(time.time() - self.up_since, 1) if self.up_since else None,
            "log": str(self.obj.log_path),
        }

    # ---- worker thread ----

    def _run(self):
        while True:
            try:
                action, reply = self.q.get(timeout=0.5)
            except queue.Empty:
                if not self.runner.stopping.is_set():
                    try:
                        self._supervise()
                    except Exception as e:  # noqa: BLE001 - supervision must go on
                        say(f"{self.name}: supervisor error: {e}")
                continue
            self.busy = action
            try:
                if action == "shutdown":
                    self._stop()
                else:
                    reply.result = getattr(self, "_" + action)()
            except Exception as e:  # noqa: BLE001 - handed to the submitter
                reply.error = str(e)
            finally:
                self.busy = None
                reply.done.set()
            if action == "shutdown":
                return

    def _start(self):
        self.desired = "running"
        if self.obj.alive():
            if self.state not in ("running", "starting"):
                self.state = "running"
            return self.state
        return self._launch()

    def _launch(self):
        """Start the process; infra is waited for, services are checked later."""
        self.slow_reported = False
        if self.kind == "service" and not self.obj.built():
            if self.state != "missing":
                say(f"{self.name}: {self.obj.binary} is not built yet; "
                    "it will be started when it appears")
            self.state = "missing"
            self.last_error = "binary not built"
            return self.state
        infra.wait_port_free(self.obj.port, 5.0)
        self.state = "starting"
        self.started = time.monotonic()
        try:
            self.obj.start()
            if self.kind == "infra":
                self.obj.wait_ready(INFRA_READY_TIMEOUT)
                self._mark_running()
            else:
                # Briefly, so that a control action answers with the real
                # state; the supervisor keeps looking after that.
                deadline = time.monotonic() + SERVICE_LIVE_WAIT
                while time.monotonic() < deadline and self.obj.alive() \
                        and not self.runner.stopping.is_set():
                    if self.obj.live():
                        self._mark_running()
                        break
                    time.sleep(0.1)
        except Exception as e:
            self.last_error = str(e).splitlines()[0] if str(e) else repr(e)
            if self.obj.alive():
                self.obj.stop()
            self._schedule_retry(f"failed to start: {self.last_error}")
            raise
        return self.state

    def _mark_running(self):
        self.state = "running"
        self.up_since = time.time()
        self.last_error = None

    def _stop(self):
        self.desired = "stopped"
        if self.obj.alive():
            self.state = "stopping"
            self.obj.stop()
        self.state = "stopped"
        self.up_since = None
        self.backoff = 0.0
        return self.state

    def _restart(self):
        self.desired = "running"
        if self.obj.alive():
            self.state = "stopping"
            self.obj.stop()
        self.up_since = None
        return self._launch()

    def _schedule_retry(self, why):
        ran = time.monotonic() - (self.started or time.monotonic())
        if ran >= STABLE_AFTER or self.backoff == 0:
            self.backoff = BACKOFF_MIN
        else:
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        self.state = "backoff"
        self.up_since = None
        self.next_try = time.monotonic() + self.backoff
        last = self.obj.log_tail(1).strip()
        say(f"{self.name} {why} after {ran:.1f} s; restart #{self.restarts + 1} in "
            f"{self.backoff:.0f} s" + (f" (log: {last[:160]})" if last else ""))

    def _supervise(self):
        if self.desired != "running":
            return
        now = time.monotonic()
        if self.state == "missing":
            if now - self.missing_checked >= 5:
                self.missing_checked = now
                if self.obj.built():
                    say(f"{self.name}: binary appeared, starting it")
                    self._try_launch()
            return
        if self.state == "backoff":
            if now >= self.next_try:
                self.restarts += 1
                self._try_launch()
            return
        if self.state in ("running", "starting") and not self.obj.alive():
            self.last_exit = getattr(self.obj, "returncode", None)
            self._schedule_retry(f"exited (code {self.last_exit})")
            return
        if self.state == "starting" and self.kind == "service":
            if self.obj.live():
                self._mark_running()
            elif not self.slow_reported and now - self.started > 30:
                self.slow_reported = True
                say(f"{self.name}: running but not answering /health/live after 30 s")

    def _try_launch(self):
        try:
            self._launch()
        except Exception:  # noqa: BLE001 - _launch scheduled the retry
            pass


class Chaos:
    """Chaos Nurse: random stop/start/restart of the chaos targets."""

    def __init__(self, runner):
        self.runner = runner
        self.enabled = False
        self.history = collections.deque(maxlen=20)  # newest last
        self.stopped = {}                            # target -> monotonic time chaos stopped it
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def _run(self):
        while not self.runner.stopping.wait(CHAOS_INTERVAL):
            if self.enabled:
                try:
                    self.act()
                except Exception as e:  # noqa: BLE001 - chaos must not stop the runner
                    say(f"chaos: {e}")

    def act(self):
        comps = self.runner.components
        now = time.monotonic()
        with self.lock:
            overdue = [n for n, t in self.stopped.items() if now - t >= CHAOS_MAX_DOWN]
            if overdue:
                target, action = overdue[0], "start"
            else:
                idle = [n for n in CHAOS_TARGETS if comps[n].busy is None and comps[n].q.empty()]
                if not idle:
                    return
                target = random.choice(idle)
                if comps[target].desired == "stopped":
                    action = "start"
                elif len(self.stopped) >= CHAOS_MAX_STOPPED:
                    action = "restart"
                else:
                    action = random.choice(["stop", "restart"])
            if action == "stop":
                self.stopped[target] = now
            else:
                self.stopped.pop(target, None)
            self.history.append({"timestamp": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "service": target, "action": action})
        say(f"chaos: {action} {target}")
        comps[target].submit(action)

    def forget(self, name):
        """A person took over `name` through the control API."""
        with self.lock:
            self.stopped.pop(name, None)

    def set_enabled(self, on):
        with self.lock:
            was, self.enabled = self.enabled, on
            revive = [] if on else list(self.stopped)
            if not on:
                self.stopped.clear()
        if was != on:
            say(f"chaos {'enabled' if on else 'disabled'}")
        for name in revive:
            say(f"chaos: start {name} (chaos disabled)")
            self.runner.components[name].submit("start")

    def status(self):
        with self.lock:
            return {"enabled": self.enabled, "interval_seconds": CHAOS_INTERVAL,
                    "targets": CHAOS_TARGETS, "stopped_by_chaos": sorted(self.stopped),
                    "history": list(reversed(self.history))}


# ---- control endpoint ----------------------------------------------------------

_LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


def _host_of(value):
    """Host part of a Host header or an Origin URL."""
    if "//" in value:
        value = urlsplit(value).netloc
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.rsplit(":", 1)[0] if ":" in value else value


class ControlHandler(BaseHTTPRequestHandler):
    server_version = "logpipe-runner"
    protocol_version = "HTTP/1.1"
    runner = None  # set by Runner

    def log_message(self, fmt, *args):  # keep the terminal quiet
        pass

    def _cors(self):
        origin = self.headers.get("Origin")
        if origin and _host_of(origin) in _LOOPBACK:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")

    def _send(self, code, obj):
        body = (json.dumps(obj, indent=1) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self._cors()
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code, err, msg):
        self._send(code, {"status": "error", "error": {"code": err, "message": msg}})

    def _allowed(self):
        """Loopback Host (no DNS rebinding) and, when sent, a loopback Origin
        (no cross-site POST from a page the browser has open elsewhere)."""
        if _host_of(self.headers.get("Host", "127.0.0.1")) not in _LOOPBACK:
            self._error(403, "forbidden", "control endpoint answers loopback hosts only")
            return False
        origin = self.headers.get("Origin")
        if origin and _host_of(origin) not in _LOOPBACK:
            self._error(403, "forbidden", "cross-origin requests are refused")
            return False
        return True

    def _parts(self):
        return [p for p in urlsplit(self.path).path.split("/") if p]

    def do_OPTIONS(self):
        if not self._allowed():
            return
        self.send_response(204)
        self._cors()
        self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Content-Type")
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        if not self._allowed():
            return
        r, p = self.runner, self._parts()
        if p in ([], ["health"]):
            self._send(200, {"status": "UP", "components": len(r.components)})
        elif p == ["control", "status"]:
            self._send(200, r.status())
        elif len(p) == 3 and p[0] == "control" and p[2] == "status":
            if p[1] not in r.components:
                self._error(404, "unknown_component", f"no component '{p[1]}'; one of: "
                            + ", ".join(COMPONENTS))
            else:
                self._send(200, r.components[p[1]].status())
        elif p == ["chaos", "status"]:
            self._send(200, r.chaos.status())
        elif p == ["chaos", "history"]:
            self._send(200, {"history": r.chaos.status()["history"]})
        elif (len(p) == 3 and p[0] == "control" and p[2] in ACTIONS) or \
                p in (["chaos", "enable"], ["chaos", "disable"]):
            self._error(405, "method_not_allowed", "use POST")
        else:
            self._error(404, "not_found", f"no route {self.path}")

    def do_POST(self):
        if not self._allowed():
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 65536))
        r, p = self.runner, self._parts()
        if p in (["chaos", "enable"], ["chaos", "disable"]):
            r.chaos.set_enabled(p[1] == "enable")
            self._send(200, dict(r.chaos.status(), status="success"))
            return
        if len(p) != 3 or p[0] != "control":
            self._error(404, "not_found", f"no route {self.path}")
            return
        name, action = p[1], p[2]
        if name not in r.components:
            self._error(404, "unknown_component",
                        f"no component '{name}'; one of: " + ", ".join(COMPONENTS))
            return
        if action not in ACTIONS:
            self._error(404, "unknown_action", f"no action '{action}'; one of: start, stop, restart")
            return
        if r.stopping.is_set():
            self._error(503, "shutting_down", "the runner is stopping")
            return
        r.chaos.forget(name)
        comp = r.components[name]
        say(f"control: {action} {name}")
        reply = comp.submit(action)
        if not reply.wait(INFRA_READY_TIMEOUT + 30):
            self._send(202, {"status": "pending", "component": name, "action": action,
                             "state": comp.status()})
        elif reply.error:
            self._error(500, "action_failed", f"{action} {name}: {reply.error}")
        else:
            self._send(200, {"status": "success", "component": name, "action": action,
                             "state": comp.status()})


# ---- settings from the environment ------------------------------------------------

def service_keys(binary, timeout=10.0):
    """{environment variable: dotted key} of the settings `binary --help` lists
    (its settings table), plus LOGPIPE_CONFIG (its settings file); {} when
    the binary is missing or does not answer --help."""
    try:
        r = subprocess.run([str(binary), "--help"], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL,
                           env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    except (OSError, subprocess.SubprocessError):
        return {}
    keys = dict((m.group(2), m.group(1)) for m in
                re.finditer(r"^\s+([a-z0-9_.]+)\s+(LOGPIPE_[A-Z0-9_]+)\s", r.stdout, re.M))
    if keys:
        keys["LOGPIPE_CONFIG"] = "--config"
    return keys


def resolve_overrides(environ, keys):
    """What of environ's LOGPIPE_* variables goes to which service.

    keys maps each service to service_keys() of its binary.  Returns
    (applied, notes): applied maps each service to {variable: value} to add
    to its environment; notes are one line each, for the banner, of what was
    applied ("gateway: ratelimit.rate=50000 (LOGPIPE_RATELIMIT_RATE)") or
    ignored and why.  A per-service variable wins over a global one."""
    applied = {name: {} for name in keys}
    how = {name: {} for name in keys}   # variable -> (source variable, value)
    notes = []
    pinned = {}                          # source variable -> the key it would set
    prefixes = {name.upper() + "__": name for name in keys}

    def put(name, var, value, source):
        key = keys[name][var]
        if PINNED.match(key):
            pinned[source] = key
            return
        applied[name][var] = value
        how[name][var] = (source, value)

    per_service = []
    for source in sorted(environ):
        if not source.startswith("LOGPIPE_") or source in NOT_SETTINGS:
            continue
        rest = source[len("LOGPIPE_"):]
        pre = next((p for p in prefixes if rest.startswith(p)), None)
        if pre:
            per_service.append((source, prefixes[pre], "LOGPIPE_" + rest[len(pre):]))
            continue
        targets = [name for name in keys if source in keys[name]]
        if not targets:
            notes.append(f"ignored {source}: no service has this setting")
        for name in targets:
            put(name, source, environ[source], source)
    for source, name, var in per_service:  # after the global ones: they win
        if var not in keys[name]:
            notes.append(f"ignored {source}: {name} has no setting {var}")
            continue
        put(name, var, environ[source], source)
    for source, key in pinned.items():
        notes.append(f"ignored {source}: {key} is the runner's choice (the stack depends on it)")
    for name in keys:
        for var, (source, value) in sorted(how[name].items()):
            notes.append(f"{name}: {keys[name][var]}={value} ({source})")
    return applied, notes


# ---- the runner ------------------------------------------------------------------

class Runner:
    def __init__(self, args):
        self.args = args
        self.base = Path(args.base_dir).resolve()
        self.stopping = threading.Event()
        self.forced = False
        self.components = {}
        self.chaos = Chaos(self)
        self.httpd = None
        self.ports = {}
        self.setting_notes = []   # overrides applied and ignored, for the banner

    def status(self):
        return {"components": {n: c.status() for n, c in self.components.items()},
                "chaos": self.chaos.status()}

    def _port(self, key, preferred):
        port = infra.free_port(preferred or None)
        if preferred and port != preferred:
            say(f"port {preferred} for {key} is taken; using {port}")
        return port

    def build(self):
        base = self.base
        p = self.ports
        for key in ("kafka", "kafka-controller", "redis", "postgres"):
            p[key] = self._port(key, PREFERRED[key])
        for name in SERVICE_ORDER:
            p[name] = self._port(name, infra.SERVICE_PORTS[name])
        p["control"] = self._port("control", self.args.control_port)
        # The producer's syslog receiver (TCP and UDP; docs/syslog.md).
        p["syslog"] = self._port("syslog", PREFERRED["syslog"])

        kafka = infra.Kafka(base, p["kafka"], p["kafka-controller"])
        redis = infra.Redis(base, p["redis"])
        pg = infra.Postgres(base, p["postgres"])
        addrs = {"kafka.brokers": kafka.bootstrap, "redis.url": redis.url, "pg.dsn": pg.dsn}
        self.components = {
            "kafka": Component("kafka", kafka, "infra", kafka.bootstrap, self),
            "redis": Component("redis", redis, "infra", redis.url, self),
            "postgres": Component("postgres", pg, "infra", pg.dsn, self),
        }
        svc_ports = {n: p[n] for n in SERVICE_ORDER}
        keys = {n: service_keys(infra.bin_dir() / f"logpipe-{n}") for n in SERVICE_ORDER}
        overrides, self.setting_notes = resolve_overrides(os.environ, keys)
        for note in self.setting_notes:
            say(f"settings: {note}")
        for name in SERVICE_ORDER:
            extra = {}
            if name == "gateway":
                # Where the dashboard's component controls and chaos live.
                extra["upstream.control"] = f"http://127.0.0.1:{p['control']}"
                # Whose disk use the pipeline view shows.
                extra["pipeline.kafka_data_dir"] = str(kafka.data_dir)
                extra["pipeline.pg_data_dir"] = str(pg.data_dir)
            if name == "producer":
                extra["syslog.listen"] = f"127.0.0.1:{p['syslog']}"
            env = infra.service_env(name, svc_ports, addrs, log_level=self.args.log_level,
                                    extra=extra)
            env.update(overrides[name])
            proc = infra.ServiceProc(name, env, base / "logs" / f"{name}.log", p[name],
                                     cwd=base / "services" / name, pid_dir=base / "pids")
            self.components[name] = Component(name, proc, "service", proc.url, self)

    def start_infra(self):
        t0 = time.monotonic()
        say(f"starting kafka ({self.ports['kafka']}), redis ({self.ports['redis']}), "
            f"postgres ({self.ports['postgres']}); data in {self.base}")
        replies = {n: self.components[n].submit("start") for n in INFRA}
        for name, reply in replies.items():
            while not reply.wait(0.5):
                if self.stopping.is_set():
                    return False
            if reply.error:
                say(f"{name} did not start: {reply.error}")
                return False
        say(f"infrastructure ready in {time.monotonic() - t0:.1f} s")
        return True

    def start_services(self):
        for name in SERVICE_ORDER:
            self.components[name].submit("start")
        # Give them a moment so the banner can say how they are doing.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not self.stopping.is_set():
            states = [self.components[n].state for n in SERVICE_ORDER]
            if all(s in ("running", "backoff", "missing", "failed") for s in states):
                break
            time.sleep(0.2)

    def seed_metadata(self):
        """Loads the generator's catalogue of hosts and services into metadata-svc.

        The generator's events name these hosts and services; with them known,
        enrichment has something to add and the pipeline shows complete
        events. Existing records (409) are left as they are; a failure is
        reported, not fatal.
        """
        gen, md = self.components["generator"], self.components["metadata"]

        def call(method, url, body=None):
            data = json.dumps(body).encode() if body is not None else None
            req = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        created = known = 0
        deadline = time.monotonic() + 30
        try:
            status, raw = call("GET", gen.address + "/api/v1/generator/catalog")
            if status != 200:
                raise OSError(f"generator answered {status}")
            cat = json.loads(raw)
            for kind in ("hosts", "services"):
                for body in cat.get(kind, []):
                    while True:  # 503 until metadata-svc's Kafka producer is connected
                        status, raw = call("POST", f"{md.address}/api/metadata/{kind}", body)
                        if status != 503 or time.monotonic() > deadline or \
                                self.stopping.is_set():
                            break
                        time.sleep(0.5)
                    if status == 201:
                        created += 1
                    elif status == 409:
                        known += 1
                    else:
                        raise OSError(f"metadata-svc answered {status} to a {kind} record: "
                                      f"{raw[:200]!r}")
            say(f"metadata: {created} hosts and services from the generator's catalogue "
                f"loaded, {known} already known")
        except (OSError, ValueError) as e:
            say(f"metadata: the generator's catalogue was not loaded ({e}); events stay "
                "partial until hosts and services are added")

    def start_control(self):
        ControlHandler.runner = self
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.ports["control"]), ControlHandler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, name="control",
                         kwargs={"poll_interval": 0.2}, daemon=True).start()

    def banner(self):
        c = self.components
        lines = ["", "logpipe is running (Ctrl-C stops everything)", ""]
        for name in SERVICE_ORDER:
            what = {"gateway": "dashboard and API"}.get(name, "")
            lines.append(f"  {name:<10} {c[name].address + '/':<28} {c[name].state:<9} {what}")
        lines += [
            f"  {'kafka':<10} {c['kafka'].address:<28} {c['kafka'].state}",
            f"  {'redis':<10} {c['redis'].address:<28} {c['redis'].state}",
            f"  {'postgres':<10} {c['postgres'].address}",
            f"  {'control':<10} http://127.0.0.1:{self.ports['control']}/control/status   "
            f"(POST /control/<component>/stop|start|restart, /chaos/enable)",
            f"  {'syslog':<10} {'127.0.0.1:' + str(self.ports['syslog']):<28} TCP and UDP, "
            f"into the producer (docs/syslog.md)",
            f"  {'logs':<10} {self.base / 'logs'}/",
            "",
        ]
        if self.setting_notes:
            lines += ["settings from the environment:"]
            lines += [f"  {note}" for note in self.setting_notes]
        else:
            lines += ["settings: the defaults (LOGPIPE_<KEY>=... make run, or "
                      "LOGPIPE_<SERVICE>__<KEY> for one service; see docs/configuration.md)"]
        lines += [
            "",
            "try: curl -s -X POST " + c["gateway"].address + "/api/logs -H 'Content-Type: "
            "application/json' -d '{\"service\":\"demo\",\"level\":\"INFO\","
            "\"message\":\"hello from curl\"}'",
            f"     logger --rfc5424 -T -n 127.0.0.1 -P {self.ports['syslog']} -t demo "
            "'hello from syslog'",
            "",
        ]
        with _say_lock:
            print("\n".join(lines), flush=True)

    def all_pids(self):
        pids = set()
        for comp in self.components.values():
            if comp.obj.pid:
                pids.add(comp.obj.pid)
        return pids

    def shutdown(self):
        self.stopping.set()
        say("stopping everything ...")
        if self.httpd:
            threading.Thread(target=self.httpd.shutdown, daemon=True).start()
        before = self.all_pids()
        for group, grace in ((SERVICE_ORDER, 20.0), (INFRA, 40.0)):
            replies = {}
            for name in group:
                comp = self.components.get(name)
                if comp is None or not comp.thread.is_alive():
                    continue
                comp.drain()
                replies[name] = comp.submit("shutdown")
            for name, reply in replies.items():
                if self.forced:
                    break
                deadline = time.monotonic() + grace
                while not reply.wait(0.2) and not self.forced and time.monotonic() < deadline:
                    pass
                if not reply.done.is_set():
                    # Its worker is stuck in a long action: stop it from here.
                    self.components[name].obj.stop()
        if self.forced:
            for comp in self.components.values():
                comp.obj.kill9()
        for comp in self.components.values():
            comp.thread.join(timeout=5)
        left = [p for p in before | self.all_pids() if infra.pid_alive(p)]
        for p in left:
            infra.kill_tree(p, 0, signal.SIGKILL)
        if left:
            say(f"killed leftover processes {sorted(left)}")
        say("all stopped")

    def on_signal(self, signum, frame):
        if self.stopping.is_set():
            if not self.forced:
                self.forced = True
                say("second signal: killing everything now")
            return
        self.stopping.set()

    def run(self):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        infra.PDEATHSIG = signal.SIGTERM  # services drain if we die
        infra.reap_stale(self.base, log=say)
        self.build()
        for comp in self.components.values():
            comp.thread.start()
        code = 0
        try:
            if not self.start_infra():
                if not self.stopping.is_set():
                    code = 1
                return code
            self.start_control()
            self.chaos.thread.start()
            if not self.args.no_services:
                self.start_services()
                if not self.stopping.is_set():
                    self.seed_metadata()
            if self.args.chaos:
                self.chaos.set_enabled(True)
            if not self.stopping.is_set():
                self.banner()
            while not self.stopping.wait(1.0):
                pass
            return code
        finally:
            self.shutdown()


def _lock(base):
    """One runner per .run: refuse to start beside a live one."""
    pidfile = base / "runner.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        if pid != os.getpid() and infra.pid_alive(pid) and b"runner.py" in cmd:
            say(f"another runner (pid {pid}) is using {base}; stop it first")
            sys.exit(1)
    except (OSError, ValueError, IndexError):
        pass
    pidfile.write_text(f"{os.getpid()}\n")
    return pidfile


def main():
    global _log_file
    ap = argparse.ArgumentParser(description="Run logpipe and its infrastructure locally.")
    ap.add_argument("--base-dir", default=str(infra.REPO / ".run"),
                    help="data, logs and pid files (default .run/)")
    ap.add_argument("--control-port", type=int, default=PREFERRED["control"],
                    help="control endpoint port (0: any free one)")
    ap.add_argument("--log-level", default="info", help="services' log.level")
    ap.add_argument("--no-services", action="store_true", help="infrastructure only")
    ap.add_argument("--chaos", action="store_true", help="enable chaos from the start")
    args = ap.parse_args()

    base = Path(args.base_dir).resolve()
    (base / "logs").mkdir(parents=True, exist_ok=True)
    _log_file = open(base / "logs" / "runner.log", "a")
    pidfile = _lock(base)
    try:
        code = Runner(args).run()
    finally:
        pidfile.unlink(missing_ok=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
