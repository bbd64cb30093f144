"""deploy/compose/compose.yaml: health-checked, ordered by health, restart
policies, limits, named volumes, only gateway/Grafana/Prometheus published,
SPEC's topics, and settings each service really has (`--check-config` with
the compose environment).  `docker-compose config` itself runs from
scripts/validate-deploy.sh."""
import os
import re
import subprocess

from deploylib import BIN, DEPLOY, SERVICES, TOPICS, load_yaml, unknown_env
from harness import Skip, check, fail_list

COMPOSE = DEPLOY / "compose" / "compose.yaml"
ONE_SHOTS = {"migrate", "kafka-init"}
PUBLISHED = {"gateway", "grafana", "prometheus"}
STATEFUL = {"kafka": "/var/lib/kafka/data", "postgres": "/var/lib/postgresql/data",
            "redis": "/data", "producer": "/var/lib/logpipe/spool",
            "prometheus": "/prometheus", "grafana": "/var/lib/grafana"}


def _c():
    return load_yaml(COMPOSE)


def _env(svc):
    """A service's environment with ${VAR:-default} taken at its default."""
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}


def test_every_service_is_there():
    names = set(_c()["services"])
    want = set(SERVICES) | {"kafka", "redis", "postgres", "prometheus", "grafana"} | ONE_SHOTS
    fail_list(sorted(want - names), "services missing from compose")
    img = {n: _default(s["image"]) for n, s in _c()["services"].items() if "image" in s}
    check(img["kafka"].startswith("apache/kafka:3.9."), img["kafka"])
    check(img["postgres"] == "postgres:15", img["postgres"])


def _default(value):
    """`${VAR:-default}` -> default; anything else as it is."""
    m = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", str(value))
    return m.group(2) if m else str(value)


def test_infrastructure_images_are_overridable():
    """Official images by default, each replaceable by a LOGPIPE_*_IMAGE
    variable (make test-compose's stand-ins where no registry answers);
    Grafana, which Debian does not package, in the profile `grafana`."""
    want = {"kafka": "LOGPIPE_KAFKA_IMAGE", "kafka-init": "LOGPIPE_KAFKA_IMAGE",
            "postgres": "LOGPIPE_POSTGRES_IMAGE", "redis": "LOGPIPE_REDIS_IMAGE",
            "prometheus": "LOGPIPE_PROMETHEUS_IMAGE", "grafana": "LOGPIPE_GRAFANA_IMAGE"}
    s = _c()["services"]
    problems = []
    for name, var in want.items():
        m = re.fullmatch(r"\$\{(\w+):-([^}]+)\}", str(s[name]["image"]))
        if not m or m.group(1) != var or "/" not in m.group(2) and ":" not in m.group(2):
            problems.append(f"{name}: image {s[name]['image']!r} is not ${{{var}:-official}}")
    fail_list(problems, "infrastructure images")
    check(s["grafana"].get("profiles") == ["grafana"], "grafana is not in the profile `grafana`")
    off = [n for n, svc in s.items() if svc.get("profiles") and n != "grafana"]
    fail_list(off, "services in a profile (only Grafana may be off by default)")
    check("KRaft" in COMPOSE.read_text() or "PROCESS_ROLES" in COMPOSE.read_text(), "KRaft")


def test_healthchecks_restart_policies_and_limits():
    problems = []
    for name, s in _c()["services"].items():
        if name in ONE_SHOTS:
            if str(s.get("restart")) != "no":
                problems.append(f"{name}: a one-shot must not restart (restart: \"no\")")
        else:
            if s.get("restart") not in ("unless-stopped", "always", "on-failure"):
                problems.append(f"{name}: restart policy {s.get('restart')!r}")
            test = s.get("healthcheck", {}).get("test")
            if not test:
                problems.append(f"{name}: no healthcheck")
        lim = s.get("deploy", {}).get("resources", {}).get("limits", {})
        if not (lim.get("cpus") and lim.get("memory")):
            problems.append(f"{name}: no cpu and memory limits")
    fail_list(problems, "compose service problems")


def test_logpipe_healthchecks_ask_readiness_on_their_own_port():
    s = _c()["services"]
    problems = []
    for name, (_, port) in SERVICES.items():
        test = " ".join(s[name]["healthcheck"]["test"])
        if f"127.0.0.1:{port}/health/ready" not in test:
            problems.append(f"{name}: healthcheck {test!r}")
        if _env(s[name]).get("LOGPIPE_HTTP_LISTEN") != str(port):
            problems.append(f"{name}: LOGPIPE_HTTP_LISTEN is not {port}")
        b = s[name].get("build", {})
        if b.get("args", {}).get("SERVICE") != name or b.get("target") != "runtime":
            problems.append(f"{name}: build must be target runtime with SERVICE={name}")
    fail_list(problems, "service health problems")


