#!/bin/sh
# resume-generator.sh - seed 004's resume-producer drill half; see drill.py and docs/operations.md#failure-drills.
exec /usr/bin/python3 "$(dirname "$0")/drill.py" generator --phase restart "$@"
