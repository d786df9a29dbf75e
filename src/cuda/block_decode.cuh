// Per-value decoding of every weight format on the device, with the f32 operations of quant's
// scalar decoders (no contraction), so a decoded value equals the CPU's bit for bit. Used by the
// generic matvec kernel (mv_generic.cu) and the dequantize-to-bf16 kernels of the prefill GEMM
// path (gemm.cu). Each including translation unit gets its own copy of the grid table.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

#include "core/ggml_type.h"
#include "quant/iq2_tables.h"

namespace dsv4::cuda::mv {
namespace {

struct Grid64 {
  uint64_t v[256];
};
constexpr Grid64 make_grid64() {
  Grid64 g{};
  for (int i = 0; i < 256; ++i) g.v[i] = quant::detail::kIq2xxsGrid[i];
  return g;
}
__device__ const Grid64 g_grid64 = make_grid64();

__device__ __forceinline__ uint32_t ld_u16(const uint8_t* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}
__device__ __forceinline__ uint32_t ld_u32(const uint8_t* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
__device__ __forceinline__ float f16f(uint32_t h) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
}

constexpr uint32_t T_F32 = (uint32_t)GgmlType::F32;
constexpr uint32_t T_F16 = (uint32_t)GgmlType::F16;
constexpr uint32_t T_BF16 = (uint32_t)GgmlType::BF16;
constexpr uint32_t T_Q8_0 = (uint32_t)GgmlType::Q8_0;
constexpr uint32_t T_Q2_K = (uint32_t)GgmlType::Q2_K;
constexpr uint32_t T_Q4_K = (uint32_t)GgmlType::Q4_K;
constexpr uint32_t T_IQ2_XXS = (uint32_t)GgmlType::IQ2_XXS;

// Value i of a row, with the f32 operations of quant's scalar decoders.
__device__ float decode_value(uint32_t type, const uint8_t* row, int i) {
  switch (type) {
    case T_F32:
      return __uint_as_float(ld_u32(row + 4 * (int64_t)i));
    case T_F16:
      return f16f(ld_u16(row + 2 * (int64_t)i));
    case T_BF16:
      return __uint_as_float(ld_u16(row + 2 * (int64_t)i) << 16);
    case T_Q8_0: {
      const uint8_t* b = row + 34 * (int64_t)(i / 32);
      const float d = f16f(ld_u16(b));
      return __fmul_rn((float)(int8_t)b[2 + i % 32], d);
    }
    case T_Q2_K: {
      const uint8_t* b = row + 84 * (int64_t)(i / 256);
      const int k = i % 256, h = k / 128, kk = k % 128, shift = 2 * (kk / 32), l = kk % 32;
      const uint32_t s = b[k / 16];
      const float d = f16f(ld_u16(b + 80)), dmin = f16f(ld_u16(b + 82));
      const float dl = __fmul_rn(d, (float)(s & 0xF));
      const float ml = __fmul_rn(dmin, (float)(s >> 4));
      const uint32_t q = (b[16 + 32 * h + l] >> shift) & 3;
      return __fsub_rn(__fmul_rn(dl, (float)q), ml);
    }
    case T_Q4_K: {
      const uint8_t* b = row + 144 * (int64_t)(i / 256);
      const int k = i % 256, c = k / 64, l = k % 64, j = 2 * c + (l >= 32 ? 1 : 0);
      const uint8_t* s = b + 4;
      uint32_t sc, m;
      if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
      } else {
        sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
      }
      const float d = f16f(ld_u16(b)), dmin = f16f(ld_u16(b + 2));
      const float d1 = __fmul_rn(d, (float)sc), m1 = __fmul_rn(dmin, (float)m);
      const uint32_t q = l < 32 ? (b[16 + 32 * c + l] & 0xF) : (b[16 + 32 * c + l - 32] >> 4);
      return __fsub_rn(__fmul_rn(d1, (float)q), m1);
    }
    case T_IQ2_XXS: {
      const uint8_t* b = row + 66 * (int64_t)(i / 256);
      const int k = i % 256, g = k / 32, l = (k % 32) / 8, j = k % 8;
      const float d = f16f(ld_u16(b));
      const uint32_t A = ld_u32(b + 2 + 8 * g), B = ld_u32(b + 6 + 8 * g);
      const float db = __fmul_rn(__fmul_rn(d, __fadd_rn(0.5f, (float)(B >> 28))), 0.25f);
      const uint64_t grid = g_grid64.v[(A >> (8 * l)) & 0xFF];
      const uint32_t s7 = (B >> (7 * l)) & 127;
      const uint32_t signs = s7 | ((__popc(s7) & 1u) << 7);
      const float mag = (float)(uint32_t)((grid >> (8 * j)) & 0xFF);
      const float w = __fmul_rn(db, mag);
      return (signs >> j) & 1 ? -w : w;
    }
    default:
      return __int_as_float(0x7fc00000);
  }
}

}  // namespace
}  // namespace dsv4::cuda::mv
