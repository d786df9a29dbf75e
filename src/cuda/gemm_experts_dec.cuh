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
// dequantizers (the same products and differences of exact integers, so the same bits).
// `kBlock`: bytes of one 256-value block (0: no fixed blocks; the wgmma kernel prefetches blocks
// into L2 ahead of load()). `kAlign` (fast decoders): the byte alignment load() needs of the
// tensor, row and expert strides. `kLut`: store() reads xdec::lut tables, not the IQ2_XXS grid.
template <int N>
struct DecIq2xxs {
  static constexpr bool kLut = false;
  static constexpr int kAlign = 2, kBlock = 66, kG = N / 32;  // groups of 32 sharing a scale
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
  static constexpr bool kLut = false;
  static constexpr int kAlign = 4, kBlock = 84, kS = N / 16;
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
  static constexpr bool kLut = false;
  static constexpr int kAlign = 16, kBlock = 144;
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

// Table-driven versions of the IQ2_XXS and Q2_K decoders (the wgmma kernel's; kLut): the same
// bits for fewer instructions. Within one group of values sharing a scale a value takes one of
// 3 (IQ2_XXS: db * {8, 25, 43}, signed) or 4 (Q2_K: dl * q - ml, q < 4) magnitudes, so each group
// computes those few f32 values with the scalar decoder's exact operations, rounds them to bf16
// once (T0, T1: up to four bf16 in 8 bytes), and every pair of outputs is one byte permute
// (prmt) of T0:T1 with a selector built from the two values' codes. A sign is applied after
// rounding: bf16(db * -m) == -bf16(db * m) exactly (round to nearest even is symmetric).
// Tables (shared memory, fill_tables): IQ2_XXS grid entry -> four 16-bit prmt selectors (one per
// output pair), and 7-bit sign code (+ parity) -> four sign masks (bits 15 and 31 of each pair).
namespace lut {

constexpr uint32_t code_of(uint32_t grid_byte) {  // IQ2_XXS grid bytes are 0x08, 0x19, 0x2b
  return grid_byte == 0x08 ? 0 : grid_byte == 0x19 ? 1 : 2;
}
// Selector of a bf16 pair from halfwords c0 (low) and c1 (high) of T0:T1.
constexpr uint32_t pair_sel(uint32_t c0, uint32_t c1) {
  return (2 * c0) | ((2 * c0 + 1) << 4) | ((2 * c1) << 8) | ((2 * c1 + 1) << 12);
}
struct Tables {
  uint64_t sel[256];   // per grid entry: pair q's selector in bits 16q .. 16q + 15
  uint32_t sign[512];  // per 7-bit sign code: 4 masks
};
constexpr Tables make_tables() {
  Tables t{};
  for (int i = 0; i < 256; ++i) {
    const uint64_t g = quant::detail::kIq2xxsGrid[i];
    uint64_t v = 0;
    for (int q = 0; q < 4; ++q) {
      const uint32_t c0 = code_of((uint32_t)(g >> (16 * q)) & 0xFF);
      const uint32_t c1 = code_of((uint32_t)(g >> (16 * q + 8)) & 0xFF);
      v |= (uint64_t)pair_sel(c0, c1) << (16 * q);
    }
    t.sel[i] = v;
  }
  for (uint32_t s7 = 0; s7 < 128; ++s7) {
    uint32_t par = 0;
    for (int b = 0; b < 7; ++b) par ^= (s7 >> b) & 1;
    const uint32_t signs = s7 | (par << 7);
    for (int q = 0; q < 4; ++q)
      t.sign[4 * s7 + q] = (((signs >> (2 * q)) & 1) << 15) | (((signs >> (2 * q + 1)) & 1) << 31);
  }
  return t;
}
constexpr bool grid_codes_ok() {
  for (int i = 0; i < 256; ++i)
    for (int j = 0; j < 8; ++j) {
      const uint32_t b = (uint32_t)(quant::detail::kIq2xxsGrid[i] >> (8 * j)) & 0xFF;
      if (b != 0x08 && b != 0x19 && b != 0x2b) return false;
    }
  return true;
}
static_assert(grid_codes_ok(), "IQ2_XXS grid bytes other than 8, 25, 43");
__device__ const Tables g_tables = make_tables();

// Two bf16 (lo, hi) in one word.
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  const __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&p);
}

}  // namespace lut

