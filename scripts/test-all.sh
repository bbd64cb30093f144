#!/usr/bin/env bash
# test-all.sh - what `make test` runs after the build: every suite in turn,
# then one total line "N passed, N failed" that CI reads.
#
# Suites: unit tests (optimised build), the same unit tests under ASan +
# UBSan, the integration suite against real Kafka, Redis and PostgreSQL
# (driving the sanitizer-built binaries, so a memory error in a service
# fails the run; its core tier includes the default chaos run and the
# dashboard in Chromium), the deployment validation and the fuzz smoke run.
# Each suite prints its own summary; a suite that prints none counts as
# one failure.  Set LOGPIPE_SUITES to a space-separated subset to run less.
set -u
cd "$(dirname "$0")/.."

suites=${LOGPIPE_SUITES:-"unit unit-san integration deploy fuzz"}
total_p=0
total_f=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# ASan reports make the process fail; leaks are reported at exit.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:exitcode=99}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:exitcode=98}

# Adds the "N passed" / "N failed" counts of the last summary line in $out.
tally() {
	local name=$1 rc=$2 line p f
	line=$(grep -E '([0-9]+ passed|[0-9]+ failed)' "$out" | tail -n 1)
	p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || true)
	f=$(grep -oE '[0-9]+ (failed|error|errors)' <<<"$line" | awk '{ n += $1 } END { print n + 0 }')
	p=${p:-0}
	f=${f:-0}
	if [ -z "$line" ] || { [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; }; then
		f=$((f + 1))
		echo "test-all: suite $name exited $rc without a failure count" >&2
	fi
	printf 'test-all: %-12s %d passed, %d failed\n' "$name" "$p" "$f"
	total_p=$((total_p + p))
	total_f=$((total_f + f))
}

run_suite() {
	local name=$1
	shift
	echo "==================== suite: $name ===================="
	"$@" 2>&1 | tee "$out"
	tally "$name" "${PIPESTATUS[0]}"
}

for s in $suites; do
	case $s in
	unit)
		run_suite unit make --no-print-directory unit ;;
	unit-san)
		run_suite unit-san make --no-print-directory SANITIZER=address,undefined unit ;;
	integration)
		make --no-print-directory SANITIZER=address,undefined all >/dev/null &&
			run_suite integration env LOGPIPE_BIN_DIR="$PWD/build-san/bin" \
				scripts/run-integration.sh ;;
	deploy)
		[ -x scripts/validate-deploy.sh ] && run_suite deploy scripts/validate-deploy.sh ;;
	fuzz)
		[ -x scripts/fuzz-smoke.sh ] && run_suite fuzz scripts/fuzz-smoke.sh ;;
	*)
		echo "test-all: unknown suite $s" >&2
		total_f=$((total_f + 1)) ;;
	esac
done

echo "$total_p passed, $total_f failed"
[ "$total_f" -eq 0 ]
