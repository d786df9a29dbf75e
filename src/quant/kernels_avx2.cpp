// AVX2/FMA/F16C kernels (this file alone is compiled with -mavx2 -mfma -mf16c; it is only called
// after a run-time CPU check). Every block is decoded into four 8-float vectors per 32 values with
// exactly the scalar decoder's f32 operations, so dequantization is bit-identical to the scalar
// level; the dot products use the lane order of kernels.h (lane i % 32, fma, reduce_lanes), so
// they are bit-identical to the scalar level too (for finite values; NaN payloads may differ).
// Only functions with internal linkage (or the two entry points) may be defined here, and no
// external inline function may be odr-used (e.g. dsv4::f16_to_f32): see kernels.h.
#include <immintrin.h>

#include <type_traits>

#include "quant/iq2_tables.h"
#include "quant/kernels.h"

namespace dsv4::quant::detail {
namespace {

// f16 scale -> f32 (F16C): equals f16_to_f32 for every non-NaN value, and a NaN scale gives NaN
// results either way.
inline float scale_f16(const uint8_t* p) {
  return _cvtsh_ss(load_u16(p));
}

inline __m256 i8x8_to_ps(__m128i v) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}
inline __m256 u8x8_to_ps(__m128i v) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
}
inline __m128i hi64(__m128i v) {
  return _mm_srli_si128(v, 8);
}

// Exact f16 -> f32 of 8 values with integer operations only (NaN payloads kept, like f16_to_f32).
inline __m256 f16x8_exact(__m128i h16) {
  const __m256i h = _mm256_cvtepu16_epi32(h16);
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x8000)), 16);
  const __m256i em = _mm256_and_si256(h, _mm256_set1_epi32(0x7fff));
  const __m256i rebias = _mm256_set1_epi32(0x38000000);  // (127 - 15) << 23
  __m256i o = _mm256_add_epi32(_mm256_slli_epi32(em, 13), rebias);
  const __m256i inf_nan = _mm256_cmpgt_epi32(em, _mm256_set1_epi32(0x7bff));
  o = _mm256_add_epi32(o, _mm256_and_si256(inf_nan, rebias));
  const __m256i sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x0400), em);
  const __m256 subv =
      _mm256_mul_ps(_mm256_cvtepi32_ps(em), _mm256_set1_ps(5.9604644775390625e-08f));
  o = _mm256_blendv_epi8(o, _mm256_castps_si256(subv), sub);
  return _mm256_castsi256_ps(_mm256_or_si256(o, sign));
}

inline __m256 bf16x8(__m128i h16) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h16), 16));
}

// Block decoders produce 8-float vectors w and hand each to sink.put<G>(i, w), where i is the
// index of its first value and G = (i / 8) % 4 its group of 8 lanes (a compile-time constant, so
// the dot's four accumulators stay in registers). For a given G the calls come in increasing i.

template <int G>
using Int = std::integral_constant<int, G>;

template <class F>
inline void for_groups(F&& f) {  // f(Int<0>), ..., f(Int<3>)
  f(Int<0>{}), f(Int<1>{}), f(Int<2>{}), f(Int<3>{});
}

template <class Sink>
inline void q8_0_block(const uint8_t* b, int64_t i, Sink& sink) {
  const __m256 d = _mm256_set1_ps(scale_f16(b));
  for_groups([&](auto g) {
    constexpr int G = decltype(g)::value;
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + 8 * G));
    sink.template put<G>(i + 8 * G, _mm256_mul_ps(i8x8_to_ps(q), d));
  });
}

