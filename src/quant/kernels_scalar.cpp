// Scalar reference kernels: per-block decoders written after GGML's dequantize_row_* formulas
// (same f32 operations in the same order, so results are bit-identical to GGML and gguf-py), and
// the lane-ordered dot product described in kernels.h.
#include <cmath>

#include "quant/iq2_tables.h"
#include "quant/kernels.h"

namespace dsv4::quant::detail {
namespace {

void decode_q8_0(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  for (int j = 0; j < 32; ++j) y[j] = (float)(int8_t)b[2 + j] * d;
}

void decode_q2_k(const uint8_t* b, float* y) {
  const uint8_t* sc = b;
  const uint8_t* q = b + 16;
  const float d = f16_to_f32(load_u16(b + kQ2KOffD));
  const float dmin = f16_to_f32(load_u16(b + kQ2KOffDmin));
  int is = 0;
  for (int h = 0; h < 2; ++h) {  // two halves of 128 values, 32 code bytes each
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {  // two sub-blocks of 16 values
        const uint8_t s = sc[is++];
        const float dl = d * (float)(s & 0xF);
        const float ml = dmin * (float)(s >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * (float)((q[16 * half + l] >> shift) & 3) - ml;
      }
    }
    q += 32;
  }
}

void decode_q4_k(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  const float dmin = f16_to_f32(load_u16(b + 2));
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int c = 0; c < 4; ++c) {  // 64-value chunks: low nibbles, then high nibbles
    uint8_t sc, m;
    q4k_scale_min(2 * c, scales, &sc, &m);
    const float d1 = d * (float)sc;
    const float m1 = dmin * (float)m;
    q4k_scale_min(2 * c + 1, scales, &sc, &m);
    const float d2 = d * (float)sc;
    const float m2 = dmin * (float)m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * (float)(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * (float)(q[l] >> 4) - m2;
    q += 32;
  }
}

void decode_iq2_xxs(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  const uint8_t* q = b + 2;
  for (int g = 0; g < 8; ++g) {  // groups of 32 values: u32 grid indices, u32 signs + scale
    const uint32_t a = load_u32(q + 8 * g);
    const uint32_t s = load_u32(q + 8 * g + 4);
    const float db = iq2xxs_group_scale(d, s);
    for (int l = 0; l < 4; ++l) {
      const uint64_t grid = kIq2xxsGrid[(a >> (8 * l)) & 0xFF];
      const uint8_t signs = kKsignsIq2xs[(s >> (7 * l)) & 127];
      for (int j = 0; j < 8; ++j) {
        const float mag = (float)(uint8_t)(grid >> (8 * j));
        y[j] = db * mag * ((signs >> j) & 1 ? -1.f : 1.f);
      }
      y += 8;
    }
  }
}

float plain_value(GgmlType t, const void* src, int64_t i) {
  switch (t) {
    case GgmlType::F32:
      return static_cast<const float*>(src)[i];
    case GgmlType::F16:
      return f16_to_f32(static_cast<const uint16_t*>(src)[i]);
    default:
      return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);  // BF16
  }
}

using BlockDecoder = void (*)(const uint8_t*, float*);

struct BlockFormat {
  BlockDecoder decode;
  int elems;
  int bytes;
};

bool block_format(GgmlType t, BlockFormat* f) {
  switch (t) {
    case GgmlType::Q8_0:
      *f = {decode_q8_0, 32, kQ8_0Bytes};
      return true;
    case GgmlType::Q2_K:
      *f = {decode_q2_k, kQK, kQ2KBytes};
      return true;
    case GgmlType::Q4_K:
      *f = {decode_q4_k, kQK, kQ4KBytes};
      return true;
    case GgmlType::IQ2_XXS:
      *f = {decode_iq2_xxs, kQK, kIq2xxsBytes};
      return true;
    default:
      return false;
  }
}

}  // namespace

void dequantize_tail_scalar(GgmlType t, const void* src, float* dst, int64_t start, int64_t n) {
  for (int64_t i = start; i < n; ++i) dst[i] = plain_value(t, src, i);
}

void dot_tail_scalar(GgmlType t, const void* row, const float* x, int64_t start, int64_t n,
                     float* acc) {
  for (int64_t i = start; i < n; ++i) {
    float& a = acc[i % kLanes];
    a = std::fma(plain_value(t, row, i), x[i], a);
  }
}

void dequantize_scalar(GgmlType t, const void* src, float* dst, int64_t n) {
  BlockFormat f;
  if (!block_format(t, &f)) return dequantize_tail_scalar(t, src, dst, 0, n);
  const uint8_t* b = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; i += f.elems, b += f.bytes) f.decode(b, dst + i);
}

float dot_scalar(GgmlType t, const void* row, const float* x, int64_t n) {
  float acc[kLanes] = {};
  BlockFormat f;
  if (!block_format(t, &f)) {
    dot_tail_scalar(t, row, x, 0, n, acc);
    return reduce_lanes(acc);
  }
  const uint8_t* b = static_cast<const uint8_t*>(row);
  float w[kQK];
  for (int64_t i = 0; i < n; i += f.elems, b += f.bytes) {
    f.decode(b, w);
    for (int j = 0; j < f.elems; ++j) {
      float& a = acc[j % kLanes];  // blocks are whole multiples of 32 values
      a = std::fma(w[j], x[i + j], a);
    }
  }
  return reduce_lanes(acc);
}

}  // namespace dsv4::quant::detail
