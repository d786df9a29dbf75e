// Hyper-connection kernels of a decode step against references, on fresh random data (seed
// printed; DSV4_TEST_SEED=<n> reproduces) with NaN-poisoned outputs:
//  * fwd::hc_post_mix (hc_post fused with the next sublayer's mix partials) against fwd::hc_post
//    followed by fwd::hc_mix_partials: the same X bit for bit, and partial mixes whose sums over
//    the slices match a double-precision product of the mix matrix with the new X;
//  * fwd::moe_combine_post_mix (the MoE combine fused with the next layer's mix partials) in the
//    same way against fwd::moe_combine_post followed by fwd::hc_mix_partials.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

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

}  // namespace
