#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/lowp.h"

using namespace dsv4;

// Every e4m3fn value, from its bits, as the reference decoder defines it.
static float e4m3_value(int code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  float v = e == 0 ? std::ldexp((float)m, -9) : std::ldexp(1.0f + m / 8.0f, e - 7);
  return s ? -v : v;
}

TEST(LowP, E4M3IsNearestEven) {
  std::vector<float> grid;
  for (int c = 0; c < 127; ++c) grid.push_back(e4m3_value(c));  // 0x7f is NaN in e4m3fn
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0.0f, 448.0f);
  for (int i = 0; i < 200000; ++i) {
    float x = i < 1000 ? std::ldexp(u(rng), -12) : u(rng);
    float r = round_e4m3(x);
    // brute-force nearest, ties to the even code
    int best = 0;
    for (int c = 1; c < (int)grid.size(); ++c) {
      float d = std::fabs(grid[c] - x), db = std::fabs(grid[best] - x);
      if (d < db || (d == db && (c % 2 == 0))) best = c;
    }
    ASSERT_EQ(r, grid[best]) << "x=" << x;
    ASSERT_EQ(round_e4m3(-x), -grid[best]);
  }
  // exact midpoints tie to even mantissa
  EXPECT_EQ(round_e4m3(1.0625f), 1.0f);
  EXPECT_EQ(round_e4m3(1.1875f), 1.25f);
}

TEST(LowP, E2M1IsNearestEven) {
  const float grid[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (float x = 0; x <= 6.0f; x += 1.0f / 64) {
    int best = 0;
    for (int c = 1; c < 8; ++c) {
      float d = std::fabs(grid[c] - x), db = std::fabs(grid[best] - x);
      if (d < db || (d == db && (c % 2 == 0))) best = c;
    }
    ASSERT_EQ(round_e2m1(x), grid[best]) << x;
  }
  EXPECT_EQ(round_e2m1(5.0f), 4.0f);
  EXPECT_EQ(round_e2m1(2.5f), 2.0f);
  EXPECT_EQ(round_e2m1(0.25f), 0.0f);
}

TEST(LowP, Fp8BlockUsesPowerOfTwoScale) {
  std::vector<float> v(64);
  for (int i = 0; i < 64; ++i) v[i] = 0.01f * (i - 32);
  std::vector<float> w = v;
  fp8_sim_block(w.data(), 64);
  // amax 0.32 -> scale 2^ceil(log2(0.32/448)) = 2^-10; values are e4m3 grid points times 2^-10
  for (int i = 0; i < 64; ++i) {
    float q = w[i] * 1024.0f;
    EXPECT_EQ(round_e4m3(q), q);
    EXPECT_NEAR(w[i], v[i], std::fabs(v[i]) / 16 + 1e-6);
  }
}

TEST(LowP, Fp4BlockSaturatesAtScaledMax) {
  std::vector<float> v(32, 0.0f);
  v[0] = 6.0f;
  v[1] = 5.0f;  // tie between 4 and 6 -> 4
  v[2] = -0.75f;
  fp4_sim_block(v.data(), 32);
  EXPECT_EQ(v[0], 6.0f);
  EXPECT_EQ(v[1], 4.0f);
  EXPECT_EQ(v[2], -1.0f);
}
