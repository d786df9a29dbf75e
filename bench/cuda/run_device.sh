#!/bin/bash
# One device call: build bench_matvec + test_cuda_matvec, run the tests (also under each planner
# setting in $TEST_TUNES, ';'-separated, through DSV4_MV_TUNE), the full benchmark, then the
# benchmark under each argument's --tune spec (--quick when $QUICK is set) and, when ncu reads
# counters, a short profile of the shapes in $NCU_LABELS (';'-separated). Logs under $OUT.
#   bash bench/cuda/run_device.sh [tune-spec ...]
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source tools/gpu_env.sh
t0=$(date +%s)
cmake -S . -B build-gpu-mv -G Ninja -DDSV4_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DDSV4_BENCH=ON >"$OUT/cmake.log" 2>&1 || { tail -20 "$OUT/cmake.log"; exit 1; }
ninja -C build-gpu-mv bench_matvec test_cuda_matvec test_cuda_emulation >"$OUT/build.log" 2>&1 || { grep -E "error|Error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
B=build-gpu-mv/bench/cuda/bench_matvec
timeout 150 build-gpu-mv/tests/cuda/test_cuda_matvec >"$OUT/test.log" 2>&1; echo "test_cuda_matvec rc=$?"
grep -E "^\[  (PASSED|FAILED) " "$OUT/test.log" | head -20
if [ -n "${TEST_TUNES:-}" ]; then
  IFS=';' read -ra tts <<<"$TEST_TUNES"
  k=0
  for tt in "${tts[@]}"; do
    k=$((k+1))
    DSV4_MV_TUNE="$tt" timeout 120 build-gpu-mv/tests/cuda/test_cuda_matvec >"$OUT/test_tune_$k.log" 2>&1
    echo "test_cuda_matvec [$tt] rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/test_tune_$k.log" | tr '\n' ' ')"
  done
fi
timeout 150 build-gpu-mv/tests/cuda/test_cuda_emulation >"$OUT/emu.log" 2>&1; echo "test_cuda_emulation rc=$?"
grep -E "^\[  (PASSED|FAILED) " "$OUT/emu.log" | head -20
timeout 100 $B --reps 200 >"$OUT/bench.csv" 2>&1; echo "bench rc=$?"
i=0
for spec in "$@"; do
  i=$((i+1))
  timeout 60 $B ${QUICK:+--quick} --reps 100 --tune "$spec" >"$OUT/sweep_$i.csv" 2>&1; echo "sweep $i ($spec) rc=$?"
done
if [ -n "${NCU_LABELS:-}" ] && command -v ncu >/dev/null; then
  IFS=';' read -ra labs <<<"$NCU_LABELS"
  for lab in "${labs[@]}"; do
    f=$(echo "$lab" | tr ' +' '__')
    timeout 100 ncu --clock-control none --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
      --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis -k regex:mv_fast -s 3 -c 1 \
      $B --quick --reps 50 --only "$lab" ${NCU_TUNE:+--tune $NCU_TUNE} >"$OUT/ncu_$f.txt" 2>&1
    echo "ncu $lab rc=$?"
  done
fi
echo "total: $(( $(date +%s) - t0 )) s"
echo "== full bench (default tuning)"
grep -v "^#" "$OUT/bench.csv" | cut -d, -f1,2,3,5,6,7,10 | head -40
grep "^# per token\|achievable" "$OUT/bench.csv"
echo "== sweeps: us per case"
for f in $(ls "$OUT"/sweep_*.csv 2>/dev/null | sort -V); do
  echo "-- $(grep '^# tune' $f)"
  grep -v "^#" "$f" | tail -n +2 | awk -F, '{printf "%s/%s %s | ", $1, $7, $5}'; echo
  grep "^# per token, q2" "$f" | sed -E 's/.*projected decode ([0-9.]+) ms.*/q2 sum \1 ms/'
done
