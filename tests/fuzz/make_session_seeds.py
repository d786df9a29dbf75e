#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_session (tests/fuzz/session_seeds/): valid session files for
the fuzz target's model (layers of ratio 0, 4 and 128; window 4, head_dim 8, idx_head_dim 4,
vocabulary 50), each behind the target's flag byte (0: the target recomputes the checksum).
Layout (src/state/session_file.cpp): magic, version u32, fingerprint u64, n_past i64,
mtp_n_past i64, tokens (u64 count + i32), layer count u64, 3 + 1 (MTP) layers of seven float
vectors (u64 count + f32), FNV-1a 64 of all bytes before it."""
import os
import struct
import sys

FP = 0x5E55105E
HD, W, ID = 8, 4, 4
RATIOS = [0, 4, 128]


def extent(ratio, n):
    lanes = 2 if ratio == 4 else 1
    raw = W * HD
    comp = (n // ratio) * HD if ratio else 0
    ckv = lanes * ratio * lanes * HD if ratio else 0
    idx = (n // 4) * ID if ratio == 4 else 0
    ikv = 8 * 2 * ID if ratio == 4 else 0
    return [raw, comp, idx, ckv, ckv, ikv, ikv]


def fnv1a(b):
    h = 1469598103934665603
    for x in b:
        h = ((h ^ x) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def session(n_past, mtp_n_past):
    out = bytearray(b"DSV4SESS")
    out += struct.pack("<IQqq", 1, FP, n_past, mtp_n_past)
    out += struct.pack("<Q", n_past) + b"".join(struct.pack("<i", t % 50) for t in range(n_past))
    out += struct.pack("<Q", len(RATIOS))
    for r, n in [(r, n_past) for r in RATIOS] + [(0, mtp_n_past)]:
        for count in extent(r, n):
            out += struct.pack("<Q", count) + struct.pack("<%df" % count, *[0.25] * count)
    out += struct.pack("<Q", fnv1a(out))
    return bytes(out)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "session_seeds")
    os.makedirs(d, exist_ok=True)
    for n, m in [(0, 0), (5, 0), (9, 9), (130, 0)]:
        for flag in (0, 1):
            with open(os.path.join(d, "n%d_mtp%d_flag%d.bin" % (n, m, flag)), "wb") as f:
                f.write(bytes([flag]) + session(n, m))


if __name__ == "__main__":
    main()
