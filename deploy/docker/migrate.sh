#!/bin/sh
# logpipe-migrate - apply deploy/migrations/NNN_*.sql in order, each once.
#
#   LOGPIPE_PG_DSN=postgresql://user:pass@host:5432/logpipe logpipe-migrate
#
# The one-shot schema job of the compose file (service `migrate`) and of the
# Kubernetes pods of metadata and consumer (init container).  It does what
# deploy/local/infra.py's apply_migrations() does for `make run`:
# schema_migrations(version, name, applied_at) lists what is applied; a file
# whose version is not there runs (each file is one transaction and normally
# records itself), and is recorded afterwards if it did not.
#
# Everything runs in one psql session holding a PostgreSQL advisory lock, so
# that two runners started together (two pods' init containers) apply each
# migration once: the second waits, then finds them recorded.  psql stops at
# the first error (ON_ERROR_STOP) and the exit status says so.
#
# Environment:
#   LOGPIPE_PG_DSN           connection string (libpq URI or key=value);
#                            unset: the PG* variables
#   LOGPIPE_MIGRATIONS_DIR   where NNN_name.sql are (default: the image's)
#   LOGPIPE_MIGRATE_WAIT_S   how long to wait for the server (default 60)
set -eu

dir=${LOGPIPE_MIGRATIONS_DIR:-/usr/share/logpipe/migrations}
dsn=${LOGPIPE_PG_DSN:-}
wait_s=${LOGPIPE_MIGRATE_WAIT_S:-60}
lock_id=7262711       # any constant; the same in every runner

say() { printf 'logpipe-migrate: %s\n' "$*" >&2; }

# The server may still be starting (compose waits for its healthcheck, a pod
# does not): retry the connection until wait_s.
deadline=$(( $(date +%s) + wait_s ))
until psql -X -q -d "$dsn" -c 'SELECT 1' >/dev/null 2>&1; do
	if [ "$(date +%s)" -ge "$deadline" ]; then
		say "database not reachable after ${wait_s}s"
		psql -X -q -d "$dsn" -c 'SELECT 1' >/dev/null   # shows libpq's error
		exit 1
	fi
	sleep 1
done

script=$(mktemp)
trap 'rm -f "$script"' EXIT
{
	echo '\set ON_ERROR_STOP on'
	echo "SELECT pg_advisory_lock($lock_id);"
	n=0
	for f in "$dir"/[0-9][0-9][0-9]_*.sql; do
		[ -e "$f" ] || continue
		base=$(basename "$f" .sql)
		version=${base%%_*}
		name=${base#*_}
		n=$((n + 1))
		cat <<SQL
SELECT to_regclass('public.schema_migrations') IS NOT NULL AS have_table \gset
\if :have_table
SELECT NOT EXISTS (SELECT 1 FROM schema_migrations WHERE version = '$version') AS need \gset
\else
\set need true
\endif
\if :need
\warn 'applying $base'
\i '$f'
CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
INSERT INTO schema_migrations (version, name) VALUES ('$version', '$name') ON CONFLICT (version) DO NOTHING;
\else
\warn 'already applied $base'
\endif
SQL
	done
	echo "SELECT pg_advisory_unlock($lock_id);"
	[ "$n" -gt 0 ] || { say "no migrations in $dir"; exit 1; }
} > "$script"

PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-5} psql -X -q -v ON_ERROR_STOP=1 -d "$dsn" -f "$script" >/dev/null
psql -X -q -At -d "$dsn" -c "SELECT 'schema at ' || max(version) || ' (' || count(*) || ' migrations)' FROM schema_migrations" >&2
