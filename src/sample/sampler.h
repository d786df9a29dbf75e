// Token sampling from logits: temperature, top-k, top-p, min-p, reproducible by seed.
// Greedy when temperature <= 0. (The full set of logit processors comes with the text work.)
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace dsv4 {

struct SamplerParams {
  float temperature = 1.0f;
  int32_t top_k = 0;    // 0 = off
  float top_p = 1.0f;   // 1 = off
  float min_p = 0.0f;   // 0 = off; relative to the most likely token
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplerParams p);
  int32_t sample(const float* logits, int64_t n_vocab);

 private:
  SamplerParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace dsv4
