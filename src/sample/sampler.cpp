#include "sample/sampler.h"

#include <algorithm>
#include <cmath>

namespace dsv4 {

Sampler::Sampler(SamplerParams p) : p_(p), rng_(p.seed) {}

int32_t Sampler::sample(const float* logits, int64_t n) {
  // Greedy: lowest id among equal maxima, so results are stable.
  if (p_.temperature <= 0.0f) return (int32_t)(std::max_element(logits, logits + n) - logits);
  cand_.resize((size_t)n);
  for (int64_t i = 0; i < n; ++i) cand_[(size_t)i] = {logits[i] / p_.temperature, (int32_t)i};
  std::sort(cand_.begin(), cand_.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  size_t keep = cand_.size();
  if (p_.top_k > 0) keep = std::min(keep, (size_t)p_.top_k);
  const float mx = cand_[0].first;
  std::vector<double> prob(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += prob[i] = std::exp((double)cand_[i].first - mx);
  if (p_.min_p > 0.0f) {
    size_t k = 1;
    while (k < keep && prob[k] >= p_.min_p * prob[0]) ++k;
    keep = k;
  }
  if (p_.top_p < 1.0f) {
    double acc = 0, total = 0;
    for (size_t i = 0; i < keep; ++i) total += prob[i];
    size_t k = 0;
    while (k < keep) {
      acc += prob[k++];
      if (acc >= p_.top_p * total) break;
    }
    keep = k;
  }
  sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += prob[i];
  std::uniform_real_distribution<double> u(0.0, sum);
  double r = u(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= prob[i];
    if (r <= 0) return cand_[i].second;
  }
  return cand_[keep - 1].second;
}

}  // namespace dsv4
