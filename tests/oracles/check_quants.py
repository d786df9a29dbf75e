#!/usr/bin/python3
"""Compares dsv4's quant decoders/quantizers with gguf-py (llama.cpp's numpy reference).

Reads the files written by quant_oracle_dump (manifest.txt in DIR):
  dequant NAME TYPE ID N LEVEL...   NAME.raw (GGUF bytes), NAME.LEVEL (our f32 values)
  quant NAME TYPE ID N              NAME.src (f32 input), NAME.ours (our encoded bytes)
Dequantized values are compared bit for bit as uint32 (all NaNs count as equal: payloads may be
normalised); quantizer outputs byte for byte. Exit 0: all equal, 1: mismatches, 77: no oracle.
Run with Debian's /usr/bin/python3 (numpy) and --gguf-py tests/oracles/.cache/gguf-py.
"""
import argparse
import os
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--gguf-py", required=True)
    args = ap.parse_args()
    sys.path.insert(0, args.gguf_py)
    try:
        import numpy as np
        from gguf import quants
        from gguf.constants import GGMLQuantizationType as QT
    except ImportError as e:  # no numpy / no gguf-py: skip, like a missing cache
        print(f"SKIP: cannot import the oracle ({e})")
        return 77

    def load(name, dtype):
        return np.fromfile(os.path.join(args.dir, name), dtype=dtype)

    np.seterr(all="ignore")  # inf/NaN scales in the arbitrary-byte cases are intended
    failures = 0
    print(f"{'case':22} {'type':8} {'level':7} {'values':>9} {'blocks':>7} {'NaN':>7} mismatches")
    with open(os.path.join(args.dir, "manifest.txt")) as f:
        lines = [ln.split() for ln in f if ln.strip()]
    for fields in lines:
        kind, name, tname, tid, n = fields[:5]
        qt, n = QT(int(tid)), int(n)
        if kind == "dequant":
            raw = load(name + ".raw", np.uint8)
            ref = quants.dequantize(raw, qt).astype(np.float32, copy=False).reshape(-1)
            assert ref.size == n, (name, ref.size, n)
            block = quants.GGML_QUANT_SIZES[qt][0]
            for level in fields[5:]:
                ours = load(f"{name}.{level}", np.float32)
                assert ours.size == n, (name, level, ours.size)
                same = (ours.view(np.uint32) == ref.view(np.uint32)) | (np.isnan(ours) & np.isnan(ref))
                bad = np.flatnonzero(~same)
                nan = int(np.isnan(ref).sum())
                print(f"{name:22} {tname:8} {level:7} {n:9d} {n // block:7d} {nan:7d} {bad.size}")
                for i in bad[:5]:
                    print(f"    value {i} (block {i // block}): ours {ours[i]!r} "
                          f"0x{ours.view(np.uint32)[i]:08x}, gguf-py {ref[i]!r} "
                          f"0x{ref.view(np.uint32)[i]:08x}")
                failures += int(bad.size > 0)
        elif kind == "quant":
            src = load(name + ".src", np.float32)
            ours = load(name + ".ours", np.uint8)
            if qt == QT.F16:
                ref = src.astype(np.float16).view(np.uint8)  # numpy: round to nearest even
            else:
                ref = quants.quantize(src, qt).reshape(-1)
            block, size = quants.GGML_QUANT_SIZES[qt]
            ob = ours.reshape(-1, size)
            rb = ref.reshape(-1, size)
            bad = np.flatnonzero((ob != rb).any(axis=1))
            print(f"{name:22} {tname:8} {'quant':7} {n:9d} {n // block:7d} {'-':>7} {bad.size}")
            for b in bad[:5]:
                print(f"    block {b}: ours {ob[b].tobytes().hex()} gguf-py {rb[b].tobytes().hex()}")
            failures += int(bad.size > 0)
        else:
            raise SystemExit(f"bad manifest line {fields}")
    commit_file = os.path.join(args.gguf_py, "LLAMA_CPP_COMMIT")
    commit = open(commit_file).read().strip() if os.path.exists(commit_file) else "?"
    print(f"oracle: gguf-py from llama.cpp {commit}, numpy {np.__version__}")
    print("RESULT:", "PASS (bit-exact)" if failures == 0 else f"FAIL ({failures} cases differ)")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
