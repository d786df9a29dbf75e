// Hyper-connection kernels of a decode step against references, on fresh random data (seed
// printed; DSV4_TEST_SEED=<n> reproduces) with NaN-poisoned outputs:
//  * fwd::hc_post_mix (hc_post fused with the next sublayer's mix partials) against fwd::hc_post
//    followed by fwd::hc_mix_partials: the same X bit for bit, and partial mixes whose sums over
//    the slices match a double-precision product of the mix matrix with the new X;
//  * fwd::moe_combine_post_mix (the MoE combine fused with the next layer's mix partials) in the
//    same way against fwd::moe_combine_post followed by fwd::hc_mix_partials;
//  * fwd::hc_mixes (a prefill chunk's mixes) against the double-precision product, for token
//    counts that leave a partial tile, fewer rows than the kernel's 24 and several column counts;
//    rows past `rows` and tokens past n must stay as they were (poison), and unsupported shapes
//    must be refused;
//  * fwd::hc_pre_parts and fwd::hc_pre of one token with post and comb formed on a second stream
//    (comb_s, the decode forward's split) against the one-launch form: xin, post and comb bit
//    for bit, none left NaN;
//  * fwd::hc_post and fwd::moe_combine_post of a chunk (the vectorized hc = 4 kernels) against a
//    double-precision reference of the same formula, with the grouped row layout (pos) and an
//    invalid row (-1) whose token must come out NaN.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "cuda/device.h"
#include "cuda/fwd_kernels.h"
#include "cuda_test_util.h"
#include "test_seed.h"

namespace {

namespace cu = dsv4::cuda;
namespace fwd = dsv4::cuda::fwd;
using dsv4::test::run_seed;

using dsv4::test::download;
using dsv4::test::upload;

// Rows whose partial mixes, summed over the G slices, miss the double-precision product of the
// F16 matrix W [rows][cols] with X by more than 1e-5 of the sum of |terms|, in either buffer (a
// slice left NaN counts too).
int bad_mix_sums(const std::vector<uint16_t>& W, const std::vector<float>& X, int rows, int G,
                 const cu::DeviceBuffer& p1, const cu::DeviceBuffer& p2) {
  const size_t cols = X.size();
  const auto g1 = download<float>(p1, (size_t)G * rows);
  const auto g2 = download<float>(p2, (size_t)G * rows);
  int bad = 0;
  for (int r = 0; r < rows; ++r) {
    double ref = 0.0, mag = 0.0, s1 = 0.0, s2 = 0.0;
    for (size_t c = 0; c < cols; ++c) {
      const double t = (double)dsv4::f16_to_f32(W[(size_t)r * cols + c]) * X[c];
      ref += t;
      mag += std::fabs(t);
    }
    for (int g = 0; g < G; ++g) {
      s1 += g1[(size_t)g * rows + r];
      s2 += g2[(size_t)g * rows + r];
    }
    bad += !(std::fabs(s1 - ref) <= 1e-5 * mag) + !(std::fabs(s2 - ref) <= 1e-5 * mag);
  }
  return bad;
}

TEST(CudaHc, PostMixMatchesPostThenPartials) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed());
  std::normal_distribution<float> nd(0.0f, 1.0f);
  constexpr int hc = 4, rows = (2 + hc) * hc;
  for (int D : {4096, 64, 256}) {
    ASSERT_TRUE(fwd::hc_mix_partials_supported(rows, (int64_t)hc * D, hc, D)) << D;
    const int cols = hc * D, G = fwd::hc_mix_slices(cols);
    std::vector<float> f((size_t)D), post(hc), comb(hc * hc), X((size_t)cols);
    std::vector<uint16_t> W((size_t)rows * cols);
    for (auto& v : f) v = nd(rng);
    for (auto& v : post) v = 2.0f / (1.0f + std::exp(-nd(rng)));
    for (auto& v : comb) v = std::fabs(nd(rng)) * 0.5f;
    for (auto& v : X) v = nd(rng);
    for (auto& v : W) v = dsv4::f32_to_f16(0.05f * nd(rng));
    auto df = upload(f), dpost = upload(post), dcomb = upload(comb), dW = upload(W);
    auto dX1 = upload(X), dX2 = upload(X);
    // Poisoned by synchronous copies (a memset on the legacy stream could race with `st`).
    const std::vector<float> poison((size_t)G * rows, std::nanf(""));
    auto p1 = upload(poison), p2 = upload(poison);
    cu::Stream st;
    fwd::hc_post(df.as<float>(), dpost.as<float>(), dcomb.as<float>(), 1, D, hc, dX1.as<float>(),
                 st.get());
    fwd::hc_mix_partials(dW.data(), dX1.as<float>(), rows, cols, p1.as<float>(), st.get());
    fwd::hc_post_mix(df.as<float>(), dpost.as<float>(), dcomb.as<float>(), D, dX2.as<float>(),
                     dW.data(), rows, p2.as<float>(), st.get());
    st.sync();
    const auto X1 = download<float>(dX1, X.size()), X2 = download<float>(dX2, X.size());
    EXPECT_EQ(std::memcmp(X1.data(), X2.data(), sizeof(float) * X.size()), 0) << "D " << D;
    EXPECT_EQ(bad_mix_sums(W, X1, rows, G, p1, p2), 0) << "D " << D;
  }
}