// Q2_K: each 16-value sub-block s has only four values, dl[s] * q - ml[s] for q = 0..3: they are
// computed with the scalar decoder's operations and looked up with vpermps. Code byte l of half h
// holds the codes of values 128h + 32k + l (k = 0..3) in bits 2k..2k+1; the table holds the four
// values twice, so index bit 2 (the next code's low bit) needs no masking.
template <class Sink>
inline void q2_k_block(const uint8_t* b, int64_t i, Sink& sink) {
  const __m256 d = _mm256_set1_ps(scale_f16(b + kQ2KOffD));
  const __m256 dmin = _mm256_set1_ps(scale_f16(b + kQ2KOffDmin));
  const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
  const __m128i sc_lo = _mm_and_si128(sc, _mm_set1_epi8(0x0F));
  const __m128i sc_hi = _mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(0x0F));
  alignas(32) float dl[16], ml[16];
  _mm256_store_ps(dl, _mm256_mul_ps(d, u8x8_to_ps(sc_lo)));
  _mm256_store_ps(dl + 8, _mm256_mul_ps(d, u8x8_to_ps(hi64(sc_lo))));
  _mm256_store_ps(ml, _mm256_mul_ps(dmin, u8x8_to_ps(sc_hi)));
  _mm256_store_ps(ml + 8, _mm256_mul_ps(dmin, u8x8_to_ps(hi64(sc_hi))));
  const __m256 codes = _mm256_setr_ps(0, 1, 2, 3, 0, 1, 2, 3);
  for (int h = 0; h < 2; ++h) {
    const uint8_t* q = b + 16 + 32 * h;
    __m256i v[4];
    for_groups([&](auto g) {
      constexpr int G = decltype(g)::value;
      v[G] = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * G)));
    });
    for (int k = 0; k < 4; ++k) {
      const int s = 8 * h + 2 * k;
      const __m256 t0 = _mm256_sub_ps(_mm256_mul_ps(_mm256_broadcast_ss(dl + s), codes),
                                      _mm256_broadcast_ss(ml + s));
      const __m256 t1 = _mm256_sub_ps(_mm256_mul_ps(_mm256_broadcast_ss(dl + s + 1), codes),
                                      _mm256_broadcast_ss(ml + s + 1));
      const __m128i shift = _mm_cvtsi32_si128(2 * k);
      for_groups([&](auto g) {
        constexpr int G = decltype(g)::value;
        const __m256i idx = _mm256_srl_epi32(v[G], shift);
        sink.template put<G>(i + 128 * h + 32 * k + 8 * G,
                             _mm256_permutevar8x32_ps(G < 2 ? t0 : t1, idx));
      });
    }
  }
}

template <class Sink>
inline void q4_k_block(const uint8_t* b, int64_t i, Sink& sink) {
  const float d = scale_f16(b);
  const float dmin = scale_f16(b + 2);
  const uint8_t* scales = b + 4;
  const __m256i low4 = _mm256_set1_epi32(0x0F);
  for (int c = 0; c < 4; ++c) {
    uint8_t sc, m;
    q4k_scale_min(2 * c, scales, &sc, &m);
    const __m256 d1 = _mm256_set1_ps(d * (float)sc);
    const __m256 m1 = _mm256_set1_ps(dmin * (float)m);
    q4k_scale_min(2 * c + 1, scales, &sc, &m);
    const __m256 d2 = _mm256_set1_ps(d * (float)sc);
    const __m256 m2 = _mm256_set1_ps(dmin * (float)m);
    const uint8_t* q = b + 16 + 32 * c;
    __m256i v[4];  // code bytes zero-extended to 32 bits
    for_groups([&](auto g) {
      constexpr int G = decltype(g)::value;
      v[G] = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * G)));
      const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(v[G], low4));
      sink.template put<G>(i + 64 * c + 8 * G, _mm256_sub_ps(_mm256_mul_ps(d1, lo), m1));
    });
    for_groups([&](auto g) {
      constexpr int G = decltype(g)::value;
      const __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(v[G], 4));
      sink.template put<G>(i + 64 * c + 32 + 8 * G, _mm256_sub_ps(_mm256_mul_ps(d2, hi), m2));
    });
  }
}

// IQ2_XXS: the grid rows as 8 floats and the sign patterns as 8 sign-bit masks (12 KiB of tables);
// w = db * (±grid) equals (db * grid) * ±1 exactly (negation commutes with rounding).
struct alignas(32) Iq2Tables {
  float grid[256][8];
  uint32_t sign[128][8];
};
constexpr Iq2Tables make_iq2_tables() {
  Iq2Tables t{};
  for (int i = 0; i < 256; ++i)
    for (int j = 0; j < 8; ++j) t.grid[i][j] = (float)((kIq2xxsGrid[i] >> (8 * j)) & 0xFF);
  for (int i = 0; i < 128; ++i)
    for (int j = 0; j < 8; ++j) t.sign[i][j] = (kKsignsIq2xs[i] >> j) & 1 ? 0x80000000u : 0u;
  return t;
}
constexpr Iq2Tables kIq2 = make_iq2_tables();

