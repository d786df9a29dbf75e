#!/usr/bin/env bash
# dsv4 (CPU, rounding off) vs llama.cpp (npm node-llama-cpp, CPU, F32 KV cache) on the same F32 tiny
# model and token sequence. Pass: max |dlogit| <= 5e-2 at non-tie positions and argmax agreement
# >= 98 % (issue: core). Exit 77 (skip) when the oracle is not installed.
# Usage: compare_llama.sh DSV4_BINARY [N_TOKENS] [PRESET]
set -euo pipefail
DSV4="${1:?dsv4 binary}"
N="${2:-2300}"
PRESET="${3:-tiny-k512}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
NM="${DSV4_NODE_MODULES:-$ROOT/tests/oracles/.cache/npm/node_modules}"
PY=/usr/bin/python3
if [ ! -d "$NM/node-llama-cpp" ] || ! command -v node >/dev/null || ! "$PY" -c 'import numpy' 2>/dev/null; then
  echo "compare_llama: oracle not installed (run scripts/fetch_oracles.sh): skipped"
  exit 77
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$DSV4" gen-tiny --preset "$PRESET" --f32 --no-mtp -o "$TMP/model.gguf" >/dev/null
"$PY" -c "
import numpy as np
rng = np.random.default_rng(2024)
np.save('$TMP/tokens.npy', rng.integers(0, 256, size=$N).astype(np.int32))
open('$TMP/tokens.txt', 'w').write(','.join(map(str, np.load('$TMP/tokens.npy'))))"
t0=$(date +%s.%N)
node "$ROOT/tests/oracles/llama/llama_logits.mjs" --model "$TMP/model.gguf" --tokens "$TMP/tokens.npy" \
  --out "$TMP/llama.npy" --kv-type F32 --node-modules "$NM" >/dev/null
t1=$(date +%s.%N)
"$DSV4" logits -m "$TMP/model.gguf" --tokens-file "$TMP/tokens.txt" --qat off -o "$TMP/ours.npy" \
  --margins "$TMP/margins.npy" 2>/dev/null
t2=$(date +%s.%N)
"$PY" - "$TMP" "$t0" "$t1" "$t2" <<'PYEOF'
import sys, numpy as np
d = sys.argv[1]
a, b = np.load(d + "/ours.npy"), np.load(d + "/llama.npy")
m = np.load(d + "/margins.npy")
assert a.shape == b.shape, (a.shape, b.shape)
ok = m >= 1e-5
diff = np.abs(a - b).max(axis=1)
agree = (a.argmax(1) == b.argmax(1)).mean()
mx = diff[ok].max()
print(f"compare_llama: {a.shape[0]} positions ({(~ok).sum()} near-ties excluded), vocab {a.shape[1]}: "
      f"max|dlogit| {mx:.3g}, median {np.median(diff[ok]):.3g}, argmax agreement {100*agree:.2f}% "
      f"(llama.cpp {float(sys.argv[3])-float(sys.argv[2]):.1f}s, dsv4 {float(sys.argv[4])-float(sys.argv[3]):.1f}s)")
bad = []
if mx > 5e-2: bad.append(f"max|dlogit| {mx:.3g} > 5e-2")
if agree < 0.98: bad.append(f"argmax agreement {agree:.4f} < 0.98")
if bad:
    print("compare_llama: FAIL: " + "; ".join(bad))
    sys.exit(1)
print("compare_llama: PASS")
PYEOF
