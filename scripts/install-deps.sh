#!/bin/sh
# install-deps.sh - install what building, testing and `make run` need.
#
# Idempotent and fast when everything is already there: each Debian package is
# checked with dpkg-query first, and apt-get (with its `update`) runs only when
# something is missing. Then the Kafka broker jars are fetched from Maven
# Central into .cache/kafka/libs once; a marker file records a complete fetch,
# and playwright-core (the browser test's driver) from the npm registry.
set -eu

cd "$(dirname "$0")/.."

PKGS="build-essential pkg-config librdkafka-dev libhiredis-dev libpq-dev
libcivetweb-dev libjansson-dev libconfig-dev libcmocka-dev libcurl4-openssl-dev
libssl-dev uuid-dev libprotobuf-c-dev protobuf-c-compiler zlib1g-dev clang libclang-rt-14-dev postgresql redis-server default-jre-headless maven
python3-pytest python3-pytest-xdist python3-psycopg2 python3-requests curl procps chromium nodejs
wrk kcat bsdutils"

say() { printf 'install-deps: %s\n' "$*" >&2; }

# One dpkg-query for all packages: "name" for each one fully installed.
# shellcheck disable=SC2086
have=$(dpkg-query -W -f='${Package} ${Status}\n' $PKGS 2>/dev/null |
	awk '$2 == "install" && $4 == "installed" { print $1 }')
installed() { printf '%s\n' "$have" | grep -qx "$1"; }

missing=""
for p in $PKGS; do
	installed "$p" && continue
	# A JRE from another package (openjdk-17-jre-headless, a JDK) is enough.
	if [ "$p" = default-jre-headless ] && command -v java >/dev/null 2>&1; then
		continue
	fi
	# Any node with its npm (nodesource's package bundles npm) will do;
	# Debian's nodejs needs its separate npm package.
	if [ "$p" = nodejs ]; then
		command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && continue
		missing="$missing nodejs npm"
		continue
	fi
	missing="$missing $p"
done

if [ -n "$missing" ]; then
	say "installing:$missing"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq
	# shellcheck disable=SC2086
	$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# playwright-core for the dashboard's browser test (tests/browser), at the
# version its package-lock.json pins, from the npm registry into the ignored
# tests/browser/node_modules, npm's cache in the ignored .cache/npm.  The
# browser itself is Debian's chromium above.
tests/browser/run.sh --install-only >/dev/null ||
	say "the browser test's prerequisites are missing (tests/browser/run.sh --install-only)"

# The official OpenTelemetry JS SDK for the OTLP test (tests/otlp, driven
# by node from tests/integration/test_otlp.py), at the versions its
# package-lock.json pins, into the ignored tests/otlp/node_modules.
if command -v npm >/dev/null 2>&1 && [ ! -d tests/otlp/node_modules/@opentelemetry/sdk-logs ]; then
	say "npm ci in tests/otlp (OpenTelemetry JS SDK)"
	(cd tests/otlp && npm_config_cache="$PWD/../../.cache/npm" \
		npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
		say "the OpenTelemetry JS SDK could not be installed; test_otlp's SDK tests will skip"
fi

# Kafka 3.9.1 (KRaft, single node) for the local runner and integration tests.
KAFKA_LIBS=.cache/kafka/libs
MARKER=.cache/kafka/.fetched-3.9.1
if [ ! -f "$MARKER" ]; then
	say "fetching Kafka broker jars into $KAFKA_LIBS (about 40 s)"
	mkdir -p "$KAFKA_LIBS"
	mvn -q -B -f deploy/local/pom.xml dependency:copy-dependencies \
		-DoutputDirectory="$PWD/$KAFKA_LIBS" -DincludeScope=runtime
	ls "$KAFKA_LIBS"/kafka_2.13-*.jar >/dev/null 2>&1 || {
		say "kafka jars missing after mvn"; exit 1; }
	touch "$MARKER"
fi
