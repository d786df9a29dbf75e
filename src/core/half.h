// Exact IEEE half and bfloat16 conversions (no dependency on compiler _Float16 support).
#pragma once
#include <cstdint>
#include <cstring>

namespace dsv4 {

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t man = h & 0x3ff;
  if (exp == 0) {
    // zero or subnormal: man * 2^-24, exact in f32
    float v = (float)man * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (man << 13));
  return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

// Round-to-nearest-even f32 -> f16, with overflow to inf and NaN kept quiet.
inline uint16_t f32_to_f16(float f) {
  uint32_t x = f32_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000;
  x &= 0x7fffffff;
  if (x > 0x7f800000u) return (uint16_t)(sign | 0x7e00);   // NaN
  if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // overflow (>= 65520) -> inf
  if (x < 0x38800000u) {                                   // below min normal 2^-14
    // subnormal: value / 2^-24 rounded to nearest even
    float v = bits_to_f32(x);
    float q = v * 16777216.0f;  // exact scaling by 2^24
    uint32_t r = (uint32_t)q;
    float frac = q - (float)r;
    if (frac > 0.5f || (frac == 0.5f && (r & 1))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t mant_odd = (x >> 13) & 1;
  x += 0xc8000fffu + mant_odd;  // rebias exponent (-112<<23) and round
  return (uint16_t)(sign | (x >> 13));
}

inline float bf16_to_f32(uint16_t b) {
  return bits_to_f32((uint32_t)b << 16);
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t x = f32_to_bits(f);
  if ((x & 0x7fffffff) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

}  // namespace dsv4
