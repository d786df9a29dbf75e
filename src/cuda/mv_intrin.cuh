// Portable wrappers of the device intrinsics used by the matvec decoders, so that the decoders and
// the kernel's work mapping compile for the host too (tests/cuda emulates the kernel on the CPU
// with the same code). On the device they are the intrinsics; on the host exact emulations.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#ifndef __CUDA_ARCH__
#include "core/half.h"
#endif

#define DSV4_HD __host__ __device__ __forceinline__
// Loop unrolling in code compiled for both sides (host compilers warn about #pragma unroll).
#ifdef __CUDA_ARCH__
#define DSV4_UNROLL _Pragma("unroll")
#else
#define DSV4_UNROLL
#endif

namespace dsv4::cuda::mv {

struct float4h {  // float4 with the same layout, usable on the host
  float x, y, z, w;
};

DSV4_HD float as_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// __byte_perm: byte n of the result is byte (s >> 4n) & 7 of {b, a} (a = bytes 0-3).
DSV4_HD uint32_t byte_perm(uint32_t a, uint32_t b, uint32_t s) {
#ifdef __CUDA_ARCH__
  return __byte_perm(a, b, s);
#else
  const uint64_t v = ((uint64_t)b << 32) | a;
  uint32_t d = 0;
  for (int n = 0; n < 4; ++n) d |= (uint32_t)((v >> (8 * ((s >> (4 * n)) & 7))) & 0xFF) << (8 * n);
  return d;
#endif
}

// prmt.b32 default mode: as byte_perm, and selector bit 3 replicates the selected byte's sign.
DSV4_HD uint32_t prmt(uint32_t a, uint32_t b, uint32_t s) {
#ifdef __CUDA_ARCH__
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(s));
  return d;
#else
  const uint64_t v = ((uint64_t)b << 32) | a;
  uint32_t d = 0;
  for (int n = 0; n < 4; ++n) {
    const uint32_t sel = (s >> (4 * n)) & 0xF;
    uint32_t byte = (uint32_t)((v >> (8 * (sel & 7))) & 0xFF);
    if (sel & 8) byte = (byte & 0x80) ? 0xFF : 0x00;
    d |= byte << (8 * n);
  }
  return d;
#endif
}

// (hi:lo) >> (shift & 31), low word.
DSV4_HD uint32_t funnel_r(uint32_t lo, uint32_t hi, uint32_t shift) {
#ifdef __CUDA_ARCH__
  return __funnelshift_r(lo, hi, shift);
#else
  return (uint32_t)((((uint64_t)hi << 32) | lo) >> (shift & 31));
#endif
}

DSV4_HD uint32_t popc(uint32_t v) {
#ifdef __CUDA_ARCH__
  return (uint32_t)__popc(v);
#else
  return (uint32_t)__builtin_popcount(v);
#endif
}

DSV4_HD float f16_bits_to_f32(uint32_t bits) {
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits & 0xFFFFu)));
#else
  return dsv4::f16_to_f32(static_cast<uint16_t>(bits & 0xFFFFu));
#endif
}

// Correctly rounded f32 ops that the compiler must not fuse.
DSV4_HD float fmul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  volatile float r = a * b;
  return r;
#endif
}
DSV4_HD float fadd_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  volatile float r = a + b;
  return r;
