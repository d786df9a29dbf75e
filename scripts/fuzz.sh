#!/usr/bin/env bash
# Builds the GGUF reader fuzz target with libFuzzer + ASan + UBSan and runs it.
#   scripts/fuzz.sh SECONDS [extra libFuzzer flags...]
# Builds in build-fuzz/, seeds build-fuzz/corpus from tests/data/gguf_broken and
# tests/fuzz/seeds, and exits non-zero on any crash, leak, timeout or sanitizer report
# (the reproducer is left in build-fuzz/artifacts/).
set -euo pipefail

secs=${1:?usage: scripts/fuzz.sh SECONDS [libFuzzer flags...]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/build-fuzz
cxx=${CXX_FUZZ:-clang++}
mkdir -p "$out/obj" "$out/corpus" "$out/artifacts"

# Compile each source only when it (or any header) changed: the fuzz test runs often.
flags=(-std=c++20 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=all -I"$root/src")
srcs=("$root"/src/core/*.cpp "$root"/src/gguf/*.cpp "$root"/tests/fuzz/fuzz_gguf.cpp)
newest_header=$(ls -t "$root"/src/core/*.h "$root"/src/gguf/*.h | head -1)
objs=()
for src in "${srcs[@]}"; do
  obj=$out/obj/$(basename "$(dirname "$src")")_$(basename "${src%.cpp}").o
  if [[ ! -f $obj || $src -nt $obj || $newest_header -nt $obj || $0 -nt $obj ]]; then
    echo "fuzz.sh: compiling ${src#$root/}"
    "$cxx" "${flags[@]}" -c "$src" -o "$obj"
  fi
  objs+=("$obj")
done
"$cxx" "${flags[@]}" "${objs[@]}" -lfmt -o "$out/fuzz_gguf"

cp -f "$root"/tests/data/gguf_broken/*.gguf "$root"/tests/fuzz/seeds/*.gguf "$out/corpus/"

log=$out/fuzz.log
set +e
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  "$out/fuzz_gguf" "$out/corpus" -max_total_time="$secs" -max_len=16384 -timeout=20 \
  -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 \
  -artifact_prefix="$out/artifacts/" "$@" 2>&1 | tee "$log" | grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|ERROR|SUMMARY|Done"
rc=${PIPESTATUS[0]}
set -e
runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" || true)
echo "fuzz.sh: exit $rc, ${runs:-?} executions in ${secs}s, corpus $(ls "$out/corpus" | wc -l) files"
if [[ $rc -ne 0 ]] || grep -qE "ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:" "$log"; then
  echo "fuzz.sh: FAILED, see $log and $out/artifacts/" >&2
  exit 1
fi
