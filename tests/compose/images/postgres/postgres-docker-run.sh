#!/bin/sh
# postgres-docker-run.sh - initialise PGDATA on the first start (the official
# image's POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB), then run the server
# on every address.  The first start's temporary server listens on a private
# socket only, so pg_isready (the healthcheck) sees nothing until the real one.
set -eu
# As the official image: `postgres ARGS` (the compose file's command) or bare
# options run the server with ARGS; any other command runs as given.
if [ "${1:-}" = postgres ]; then
	shift
elif [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
	exec "$@"
fi
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	pw=$(mktemp)
	printf '%s\n' "$POSTGRES_PASSWORD" > "$pw"
	initdb -D "$PGDATA" -U "$user" --pwfile="$pw" -E UTF8 --locale=C.UTF-8 \
		--auth-local=trust --auth-host=scram-sha-256 >/dev/null
	rm -f "$pw"
	echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
	sock=$(mktemp -d)
	pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -k $sock" start >/dev/null
	if [ "$db" != postgres ]; then
		psql -X -q -v ON_ERROR_STOP=1 -h "$sock" -U "$user" -d postgres \
			-c "CREATE DATABASE \"$db\" OWNER \"$user\""
	fi
	pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
	rmdir "$sock"
	echo "postgres: initialised $PGDATA (database $db, user $user)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
