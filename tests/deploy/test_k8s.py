"""deploy/k8s: what the rendered base, dev and prod overlays must hold
(kubectl kustomize renders them; schema validation of every object is
tests/deploy/k8s_validate.mjs, run by scripts/validate-deploy.sh)."""
import functools
import os
import re
import subprocess

from deploylib import BIN, DEPLOY, SERVICES, TOPICS, load_yaml_all, unknown_env
from harness import Skip, check, fail_list, need_tool

K8S = DEPLOY / "k8s"
OVERLAYS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev",
            "prod": K8S / "overlays" / "prod", "strimzi": K8S / "overlays" / "prod" / "strimzi"}
HPA = {"gateway", "producer", "enricher", "consumer"}
# A consumer group cannot use more members than its topics have partitions.
PARTITION_CAP = {"enricher": TOPICS["raw-logs"][0],
                 "consumer": TOPICS["enriched-logs-complete"][0] + TOPICS["enriched-logs-partial"][0]}


@functools.lru_cache(maxsize=None)
def render(which):
    """The overlay rendered: from DEPLOY_RENDERED/<which>.yaml when the
    validation script already rendered it, else with kubectl kustomize."""
    pre = os.environ.get("DEPLOY_RENDERED")
    if pre and os.path.exists(os.path.join(pre, f"{which}.yaml")):
        with open(os.path.join(pre, f"{which}.yaml"), encoding="utf-8") as f:
            return tuple(load_yaml_all(f.read()))
    need_tool("kubectl")  # it renders kustomize
    r = subprocess.run(["kubectl", "kustomize", str(OVERLAYS[which])], capture_output=True,
                       text=True, timeout=120)
    check(r.returncode == 0, f"kubectl kustomize {which}: {r.stderr}")
    return tuple(load_yaml_all(r.stdout))


def objs(which, kind=None):
    return [o for o in render(which) if kind is None or o["kind"] == kind]


def one(which, kind, name):
    found = [o for o in objs(which, kind) if o["metadata"]["name"] == name]
    check(found, f"{which}: no {kind}/{name}")
    return found[0]


# The kind each service runs as: the producer keeps its spool on a
# PersistentVolumeClaim per pod, so it is a StatefulSet.
WORKLOAD_KIND = {name: "StatefulSet" if name == "producer" else "Deployment" for name in SERVICES}
SPOOL_DIR = "/var/lib/logpipe/spool"
SPOOL_SEGMENT_DEFAULT = 64 << 20   # spool.segment_bytes' default


def _is_logpipe(o):
    return o["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "logpipe"


def _workload_list(which):
    """The Deployments and StatefulSets of the six services (the dev
    overlay's Kafka, PostgreSQL and Redis StatefulSets are not logpipe's)."""
    return [o for o in render(which) if o["kind"] in ("Deployment", "StatefulSet") and _is_logpipe(o)]


def _workloads(which):
    return {w["metadata"]["name"]: w for w in _workload_list(which)}


def _selects(selector, labels):
    """True when a matchLabels selector (or a Service's plain selector)
    picks pods with these labels."""
    sel = selector.get("matchLabels", selector) if selector else {}
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())


