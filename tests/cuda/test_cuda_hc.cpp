// Hyper-connection kernels of a decode step against references, on fresh random data (seed
// printed; DSV4_TEST_SEED=<n> reproduces) with NaN-poisoned outputs:
//  * fwd::hc_post_mix (hc_post fused with the next sublayer's mix partials) against fwd::hc_post
//    followed by fwd::hc_mix_partials: the same X bit for bit, and partial mixes whose sums over
//    the slices match a double-precision product of the mix matrix with the new X;
//  * fwd::moe_combine_post_mix (the MoE combine fused with the next layer's mix partials) in the
//    same way against fwd::moe_combine_post followed by fwd::hc_mix_partials;
//  * both with the next sublayer's hc_pre run by their last CTA (fwd::HcPreNext) against the
//    kernel without it followed by fwd::hc_pre_parts: the same X and partial mixes bit for bit,
//    xin, post and comb to 1e-5 (the block sums run in another order), the CTA counter back at 0.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
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

// Both fused HC kernels with the next hc_pre (HcPreNext) against the kernel without it followed by
// hc_pre_parts, at the real width and two small ones (a slice count below the warp width).
TEST(CudaHc, FusedNextPreMatchesPreParts) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed() + 2);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  constexpr int hc = 4, rows = (2 + hc) * hc, k = 6, iters = 20;
  const float rms_eps = 1e-6f, hc_eps = 1e-6f;
  EXPECT_FALSE(fwd::hc_pre_fusable(8192, rows));  // more than 16 values per thread and stream
  EXPECT_FALSE(fwd::hc_pre_fusable(4096, 23));
  for (bool moe : {false, true})
    for (int D : {4096, 256, 64}) {
      SCOPED_TRACE(std::string(moe ? "moe_combine_post_mix" : "hc_post_mix") + " D " +
                   std::to_string(D));
      ASSERT_TRUE(fwd::hc_pre_fusable(D, rows));
      const int cols = hc * D, G = fwd::hc_mix_slices(cols);
      std::vector<float> f((size_t)k * D), shared((size_t)D), post(hc), comb(hc * hc),
          X((size_t)cols), base(rows), scale(3), norm((size_t)D);
      std::vector<uint16_t> W((size_t)rows * cols);
      for (auto& v : f) v = nd(rng);
      for (auto& v : shared) v = nd(rng);
      for (auto& v : post) v = 2.0f / (1.0f + std::exp(-nd(rng)));
      for (auto& v : comb) v = std::fabs(nd(rng)) * 0.5f;
      for (auto& v : X) v = nd(rng);
      for (auto& v : base) v = 0.5f * nd(rng);
      for (auto& v : scale) v = 0.1f + 0.05f * std::fabs(nd(rng));
      for (auto& v : norm) v = 1.0f + 0.1f * nd(rng);
      for (auto& v : W) v = dsv4::f32_to_f16(0.05f * nd(rng));
      const std::vector<int32_t> ids = {7, 3, 200, 41, 0, 99};
      auto df = upload(f), dsh = upload(shared), dW = upload(W), dids = upload(ids);
      auto dbase = upload(base), dscale = upload(scale), dnorm = upload(norm);
      auto dX1 = upload(X), dX2 = upload(X), dpost1 = upload(post), dcomb1 = upload(comb),
           dpost2 = upload(post), dcomb2 = upload(comb);
      const std::vector<float> poison((size_t)G * rows, std::nanf(""));
      auto p1 = upload(poison), p2 = upload(poison);
      const std::vector<float> poison_d((size_t)D, std::nanf(""));
      auto xin1 = upload(poison_d), xin2 = upload(poison_d);
      const std::vector<float> poison_h(hc * hc, std::nanf(""));
      auto post1 = upload(std::vector<float>(poison_h.begin(), poison_h.begin() + hc)),
           comb1 = upload(poison_h);
      cu::DeviceBuffer done(sizeof(unsigned));
      done.fill_bytes(0);
      fwd::HcPreNext pre;
      pre.base = dbase.as<float>();
      pre.scale = dscale.as<float>();
      pre.norm_w = dnorm.as<float>();
      pre.iters = iters;
      pre.rms_eps = rms_eps;
      pre.hc_eps = hc_eps;
      pre.post = dpost2.as<float>();  // the next sublayer's post and comb replace this one's
      pre.comb = dcomb2.as<float>();
      pre.xin = xin2.as<float>();
      pre.done = done.as<unsigned>();
      cu::Stream st;
      auto run = [&](cu::DeviceBuffer& X_, cu::DeviceBuffer& post_, cu::DeviceBuffer& comb_,
                     cu::DeviceBuffer& parts, const fwd::HcPreNext* p) {
        if (moe)
          fwd::moe_combine_post_mix(df.as<float>(), dsh.as<float>(), dids.as<int32_t>(), k, D,
                                    post_.as<float>(), comb_.as<float>(), X_.as<float>(), dW.data(),
                                    rows, parts.as<float>(), st.get(), p);
        else
          fwd::hc_post_mix(df.as<float>(), post_.as<float>(), comb_.as<float>(), D, X_.as<float>(),
                           dW.data(), rows, parts.as<float>(), st.get(), p);
      };
      run(dX1, dpost1, dcomb1, p1, nullptr);
      fwd::hc_pre_parts(dX1.as<float>(), p1.as<float>(), G, dbase.as<float>(), dscale.as<float>(),
                        dnorm.as<float>(), D, hc, iters, rms_eps, hc_eps, post1.as<float>(),
                        comb1.as<float>(), xin1.as<float>(), st.get());
      run(dX2, dpost2, dcomb2, p2, &pre);
      st.sync();
      const auto X1 = download<float>(dX1, X.size()), X2 = download<float>(dX2, X.size());
      EXPECT_EQ(std::memcmp(X1.data(), X2.data(), sizeof(float) * X.size()), 0);
      const auto P1 = download<float>(p1, (size_t)G * rows),
                 P2 = download<float>(p2, (size_t)G * rows);
      EXPECT_EQ(std::memcmp(P1.data(), P2.data(), sizeof(float) * P1.size()), 0);
      auto close = [](const std::vector<float>& a, const std::vector<float>& b, const char* what) {
        int bad = 0;
        for (size_t i = 0; i < a.size(); ++i)
          bad += !(std::fabs(a[i] - b[i]) <= 1e-5f * std::max(1.0f, std::fabs(b[i])));
        EXPECT_EQ(bad, 0) << what << " (first values " << a[0] << " vs " << b[0] << ")";
      };
      close(download<float>(xin2, (size_t)D), download<float>(xin1, (size_t)D), "xin");
      close(download<float>(dpost2, hc), download<float>(post1, hc), "post");
      close(download<float>(dcomb2, hc * hc), download<float>(comb1, hc * hc), "comb");
      EXPECT_EQ(download<unsigned>(done, 1)[0], 0u);
    }
}

}  // namespace
