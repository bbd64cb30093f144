#!/bin/sh
# restart-kafka.sh - seed 004's "restart kafka" drill half; see drill.py and docs/operations.md#failure-drills.
exec /usr/bin/python3 "$(dirname "$0")/drill.py" kafka --phase restart "$@"
