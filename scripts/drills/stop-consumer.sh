#!/bin/sh
# stop-consumer.sh - seed 004's "stop consumer" drill half; see drill.py and docs/operations.md#failure-drills.
exec /usr/bin/python3 "$(dirname "$0")/drill.py" consumer --phase stop "$@"
