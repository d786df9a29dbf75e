// Unit tests of src/quant that need no oracle: hand-built blocks with known values, scalar vs
// AVX2 agreement, dot accuracy against an fp64 reference, matvec/matmul consistency, quantizers
// and random block generation. (Bit-exactness against gguf-py is test quant_oracle_gguf_py.)
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "quant/quant.h"

using namespace dsv4;
using namespace dsv4::quant;

namespace {

const GgmlType kAll[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16,   GgmlType::Q8_0,
                         GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS};
const GgmlType kBlocked[] = {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS};

uint32_t block_elems(GgmlType t) {
  return ggml_type_traits((uint32_t)t)->block_elems;
}
uint64_t row_bytes(GgmlType t, int64_t n) {
  return ggml_row_bytes(t, (uint64_t)n);
}

std::vector<uint8_t> random_row(GgmlType t, uint64_t seed, float scale, int64_t n) {
  std::vector<uint8_t> v(row_bytes(t, n));
  random_blocks(t, seed, scale, v.data(), n);
  return v;
}

std::vector<float> random_floats(uint64_t seed, int64_t n, float lo = -1.f, float hi = 1.f) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  std::vector<float> v((size_t)n);
  for (auto& f : v) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    f = lo + (hi - lo) * (float)((s >> 40) * 0x1.0p-24);
  }
  return v;
}

std::vector<uint8_t> random_bytes(uint64_t seed, size_t n) {
  std::vector<uint8_t> v(n);
  uint64_t s = seed * 0x2545f4914f6cdd1dull + 7;
  for (auto& b : v) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    b = (uint8_t)(s >> 32);
  }
  return v;
}

std::vector<float> decode(GgmlType t, const void* src, int64_t n, Dispatch d = active_dispatch()) {
  std::vector<float> out((size_t)n);
  dequantize_row(d, t, src, out.data(), n);
  return out;
}

// Bitwise equality with all NaNs considered equal.
bool same_bits(float a, float b) {
  return f32_to_bits(a) == f32_to_bits(b) || (std::isnan(a) && std::isnan(b));
}

void expect_decodes_to(GgmlType t, const std::vector<uint8_t>& raw,
                       const std::vector<float>& want) {
  for (Dispatch d : {Dispatch::kScalar, Dispatch::kAvx2}) {
    if (!dispatch_available(d)) continue;
    const auto got = decode(t, raw.data(), (int64_t)want.size(), d);
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_TRUE(same_bits(got[i], want[i]))
          << ggml_type_name(t) << " " << dispatch_name(d) << " value " << i << ": got " << got[i]
          << " want " << want[i];
  }
}