def _quantity(q):
    """Bytes of a Kubernetes quantity such as 2Gi, 1500M or 1073741824."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTE]i?|k)?", str(q))
    check(m, f"cannot read the quantity {q!r}")
    mult = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "E": 10**18,
            "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Ei": 1 << 60}[m.group(2)]
    return int(float(m.group(1)) * mult)


def test_every_overlay_renders():
    for which in OVERLAYS:
        check(render(which), f"{which} renders nothing")


def test_six_workloads_and_services():
    for which in ("base", "dev", "prod"):
        ws = _workload_list(which)
        kinds = sorted((w["metadata"]["name"], w["kind"]) for w in ws)
        check(kinds == sorted(WORKLOAD_KIND.items()),
              f"{which}: workloads {kinds}, want {sorted(WORKLOAD_KIND.items())}")
        for name, (_, port) in SERVICES.items():
            svc = one(which, "Service", name)
            check(svc["spec"].get("type", "ClusterIP") == "ClusterIP",
                  f"{which}: Service {name} must be ClusterIP (only the Ingress publishes)")
            check(svc["spec"]["ports"][0]["port"] == port, f"{which}: Service {name} port")


def test_probes_resources_and_security():
    problems = []
    for which in ("dev", "prod"):
        for name, d in _workloads(which).items():
            pod = d["spec"]["template"]["spec"]
            port = SERVICES[name][1]
            psc = pod.get("securityContext", {})
            if not psc.get("runAsNonRoot") or not psc.get("runAsUser"):
                problems.append(f"{which}/{name}: pod not runAsNonRoot with a uid")
            for c in pod.get("initContainers", []) + pod["containers"]:
                where = f"{which}/{name}/{c['name']}"
                sc = c.get("securityContext", {})
                if not sc.get("readOnlyRootFilesystem"):
                    problems.append(f"{where}: root filesystem not read-only")
                if sc.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{where}: privilege escalation allowed")
                if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                    problems.append(f"{where}: capabilities not dropped")
                res = c.get("resources", {})
                for k in ("requests", "limits"):
                    if not {"cpu", "memory"} <= set(res.get(k, {})):
                        problems.append(f"{where}: no cpu/memory {k}")
            c = pod["containers"][0]
            want = {"startupProbe": "/health/live", "livenessProbe": "/health/live",
                    "readinessProbe": "/health/ready"}
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe, path in want.items():
                g = c.get(probe, {}).get("httpGet", {})
                if g.get("path") != path:
                    problems.append(f"{which}/{name}: {probe} is not GET {path}")
                if ports.get(g.get("port"), g.get("port")) != port:
                    problems.append(f"{which}/{name}: {probe} not on port {port}")
            ann = d["spec"]["template"]["metadata"].get("annotations", {})
            if ann.get("prometheus.io/port") != str(port):
                problems.append(f"{which}/{name}: prometheus.io/port is not {port}")
    fail_list(problems, "pod problems")


def test_producer_spool_is_a_persistent_volume_of_a_statefulset():
    """Accepted events spooled while Kafka is down must outlive the pod
    (deletion, eviction, rescheduling, scale-in): the spool directory is a
    volumeClaimTemplates claim of the producer's StatefulSet, big enough
    for spool.max_bytes, never deleted with the pod or the StatefulSet."""
    problems = []
    for which in ("base", "dev", "prod"):
        sts = one(which, "StatefulSet", "producer")
        spec = sts["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        name = mounts.get(SPOOL_DIR)
        if name is None:
            problems.append(f"{which}: nothing is mounted at {SPOOL_DIR}")
            continue
        if any(v["name"] == name for v in pod.get("volumes", [])):
            problems.append(f"{which}: the spool {name!r} is a pod volume, not a claim template")
        claims = {c["metadata"]["name"]: c["spec"] for c in spec.get("volumeClaimTemplates", [])}
        claim = claims.get(name)
        if claim is None:
            problems.append(f"{which}: no volumeClaimTemplate {name!r} for the spool")
            continue
        if claim.get("accessModes") != ["ReadWriteOnce"]:
            problems.append(f"{which}: spool accessModes {claim.get('accessModes')}")
        if which == "base" and "storageClassName" in claim:
            problems.append("base: the spool names a StorageClass (leave it to the overlay)")
        env = _env_of(which, "producer")
        if env.get("LOGPIPE_SPOOL_DIR") != SPOOL_DIR:
            problems.append(f"{which}: LOGPIPE_SPOOL_DIR is {env.get('LOGPIPE_SPOOL_DIR')}")
        # The spool may use max_bytes plus a drained segment not yet deleted;
        # a tenth more covers the filesystem's metadata and root's reserve.
        size = _quantity(claim["resources"]["requests"]["storage"])
        need = int(env["LOGPIPE_SPOOL_MAX_BYTES"]) + int(env.get("LOGPIPE_SPOOL_SEGMENT_BYTES",
                                                                 SPOOL_SEGMENT_DEFAULT))
        if size < need * 1.1:
            problems.append(f"{which}: spool claim {size} bytes < 1.1 x {need} "
                            "(LOGPIPE_SPOOL_MAX_BYTES + one segment)")
        ret = spec.get("persistentVolumeClaimRetentionPolicy", {})
        for when in ("whenDeleted", "whenScaled"):
            if ret.get(when, "Retain") != "Retain":
                problems.append(f"{which}: {when} {ret[when]} would delete spooled events")
        psc = pod.get("securityContext", {})
        if psc.get("fsGroup") != psc.get("runAsGroup") or not psc.get("fsGroup"):
            problems.append(f"{which}: fsGroup {psc.get('fsGroup')} does not let uid "
                            f"{psc.get('runAsUser')} (group {psc.get('runAsGroup')}) write the claim")
        gov = [s for s in objs(which, "Service") if s["metadata"]["name"] == spec.get("serviceName")]
        if not gov or gov[0]["spec"].get("clusterIP") != "None" or \
                not _selects(gov[0]["spec"].get("selector"), labels):
            problems.append(f"{which}: serviceName {spec.get('serviceName')!r} is not a headless "
                            "Service selecting the producer's pods")
        svc = one(which, "Service", "producer")
        if svc["spec"].get("clusterIP") == "None" or not _selects(svc["spec"].get("selector"), labels):
            problems.append(f"{which}: Service producer must be a ClusterIP selecting the pods")
        upstream = _env_of(which, "gateway").get("LOGPIPE_UPSTREAM_PRODUCER", "")
        if not re.match(r"https?://producer:8081/?$", upstream):
            problems.append(f"{which}: the gateway's producer upstream is {upstream!r}, not "
                            "the ClusterIP Service producer")
    fail_list(problems, "spool problems")


def test_autoscaling_of_gateway_producer_enricher_consumer():
    for which in ("dev", "prod"):
        hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in objs(which, "HorizontalPodAutoscaler")}
        check(set(hpas) == HPA, f"{which}: HPAs for {sorted(hpas)}, want {sorted(HPA)}")
        for name, h in hpas.items():
            ref = h["spec"]["scaleTargetRef"]
            check((ref.get("apiVersion"), ref.get("kind")) == ("apps/v1", WORKLOAD_KIND[name]),
                  f"{which}/{name}: the HPA targets {ref.get('apiVersion')} {ref.get('kind')}, "
                  f"the service runs as a {WORKLOAD_KIND[name]}")
            s = h["spec"]
            check(1 <= s["minReplicas"] <= s["maxReplicas"], f"{which}/{name}: replicas range")
            if name in PARTITION_CAP:
                check(s["maxReplicas"] <= PARTITION_CAP[name],
                      f"{which}/{name}: maxReplicas {s['maxReplicas']} > partitions "
                      f"{PARTITION_CAP[name]} (idle consumers)")


def test_disruption_budgets():
    for which in ("dev", "prod"):
        pdbs = {p["metadata"]["name"]: p for p in objs(which, "PodDisruptionBudget")}
        check(set(SERVICES) <= set(pdbs), f"{which}: PDBs {sorted(pdbs)}")
        for name, w in _workloads(which).items():
            labels = w["spec"]["template"]["metadata"]["labels"]
            check(_selects(pdbs[name]["spec"].get("selector"), labels),
                  f"{which}: PDB {name} does not select the pods of {w['kind']} {name}")


def test_only_the_gateway_is_reachable_from_outside():
    for which in ("dev", "prod"):
        pols = objs(which, "NetworkPolicy")
        deny = [p for p in pols if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
        check(deny, f"{which}: no default-deny ingress policy")
        for p in pols:
            for rule in p["spec"].get("ingress", []):
                if rule.get("from"):
                    continue
                sel = p["spec"]["podSelector"].get("matchLabels", {})
                check(sel.get("app.kubernetes.io/component") == "gateway",
                      f"{which}: {p['metadata']['name']} opens {sel} to everyone")
        for s in objs(which, "Service"):
            check(s["spec"].get("type", "ClusterIP") in ("ClusterIP", "ExternalName"),
                  f"{which}: Service {s['metadata']['name']} is {s['spec'].get('type')}")
    for ing in objs("prod", "Ingress"):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                check(path["backend"]["service"]["name"] == "gateway",
                      "the Ingress may only lead to the gateway")


def test_dev_runs_its_infrastructure_prod_points_outside():
    dev = {s["metadata"]["name"] for s in objs("dev", "StatefulSet") if not _is_logpipe(s)}
    check(dev == {"kafka", "postgres", "redis"}, f"dev infrastructure StatefulSets {sorted(dev)}")
    prod = [s["metadata"]["name"] for s in objs("prod", "StatefulSet") if not _is_logpipe(s)]
    check(not prod, f"prod must not run infrastructure StatefulSets: {prod}")
    ext = {s["metadata"]["name"]: s["spec"] for s in objs("prod", "Service")
           if s["spec"].get("type") == "ExternalName"}
    check({"postgres", "redis"} <= set(ext), f"prod external services {sorted(ext)}")
    brokers = _env_of("prod", "producer")["LOGPIPE_KAFKA_BROKERS"]
    check("kafka-bootstrap" in brokers, f"prod brokers {brokers} are not Strimzi's bootstrap")
    kafka = one("strimzi", "Kafka", "logpipe")
    check(kafka["apiVersion"] == "kafka.strimzi.io/v1beta2", kafka["apiVersion"])
    check(kafka["spec"]["kafka"]["listeners"], "Strimzi Kafka without listeners")
    check(brokers.startswith(f"{kafka['metadata']['name']}-kafka-bootstrap.{kafka['metadata']['namespace']}"),
          f"{brokers} is not the bootstrap of Kafka {kafka['metadata']['name']}")
    pools = objs("strimzi", "KafkaNodePool")
    check(pools and all(p["metadata"]["labels"]["strimzi.io/cluster"] == "logpipe" for p in pools),
          "KafkaNodePool not tied to the cluster")


def test_topics_match_spec():
    st = {t["metadata"]["name"]: t["spec"] for t in objs("strimzi", "KafkaTopic")}
    problems = []
    for name, (parts, compact) in TOPICS.items():
        t = st.get(name)
        if not t:
            problems.append(f"strimzi: no KafkaTopic {name}")
            continue
        if t["partitions"] != parts:
            problems.append(f"strimzi: {name} has {t['partitions']} partitions, SPEC {parts}")
        if compact != (t.get("config", {}).get("cleanup.policy") == "compact"):
            problems.append(f"strimzi: {name} cleanup.policy")
    job = one("dev", "Job", "kafka-topics")
    args = " ".join(job["spec"]["template"]["spec"]["containers"][0]["args"])
    specs = dict((n, (int(p), pol)) for n, p, pol in re.findall(r"([a-z-]+):(\d+):(\w+)", args))
    want = {n: (p, "compact" if c else "delete") for n, (p, c) in TOPICS.items()}
    if specs != want:
        problems.append(f"dev topic job {specs} != SPEC {want}")
    fail_list(problems, "topic problems")


def _env_of(which, name):
    """The LOGPIPE_* environment a container gets from its ConfigMaps
    (plus the names of its Secret-sourced variables, valued '<secret>')."""
    cms = {c["metadata"]["name"]: c.get("data", {}) for c in objs(which, "ConfigMap")}
    c = _workloads(which)[name]["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for ref in c.get("envFrom", []):
        env.update(cms[ref["configMapRef"]["name"]])
    for e in c.get("env", []):
        env[e["name"]] = e.get("value", "<secret>")
    return env


def test_secrets_provide_every_referenced_key():
    problems = []
    dev_secrets = {s["metadata"]["name"]: set(s.get("data", {})) for s in objs("dev", "Secret")}
    example = {o["metadata"]["name"]: set(o.get("stringData", {}))
               for o in load_yaml_all(K8S / "overlays" / "prod" / "secret.example.yaml")}
    for which, secrets in (("dev", dev_secrets), ("prod", example)):
        for o in objs(which):
            pod = (o.get("spec", {}).get("template", {}) or {}).get("spec")
            if not pod:
                continue
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if not ref:
                        continue
                    base = re.sub(r"-[a-z0-9]{10}$", "", ref["name"])  # kustomize hash
                    have = secrets.get(ref["name"]) or secrets.get(base)
                    if have is None or ref["key"] not in have:
                        problems.append(f"{which}: {o['metadata']['name']}/{c['name']} needs "
                                        f"{ref['name']}.{ref['key']}")
    fail_list(problems, "secret keys missing")


def test_configmaps_hold_real_settings():
    problems = []
    for which in ("dev", "prod"):
        for name in SERVICES:
            env = _env_of(which, name)
            own = {k for k in env if k.startswith("LOGPIPE_")}
            common = set(one(which, "ConfigMap", _cm(which, "logpipe-common"))["data"])
            bad = unknown_env(name, own - common)
            if bad:
                problems.append(f"{which}/{name}: {bad}")
        common = set(one("dev", "ConfigMap", _cm("dev", "logpipe-common"))["data"])
        for k in common:
            users = [s for s in SERVICES if not unknown_env(s, {k})]
            if not users:
                problems.append(f"{which}: common {k} is a setting of no service")
    fail_list(problems, "unknown LOGPIPE_ variables")


def _cm(which, prefix):
    names = [c["metadata"]["name"] for c in objs(which, "ConfigMap")
             if re.sub(r"-[a-z0-9]{10}$", "", c["metadata"]["name"]) == prefix]
    check(names, f"{which}: no ConfigMap {prefix}")
    return names[0]


def test_services_accept_their_k8s_settings():
    problems = []
    for name, (binary, _) in SERVICES.items():
        exe = BIN / binary
        if not exe.exists():
            raise Skip(f"{binary} not built")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
        env.update({k: v for k, v in _env_of("prod", name).items() if v != "<secret>"})
        r = subprocess.run([str(exe), "--check-config"], env=env, capture_output=True,
                           text=True, timeout=20)
        if r.returncode != 0:
            problems.append(f"{name}: {r.stderr.strip()[:300]}")
    fail_list(problems, "services refusing their ConfigMap settings")


def test_prod_images_are_pinned():
    for name, d in _workloads("prod").items():
        pod = d["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            img = c["image"]
            check(re.search(r"/.+:[\w.-]+$", img) and not img.endswith(":latest"),
                  f"prod/{name}: image {img} has no registry and version tag")


def test_dev_postgres_write_path_settings():
    """The dev PostgreSQL runs with the settings measured for the write path
    (docs/storage.md, "PostgreSQL settings"), sized to its 1 Gi limit and
    5 Gi volume; synchronous_commit is not turned off."""
    sts = one("dev", "StatefulSet", "postgres")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    args = c.get("args") or []
    check(all(a == "-c" for a in args[0::2]), f"postgres args {args!r}: -c NAME=VALUE pairs")
    got = dict(a.split("=", 1) for a in args[1::2])
    want = {"shared_buffers": "256MB", "wal_buffers": "16MB", "max_wal_size": "2GB",
            "checkpoint_timeout": "15min", "wal_compression": "lz4"}
    check(got == want, f"postgres settings {got}, want {want}")
    check(_quantity(c["resources"]["limits"]["memory"]) >= 4 * 256 * 2**20,
          "shared_buffers is a quarter of the memory limit at most")
