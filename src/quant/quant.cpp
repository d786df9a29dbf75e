// Public quant API: argument checks, run-time dispatch, threading, random blocks, quantizers.
#include "quant/quant.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#if DSV4_QUANT_HAVE_AVX2
#include <cpuid.h>
#endif

#include "core/error.h"
#include "core/half.h"
#include "quant/kernels.h"

namespace dsv4::quant {
namespace {

bool cpu_has_avx2() {
#if DSV4_QUANT_HAVE_AVX2
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return false;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  return (ecx & (1u << 29)) != 0;  // F16C
#else
  return false;
#endif
}

Dispatch detect_dispatch() {
  const char* force = std::getenv("DSV4_FORCE_SCALAR");
  if (force && *force && std::strcmp(force, "0") != 0) return Dispatch::kScalar;
  return cpu_has_avx2() ? Dispatch::kAvx2 : Dispatch::kScalar;
}

uint32_t block_elems(GgmlType t) {
  return ggml_type_traits((uint32_t)t)->block_elems;
}

void check_args(const char* what, GgmlType t, int64_t n) {
  if (!is_supported(t)) fail("quant::{}: type {} is not supported", what, ggml_type_name(t));
  const uint32_t be = block_elems(t);
  if (n < 0 || n % be != 0)
    fail("quant::{}: {} values is not a multiple of the {} block size {}", what, n,
         ggml_type_name(t), be);
}

void check_dispatch(Dispatch d) {
  if (!dispatch_available(d)) fail("quant: dispatch level {} is not available", (int)d);
}

using DotFn = float (*)(GgmlType, const void*, const float*, int64_t);
using DequantFn = void (*)(GgmlType, const void*, float*, int64_t);

DotFn dot_fn(Dispatch d) {
#if DSV4_QUANT_HAVE_AVX2
  if (d == Dispatch::kAvx2) return detail::dot_avx2;
#endif
  (void)d;
  return detail::dot_scalar;
}

DequantFn dequant_fn(Dispatch d) {
#if DSV4_QUANT_HAVE_AVX2
  if (d == Dispatch::kAvx2) return detail::dequantize_avx2;
#endif
  (void)d;
  return detail::dequantize_scalar;
}

// splitmix64: deterministic, seedable, good enough for test data.
struct SplitMix64 {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return (double)(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  uint8_t byte() { return (uint8_t)(next() >> 56); }
};

// f16 of a positive scale: finite (clamped to 65504), may be subnormal or zero for tiny scales.
uint16_t f16_scale(double v) {
  return f32_to_f16((float)std::min(v, 65504.0));
}

void put_u16(uint8_t* p, uint16_t v) {
  std::memcpy(p, &v, 2);
}
void put_u32(uint8_t* p, uint32_t v) {
  std::memcpy(p, &v, 4);
}

}  // namespace

bool is_supported(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q2_K:
    case GgmlType::Q4_K:
    case GgmlType::IQ2_XXS:
      return true;
    default:
      return false;
  }
}

Dispatch active_dispatch() {
  static const Dispatch d = detect_dispatch();
  return d;
}

bool dispatch_available(Dispatch d) {
  if (d == Dispatch::kScalar) return true;
  static const bool avx2 = cpu_has_avx2();
  return d == Dispatch::kAvx2 && avx2;
}

const char* dispatch_name(Dispatch d) {
  return d == Dispatch::kAvx2 ? "avx2" : "scalar";
}

const char* dispatch_level() {
  return dispatch_name(active_dispatch());
}

void dequantize_row(Dispatch d, GgmlType t, const void* src, float* dst, int64_t n) {
  check_args("dequantize_row", t, n);
  check_dispatch(d);
  dequant_fn(d)(t, src, dst, n);
}

float dot_row(Dispatch d, GgmlType t, const void* row, const float* x, int64_t n) {
  check_args("dot_row", t, n);
  check_dispatch(d);
  return dot_fn(d)(t, row, x, n);
}

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n) {
  dequantize_row(active_dispatch(), t, src, dst, n);
}

float dot_row(GgmlType t, const void* row, const float* x, int64_t n) {
  return dot_row(active_dispatch(), t, row, x, n);
}

void matvec(GgmlType t, const void* w, int64_t rows, int64_t cols, const float* x, float* y) {
  check_args("matvec", t, cols);
  if (rows < 0) fail("quant::matvec: negative row count {}", rows);
  const uint64_t row_bytes = ggml_row_bytes(t, (uint64_t)cols);
  const DotFn dot = dot_fn(active_dispatch());
  const uint8_t* base = static_cast<const uint8_t*>(w);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) y[r] = dot(t, base + (uint64_t)r * row_bytes, x, cols);
}