void put16(std::vector<uint8_t>& v, size_t off, uint16_t x) {
  std::memcpy(&v[off], &x, 2);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Hand-built blocks (expected values computed from the format definitions in ARCH.md §12).

TEST(KnownValues, F32) {
  const std::vector<float> want = random_floats(1, 45, -1e30f, 1e30f);
  std::vector<uint8_t> raw(want.size() * 4);
  std::memcpy(raw.data(), want.data(), raw.size());
  expect_decodes_to(GgmlType::F32, raw, want);
}

TEST(KnownValues, F16) {
  const uint16_t h[] = {0x3c00, 0xc000, 0x0001, 0x03ff, 0x0400, 0x7bff,
                        0x7c00, 0xfc00, 0x8000, 0x3555, 0x8001, 0x7e00};
  const float w[] = {1.f,
                     -2.f,
                     std::ldexp(1.f, -24),
                     1023 * std::ldexp(1.f, -24),
                     std::ldexp(1.f, -14),
                     65504.f,
                     INFINITY,
                     -INFINITY,
                     -0.f,
                     0.333251953125f,
                     -std::ldexp(1.f, -24),
                     NAN};
  std::vector<uint8_t> raw;
  std::vector<float> want;
  for (int rep = 0; rep < 5; ++rep)  // 60 values: a SIMD chunk and a tail
    for (size_t i = 0; i < std::size(h); ++i) {
      raw.push_back((uint8_t)h[i]);
      raw.push_back((uint8_t)(h[i] >> 8));
      want.push_back(w[i]);
    }
  expect_decodes_to(GgmlType::F16, raw, want);
}

TEST(KnownValues, BF16) {
  const uint16_t h[] = {0x3f80, 0xc040, 0x0001, 0x7f80, 0xff80, 0x8000, 0x4049, 0x7f7f};
  const float w[] = {1.f,  -3.f,      std::ldexp(1.f, -133),  INFINITY, -INFINITY,
                     -0.f, 3.140625f, bits_to_f32(0x7f7f0000)};
  std::vector<uint8_t> raw;
  std::vector<float> want;
  for (int rep = 0; rep < 9; ++rep)
    for (size_t i = 0; i < std::size(h); ++i) {
      raw.push_back((uint8_t)h[i]);
      raw.push_back((uint8_t)(h[i] >> 8));
      want.push_back(w[i]);
    }
  expect_decodes_to(GgmlType::BF16, raw, want);
}

TEST(KnownValues, Q8_0) {
  std::vector<uint8_t> raw(2 * 34);
  std::vector<float> want;
  put16(raw, 0, 0x3800);   // d = 0.5
  put16(raw, 34, 0xbc00);  // d = -1
  for (int j = 0; j < 32; ++j) {
    const int q = j == 0 ? -128 : j == 31 ? 127 : j - 16;
    raw[2 + j] = (uint8_t)(int8_t)q;
    raw[36 + j] = (uint8_t)(int8_t)(3 * j - 40);
  }
  for (int j = 0; j < 32; ++j) want.push_back(0.5f * (j == 0 ? -128 : j == 31 ? 127 : j - 16));
  for (int j = 0; j < 32; ++j) want.push_back(-1.f * (3 * j - 40));
  expect_decodes_to(GgmlType::Q8_0, raw, want);
}

TEST(KnownValues, Q2_K) {
  std::vector<uint8_t> raw(84, 0);
  for (int s = 0; s < 16; ++s) raw[s] = (uint8_t)((s % 16) | ((15 - s) << 4));
  auto code = [](int i) { return (i * 7 + i / 5) % 4; };
  for (int i = 0; i < 256; ++i) {  // ARCH §12.2 index formula
    const int h = i / 128, k = i % 128, shift = 2 * (k / 32), l = k % 32;
    raw[16 + 32 * h + l] |= (uint8_t)(code(i) << shift);
  }
  put16(raw, 80, 0x3c00);  // d = 1
  put16(raw, 82, 0x3800);  // dmin = 0.5
  std::vector<float> want;
  for (int i = 0; i < 256; ++i) {
    const int s = i / 16;
    want.push_back(1.f * (float)(s % 16) * (float)code(i) - 0.5f * (float)(15 - s));
  }
  expect_decodes_to(GgmlType::Q2_K, raw, want);
}

TEST(KnownValues, Q4_K) {
  std::vector<uint8_t> raw(144, 0);
  int sc[8], m[8];
  for (int j = 0; j < 8; ++j) sc[j] = 5 + 7 * j, m[j] = 63 - 9 * j;
  uint8_t* s = raw.data() + 4;
  for (int j = 0; j < 4; ++j) {  // inverse of the ARCH §12.3 packing
    s[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
    s[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
  auto code = [](int i) { return (i * 5 + i / 7) % 16; };
  for (int i = 0; i < 256; ++i) {
    const int c = i / 64, l = i % 32;
    raw[16 + 32 * c + l] |= (uint8_t)(i % 64 < 32 ? code(i) : code(i) << 4);
  }
  put16(raw, 0, 0x3400);  // d = 0.25
  put16(raw, 2, 0x4000);  // dmin = 2
  std::vector<float> want;
  for (int i = 0; i < 256; ++i) {
    const int j = i / 32;
    want.push_back(0.25f * (float)sc[j] * (float)code(i) - 2.f * (float)m[j]);
  }
  expect_decodes_to(GgmlType::Q4_K, raw, want);
}

TEST(KnownValues, IQ2_XXS) {
  std::vector<uint8_t> raw(66, 0);
  put16(raw, 0, 0x3c00);  // d = 1
  // group 0: grid indices {1, 0, 255, 2}; sign indices {1, 0, 127, 3}; scale nibble 3
  raw[2] = 1, raw[3] = 0, raw[4] = 255, raw[5] = 2;
  const uint32_t b = 1u | (0u << 7) | (127u << 14) | (3u << 21) | (3u << 28);
  std::memcpy(&raw[6], &b, 4);
  const float db = 1.f * (0.5f + 3.f) * 0.25f;  // 0.875
  // iq2xxs_grid[1] = 0x080808080808082b, [0] = all 8, [255] = 0x2b2b2b1908081908,
  // [2] = 0x0808080808081919; ksigns[1] = 0x81, [0] = 0, [127] = 0xff, [3] = 0x03.
  const float g0[32] = {-43, 8,   8,  8,  8,   8,   8,   -8,  8,   8,   8, 8, 8, 8, 8, 8,
                        -8,  -25, -8, -8, -25, -43, -43, -43, -25, -25, 8, 8, 8, 8, 8, 8};
  std::vector<float> want;
  for (float v : g0) want.push_back(db * v);
  // groups 1..7 are all-zero bytes: scale (0.5 + 0) * 0.25, grid 8, no signs -> 1.0
  for (int i = 32; i < 256; ++i) want.push_back(1.f);
  expect_decodes_to(GgmlType::IQ2_XXS, raw, want);
}

// ---------------------------------------------------------------------------------------------
// Scalar vs SIMD.

TEST(ScalarVsSimd, DequantizeIsBitExact) {
  if (!dispatch_available(Dispatch::kAvx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  for (GgmlType t : kAll) {
    const int64_t n = 256 * 40;
    for (int kind = 0; kind < 3; ++kind) {
      std::vector<uint8_t> raw;
      if (kind < 2) {
        raw = random_row(t, 100 + kind, kind == 0 ? 1.f : 1e-4f, n);
      } else {  // arbitrary bytes: any f16 scale, including subnormal, inf and NaN
        raw = random_bytes(7 + (uint64_t)t, row_bytes(t, n));
      }
      const auto a = decode(t, raw.data(), n, Dispatch::kScalar);
      const auto b = decode(t, raw.data(), n, Dispatch::kAvx2);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_TRUE(same_bits(a[i], b[i])) << ggml_type_name(t) << " kind " << kind << " i " << i;
    }
  }
}

TEST(ScalarVsSimd, F16EveryBitPatternExactIncludingNaNPayload) {
  if (!dispatch_available(Dispatch::kAvx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  std::vector<uint16_t> h(65536);
  for (uint32_t i = 0; i < 65536; ++i) h[i] = (uint16_t)i;
  for (GgmlType t : {GgmlType::F16, GgmlType::BF16}) {
    const auto a = decode(t, h.data(), 65536, Dispatch::kScalar);
    const auto b = decode(t, h.data(), 65536, Dispatch::kAvx2);
    for (uint32_t i = 0; i < 65536; ++i) {
      ASSERT_EQ(f32_to_bits(a[i]), f32_to_bits(b[i])) << ggml_type_name(t) << " " << i;
      ASSERT_EQ(f32_to_bits(a[i]), f32_to_bits(t == GgmlType::F16 ? f16_to_f32((uint16_t)i)
                                                                  : bf16_to_f32((uint16_t)i)));
    }
  }
}

// The documented tolerance between the levels is zero: same lane order, exact decoding, fma.
TEST(ScalarVsSimd, DotIsBitExact) {
  if (!dispatch_available(Dispatch::kAvx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  for (GgmlType t : kAll) {
    for (int64_t n : {256, 512, 4096, 7168}) {
      const auto w = random_row(t, 11 + n, 0.05f, n);
      const auto x = random_floats(5 + n, n);
      const float a = dot_row(Dispatch::kScalar, t, w.data(), x.data(), n);
      const float b = dot_row(Dispatch::kAvx2, t, w.data(), x.data(), n);
      ASSERT_EQ(f32_to_bits(a), f32_to_bits(b)) << ggml_type_name(t) << " n " << n;
    }
  }
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16}) {
    for (int64_t n : {0, 1, 5, 31, 32, 33, 77, 1000}) {
      const auto w = random_row(t, 3 + n, 1.f, n);
      const auto x = random_floats(9 + n, n);
      const float a = dot_row(Dispatch::kScalar, t, w.data(), x.data(), n);
      const float b = dot_row(Dispatch::kAvx2, t, w.data(), x.data(), n);
      ASSERT_EQ(f32_to_bits(a), f32_to_bits(b)) << ggml_type_name(t) << " n " << n;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Dot accuracy: |dot - fp64 reference| <= (n/32 + 5) * 2^-24 * sum |w x| (32 lanes of n/32 fma
// each, then a 5-level tree).

TEST(Dot, MatchesFp64ReferenceWithinBound) {
  for (Dispatch d : {Dispatch::kScalar, Dispatch::kAvx2}) {
    if (!dispatch_available(d)) continue;
    for (GgmlType t : kAll) {
      for (int64_t n : {256, 2048, 4096}) {
        const auto w = random_row(t, 21 + n, 0.02f, n);
        const auto x = random_floats(22 + n, n);
        const auto wf = decode(t, w.data(), n, Dispatch::kScalar);
        double ref = 0, mag = 0;
        for (int64_t i = 0; i < n; ++i) {
          ref += (double)wf[i] * x[i];
          mag += std::fabs((double)wf[i] * x[i]);
        }
        const double bound = ((double)n / 32 + 5) * std::ldexp(1.0, -24) * mag;
        const float got = dot_row(d, t, w.data(), x.data(), n);
        EXPECT_LE(std::fabs(got - ref), bound)
            << ggml_type_name(t) << " " << dispatch_name(d) << " n " << n;
        EXPECT_GT(mag, 0.0);
      }
    }
  }
}

TEST(Dot, ZeroLengthAndZeros) {
  for (GgmlType t : kAll) {
    EXPECT_EQ(dot_row(t, nullptr, nullptr, 0), 0.f);
    const int64_t n = 512;
    std::vector<uint8_t> zero(row_bytes(t, n), 0);
    const auto x = random_floats(1, n);
    EXPECT_EQ(f32_to_bits(dot_row(t, zero.data(), x.data(), n)), 0u) << ggml_type_name(t);
  }
}

// ---------------------------------------------------------------------------------------------
// matvec / matmul.

TEST(MatVec, MatmulEqualsMatvecAndDotBitwise) {
  const int64_t rows = 37, cols = 768;
  for (GgmlType t : kAll) {
    const auto w = random_row(t, 31, 0.03f, rows * cols);
    const size_t rb = row_bytes(t, cols);
    for (int64_t nb : {1, 2, 5}) {
      const auto x = random_floats(40 + nb, nb * cols);
      std::vector<float> y((size_t)(nb * rows));
      matmul(t, w.data(), rows, cols, x.data(), nb, y.data());
      for (int64_t b = 0; b < nb; ++b) {
        std::vector<float> yv((size_t)rows);
        matvec(t, w.data(), rows, cols, x.data() + b * cols, yv.data());
        for (int64_t r = 0; r < rows; ++r) {
          ASSERT_EQ(f32_to_bits(y[b * rows + r]), f32_to_bits(yv[r]))
              << ggml_type_name(t) << " nb " << nb << " b " << b << " r " << r;
          ASSERT_EQ(f32_to_bits(yv[r]),
                    f32_to_bits(dot_row(t, w.data() + r * rb, x.data() + b * cols, cols)));
        }
      }
    }
  }
}

TEST(MatVec, IndependentOfThreadCountAndBatch) {
  const int64_t rows = 53, cols = 512, nb = 6;
  const int saved = omp_get_max_threads();
  for (GgmlType t : kAll) {
    const auto w = random_row(t, 77, 0.03f, rows * cols);
    const auto x = random_floats(78, nb * cols);
    std::vector<float> ref((size_t)(nb * rows));
    omp_set_num_threads(1);
    matmul(t, w.data(), rows, cols, x.data(), nb, ref.data());
    for (int threads : {2, 3, 4}) {
      omp_set_num_threads(threads);
      std::vector<float> y((size_t)(nb * rows));
      matmul(t, w.data(), rows, cols, x.data(), nb, y.data());
      EXPECT_EQ(std::memcmp(y.data(), ref.data(), y.size() * 4), 0)
          << ggml_type_name(t) << " threads " << threads;
      // a sub-batch (the last 2 vectors) gives the same elements
      std::vector<float> ys((size_t)(2 * rows));
      matmul(t, w.data(), rows, cols, x.data() + (nb - 2) * cols, 2, ys.data());
      EXPECT_EQ(std::memcmp(ys.data(), ref.data() + (nb - 2) * rows, ys.size() * 4), 0)
          << ggml_type_name(t) << " threads " << threads;
      std::vector<float> yv((size_t)rows);
      matvec(t, w.data(), rows, cols, x.data() + cols, yv.data());
      EXPECT_EQ(std::memcmp(yv.data(), ref.data() + rows, yv.size() * 4), 0);
    }
  }
  omp_set_num_threads(saved);
}

// ---------------------------------------------------------------------------------------------
// Quantizers.

TEST(Quantize, Q8_0ErrorBoundAndZeros) {
  const int64_t n = 32 * 500;
  auto x = random_floats(5, n, -3.f, 3.f);
  for (int64_t b = 0; b < n / 32; b += 7)  // vary the block magnitudes
    for (int j = 0; j < 32; ++j) x[b * 32 + j] *= std::ldexp(1.f, (int)(b % 23) - 11);
  for (int j = 0; j < 32; ++j) x[32 + j] = 0.f;  // an all-zero block
  std::vector<uint8_t> q(row_bytes(GgmlType::Q8_0, n));
  ASSERT_TRUE(quantize_row(GgmlType::Q8_0, x.data(), q.data(), n));
  const auto y = decode(GgmlType::Q8_0, q.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 127;
    const float d16 = f16_to_f32(f32_to_f16(d));
    // rounding of q (d/2) plus storing d as f16 (|q| <= 127), plus f32 slack
    const double bound = 0.5 * d + 127.0 * std::fabs(d16 - d) + 1e-6 * amax;
    for (int j = 0; j < 32; ++j)
      ASSERT_LE(std::fabs((double)y[b * 32 + j] - x[b * 32 + j]), bound) << b << " " << j;
    if (amax == 0) {
      for (int j = 0; j < 32; ++j) EXPECT_EQ(q[b * 34 + 2 + j], 0);
    }
  }
}

TEST(Quantize, Q8_0MatchesGgmlReference) {
  // x = j/10 in one block: amax 3.1, d = 3.1/127, q = roundf(x * (1/d)), halves away from zero.
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = (j % 2 ? -1.f : 1.f) * (float)j / 10.f;
  uint8_t q[34];
  ASSERT_TRUE(quantize_row(GgmlType::Q8_0, x, q, 32));
  const float d = 3.1f / 127.f;
  const float id = 1.f / d;
  uint16_t dh;
  std::memcpy(&dh, q, 2);
  EXPECT_EQ(dh, f32_to_f16(d));
  for (int j = 0; j < 32; ++j) EXPECT_EQ((int8_t)q[2 + j], (int)std::roundf(x[j] * id)) << j;
  EXPECT_EQ((int8_t)q[2 + 31], -127);
}

TEST(Quantize, PlainFormatsRoundTrip) {
  const int64_t n = 1000;
  auto x = random_floats(8, n, -70000.f, 70000.f);
  x[0] = 1e-7f, x[1] = -0.f, x[2] = INFINITY;
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16}) {
    std::vector<uint8_t> q(row_bytes(t, n));
    ASSERT_TRUE(quantize_row(t, x.data(), q.data(), n));
    const auto y = decode(t, q.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const float want = t == GgmlType::F32   ? x[i]
                         : t == GgmlType::F16 ? f16_to_f32(f32_to_f16(x[i]))
                                              : bf16_to_f32(f32_to_bf16(x[i]));
      ASSERT_EQ(f32_to_bits(y[i]), f32_to_bits(want)) << ggml_type_name(t) << " " << i;
    }
  }
}

TEST(Quantize, UnsupportedTypesReturnFalse) {
  float x[256] = {};
  uint8_t q[256];
  for (GgmlType t : {GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS, GgmlType::I32})
    EXPECT_FALSE(quantize_row(t, x, q, 256)) << ggml_type_name(t);
}

// ---------------------------------------------------------------------------------------------
// random_blocks.

TEST(RandomBlocks, DeterministicFiniteAndScaled) {
  for (GgmlType t : kAll) {
    const int64_t n = 256 * 64;
    const auto a = random_row(t, 42, 0.5f, n);
    const auto b = random_row(t, 42, 0.5f, n);
    const auto c = random_row(t, 43, 0.5f, n);
    EXPECT_EQ(a, b) << ggml_type_name(t);
    EXPECT_NE(a, c) << ggml_type_name(t);
    for (float scale : {0.5f, 1e-3f, 300.f}) {
      const auto r = random_row(t, 9, scale, n);
      const auto v = decode(t, r.data(), n);
      double ss = 0;
      for (float f : v) {
        ASSERT_TRUE(std::isfinite(f)) << ggml_type_name(t);
        ss += (double)f * f;
      }
      const double rms = std::sqrt(ss / (double)n);
      EXPECT_GT(rms, 0.75 * scale) << ggml_type_name(t) << " scale " << scale;
      EXPECT_LT(rms, 1.33 * scale) << ggml_type_name(t) << " scale " << scale;
    }
  }
}

TEST(RandomBlocks, Iq2xxsUsesAllSignPatternsAndScales) {
  const int64_t n = 256 * 200;
  const auto r = random_row(GgmlType::IQ2_XXS, 5, 1.f, n);
  bool sign_seen[128] = {}, scale_seen[16] = {};
  for (int64_t blk = 0; blk < n / 256; ++blk)
    for (int g = 0; g < 8; ++g) {
      uint32_t s;
      std::memcpy(&s, &r[blk * 66 + 2 + 8 * g + 4], 4);
      for (int l = 0; l < 4; ++l) sign_seen[(s >> (7 * l)) & 127] = true;
      scale_seen[s >> 28] = true;
    }
  for (bool b : sign_seen) EXPECT_TRUE(b);
  for (bool b : scale_seen) EXPECT_TRUE(b);
}

// ---------------------------------------------------------------------------------------------
// API contract.

TEST(Api, SupportedTypesAndErrors) {
  for (GgmlType t : kAll) EXPECT_TRUE(is_supported(t)) << ggml_type_name(t);
  for (GgmlType t : {GgmlType::I32, GgmlType::Q4_0, GgmlType::Q6_K, GgmlType::IQ2_XS})
    EXPECT_FALSE(is_supported(t)) << ggml_type_name(t);
  float out[256];
  uint8_t buf[1024] = {};
  EXPECT_THROW(dequantize_row(GgmlType::I32, buf, out, 4), Error);
  EXPECT_THROW(dequantize_row(GgmlType::Q4_K, buf, out, 100), Error);
  EXPECT_THROW(dot_row(GgmlType::Q8_0, buf, out, 33), Error);
  EXPECT_THROW(random_blocks(GgmlType::Q2_K, 1, 1.f, buf, 255), Error);
  for (GgmlType t : kBlocked) EXPECT_GT(block_elems(t), 1u);
}

TEST(Dispatch, LevelNameAndForceScalar) {
  const std::string level = dispatch_level();
  EXPECT_TRUE(level == "avx2" || level == "scalar") << level;
  EXPECT_TRUE(dispatch_available(Dispatch::kScalar));
  const char* force = std::getenv("DSV4_FORCE_SCALAR");
  if (force && std::string(force) == "1") {
    EXPECT_EQ(level, "scalar");
  } else if (dispatch_available(Dispatch::kAvx2)) {
    EXPECT_EQ(level, "avx2");
  }
  if (!dispatch_available(Dispatch::kAvx2)) {
    float out[32];
    uint8_t buf[64] = {};
    EXPECT_THROW(dequantize_row(Dispatch::kAvx2, GgmlType::Q8_0, buf, out, 32), Error);
  }
}
