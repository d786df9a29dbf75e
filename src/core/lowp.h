// The model's simulated low-precision formats (quantization-aware training, spec/ARCH.md §12.5):
// FP8 e4m3fn and FP4 e2m1 round trips with power-of-two (UE8M0) block scales, computed exactly
// as DeepSeek's reference kernels do (scale = 2^ceil(log2(amax * (1/max))) from the float bits).
#pragma once
#include <cmath>
#include <cstdint>

#include "core/half.h"

namespace dsv4 {

// ceil(log2(x)) for a positive finite float, from its IEEE bits (reference `fast_log2_ceil`).
inline int32_t ceil_log2_bits(float x) {
  const uint32_t b = f32_to_bits(x);
  const int32_t e = (int32_t)((b >> 23) & 0xff);
  const uint32_t man = b & 0x7fffff;
  return e - 127 + (man != 0 ? 1 : 0);
}
inline float pow2_bits(int32_t e) {
  return bits_to_f32((uint32_t)(e + 127) << 23);
}

// Round to the nearest e4m3fn value (ties to even); input already within [-448, 448].
inline float round_e4m3(float v) {
  const float a = std::fabs(v);
  if (a == 0.0f) return v;
  float quantum;
  if (a < 0.015625f) {
    quantum = 0.001953125f;  // subnormal step 2^-9
  } else {
    int e;
    std::frexp(a, &e);                  // a = m * 2^e, m in [0.5, 1)
    quantum = std::ldexp(1.0f, e - 4);  // 3 mantissa bits: step 2^(floor(log2 a) - 3)
  }
  float r = std::nearbyint(a / quantum) * quantum;
  if (r > 448.0f) r = 448.0f;
  return std::copysign(r, v);
}

// Round to the nearest e2m1 value {0, .5, 1, 1.5, 2, 3, 4, 6} (ties to even); input within [-6, 6].
inline float round_e2m1(float v) {
  const float a = std::fabs(v);
  const float quantum = a < 2.0f ? 0.5f : (a < 4.0f ? 1.0f : 2.0f);
  float r = std::nearbyint(a / quantum) * quantum;
  if (r > 6.0f) r = 6.0f;
  return std::copysign(r, v);
}

// FP8 e4m3 simulation on one block (block size 64 for KV rows).
inline void fp8_sim_block(float* v, int n) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = std::fmax(amax, std::fabs(v[i]));
  amax = std::fmax(amax, 1e-4f);
  const float s = pow2_bits(ceil_log2_bits(amax * (float)(1.0 / 448.0)));
  for (int i = 0; i < n; ++i) {
    float x = v[i] / s;
    x = std::fmin(std::fmax(x, -448.0f), 448.0f);
    v[i] = round_e4m3(x) * s;
  }
}

// FP4 e2m1 simulation on one block (block size 32 for indexer vectors).
inline void fp4_sim_block(float* v, int n) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = std::fmax(amax, std::fabs(v[i]));
  amax = std::fmax(amax, 6.0f * 1.1754943508222875e-38f);  // 6 * 2^-126
  const float s = pow2_bits(ceil_log2_bits(amax * (float)(1.0 / 6.0)));
  for (int i = 0; i < n; ++i) {
    float x = v[i] / s;
    x = std::fmin(std::fmax(x, -6.0f), 6.0f);
    v[i] = round_e2m1(x) * s;
  }
}

}  // namespace dsv4
