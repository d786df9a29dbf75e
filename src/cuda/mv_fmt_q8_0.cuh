// Q8_0 decoder for the fast matvec kernel: {f16 d; i8 q[32]} (34 B), w = d * q.
//
// Unit: 2 blocks = 68 B = 17 words = 64 values (a block pair is 4-byte aligned when
// cols % 64 == 0; 34-byte blocks alone are only 2-byte aligned). Each code becomes an exact float:
// (q ^ 0x80) in the mantissa of 2^23 minus (2^23 + 128) (PRMT + FADD, no conversion unit); then
// s_b = sum q x over the block in 4 independent chains and y += d * s_b. The decoded weights equal
// the CPU's (d*q is exact in f32); only the summation order differs. x is read from global memory.
#pragma once
#include "cuda/mv_intrin.cuh"
#include "cuda/mv_params.h"

namespace dsv4::cuda::mv {

struct FmtQ8_0 {
  static constexpr FormatGeom kGeom = kGeomQ8_0;
  static constexpr bool kDenormal = false;

  template <int NB, class X>
  DSV4_HD static void dot(const uint32_t (&w)[17], const X& x, const float*, int, const uint32_t*,
                          float (&acc)[NB]) {
DSV4_UNROLL
    for (int b = 0; b < 2; ++b) {
      // Block 0: d = bytes 0-1, codes at bytes 2..33 (funnel-shifted word pairs).
      // Block 1: d = bytes 34-35 (high half of word 8), codes at bytes 36..67 = words 9..16.
      const float d = f16_bits_to_f32(b == 0 ? w[0] : (w[8] >> 16));
      float s[NB][4];
DSV4_UNROLL
      for (int v = 0; v < NB; ++v) s[v][0] = s[v][1] = s[v][2] = s[v][3] = 0.0f;
DSV4_UNROLL
      for (int j = 0; j < 8; ++j) {
        uint32_t q = b == 0 ? funnel_r(w[j], w[j + 1], 16) : w[9 + j];
        q ^= 0x80808080u;  // q + 128 in 0..255
        const float f0 = as_float(byte_perm(q, 0x4B000000u, 0x7440u)) - 8388736.0f;
        const float f1 = as_float(byte_perm(q, 0x4B000000u, 0x7441u)) - 8388736.0f;
        const float f2 = as_float(byte_perm(q, 0x4B000000u, 0x7442u)) - 8388736.0f;
        const float f3 = as_float(byte_perm(q, 0x4B000000u, 0x7443u)) - 8388736.0f;
DSV4_UNROLL
        for (int v = 0; v < NB; ++v) {
          const float4h xv = x.ld(v, 32 * b + 4 * j);
          float& t = s[v][j & 3];
          t = fma_f(f0, xv.x, t);
          t = fma_f(f1, xv.y, t);
          t = fma_f(f2, xv.z, t);
          t = fma_f(f3, xv.w, t);
        }
      }
DSV4_UNROLL
      for (int v = 0; v < NB; ++v)
        acc[v] = fma_f(d, (s[v][0] + s[v][1]) + (s[v][2] + s[v][3]), acc[v]);
    }
  }
};

}  // namespace dsv4::cuda::mv
