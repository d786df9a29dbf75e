#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "model/cpu_forward.h"
#include "model_test_util.h"

using namespace dsv4;

namespace {

std::vector<int32_t> random_tokens(int n, uint32_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t((size_t)n);
  for (auto& x : t) x = (int32_t)(rng() % vocab);
  return t;
}

// Logits of every position, feeding the sequence in chunks of `chunk` tokens.
std::vector<float> run(const CpuModel& m, const std::vector<int32_t>& toks, int chunk,
                       std::vector<float>* hc = nullptr) {
  CpuSession s = m.new_session();
  std::vector<float> all;
  for (size_t p = 0; p < toks.size(); p += (size_t)chunk) {
    const int64_t len = std::min<int64_t>(chunk, (int64_t)(toks.size() - p));
    ForwardResult r;
    m.forward(s, &toks[p], len, true, hc != nullptr, r);
    all.insert(all.end(), r.logits.begin(), r.logits.end());
    if (hc) hc->insert(hc->end(), r.hc_final.begin(), r.hc_final.end());
  }
  EXPECT_EQ(s.n_past, (int64_t)toks.size());
  return all;
}

class Forward : public ::testing::TestWithParam<bool> {
 protected:
  static void SetUpTestSuite() {
    TinySpec s = tiny_preset("tiny");
    auto f = test::tiny_files(s);
    model_ = bind_model(std::move(f.main), std::move(f.mtp)).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  static Model* model_;
};
Model* Forward::model_ = nullptr;

}  // namespace

// 300 tokens cross the 127->128 and 255->256 ratio-128 boundaries, and with top-k 16 the indexer
// selects from up to 75 rows.
TEST_P(Forward, PrefillEqualsChunkedEqualsDecode) {
  CpuModel m(*model_, CpuOptions{GetParam()});
  const auto toks = random_tokens(300, m.config().n_vocab, 11);
  const auto one = run(m, toks, 300);
  const auto chunked = run(m, toks, 37);
  const auto decode = run(m, toks, 1);
  ASSERT_EQ(one.size(), chunked.size());
  ASSERT_EQ(one.size(), decode.size());
  float worst_c = 0, worst_d = 0;
  for (size_t i = 0; i < one.size(); ++i) {
    ASSERT_TRUE(std::isfinite(one[i]));
    worst_c = std::max(worst_c, std::fabs(one[i] - chunked[i]));
    worst_d = std::max(worst_d, std::fabs(one[i] - decode[i]));
  }
  // The design computes every row with the same routine in the same order: exact equality.
  EXPECT_EQ(worst_c, 0.0f);
  EXPECT_EQ(worst_d, 0.0f);
}

INSTANTIATE_TEST_SUITE_P(Qat, Forward, ::testing::Values(true, false));

TEST(ForwardQat, RoundingChangesLogitsButNotWildly) {
  TinySpec s = tiny_preset("tiny");
  s.mtp = false;
  auto f = test::tiny_files(s);
  auto model = bind_model(std::move(f.main));
  CpuModel on(*model, CpuOptions{true}), off(*model, CpuOptions{false});
  const auto toks = random_tokens(160, model->cfg.n_vocab, 5);
  const auto a = run(on, toks, 160), b = run(off, toks, 160);
  double max_d = 0;
  for (size_t i = 0; i < a.size(); ++i) max_d = std::max(max_d, (double)std::fabs(a[i] - b[i]));
  EXPECT_GT(max_d, 1e-4);  // the FP8/FP4 simulation is really applied
  EXPECT_LT(max_d, 5.0);
}

TEST(ForwardMtp, ChunkedEqualsOneShot) {
  TinySpec s = tiny_preset("tiny");
  auto f = test::tiny_files(s);
  auto model = bind_model(std::move(f.main), std::move(f.mtp));
  CpuModel m(*model, CpuOptions{true});
  const auto toks = random_tokens(150, model->cfg.n_vocab, 3);
  std::vector<float> hc;
  run(m, toks, 150, &hc);
  std::vector<int32_t> next(toks.begin() + 1, toks.end());
  next.push_back(0);
  const int64_t HD = m.config().hc_dim();
  CpuSession s1 = m.new_session(), s2 = m.new_session();
  std::vector<float> a, b, part;
  m.mtp_forward(s1, hc.data(), next.data(), 150, a);
  for (int64_t p = 0; p < 150; p += 41) {
    const int64_t len = std::min<int64_t>(41, 150 - p);
    m.mtp_forward(s2, &hc[p * HD], &next[p], len, part);
    b.insert(b.end(), part.begin(), part.end());
  }
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << i;
}

TEST(ForwardErrors, RejectsOutOfRangeToken) {
  TinySpec s = tiny_preset("tiny");
  s.mtp = false;
  auto f = test::tiny_files(s);
  auto model = bind_model(std::move(f.main));
  CpuModel m(*model, CpuOptions{});
  CpuSession sess = m.new_session();
  ForwardResult r;
  int32_t bad = (int32_t)model->cfg.n_vocab;
  EXPECT_THROW(m.forward(sess, &bad, 1, false, false, r), Error);
  EXPECT_EQ(sess.n_past, 0);  // nothing changed
}
