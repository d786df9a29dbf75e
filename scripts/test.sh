#!/usr/bin/env bash
# The test command (README): installs what is missing, builds, and runs every CPU test.
#   1. unit tests under ASan + UBSan (label cpu)
#   2. release build (compiles the CUDA backend when nvcc exists), then the oracle and golden
#      tests (gguf-py decoders, tokenizer parity, llama.cpp logits, official/HF goldens), a
#      bounded libFuzzer run of the GGUF parser, the CLI tests and the server end to end (the
#      official openai and @anthropic-ai/sdk npm clients against `dsv4 serve`, load, restart).
# GPU tests (label gpu) run on the GPU machines: ctest --test-dir build -L gpu.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
scripts/fetch_oracles.sh

echo "== ASan/UBSan build and unit tests" >&2
scripts/build.sh asan
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan -L cpu --output-on-failure -j "$(nproc)"

echo "== release build (CUDA code compiled if a toolkit is present), oracle/golden/fuzz tests" >&2
scripts/build.sh release
ctest --test-dir build -L "oracle|golden|fuzz|cli|e2e" --output-on-failure
