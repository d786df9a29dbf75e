// Sampler: greedy, the temperature distribution, truncation sets, seeds, penalties, logit bias
// and parameter validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "sample/sampler.h"

namespace dsv4 {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int64_t kVocab = 129280;

SamplerParams plain(float t) {  // no truncation at all
  SamplerParams p;
  p.temperature = t;
  p.min_p = 0.0f;
  return p;
}

// Logits with log-probabilities log(p) (temperature 1 then gives back p).
std::vector<float> from_probs(const std::vector<double>& p) {
  std::vector<float> l;
  for (double v : p) l.push_back(v > 0 ? (float)std::log(v) : -kInf);
  return l;
}

std::set<int32_t> kept_set(Sampler& s, const std::vector<float>& l) {
  std::vector<std::pair<int32_t, double>> d;
  s.distribution(l.data(), (int64_t)l.size(), false, d);
  std::set<int32_t> out;
  for (const auto& e : d) out.insert(e.first);
  return out;
}

// The reference: everything sorted, double precision.
std::map<int32_t, double> reference(const std::vector<float>& l, const SamplerParams& p) {
  std::vector<int32_t> idx;
  float m = -kInf;
  for (size_t i = 0; i < l.size(); ++i)
    if (std::isfinite(l[i])) idx.push_back((int32_t)i), m = std::max(m, l[i]);
  std::sort(idx.begin(), idx.end(),
            [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
  if (p.top_k > 0 && (size_t)p.top_k < idx.size()) idx.resize(p.top_k);
  std::vector<double> w;
  double total = 0;
  for (int32_t i : idx)
    w.push_back(std::exp(((double)l[i] - m) / p.temperature)), total += w.back();
  std::map<int32_t, double> out;
  double acc = 0, kept = 0;
  for (size_t j = 0; j < idx.size(); ++j) {
    if (w[j] >= p.min_p) out[idx[j]] = w[j], kept += w[j];
    acc += w[j];
    if (p.top_p < 1.0f && acc >= (double)p.top_p * total) break;
  }
  for (auto& e : out) e.second /= kept;
  return out;
}

// Pearson chi-square of counts against probabilities; bins with expectation < 5 are merged.
double chi_square(const std::map<int32_t, int64_t>& counts, const std::map<int32_t, double>& p,
                  int64_t n, int* dof) {
  double chi = 0, e_small = 0, o_small = 0;
  int bins = 0;
  for (const auto& [id, q] : p) {
    const double e = q * (double)n;
    const auto it = counts.find(id);
    const double o = it == counts.end() ? 0.0 : (double)it->second;
    if (e < 5) {
      e_small += e, o_small += o;
      continue;
    }
    chi += (o - e) * (o - e) / e;
    ++bins;
  }
  if (e_small > 0) chi += (o_small - e_small) * (o_small - e_small) / e_small, ++bins;
  *dof = bins - 1;
  return chi;
}

// Upper 0.1% point of chi-square with `dof` degrees of freedom (Wilson-Hilferty).
double chi_crit(int dof) {
  const double k = dof, z = 3.09;
  const double t = 1 - 2 / (9 * k) + z * std::sqrt(2 / (9 * k));
  return k * t * t * t;
}

std::vector<float> noisy_logits(int64_t n, uint32_t seed, float sd = 2.5f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> l((size_t)n);
  for (auto& v : l) v = nd(g);
  std::uniform_int_distribution<int64_t> pos(0, n - 1);
  for (int i = 0; i < 30; ++i) l[(size_t)pos(g)] = 8.0f + 0.4f * (float)i;  // a peaked head
  return l;
}

// ---------------------------------------------------------------------------------------------

TEST(Rng, GoldenStream) {
  Rng r0(0), r42(42);
  EXPECT_EQ(r0.next(), 0x99ec5f36cb75f2b4ull);
  EXPECT_EQ(r0.next(), 0xbf6e1f784956452aull);
  EXPECT_EQ(r0.next(), 0x1a5f849d4933e6e0ull);
  EXPECT_EQ(r42.next(), 0x15780b2e0c2ec716ull);
  EXPECT_EQ(r42.next(), 0x6104d9866d113a7eull);
  Rng u(7);
  for (int i = 0; i < 10000; ++i) {
    const double v = u.uniform();
    ASSERT_GE(v, 0.0);
    ASSERT_LT(v, 1.0);
  }
}

TEST(Greedy, ArgmaxLowestIdOnTies) {
  Sampler s(plain(0.0f));
  std::vector<float> l = {1, 3, 2, 3, -1};
  EXPECT_EQ(s.pick(l.data(), 5), 1);
  l = {kNaN, kInf, 2, -kInf, 2, 1};  // NaN and inf are never chosen
  EXPECT_EQ(s.pick(l.data(), 6), 2);
  l = {-kInf, kNaN};
  EXPECT_THROW(s.pick(l.data(), 2), Error);
  EXPECT_THROW(s.pick(l.data(), 0), Error);
}

TEST(Greedy, MatchesNaiveArgmaxAtEverySizeAndPosition) {
  std::mt19937 g(1);
  Sampler s(plain(0.0f));
  for (int64_t n = 1; n <= 70; ++n) {
    for (int64_t at = 0; at < n; ++at) {
      std::vector<float> l((size_t)n);
      for (auto& v : l) v = (float)(g() % 5);  // many ties
      l[(size_t)at] = 4.0f;
      const int64_t want = std::max_element(l.begin(), l.end()) - l.begin();
      ASSERT_EQ(s.pick(l.data(), n), want) << n << " " << at;
    }
  }
  const std::vector<float> big = noisy_logits(kVocab, 3);
  EXPECT_EQ(s.pick(big.data(), kVocab), std::max_element(big.begin(), big.end()) - big.begin());
}

TEST(Greedy, ForcedGreedyLeavesTheRngAlone) {
  const std::vector<float> l = from_probs({0.3, 0.3, 0.4});
  Sampler a(plain(1.0f)), b(plain(1.0f));
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(a.pick(l.data(), 3, true), 2);
    EXPECT_EQ(a.pick(l.data(), 3), b.pick(l.data(), 3));
  }
}

TEST(Temperature, DrawsFollowTheSoftmax) {
  // Small vocabulary, several temperatures: chi-square against softmax(l / T) in double.
  const std::vector<float> l = {0.0f, 1.0f, -0.5f, 2.0f, 0.3f, -2.0f, 1.5f, 0.9f, -1.0f, 0.1f};
  for (float t : {0.5f, 1.0f, 1.7f}) {
    SamplerParams p = plain(t);
    p.seed = 1234;
    Sampler s(p);
    const int64_t n = 200000;
    std::map<int32_t, int64_t> counts;
    for (int64_t i = 0; i < n; ++i) ++counts[s.pick(l.data(), (int64_t)l.size())];
    const auto ref = reference(l, p);
    int dof = 0;
    const double chi = chi_square(counts, ref, n, &dof);  // sets dof
    EXPECT_EQ(dof, 9);
    EXPECT_LT(chi, chi_crit(dof)) << "T=" << t;
  }
}

TEST(Temperature, FullVocabularyDrawsFollowTheSoftmax) {
  // 129 280 tokens spread over many blocks: the block walk must be exact.
  std::vector<float> l((size_t)kVocab, -30.0f);
  std::mt19937 g(5);
  for (int i = 0; i < 40; ++i) l[(size_t)(g() % kVocab)] = (float)(g() % 100) / 25.0f;
  l[kVocab - 1] = 3.0f;  // the last block
  l[0] = 2.5f;
  SamplerParams p = plain(1.0f);
  p.seed = 99;
  Sampler s(p);
  const auto ref = reference(l, p);
  std::vector<std::pair<int32_t, double>> d;
  s.distribution(l.data(), kVocab, false, d);
  ASSERT_EQ(d.size(), (size_t)kVocab);
  // d = (x - max) / T is rounded to float: relative error ~1e-7 * |d| after exp.
  for (const auto& [id, q] : d) ASSERT_NEAR(q, ref.at(id), 1e-5 * ref.at(id) + 1e-15);
  const int64_t n = 6000;
  std::map<int32_t, int64_t> counts;
  for (int64_t i = 0; i < n; ++i) ++counts[s.pick(l.data(), kVocab)];
  int dof = 0;
  const double chi = chi_square(counts, ref, n, &dof);
  EXPECT_LT(chi, chi_crit(dof));
}

TEST(Truncation, TopKExactWithTies) {
  const std::vector<float> l = {1, 5, 3, 5, 2, 4};
  SamplerParams p = plain(1.0f);
  p.top_k = 3;
  Sampler s3(p);
  EXPECT_EQ(kept_set(s3, l), (std::set<int32_t>{1, 3, 5}));
  p.top_k = 1;
  Sampler s1(p);
  EXPECT_EQ(kept_set(s1, l), (std::set<int32_t>{1}));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(s1.pick(l.data(), 6), 1);
  p.top_k = 6;  // = vocabulary: off
  Sampler s6(p);
  EXPECT_EQ(kept_set(s6, l).size(), 6u);
  p.top_k = -1;
  Sampler sm(p);
  EXPECT_EQ(kept_set(sm, l).size(), 6u);
}

TEST(Truncation, MinPRelativeToTheBest) {
  const std::vector<float> l = from_probs({0.05, 0.4, 0.02, 0.2, 0.1, 0.039, 0.191});
  SamplerParams p = plain(1.0f);
  p.min_p = 0.1f;  // keep p >= 0.04
  Sampler s(p);
  EXPECT_EQ(kept_set(s, l), (std::set<int32_t>{0, 1, 3, 4, 6}));
  p.min_p = 1.0f;  // only the best
  Sampler s1(p);
  EXPECT_EQ(kept_set(s1, l), (std::set<int32_t>{1}));
}

TEST(Truncation, TopPShortestRunReachingTheMass) {
  const std::vector<float> l = from_probs({0.15, 0.05, 0.5, 0.3});
  SamplerParams p = plain(1.0f);
  p.top_p = 0.75f;
  Sampler a(p);
  EXPECT_EQ(kept_set(a, l), (std::set<int32_t>{2, 3}));
  p.top_p = 0.81f;
  Sampler b(p);
  EXPECT_EQ(kept_set(b, l), (std::set<int32_t>{0, 2, 3}));
  p.top_p = 0.4f;
  Sampler c(p);
  EXPECT_EQ(kept_set(c, l), (std::set<int32_t>{2}));
}

TEST(Truncation, TopPIsRelativeToTheTopKMass) {
  const std::vector<float> l = from_probs({0.4, 0.3, 0.2, 0.1});
  SamplerParams p = plain(1.0f);
  p.top_p = 0.5f;
  Sampler a(p);
  EXPECT_EQ(kept_set(a, l), (std::set<int32_t>{0, 1}));  // 0.4 < 0.5 of the whole
  p.top_k = 2;
  Sampler b(p);
  EXPECT_EQ(kept_set(b, l), (std::set<int32_t>{0}));  // 0.4 / 0.7 >= 0.5
}

TEST(Truncation, TopPNotRenormalisedAfterMinP) {
  const std::vector<float> l = from_probs({0.5, 0.3, 0.15, 0.05});
  SamplerParams p = plain(1.0f);
  p.min_p = 0.5f;  // keeps {0, 1}: mass 0.8
  p.top_p = 0.6f;  // 0.5 of the whole < 0.6: the run is {0, 1}
  Sampler s(p);
  EXPECT_EQ(kept_set(s, l), (std::set<int32_t>{0, 1}));
}

TEST(Truncation, MatchesTheSortedReferenceOnTheFullVocabulary) {
  // Many shapes: the probe thresholds, the quickselects and the gathers must give exactly the
  // reference's kept set and probabilities.
  struct Case {
    float t;
    int32_t top_k;
    float top_p, min_p, sd;
  };
  const Case cases[] = {
      {1.0f, 0, 0.95f, 0.0f, 2.5f},  {1.0f, 0, 1.0f, 0.05f, 2.5f},  {0.7f, 40, 1.0f, 0.0f, 2.5f},
      {0.7f, 40, 0.9f, 0.05f, 2.5f}, {1.0f, 0, 0.95f, 0.05f, 2.5f}, {2.0f, 0, 0.99f, 0.0f, 2.5f},
      {1.0f, 0, 0.9f, 0.0f, 0.3f},   {1.0f, 500, 0.9f, 0.0f, 0.3f}, {1.0f, 20000, 1.0f, 0.0f, 1.0f},
      {0.2f, 0, 0.5f, 0.0f, 2.5f},   {1.0f, 3, 1.0f, 0.2f, 2.5f},   {5.0f, 0, 0.8f, 0.01f, 1.0f},
  };
  uint32_t seed = 10;
  for (const Case& c : cases) {
    SamplerParams p;
    p.temperature = c.t, p.top_k = c.top_k, p.top_p = c.top_p, p.min_p = c.min_p;
    Sampler s(p);
    for (int rep = 0; rep < 3; ++rep) {
      const std::vector<float> l = noisy_logits(kVocab, ++seed, c.sd);
      const auto ref = reference(l, p);
      std::vector<std::pair<int32_t, double>> d;
      s.distribution(l.data(), kVocab, false, d);
      ASSERT_EQ(d.size(), ref.size()) << "case T=" << c.t << " k=" << c.top_k << " p=" << c.top_p
                                      << " minp=" << c.min_p << " sd=" << c.sd;
      for (const auto& [id, q] : d) {
        ASSERT_TRUE(ref.count(id)) << id;
        ASSERT_NEAR(q, ref.at(id), 1e-5 * ref.at(id));
      }
      const int32_t tok = s.pick(l.data(), kVocab);
      EXPECT_TRUE(ref.count(tok));
    }
  }
}

TEST(Truncation, SampledFrequenciesMatchTheTruncatedDistribution) {
  const std::vector<float> l = noisy_logits(kVocab, 77);
  SamplerParams p;
  p.temperature = 1.3f, p.top_p = 0.9f, p.min_p = 0.01f, p.seed = 5;
  Sampler s(p);
  const auto ref = reference(l, p);
  ASSERT_GT(ref.size(), 3u);
  const int64_t n = 6000;
  std::map<int32_t, int64_t> counts;
  for (int64_t i = 0; i < n; ++i) ++counts[s.pick(l.data(), kVocab)];
  for (const auto& kv : counts) ASSERT_TRUE(ref.count(kv.first));
  int dof = 0;
  const double chi = chi_square(counts, ref, n, &dof);
  EXPECT_LT(chi, chi_crit(dof));
}

TEST(Seed, ReproducibleAndSeedDependent) {
  const std::vector<float> l = noisy_logits(kVocab, 8, 1.0f);
  auto run = [&](uint64_t seed, float top_p, float min_p) {
    SamplerParams p;
    p.seed = seed, p.top_p = top_p, p.min_p = min_p;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.pick(l.data(), kVocab));
    return out;
  };
  for (float top_p : {1.0f, 0.9f}) {
    for (float min_p : {0.0f, 0.05f}) {
      EXPECT_EQ(run(1, top_p, min_p), run(1, top_p, min_p));
      EXPECT_NE(run(1, top_p, min_p), run(2, top_p, min_p));
    }
  }
  // Golden: the same tokens on every platform and build (own exp, fixed summation order).
  const std::vector<float> small = {0.0f, 1.0f, -0.5f, 2.0f, 0.3f, -2.0f, 1.5f, 0.9f};
  std::vector<int32_t> got;
  for (bool portable : {false, true}) {
    detail::force_portable_simd(portable);
    SamplerParams p = plain(1.0f);
    p.seed = 42;
    Sampler s(p);
    got.clear();
    for (int i = 0; i < 16; ++i) got.push_back(s.pick(small.data(), 8));
    // From the independent model in sampler_golden.py (IEEE float32 emulated in Python).
    EXPECT_EQ(got, (std::vector<int32_t>{1, 3, 6, 7, 7, 6, 6, 6, 6, 4, 6, 3, 6, 3, 6, 6}));
  }
  detail::force_portable_simd(false);
  const std::vector<float> ten = {0.0f, 1.0f, -0.5f, 2.0f, 0.3f, -2.0f, 1.5f, 0.9f, -4.0f, 1.2f};
  SamplerParams q;
  q.temperature = 0.8f, q.min_p = 0.05f, q.top_p = 0.9f, q.seed = 7;
  Sampler sq(q);
  got.clear();
  for (int i = 0; i < 16; ++i) got.push_back(sq.pick(ten.data(), 10));
  EXPECT_EQ(got, (std::vector<int32_t>{6, 3, 7, 9, 9, 9, 1, 1, 3, 3, 6, 6, 9, 9, 3, 6}));
}

TEST(Seed, PortableAndAvx2CodeGiveIdenticalResults) {
  const std::vector<float> l = noisy_logits(kVocab, 21, 2.0f);
  auto run = [&](bool portable) {
    detail::force_portable_simd(portable);
    std::vector<std::vector<std::pair<int32_t, double>>> dists;
    std::vector<int32_t> toks;
    for (float top_p : {1.0f, 0.93f}) {
      SamplerParams p;
      p.seed = 3, p.top_p = top_p, p.min_p = 0.0f, p.temperature = 1.1f;
      Sampler s(p);
      dists.emplace_back();
      s.distribution(l.data(), kVocab, false, dists.back());
      for (int i = 0; i < 200; ++i) toks.push_back(s.pick(l.data(), kVocab));
    }
    detail::force_portable_simd(false);
    return std::make_pair(dists, toks);
  };
  const auto a = run(true), b = run(false);
  EXPECT_TRUE(a.first == b.first);  // bit-identical probabilities
  EXPECT_EQ(a.second, b.second);
}

// log p_i - log p_0 over the distribution at T = 1: the processed logit differences.
std::vector<double> processed(Sampler& s, const std::vector<float>& l) {
  std::vector<std::pair<int32_t, double>> d;
  s.distribution(l.data(), (int64_t)l.size(), false, d);
  std::vector<double> lp(l.size(), -INFINITY);
  for (const auto& [id, q] : d) lp[(size_t)id] = std::log(q);
  const double base = lp[0];
  for (auto& v : lp) v -= base;
  return lp;
}

TEST(Penalties, RepetitionDividesPositiveMultipliesNegative) {
  const std::vector<float> l = {1.0f, 2.0f, -1.0f, 0.5f, 3.0f};
  SamplerParams p = plain(1.0f);
  p.repetition_penalty = 2.0f;
  p.repeat_last_n = 3;
  Sampler s(p);
  s.add_prompt(std::vector<int32_t>{4, 4});  // the window holds prompt tokens too
  s.accept(1);
  s.accept(2);  // window: 4, 1, 2
  auto d = processed(s, l);
  EXPECT_NEAR(d[1], 1.0 - 1.0, 1e-5);   // 2 / 2
  EXPECT_NEAR(d[2], -2.0 - 1.0, 1e-5);  // -1 * 2
  EXPECT_NEAR(d[3], 0.5 - 1.0, 1e-5);
  EXPECT_NEAR(d[4], 1.5 - 1.0, 1e-5);  // 3 / 2
  s.accept(3);                         // window: 1, 2, 3; 4 left it
  d = processed(s, l);
  EXPECT_NEAR(d[4], 3.0 - 1.0, 1e-5);
  EXPECT_NEAR(d[3], 0.25 - 1.0, 1e-5);
  // Greedy sees the penalty too: token 4 wins again only once it is out of the window.
  SamplerParams g = p;
  g.temperature = 0.0f;
  Sampler sg(g);
  sg.accept(4);
  EXPECT_EQ(sg.pick(l.data(), 5), 1);  // 3/2 = 1.5 < 2
}

TEST(Penalties, FrequencyAndPresenceOverGeneratedTokensOnly) {
  const std::vector<float> l = {1.0f, 1.0f, 1.0f, 1.0f};
  SamplerParams p = plain(1.0f);
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  Sampler s(p);
  s.add_prompt(std::vector<int32_t>{3, 3, 3});  // prompt tokens do not count
  s.accept(1);
  s.accept(1);
  s.accept(2);
  const auto d = processed(s, l);
  EXPECT_NEAR(d[1], -(2 * 0.5 + 0.25), 1e-5);
  EXPECT_NEAR(d[2], -(0.5 + 0.25), 1e-5);
  EXPECT_NEAR(d[3], 0.0, 1e-5);
  // Negative values encourage repetition.
  SamplerParams q = plain(0.0f);
  q.presence_penalty = -1.0f;
  Sampler sq(q);
  sq.accept(2);
  EXPECT_EQ(sq.pick(l.data(), 4), 2);
}

TEST(Penalties, GreedyAfterPenaltyOnTheRawWinnerOnLargeVocabulary) {
  std::vector<float> l = noisy_logits(kVocab, 4);
  const int32_t first = (int32_t)(std::max_element(l.begin(), l.end()) - l.begin());
  SamplerParams p = plain(0.0f);
  p.frequency_penalty = 2.0f;
  p.presence_penalty = 2.0f;
  Sampler s(p);
  EXPECT_EQ(s.sample(l.data(), kVocab), first);
  std::vector<float> ref = l;
  ref[(size_t)first] -= 4.0f;
  EXPECT_EQ(s.pick(l.data(), kVocab), std::max_element(ref.begin(), ref.end()) - ref.begin());
}

TEST(LogitBias, BansAndBoosts) {
  const std::vector<float> l = {5.0f, 4.0f, 1.0f, 0.0f};
  SamplerParams p = plain(0.0f);
  p.logit_bias = {{0, -100.0f}};
  Sampler s(p);
  EXPECT_EQ(s.pick(l.data(), 4), 1);
  p.logit_bias = {{0, -kInf}, {3, 4.5f}};
  Sampler s2(p);
  EXPECT_EQ(s2.pick(l.data(), 4), 3);
  // Sampling never draws a banned token, even a likely one.
  SamplerParams q = plain(1.0f);
  q.logit_bias = {{0, -100.0f}, {1, -100.0f}};
  Sampler s3(q);
  for (int i = 0; i < 2000; ++i) {
    const int32_t t = s3.pick(l.data(), 4);
    ASSERT_TRUE(t == 2 || t == 3);
  }
  // A boost changes the distribution by exactly the bias.
  SamplerParams b = plain(1.0f);
  b.logit_bias = {{2, 1.5f}};
  Sampler s4(b);
  const auto d = processed(s4, l);
  EXPECT_NEAR(d[2], 1.0 + 1.5 - 5.0, 1e-5);
  // Everything banned: an error, not a token.
  SamplerParams all = plain(1.0f);
  all.logit_bias = {{0, -100.f}, {1, -100.f}, {2, -100.f}, {3, -100.f}};
  Sampler s5(all);
  EXPECT_THROW(s5.pick(l.data(), 4), Error);
  all.temperature = 0.0f;
  Sampler s6(all);
  EXPECT_THROW(s6.pick(l.data(), 4), Error);
  // An id beyond the vocabulary of the call.
  SamplerParams far = plain(1.0f);
  far.logit_bias = {{10, 1.0f}};
  Sampler s7(far);
  EXPECT_THROW(s7.pick(l.data(), 4), Error);
}

TEST(LogitBias, BanOnLargeVocabularyAllPaths) {
  std::vector<float> l = noisy_logits(kVocab, 12);
  const int32_t best = (int32_t)(std::max_element(l.begin(), l.end()) - l.begin());
  for (float top_p : {1.0f, 0.9f}) {
    for (int32_t top_k : {0, 40}) {
      for (float min_p : {0.0f, 0.05f}) {
        SamplerParams p;
        p.top_p = top_p, p.top_k = top_k, p.min_p = min_p, p.temperature = 0.8f;
        p.logit_bias = {{best, -100.0f}};
        Sampler s(p);
        std::vector<std::pair<int32_t, double>> d;
        s.distribution(l.data(), kVocab, false, d);
        for (const auto& e : d) ASSERT_NE(e.first, best);
        for (int i = 0; i < 200; ++i) ASSERT_NE(s.pick(l.data(), kVocab), best);
      }
    }
  }
}

TEST(NonFinite, NaNAndInfAreNeverSampled) {
  std::vector<float> l = {kNaN, 1.0f, kInf, 0.5f, -kInf};
  for (float top_p : {1.0f, 0.9f}) {
    for (float min_p : {0.0f, 0.05f}) {
      SamplerParams p;
      p.top_p = top_p, p.min_p = min_p;
      Sampler s(p);
      for (int i = 0; i < 500; ++i) {
        const int32_t t = s.pick(l.data(), 5);
        ASSERT_TRUE(t == 1 || t == 3) << t;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------

template <class F>
void expect_param_error(F&& f, const std::string& field, const std::string& text) {
  try {
    f();
    ADD_FAILURE() << "no error for " << field;
  } catch (const ParamError& e) {
    EXPECT_EQ(e.field(), field);
    EXPECT_NE(std::string(e.what()).find(field + ":"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

TEST(Validate, EveryFieldNamesItselfAndItsRange) {
  auto with = [](auto set) {
    return [set] {
      SamplerParams p;
      set(p);
      Sampler s(p);
    };
  };
  expect_param_error(with([](SamplerParams& p) { p.temperature = -0.1f; }), "temperature",
                     "[0, 100]");
  expect_param_error(with([](SamplerParams& p) { p.temperature = kNaN; }), "temperature",
                     "[0, 100]");
  expect_param_error(with([](SamplerParams& p) { p.temperature = 101.0f; }), "temperature",
                     "got 101");
  expect_param_error(with([](SamplerParams& p) { p.top_k = -2; }), "top_k", ">= -1");
  expect_param_error(with([](SamplerParams& p) { p.top_p = 0.0f; }), "top_p", "(0, 1]");
  expect_param_error(with([](SamplerParams& p) { p.top_p = 1.5f; }), "top_p", "(0, 1]");
  expect_param_error(with([](SamplerParams& p) { p.min_p = -0.01f; }), "min_p", "[0, 1]");
  expect_param_error(with([](SamplerParams& p) { p.min_p = kInf; }), "min_p", "[0, 1]");
  expect_param_error(with([](SamplerParams& p) { p.repetition_penalty = 0.0f; }),
                     "repetition_penalty", "(0, 10]");
  expect_param_error(with([](SamplerParams& p) { p.repeat_last_n = -2; }), "repeat_last_n",
                     "[-1, 1048576]");
  expect_param_error(with([](SamplerParams& p) { p.frequency_penalty = 2.5f; }),
                     "frequency_penalty", "[-2, 2]");
  expect_param_error(with([](SamplerParams& p) { p.presence_penalty = -3.0f; }), "presence_penalty",
                     "[-2, 2]");
  expect_param_error(with([](SamplerParams& p) {
                       p.logit_bias = {{-1, 1.0f}};
                     }),
                     "logit_bias", "negative");
  expect_param_error(with([](SamplerParams& p) {
                       p.logit_bias = {{5, 150.0f}};
                     }),
                     "logit_bias", "[-100, 100]");
  expect_param_error(with([](SamplerParams& p) {
                       p.logit_bias = {{5, kNaN}};
                     }),
                     "logit_bias", "[-100, 100]");
  SamplerParams big;
  big.logit_bias = {{kVocab, 1.0f}};
  expect_param_error([&] { validate(big, kVocab); }, "logit_bias", "[0, 129280)");

  auto stop_with = [](auto set) {
    return [set] {
      StopParams p;
      set(p);
      validate(p, kVocab);
    };
  };
  expect_param_error(stop_with([](StopParams& p) { p.max_tokens = 0; }), "max_tokens", ">= 1");
  expect_param_error(stop_with([](StopParams& p) { p.max_tokens = -5; }), "max_tokens", ">= 1");
  expect_param_error(stop_with([](StopParams& p) {
                       p.stop_strings = {"a", ""};
                     }),
                     "stop", "1 to 1024 bytes");
  expect_param_error(stop_with([](StopParams& p) { p.stop_strings = {std::string(1025, 'x')}; }),
                     "stop", "1 to 1024 bytes");
  expect_param_error(
      stop_with([](StopParams& p) { p.stop_strings = std::vector<std::string>(65, "x"); }), "stop",
      "at most 64");
  expect_param_error(stop_with([](StopParams& p) { p.stop_tokens = {kVocab}; }), "stop_tokens",
                     "[0, 129280)");

  // The defaults and the documented edges are valid.
  SamplerParams ok;
  EXPECT_NO_THROW(validate(ok, kVocab));
  ok.temperature = 0.0f, ok.top_k = -1, ok.top_p = 1.0f, ok.min_p = 1.0f;
  ok.repetition_penalty = 10.0f, ok.repeat_last_n = -1, ok.frequency_penalty = -2.0f;
  ok.logit_bias = {{0, -kInf}, {kVocab - 1, 100.0f}};
  EXPECT_NO_THROW(validate(ok, kVocab));
  StopParams sok;
  sok.max_tokens = -1;
  EXPECT_NO_THROW(validate(sok, kVocab));
}

}  // namespace
}  // namespace dsv4
