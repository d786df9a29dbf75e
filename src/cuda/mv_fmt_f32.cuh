// F32 decoder for the fast matvec kernel. Unit: 128 B = 32 values, staged with 16-byte cp.async
// into 144-byte slots, fma in 4 chains; x from global memory.
#pragma once
#include "cuda/mv_intrin.cuh"
#include "cuda/mv_params.h"

namespace dsv4::cuda::mv {

struct FmtF32 {
  static constexpr FormatGeom kGeom = kGeomF32;
  static constexpr bool kDenormal = false;
  static constexpr bool kOptionalSmemX = false;  // planner may stage x in shared memory

  template <int NB, class X>
  DSV4_HD static void dot(const uint32_t (&w)[32], const X& x, const float*, int, const uint32_t*,
                          float (&acc)[NB]) {
    float s[NB][4];
    DSV4_UNROLL
    for (int v = 0; v < NB; ++v) s[v][0] = s[v][1] = s[v][2] = s[v][3] = 0.0f;
    DSV4_UNROLL
    for (int j = 0; j < 8; ++j) {
      DSV4_UNROLL
      for (int v = 0; v < NB; ++v) {
        const float4h xv = x.ld(v, 4 * j);
        float& t = s[v][j & 3];
        t = fma_f(as_float(w[4 * j]), xv.x, t);
        t = fma_f(as_float(w[4 * j + 1]), xv.y, t);
        t = fma_f(as_float(w[4 * j + 2]), xv.z, t);
        t = fma_f(as_float(w[4 * j + 3]), xv.w, t);
      }
    }
    DSV4_UNROLL
    for (int v = 0; v < NB; ++v) acc[v] += (s[v][0] + s[v][1]) + (s[v][2] + s[v][3]);
  }
};

}  // namespace dsv4::cuda::mv
