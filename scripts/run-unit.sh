#!/usr/bin/env bash
# run-unit.sh - runs cmocka test binaries and totals their results.
#
# Usage: scripts/run-unit.sh BINARY...
# Runs the binaries UNIT_JOBS at a time (default 4: most of their time is
# spent waiting on sockets and timers, not on the CPU), then shows each
# binary's output in the order given and ends with one line "N passed, N
# failed, N skipped", counted from cmocka's "[  PASSED  ] N test(s).",
# "[  FAILED  ] N test(s)" and "[  SKIPPED ] N test(s)" lines; each skipped
# test is listed before it with the reason the test printed.  A binary that
# crashes, times out or exits non-zero without reporting a failure counts as
# at least one failed test.  The unit tests skip only when a tool they need
# is missing (redis-server): with CI=true, whose machine installs every tool
# (scripts/install-deps.sh), a skip counts as a failure.  Exits non-zero if
# anything failed.  UNIT_TIMEOUT (seconds, default 120) bounds each binary.
# Each binary's "=== BINARY (N s)" line gives its wall time.
set -u

timeout_s=${UNIT_TIMEOUT:-120}
jobs=${UNIT_JOBS:-4}
passed=0
failed=0
skipped=0
reasons=""
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# The binaries that take longest, longest first (test_kafka about 35 s, the
# next two about 20 s, most of it timers): they start first, so that none of
# them starts last and ends alone after the others.  Only the order of the
# starts depends on this list; every binary given runs, and is reported in
# the order given.
longest="common/tests/test_kafka producer/tests/test_submit enricher/tests/test_pipeline
	gateway/tests/test_front generator/tests/test_run"
order=()
for l in $longest; do
	i=0
	for bin in "$@"; do
		i=$((i + 1))
		case "$bin" in *"/$l") order+=("$i") ;; esac
	done
done
i=0
for bin in "$@"; do
	i=$((i + 1))
	case " ${order[*]} " in *" $i "*) ;; *) order+=("$i") ;; esac
done

# One log, one exit status and one wall time per binary, named by its
# position among the arguments.
for i in "${order[@]}"; do
	bin=${!i}
	while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
		wait -n
	done
	( t0=$SECONDS
	  timeout --kill-after=5 "$timeout_s" "$bin" >"$dir/$i.log" 2>&1
	  echo $? >"$dir/$i.rc"; echo $((SECONDS - t0)) >"$dir/$i.time" ) &
done
wait

i=0
for bin in "$@"; do
	i=$((i + 1))
	log=$dir/$i.log
	echo "=== $bin ($(cat "$dir/$i.time" 2>/dev/null || echo ?) s)"
	cat "$log"
	rc=$(cat "$dir/$i.rc" 2>/dev/null || echo 1)
	# cmocka writes its summary to stderr and the rest to stdout, so a
	# summary may share a line with other output: match anywhere.
	p=$(grep -oE '\[  PASSED  \] [0-9]+ test\(s\)' "$log" | grep -oE '[0-9]+' | tail -n 1)
	f=$(grep -oE '\[  FAILED  \] [0-9]+ test\(s\)' "$log" | grep -oE '[0-9]+' | tail -n 1)
	s=$(grep -oE '\[  SKIPPED \] [0-9]+ test\(s\)' "$log" | grep -oE '[0-9]+' | tail -n 1)
	s=${s:-0}
	if [ "$s" -gt 0 ]; then
		# The line a skipped test printed just before "[  SKIPPED ] name"
		# says why (cmocka's skip() takes no reason).
		why=$(awk '/^\[ RUN      \]/ { last = "" ; next }
			/^\[  SKIPPED \] [^0-9]/ { if (!seen[$0]++) printf "%s: %s\n", $4, (last == "" ? "no reason printed" : last); next }
			{ last = $0 }' "$log")
		reasons="$reasons$(printf '%s\n' "$why" | sed "s|^|SKIPPED $bin: |")
"
		if [ "${CI:-}" = true ]; then
			echo "*** $bin skipped $s test(s), a failure in CI (every tool is installed there)"
			f=$((${f:-0} + s))
			s=0
		fi
	fi
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
	skipped=$((skipped + s))
done

printf '%s' "$reasons"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
