// Token sampling from logits (spec/SERVER.md §3.1-3.2, without ds4's known bugs).
//
// Processing order for one token, on a private copy of the logits when anything modifies them:
//   1. repetition penalty (llama.cpp semantics) on every distinct token of the last
//      `repeat_last_n` tokens of the history (prompt tokens given to add_prompt() and the
//      generated ones): a positive logit is divided by the penalty, a negative one multiplied;
//   2. frequency and presence penalties (OpenAI semantics) over the generated tokens only:
//      logit -= count * frequency_penalty + (count > 0) * presence_penalty;
//   3. logit_bias: logit += bias; a bias <= -100 (or -inf) bans the token;
//   4. temperature 0 (or a caller-forced greedy step) -> argmax, lowest id among equal maxima,
//      without touching the RNG;
//   5. otherwise w_i = exp((l_i - l_max) / T) and the kept set is the intersection of
//        top_k   - the k best tokens (ties broken by the lower id),
//        min_p   - w_i >= min_p (p_i >= min_p * p_max),
//        top_p   - the shortest run of best tokens whose mass reaches top_p of the top-k mass
//                  (of the whole vocabulary when top_k is off); not renormalised after min-p.
//      This is ds4's filter (temperature -> top-k -> min-p -> top-p) and vLLM's.
//   6. one draw u in [0, 1) from xoshiro256** (seeded through splitmix64), r = u * sum(w kept),
//      walking the kept tokens in ascending id order.
// Tokens whose logit is NaN or +-inf are never chosen. Every step is platform-independent
// (own exp approximation, explicit SIMD lanes with a fixed summation order, own selection, no
// FMA contraction), so a seed gives the same tokens for the same logits on every machine.
//
// Cost (V = 129 280): greedy is one vectorised pass (argmax), plus the few processed tokens when
// penalties or biases are set. Nothing sorts the vocabulary: top-k is one pass with a rising
// threshold (8 values compared at a time, candidates cut back to the k best by quickselect);
// min-p gathers the tokens above its bound; top-p needs the exact total mass (one vectorised exp
// pass, AVX2 where available), which also measures the mass above a few thresholds so that only
// the tokens above the right one are gathered and weighted-quickselected.
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/error.h"

namespace dsv4 {

// Allowed ranges (validate() enforces them; the server maps ParamError to HTTP 400).
inline constexpr float kMaxTemperature = 100.0f;  // ds4 CLI range 0-100
inline constexpr float kMaxRepetitionPenalty = 10.0f;
inline constexpr float kMaxAbsFreqPresencePenalty = 2.0f;  // OpenAI: [-2, 2]
inline constexpr float kMaxAbsLogitBias = 100.0f;          // OpenAI: [-100, 100]
inline constexpr float kBanBias = -100.0f;                 // a bias <= this bans the token
inline constexpr int32_t kMaxRepeatLastN = 1 << 20;
inline constexpr size_t kMaxStopStrings = 64;
inline constexpr size_t kMaxStopStringBytes = 1024;

struct SamplerParams {
  float temperature = 1.0f;  // [0, 100]; 0 = greedy
  int32_t top_k = 0;         // >= -1; 0 and -1 = off; larger than the vocabulary = off
  float top_p = 1.0f;        // (0, 1]; 1 = off
  float min_p = 0.05f;       // [0, 1]; 0 = off; relative to the most likely token (ds4 default)
  uint64_t seed = 0;         // any value; the server draws one with random_seed() if unset
  float repetition_penalty = 1.0f;      // (0, 10]; 1 = off
  int32_t repeat_last_n = 64;           // [-1, 2^20]; window of the repetition penalty; -1 = all
  float frequency_penalty = 0.0f;       // [-2, 2]
  float presence_penalty = 0.0f;        // [-2, 2]
  std::map<int32_t, float> logit_bias;  // id -> additive bias in [-100, 100] or -inf
};

struct StopParams {
  std::vector<int32_t> stop_tokens;       // ids ending generation (EOS goes here); not output
  std::vector<std::string> stop_strings;  // <= 64, each 1..1024 bytes; matched on the text
  int64_t max_tokens = -1;                // -1 = no limit (the context decides); else >= 1
};

// A rejected parameter: what() is "FIELD: must be ..., got VALUE"; field() is the request field.
class ParamError : public Error {
 public:
  ParamError(std::string field, const std::string& what) : Error(what), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

// Throw ParamError for the first invalid field. n_vocab <= 0 skips the id upper bounds.
void validate(const SamplerParams& p, int64_t n_vocab = 0);
void validate(const StopParams& p, int64_t n_vocab = 0);

// A seed for requests that give none (not reproducible: time, address, random_device).
uint64_t random_seed();

// xoshiro256** seeded through splitmix64: the same stream on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  double uniform();  // [0, 1), 53 bits

