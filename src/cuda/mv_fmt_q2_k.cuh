// Q2_K decoder for the fast matvec kernel: {u8 scales[16]; u8 qs[64]; f16 d; f16 dmin} (84 B, 256
// values), sixteen sub-blocks of 16 with 4-bit scale sc and min m: w = (d*sc)*q - dmin*m, q 0..3.
//
// Unit: 1 block = 84 B = 21 words (4-byte aligned), staged with 4-byte cp.async. Factored as
// Q4_K: y += dl * sum(q x) - ml * sum(x) per sub-block, dl = d*sc and ml = dmin*m rounded like the
// CPU decoder; the codes (w >> 2*shift) & 0x03030303 become exact denormal floats (one PRMT each)
// multiplied by x * 2^96 from shared memory; per-16 sums of x are staged; result scaled by 2^53.
#pragma once
#include "cuda/mv_intrin.cuh"
#include "cuda/mv_params.h"

namespace dsv4::cuda::mv {

struct FmtQ2_K {
  static constexpr FormatGeom kGeom = kGeomQ2_K;
  static constexpr bool kDenormal = true;
  static constexpr bool kOptionalSmemX = false;  // planner may stage x in shared memory

  template <int K>
  DSV4_HD static void scale_min(uint32_t sw, float* sc, float* m) {
    *sc = byte_to_float<K>(sw & 0x0F0F0F0Fu);
    *m = byte_to_float<K>((sw >> 4) & 0x0F0F0F0Fu);
  }

  // Scale and minimum of sub-block sb (byte sb of the scales; sb a compile-time constant after
  // unrolling, so the switch folds away).
  DSV4_HD static void scale_min_of(const uint32_t (&w)[21], int sb, float* sc, float* m) {
    const uint32_t sw = w[sb >> 2];
    switch (sb & 3) {
      case 0:
        return scale_min<0>(sw, sc, m);
      case 1:
        return scale_min<1>(sw, sc, m);
      case 2:
        return scale_min<2>(sw, sc, m);
      default:
        return scale_min<3>(sw, sc, m);
    }
  }

  template <int NB, class X>
  DSV4_HD static void dot(const uint32_t (&w)[21], const X& x, const float* xsum, int xsum_vs,
                          const uint32_t*, float (&acc)[NB]) {
    const float d = f16_bits_to_f32(w[20]);
    const float dmin = f16_bits_to_f32(w[20] >> 16);
    DSV4_UNROLL
    for (int h = 0; h < 2; ++h) {  // halves of 128 values: code bytes qs[32h .. 32h+31]
      DSV4_UNROLL
      for (int sh = 0; sh < 4; ++sh) {  // 2-bit field sh: values 128h + 32sh + l, l = 0..31
        float s[2][NB][2];
        DSV4_UNROLL
        for (int v = 0; v < NB; ++v) s[0][v][0] = s[0][v][1] = s[1][v][0] = s[1][v][1] = 0.0f;
        DSV4_UNROLL
        for (int i = 0; i < 8; ++i) {  // code bytes l = 4i .. 4i+3 (word 4 + 8h + i)
          const uint32_t c4 = (w[4 + 8 * h + i] >> (2 * sh)) & 0x03030303u;
          const float f0 = byte_to_denormal<0>(c4), f1 = byte_to_denormal<1>(c4);
          const float f2 = byte_to_denormal<2>(c4), f3 = byte_to_denormal<3>(c4);
          DSV4_UNROLL
          for (int v = 0; v < NB; ++v) {
            const float4h xv = x.ld(v, 128 * h + 32 * sh + 4 * i);
            float& a = s[i >> 2][v][i & 1];
            a = fma_f(f0, xv.x, a);
            a = fma_f(f1, xv.y, a);
            a = fma_f(f2, xv.z, a);
            a = fma_f(f3, xv.w, a);
          }
        }
        DSV4_UNROLL
        for (int half = 0; half < 2; ++half) {
          const int sb = 8 * h + 2 * sh + half;  // sub-block of 16 values; scale byte sb
          float scf, mf;
          scale_min_of(w, sb, &scf, &mf);
          const float dl = fmul_rn(d, scf);
          const float nl = -fmul_rn(dmin, mf);
          DSV4_UNROLL
          for (int v = 0; v < NB; ++v) {
            acc[v] = fma_f(dl, s[half][v][0] + s[half][v][1], acc[v]);
            acc[v] = fma_f(nl, xsum[v * xsum_vs + sb], acc[v]);
          }
        }
      }
    }
  }
};

// The int8-x variant (FormatGeom::x8, MatvecOp::x8): the 2-bit codes of 4 values, masked out of a
// code word, are already 4 unsigned bytes; dp4a with 4 int8 x gives sum(q xq) exactly, so
// y += dl * (x scale * sum(q xq)) - ml * sum16(x) per sub-block of 16, sum16 being the staged sum
// of the sub-block's quantized x times its scale.
struct FmtQ2_K_X8 {
  static constexpr FormatGeom kGeom = kGeomQ2_K_X8;
  static constexpr bool kDenormal = false;
  static constexpr bool kOptionalSmemX = false;

  template <int NB>
  DSV4_HD static void dot(const uint32_t (&w)[21], const X8& x, const uint32_t*, float (&acc)[NB]) {
    const float d = f16_bits_to_f32(w[20]);
    const float dmin = f16_bits_to_f32(w[20] >> 16);
    DSV4_UNROLL
    for (int h = 0; h < 2; ++h) {  // halves of 128 values: code bytes qs[32h .. 32h+31]
      DSV4_UNROLL
      for (int sh = 0; sh < 4; ++sh) {  // 2-bit field sh: values 128h + 32sh + l, l = 0..31
        int is[2][NB];
        DSV4_UNROLL
        for (int v = 0; v < NB; ++v) is[0][v] = is[1][v] = 0;
        DSV4_UNROLL
        for (int i = 0; i < 8; i += 2) {  // code bytes l = 4i .. 4i+7 (words 4 + 8h + i, +1)
          const uint32_t c0 = (w[4 + 8 * h + i] >> (2 * sh)) & 0x03030303u;
          const uint32_t c1 = (w[5 + 8 * h + i] >> (2 * sh)) & 0x03030303u;
          DSV4_UNROLL
          for (int v = 0; v < NB; ++v) {
            uint32_t xlo, xhi;
            x.q(v, 128 * h + 32 * sh + 4 * i, xlo, xhi);
            is[i >> 2][v] = dp4a_s8(c1, xhi, dp4a_s8(c0, xlo, is[i >> 2][v]));
          }
        }
        DSV4_UNROLL
        for (int half = 0; half < 2; ++half) {
          const int sb = 8 * h + 2 * sh + half;  // sub-block of 16 values; scale byte sb
          float scf, mf;
          FmtQ2_K::scale_min_of(w, sb, &scf, &mf);
          const float dl = fmul_rn(d, scf);
          const float nl = -fmul_rn(dmin, mf);
          DSV4_UNROLL
          for (int v = 0; v < NB; ++v) {
            const float sx = x.scale(v, 4 * h + sh);
            acc[v] = fma_f(dl, sx * (float)is[half][v], acc[v]);
            acc[v] = fma_f(nl, x.sum16(v, sb), acc[v]);
          }
        }
      }
    }
  }
};

}  // namespace dsv4::cuda::mv
