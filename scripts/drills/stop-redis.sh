#!/bin/sh
# stop-redis.sh - seed 004's "stop redis" drill half; see drill.py and docs/operations.md#failure-drills.
exec /usr/bin/python3 "$(dirname "$0")/drill.py" redis --phase stop "$@"
