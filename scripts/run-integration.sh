#!/bin/sh
# run-integration.sh - the system tests: real Kafka, Redis, PostgreSQL and the
# logpipe binaries on free 127.0.0.1 ports (tests/integration/conftest.py).
# Extra arguments go to pytest (-k NAME, -x, -v ...); -rs lists every skipped
# test with its reason. pytest's summary is the
# last line. LOGPIPE_IT_TIMEOUT bounds the whole run (seconds, default 1800);
# at the limit pytest gets SIGTERM and still stops everything it started.
# The slowest LOGPIPE_IT_DURATIONS (default 40) tests and fixtures are listed
# before the summary, so a CI log shows where the time went (0: all, and
# --durations=N among the arguments overrides it).
#
# The whole suite runs as LOGPIPE_IT_WORKERS (default 2) pytest-xdist workers,
# a file at a time (--dist loadfile): each worker starts its own Kafka, Redis
# and PostgreSQL, and the tests mostly wait on brokers and timers, so two
# share two cores well.  A file or test id among the arguments runs in one
# process (no workers) unless LOGPIPE_IT_WORKERS is set.
set -eu
cd "$(dirname "$0")/.."
# Debian's python3 with its apt packages (pytest, pytest-xdist, psycopg2,
# requests), not a pyenv or venv python3 that may be first on PATH.
# A file or test id among the arguments (tests/integration/test_x.py::t)
# replaces the default of the whole directory.
where=tests/integration
workers=${LOGPIPE_IT_WORKERS:-2}
for a in "$@"; do
	case "$a" in tests/*) where= ; workers=${LOGPIPE_IT_WORKERS:-1} ;; esac
done
dist=""
if [ "$workers" -gt 1 ]; then
	if /usr/bin/python3 -c 'import xdist' 2>/dev/null; then
		dist="-n $workers --dist loadfile"
	else
		echo "run-integration: pytest-xdist missing (make deps): one process" >&2
	fi
fi
# shellcheck disable=SC2086
exec timeout -k 60 "${LOGPIPE_IT_TIMEOUT:-1800}" \
	/usr/bin/python3 -m pytest -q -rs -p no:cacheprovider \
	--durations="${LOGPIPE_IT_DURATIONS:-40}" $dist $where "$@"
