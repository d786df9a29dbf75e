#!/usr/bin/env bash
# The main job (README): builds dsv4 and answers a prompt. With a real model in ./models/ it uses
# that; otherwise it generates the built-in tiny demo model, whose weights are RANDOM, and says so.
# Usage: scripts/run.sh ["prompt"]   (extra dsv4 run flags via DSV4_RUN_FLAGS)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
scripts/build.sh release dsv4
PROMPT="${1:-Write a haiku about the sea.}"
MODEL="$(ls models/*.gguf 2>/dev/null | grep -vi mtp | head -1 || true)"
if [ -z "$MODEL" ]; then
  cat >&2 <<'MSG'
################################################################################
#  No model in ./models/ -- running the built-in TINY DEMO MODEL.              #
#  Its weights are RANDOM: the output is gibberish by design. It only shows   #
#  that the engine runs end to end. Put a DeepSeek V4 Flash GGUF (dsv4 pull   #
#  q2) into ./models/ for real answers.                                       #
################################################################################
MSG
  mkdir -p build/demo
  [ -f build/demo/tiny.gguf ] || build/bin/dsv4 gen-tiny -o build/demo/tiny.gguf --no-mtp >&2
  MODEL=build/demo/tiny.gguf
fi
exec build/bin/dsv4 run -m "$MODEL" -p "$PROMPT" ${DSV4_RUN_FLAGS:-}
