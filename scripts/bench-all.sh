#!/usr/bin/env bash
# bench-all.sh - runs the benchmarks under tests/bench one after another.
#   scripts/bench-all.sh            every benchmark
#   scripts/bench-all.sh gateway    only tests/bench/gateway_bench.*
# Each benchmark starts what it needs on free loopback ports and prints its
# figures; see docs/benchmarks.md for the recorded results.
set -u
cd "$(dirname "$0")/.."
status=0
for b in tests/bench/*_bench.*; do
	name=$(basename "$b")
	name=${name%%_bench.*}
	if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then
		continue
	fi
	echo "==================== bench: $name ===================="
	case $b in
	*.py) /usr/bin/python3 "$b" || status=1 ;;
	*) bash "$b" || status=1 ;;
	esac
done
exit $status