#endif
}
DSV4_HD float fma_f(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return fmaf(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// Byte K of w as an exact float: bits 0x4B0000bb = 2^23 + b, minus 2^23 (no conversion unit).
template <int K>
DSV4_HD float byte_to_float(uint32_t w) {
  return as_float(byte_perm(w, 0x4B000000u, 0x7440u | K)) - 8388608.0f;
}
// Byte K of w (0..255) as the denormal float b * 2^-149: exact, one PRMT.
template <int K>
DSV4_HD float byte_to_denormal(uint32_t w) {
  return as_float(byte_perm(w, 0u, 0x4440u | K));
}

// x accessor over a plain pointer (shared memory on the device, any memory on the host).
struct XPlain {
  const float* p;
  int64_t vs;
  DSV4_HD float4h ld(int v, int i) const {
#ifdef __CUDA_ARCH__
    const float4 q = *reinterpret_cast<const float4*>(p + v * vs + i);
    return float4h{q.x, q.y, q.z, q.w};
#else
    float4h r;
    std::memcpy(&r, p + v * vs + i, sizeof r);
    return r;
#endif
  }
};
// x accessor over global memory through the read-only path (device), plain loads (host).
struct XGlobal {
  const float* p;
  int64_t vs;
  DSV4_HD float4h ld(int v, int i) const {
#ifdef __CUDA_ARCH__
    const float4 q = __ldg(reinterpret_cast<const float4*>(p + v * vs + i));
    return float4h{q.x, q.y, q.z, q.w};
#else
    float4h r;
    std::memcpy(&r, p + v * vs + i, sizeof r);
    return r;
#endif
  }
};

// Signed 8-bit dot product of four byte lanes, accumulated into c (dp4a).
DSV4_HD int dp4a_s8(uint32_t a, uint32_t b, int c) {
#ifdef __CUDA_ARCH__
  return __dp4a((int)a, (int)b, c);
#else
  for (int j = 0; j < 4; ++j) c += (int)(int8_t)(a >> (8 * j)) * (int)(int8_t)(b >> (8 * j));
  return c;
#endif
}

// x staged as int8 (FormatGeom::x8): unit bytes [0, unit_values) hold the values, then one f32
// scale per 32 values, then (formats with minimums) per 16 values the sum of the quantized values
// times their scale; vs = bytes between vectors. q(v, i) returns the 8 int8 values [i, i+8) (i a
// multiple of 8) as two words, scale(v, k) the scale of values [32k, 32k+32), sum16(v, k) the sum
// of values [16k, 16k+16).
struct X8 {
  const unsigned char* p;
  int64_t vs;
  int unit_values;
  DSV4_HD void q(int v, int i, uint32_t& lo, uint32_t& hi) const {
#ifdef __CUDA_ARCH__
    const uint2 w = *reinterpret_cast<const uint2*>(p + v * vs + i);
    lo = w.x;
    hi = w.y;
#else
    std::memcpy(&lo, p + v * vs + i, 4);
    std::memcpy(&hi, p + v * vs + i + 4, 4);
#endif
  }
  DSV4_HD float scale(int v, int k) const {
    return f32_at(v * vs + unit_values + 4 * k);
  }
  DSV4_HD float sum16(int v, int k) const {
    return f32_at(v * vs + unit_values + 4 * (unit_values / 32) + 4 * k);
  }
  DSV4_HD float f32_at(int64_t off) const {
#ifdef __CUDA_ARCH__
    return *reinterpret_cast<const float*>(p + off);
#else
    float f;
    std::memcpy(&f, p + off, 4);
    return f;
#endif
  }
};

// int8 quantization of 32 values for X8 (the CPU reference of the tests does the same): scale
// = absmax / 127, q = rint(x * (127 / absmax)); all zero when absmax is 0.
DSV4_HD float x8_scale(float amax) {
  return amax / 127.0f;
}
DSV4_HD int x8_code(float x, float amax) {
  if (!(amax > 0.0f)) return 0;
  const float inv = 127.0f / amax;
#ifdef __CUDA_ARCH__
  return __float2int_rn(__fmul_rn(x, inv));
#else
  return (int)std::nearbyint(x * inv);
#endif
}

// Work mapping of the fast kernel (see mv_params.h), shared with the host emulation.
// Unit consumed by lane-in-row k of warp `warp` at step s.
DSV4_HD int unit_of(int s, int ks, int warp, int lr_log2, int k) {
  return ((s * ks + warp) << lr_log2) + k;
}
// Byte offset (from the step's base: row 0 of the CTA, first unit of the step) of granule i of a
// stage; rows past the last are clamped to it.
template <int kPer, int kUnitBytes, int kCopy>
DSV4_HD int granule_src(int i, int lr_log2, int last_row, int row_bytes) {
  const int sl = i / kPer;
  const int gi = i - sl * kPer;
  const int rr = sl >> lr_log2 < last_row ? sl >> lr_log2 : last_row;
  return rr * row_bytes + (sl & ((1 << lr_log2) - 1)) * kUnitBytes + gi * kCopy;
}
template <int kPer, int kUnitBytes, int kSlotBytes, int kCopy>
DSV4_HD int granule_dst(int i) {
  if constexpr (kSlotBytes == kUnitBytes) {
    return i * kCopy;
  } else {
    const int sl = i / kPer;
    return sl * kSlotBytes + (i - sl * kPer) * kCopy;
  }
}

// Scale of x staged for the denormal-code formats, and of their per-16 sums.
inline constexpr float kXScale = 0x1p96f;      // 2^kXShift
inline constexpr float kXsumScale = 0x1p-53f;  // 2^(kXShift - 149)
inline constexpr float kDenormOutScale = 0x1p53f;

}  // namespace dsv4::cuda::mv
