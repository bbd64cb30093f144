#!/usr/bin/python3
"""run.py - `make test-compose`: deploy/compose/compose.yaml for real, on
this machine, with no image registry.

Steps (each wait a bounded poll on a condition, each failure says which):
  1. tools: Debian's docker.io, a compose client (`docker compose` v2 where
     it answers, else Debian's docker-compose 1.29), debootstrap,
     python3-yaml; installed only when missing;
  2. an engine: a running dockerd is used as it is; else one is started
     here and stopped at the end;
  3. base images: debian:bookworm-slim and debian:bookworm, when the engine
     has neither, imported from a debootstrap tarball (tests/compose/
     mkbase.sh) cached in .cache/docker/;
  4. infrastructure stand-ins from Debian packages (tests/compose/images:
     Kafka on the jars in .cache/kafka/libs, PostgreSQL, Redis, Prometheus),
     given to compose through LOGPIPE_KAFKA_IMAGE, LOGPIPE_POSTGRES_IMAGE,
     LOGPIPE_REDIS_IMAGE and LOGPIPE_PROMETHEUS_IMAGE; Grafana (not in
     Debian) is in the compose profile `grafana`, left off;
  5. every image compose.yaml builds (the six services and migrate), from
     deploy/docker/Dockerfile with its target and args, with BuildKit so
     Dockerfile.dockerignore applies;
  6. `up -d`; every long-running service healthy, migrate and kafka-init
     exited 0;
  7. only 127.0.0.1:8080 (gateway) and 127.0.0.1:9090 (Prometheus) are
     published and listened on by the engine on the host;
  8. the seeds' curl examples (SEED_CURLS of tests/integration/
     test_gateway.py, as written but for the port: 8080, and the dev API
     key) answer 2xx, and every event they post is found by its id through
     GET /api/logs/{id};
  9. Prometheus scrapes every logpipe service: each job's targets `up`;
 10. the producer's process is killed (SIGKILL, as a crash: `docker kill`
     would count as a manual stop, which the restart policy honours); the
     container comes back by its restart policy, healthy, and an event
     posted through the gateway afterwards is stored;
 11. `down -v` (always, also on failure or interrupt), and a dockerd
     started here is stopped.

The last two lines are
  compose: services=N healthy=N seeds_stored=N restart_ok=0|1
  compose: N passed, N failed
and the exit status is 1 when anything failed.
"""

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "tests" / "compose"
COMPOSE_FILE = REPO / "deploy" / "compose" / "compose.yaml"
CACHE = REPO / ".cache" / "docker"
BASE_TAR = CACHE / "debian-bookworm-slim.tar"
KAFKA_LIBS = REPO / ".cache" / "kafka" / "libs"
PROJECT = os.environ.get("LOGPIPE_COMPOSE_PROJECT", "logpipe-test")
API_KEY = "logpipe-dev-key"
GATEWAY = "http://127.0.0.1:8080"
PROMETHEUS = "http://127.0.0.1:9090"
PUBLISHED = {"127.0.0.1:8080", "127.0.0.1:9090"}
LOGPIPE = ["gateway", "producer", "metadata", "enricher", "consumer", "generator"]
ONE_SHOTS = {"migrate", "kafka-init"}
# Stand-in images: compose variable -> (tag, folder under tests/compose/images).
STANDINS = {
    "LOGPIPE_KAFKA_IMAGE": ("logpipe-standin/kafka:3.9.1", "kafka"),
    "LOGPIPE_POSTGRES_IMAGE": ("logpipe-standin/postgres:15", "postgres"),
    "LOGPIPE_REDIS_IMAGE": ("logpipe-standin/redis:7", "redis"),
    "LOGPIPE_PROMETHEUS_IMAGE": ("logpipe-standin/prometheus:2", "prometheus"),
}
# Debian's engine client, which speaks its engine's API and has BuildKit
# built in (a newer static client may want a buildx plugin for BuildKit).
DOCKER = "/usr/bin/docker"