 private:
  uint64_t s_[4];
};

class Sampler {
 public:
  // Validates the ranges (ids are checked against the vocabulary at each call).
  explicit Sampler(SamplerParams p);

  // Context for the repetition-penalty window (the prompt's last tokens); no effect otherwise.
  void add_prompt(std::span<const int32_t> ids);
  // Records a generated token: it enters the repetition window and the frequency counts.
  void accept(int32_t id);

  // pick() and accept() of the result. force_greedy: argmax of the processed logits for this
  // step whatever the temperature (the DSML rule, DsmlGreedyTracker).
  int32_t sample(const float* logits, int64_t n_vocab, bool force_greedy = false);
  // Chooses a token without recording it. The RNG advances once unless the step is greedy.
  // Throws Error when no token is choosable (every logit NaN/-inf or banned) or n_vocab <= 0.
  int32_t pick(const float* logits, int64_t n_vocab, bool force_greedy = false);

  // The distribution pick() would draw from: kept tokens in id order with their probabilities
  // (one token with probability 1 when greedy). Same processing; the RNG does not advance.
  // For tests, logs and logprobs of the sampled distribution.
  void distribution(const float* logits, int64_t n_vocab, bool force_greedy,
                    std::vector<std::pair<int32_t, double>>& out);

  const SamplerParams& params() const { return p_; }
  int64_t n_generated() const { return n_generated_; }

 private:
  struct Cand {
    float x;  // processed logit
    float w;  // exp((x - max) / T)
    int32_t id;
  };
  // What one step draws from: a greedy token, the whole distribution, or the candidates
  // (cand_) that pass min-p and lie at or above the boundary (the last token of the top-k /
  // top-p run).
  struct Plan {
    int32_t token = -1;
    bool full = false;
    const float* x = nullptr;
    int64_t n = 0;
    float m = 0, inv_t = 0;
    double total = 0;  // full: the mass of the vocabulary
    bool has_boundary = false;
    Cand boundary{};
  };
  void plan(const float* logits, int64_t n, bool force_greedy);
  bool kept(const Cand& c) const;
  void build_patches(const float* logits, int64_t n);
  const float* effective_logits(const float* logits, int64_t n);
  int32_t pick_greedy(const float* logits, int64_t n);
  void gather_above(const float* x, int64_t n, float m, float inv_t, float d_min);
  void gather_top_k(const float* x, int64_t n, size_t k);

  SamplerParams p_;
  Rng rng_;
  bool greedy_ = false;
  std::vector<std::pair<int32_t, float>> bias_;  // logit_bias as a vector, id order
  // Repetition window: ring of the last repeat_last_n tokens and their counts.
  std::vector<int32_t> window_;
  size_t window_head_ = 0;
  std::unordered_map<int32_t, int32_t> window_count_;
  // Generated-token counts (frequency / presence).
  std::unordered_map<int32_t, int32_t> gen_count_;
  int64_t n_generated_ = 0;
  // Scratch.
  Plan plan_;
  std::vector<int32_t> patch_ids_;
  std::vector<std::pair<int32_t, float>> patches_;  // id -> processed logit, id order
  std::vector<float> work_;
  std::vector<Cand> cand_, sel_;
  std::vector<double> block_sums_;
};

namespace detail {
// Tests: use the portable 4-wide code even where AVX2 is available (the results are identical).
void force_portable_simd(bool on);
}  // namespace detail

}  // namespace dsv4
