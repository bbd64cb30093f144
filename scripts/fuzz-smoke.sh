#!/usr/bin/env bash
# fuzz-smoke.sh - a short fuzz run of every target in fuzz/, for `make test`.
#
#   scripts/fuzz-smoke.sh [--no-build] [SECONDS]   fuzz each target SECONDS (default
#                                                  $FUZZ_SECONDS or 5)
#   scripts/fuzz-smoke.sh --replay BINARY...       run the replay builds
#                                                  (make fuzz-regress) once over the
#                                                  seed corpus and the regressions
#
# Fuzz mode builds the libFuzzer targets (make fuzz; clang, ASan, UBSan; without
# clang it falls back to make fuzz-regress), then
# for each target NAME:
#   1. replays every crash regression in tests/fuzz_regress/NAME (one test);
#   2. fuzzes for SECONDS from the seed corpus fuzz/corpus/NAME, with the
#      dictionary fuzz/NAME.dict if there is one (one test).  New inputs go to
#      build-fuzz/corpus/NAME, never into the repository; a crash leaves its
#      input in build-fuzz/crashes/ and its report in build-fuzz/logs/NAME.log.
# Each target's line gives executions, executions per second, coverage
# (libFuzzer's cov = edges, ft = features) and the corpus size.  The last line
# is "N passed, N failed" (", N skipped" when clang is missing and only the
# corpus could be replayed; with CI=true that is a failure instead); the
# exit status is non-zero if anything failed.
set -u
cd "$(dirname "$0")/.."

passed=0
failed=0
skipped=0
pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); }
finish() {
	if [ "$skipped" -gt 0 ]; then
		echo "$passed passed, $failed failed, $skipped skipped"
	else
		echo "$passed passed, $failed failed"
	fi
	[ "$failed" -eq 0 ]
	exit
}

# Known leaks of system libraries (fuzz/lsan.supp says which and why).
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/fuzz/lsan.supp:print_suppressions=0}

# ---- replay mode (no clang needed) -------------------------------------------
if [ "${1:-}" = "--replay" ]; then
	shift
	for bin in "$@"; do
		name=$(basename "$bin")
		args=()
		[ -d "fuzz/corpus/$name" ] && args+=("fuzz/corpus/$name")
		[ -d "tests/fuzz_regress/$name" ] && args+=("tests/fuzz_regress/$name")
		if out=$(timeout -k 5 300 "$bin" "${args[@]}" 2>&1); then
			echo "ok    $name: ${out##*: }"
			pass
		else
			echo "FAIL  $name"
			echo "$out" | tail -n 30
			fail
		fi
	done
	finish
fi

build=1
if [ "${1:-}" = "--no-build" ]; then
	build=0
	shift
fi
secs=${1:-${FUZZ_SECONDS:-5}}
out_dir=build-fuzz

if [ "$build" -eq 1 ]; then
	if ! command -v "${FUZZ_CC:-clang}" >/dev/null 2>&1; then
		# Without libFuzzer, at least replay the corpus and the regressions;
		# the fuzz runs themselves are then skipped, and said to be (a
		# failure in CI, whose machine installs clang: install-deps.sh).
		echo "fuzz-smoke: no ${FUZZ_CC:-clang}: replaying the corpus only (make fuzz-regress)"
		replay_log=$(mktemp)
		make --no-print-directory fuzz-regress | tee "$replay_log"
		rc=${PIPESTATUS[0]}
		last=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$replay_log" | tail -n 1)
		rm -f "$replay_log"
		passed=$(awk '{ print $1 }' <<<"$last")
		failed=$(awk '{ print $3 }' <<<"$last")
		passed=${passed:-0}
		failed=${failed:-0}
		[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && fail
		if [ "${CI:-}" = true ]; then
			echo "FAIL  fuzz runs: ${FUZZ_CC:-clang} is missing in CI"
			fail
		else
			echo "skip fuzz runs: ${FUZZ_CC:-clang} is not installed (only the corpus was replayed)"
			skipped=1
		fi
		finish
	fi
	mkdir -p "$out_dir"
	if ! make --no-print-directory -j"$(nproc)" fuzz >"$out_dir/make.log" 2>&1; then
		tail -n 40 "$out_dir/make.log"
		echo "fuzz-smoke: make fuzz failed"
		fail
		finish
	fi
fi

# libFuzzer's own reports are what we want; leaks count as failures.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$out_dir/logs" "$out_dir/crashes"

for src in fuzz/fuzz_*.c; do
	name=$(basename "$src" .c)
	bin=$out_dir/$name
	log=$out_dir/logs/$name.log
	if [ ! -x "$bin" ]; then
		echo "FAIL  $name: $bin is not built"
		fail
		continue
	fi

	# 1. Regressions: each file in tests/fuzz_regress/NAME once.
	regs=()
	if [ -d "tests/fuzz_regress/$name" ]; then
		while IFS= read -r f; do regs+=("$f"); done < <(find "tests/fuzz_regress/$name" -type f ! -name '*.md' | sort)
	fi
	if [ "${#regs[@]}" -gt 0 ]; then
		if timeout -k 5 120 "$bin" -timeout=10 "${regs[@]}" >"$log.regress" 2>&1; then
			echo "ok    $name: ${#regs[@]} crash regressions replayed"
			pass
		else
			echo "FAIL  $name: a crash regression fails again:"
			grep -E 'ERROR|SUMMARY|check failed|Running' "$log.regress" | tail -n 20
			fail
		fi
	fi

	# 2. A short fuzz run from the seed corpus.
	work=$out_dir/corpus/$name
	mkdir -p "$work"
	args=(-max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
		-artifact_prefix="$out_dir/crashes/$name-")
	[ -f "fuzz/$name.dict" ] && args+=(-dict="fuzz/$name.dict")
	seeds=()
	[ -d "fuzz/corpus/$name" ] && seeds+=("fuzz/corpus/$name")
	timeout -k 10 $((secs + 120)) "$bin" "${args[@]}" "$work" "${seeds[@]}" >"$log" 2>&1
	rc=$?
	execs=$(grep -oE 'stat::number_of_executed_units: +[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1)
	rate=$(grep -oE 'stat::average_exec_per_sec: +[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1)
	last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1)
	cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+')
	ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+')
	corp=$(grep -oE 'corp: [0-9]+' <<<"$last" | grep -oE '[0-9]+')
	summary="${execs:-?} execs (${rate:-?}/s), cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}"
	if [ "$rc" -eq 0 ]; then
		echo "ok    $name: $summary"
		pass
	else
		echo "FAIL  $name (exit $rc): $summary"
		grep -E '^==[0-9]+==ERROR|SUMMARY:|check failed|runtime error|Test unit written|ALARM' "$log" | head -n 8
		fail
	fi
done
finish
