"""Grafana: the provisioned dashboards parse, are what dashboards.py
generates, use the provisioned datasource, cover the five areas, and query
only metrics the services register, in valid PromQL (promtool)."""
import json
import subprocess
import tempfile
from pathlib import Path

import yaml

from deploylib import DEPLOY, SERVICES, exposed_metric_names, load_yaml, promql_jobs, promql_metrics
from harness import Skip, check, fail_list, need_tool

GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
AREAS = {"ingest": "logpipe-ingest", "gateway and rate limiting": "logpipe-gateway",
         "enrichment": "logpipe-enrichment", "storage": "logpipe-storage",
         "kafka lag": "logpipe-kafka-lag"}


def _dash():
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in DASHBOARDS}


def _targets(d):
    for p in d["panels"]:
        for t in p.get("targets", []):
            yield p, t


def test_dashboards_are_generated_and_current():
    r = subprocess.run(["python3", str(GRAFANA / "dashboards.py"), "--check"],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, r.stdout + r.stderr)


def test_five_areas_with_unique_uids():
    dash = _dash()
    uids = [d["uid"] for d in dash.values()]
    check(len(uids) == len(set(uids)), f"duplicate uids: {uids}")
    fail_list([f"{area}: no dashboard {uid}" for area, uid in AREAS.items() if uid not in uids],
              "areas without a dashboard")


def test_panels_use_the_provisioned_datasource():
    ds = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    uids = {d["uid"] for d in ds}
    problems = []
    for name, d in _dash().items():
        ids = [p["id"] for p in d["panels"]]
        if len(ids) != len(set(ids)):
            problems.append(f"{name}: duplicate panel ids")
        for p in d["panels"]:
            g = p["gridPos"]
            if g["x"] + g["w"] > 24:
                problems.append(f"{name}: panel {p['title']!r} is wider than the grid")
            if p["type"] != "row" and p.get("datasource", {}).get("uid") not in uids:
                problems.append(f"{name}: panel {p['title']!r} uses an unprovisioned datasource")
            if p["type"] != "row" and not p.get("targets"):
                problems.append(f"{name}: panel {p['title']!r} has no query")
    fail_list(problems, "dashboard problems")


def test_queries_select_registered_metrics_and_known_jobs():
    known = exposed_metric_names()
    problems = []
    for name, d in _dash().items():
        for p, t in _targets(d):
            for m in promql_metrics(t["expr"]):
                if m not in known:
                    problems.append(f"{name} / {p['title']}: {m} is registered by no service")
            for j in promql_jobs(t["expr"]):
                bad = [a for a in j.split("|") if a not in SERVICES]
                if bad:
                    problems.append(f"{name} / {p['title']}: unknown job {bad}")
    fail_list(problems, "queries selecting nothing")


def test_queries_are_valid_promql():
    promtool = need_tool("promtool")
    rules = []
    for name, d in _dash().items():
        for i, (p, t) in enumerate(_targets(d)):
            expr = t["expr"].replace("$__rate_interval", "1m").replace("$__interval", "1m")
            rules.append({"record": f"dashboard:{Path(name).stem.replace('-', '_')}:{i}",
                          "expr": expr})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, f)
    r = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True,
                       timeout=60)
    Path(f.name).unlink()
    check(r.returncode == 0, r.stdout + r.stderr)


def test_provisioning_points_at_the_mounted_dashboards():
    prov = load_yaml(GRAFANA / "provisioning" / "dashboards" / "logpipe.yml")
    path = prov["providers"][0]["options"]["path"]
    compose = load_yaml(DEPLOY / "compose" / "compose.yaml")
    mounts = compose["services"]["grafana"]["volumes"]
    check(any(m.startswith("../grafana/dashboards:" + path) for m in mounts),
          f"compose does not mount the dashboards at {path}: {mounts}")