TEST(CudaHc, PreWithCombOnSideStreamMatchesOneLaunch) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed() + 5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  constexpr int hc = 4, mix = (2 + hc) * hc, iters = 20;
  for (int D : {4096, 64, 256}) {
    const int cols = hc * D, G = fwd::hc_mix_slices(cols);
    std::vector<float> X((size_t)cols), parts((size_t)G * mix), mixes(mix), base(mix), scale(3),
        norm((size_t)D);
    for (auto& v : X) v = nd(rng);
    for (auto& v : parts) v = 0.3f * nd(rng);
    for (auto& v : mixes) v = nd(rng);
    for (auto& v : base) v = 0.5f * nd(rng);
    for (auto& v : scale) v = 0.1f + std::fabs(nd(rng));
    for (auto& v : norm) v = 1.0f + 0.1f * nd(rng);
    auto dX = upload(X), dparts = upload(parts), dmixes = upload(mixes), dbase = upload(base),
         dscale = upload(scale), dnorm = upload(norm);
    for (bool from_parts : {true, false}) {
      std::vector<float> got[2][3];
      for (int split = 0; split < 2; ++split) {
        auto xin = upload(std::vector<float>((size_t)D, std::nanf("")));
        auto post = upload(std::vector<float>(hc, std::nanf("")));
        auto comb = upload(std::vector<float>(hc * hc, std::nanf("")));
        cu::Stream st, side;
        cudaStream_t cs = split ? side.get() : nullptr;
        if (from_parts)
          fwd::hc_pre_parts(dX.as<float>(), dparts.as<float>(), G, dbase.as<float>(),
                            dscale.as<float>(), dnorm.as<float>(), D, hc, iters, 1e-6f, 1e-6f,
                            post.as<float>(), comb.as<float>(), xin.as<float>(), st.get(), cs);
        else
          fwd::hc_pre(dX.as<float>(), dmixes.as<float>(), dbase.as<float>(), dscale.as<float>(),
                      dnorm.as<float>(), 1, D, hc, iters, 1e-6f, 1e-6f, post.as<float>(),
                      comb.as<float>(), xin.as<float>(), st.get(), cs);
        st.sync();
        side.sync();
        got[split][0] = download<float>(xin, (size_t)D);
        got[split][1] = download<float>(post, hc);
        got[split][2] = download<float>(comb, hc * hc);
      }
      for (int b = 0; b < 3; ++b) {
        const auto& a = got[0][b];
        EXPECT_EQ(std::memcmp(a.data(), got[1][b].data(), sizeof(float) * a.size()), 0)
            << "D " << D << " parts " << from_parts << " buffer " << b;
        EXPECT_TRUE(std::all_of(a.begin(), a.end(), [](float v) { return std::isfinite(v); }))
            << "D " << D << " parts " << from_parts << " buffer " << b;
      }
    }
  }
}

