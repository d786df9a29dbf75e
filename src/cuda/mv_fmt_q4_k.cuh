// Q4_K decoder for the fast matvec kernel: {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]} (144 B,
// 256 values), eight sub-blocks of 32 with 6-bit scale sc_j and min m_j: w = (d*sc_j)*q - dmin*m_j.
//
// Unit: 1 block = 144 B (16-byte aligned), staged with 16-byte cp.async. Factored form:
// y += d1_j * sum_j(q x) - m1_j * sum_j(x), d1_j = d*sc_j and m1_j = dmin*m_j rounded like the CPU
// decoder. Codes become exact denormal floats (q * 2^-149, one PRMT) multiplied by x * 2^96 staged
// in shared memory; sum_j(x) comes from the staged per-16 sums (same scale); the result is scaled
// back by 2^53.
#pragma once
#include "cuda/mv_intrin.cuh"
#include "cuda/mv_params.h"

namespace dsv4::cuda::mv {

struct FmtQ4_K {
  static constexpr FormatGeom kGeom = kGeomQ4_K;
  static constexpr bool kDenormal = true;
  static constexpr bool kOptionalSmemX = false;  // planner may stage x in shared memory

  template <int NB, class X>
  DSV4_HD static void dot(const uint32_t (&w)[36], const X& x, const float* xsum, int xsum_vs,
                          const uint32_t*, float (&acc)[NB]) {
    const float d = f16_bits_to_f32(w[0]);
    const float dmin = f16_bits_to_f32(w[0] >> 16);
    // 6-bit scales and mins, one byte per sub-block: j = 0..3 (lo) and j = 4..7 (hi).
    const uint32_t sc_lo = w[1] & 0x3F3F3F3Fu;
    const uint32_t m_lo = w[2] & 0x3F3F3F3Fu;
    const uint32_t sc_hi = (w[3] & 0x0F0F0F0Fu) | ((w[1] >> 2) & 0x30303030u);
    const uint32_t m_hi = ((w[3] >> 4) & 0x0F0F0F0Fu) | ((w[2] >> 2) & 0x30303030u);
    DSV4_UNROLL
    for (int c = 0; c < 4; ++c) {  // 64-value chunks: sub-block 2c (low nibbles), 2c+1 (high)
      float slo[NB][2], shi[NB][2];
      DSV4_UNROLL
      for (int v = 0; v < NB; ++v) slo[v][0] = slo[v][1] = shi[v][0] = shi[v][1] = 0.0f;
      DSV4_UNROLL
      for (int i = 0; i < 8; ++i) {
        const uint32_t q = w[4 + 8 * c + i];
        const uint32_t lo = q & 0x0F0F0F0Fu;
        const uint32_t hi = (q >> 4) & 0x0F0F0F0Fu;
        const float l0 = byte_to_denormal<0>(lo), l1 = byte_to_denormal<1>(lo);
        const float l2 = byte_to_denormal<2>(lo), l3 = byte_to_denormal<3>(lo);
        const float h0 = byte_to_denormal<0>(hi), h1 = byte_to_denormal<1>(hi);
        const float h2 = byte_to_denormal<2>(hi), h3 = byte_to_denormal<3>(hi);
        DSV4_UNROLL
        for (int v = 0; v < NB; ++v) {
          const float4h xl = x.ld(v, 64 * c + 4 * i);
          const float4h xh = x.ld(v, 64 * c + 32 + 4 * i);
          float& a = slo[v][i & 1];
          a = fma_f(l0, xl.x, a);
          a = fma_f(l1, xl.y, a);
          a = fma_f(l2, xl.z, a);
          a = fma_f(l3, xl.w, a);
          float& e = shi[v][i & 1];
          e = fma_f(h0, xh.x, e);
          e = fma_f(h1, xh.y, e);
          e = fma_f(h2, xh.z, e);
          e = fma_f(h3, xh.w, e);
        }
      }
      // Sub-blocks 2c and 2c+1 are bytes (2c)%4 and (2c+1)%4 of the lo (c < 2) or hi words.
      const uint32_t scw = c < 2 ? sc_lo : sc_hi;
      const uint32_t mw = c < 2 ? m_lo : m_hi;
      float sc0, sc1, m0, m1;
      if ((c & 1) == 0) {
        sc0 = byte_to_float<0>(scw), sc1 = byte_to_float<1>(scw);
        m0 = byte_to_float<0>(mw), m1 = byte_to_float<1>(mw);
      } else {
        sc0 = byte_to_float<2>(scw), sc1 = byte_to_float<3>(scw);
        m0 = byte_to_float<2>(mw), m1 = byte_to_float<3>(mw);
      }
      const float d0 = fmul_rn(d, sc0), d1 = fmul_rn(d, sc1);
      const float n0 = -fmul_rn(dmin, m0), n1 = -fmul_rn(dmin, m1);
      DSV4_UNROLL
      for (int v = 0; v < NB; ++v) {
        const float* xsv = xsum + v * xsum_vs + 4 * c;
        acc[v] = fma_f(d0, slo[v][0] + slo[v][1], acc[v]);
        acc[v] = fma_f(n0, xsv[0] + xsv[1], acc[v]);
        acc[v] = fma_f(d1, shi[v][0] + shi[v][1], acc[v]);
        acc[v] = fma_f(n1, xsv[2] + xsv[3], acc[v]);
      }
    }
  }
};

}  // namespace dsv4::cuda::mv
