"""deploylib.py - what the deploy tests share: the service table, the
Dockerfile's stages, YAML loading, the services' settings keys."""
import functools
import re
import shlex
import subprocess
from pathlib import Path

import yaml

from harness import REPO, Skip

DEPLOY = REPO / "deploy"
BIN = REPO / "build" / "bin"

# name -> (binary, port): SPEC.md's service table.
SERVICES = {
    "gateway": ("logpipe-gateway", 8080),
    "producer": ("logpipe-producer", 8081),
    "metadata": ("logpipe-metadata", 8082),
    "enricher": ("logpipe-enricher", 8083),
    "consumer": ("logpipe-consumer", 8084),
    "generator": ("logpipe-generator", 8085),
}

# SPEC.md's topics: name -> (partitions, compacted).
TOPICS = {
    "raw-logs": (6, False),
    "enriched-logs-complete": (6, False),
    "enriched-logs-partial": (6, False),
    "logs-dlq": (1, False),
    "metadata-changes": (1, True),
}


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_yaml_all(path_or_text):
    text = path_or_text
    if isinstance(path_or_text, Path):
        text = path_or_text.read_text(encoding="utf-8")
    return [d for d in yaml.safe_load_all(text) if d is not None]


# ---- the Dockerfile -------------------------------------------------------

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def dockerfile_instructions(path=DOCKERFILE):
    """[(INSTRUCTION, argument text)] with continuation lines joined and
    comments dropped."""
    out, cur = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not cur and (not line or line.startswith("#")):
            continue
        if cur and line.startswith("#"):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        word, _, rest = cur.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def dockerfile_stages(path=DOCKERFILE):
    """{stage name: [(INSTRUCTION, arg), ...]} in order."""
    stages, name = {}, None
    for ins, arg in dockerfile_instructions(path):
        if ins == "FROM":
            m = re.search(r"\bAS\s+(\S+)", arg, re.I)
            name = m.group(1) if m else f"stage{len(stages)}"
            stages[name] = [(ins, arg)]
        elif name is not None:
            stages[name].append((ins, arg))
    return stages


def apt_packages(stage):
    """Every package name an `apt-get install` of the stage installs."""
    pkgs = []
    for ins, arg in stage:
        if ins != "RUN":
            continue
        for cmd in re.split(r"&&|;|\|\|", arg):
            words = shlex.split(cmd)
            # skip leading VAR=value assignments
            while words and re.match(r"^[A-Z_]+=", words[0]):
                words.pop(0)
            if len(words) >= 2 and words[0] == "apt-get" and "install" in words:
                after = words[words.index("install") + 1:]
                pkgs += [w for w in after if not w.startswith("-")]
    return pkgs


# ---- the binaries ---------------------------------------------------------

def need_binaries():
    missing = [b for b, _ in SERVICES.values() if not (BIN / b).exists()]
    if missing:
        raise Skip(f"build/bin lacks {', '.join(missing)} (run `make` first)")
    return [BIN / b for b, _ in SERVICES.values()]


@functools.lru_cache(maxsize=None)
def env_keys(service):
    """The LOGPIPE_* variables `logpipe-SERVICE --help` lists."""
    binary = BIN / SERVICES[service][0]
    if not binary.exists():
        raise Skip(f"{binary.relative_to(REPO)} not built")
    r = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=10)
    keys = set(re.findall(r"\b(LOGPIPE_[A-Z0-9_]+)\b", r.stdout + r.stderr))
    keys.discard("LOGPIPE_CONFIG")
    if not keys:
        raise AssertionError(f"{binary.name} --help lists no LOGPIPE_ variables")
    return frozenset(keys | {"LOGPIPE_CONFIG"})


# Variables the images and manifests may set that are not settings keys.
NON_SETTING_ENV = {"LOGPIPE_SERVICE", "LOGPIPE_HEALTH_PORT", "LOGPIPE_CONFIG"}


def unknown_env(service, names):
    """The LOGPIPE_* names a service would ignore (typos, keys of another
    service); a key not yet built into the binary shows up here too."""
    known = env_keys(service) | NON_SETTING_ENV
    return sorted(n for n in names if n.startswith("LOGPIPE_") and n not in known)


# ---- metric names -----------------------------------------------------------

@functools.lru_cache(maxsize=1)
def registered_metrics():
    """{name: type} of every metric the C sources register (lp_counter,
    lp_gauge, lp_histogram, lp_metric_new), tests excluded."""
    found = {}
    pat1 = re.compile(r'\blp_(counter|gauge|histogram)\(\s*[^,()]+,\s*"([a-z_:][a-z0-9_:]*)"', re.S)
    pat2 = re.compile(r'\blp_metric_new\(\s*[^,]+,\s*LP_(COUNTER|GAUGE|HISTOGRAM)\s*,\s*'
                      r'"([a-z_:][a-z0-9_:]*)"', re.S)
    for f in REPO.glob("*/**/*.c"):
        rel = f.relative_to(REPO).parts
        if "tests" in rel or rel[0] in ("build", "build-san", ".cache", "tests"):
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        for m in pat1.finditer(text):
            found[m.group(2)] = m.group(1).lower()
        for m in pat2.finditer(text):
            found[m.group(2)] = m.group(1).lower()
    return found


def exposed_metric_names():
    """What a scrape can show: counters and gauges by name, histograms as
    _bucket/_sum/_count, plus Prometheus' own `up`."""
    names = {"up"}
    for name, kind in registered_metrics().items():
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            names.add(name)
    return names


PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "and", "or", "unless", "bool", "offset", "on",
    "ignoring", "group_left", "group_right", "inf", "nan",
}


def promql_metrics(expr):
    """The metric names an expression selects (a lexical reading that is
    enough for logpipe's expressions)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)     # strings
    e = re.sub(r"\{[^}]*\}", " ", e)                  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                 # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        word = m.group(0)
        after = e[m.end():].lstrip()
        if word.lower() in PROMQL_WORDS or after.startswith("("):
            continue
        names.add(word)
    return names


def promql_jobs(expr):
    return set(re.findall(r'job\s*=~?\s*"([^"]*)"', expr))
