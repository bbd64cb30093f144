#!/usr/bin/env bash
# fuzz-coverage.sh - line coverage of the code each fuzz target exercises,
# measured by replaying its corpus (the seeds in fuzz/corpus/NAME plus what
# fuzzing added in build-fuzz/corpus/NAME) through a clang build with
# source-based coverage (-fprofile-instr-generate -fcoverage-mapping).
#
#   scripts/fuzz-coverage.sh [NAME...]     (default: every fuzz/fuzz_*.c)
#
# Prints, per target, the line and function coverage of the source files it
# is about (the "code under test" column of docs/fuzzing.md).  Run
# `make fuzz-run FUZZ_SECONDS=N` first to grow the corpus.  Needs clang,
# llvm-profdata and llvm-cov.
set -eu
cd "$(dirname "$0")/.."
out=build-fuzz/cov
mkdir -p "$out/obj"
CC=${FUZZ_CC:-clang}
flags=(-std=c11 -D_GNU_SOURCE -O0 -g -fprofile-instr-generate -fcoverage-mapping -pthread
	-I/usr/include/postgresql -Icommon/include -w)
libs=(-lcivetweb -lrdkafka -lhiredis -lpq -ljansson -lconfig -lcurl -luuid -lm -ldl)

# The files each target is about, and the service sources it links.
declare -A about=(
	[fuzz_event]="common/src/event.c common/src/time.c common/src/uuid.c"
	[fuzz_event_scan]="common/src/event_scan.c"
	[fuzz_store_fast]="common/src/event_scan.c consumer/store.c"
	[fuzz_batch]="common/src/batch.c common/src/event.c"
	[fuzz_config]="common/src/config.c"
	[fuzz_rfc3339]="common/src/time.c"
	[fuzz_query]="consumer/query.c"
	[fuzz_cursor]="consumer/query.c"
	[fuzz_apikeys]="gateway/auth.c"
	[fuzz_genparams]="generator/params.c"
	[fuzz_metadata]="metadata-svc/record.c"
	[fuzz_spool]="producer/spool.c"
)
declare -A extra=(
	[fuzz_query]="consumer/query.c consumer/store.c"
	[fuzz_cursor]="consumer/query.c consumer/store.c"
	[fuzz_store_fast]="consumer/store.c"
	[fuzz_apikeys]="gateway/auth.c gateway/sha256.c"
	[fuzz_genparams]="generator/params.c"
	[fuzz_metadata]="metadata-svc/record.c"
	[fuzz_spool]="producer/spool.c"
)

obj() { # compiles $1 once into $out/obj
	local o=$out/obj/${1//\//_}.o
	if [ ! -f "$o" ] || [ "$1" -nt "$o" ]; then
		"$CC" "${flags[@]}" -c "$1" -o "$o"
	fi
	echo "$o"
}

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
	for f in fuzz/fuzz_*.c; do names+=("$(basename "$f" .c)"); done
fi
common=()
for f in common/src/*.c; do common+=("$(obj "$f")"); done
replay=$(obj fuzz/replay.c)

printf '%-16s %-28s %8s %10s\n' target file lines functions
for n in "${names[@]}"; do
	objs=("$(obj "fuzz/$n.c")" "$replay")
	for f in ${extra[$n]:-}; do objs+=("$(obj "$f")"); done
	"$CC" -fprofile-instr-generate -pthread -o "$out/$n" "${objs[@]}" "${common[@]}" "${libs[@]}"
	dirs=()
	for d in "fuzz/corpus/$n" "build-fuzz/corpus/$n" "tests/fuzz_regress/$n"; do
		[ -d "$d" ] && dirs+=("$d")
	done
	rm -f "$out/$n".*.profraw
	LLVM_PROFILE_FILE="$out/$n.%p.profraw" "$out/$n" "${dirs[@]}" >/dev/null 2>&1 || true
	llvm-profdata merge -sparse "$out/$n".*.profraw -o "$out/$n.profdata"
	for f in ${about[$n]:-}; do
		line=$(llvm-cov report "$out/$n" -instr-profile="$out/$n.profdata" "$f" 2>/dev/null |
			grep -E "^(/.*/)?$f|^TOTAL" | head -n 1)
		# Columns: regions missed cover functions missed executed lines missed cover ...
		read -r _ _ _ _ fn fnmiss fncov ln lnmiss lncov _ <<<"$line"
		printf '%-16s %-28s %8s %10s\n' "$n" "$f" "$lncov" "$fncov"
	done
done
