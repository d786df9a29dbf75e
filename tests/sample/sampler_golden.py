#!/usr/bin/env python3
"""Independent model of dsv4::Sampler for the golden tokens of test_sampler.cpp (Seed tests).

Emulates the IEEE float32 arithmetic of exp_neg4 (float32 ops done in double and rounded: exact
for + - *), the splitmix64-seeded xoshiro256** stream and the two draw paths; prints the tokens
the C++ sampler must give on every platform, and the exp approximation's maximum relative error.
"""
import math
import struct


def f(x):
    return struct.unpack('f', struct.pack('f', x))[0]


def exp_neg(d):
    small = d < -87.0
    c = -87.0 if small else d
    t = f(c * f(1.44269504088896341))
    nf = f(f(t + 12582912.0) - 12582912.0)
    r = f(c - f(nf * 0.693359375))
    r = f(r - f(nf * f(-2.12194440e-4)))
    p = f(1.9875691500e-4)
    for k in [1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
              5.0000001201e-1]:
        p = f(f(p * r) + f(k))
    p = f(f(f(f(p * r) * r) + r) + 1.0)
    scale = struct.unpack('f', struct.pack('I', (int(nf) + 127) << 23))[0]
    return 0.0 if small else f(p * scale)


M = (1 << 64) - 1


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M


def seed(sd):
    st, x = [], sd
    for _ in range(4):
        x = (x + 0x9E3779B97F4A7C15) & M
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        st.append(z ^ (z >> 31))
    return st


def nxt(s):
    r = (rotl((s[1] * 5) & M, 7) * 9) & M
    t = (s[1] << 17) & M
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = rotl(s[3], 45)
    return r


def uniform(st):
    return (nxt(st) >> 11) * 2.0**-53


def full_path(x, sd, count):
    """T = 1, no truncation, n <= 8: one block; lanes reduced as w[j] + w[j + 4]."""
    m = max(x)
    w = [exp_neg(f(xi - m)) for xi in x] + [0.0] * (8 - len(x))
    total = 0.0
    for j in range(4):
        total += w[j] + w[4 + j]
    st, out = seed(sd), []
    for _ in range(count):
        r, acc = uniform(st) * total, 0.0
        for i in range(len(x)):
            acc += w[i]
            if r < acc:
                out.append(i)
                break
    return out


def cand_path(x, T, min_p, top_p, sd, count):
    """min-p and top-p: the kept tokens walked in id order."""
    m = max(x)
    inv_t = f(1.0 / T)
    w = [exp_neg(f(f(xi - m) * inv_t)) for xi in x]
    order = sorted(range(len(x)), key=lambda i: (-x[i], i))
    total = sum(w)  # only compared with the run's mass; no boundary is close here
    run, acc = set(), 0.0
    for i in order:
        run.add(i)
        acc += w[i]
        if top_p < 1 and acc >= top_p * total:
            break
    kept = [i for i in range(len(x)) if i in run and w[i] > 0 and w[i] >= min_p]
    st, out = seed(sd), []
    for _ in range(count):
        t = 0.0
        for i in kept:
            t += w[i]
        r, a = uniform(st) * t, 0.0
        for i in kept:
            a += w[i]
            if r < a:
                out.append(i)
                break
    return out


print(full_path([f(v) for v in [0.0, 1.0, -0.5, 2.0, 0.3, -2.0, 1.5, 0.9]], 42, 16))
print(cand_path([f(v) for v in [0.0, 1.0, -0.5, 2.0, 0.3, -2.0, 1.5, 0.9, -4.0, 1.2]], f(0.8),
                f(0.05), f(0.9), 7, 16))
err = 0.0
for i in range(200001):
    d = f(-87.0 * i / 200000)
    err = max(err, abs(exp_neg(d) - math.exp(d)) / math.exp(d))
print('exp_neg max relative error', err)
