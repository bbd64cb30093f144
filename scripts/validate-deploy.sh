#!/bin/sh
# validate-deploy.sh - offline validation of everything under deploy/ and of
# docs/openapi.yaml: no Docker engine and no cluster needed.
#
#   scripts/validate-deploy.sh            # install what is missing, run every check
#   scripts/validate-deploy.sh -v         # also print the output of passing checks
#
# Tools, installed once and then only looked up (idempotent, quick when
# present):
#   Debian   docker-compose (v1: parses and validates a compose file without
#            an engine), prometheus (promtool), yamllint, python3-yaml, curl
#   npm      tests/deploy/package.json's pinned packages (kubernetes-models,
#            @redocly/cli, yaml) into .cache/deploy-tools, reinstalled only
#            when package-lock.json changes
#   kubectl  renders kustomize (`kubectl kustomize`); it is part of this
#            machine's image, not of Debian's archive (whose kubernetes-client
#            1.20 embeds a kustomize too old for these files): without it the
#            Kubernetes checks are skipped, loudly (with CI=true they
#            fail: CI's machine has kubectl).
#
# Checks: yamllint; docker-compose config; kustomize render of base, dev,
# prod and prod/strimzi; schema validation of every rendered object;
# promtool check config / check rules / test rules; Grafana JSON; Redocly
# lint of the OpenAPI spec; then tests/deploy/test_*.py (structure and
# policy of all of the above, the runtime libraries of the image, the spec
# against the gateway's route table, the migration runner against a real
# PostgreSQL, the image's HEALTHCHECK against a real gateway).  The last
# line is "deploy: N passed, N failed[, N skipped]"; the exit status is 1
# when anything failed.
set -u

cd "$(dirname "$0")/.."
REPO=$(pwd)
VERBOSE=0
[ "${1:-}" = "-v" ] && VERBOSE=1

TOOLS=$REPO/.cache/deploy-tools
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
WORK=$(mktemp -d "${TMPDIR:-/tmp}/logpipe-deploy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

passed=0 failed=0 skipped=0
say() { printf 'validate-deploy: %s\n' "$*" >&2; }

# check NAME COMMAND... - runs COMMAND, counts and reports it.
check() {
	name=$1
	shift
	log=$WORK/check.log
	if "$@" >"$log" 2>&1; then
		passed=$((passed + 1))
		printf 'ok   %s\n' "$name"
		[ "$VERBOSE" = 1 ] && sed 's/^/    /' "$log"
	else
		failed=$((failed + 1))
		printf 'FAIL %s\n' "$name"
		grep -v '║\|╔\|╚' "$log" | tail -40 | sed 's/^/    /'
	fi
	return 0
}

skip() {
	skipped=$((skipped + 1))
	printf 'skip %s: %s\n' "$1" "$2"
}

# ---- tools ----------------------------------------------------------------

install_debian() {
	missing=""
	for p in "$@"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q ' installed$' ||
			missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	say "installing Debian packages:$missing"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
			--no-install-recommends $missing >/dev/null
}

install_npm() {
	lock=$REPO/tests/deploy/package-lock.json
	want=$(cat "$REPO/tests/deploy/package.json" "$lock" | sha256sum | cut -d' ' -f1)
	[ -f "$TOOLS/.installed" ] && [ "$(cat "$TOOLS/.installed")" = "$want" ] && return 0
	command -v npm >/dev/null 2>&1 || { say "npm not found"; return 1; }
	say "installing npm tools into .cache/deploy-tools (once)"
	mkdir -p "$TOOLS"
	cp "$REPO/tests/deploy/package.json" "$lock" "$TOOLS/"
	(cd "$TOOLS" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || return 1
	echo "$want" >"$TOOLS/.installed"
}

install_debian docker-compose prometheus yamllint python3-yaml curl ||
	say "could not install every Debian package; the checks that need one will fail"
install_npm || say "could not install the npm tools; their checks will fail"
REDOCLY=$TOOLS/node_modules/.bin/redocly
export DEPLOY_TOOLS=$TOOLS

# ---- checks -----------------------------------------------------------------

YAML_FILES="deploy/compose deploy/k8s deploy/prometheus deploy/grafana docs/openapi.yaml"
# shellcheck disable=SC2086
check "yamllint (compose, k8s, prometheus, grafana, openapi)" \
	yamllint -s -c tests/deploy/yamllint.yml $YAML_FILES

check "docker-compose config (deploy/compose/compose.yaml)" \
	docker-compose --project-directory deploy/compose -f deploy/compose/compose.yaml config -q

# Kubernetes: render each kustomization once; the tests read the renders.
RENDERED=$WORK/rendered
mkdir -p "$RENDERED"
if command -v kubectl >/dev/null 2>&1; then
	for o in base dev prod strimzi; do
		case $o in
		base) dir=deploy/k8s/base ;;
		dev | prod) dir=deploy/k8s/overlays/$o ;;
		strimzi) dir=deploy/k8s/overlays/prod/strimzi ;;
		esac
		check "kustomize render $dir" sh -c "kubectl kustomize '$dir' > '$RENDERED/$o.yaml'"
	done
	export DEPLOY_RENDERED=$RENDERED
	check "kubernetes schemas of every rendered object (kubernetes-models)" \
		node tests/deploy/k8s_validate.mjs "$RENDERED"/base.yaml "$RENDERED"/dev.yaml \
		"$RENDERED"/prod.yaml "$RENDERED"/strimzi.yaml deploy/k8s/overlays/prod/secret.example.yaml
