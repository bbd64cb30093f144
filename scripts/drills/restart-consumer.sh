#!/bin/sh
# restart-consumer.sh - seed 004's "restart consumer" drill half; see drill.py and docs/operations.md#failure-drills.
exec /usr/bin/python3 "$(dirname "$0")/drill.py" consumer --phase restart "$@"
