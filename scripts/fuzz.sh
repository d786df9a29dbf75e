#!/usr/bin/env bash
# Builds one libFuzzer target (with ASan + UBSan) and runs it.
#   scripts/fuzz.sh TARGET SECONDS [extra libFuzzer flags...]
# TARGET: gguf (the GGUF reader and writer), api (the HTTP API request parsers and the chat
# template), dsml (the streaming parser of generated tool calls), session (the session-file loader
# of the disk KV cache). Builds in build-fuzz/TARGET/,
# seeds its corpus (gguf: tests/data/gguf_broken and tests/fuzz/seeds; api / dsml:
# tests/fuzz/TARGET_seeds, with the dictionary tests/fuzz/TARGET.dict; session:
# tests/fuzz/session_seeds, written by tests/fuzz/make_session_seeds.py), and exits non-zero on any
# crash, leak, timeout, out-of-memory or sanitizer report (the reproducer is left in
# build-fuzz/TARGET/artifacts/; replay it with build-fuzz/TARGET/fuzz_TARGET FILE).
set -euo pipefail

target=${1:?usage: scripts/fuzz.sh gguf|api|dsml|session SECONDS [libFuzzer flags...]}
secs=${2:?usage: scripts/fuzz.sh gguf|api|dsml|session SECONDS [libFuzzer flags...]}
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/build-fuzz/$target
cxx=${CXX_FUZZ:-clang++}
fz=$root/tests/fuzz
case $target in
  gguf)
    srcs=("$root"/src/core/*.cpp "$root"/src/gguf/*.cpp)
    libs=(-lfmt)
    seeds=("$root"/tests/data/gguf_broken/*.gguf "$fz"/seeds/*.gguf)
    opts=(-max_len=16384)
    ;;
  api)
    srcs=("$root"/src/core/*.cpp "$root"/src/gguf/*.cpp "$root"/src/text/*.cpp
          "$root"/src/sample/*.cpp "$root"/src/server/api_parse.cpp)
    libs=(-lfmt -lpcre2-8 -lutf8proc)
    seeds=("$fz"/api_seeds/*)
    opts=(-max_len=8192 -dict="$fz/api.dict")
    ;;
  dsml)
    srcs=("$root"/src/core/*.cpp "$root"/src/gguf/*.cpp "$root"/src/text/*.cpp)
    libs=(-lfmt -lpcre2-8 -lutf8proc)
    seeds=("$fz"/dsml_seeds/*)
    opts=(-max_len=4096 -dict="$fz/dsml.dict")
    ;;
  session)
    srcs=("$root"/src/core/*.cpp "$root"/src/gguf/*.cpp "$root"/src/model/config.cpp
          "$root"/src/model/state_extent.cpp "$root"/src/state/session_file.cpp)
    libs=(-lfmt)
    seeds=("$fz"/session_seeds/*)
    opts=(-max_len=16384)
    ;;
  *)
    echo "fuzz.sh: unknown target '$target' (gguf, api, dsml, session)" >&2
    exit 2
    ;;
esac
srcs+=("$fz/fuzz_$target.cpp")
obj_dir=$root/build-fuzz/obj  # shared by the targets (same flags)
mkdir -p "$obj_dir" "$out/corpus" "$out/artifacts"

# Compile each source only when it (or any header) changed: the fuzz tests run often.
flags=(-std=c++20 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=all -I"$root/src")
newest_header=$(ls -t "$root"/src/*/*.h | head -1)
objs=()
for src in "${srcs[@]}"; do
  obj=$obj_dir/$(basename "$(dirname "$src")")_$(basename "${src%.cpp}").o
  if [[ ! -f $obj || $src -nt $obj || $newest_header -nt $obj || $0 -nt $obj ]]; then
    echo "fuzz.sh: compiling ${src#"$root"/}"
    "$cxx" "${flags[@]}" -c "$src" -o "$obj"
  fi
  objs+=("$obj")
done
"$cxx" "${flags[@]}" "${objs[@]}" "${libs[@]}" -o "$out/fuzz_$target"

cp -f "${seeds[@]}" "$out/corpus/"

log=$out/fuzz.log
set +e
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  "$out/fuzz_$target" "$out/corpus" -max_total_time="$secs" "${opts[@]}" -timeout=20 \
  -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 \
  -artifact_prefix="$out/artifacts/" "$@" 2>&1 | tee "$log" |
  grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|ERROR|SUMMARY|Done"
rc=${PIPESTATUS[0]}
set -e
runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" || true)
echo "fuzz.sh: $target: exit $rc, ${runs:-?} executions in ${secs}s, corpus $(ls "$out/corpus" | wc -l) files"
if [[ $rc -ne 0 ]] || grep -qE "ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:" "$log"; then
  echo "fuzz.sh: $target: FAILED, see $log and $out/artifacts/" >&2
  exit 1
fi
