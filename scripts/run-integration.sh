#!/bin/sh
# run-integration.sh - the system tests: real Kafka, Redis, PostgreSQL and the
# logpipe binaries on free 127.0.0.1 ports (tests/integration/conftest.py).
# Extra arguments go to pytest (-k NAME, -x, -v ...); -rs lists every skipped
# test with its reason. pytest's summary is the
# last line. LOGPIPE_IT_TIMEOUT bounds the whole run (seconds, default 1800);
# at the limit pytest gets SIGTERM and still stops everything it started.
set -eu
cd "$(dirname "$0")/.."
# Debian's python3 with its apt packages (pytest, psycopg2, requests), not a
# pyenv or venv python3 that may be first on PATH.
# A file or test id among the arguments (tests/integration/test_x.py::t)
# replaces the default of the whole directory.
where=tests/integration
for a in "$@"; do
	case "$a" in tests/*) where= ;; esac
done
exec timeout -k 60 "${LOGPIPE_IT_TIMEOUT:-1800}" \
	/usr/bin/python3 -m pytest -q -rs -p no:cacheprovider $where "$@"