TEST(CudaHc, MoeCombinePostMixMatchesCombineThenPartials) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed() + 1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  constexpr int hc = 4, rows = (2 + hc) * hc, k = 6, E = 256;
  for (int D : {4096, 128}) {
    const int cols = hc * D, G = fwd::hc_mix_slices(cols);
    std::vector<float> contrib((size_t)k * D), shared((size_t)D), post(hc), comb(hc * hc),
        X((size_t)cols);
    std::vector<int32_t> ids(k);
    std::vector<uint16_t> W((size_t)rows * cols);
    for (auto& v : contrib) v = nd(rng);
    for (auto& v : shared) v = nd(rng);
    for (auto& v : post) v = 2.0f / (1.0f + std::exp(-nd(rng)));
    for (auto& v : comb) v = std::fabs(nd(rng)) * 0.5f;
    for (auto& v : X) v = nd(rng);
    for (auto& v : W) v = dsv4::f32_to_f16(0.05f * nd(rng));
    for (int j = 0; j < k; ++j) {  // distinct ids in random order: the combine sorts them
      int32_t e;
      do {
        e = (int32_t)(rng() % E);
      } while (std::find(ids.begin(), ids.begin() + j, e) != ids.begin() + j);
      ids[(size_t)j] = e;
    }
    auto dc = upload(contrib), dsh = upload(shared), dpost = upload(post), dcomb = upload(comb),
         dW = upload(W), dids = upload(ids);
    auto dX1 = upload(X), dX2 = upload(X);
    const std::vector<float> poison((size_t)G * rows, std::nanf(""));
    auto p1 = upload(poison), p2 = upload(poison);
    cu::Stream st;
    fwd::moe_combine_post(dc.as<float>(), dsh.as<float>(), dids.as<int32_t>(), nullptr, 1, k, D,
                          dpost.as<float>(), dcomb.as<float>(), hc, dX1.as<float>(), st.get());
    fwd::hc_mix_partials(dW.data(), dX1.as<float>(), rows, cols, p1.as<float>(), st.get());
    fwd::moe_combine_post_mix(dc.as<float>(), dsh.as<float>(), dids.as<int32_t>(), k, D,
                              dpost.as<float>(), dcomb.as<float>(), dX2.as<float>(), dW.data(),
                              rows, p2.as<float>(), st.get());
    st.sync();
    const auto X1 = download<float>(dX1, X.size()), X2 = download<float>(dX2, X.size());
    EXPECT_EQ(std::memcmp(X1.data(), X2.data(), sizeof(float) * X.size()), 0) << "D " << D;
    EXPECT_EQ(bad_mix_sums(W, X1, rows, G, p1, p2), 0) << "D " << D;
  }
}

TEST(CudaHc, ChunkMixesMatchFloat64) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed());
  std::normal_distribution<float> nd(0.0f, 1.0f);
  struct Case {
    int n, rows, cols;
  };
  for (const Case& cs : {Case{8192, 24, 16384}, Case{45, 24, 512}, Case{33, 7, 256},
                         Case{1, 24, 128}, Case{100, 16, 1024}}) {
    const int n = cs.n, rows = cs.rows, cols = cs.cols;
    std::vector<float> X((size_t)n * cols);
    std::vector<uint16_t> W((size_t)rows * cols);
    for (auto& v : X) v = nd(rng);
    for (auto& v : W) v = dsv4::f32_to_f16(0.05f * nd(rng));
    auto dX = upload(X), dW = upload(W);
    ASSERT_TRUE(fwd::hc_mixes_supported(rows, cols, dW.data()));
    // One spare token row of poison after the output: it must stay NaN.
    const std::vector<float> poison((size_t)(n + 1) * rows, std::nanf(""));
    auto dy = upload(poison);
    cu::Stream st;
    fwd::hc_mixes(dW.data(), dX.as<float>(), n, rows, cols, dy.as<float>(), st.get());
    st.sync();
    const auto y = download<float>(dy, poison.size());
    int bad = 0;
    // Every token of the small cases; a sample of the large one (the double loop is slow).
    const int step = n > 1000 ? 97 : 1;
    for (int i = 0; i < n; i += step)
      for (int r = 0; r < rows; ++r) {
        double ref = 0.0, mag = 0.0;
        for (int c = 0; c < cols; ++c) {
          const double t =
              (double)dsv4::f16_to_f32(W[(size_t)r * cols + c]) * X[(size_t)i * cols + c];
          ref += t;
          mag += std::fabs(t);
        }
        const float v = y[(size_t)i * rows + r];
        bad += !(std::fabs(v - ref) <= 1e-5 * mag);
      }
    EXPECT_EQ(bad, 0) << "n " << n << " rows " << rows << " cols " << cols;
    for (int r = 0; r < rows; ++r) EXPECT_TRUE(std::isnan(y[(size_t)n * rows + r])) << r;
  }
  std::vector<uint16_t> W(25 * 256);
  auto dW = upload(W);
  EXPECT_FALSE(fwd::hc_mixes_supported(25, 256, dW.data()));  // rows > 24
  EXPECT_FALSE(fwd::hc_mixes_supported(24, 200, dW.data()));  // cols % 128
  EXPECT_FALSE(fwd::hc_mixes_supported(24, 256, static_cast<const char*>(dW.data()) + 2));
  cu::DeviceBuffer dX(sizeof(float) * 256), dy(sizeof(float) * 25);
  cu::Stream st;
  EXPECT_THROW(fwd::hc_mixes(dW.data(), dX.as<float>(), 1, 25, 256, dy.as<float>(), st.get()),
               dsv4::Error);
}