template <class Sink>
inline void iq2_xxs_block(const uint8_t* b, int64_t i, Sink& sink) {
  const float d = scale_f16(b);
  const char* grid = reinterpret_cast<const char*>(kIq2.grid);
  const char* sign = reinterpret_cast<const char*>(kIq2.sign);
  const uint8_t* q = b + 2;
  for (int g8 = 0; g8 < 8; ++g8) {
    const uint32_t a = load_u32(q + 8 * g8);
    const uint32_t s = load_u32(q + 8 * g8 + 4);
    const __m256 scale = _mm256_set1_ps(iq2xxs_group_scale(d, s));
    for_groups([&](auto g) {
      constexpr int G = decltype(g)::value;
      // byte offsets of the table rows (32 bytes each): grid index byte G of a, sign index
      // bits 7G..7G+6 of s
      const uint32_t go = G == 0 ? (a << 5) & 0x1FE0 : (a >> (8 * G - 5)) & 0x1FE0;
      const uint32_t so = G == 0 ? (s << 5) & 0xFE0 : (s >> (7 * G - 5)) & 0xFE0;
      const __m256 gv = _mm256_load_ps(reinterpret_cast<const float*>(grid + go));
      const __m256 sv = _mm256_load_ps(reinterpret_cast<const float*>(sign + so));
      sink.template put<G>(i + 32 * g8 + 8 * G, _mm256_mul_ps(scale, _mm256_xor_ps(gv, sv)));
    });
  }
}

template <bool kForDot, class Sink>
inline void plain_chunks(GgmlType t, const void* src, int64_t n, Sink& sink) {
  for (int64_t i = 0; i + kLanes <= n; i += kLanes) {
    for_groups([&](auto g) {
      constexpr int G = decltype(g)::value;
      const int64_t k = i + 8 * G;
      __m256 w;
      if (t == GgmlType::F32) {
        w = _mm256_loadu_ps(static_cast<const float*>(src) + k);
      } else {
        const __m128i h = _mm_loadu_si128(
            reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(src) + k));
        if (t == GgmlType::BF16) {
          w = bf16x8(h);
        } else if constexpr (kForDot) {  // hardware conversion: exact for every non-NaN value
          w = _mm256_cvtph_ps(h);
        } else {
          w = f16x8_exact(h);
        }
      }
      sink.template put<G>(k, w);
    });
  }
}

template <bool kForDot, class Sink>
inline void for_each_vector(GgmlType t, const void* src, int64_t n, Sink& sink) {
  const uint8_t* b = static_cast<const uint8_t*>(src);
  switch (t) {
    case GgmlType::Q8_0:
      for (int64_t i = 0; i < n; i += 32, b += kQ8_0Bytes) q8_0_block(b, i, sink);
      break;
    case GgmlType::Q2_K:
      for (int64_t i = 0; i < n; i += kQK, b += kQ2KBytes) q2_k_block(b, i, sink);
      break;
    case GgmlType::Q4_K:
      for (int64_t i = 0; i < n; i += kQK, b += kQ4KBytes) q4_k_block(b, i, sink);
      break;
    case GgmlType::IQ2_XXS:
      for (int64_t i = 0; i < n; i += kQK, b += kIq2xxsBytes) iq2_xxs_block(b, i, sink);
      break;
    case GgmlType::F32:
      plain_chunks<kForDot>(GgmlType::F32, src, n, sink);
      break;
    case GgmlType::F16:
      plain_chunks<kForDot>(GgmlType::F16, src, n, sink);
      break;
    default:
      plain_chunks<kForDot>(GgmlType::BF16, src, n, sink);
      break;
  }
}

struct StoreSink {
  float* dst;
  template <int G>
  void put(int64_t i, __m256 w) {
    _mm256_storeu_ps(dst + i, w);
  }
};

struct DotSink {
  const float* x;
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  template <int G>
  void put(int64_t i, __m256 w) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    if constexpr (G == 0) a0 = _mm256_fmadd_ps(w, xv, a0);
    if constexpr (G == 1) a1 = _mm256_fmadd_ps(w, xv, a1);
    if constexpr (G == 2) a2 = _mm256_fmadd_ps(w, xv, a2);
    if constexpr (G == 3) a3 = _mm256_fmadd_ps(w, xv, a3);
  }
};

bool is_plain(GgmlType t) {
  return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16;
}

}  // namespace

void dequantize_avx2(GgmlType t, const void* src, float* dst, int64_t n) {
  StoreSink sink{dst};
  for_each_vector<false>(t, src, n, sink);
  if (is_plain(t)) dequantize_tail_scalar(t, src, dst, n / kLanes * kLanes, n);
}

float dot_avx2(GgmlType t, const void* row, const float* x, int64_t n) {
  DotSink sink{x};
  for_each_vector<true>(t, row, n, sink);
  alignas(32) float acc[kLanes];
  _mm256_store_ps(acc, sink.a0);
  _mm256_store_ps(acc + 8, sink.a1);
  _mm256_store_ps(acc + 16, sink.a2);
  _mm256_store_ps(acc + 24, sink.a3);
  if (is_plain(t)) dot_tail_scalar(t, row, x, n / kLanes * kLanes, n, acc);
  return reduce_lanes(acc);
}

}  // namespace dsv4::quant::detail
