#!/bin/sh
# run-all.sh - every failure drill in turn against the system `make run` started
# (or the ones named: run-all.sh kafka consumer), each a full cycle (baseline,
# outage, recovery, nothing lost).  Extra options after "--" go to drill.py
# (--rate, --down-s, --gateway, --control).  Ends with "N passed, N failed"
# counted in drills.
cd "$(dirname "$0")" || exit 2
names=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do names="$names $1"; shift; done
[ "${1:-}" = "--" ] && shift
[ -n "$names" ] || names="generator enricher consumer postgres redis kafka"
passed=0
failed=0
failed_names=""
for n in $names; do
	echo "==================== drill: $n ===================="
	if /usr/bin/python3 ./drill.py "$n" "$@"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failed_names="$failed_names $n"
	fi
	echo
done
[ -n "$failed_names" ] && echo "failed drills:$failed_names"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
