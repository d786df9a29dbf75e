// Q8_0 decoder for the fast matvec kernel: {f16 d; i8 q[32]} (34 B), w = d * q.
//
// Unit: 8 blocks = 272 B = 68 words = 256 values, 16-byte aligned when the row start is and
// cols % 256 == 0 (copied as 17 x 16 B; 34-byte blocks alone are only 2-byte aligned). Block pair
// P occupies words 17P .. 17P+16. Each code becomes an exact float:
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
  static constexpr bool kOptionalSmemX = true;  // planner may stage x in shared memory

  template <int NB, class X>
  DSV4_HD static void dot(const uint32_t (&w)[68], const X& x, const float*, int, const uint32_t*,
                          float (&acc)[NB]) {
    DSV4_UNROLL
    for (int bb = 0; bb < 8; ++bb) {
      // Pair P = bb/2 at word o = 17P. Even block: d = low half of word o, codes at bytes 2..33 of
      // the pair (funnel-shifted word pairs). Odd block: d = high half of word o+8, codes at words
      // o+9 .. o+16.
      const int b = bb & 1;
      const int o = 17 * (bb >> 1);
      const float d = f16_bits_to_f32(b == 0 ? w[o] : (w[o + 8] >> 16));
      float s[NB][4];
      DSV4_UNROLL
      for (int v = 0; v < NB; ++v) s[v][0] = s[v][1] = s[v][2] = s[v][3] = 0.0f;
      DSV4_UNROLL
      for (int j = 0; j < 8; ++j) {
        uint32_t q = b == 0 ? funnel_r(w[o + j], w[o + j + 1], 16) : w[o + 9 + j];
        q ^= 0x80808080u;  // q + 128 in 0..255
        const float f0 = as_float(byte_perm(q, 0x4B000000u, 0x7440u)) - 8388736.0f;
        const float f1 = as_float(byte_perm(q, 0x4B000000u, 0x7441u)) - 8388736.0f;
        const float f2 = as_float(byte_perm(q, 0x4B000000u, 0x7442u)) - 8388736.0f;
        const float f3 = as_float(byte_perm(q, 0x4B000000u, 0x7443u)) - 8388736.0f;
        DSV4_UNROLL
        for (int v = 0; v < NB; ++v) {
          const float4h xv = x.ld(v, 32 * bb + 4 * j);
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

// The int8-x variant (FormatGeom::x8, MatvecOp::x8): a block and an x group are both 32 values,
// so a block's sum(q xq) is 8 dp4a (exact in int32) and y += d * (x scale * sum). The f32 decoder
// spends ~13 instructions per 4 values (PRMT, FADD, FMA per value and an x load); this one ~2.5,
// which is what lets the mid-size projections (q_b, o_a, o_b: 36 MB each) reach the DRAM rate
// with the 8 warps per SM that the ring of 272-byte units leaves room for.
struct FmtQ8_0_X8 {
  static constexpr FormatGeom kGeom = kGeomQ8_0_X8;
  static constexpr bool kDenormal = false;
  static constexpr bool kOptionalSmemX = false;

  template <int NB>
  DSV4_HD static void dot(const uint32_t (&w)[68], const X8& x, const uint32_t*, float (&acc)[NB]) {
    DSV4_UNROLL
    for (int bb = 0; bb < 8; ++bb) {
      // Block layout as in FmtQ8_0: even blocks' codes are funnel-shifted word pairs.
      const int b = bb & 1;
      const int o = 17 * (bb >> 1);
      const float d = f16_bits_to_f32(b == 0 ? w[o] : (w[o + 8] >> 16));
      int s[NB];
      DSV4_UNROLL
      for (int v = 0; v < NB; ++v) s[v] = 0;
      DSV4_UNROLL
      for (int j = 0; j < 8; j += 2) {
        const uint32_t q0 = b == 0 ? funnel_r(w[o + j], w[o + j + 1], 16) : w[o + 9 + j];
        const uint32_t q1 = b == 0 ? funnel_r(w[o + j + 1], w[o + j + 2], 16) : w[o + 10 + j];
        DSV4_UNROLL
        for (int v = 0; v < NB; ++v) {
          uint32_t xlo, xhi;
          x.q(v, 32 * bb + 4 * j, xlo, xhi);
          s[v] = dp4a_s8(q1, xhi, dp4a_s8(q0, xlo, s[v]));
        }
      }
      DSV4_UNROLL
      for (int v = 0; v < NB; ++v) acc[v] = fma_f(d, x.scale(v, bb) * (float)s[v], acc[v]);
    }
  }
};

}  // namespace dsv4::cuda::mv
