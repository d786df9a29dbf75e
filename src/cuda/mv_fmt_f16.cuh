// F16 and BF16 decoders for the fast matvec kernel. Unit: 128 B = 64 values, staged with 16-byte
// cp.async into 144-byte slots; values widened exactly (f16: cvt, bf16: shift), fma in 4 chains;
// x from global memory.
#pragma once
#include "cuda/mv_intrin.cuh"
#include "cuda/mv_params.h"

namespace dsv4::cuda::mv {

template <bool kBf16>
struct FmtHalf {
  static constexpr FormatGeom kGeom = kBf16 ? kGeomBF16 : kGeomF16;
  static constexpr bool kDenormal = false;
  static constexpr bool kOptionalSmemX = false;  // planner may stage x in shared memory

  DSV4_HD static float lo(uint32_t w) {
    if constexpr (kBf16)
      return as_float(w << 16);
    else
      return f16_bits_to_f32(w);
  }
  DSV4_HD static float hi(uint32_t w) {
    if constexpr (kBf16)
      return as_float(w & 0xFFFF0000u);
    else
      return f16_bits_to_f32(w >> 16);
  }

  template <int NB, class X>
  DSV4_HD static void dot(const uint32_t (&w)[32], const X& x, const float*, int, const uint32_t*,
                          float (&acc)[NB]) {
    float s[NB][4];
    DSV4_UNROLL
    for (int v = 0; v < NB; ++v) s[v][0] = s[v][1] = s[v][2] = s[v][3] = 0.0f;
    DSV4_UNROLL
    for (int j = 0; j < 16; ++j) {  // values 4j .. 4j+3 = words 2j, 2j+1
      const float a0 = lo(w[2 * j]), a1 = hi(w[2 * j]);
      const float a2 = lo(w[2 * j + 1]), a3 = hi(w[2 * j + 1]);
      DSV4_UNROLL
      for (int v = 0; v < NB; ++v) {
        const float4h xv = x.ld(v, 4 * j);
        float& t = s[v][j & 3];
        t = fma_f(a0, xv.x, t);
        t = fma_f(a1, xv.y, t);
        t = fma_f(a2, xv.z, t);
        t = fma_f(a3, xv.w, t);
      }
    }
    DSV4_UNROLL
    for (int v = 0; v < NB; ++v) acc[v] += (s[v][0] + s[v][1]) + (s[v][2] + s[v][3]);
  }
};
using FmtF16 = FmtHalf<false>;
using FmtBF16 = FmtHalf<true>;

}  // namespace dsv4::cuda::mv
