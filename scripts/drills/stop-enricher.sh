#!/bin/sh
# stop-enricher.sh - seed 004's "stop enricher" drill half; see drill.py and docs/operations.md#failure-drills.
exec /usr/bin/python3 "$(dirname "$0")/drill.py" enricher --phase stop "$@"
