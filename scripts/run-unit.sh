#!/usr/bin/env bash
# run-unit.sh - runs cmocka test binaries and totals their results.
#
# Usage: scripts/run-unit.sh BINARY...
# Shows each binary's output, then ends with one line "N passed, N failed",
# counted from cmocka's "[  PASSED  ] N test(s)." and "[  FAILED  ] N
# test(s)" lines.  A binary that crashes, times out or exits non-zero
# without reporting a failure counts as at least one failed test.  Exits
# non-zero if anything failed.  UNIT_TIMEOUT (seconds, default 120) bounds
# each binary.
set -u

timeout_s=${UNIT_TIMEOUT:-120}
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

for bin in "$@"; do
	echo "=== $bin"
	timeout --kill-after=5 "$timeout_s" "$bin" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	# cmocka writes its summary to stderr and the rest to stdout, so a
	# summary may share a line with other output: match anywhere.
	p=$(grep -oE '\[  PASSED  \] [0-9]+ test\(s\)' "$log" | grep -oE '[0-9]+' | tail -n 1)
	f=$(grep -oE '\[  FAILED  \] [0-9]+ test\(s\)' "$log" | grep -oE '[0-9]+' | tail -n 1)
	if [ -z "$p" ] && [ -z "$f" ]; then
		# No summary: it died on the way; count the tests it finished.
		p=$(grep -cF '[       OK ]' "$log")
	fi
	p=${p:-0}
	f=${f:-0}
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "*** $bin exited with status $rc"
		f=1
	fi
	passed=$((passed + p))
	failed=$((failed + f))
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
