#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "model/ops.h"

using namespace dsv4;

TEST(Ops, SinkhornIsNearlyDoublyStochastic) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0, 2);
  float m[16];
  for (float& x : m) x = n(rng);
  ops::sinkhorn(m, 4, 20, 1e-6f);
  for (int j = 0; j < 4; ++j) {
    float r = 0, c = 0;
    for (int k = 0; k < 4; ++k) {
      r += m[j * 4 + k];
      c += m[k * 4 + j];
    }
    EXPECT_NEAR(r, 1.0f, 2e-2);  // rows converge more slowly than columns
    EXPECT_NEAR(c, 1.0f, 1e-5);  // the last step normalises columns
  }
}

TEST(Ops, HadamardIsOrthonormalAndSelfInverse) {
  std::vector<float> x(128), y;
  std::mt19937 rng(1);
  std::normal_distribution<float> n;
  for (auto& v : x) v = n(rng);
  y = x;
  ops::hadamard(y.data(), 128);
  double nx = 0, ny = 0;
  for (int i = 0; i < 128; ++i) {
    nx += x[i] * x[i];
    ny += y[i] * y[i];
  }
  EXPECT_NEAR(nx, ny, 1e-3 * nx);
  // first row of H is all ones: y0 = sum(x)/sqrt(128)
  double s = 0;
  for (float v : x) s += v;
  EXPECT_NEAR(y[0], s / std::sqrt(128.0), 1e-4);
  ops::hadamard(y.data(), 128);
  for (int i = 0; i < 128; ++i) EXPECT_NEAR(y[i], x[i], 1e-5);
}

TEST(Ops, RopeInverseUndoesRotationAndYarnMatchesSpec) {
  ModelConfig c;
  c.rope_orig_ctx = 65536;
  c.rope_factor = 16;
  c.yarn_beta_fast = 32;
  c.yarn_beta_slow = 1;
  const auto plain = ops::rope_freqs(64, 10000, false, c);
  const auto yarn = ops::rope_freqs(64, 160000, true, c);
  // spec/ARCH.md §5.3: pairs 0..15 unscaled, 25..31 divided by 16.
  for (int k = 0; k < 32; ++k) {
    const float f0 = 1.0f / std::pow(160000.0f, (float)(2 * k) / 64.0f);
    if (k <= 15) {
      EXPECT_FLOAT_EQ(yarn[k], f0);
    }
    if (k >= 25) {
      EXPECT_NEAR(yarn[k], f0 / 16, f0 * 1e-6);
    }
  }
  EXPECT_FLOAT_EQ(plain[1], 1.0f / std::pow(10000.0f, 2.0f / 64));
  std::vector<float> x(64), y;
  for (int i = 0; i < 64; ++i) x[i] = 0.1f * i - 3;
  y = x;
  ops::rope_apply(y.data(), yarn, 1000, false);
  ops::rope_apply(y.data(), yarn, 1000, true);
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(y[i], x[i], 1e-5);
}

TEST(Ops, SoftplusMatchesTorchThreshold) {
  EXPECT_FLOAT_EQ(ops::softplus(25.0f), 25.0f);
  EXPECT_NEAR(ops::softplus(0.0f), std::log(2.0f), 1e-7);
  EXPECT_NEAR(ops::softplus(-30.0f), std::exp(-30.0f), 1e-15);
}
