// Decoders of quantized weight rows into bf16 for the grouped expert GEMMs (gemm_experts.cu,
// gemm_experts_wgmma.cu): each thread decodes a run of 32 or 64 values of one weight row per K
// step, bit-equal to gemm::dequant_bf16 (the same f32 operations, one round to bf16).
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/block_decode.cuh"
#include "cuda/gemm.h"

namespace dsv4::cuda::gemm::xdec {

// Eight values to bf16, ANDed with `mask` (0: zeros for weight rows past the matrix).
__device__ __forceinline__ uint4 pack8(const float (&v)[8], uint32_t mask) {
  __nv_bfloat162 p[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) p[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  uint4 u = *reinterpret_cast<const uint4*>(p);
  u.x &= mask;
  u.y &= mask;
  u.z &= mask;
  u.w &= mask;
  return u;
}

__device__ __forceinline__ uint32_t ldg16(const uint8_t* p) {
  return __ldg(reinterpret_cast<const unsigned short*>(p));
}
__device__ __forceinline__ uint32_t ldg32(const uint8_t* p) {
  return __ldg(reinterpret_cast<const unsigned int*>(p));
}

// Exact float of a small unsigned integer (< 2^23) without the conversion unit (I2F issues at a
// quarter of the FP32 rate): 2^23 + b is a float with mantissa b, minus 2^23 is exact.
__device__ __forceinline__ float small_u2f(uint32_t b) {
  return __fsub_rn(__uint_as_float(0x4B000000u | b), 8388608.0f);
}
// The same for byte j (0..3) of x: one byte permute builds 2^23 + byte.
__device__ __forceinline__ float byte_u2f(uint32_t x, int j) {
  return __fsub_rn(__uint_as_float(__byte_perm(x, 0x4B000000u, 0x7440 | j)), 8388608.0f);
}

// Decoders of N = 32 or 64 consecutive values (k % N == 0, inside one 256-value block) of one
// row: load() issues the global reads, store(out, ...) decodes them and hands each 8 consecutive
// values, packed as bf16 (pack8), to out(offset of the first of them, uint4); the kernel's `out`
// places them in its shared-memory layout. The decoding uses the f32 operations of gemm.cu's
// dequantizers (the same products and differences of exact integers, so
// the same bits). `kAlign` (fast decoders): the byte alignment load() needs of the tensor, row
// and expert strides.
template <int N>
struct DecIq2xxs {
  static constexpr int kAlign = 2, kG = N / 32;  // groups of 32 sharing a scale
  uint32_t d, A[kG], B[kG];
  __device__ void load(const uint8_t* row, int k) {
    const uint8_t* b = row + 66 * (k >> 8);
    const uint8_t* q = b + 2 + 8 * ((k & 255) >> 5);
    d = ldg16(b);
#pragma unroll
    for (int h = 0; h < kG; ++h) {
      A[h] = ldg16(q + 8 * h) | (ldg16(q + 8 * h + 2) << 16);
      B[h] = ldg16(q + 8 * h + 4) | (ldg16(q + 8 * h + 6) << 16);
    }
  }
  template <class Out>
  __device__ void store(const Out& out, const uint64_t* grid, uint32_t mask) const {
    const float dd = mv::f16f(d);
#pragma unroll
    for (int h = 0; h < kG; ++h) {
      const float db = __fmul_rn(__fmul_rn(dd, __fadd_rn(0.5f, (float)(B[h] >> 28))), 0.25f);
#pragma unroll
      for (int l = 0; l < 4; ++l) {
        const uint64_t g = grid[(A[h] >> (8 * l)) & 0xFF];
        const uint32_t s7 = (B[h] >> (7 * l)) & 127;
        const uint32_t signs = s7 | ((__popc(s7) & 1u) << 7);
        const uint32_t gw[2] = {(uint32_t)g, (uint32_t)(g >> 32)};
        float v[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          // -(db * m) == db * (-m) exactly: the sign goes onto the grid value.
          const float m = byte_u2f(gw[j / 4], j % 4);
          const uint32_t sbit = (signs << (31 - j)) & 0x80000000u;
          v[j] = __fmul_rn(db, __uint_as_float(__float_as_uint(m) ^ sbit));
        }
        out(32 * h + 8 * l, pack8(v, mask));
      }
    }
  }
};

// Q2_K: values 16j .. 16j + 15 of a block are sub-block j: quant bytes 32 (j / 8) + 16 (j % 2)
// .. + 15, shift 2 ((j % 8) / 2). For k = 32m the sub-blocks j = 2m + s (s < N / 16) share the
// 32 quant bytes; the shift grows by 2 every two sub-blocks.
template <int N>
struct DecQ2K {
  static constexpr int kAlign = 4, kS = N / 16;
  uint32_t q[8], scs, dm, shift;
  __device__ void load(const uint8_t* row, int k) {
    const uint8_t* b = row + 84 * (k >> 8);
    const int j = (k & 255) >> 4, h = j >> 3;
    shift = 2 * ((j % 8) / 2);
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = ldg32(b + 16 + 32 * h + 4 * i);
    scs = N == 64 ? ldg32(b + j) : ldg16(b + j);
    dm = ldg32(b + 80);
  }
  template <class Out>
  __device__ void store(const Out& out, const uint64_t*, uint32_t mask) const {
    const float d = mv::f16f(dm & 0xFFFF), dmin = mv::f16f(dm >> 16);
#pragma unroll
    for (int s = 0; s < kS; ++s) {
      const uint32_t sc = (scs >> (8 * s)) & 0xFF;
      const uint32_t sh = shift + 2 * (s >> 1);
      const float dl = __fmul_rn(d, (float)(sc & 0xF)), ml = __fmul_rn(dmin, (float)(sc >> 4));
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float v[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const int byte = 16 * (s & 1) + 8 * half + e;
          const uint32_t qv = (q[byte / 4] >> (8 * (byte % 4) + sh)) & 3;
          v[e] = __fsub_rn(__fmul_rn(dl, small_u2f(qv)), ml);
        }
        out(16 * s + 8 * half, pack8(v, mask));
      }
    }
  }
};

// Q4_K: values 32j .. 32j + 31 are sub-block j: the low (j even) or high nibbles of quant bytes
// 32 (j / 2) .. + 31.
template <int N>
struct DecQ4K {
  static constexpr int kAlign = 16;
  uint4 q0, q1;
  uint32_t s[3], dm;
  int j0;
  __device__ void load(const uint8_t* row, int k) {
    const uint8_t* b = row + 144 * (k >> 8);
    j0 = (k & 255) >> 5;
    const uint4* qp = reinterpret_cast<const uint4*>(b + 16 + 32 * (j0 >> 1));
    q0 = __ldg(qp);
    q1 = __ldg(qp + 1);
    dm = ldg32(b);
#pragma unroll
    for (int i = 0; i < 3; ++i) s[i] = ldg32(b + 4 + 4 * i);
  }
  template <class Out>
  __device__ void store(const Out& out, const uint64_t*, uint32_t mask) const {
    // Scale byte i (selects, not an indexed array: j0 is not a compile-time constant).
    auto sb = [&](int i) { return ((i < 4 ? s[0] : i < 8 ? s[1] : s[2]) >> (8 * (i & 3))) & 0xFF; };
    const float d = mv::f16f(dm & 0xFFFF), dmin = mv::f16f(dm >> 16);
    const uint32_t w[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
#pragma unroll
    for (int u = 0; u < N / 32; ++u) {
      const int j = j0 + u;
      const int nib = N == 64 ? 4 * u : 4 * (j & 1);  // N = 64: j0 is even
      uint32_t sc, m;
      if (j < 4) {
        sc = sb(j) & 63;
        m = sb(j + 4) & 63;
      } else {
        sc = (sb(j + 4) & 0xF) | ((sb(j - 4) >> 6) << 4);
        m = (sb(j + 4) >> 4) | ((sb(j) >> 6) << 4);
      }
      const float d1 = __fmul_rn(d, (float)sc), m1 = __fmul_rn(dmin, (float)m);
#pragma unroll
      for (int o = 0; o < 4; ++o) {
        float v[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const int byte = 8 * o + e;
          const uint32_t qv = (w[byte / 4] >> (8 * (byte % 4) + nib)) & 0xF;
          v[e] = __fsub_rn(__fmul_rn(d1, small_u2f(qv)), m1);
        }
        out(32 * u + 8 * o, pack8(v, mask));
      }
    }
  }
};

// Any format, value by value (mv::decode_value; byte loads): the tiny test models' plain types.
template <uint32_t T, int N>
struct DecGeneric {
  const uint8_t* row;
  int k;
  __device__ void load(const uint8_t* r, int k0) {
    row = r;
    k = k0;
  }
  template <class Out>
  __device__ void store(const Out& out, const uint64_t*, uint32_t mask) const {
#pragma unroll 2
    for (int o = 0; o < N / 8; ++o) {
      float v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = mv::decode_value(T, row, k + 8 * o + e);
      out(8 * o, pack8(v, mask));
    }
  }
};
template <uint32_t T>
struct Generic {
  template <int N>
  using Dec = DecGeneric<T, N>;
};

}  // namespace dsv4::cuda::gemm::xdec