void matmul(GgmlType t, const void* w, int64_t rows, int64_t cols, const float* x, int64_t nb,
            float* y) {
  check_args("matmul", t, cols);
  if (rows < 0 || nb < 0) fail("quant::matmul: negative size (rows {}, batch {})", rows, nb);
  if (nb == 1) return matvec(t, w, rows, cols, x, y);
  const uint64_t row_bytes = ggml_row_bytes(t, (uint64_t)cols);
  const Dispatch d = active_dispatch();
  const DotFn dot = dot_fn(d);
  const DequantFn dequant = dequant_fn(d);
  const uint8_t* base = static_cast<const uint8_t*>(w);
  // Each row is decoded once (exactly) and then dotted as F32 with every input vector. The F32
  // dot performs the same fma sequence on the same decoded weights as the quantized dot, so
  // every element equals the matvec result bit for bit (independent of nb and thread count).
#pragma omp parallel
  {
    std::vector<float> buf(t == GgmlType::F32 ? 0 : (size_t)cols);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const void* row = base + (uint64_t)r * row_bytes;
      if (t != GgmlType::F32) {
        dequant(t, row, buf.data(), cols);
        row = buf.data();
      }
      for (int64_t b = 0; b < nb; ++b)
        y[b * rows + r] = dot(GgmlType::F32, row, x + b * cols, cols);
    }
  }
}

void random_blocks(GgmlType t, uint64_t seed, float scale, void* dst, int64_t n) {
  check_args("random_blocks", t, n);
  if (!(std::isfinite(scale) && scale >= 0))
    fail("quant::random_blocks: scale {} must be finite and >= 0", scale);
  SplitMix64 rng{seed ^ ((uint64_t)t << 56)};
  uint8_t* out = static_cast<uint8_t*>(dst);
  // Per-block jitter of the scale fields in [0.5, 1.5) exercises many distinct f16 values.
  auto jitter = [&] { return 0.5 + rng.uniform(); };
  // The divisors below make the RMS of the decoded values about `scale` (measured with uniform
  // codes and the jitter; the offsets of Q2_K/Q4_K are chosen so the mean is about 0).
  switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const float v = (float)((2.0 * rng.uniform() - 1.0) * std::sqrt(3.0) * scale);
        if (t == GgmlType::F32) std::memcpy(out + 4 * i, &v, 4);
        if (t == GgmlType::F16) put_u16(out + 2 * i, f32_to_f16(std::clamp(v, -65504.f, 65504.f)));
        if (t == GgmlType::BF16) put_u16(out + 2 * i, f32_to_bf16(v));
      }
      break;
    case GgmlType::Q8_0:  // q uniform in [-127, 127]
      for (int64_t i = 0; i < n; i += 32, out += detail::kQ8_0Bytes) {
        put_u16(out, f16_scale(scale / 76.5 * jitter()));
        for (int j = 0; j < 32; ++j) out[2 + j] = (uint8_t)(int8_t)((int)(rng.next() % 255) - 127);
      }
      break;
    case GgmlType::Q2_K:  // sc, m uniform 0..15, q 0..3: w = d sc q - dmin m, dmin ~ 1.5 d
      for (int64_t i = 0; i < n; i += detail::kQK, out += detail::kQ2KBytes) {
        for (int j = 0; j < 80; ++j) out[j] = rng.byte();
        put_u16(out + detail::kQ2KOffD, f16_scale(scale / 15.2 * jitter()));
        put_u16(out + detail::kQ2KOffDmin, f16_scale(scale / 15.2 * 1.5 * jitter()));
      }
      break;
    case GgmlType::Q4_K:  // sc, m uniform 0..63, q 0..15, dmin ~ 7.5 d
      for (int64_t i = 0; i < n; i += detail::kQK, out += detail::kQ4KBytes) {
        put_u16(out, f16_scale(scale / 285.0 * jitter()));
        put_u16(out + 2, f16_scale(scale / 285.0 * 7.5 * jitter()));
        for (int j = 4; j < detail::kQ4KBytes; ++j) out[j] = rng.byte();
      }
      break;
    case GgmlType::IQ2_XXS:  // grid {8,25,43}, (0.5+s)/4 with s 0..15
      for (int64_t i = 0; i < n; i += detail::kQK, out += detail::kIq2xxsBytes) {
        put_u16(out, f16_scale(scale / 56.0 * jitter()));
        for (int g = 0; g < 8; ++g) {
          const uint64_t r = rng.next();
          put_u32(out + 2 + 8 * g, (uint32_t)r);  // four grid indices
          // four 7-bit ksigns indices (the 8th sign is the table's parity bit) and a 4-bit scale
          put_u32(out + 6 + 8 * g, (uint32_t)(r >> 32));
        }
      }
      break;
    default:
      break;
  }
}

bool quantize_row(GgmlType t, const float* src, void* dst, int64_t n) {
  if (t != GgmlType::F32 && t != GgmlType::F16 && t != GgmlType::BF16 && t != GgmlType::Q8_0)
    return false;
  check_args("quantize_row", t, n);
  uint8_t* out = static_cast<uint8_t*>(dst);
  switch (t) {
    case GgmlType::F32:
      std::memcpy(dst, src, (size_t)n * 4);
      break;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) put_u16(out + 2 * i, f32_to_f16(src[i]));
      break;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) put_u16(out + 2 * i, f32_to_bf16(src[i]));
      break;
    default:  // Q8_0, as GGML's quantize_row_q8_0_ref: d = amax / 127, q = roundf(x / d)
      for (int64_t i = 0; i < n; i += 32, out += detail::kQ8_0Bytes) {
        float amax = 0.0f;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(src[i + j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_u16(out, f32_to_f16(d));
        for (int j = 0; j < 32; ++j) out[2 + j] = (uint8_t)(int8_t)std::round(src[i + j] * id);
      }
      break;
  }
  return true;
}

}  // namespace dsv4::quant
