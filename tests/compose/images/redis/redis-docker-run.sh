#!/bin/sh
# redis-docker-run.sh - `redis-server ARGS...` with protected mode off (as the
# official image); any other command runs as given.
set -eu
if [ "${1:-}" = redis-server ]; then
	shift
	exec redis-server --protected-mode no "$@"
fi
exec "$@"
