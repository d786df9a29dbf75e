// Sampling cost per token on a 129 280-entry vocabulary (CPU, one thread).
// Usage: bench_sampler [iterations]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include "sample/sampler.h"

namespace {

constexpr int64_t kVocab = 129280;

// LLM-like logits: a broad Gaussian body and a peaked head of a few dozen tokens.
std::vector<std::vector<float>> make_logits(int count, float sd, bool head) {
  std::mt19937 g(1);
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<std::vector<float>> out(count, std::vector<float>(kVocab));
  for (auto& l : out) {
    for (auto& v : l) v = nd(g);
    if (head)
      for (int i = 0; i < 40; ++i) l[g() % kVocab] = 10.0f + 0.25f * (float)i;
  }
  return out;
}

double bench(const char* name, const dsv4::SamplerParams& p,
             const std::vector<std::vector<float>>& logits, int iters, bool with_history) {
  dsv4::Sampler s(p);
  if (with_history)
    for (int i = 0; i < 256; ++i) s.accept((int32_t)((i * 7919) % kVocab));
  volatile int64_t sink = 0;
  std::vector<double> us;
  for (int i = 0; i < iters; ++i) {
    const auto& l = logits[(size_t)i % logits.size()];
    const auto t0 = std::chrono::steady_clock::now();
    sink = sink + s.pick(l.data(), kVocab);
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(us.begin(), us.end());
  const double mean = std::accumulate(us.begin(), us.end(), 0.0) / (double)us.size();
  std::printf("%-48s median %8.1f us   mean %8.1f us   p90 %8.1f us\n", name, us[us.size() / 2],
              mean, us[us.size() * 9 / 10]);
  return us[us.size() / 2];
}

// The naive reference for comparison: exp + full sort of the vocabulary.
void bench_full_sort(const std::vector<std::vector<float>>& logits, int iters) {
  std::vector<std::pair<float, int32_t>> c(kVocab);
  std::vector<double> us;
  volatile int32_t sink = 0;
  for (int i = 0; i < iters; ++i) {
    const auto& l = logits[(size_t)i % logits.size()];
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t j = 0; j < kVocab; ++j) c[j] = {l[j], (int32_t)j};
    std::sort(c.begin(), c.end(), [](auto& a, auto& b) { return a.first > b.first; });
    double acc = 0;
    for (auto& e : c) acc += std::exp(e.first - c[0].first);
    sink = sink + c[(size_t)acc % 4].second;
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(us.begin(), us.end());
  std::printf("%-48s median %8.1f us\n", "reference: exp + std::sort of the vocabulary",
              us[us.size() / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 2000;
  const auto peaked = make_logits(16, 2.5f, true);
  const auto flat = make_logits(4, 0.3f, false);
  std::printf("vocabulary %lld, %d iterations per line\n", (long long)kVocab, iters);

  dsv4::SamplerParams p;
  p.temperature = 0.0f;
  bench("greedy", p, peaked, iters, false);
  p.repetition_penalty = 1.1f, p.frequency_penalty = 0.3f;
  bench("greedy + rep/freq penalties (256 history)", p, peaked, iters, true);

  p = dsv4::SamplerParams{};
  p.temperature = 1.0f, p.top_p = 0.95f, p.min_p = 0.0f;
  bench("T=1 top_p=0.95", p, peaked, iters, false);
  p.temperature = 0.7f, p.top_p = 0.9f, p.min_p = 0.05f;
  bench("T=0.7 top_p=0.9 min_p=0.05", p, peaked, iters, false);
  p = dsv4::SamplerParams{};
  bench("T=1 min_p=0.05 (ds4 defaults)", p, peaked, iters, false);
  p.min_p = 0.0f, p.top_k = 40, p.temperature = 0.8f;
  bench("T=0.8 top_k=40", p, peaked, iters, false);
  p.top_p = 0.9f;
  bench("T=0.8 top_k=40 top_p=0.9", p, peaked, iters, false);
  p = dsv4::SamplerParams{};
  p.min_p = 0.0f;
  bench("T=1 full distribution (no truncation)", p, peaked, iters, false);
  p.top_p = 0.95f, p.repetition_penalty = 1.1f, p.frequency_penalty = 0.3f;
  p.logit_bias = {{5, -100.0f}, {6, 2.0f}};
  bench("T=1 top_p=0.95 + penalties + bias", p, peaked, iters, true);
  p = dsv4::SamplerParams{};
  p.top_p = 0.95f, p.min_p = 0.0f;
  bench("worst case: T=1 top_p=0.95 on flat logits", p, flat, std::max(iters / 10, 20), false);
  bench_full_sort(peaked, std::max(iters / 10, 20));
  // Calibration: a plain scalar pass, to compare machines.
  std::vector<double> us;
  volatile int64_t sink = 0;
  for (int i = 0; i < iters; ++i) {
    const auto& l = peaked[(size_t)i % peaked.size()];
    const auto t0 = std::chrono::steady_clock::now();
    sink = sink + (std::max_element(l.begin(), l.end()) - l.begin());
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(us.begin(), us.end());
  std::printf("%-48s median %8.1f us\n", "calibration: std::max_element (scalar)",
              us[us.size() / 2]);
  return 0;
}