T0 = time.monotonic()
results = []          # (name, ok, detail)
summary = {"services": 0, "healthy": 0, "seeds_stored": 0, "restart_ok": 0}


class Fatal(Exception):
    """A step after which the rest cannot run."""


def say(msg):
    print(f"compose: [{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def record(name, ok, detail=""):
    results.append((name, ok, detail))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""),
          flush=True)
    return ok


def run(argv, timeout, check=True, env=None, quiet=False, **kw):
    """Runs argv (bounded by timeout); output captured.  check: a non-zero
    exit raises Fatal with the output's tail."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           env=env, **kw)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"")[-3000:]
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        raise Fatal(f"{' '.join(map(str, argv[:6]))} … did not finish in {timeout}s\n{out}")
    if check and r.returncode != 0:
        tail = (r.stdout + r.stderr)[-4000:]
        raise Fatal(f"{' '.join(map(str, argv[:8]))} … exited {r.returncode}:\n{tail}")
    if not quiet and r.returncode != 0:
        say(f"{argv[:4]} exited {r.returncode}")
    return r


def poll(what, cond, timeout, interval=1.0):
    """Calls cond() until it returns a true value (returned) or timeout
    seconds passed (Fatal naming `what` and cond's last word)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = cond()
        except Fatal:
            raise
        except Exception as e:     # a refused connection, a container not there yet
            v, last = None, f"{type(e).__name__}: {e}"
        if v:
            return v
        if time.monotonic() >= deadline:
            raise Fatal(f"{what}: not after {timeout}s" + (f" ({last})" if last else ""))
        time.sleep(interval)


# ---- 1. tools ------------------------------------------------------------

def dpkg_installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.endswith(" installed")


def compose_v2():
    for client in (DOCKER, shutil.which("docker")):
        if client and os.path.exists(client):
            r = subprocess.run([client, "compose", "version"], capture_output=True, text=True)
            if r.returncode == 0 and "version" in r.stdout.lower():
                return [client, "compose"]
    return None


def ensure_tools():
    want = ["docker.io", "debootstrap", "python3-yaml", "iproute2"]
    if not compose_v2():
        want.append("docker-compose")
    missing = [p for p in want if not dpkg_installed(p)]
    if missing:
        say(f"installing Debian packages: {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        run(sudo + ["apt-get", "update", "-qq"], 600, env=env)
        run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
            900, env=env)
    v2 = compose_v2()
    if v2:
        return v2
    return [shutil.which("docker-compose") or "/usr/bin/docker-compose"]


# ---- 2. the engine -------------------------------------------------------

class Engine:
    def __init__(self):
        self.proc = None
        self.log = None

    def up(self):
        if subprocess.run([DOCKER, "info"], capture_output=True, timeout=30).returncode == 0:
            say("using the running Docker engine")
            return
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        self.log = tempfile.NamedTemporaryFile(prefix="logpipe-dockerd.", suffix=".log",
                                               delete=False)
        say(f"starting dockerd (log {self.log.name})")
        self.proc = subprocess.Popen([dockerd], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

        def ready():
            if self.proc.poll() is not None:
                raise Fatal(f"dockerd exited {self.proc.returncode}:\n{self._tail()}")
            return subprocess.run([DOCKER, "info"], capture_output=True,
                                  timeout=30).returncode == 0
        try:
            poll("dockerd answering `docker info`", ready, 90)
        except Fatal as e:
            raise Fatal(f"{e}\n{self._tail()}")

    def _tail(self):
        try:
            return "".join(Path(self.log.name).read_text(errors="replace").splitlines(True)[-30:])
        except OSError:
            return ""

    def down(self):
        if self.proc is None:
            return
        say(f"stopping the dockerd started here (pid {self.proc.pid})")
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            say("dockerd did not stop in 60 s: SIGKILL")
            self.proc.kill()
            self.proc.wait(30)
        self.log.close()
        os.unlink(self.log.name)
        self.proc = None


def image_exists(ref):
    return subprocess.run([DOCKER, "image", "inspect", ref], capture_output=True,
                          timeout=60).returncode == 0


# ---- 3. base images ------------------------------------------------------

def ensure_base():
    tags = ["debian:bookworm-slim", "debian:bookworm"]
    missing = [t for t in tags if not image_exists(t)]
    if not missing:
        say("base images present: " + ", ".join(tags))
        return
    if not BASE_TAR.exists():
        say(f"making the base tarball {BASE_TAR.relative_to(REPO)} with debootstrap "
            "(minutes; cached for later runs)")
        t = time.monotonic()
        run([str(HERE / "mkbase.sh"), str(BASE_TAR)], 1200)
        say(f"base tarball made ({time.monotonic() - t:.0f}s, "
            f"{BASE_TAR.stat().st_size / 1e6:.0f} MB)")
    else:
        say(f"base tarball cached: {BASE_TAR.relative_to(REPO)}")
    say("importing the debootstrap base as " + ", ".join(missing))
    r = run([DOCKER, "import", "-c", 'CMD ["bash"]', "-m", "debootstrap --variant=minbase bookworm "
             "(tests/compose/mkbase.sh)", str(BASE_TAR)], 600)
    image_id = r.stdout.strip()
    for t in missing:
        run([DOCKER, "tag", image_id, t], 60)


# ---- 4./5. images --------------------------------------------------------

def build_env():
    return dict(os.environ, DOCKER_BUILDKIT="1", BUILDKIT_PROGRESS="plain")


def docker_build(tag, context, dockerfile=None, target=None, args=None, timeout=1200):
    argv = [DOCKER, "build", "--network", "host", "-t", tag]
    if dockerfile:
        argv += ["-f", str(dockerfile)]
    if target:
        argv += ["--target", target]
    for k, v in (args or {}).items():
        argv += ["--build-arg", f"{k}={v}"]
    t = time.monotonic()
    run(argv + [str(context)], timeout, env=build_env())
    say(f"built {tag} ({time.monotonic() - t:.0f}s)")


def build_standins():
    if not any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        raise Fatal(f"no Kafka jars in {KAFKA_LIBS}: run scripts/install-deps.sh (make deps)")
    for var, (tag, folder) in STANDINS.items():
        src = HERE / "images" / folder
        with tempfile.TemporaryDirectory(prefix="logpipe-standin.") as ctx:
            shutil.copytree(src, ctx, dirs_exist_ok=True)
            if folder == "kafka":
                libs = Path(ctx, "libs")
                libs.mkdir()
                for jar in KAFKA_LIBS.glob("*.jar"):
                    try:
                        os.link(jar.resolve(), libs / jar.name)
                    except OSError:
                        shutil.copy2(jar, libs / jar.name)
            docker_build(tag, ctx)


def compose_config(compose, env):
    import yaml
    r = run(compose + ["config"], 120, env=env)
    return yaml.safe_load(r.stdout)


def build_services(cfg):
    """Every image compose.yaml builds, as compose would (target, args),
    with BuildKit: the build stage is built once and shared."""
    built = []
    for name, svc in sorted(cfg["services"].items(), key=lambda kv: kv[0] != "migrate"):
        b = svc.get("build")
        if not b:
            continue
        ctx = Path(b["context"])
        dockerfile = ctx / b.get("dockerfile", "Dockerfile")
        args = b.get("args") or {}
        if isinstance(args, list):
            args = dict(a.split("=", 1) for a in args)
        docker_build(svc["image"], ctx, dockerfile, b.get("target"), args)
        built.append(svc["image"])
    return built


def image_sizes(images):
    for img in images:
        r = run([DOCKER, "image", "inspect", "-f", "{{.Size}}", img], 60)
        mb = int(r.stdout.strip()) / 1e6
        say(f"image {img}: {mb:.1f} MB")
        if img.startswith("logpipe/") and not img.startswith("logpipe/migrate"):
            record(f"image size {img} < 100 MB", mb < 100, f"{mb:.1f} MB")


# ---- 6. up and healthy ---------------------------------------------------

def containers():
    """{service: inspect dict} of this project's containers."""
    r = run([DOCKER, "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"], 60)
    ids = r.stdout.split()
    if not ids:
        return {}
    r = run([DOCKER, "inspect"] + ids, 60)
    out = {}
    for c in json.loads(r.stdout):
        out[c["Config"]["Labels"].get("com.docker.compose.service", c["Name"])] = c
    return out


def long_running(cfg):
    """The services `up` starts and keeps running: not the one-shots, nor
    those in a profile (none is activated: Grafana's stays off)."""
    return sorted(n for n, s in cfg["services"].items()
                  if n not in ONE_SHOTS and not s.get("profiles"))


def state_line(c):
    st = c["State"]
    h = (st.get("Health") or {}).get("Status", "-")
    return f"{st['Status']} exit={st['ExitCode']} health={h} restarts={c.get('RestartCount', 0)}"


def logs(service, lines=30):
    r = subprocess.run([DOCKER, "logs", "--tail", str(lines), f"{PROJECT}_{service}_1"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:   # compose v2 names containers with dashes
        r = subprocess.run([DOCKER, "logs", "--tail", str(lines), f"{PROJECT}-{service}-1"],
                           capture_output=True, text=True, timeout=30)
    return (r.stdout + r.stderr)[-3000:]


def wait_healthy(cfg, timeout=420):
    want = long_running(cfg)
    last = {}

    def all_healthy():
        cs = containers()
        last.clear()
        last.update({n: state_line(c) for n, c in cs.items()})
        for n in ONE_SHOTS & set(cfg["services"]):
            c = cs.get(n)
            if c and c["State"]["Status"] == "exited" and c["State"]["ExitCode"] != 0:
                raise Fatal(f"one-shot {n} failed (exit {c['State']['ExitCode']}):\n{logs(n)}")
        return all(n in cs and (cs[n]["State"].get("Health") or {}).get("Status") == "healthy"
                   for n in want)
    try:
        poll(f"every service healthy ({', '.join(want)})", all_healthy, timeout, 2)
    except Fatal as e:
        bad = [f"{n}: {last.get(n, 'no container')}" for n in want
               if "health=healthy" not in last.get(n, "")]
        raise Fatal(f"{e}; not healthy: {'; '.join(bad)}")
    finally:
        healthy = [n for n in want if "health=healthy" in last.get(n, "")]
        summary["services"], summary["healthy"] = len(want), len(healthy)
    cs = containers()
    for n in sorted(ONE_SHOTS & set(cfg["services"])):
        c = cs.get(n)
        ok = bool(c) and c["State"]["Status"] == "exited" and c["State"]["ExitCode"] == 0
        record(f"one-shot {n} completed", ok, state_line(c) if c else "no container")


def unhealthy_report():
    try:
        for n, c in sorted(containers().items()):
            say(f"  {n}: {state_line(c)}")
            if "health=healthy" not in state_line(c) and n not in ONE_SHOTS:
                for line in logs(n, 15).splitlines():
                    print(f"      {n}| {line}")
    except Exception as e:   # best effort: only for the failure message
        say(f"  (no container report: {e})")


# ---- 7. published ports --------------------------------------------------

def check_ports():
    published = set()
    for n, c in containers().items():
        if c["HostConfig"].get("NetworkMode") == "host":
            published.add(f"{n}: host network")
        for port, binds in (c["NetworkSettings"].get("Ports") or {}).items():
            for b in binds or []:
                published.add(f"{b['HostIp']}:{b['HostPort']}")
    record("published ports are only 127.0.0.1:8080 and 127.0.0.1:9090",
           published == PUBLISHED, f"published {sorted(published)}")
    # What the engine listens on, on the host (its userland proxy; with the
    # proxy off, the engine's view above is the whole story).
    r = run(["ss", "-Hltnp"], 30)
    listening = set()
    for line in r.stdout.splitlines():
        if "docker-proxy" in line:
            listening.add(line.split()[3])
    if listening:
        record("the engine listens on the host only on the published ports",
               listening == PUBLISHED, f"docker-proxy on {sorted(listening)}")
    else:
        say("no docker-proxy listener (userland proxy off): the engine's view is the check")


def ports_free():
    """The host ports the stack publishes must be free before `up`."""
    import socket
    for hp in sorted(PUBLISHED):
        host, port = hp.rsplit(":", 1)
        with socket.socket() as sk:
            try:
                sk.bind((host, int(port)))
            except OSError as e:
                who = run(["ss", "-Hltnp", f"sport = :{port}"], 30, check=False).stdout.strip()
                raise Fatal(f"{hp} is taken ({e.strerror}): {who or 'by an unknown process'}; "
                            "the stack publishes it")


# ---- 8. seeds ------------------------------------------------------------

def seed_curls():
    """SEED_CURLS of tests/integration/test_gateway.py, read (not imported)."""
    src = (REPO / "tests" / "integration" / "test_gateway.py").read_text()
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "SEED_CURLS"
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    raise Fatal("no SEED_CURLS in tests/integration/test_gateway.py")


def http(method, url, body=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"X-API-Key": API_KEY,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def find_stored(event_id, timeout=60):
    def stored():
        code, _ = http("GET", f"{GATEWAY}/api/logs/{event_id}")
        return code == 200
    poll(f"event {event_id} stored (GET /api/logs/{{id}} 200)", stored, timeout, 0.5)


def run_seeds():
    ids, ran, failed = [], 0, 0
    for seed, cmd, _needs in seed_curls():
        cmd = re.sub(r"localhost:80\d\d", "127.0.0.1:8080", cmd)
        head, sep, pipe = cmd.partition(" | ")
        head = head.replace("curl ", f"curl -sS --max-time 15 -H 'X-API-Key: {API_KEY}' "
                                     "-w '\\n%{http_code}' ", 1)
        r = subprocess.run(["bash", "-o", "pipefail", "-c", head], capture_output=True,
                           text=True, timeout=30)
        body, _, code = r.stdout.rpartition("\n")
        first = cmd.splitlines()[0].rstrip(" \\")
        ok = r.returncode == 0 and code.isdigit() and 200 <= int(code) < 300
        if ok and sep and shutil.which(pipe.split()[0]):
            p = subprocess.run(["bash", "-o", "pipefail", "-c", f"cat | {pipe}"], input=body,
                               capture_output=True, text=True, timeout=30)
            ok = p.returncode == 0
        if not record(f"seed {seed}: {first}", ok, f"exit {r.returncode} {code} {body[:300]} "
                      f"{r.stderr[:300]}"):
            failed += 1
            continue
        ran += 1
        if re.search(r"-X POST \S+/api/logs\b", first):
            ids.append((seed, json.loads(body)["id"]))
    stored = 0
    for seed, eid in ids:
        try:
            find_stored(eid)
            stored += 1
            record(f"seed {seed}: event {eid} stored", True)
        except Fatal as e:
            record(f"seed {seed}: event {eid} stored", False, str(e))
    summary["seeds_stored"] = stored
    record(f"the seeds' curl examples: {ran} ran, {len(ids)} events posted, {stored} stored",
           failed == 0 and ran >= 8 and len(ids) >= 4 and stored == len(ids))


# ---- 9. Prometheus -------------------------------------------------------

def check_prometheus(timeout=150):
    last = {}

    def all_up():
        with urllib.request.urlopen(f"{PROMETHEUS}/api/v1/targets?state=active", timeout=5) as r:
            data = json.load(r)["data"]["activeTargets"]
        last.clear()
        for t in data:
            last.setdefault(t["labels"]["job"], []).append(t["health"])
        return all(last.get(j) and all(h == "up" for h in last[j]) for j in LOGPIPE)
    try:
        poll("Prometheus: every logpipe job's targets up", all_up, timeout, 3)
        record("Prometheus scrapes every logpipe service (targets up)", True)
    except Fatal as e:
        record("Prometheus scrapes every logpipe service (targets up)", False, f"{e} {last}")


# ---- 10. producer crash and restart --------------------------------------

def check_restart():
    c = containers()["producer"]
    before, pid = c.get("RestartCount", 0), c["State"]["Pid"]
    say(f"killing the producer's process (pid {pid} on the host) with SIGKILL")
    os.kill(pid, signal.SIGKILL)

    def back():
        c = containers()["producer"]
        return (c.get("RestartCount", 0) > before and c["State"]["Running"]
                and (c["State"].get("Health") or {}).get("Status") == "healthy")
    try:
        poll("the producer restarted by its policy and healthy again", back, 120, 1)
    except Fatal as e:
        record("producer restarted after a crash", False, f"{e}; {state_line(containers()['producer'])}")
        return
    record("producer restarted after a crash", True)

    def accepted():
        code, body = http("POST", f"{GATEWAY}/api/logs",
                          {"message": "after the producer's restart", "service": "compose-test",
                           "level": "INFO"})
        return json.loads(body)["id"] if code == 202 else None
    try:
        eid = poll("POST /api/logs 202 after the restart", accepted, 60, 1)
        find_stored(eid)
    except Fatal as e:
        record("an event posted after the restart is stored", False, str(e))
        return
    record("an event posted after the restart is stored", True)
    summary["restart_ok"] = 1


# ---- main ----------------------------------------------------------------

def main():
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    engine = Engine()
    compose = None
    env = dict(os.environ, COMPOSE_PROJECT_NAME=PROJECT, DOCKER_BUILDKIT="1",
               COMPOSE_DOCKER_CLI_BUILD="1")
    for var, (tag, _) in STANDINS.items():
        env[var] = tag
    up = False
    try:
        compose = ensure_tools() + ["-p", PROJECT, "-f", str(COMPOSE_FILE)]
        say("compose client: " + run(compose[:-4] + ["version"], 60).stdout.splitlines()[0])
        engine.up()
        run(compose + ["down", "-v", "--remove-orphans"], 180)   # leftovers of a killed run
        ensure_base()
        t = time.monotonic()
        build_standins()
        cfg = compose_config(compose, env)
        built = build_services(cfg)
        say(f"images built ({time.monotonic() - t:.0f}s)")
        image_sizes([tag for tag, _ in STANDINS.values()] + built)
        ports_free()
        say("compose up -d")
        up = True
        t = time.monotonic()
        r = run(compose + ["up", "-d", "--no-build"], 600, check=False, env=env)
        if r.returncode != 0:
            say(f"compose up exited {r.returncode}:\n{(r.stdout + r.stderr)[-3000:]}")
        try:
            wait_healthy(cfg)
        except Fatal as e:
            record("every service healthy", False, str(e))
            unhealthy_report()
            raise
        record(f"every service healthy ({summary['healthy']}/{summary['services']}, "
               f"{time.monotonic() - t:.0f}s after up)", r.returncode == 0,
               f"compose up exited {r.returncode}")
        check_ports()
        run_seeds()
        check_prometheus()
        check_restart()
    except Fatal as e:
        record("compose stack", False, str(e))
    except KeyboardInterrupt as e:
        record("compose stack", False, f"interrupted ({e})")
    finally:
        try:
            if up and compose:
                say("compose down -v")
                r = run(compose + ["down", "-v", "--remove-orphans", "--timeout", "20"], 300,
                        check=False, env=env)
                left = containers()
                record("stack taken down with its volumes", r.returncode == 0 and not left,
                       f"exit {r.returncode}, left {sorted(left)} {r.stderr[-500:]}")
        except Exception as e:
            record("stack taken down with its volumes", False, str(e))
        finally:
            try:
                engine.down()
            except Exception as e:
                record("dockerd started here stopped", False, str(e))
    passed = sum(1 for _, ok, _ in results if ok)
    failed = len(results) - passed
    say(f"wall time {time.monotonic() - T0:.0f}s")
    print("compose: services={services} healthy={healthy} seeds_stored={seeds_stored} "
          "restart_ok={restart_ok}".format(**summary))
    print(f"compose: {passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
