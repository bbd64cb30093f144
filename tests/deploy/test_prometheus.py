"""Prometheus: scrape configs cover every service, the alert rules select
real metrics and jobs, each alert has a runbook in docs/operations.md and
a promtool unit test.  (promtool check config/rules and test rules run from
scripts/validate-deploy.sh.)"""
import re

from deploylib import (DEPLOY, REPO, SERVICES, exposed_metric_names, load_yaml,
                       promql_jobs, promql_metrics)
from harness import Skip, check, fail_list

PROM = DEPLOY / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
# The brief's alerts, by what they watch -> the alert that does it.
REQUIRED = {
    "a circuit breaker open for over a minute": "LogpipeCircuitBreakerOpen",
    "consumer lag over the degraded threshold": "LogpipeConsumerLagHigh",
    "dead-letter topic growing": "LogpipeDeadLettersGrowing",
    "5xx rate": "LogpipeHigh5xxRate",
    "producer spool not empty": "LogpipeProducerSpoolNotEmpty",
    "a service down": "LogpipeServiceDown",
}


def _rules():
    out = []
    for f in RULE_FILES:
        for g in load_yaml(f)["groups"]:
            out += [r for r in g["rules"] if "alert" in r]
    return out


def test_compose_scrape_config_has_one_job_per_service():
    cfg = load_yaml(PROM / "prometheus.yml")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    problems = []
    for name, (_, port) in SERVICES.items():
        j = jobs.get(name)
        if not j:
            problems.append(f"no job {name}")
            continue
        sd = j.get("dns_sd_configs", []) + j.get("static_configs", [])
        text = str(sd)
        if str(port) not in text or name not in text:
            problems.append(f"job {name} does not scrape {name}:{port}: {sd}")
    check(cfg.get("rule_files"), "prometheus.yml loads no rule files")
    fail_list(problems, "scrape problems")


def test_k8s_scrape_config_names_jobs_like_compose():
    cfg = load_yaml(PROM / "prometheus-k8s.yml")
    text = str(cfg)
    check("app_kubernetes_io_component" in text and "'target_label': 'job'" in text,
          "prometheus-k8s.yml must set job from the pod's app.kubernetes.io/component")
    check("prometheus_io_scrape" in text, "prometheus-k8s.yml must honour prometheus.io/scrape")


def test_required_alerts_exist():
    names = {r["alert"] for r in _rules()}
    fail_list([f"{what}: {a}" for what, a in REQUIRED.items() if a not in names],
              "required alerts missing")


def test_alerts_select_registered_metrics_and_known_jobs():
    known = exposed_metric_names()
    jobs = set(SERVICES)
    problems = []
    for r in _rules():
        for m in promql_metrics(r["expr"]):
            if m not in known:
                problems.append(f"{r['alert']}: metric {m} is registered by no service")
        for j in promql_jobs(r["expr"]):
            for alt in re.split(r"\|", j):
                if alt not in jobs:
                    problems.append(f"{r['alert']}: job {alt!r} is not a service")
    fail_list(problems, "alert expressions selecting nothing")


def test_alerts_have_severity_summary_and_runbook():
    problems = []
    for r in _rules():
        a = r["alert"]
        if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{a}: severity label")
        ann = r.get("annotations", {})
        for k in ("summary", "description", "runbook_url"):
            if not ann.get(k):
                problems.append(f"{a}: no {k}")
        if not re.fullmatch(r"docs/operations\.md#[a-z0-9-]+", ann.get("runbook_url", "")):
            problems.append(f"{a}: runbook_url must be docs/operations.md#anchor")
    fail_list(problems, "alert annotation problems")


def _slugs(markdown):
    """GitHub's heading anchors (plus explicit <a id=...> / {#id})."""
    slugs = set(re.findall(r'<a (?:id|name)="([^"]+)"', markdown))
    slugs |= set(re.findall(r"\{#([a-z0-9-]+)\}", markdown))
    for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, re.M):
        s = re.sub(r"\{#[^}]*\}", "", h).strip().lower()
        s = re.sub(r"[^\w\- ]", "", s).replace(" ", "-")
        slugs.add(s)
    return slugs


def test_runbook_anchors_exist_in_operations_doc():
    ops = REPO / "docs" / "operations.md"
    anchors = sorted({r["annotations"]["runbook_url"].split("#", 1)[1] for r in _rules()})
    if not ops.exists():
        raise Skip("docs/operations.md not written yet; it needs the anchors " + ", ".join(anchors))
    slugs = _slugs(ops.read_text(encoding="utf-8"))
    fail_list([f"#{a}" for a in anchors if a not in slugs],
              "runbook anchors missing from docs/operations.md")


def test_every_alert_has_a_unit_test():
    tests = (PROM / "tests" / "alerts_test.yml").read_text()
    fail_list([r["alert"] for r in _rules() if f"alertname: {r['alert']}" not in tests],
              "alerts without a promtool test")
