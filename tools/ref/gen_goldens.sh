#!/usr/bin/env bash
# Regenerates tests/data/golden/* on a GPU machine (torch 2.11 + transformers 5.17), from the repo
# root, with .ref/official (DeepSeek's inference code), .ref/gguf-py and .ref/models present:
#   build/bin/dsv4 gen-tiny --preset tiny-k512 -o .ref/models/tiny-k512.gguf \
#       --mtp-out .ref/models/tiny-k512-mtp.gguf      (same for tiny-q4)
#   tools/ref/gen_goldens.sh OUT_DIR
set -euo pipefail
OUT="${1:?usage: gen_goldens.sh OUT_DIR}"
N="${DSV4_GOLDEN_TOKENS:-2300}"
for spec in "tiny-k512:1" "tiny-q4:2"; do
  preset="${spec%%:*}"
  seed="${spec##*:}"
  python3 tools/ref/make_goldens.py --model ".ref/models/$preset.gguf" \
    --mtp ".ref/models/$preset-mtp.gguf" --tokens-seed "$seed" --n-tokens "$N" \
    --out "$OUT/$preset" --which official,hf --no-chunked --logit-rows every:3 \
    --generator "{\"preset\": \"$preset\", \"f32\": false, \"mtp\": true}"
done