// Reference of HCPost for token i: X[c][d] = post[c] f[d] + sum_j comb[j][c] X[j][d] (double).
void hc_post_ref(const std::vector<float>& f, const std::vector<float>& post,
                 const std::vector<float>& comb, int i, int D, std::vector<double>& X) {
  constexpr int hc = 4;
  for (int d = 0; d < D; ++d) {
    double xs[hc], y[hc];
    for (int j = 0; j < hc; ++j) xs[j] = X[((size_t)i * hc + j) * D + d];
    for (int c = 0; c < hc; ++c) {
      double acc = 0.0;
      for (int j = 0; j < hc; ++j) acc += (double)comb[(size_t)i * 16 + j * hc + c] * xs[j];
      y[c] = (double)post[(size_t)i * hc + c] * f[(size_t)i * D + d] + acc;
    }
    for (int c = 0; c < hc; ++c) X[((size_t)i * hc + c) * D + d] = y[c];
  }
}

// Elements of got (n hc D) off the reference by more than 1e-5 (1 + |ref|) (f32 sums of a few
// O(1) terms are off by ~1e-6; a wrong element by O(1)); tokens
// listed in nan_tokens must be NaN throughout instead.
int bad_post(const std::vector<float>& got, const std::vector<double>& ref, int D,
             const std::vector<int>& nan_tokens) {
  int bad = 0;
  for (size_t e = 0; e < got.size(); ++e) {
    const int i = (int)(e / (4 * (size_t)D));
    if (std::find(nan_tokens.begin(), nan_tokens.end(), i) != nan_tokens.end())
      bad += !std::isnan(got[e]);
    else
      bad += !(std::fabs(got[e] - ref[e]) <= 1e-5 * (1.0 + std::fabs(ref[e])));
  }
  return bad;
}

TEST(CudaHc, ChunkPostAndCombineMatchFloat64) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed() + 2);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  constexpr int hc = 4, k = 6;
  for (int D : {4096, 1100, 64}) {
    const int n = 37;
    std::vector<float> f((size_t)n * D), post((size_t)n * hc), comb((size_t)n * 16),
        X((size_t)n * hc * D), shared((size_t)n * D), contrib((size_t)n * k * D);
    for (auto& v : f) v = nd(rng);
    for (auto& v : post) v = 2.0f / (1.0f + std::exp(-nd(rng)));
    for (auto& v : comb) v = std::fabs(nd(rng)) * 0.5f;
    for (auto& v : X) v = nd(rng);
    for (auto& v : shared) v = nd(rng);
    for (auto& v : contrib) v = nd(rng);
    cu::Stream st;
    // hc_post.
    {
      auto df = upload(f), dpost = upload(post), dcomb = upload(comb), dX = upload(X);
      fwd::hc_post(df.as<float>(), dpost.as<float>(), dcomb.as<float>(), n, D, hc, dX.as<float>(),
                   st.get());
      st.sync();
      std::vector<double> ref(X.begin(), X.end());
      for (int i = 0; i < n; ++i) hc_post_ref(f, post, comb, i, D, ref);
      EXPECT_EQ(bad_post(download<float>(dX, X.size()), ref, D, {}), 0) << "hc_post D " << D;
    }
    // moe_combine_post, grouped layout: slot s = j n + i reads row pos[s] (a permutation), and
    // token 5's slot 2 has no row (-1): token 5 must be NaN.
    {
      std::vector<int32_t> ids((size_t)k * n), pos((size_t)k * n);
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < k; ++j) ids[(size_t)j * n + i] = (int32_t)((i * 7 + j * 13) % 256);
      for (size_t s = 0; s < pos.size(); ++s) pos[s] = (int32_t)s;
      std::shuffle(pos.begin(), pos.end(), rng);
      pos[(size_t)2 * n + 5] = -1;
      auto dc = upload(contrib), dsh = upload(shared), dpost = upload(post), dcomb = upload(comb),
           dids = upload(ids), dpos = upload(pos), dX = upload(X);
      fwd::moe_combine_post(dc.as<float>(), dsh.as<float>(), dids.as<int32_t>(), dpos.as<int32_t>(),
                            n, k, D, dpost.as<float>(), dcomb.as<float>(), hc, dX.as<float>(),
                            st.get());
      st.sync();
      std::vector<float> fsum((size_t)n * D);
      for (int i = 0; i < n; ++i)
        for (int d = 0; d < D; ++d) {
          double v = shared[(size_t)i * D + d];
          for (int j = 0; j < k; ++j) {
            const int32_t r = pos[(size_t)j * n + i];
            if (r >= 0) v += contrib[(size_t)r * D + d];
          }
          fsum[(size_t)i * D + d] = (float)v;
        }
      std::vector<double> ref(X.begin(), X.end());
      for (int i = 0; i < n; ++i) hc_post_ref(fsum, post, comb, i, D, ref);
      EXPECT_EQ(bad_post(download<float>(dX, X.size()), ref, D, {5}), 0)
          << "moe_combine_post D " << D;
    }
  }
}

}  // namespace
