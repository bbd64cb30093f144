#!/bin/sh
# run.sh - the dashboard's browser test: installs what it needs, then runs it.
#
#   tests/browser/run.sh --install-only
#       make node/npm, Chromium and playwright-core ready; exit 0 when they
#       are, 77 when they cannot be installed here (not root, no apt, no
#       registry).
#   tests/browser/run.sh --url http://127.0.0.1:8080 [--screenshot FILE]
#                        [--api-key KEY] [--timeout-s N]
#       the same, then dashboard.test.js against a running gateway (see its
#       header for what is checked).
#
# Chromium is Debian's (/usr/bin/chromium, apt package chromium), never a
# browser downloaded by a test tool; playwright-core comes from the npm
# registry at the version pinned in package.json and package-lock.json,
# installed into tests/browser/node_modules (ignored by git) with the
# machine's npm, npm's cache in .cache/npm (ignored too).  The last line is always "N passed, N failed".
set -u
cd "$(dirname "$0")"

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
# npm's download cache beside the Kafka jars, in the repository's ignored
# .cache, not in the user's home.
npm_config_cache=${npm_config_cache:-$(cd ../.. && pwd)/.cache/npm}
export npm_config_cache
export CHROMIUM

say() { echo "browser-test: $*" >&2; }

# Ends the run when a prerequisite is missing: 77 tells callers to skip.
missing() {
	say "$*"
	echo "0 passed, 1 failed"
	exit 77
}

apt_install() {
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		return 1
	fi
	say "installing $* with apt-get"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/tmp/logpipe-browser-apt.log 2>&1 ||
		{ apt-get update -q >>/tmp/logpipe-browser-apt.log 2>&1 &&
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>/tmp/logpipe-browser-apt.log 2>&1; }
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	apt_install nodejs npm || missing "node and npm are not installed and cannot be (see /tmp/logpipe-browser-apt.log)"
fi
if [ ! -x "$CHROMIUM" ]; then
	apt_install chromium || true
	[ -x "$CHROMIUM" ] || missing "$CHROMIUM is missing and apt-get install chromium failed (see /tmp/logpipe-browser-apt.log)"
fi

# playwright-core at the locked version, installed once.
want=$(sed -n 's/.*"playwright-core": *"\([0-9.]*\)".*/\1/p' package.json | head -n 1)
have=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' node_modules/playwright-core/package.json 2>/dev/null | head -n 1)
if [ "$have" != "$want" ]; then
	say "npm ci (playwright-core $want)"
	npm ci --no-audit --no-fund --loglevel=error >/tmp/logpipe-browser-npm.log 2>&1 ||
		npm install --no-audit --no-fund --loglevel=error >>/tmp/logpipe-browser-npm.log 2>&1 ||
		missing "npm could not install playwright-core $want (see /tmp/logpipe-browser-npm.log)"
fi

if [ "${1:-}" = "--install-only" ]; then
	say "ready: $(node --version), $("$CHROMIUM" --version 2>/dev/null), playwright-core $want"
	exit 0
fi
exec node dashboard.test.js "$@"