template <int N>
struct DecIq2xxsLut : DecIq2xxs<N> {
  static constexpr bool kLut = true;
  using DecIq2xxs<N>::kG;
  // Copies the tables into shared memory (`tab`: sizeof(lut::Tables) bytes, 16-byte aligned).
  static __device__ void fill_tables(uint64_t* tab, int tid, int nthreads) {
    const uint64_t* src = reinterpret_cast<const uint64_t*>(&lut::g_tables);
    for (int i = tid; i < (int)(sizeof(lut::Tables) / 8); i += nthreads) tab[i] = src[i];
  }
  template <class Out>
  __device__ void store(const Out& out, const uint64_t* tab, uint32_t mask) const {
    const lut::Tables& t = *reinterpret_cast<const lut::Tables*>(tab);
    const float dd = mv::f16f(this->d);
#pragma unroll
    for (int h = 0; h < kG; ++h) {
      const uint32_t A = this->A[h], B = this->B[h];
      const float db = __fmul_rn(__fmul_rn(dd, __fadd_rn(0.5f, (float)(B >> 28))), 0.25f);
      const uint32_t T0 = lut::pack2(__fmul_rn(db, 8.0f), __fmul_rn(db, 25.0f));
      const uint32_t T1 = lut::pack2(__fmul_rn(db, 43.0f), 0.0f);
      // All table reads first: the stores below may alias them as far as the compiler knows.
      uint64_t sel[4];
      uint4 sg[4];
#pragma unroll
      for (int l = 0; l < 4; ++l) {
        sel[l] = t.sel[(A >> (8 * l)) & 0xFF];
        sg[l] = *reinterpret_cast<const uint4*>(&t.sign[4 * ((B >> (7 * l)) & 127)]);
      }
#pragma unroll
      for (int l = 0; l < 4; ++l) {
        const uint32_t s0 = (uint32_t)sel[l], s1 = (uint32_t)(sel[l] >> 32);
        uint4 u;
        u.x = (__byte_perm(T0, T1, s0) ^ sg[l].x) & mask;
        u.y = (__byte_perm(T0, T1, s0 >> 16) ^ sg[l].y) & mask;
        u.z = (__byte_perm(T0, T1, s1) ^ sg[l].z) & mask;
        u.w = (__byte_perm(T0, T1, s1 >> 16) ^ sg[l].w) & mask;
        out(32 * h + 8 * l, u);
      }
    }
  }
};

template <int N>
struct DecQ2KLut : DecQ2K<N> {
  static constexpr bool kLut = true;
  using DecQ2K<N>::kS;
  static __device__ void fill_tables(uint64_t*, int, int) {}
  template <class Out>
  __device__ void store(const Out& out, const uint64_t*, uint32_t mask) const {
    const float d = mv::f16f(this->dm & 0xFFFF), dmin = mv::f16f(this->dm >> 16);
#pragma unroll
    for (int s = 0; s < kS; ++s) {
      const uint32_t sc = (this->scs >> (8 * s)) & 0xFF;
      const uint32_t sh = this->shift + 2 * (s >> 1);
      const float dl = __fmul_rn(d, (float)(sc & 0xF)), ml = __fmul_rn(dmin, (float)(sc >> 4));
      // The four values of q = 0..3 (the scalar decoder's operations), zeros past the matrix.
      const uint32_t T0 =
          lut::pack2(__fsub_rn(__fmul_rn(dl, 0.0f), ml), __fsub_rn(__fmul_rn(dl, 1.0f), ml)) & mask;
      const uint32_t T1 =
          lut::pack2(__fsub_rn(__fmul_rn(dl, 2.0f), ml), __fsub_rn(__fmul_rn(dl, 3.0f), ml)) & mask;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        uint32_t w[2];
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          // Bytes of 2 q for four consecutive values, then the selectors of their two pairs:
          // nibbles (2 q0, 2 q0 + 1, 2 q1, 2 q1 + 1) in the low and high halves.
          const uint32_t y = ((this->q[4 * (s & 1) + 2 * half + c] >> sh) << 1) & 0x06060606u;
          const uint32_t sel = y | (y << 4) | 0x10101010u;
          w[c] = sel;
        }
        uint4 u;
        u.x = __byte_perm(T0, T1, w[0]);
        u.y = __byte_perm(T0, T1, w[0] >> 16);
        u.z = __byte_perm(T0, T1, w[1]);
        u.w = __byte_perm(T0, T1, w[1] >> 16);
        out(16 * s + 8 * half, u);
      }
    }
  }
};

// Any format, value by value (mv::decode_value; byte loads): the tiny test models' plain types.
template <uint32_t T, int N>
struct DecGeneric {
  static constexpr bool kLut = false;
  static constexpr int kBlock = 0;
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
