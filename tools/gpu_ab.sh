#!/usr/bin/env bash
# Same-machine A/B of `dsv4 bench --gpu` on a GPU machine: builds the reference tree (a tar made on
# the dev machine with `git archive -o .wt/ref.tar <commit>`, carried to the device with .wt) and
# the working tree, then runs the same bench alternately, REPS times each. Different H200s give
# the same tree figures ~1.5 % apart, so decode changes are judged only this way.
# Usage (on the device): bash tools/gpu_ab.sh REF_TAR [REPS] -- BENCH_ARGS...
#   e.g. bash tools/gpu_ab.sh .wt/ref.tar 2 -- --synthetic q2 --batch 2048 --ctx-start 2048 \
#          --ctx-max 2048 --gen-tokens 64
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ref_tar=${1:?usage: gpu_ab.sh REF_TAR [REPS] -- BENCH_ARGS...}
shift
reps=2
if [ "${1:-}" != "--" ] && [ -n "${1:-}" ]; then reps=$1; shift; fi
[ "${1:-}" = "--" ] && shift
rm -rf /tmp/dsv4-sysroot  # a warm machine may keep a sysroot unpacked from other packages
source tools/gpu_env.sh
t0=$(date +%s)
build() {  # build SRC_DIR BUILD_DIR
  cmake -S "$1" -B "$2" -G Ninja -DDSV4_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DCMAKE_BUILD_TYPE=Release > "$2.cfg.log" 2>&1 || { tail -20 "$2.cfg.log"; return 1; }
  cmake --build "$2" -j"$(nproc)" --target dsv4 > "$2.log" 2>&1 ||
    { grep -A10 error "$2.log" | head -40; return 1; }
}
rm -rf /tmp/ab-ref && mkdir -p /tmp/ab-ref && tar -xf "$ref_tar" -C /tmp/ab-ref || exit 1
build /tmp/ab-ref /tmp/ab-ref/build || exit 1
echo "reference built ($(( $(date +%s) - t0 )) s)"
build . build-gpu || exit 1
echo "working tree built ($(( $(date +%s) - t0 )) s)"
for ((i = 1; i <= reps; ++i)); do
  for v in ref new; do
    b=build-gpu/bin/dsv4
    [ $v = ref ] && b=/tmp/ab-ref/build/bin/dsv4
    echo "$v: $($b bench --gpu "$@" 2>&1 | tail -1)"
  done
done
echo "elapsed $(( $(date +%s) - t0 )) s"
