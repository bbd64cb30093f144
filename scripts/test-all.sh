#!/usr/bin/env bash
# test-all.sh - what `make test` runs after the build: every suite in turn,
# then one total line "N passed, N failed, N skipped" that CI reads.
#
# Suites: unit tests (optimised build), the same unit tests under ASan +
# UBSan, the integration suite against real Kafka, Redis and PostgreSQL
# (driving the sanitizer-built binaries, so a memory error in a service
# fails the run; every test, the outage and kill -9 drills, the default
# chaos run and the dashboard in Chromium included, as two pytest-xdist
# workers: scripts/run-integration.sh), the deployment validation and the
# fuzz smoke run.
# Each suite prints its own summary; a suite that prints none counts as
# one failure.  Skips are counted, not hidden: every suite names why each
# test skipped (pytest -rs, run-unit.sh, validate-deploy.sh), and the list
# is repeated before the total.  With CI=true (.ci/run, whose machine
# installs every tool) a skip for a missing tool (kubectl, clang, chromium,
# redis-server, psql, ...) is a failure in the suite that met it.  Set LOGPIPE_SUITES to a space-separated subset to run less.
# The deployment validation and the fuzz run need none of the services and
# little CPU beside the integration suite, which mostly waits on brokers
# and timers: when it runs, they run beside it and report after it.
set -u
cd "$(dirname "$0")/.."

suites=${LOGPIPE_SUITES:-"unit unit-san integration deploy fuzz"}
total_p=0
total_f=0
total_s=0
tmp=$(mktemp -d)
out=$tmp/out
trap 'rm -rf "$tmp"' EXIT

# ASan reports make the process fail; leaks are reported at exit.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:exitcode=99}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:exitcode=98}

# Adds the "N passed" / "N failed" / "N skipped" counts of the last summary
# line in $out (or in the file given third), and keeps the suite's skip
# reasons ("SKIPPED ..." lines of pytest -rs and run-unit.sh, "skip ..."
# lines of validate-deploy.sh).
tally() {
	local name=$1 rc=$2 out=${3:-$out} line p f s
	line=$(grep -E '([0-9]+ passed|[0-9]+ failed|[0-9]+ skipped)' "$out" | tail -n 1)
	p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || true)
	f=$(grep -oE '[0-9]+ (failed|error|errors)' <<<"$line" | awk '{ n += $1 } END { print n + 0 }')
	s=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+' || true)
	p=${p:-0}
	f=${f:-0}
	s=${s:-0}
	grep -E '^(SKIPPED|skip) ' "$out" | sed "s/^/  $name: /" >>"$tmp/skips"
	if [ -z "$line" ] || { [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; }; then
		f=$((f + 1))
		echo "test-all: suite $name exited $rc without a failure count" >&2
	fi
	printf 'test-all: %-12s %d passed, %d failed, %d skipped\n' "$name" "$p" "$f" "$s"
	total_p=$((total_p + p))
	total_f=$((total_f + f))
	total_s=$((total_s + s))
}

# Each suite's wall time, in seconds, is printed with its tally and again
# at the end ("test-all: time ..."), so a CI log shows which stage grew.
run_suite() {
	local name=$1 t0=$SECONDS
	shift
	echo "==================== suite: $name ===================="
	"$@" 2>&1 | tee "$out"
	tally "$name" "${PIPESTATUS[0]}"
	stage_time "$name" $((SECONDS - t0))
}

stage_time() {
	printf 'test-all: time %-12s %4ds (load average %s)\n' "$1" "$2" \
		"$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)" | tee -a "$tmp/times"
}

beside=""
case " $suites " in
*" integration "*)
	for s in deploy fuzz; do
		case " $suites " in *" $s "*) beside="$beside $s" ;; esac
	done ;;
esac

suite_cmd() {
	case $1 in
	deploy) echo scripts/validate-deploy.sh ;;
	fuzz) echo scripts/fuzz-smoke.sh ;;
	esac
}

start_beside() {
	local s
	for s in $beside; do
		( t0=$SECONDS; $(suite_cmd "$s") >"$tmp/$s.out" 2>&1
		  echo $? >"$tmp/$s.rc"; echo $((SECONDS - t0)) >"$tmp/$s.time" ) &
	done
}

for s in $suites; do
	case " $beside " in *" $s "*) continue ;; esac
	case $s in
	unit)
		run_suite unit make --no-print-directory unit ;;
	unit-san)
		run_suite unit-san make --no-print-directory SANITIZER=address,undefined unit ;;
	integration)
		t0=$SECONDS
		if make --no-print-directory SANITIZER=address,undefined all >/dev/null; then
			stage_time build-san $((SECONDS - t0))
			start_beside
			run_suite integration env LOGPIPE_BIN_DIR="$PWD/build-san/bin" \
				scripts/run-integration.sh
		else
			echo "test-all: the sanitizer build failed" >&2
			total_f=$((total_f + 1))
			start_beside
		fi ;;
	deploy|fuzz)
		run_suite "$s" $(suite_cmd "$s") ;;
	*)
		echo "test-all: unknown suite $s" >&2
		total_f=$((total_f + 1)) ;;
	esac
done

wait
for s in $beside; do
	echo "==================== suite: $s (ran beside integration) ===================="
	cat "$tmp/$s.out"
	tally "$s" "$(cat "$tmp/$s.rc" 2>/dev/null || echo 1)" "$tmp/$s.out"
	stage_time "$s (beside)" "$(cat "$tmp/$s.time" 2>/dev/null || echo 0)"
done

echo "test-all: stage times:"
cat "$tmp/times"
stage_time total "$SECONDS"

if [ -s "$tmp/skips" ]; then
	echo "test-all: skipped, and why:"
	cat "$tmp/skips"
fi
echo "$total_p passed, $total_f failed, $total_s skipped"
[ "$total_f" -eq 0 ]
