#!/bin/sh
# restart-redis.sh - seed 004's "restart redis" drill half; see drill.py and docs/operations.md#failure-drills.
exec /usr/bin/python3 "$(dirname "$0")/drill.py" redis --phase restart "$@"
