#!/usr/bin/env bash
# run-unit.sh - runs cmocka test binaries and totals their results.
#
# Usage: scripts/run-unit.sh BINARY...
# Runs the binaries UNIT_JOBS at a time (default 4: most of their time is
# spent waiting on sockets and timers, not on the CPU), then shows each
# binary's output in the order given and ends with one line "N passed, N
# failed", counted from cmocka's "[  PASSED  ] N test(s)." and "[  FAILED  ]
# N test(s)" lines.  A binary that crashes, times out or exits non-zero
# without reporting a failure counts as at least one failed test.  Exits
# non-zero if anything failed.  UNIT_TIMEOUT (seconds, default 120) bounds
# each binary.
set -u

timeout_s=${UNIT_TIMEOUT:-120}
jobs=${UNIT_JOBS:-4}
passed=0
failed=0
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# One log and one exit status per binary, named by its position.
i=0
for bin in "$@"; do
	i=$((i + 1))
	while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
		wait -n
	done
	( timeout --kill-after=5 "$timeout_s" "$bin" >"$dir/$i.log" 2>&1
	  echo $? >"$dir/$i.rc" ) &
done
wait

i=0
for bin in "$@"; do
	i=$((i + 1))
	log=$dir/$i.log
	echo "=== $bin"
	cat "$log"
	rc=$(cat "$dir/$i.rc" 2>/dev/null || echo 1)
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
