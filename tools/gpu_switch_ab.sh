#!/usr/bin/env bash
# Same-machine A/B of environment switches in one binary: runs `dsv4 bench --gpu BENCH_ARGS`
# once per setting, REPS rounds, settings alternating within each round, and prints
# "setting: <last CSV line>". A setting is a space-separated list of VAR=VALUE ("-" for none).
# The binary is $PACK_BIN/dsv4 (tools/gpu_unpack.sh) if set, else build-gpu/bin/dsv4.
# Usage: bash tools/gpu_switch_ab.sh REPS SETTING... -- BENCH_ARGS...
#   e.g. bash tools/gpu_switch_ab.sh 2 - "DSV4_HC_POST_MIX=0" -- --synthetic q2 --batch 2048 \
#          --ctx-start 2048 --ctx-max 2048 --gen-tokens 64
set -uo pipefail
reps=${1:?usage: gpu_switch_ab.sh REPS SETTING... -- BENCH_ARGS...}
shift
settings=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do settings+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#settings[@]} -gt 0 ] || { echo "gpu_switch_ab.sh: no settings" >&2; exit 2; }
bin=${PACK_BIN:+$PACK_BIN/dsv4}
bin=${bin:-build-gpu/bin/dsv4}
t0=$(date +%s)
for ((i = 1; i <= reps; ++i)); do
  for s in "${settings[@]}"; do
    vars=()
    [ "$s" != "-" ] && read -r -a vars <<< "$s"
    echo "$s: $(env "${vars[@]}" "$bin" bench --gpu "$@" 2>&1 | tail -1)"
  done
done
echo "elapsed $(( $(date +%s) - t0 )) s"