def test_depends_on_waits_for_health_or_completion():
    s = _c()["services"]
    problems = []
    for name, svc in s.items():
        deps = svc.get("depends_on", {})
        if isinstance(deps, list):
            problems.append(f"{name}: depends_on without conditions")
            continue
        for dep, cond in deps.items():
            c = cond.get("condition")
            if dep in ONE_SHOTS:
                if c != "service_completed_successfully":
                    problems.append(f"{name} -> {dep}: {c} (one-shots must complete)")
            elif c != "service_healthy":
                problems.append(f"{name} -> {dep}: {c}")
            elif "healthcheck" not in s[dep]:
                problems.append(f"{name} -> {dep}: {dep} has no healthcheck")
    # The pipeline's own ordering: schema before its users, topics before Kafka clients.
    for svc in ("metadata", "consumer"):
        if "migrate" not in s[svc].get("depends_on", {}):
            problems.append(f"{svc} must wait for migrate")
    for svc in ("producer", "metadata", "enricher", "consumer", "generator"):
        if "kafka-init" not in s[svc].get("depends_on", {}):
            problems.append(f"{svc} must wait for kafka-init")
    fail_list(problems, "depends_on problems")


def test_only_gateway_grafana_prometheus_are_published():
    s = _c()["services"]
    published = {n for n, svc in s.items() if svc.get("ports")}
    check(published == PUBLISHED, f"published: {sorted(published)}")
    nets = _c()["networks"]
    check(nets["backend"].get("internal") is True, "the backend network must be internal")
    for name in published:
        check("edge" in s[name]["networks"], f"{name} must be on the edge network")
    for name, svc in s.items():
        if name not in published:
            check("edge" not in svc.get("networks", []), f"{name} must not be on edge")


def test_state_lives_in_named_volumes():
    c = _c()
    declared = set(c.get("volumes", {}))
    problems = []
    for name, path in STATEFUL.items():
        vols = c["services"][name].get("volumes", [])
        named = [v for v in vols if re.fullmatch(rf"[\w-]+:{re.escape(path)}(:\w+)?", v)]
        if not named:
            problems.append(f"{name}: {path} is not on a named volume")
        for v in named:
            if v.split(":")[0] not in declared:
                problems.append(f"{name}: volume {v.split(':')[0]} not declared")
    for name, svc in c["services"].items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                if not (COMPOSE.parent / src).exists():
                    problems.append(f"{name}: bind source {src} does not exist")
                if not v.endswith(":ro"):
                    problems.append(f"{name}: bind mount {src} should be read-only")
    fail_list(problems, "volume problems")


def test_kafka_init_creates_spec_topics():
    cmd = " ".join(_c()["services"]["kafka-init"]["command"])
    specs = dict((n, (int(p), pol)) for n, p, pol in re.findall(r"([a-z-]+):(\d+):(\w+)", cmd))
    want = {n: (p, "compact" if c else "delete") for n, (p, c) in TOPICS.items()}
    check(specs == want, f"kafka-init topics {specs} != SPEC {want}")


def test_environment_is_made_of_real_settings():
    s = _c()["services"]
    problems = []
    for name in SERVICES:
        bad = unknown_env(name, _env(s[name]))
        if bad:
            problems.append(f"{name}: {bad} are not settings of logpipe-{name}")
    fail_list(problems, "unknown LOGPIPE_ variables")


def test_services_accept_their_compose_settings():
    s = _c()["services"]
    problems = []
    for name, (binary, _) in SERVICES.items():
        exe = BIN / binary
        if not exe.exists():
            raise Skip(f"{binary} not built")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
        env.update(_env(s[name]))
        r = subprocess.run([str(exe), "--check-config"], env=env, capture_output=True,
                           text=True, timeout=20)
        if r.returncode != 0:
            problems.append(f"{name}: --check-config exit {r.returncode}: {r.stderr.strip()[:300]}")
    fail_list(problems, "services refusing their compose settings")


def test_postgres_write_path_settings():
    """The settings measured for the write path (docs/storage.md, "PostgreSQL
    settings"), sized to the container's 1 GB; synchronous_commit is not
    turned off (the consumer commits offsets after COMMIT returns)."""
    pg = _c()["services"]["postgres"]
    cmd = pg.get("command") or []
    check(isinstance(cmd, list) and cmd[:1] == ["postgres"], f"postgres command {cmd!r}")
    got = dict(a.split("=", 1) for a in cmd[2::2]) if isinstance(cmd, list) else {}
    check(all(a == "-c" for a in cmd[1::2]), f"postgres command {cmd!r}: -c NAME=VALUE pairs")
    want = {"shared_buffers": "256MB", "wal_buffers": "16MB", "max_wal_size": "2GB",
            "checkpoint_timeout": "15min", "wal_compression": "lz4"}
    check(got == want, f"postgres settings {got}, want {want}")
    check(got.get("synchronous_commit", "on") == "on", "synchronous_commit must stay on")
