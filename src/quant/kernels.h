// Private to src/quant: block layouts, the per-block scalar decoders (the reference definition
// of every format) and the kernel entry points of each dispatch level.
//
// Dot-product order (identical at every dispatch level, so AVX2 == scalar bit for bit):
// 32 f32 lane accumulators, all starting at +0; element i of the row goes to lane i % 32 as
// acc = fma(w_i, x_i, acc) in increasing i, where w_i is the exact decoded (dequantized) weight;
// at the end the lanes are summed by reduce_lanes() in a fixed tree.
#pragma once
#include <cstdint>
#include <cstring>

#include "core/ggml_type.h"
#include "core/half.h"

namespace dsv4::quant::detail {

inline constexpr int kLanes = 32;

// The helpers below have internal linkage on purpose: this header is included by translation
// units compiled with different -m flags (kernels_avx2.cpp), and a shared inline definition could
// let the linker pick an AVX2-encoded copy for the scalar path.
namespace {

// Byte offsets of the GGML block layouts (ggml-common.h).
inline constexpr int kQ8_0Bytes = 34;  // f16 d; i8 qs[32]
inline constexpr int kQ2KBytes = 84;   // u8 scales[16]; u8 qs[64]; f16 d; f16 dmin
inline constexpr int kQ2KOffD = 80;
inline constexpr int kQ2KOffDmin = 82;
inline constexpr int kQ4KBytes = 144;    // f16 d; f16 dmin; u8 scales[12]; u8 qs[128]
inline constexpr int kIq2xxsBytes = 66;  // f16 d; u16 qs[32]
inline constexpr int kQK = 256;

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Q4_K: 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes.
inline void q4k_scale_min(int j, const uint8_t* s, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (uint8_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
    *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

// IQ2_XXS group scale: d * (0.5 + s) * 0.25, evaluated left to right in f32 like GGML.
inline float iq2xxs_group_scale(float d, uint32_t b) {
  return d * (0.5f + (float)(b >> 28)) * 0.25f;
}

// Sum of the 32 lane accumulators: ((l, l+8), (l+16, l+24)) pairs, then halving 8 -> 1.
inline float reduce_lanes(const float* acc) {
  float s[8];
  for (int l = 0; l < 8; ++l) s[l] = (acc[l] + acc[l + 8]) + (acc[l + 16] + acc[l + 24]);
  float t[4];
  for (int l = 0; l < 4; ++l) t[l] = s[l] + s[l + 4];
  const float u0 = t[0] + t[2];
  const float u1 = t[1] + t[3];
  return u0 + u1;
}

}  // namespace

// Scalar level (the reference). n is a multiple of the type's block size (checked by callers).
void dequantize_scalar(GgmlType t, const void* src, float* dst, int64_t n);
float dot_scalar(GgmlType t, const void* row, const float* x, int64_t n);
// Continues a dot of a plain type (F32/F16/BF16) from element `start` into the lane accumulators
// (used by the SIMD levels for the tail that is not a whole 32-value chunk).
void dot_tail_scalar(GgmlType t, const void* row, const float* x, int64_t start, int64_t n,
                     float* acc);
// Decodes values [start, n) of a plain type (F32/F16/BF16).
void dequantize_tail_scalar(GgmlType t, const void* src, float* dst, int64_t start, int64_t n);

#if DSV4_QUANT_HAVE_AVX2
void dequantize_avx2(GgmlType t, const void* src, float* dst, int64_t n);
float dot_avx2(GgmlType t, const void* row, const float* x, int64_t n);
#endif

}  // namespace dsv4::quant::detail
