#!/bin/sh
# stop-postgres.sh - seed 004's "stop postgres" drill half; see drill.py and docs/operations.md#failure-drills.
exec /usr/bin/python3 "$(dirname "$0")/drill.py" postgres --phase stop "$@"