elif [ "${CI:-}" = true ]; then
	# CI's machine has kubectl: its absence there is a broken setup.
	check "kustomize render and schema validation (kubectl is not installed)" false
else
	skip "kustomize render and schema validation" "kubectl is not installed on this machine"
fi

check "promtool check config (compose)" promtool check config deploy/prometheus/prometheus.yml

# Debian builds Prometheus without the Kubernetes service discovery, so its
# promtool cannot parse kubernetes_sd_configs: when it says so, the block is
# swapped for a static one and the rest (relabelling, rules) checked.
check_k8s_prom() {
	if promtool check config deploy/prometheus/prometheus-k8s.yml >"$WORK/pk.log" 2>&1; then
		cat "$WORK/pk.log"
		return 0
	fi
	grep -q 'field kubernetes_sd_configs not found' "$WORK/pk.log" || { cat "$WORK/pk.log"; return 1; }
	echo "(this promtool lacks kubernetes_sd_configs: checked with a static target instead)"
	mkdir -p "$WORK/pk/rules"
	cp deploy/prometheus/rules/*.yml "$WORK/pk/rules/"
	"$PY" - deploy/prometheus/prometheus-k8s.yml "$WORK/pk/prometheus.yml" <<'EOF'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
for job in cfg["scrape_configs"]:
    if job.pop("kubernetes_sd_configs", None) is not None:
        job["static_configs"] = [{"targets": ["pod.example:8080"]}]
yaml.safe_dump(cfg, open(sys.argv[2], "w"))
EOF
	promtool check config "$WORK/pk/prometheus.yml"
}
check "promtool check config (kubernetes)" check_k8s_prom

check "promtool check rules" promtool check rules deploy/prometheus/rules/*.yml
check "promtool test rules" promtool test rules deploy/prometheus/tests/alerts_test.yml

check "grafana dashboards are JSON" sh -c \
	"for f in deploy/grafana/dashboards/*.json; do $PY -m json.tool \"\$f\" >/dev/null || exit 1; done"

check "redocly lint docs/openapi.yaml" \
	"$REDOCLY" lint --config tests/deploy/redocly.yaml docs/openapi.yaml

# The Python suite: its own lines, then its counts join ours.
"$PY" tests/deploy/harness.py >"$WORK/py.log" 2>&1
py_rc=$?
grep -v '^deploy-tests:' "$WORK/py.log"
line=$(grep '^deploy-tests:' "$WORK/py.log" | tail -1)
if [ -n "$line" ]; then
	set -- $(echo "$line" | sed 's/[^0-9 ]//g')
	passed=$((passed + $1))
	failed=$((failed + $2))
	skipped=$((skipped + $3))
else
	failed=$((failed + 1))
	echo "FAIL tests/deploy (the harness did not finish, exit $py_rc)"
fi
[ "$py_rc" -ne 0 ] && [ -n "$line" ] && [ "$2" -eq 0 ] && failed=$((failed + 1))

if [ "$skipped" -gt 0 ]; then
	echo "deploy: $passed passed, $failed failed, $skipped skipped"
else
	echo "deploy: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
