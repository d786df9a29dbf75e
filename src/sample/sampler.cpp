// Built with -ffp-contract=off (CMakeLists.txt): the float arithmetic below must round the same
// way on every platform for seeded sampling to be reproducible.
#include "sample/sampler.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace dsv4 {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kFltMax = std::numeric_limits<float>::max();
constexpr int64_t kBlock = 256;  // float partial sums per block, then double

[[noreturn]] void bad(const char* field, const std::string& what) {
  throw ParamError(field, fmt::format("{}: {}", field, what));
}

bool in_range(float v, float lo, float hi) {
  return v >= lo && v <= hi;
}  // false for NaN

// 4-float vectors (GCC/Clang vector extensions): SSE2 on every x86-64, NEON on ARM. Explicit
// vectors fix the lane structure of every sum, so results do not depend on the compiler's
// auto-vectorisation. The mass pass also has an AVX2 build (8-float vectors, no FMA) that
// computes bit-identical values in the same order.
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

inline v4f splat(float f) {
  return v4f{f, f, f, f};
}
inline v4f load4(const float* p) {
  v4f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// e^d for d <= 0 (d may be -inf): Cephes expf, relative error < 8e-8, exactly 1 at 0, 0 below
// -87. Plain IEEE arithmetic only, so identical everywhere (std::exp is not).
#define DSV4_EXP_NEG(V, VI, d, out)                                        \
  do {                                                                     \
    const V zero_ = V{};                                                   \
    const VI small_ = (d) < zero_ - 87.0f;                                 \
    const V c_ = small_ ? zero_ - 87.0f : (d);                             \
    const V t_ = c_ * 1.44269504088896341f;                                \
    const V nf_ = (t_ + 12582912.0f) - 12582912.0f; /* round to nearest */ \
    V r_ = c_ - nf_ * 0.693359375f;                                        \
    r_ = r_ - nf_ * -2.12194440e-4f;                                       \
    V p_ = zero_ + 1.9875691500e-4f;                                       \
    p_ = p_ * r_ + 1.3981999507e-3f;                                       \
    p_ = p_ * r_ + 8.3334519073e-3f;                                       \
    p_ = p_ * r_ + 4.1665795894e-2f;                                       \
    p_ = p_ * r_ + 1.6666665459e-1f;                                       \
    p_ = p_ * r_ + 5.0000001201e-1f;                                       \
    p_ = p_ * r_ * r_ + r_ + 1.0f;                                         \
    const VI e_ = __builtin_convertvector(nf_, VI) + 127; /* [1, 127] */   \
    const V v_ = p_ * (V)(e_ << 23);                                       \
    (out) = (V)((VI)v_ & ~small_);                                         \
  } while (0)

inline v4f exp_neg4(v4f d) {
  v4f r;
  DSV4_EXP_NEG(v4f, v4i, d, r);
  return r;
}
// The same function on one value (bit-identical: the same vector code).
inline float exp_neg(float d) {
  return exp_neg4(splat(d))[0];
}

// Largest finite value and how many values are finite (n < 2^31).
struct MaxInfo {
  float m = -kInf;
  int64_t n_fin = 0;
};
MaxInfo max_finite(const float* x, int64_t n) {
  const v4f big = splat(kFltMax), nbig = splat(-kFltMax);
  v4f m0 = splat(-kInf), m1 = m0;
  v4i c0 = {0, 0, 0, 0}, c1 = c0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v4f a = load4(x + i), b = load4(x + i + 4);
    const v4i fa = (a <= big) & (a >= nbig), fb = (b <= big) & (b >= nbig);  // NaN: false
    m0 = (fa & (a > m0)) ? a : m0;
    m1 = (fb & (b > m1)) ? b : m1;
    c0 -= fa;
    c1 -= fb;
  }
  MaxInfo r;
  for (int j = 0; j < 4; ++j) {
    r.m = std::max(r.m, std::max(m0[j], m1[j]));
    r.n_fin += (int64_t)c0[j] + c1[j];
  }
  for (; i < n; ++i) {
    if (std::fabs(x[i]) <= kFltMax) {
      r.m = std::max(r.m, x[i]);
      ++r.n_fin;
    }
  }
  return r;
}

// Index of the largest finite value, lowest index among equals; -1 when none is finite.
int64_t argmax_finite(const float* x, int64_t n, float* best) {
  const v4f big = splat(kFltMax);
  v4f b0 = splat(-kInf), b1 = b0;
  v4i i0 = {-1, -1, -1, -1}, i1 = i0;
  v4i k0 = {0, 1, 2, 3}, k1 = {4, 5, 6, 7};
  const v4i step = {8, 8, 8, 8};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {  // each lane keeps its first maximum
    const v4f a = load4(x + i), b = load4(x + i + 4);
    const v4i ta = (a > b0) & (a <= big), tb = (b > b1) & (b <= big);
    b0 = ta ? a : b0;
    b1 = tb ? b : b1;
    i0 = ta ? k0 : i0;
    i1 = tb ? k1 : i1;
    k0 += step;
    k1 += step;
  }
  float v = -kInf;
  int64_t a = -1;
  auto consider = [&](float bv, int64_t bi) {
    if (bi >= 0 && (a < 0 || bv > v || (bv == v && bi < a))) v = bv, a = bi;
  };
  for (int j = 0; j < 4; ++j) consider(b0[j], i0[j]), consider(b1[j], i1[j]);
  for (; i < n; ++i)
    if (x[i] > v && x[i] <= kFltMax) v = x[i], a = i;
  *best = v;
  return a;
}

// Mass of the vocabulary, w = e^((x - m) / T): the total, the mass of each kBlock block
// (block_sums, for the full-vocabulary draw) and the mass at or above each of n_thr thresholds
// on d = (x - m) / T. Eight lanes per block (lane l holds elements l mod 8), reduced as
// lane0 + lane4, lane1 + lane5, ... in double; blocks summed in double: a fixed order.
constexpr int kMaxThr = 4;
#define DSV4_MASS_PASS(V, VI, W)                                                               \
  do {                                                                                         \
    constexpr int P = 8 / (W);                                                                 \
    V tv[kMaxThr];                                                                             \
    for (int q = 0; q < n_thr; ++q) tv[q] = V{} + thr[q];                                      \
    alignas(32) float pad[kBlock];                                                             \
    *total = 0;                                                                                \
    for (int q = 0; q < n_thr; ++q) thr_mass[q] = 0;                                           \
    for (int64_t b = 0; b < n; b += kBlock) {                                                  \
      const float* xb = x + b;                                                                 \
      if (n - b < kBlock) { /* the last, partial block: padded with -inf (weight 0) */         \
        std::fill(pad, pad + kBlock, -kInf);                                                   \
        std::copy(xb, x + n, pad);                                                             \
        xb = pad;                                                                              \
      }                                                                                        \
      V s[P], ms[kMaxThr][P];                                                                  \
      for (int p = 0; p < P; ++p) {                                                            \
        s[p] = V{};                                                                            \
        for (int q = 0; q < n_thr; ++q) ms[q][p] = V{};                                        \
      }                                                                                        \
      for (int64_t j = 0; j < kBlock; j += 32) { /* 4 groups of 8: independent exp chains */   \
        V d[4][P], w[4][P];                                                                    \
        for (int g = 0; g < 4; ++g)                                                            \
          for (int p = 0; p < P; ++p) {                                                        \
            V xv;                                                                              \
            std::memcpy(&xv, xb + j + 8 * g + p * (W), sizeof xv);                             \
            d[g][p] = (xv - m) * inv_t;                                                        \
            DSV4_EXP_NEG(V, VI, d[g][p], w[g][p]);                                             \
          }                                                                                    \
        for (int g = 0; g < 4; ++g) /* accumulated in element order */                         \
          for (int p = 0; p < P; ++p) {                                                        \
            s[p] += w[g][p];                                                                   \
            for (int q = 0; q < n_thr; ++q) ms[q][p] += (V)((VI)w[g][p] & (d[g][p] >= tv[q])); \
          }                                                                                    \
      }                                                                                        \
      double bs = 0;                                                                           \
      for (int l = 0; l < 4; ++l)                                                              \
        bs += (double)s[l / (W)][l % (W)] + (double)s[(l + 4) / (W)][(l + 4) % (W)];           \
      *total += bs;                                                                            \
      if (block_sums) block_sums->push_back(bs);                                               \
      for (int q = 0; q < n_thr; ++q)                                                          \
        for (int l = 0; l < 4; ++l)                                                            \
          thr_mass[q] +=                                                                       \
              (double)ms[q][l / (W)][l % (W)] + (double)ms[q][(l + 4) / (W)][(l + 4) % (W)];   \
    }                                                                                          \
  } while (0)

void mass_pass_portable(const float* x, int64_t n, float m, float inv_t, const float* thr,
                        int n_thr, double* total, double* thr_mass,
                        std::vector<double>* block_sums) {
  DSV4_MASS_PASS(v4f, v4i, 4);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DSV4_SAMPLE_AVX2 1
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
__attribute__((target("avx2"))) void mass_pass_avx2(const float* x, int64_t n, float m, float inv_t,
                                                    const float* thr, int n_thr, double* total,
                                                    double* thr_mass,
                                                    std::vector<double>* block_sums) {
  DSV4_MASS_PASS(v8f, v8i, 8);
}
#endif

bool g_portable_simd = false;

void mass_pass(const float* x, int64_t n, float m, float inv_t, const float* thr, int n_thr,
               double* total, double* thr_mass, std::vector<double>* block_sums) {
#ifdef DSV4_SAMPLE_AVX2
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2 && !g_portable_simd)
    return mass_pass_avx2(x, n, m, inv_t, thr, n_thr, total, thr_mass, block_sums);
#endif
  mass_pass_portable(x, n, m, inv_t, thr, n_thr, total, thr_mass, block_sums);
}

}  // namespace

namespace detail {
void force_portable_simd(bool on) {
  g_portable_simd = on;
}
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Validation.

void validate(const SamplerParams& p, int64_t n_vocab) {
  if (!in_range(p.temperature, 0.0f, kMaxTemperature))
    bad("temperature", fmt::format("must be a number in [0, {}] (0 = greedy), got {}",
                                   kMaxTemperature, p.temperature));
  if (p.top_k < -1)
    bad("top_k", fmt::format("must be an integer >= -1 (0 or -1 = off), got {}", p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    bad("top_p", fmt::format("must be in (0, 1] (1 = off), got {}", p.top_p));
  if (!in_range(p.min_p, 0.0f, 1.0f))
    bad("min_p", fmt::format("must be in [0, 1] (0 = off), got {}", p.min_p));
  if (!(p.repetition_penalty > 0.0f && p.repetition_penalty <= kMaxRepetitionPenalty))
    bad("repetition_penalty", fmt::format("must be in (0, {}] (1 = off), got {}",
                                          kMaxRepetitionPenalty, p.repetition_penalty));
  if (p.repeat_last_n < -1 || p.repeat_last_n > kMaxRepeatLastN)
    bad("repeat_last_n", fmt::format("must be in [-1, {}] (-1 = whole history, 0 = off), got {}",
                                     kMaxRepeatLastN, p.repeat_last_n));
  if (!in_range(p.frequency_penalty, -kMaxAbsFreqPresencePenalty, kMaxAbsFreqPresencePenalty))
    bad("frequency_penalty", fmt::format("must be in [-{0}, {0}], got {1}",
                                         kMaxAbsFreqPresencePenalty, p.frequency_penalty));
  if (!in_range(p.presence_penalty, -kMaxAbsFreqPresencePenalty, kMaxAbsFreqPresencePenalty))
    bad("presence_penalty", fmt::format("must be in [-{0}, {0}], got {1}",
                                        kMaxAbsFreqPresencePenalty, p.presence_penalty));
  for (const auto& [id, b] : p.logit_bias) {
    if (id < 0 || (n_vocab > 0 && id >= n_vocab))
      bad("logit_bias", n_vocab > 0 ? fmt::format("token id {} out of range [0, {})", id, n_vocab)
                                    : fmt::format("token id {} is negative", id));
    if (!(in_range(b, -kMaxAbsLogitBias, kMaxAbsLogitBias) || b == -kInf))
      bad("logit_bias",
          fmt::format("bias of token {} must be in [-{}, {}] (<= -100 bans it), got {}", id,
                      kMaxAbsLogitBias, kMaxAbsLogitBias, b));
  }
}

void validate(const StopParams& p, int64_t n_vocab) {
  for (const int32_t id : p.stop_tokens)
    if (id < 0 || (n_vocab > 0 && id >= n_vocab))
      bad("stop_tokens", n_vocab > 0 ? fmt::format("token id {} out of range [0, {})", id, n_vocab)
                                     : fmt::format("token id {} is negative", id));
  if (p.stop_strings.size() > kMaxStopStrings)
    bad("stop",
        fmt::format("at most {} stop strings, got {}", kMaxStopStrings, p.stop_strings.size()));
  for (size_t i = 0; i < p.stop_strings.size(); ++i) {
    const size_t len = p.stop_strings[i].size();
    if (len == 0 || len > kMaxStopStringBytes)
      bad("stop", fmt::format("stop string {} must be 1 to {} bytes long, got {} bytes", i,
                              kMaxStopStringBytes, len));
  }
  if (p.max_tokens != -1 && p.max_tokens < 1)
    bad("max_tokens", fmt::format("must be >= 1 (or -1 = no limit), got {}", p.max_tokens));
}

uint64_t random_seed() {
  std::random_device rd;
  uint64_t s = ((uint64_t)rd() << 32) ^ rd();
  s ^= (uint64_t)std::chrono::steady_clock::now().time_since_epoch().count();
  static int anchor;
  s ^= (uint64_t)(uintptr_t)&anchor << 16;
  return s;
}

// ---------------------------------------------------------------------------------------------
// RNG.

Rng::Rng(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) {  // splitmix64
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    s = z ^ (z >> 31);
  }
}

uint64_t Rng::next() {  // xoshiro256**
  const uint64_t result = std::rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = std::rotl(s_[3], 45);
  return result;
}

double Rng::uniform() {
  return (double)(next() >> 11) * 0x1.0p-53;
}

// ---------------------------------------------------------------------------------------------
// Sampler.

namespace {

// The sampling order: higher logit first, lower id among equals.
inline bool better(float xa, int32_t ia, float xb, int32_t ib) {
  return xa > xb || (xa == xb && ia < ib);
}
template <class C>
inline bool better(const C& a, const C& b) {
  return better(a.x, a.id, b.x, b.id);
}

// Partitions [lo, hi) around a median-of-three pivot: [lo, p) better than it, (p, hi) worse.
// Deterministic (no library selection, whose arrangement differs between implementations).
template <class C>
size_t partition(C* a, size_t lo, size_t hi) {
  const size_t mid = lo + (hi - lo) / 2, last = hi - 1;
  if (better(a[mid], a[lo])) std::swap(a[mid], a[lo]);
  if (better(a[last], a[lo])) std::swap(a[last], a[lo]);
  if (better(a[mid], a[last])) std::swap(a[mid], a[last]);  // a[last] = median
  const C pv = a[last];
  size_t s = lo;
  for (size_t i = lo; i < last; ++i)
    if (better(a[i], pv)) std::swap(a[i], a[s++]);
  std::swap(a[s], a[last]);
  return s;
}

template <class C>
void sort_range(C* a, size_t lo, size_t hi) {  // unique keys: the same result everywhere
  std::sort(a + lo, a + hi, [](const C& u, const C& v) { return better(u, v); });
}

// Rearranges a[0, n) so that a[0, k) are the k best.
template <class C>
void select_top(C* a, size_t n, size_t k) {
  size_t lo = 0, hi = n;
  int budget = 64;
  while (hi - lo > 16) {
    if (--budget == 0) break;
    const size_t p = partition(a, lo, hi);
    if (p == k || p + 1 == k) return;
    if (p > k)
      hi = p;
    else
      lo = p + 1;
  }
  sort_range(a, lo, hi);
}

// Rearranges a[0, n) and returns c: a[0, c) are the shortest run of best tokens whose mass
// reaches `need` (all n when the mass never does).
template <class C>
size_t select_mass(C* a, size_t n, double need) {
  size_t lo = 0, hi = n;
  int budget = 64;
  while (hi - lo > 16 && --budget > 0) {
    const size_t p = partition(a, lo, hi);
    double up = 0;
    for (size_t i = lo; i < p; ++i) up += a[i].w;
    if (up >= need) {
      hi = p;
    } else if (up + a[p].w >= need) {
      return p + 1;
    } else {
      need -= up + a[p].w;
      lo = p + 1;
    }
  }
  sort_range(a, lo, hi);
  double acc = 0;
  for (size_t i = lo; i < hi; ++i) {
    acc += a[i].w;
    if (acc >= need) return i + 1;
  }
  return hi;
}

}  // namespace

Sampler::Sampler(SamplerParams p) : p_(std::move(p)), rng_(p_.seed) {
  validate(p_);
  greedy_ = p_.temperature <= 0.0f;
  bias_.assign(p_.logit_bias.begin(), p_.logit_bias.end());
}

void Sampler::add_prompt(std::span<const int32_t> ids) {
  if (p_.repetition_penalty == 1.0f || p_.repeat_last_n == 0) return;
  size_t from = 0;
  if (p_.repeat_last_n > 0 && ids.size() > (size_t)p_.repeat_last_n)
    from = ids.size() - (size_t)p_.repeat_last_n;
  for (size_t i = from; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (p_.repeat_last_n < 0) {
      ++window_count_[id];
    } else if (window_.size() < (size_t)p_.repeat_last_n) {
      window_.push_back(id);
      ++window_count_[id];
    } else {
      const int32_t old = window_[window_head_];
      if (--window_count_[old] == 0) window_count_.erase(old);
      window_[window_head_] = id;
      window_head_ = (window_head_ + 1) % window_.size();
      ++window_count_[id];
    }
  }
}

void Sampler::accept(int32_t id) {
  ++n_generated_;
  add_prompt(std::span<const int32_t>(&id, 1));
  if (p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f) ++gen_count_[id];
}

int32_t Sampler::sample(const float* logits, int64_t n_vocab, bool force_greedy) {
  const int32_t id = pick(logits, n_vocab, force_greedy);
  accept(id);
  return id;
}

void Sampler::build_patches(const float* logits, int64_t n) {
  patches_.clear();
  const bool rep = p_.repetition_penalty != 1.0f && !window_count_.empty();
  const bool freq = !gen_count_.empty();
  if (!rep && !freq && bias_.empty()) return;
  patch_ids_.clear();
  if (rep)
    for (const auto& kv : window_count_) patch_ids_.push_back(kv.first);
  if (freq)
    for (const auto& kv : gen_count_) patch_ids_.push_back(kv.first);
  for (const auto& kv : bias_) {
    if (kv.first >= n) fail("logit_bias: token id {} out of range [0, {})", kv.first, n);
    patch_ids_.push_back(kv.first);
  }
  std::sort(patch_ids_.begin(), patch_ids_.end());
  patch_ids_.erase(std::unique(patch_ids_.begin(), patch_ids_.end()), patch_ids_.end());
  const float rp = p_.repetition_penalty;
  auto bit = bias_.begin();
  for (const int32_t id : patch_ids_) {
    if (id < 0 || id >= n) continue;  // history ids outside this vocabulary
    float v = logits[id];
    if (rep && window_count_.count(id)) v = v > 0.0f ? v / rp : v * rp;
    if (freq) {
      const auto it = gen_count_.find(id);
      if (it != gen_count_.end())
        v -= (float)it->second * p_.frequency_penalty + p_.presence_penalty;
    }
    while (bit != bias_.end() && bit->first < id) ++bit;
    if (bit != bias_.end() && bit->first == id)
      v = bit->second <= kBanBias ? -kInf : v + bit->second;
    patches_.emplace_back(id, v);
  }
}

const float* Sampler::effective_logits(const float* logits, int64_t n) {
  work_.resize((size_t)n);
  float* w = work_.data();
  for (int64_t i = 0; i < n; ++i) {
    const float v = logits[i];
    w[i] = std::fabs(v) <= kFltMax ? v : -kInf;
  }
  for (const auto& [id, v] : patches_) w[id] = std::fabs(v) <= kFltMax ? v : -kInf;
  return w;
}

int32_t Sampler::pick_greedy(const float* logits, int64_t n) {
  float va;
  const int64_t a = argmax_finite(logits, n, &va);
  if (patches_.empty()) {
    if (a < 0) fail("sample: no finite logit among {} (NaN or inf everywhere)", n);
    return (int32_t)a;
  }
  // One pass over the raw logits, then the few processed ones; a second pass only when the raw
  // winner was pushed down (e.g. by a repetition penalty).
  const auto pa = std::lower_bound(patches_.begin(), patches_.end(),
                                   std::pair<int32_t, float>((int32_t)a, -kInf));
  const bool a_patched = a >= 0 && pa != patches_.end() && pa->first == a;
  if (a_patched && !(pa->second >= va)) {
    const float* x = effective_logits(logits, n);
    const int64_t b = argmax_finite(x, n, &va);
    if (b < 0) fail("sample: every token is banned or has a non-finite logit");
    return (int32_t)b;
  }
  int64_t best = a;
  float bv = a_patched ? pa->second : va;
  for (const auto& [id, v] : patches_) {
    if (!(std::fabs(v) <= kFltMax)) continue;
    if (best < 0 || v > bv || (v == bv && id < best)) best = id, bv = v;
  }
  if (best < 0) fail("sample: every token is banned or has a non-finite logit");
  return (int32_t)best;
}

bool Sampler::kept(const Cand& e) const {
  return e.w > 0.0f && e.w >= p_.min_p && (!plan_.has_boundary || !better(plan_.boundary, e));
}

void Sampler::plan(const float* logits, int64_t n, bool force_greedy) {
  if (n <= 0 || n > std::numeric_limits<int32_t>::max())
    fail("sample: vocabulary size {} out of range", n);
  plan_ = Plan{};
  build_patches(logits, n);
  if (greedy_ || force_greedy) {
    plan_.token = pick_greedy(logits, n);
    return;
  }
  const float* x = logits;
  MaxInfo mi;
  if (!patches_.empty()) {
    x = effective_logits(logits, n);
    mi = max_finite(x, n);
  } else {
    mi = max_finite(x, n);
    if (mi.n_fin < n) x = effective_logits(logits, n);  // NaN/inf -> -inf
  }
  if (mi.n_fin == 0 || mi.m == -kInf)
    fail("sample: every token is banned or has a non-finite logit");
  const float m = mi.m;
  const float inv_t = 1.0f / p_.temperature;
  plan_.x = x, plan_.n = n, plan_.m = m, plan_.inv_t = inv_t;
  const size_t k = p_.top_k > 0 && p_.top_k < mi.n_fin ? (size_t)p_.top_k : 0;
  const bool top_p = p_.top_p < 1.0f;

  if (!k && !top_p && p_.min_p <= 0.0f) {  // the whole distribution, by blocks
    block_sums_.clear();
    double unused;
    mass_pass(x, n, m, inv_t, nullptr, 0, &plan_.total, &unused, &block_sums_);
    plan_.full = true;
    return;
  }

  if (k) {
    gather_top_k(x, n, k);
  } else {
    // Min-p bound (loose: the exact test is w >= min_p), and for top-p the highest of a few
    // thresholds whose mass surely holds the nucleus.
    float d_gather = p_.min_p > 0.0f ? (float)std::log((double)p_.min_p) - 1e-3f : -kFltMax;
    if (top_p) {
      constexpr int kThr = 4;
      const float thr[kThr] = {-2.5f, -6.0f, -12.0f, -24.0f};
      double mass[kThr];
      mass_pass(x, n, m, inv_t, thr, kThr, &plan_.total, mass, nullptr);
      const double need = (double)p_.top_p * plan_.total;
      float d_p = -kFltMax;
      for (int q = 0; q < kThr; ++q) {
        if (mass[q] >= need) {
          d_p = thr[q];
          break;
        }
      }
      d_gather = std::max(d_gather, d_p);
    }
    gather_above(x, n, m, inv_t, d_gather);
  }
  for (Cand& c : cand_) c.w = exp_neg((c.x - m) * inv_t);
  if (!top_p) return;

  // The top-p run among the candidates: the mass of the top-k set, or of the vocabulary.
  sel_ = cand_;
  double total = plan_.total;
  if (k) {
    total = 0;
    for (const Cand& c : cand_) total += c.w;
  }
  const size_t nk = select_mass(sel_.data(), sel_.size(), (double)p_.top_p * total);
  if (nk == cand_.size()) return;
  size_t b = 0;
  for (size_t i = 1; i < nk; ++i)
    if (better(sel_[b], sel_[i])) b = i;
  plan_.has_boundary = true;
  plan_.boundary = sel_[b];
}

// cand_ = tokens with d = (x - m) / T >= d_min, in id order; 8 tested at a time, appended
// without branches.
void Sampler::gather_above(const float* x, int64_t n, float m, float inv_t, float d_min) {
  const v4f vm = splat(m), vt = splat(inv_t), vg = splat(d_min);
  cand_.resize(1024);
  size_t nc = 0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v4i h0 = (load4(x + i) - vm) * vt >= vg, h1 = (load4(x + i + 4) - vm) * vt >= vg;
    const v4i h = h0 | h1;
    if (!(h[0] | h[1] | h[2] | h[3])) continue;
    if (nc + 8 > cand_.size()) cand_.resize(cand_.size() * 2);
    Cand* out = cand_.data();
    for (int j = 0; j < 4; ++j) out[nc] = Cand{x[i + j], 0.0f, (int32_t)(i + j)}, nc += h0[j] & 1;
    for (int j = 0; j < 4; ++j)
      out[nc] = Cand{x[i + 4 + j], 0.0f, (int32_t)(i + 4 + j)}, nc += h1[j] & 1;
  }
  cand_.resize(nc);
  for (; i < n; ++i)
    if ((x[i] - m) * inv_t >= d_min) cand_.push_back(Cand{x[i], 0.0f, (int32_t)i});
}

// cand_ = the k best finite tokens (k < finite count), in id order. One pass with a rising
// threshold: values below the current k-th best are skipped 8 at a time; the candidates are cut
// back to the k best whenever they exceed 2k + 256.
void Sampler::gather_top_k(const float* x, int64_t n, size_t k) {
  const size_t limit = 2 * k + 256;
  cand_.resize(limit + 8);
  size_t nc = 0;
  float tau = -kFltMax;  // finite values only (x holds no NaN or +inf here)
  bool strict = false;   // after a cut: later ids need x > tau to beat the worst kept token
  auto cut = [&] {
    select_top(cand_.data(), nc, k);
    nc = k;
    size_t w = 0;
    for (size_t i = 1; i < nc; ++i)
      if (better(cand_[w], cand_[i])) w = i;
    tau = cand_[w].x;
    strict = true;
  };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v4f a = load4(x + i), b = load4(x + i + 4), vt = splat(tau);
    const v4i h0 = strict ? (a > vt) : (a >= vt), h1 = strict ? (b > vt) : (b >= vt);
    const v4i h = h0 | h1;
    if (!(h[0] | h[1] | h[2] | h[3])) continue;
    Cand* out = cand_.data();
    for (int j = 0; j < 4; ++j) out[nc] = Cand{x[i + j], 0.0f, (int32_t)(i + j)}, nc += h0[j] & 1;
    for (int j = 0; j < 4; ++j)
      out[nc] = Cand{x[i + 4 + j], 0.0f, (int32_t)(i + 4 + j)}, nc += h1[j] & 1;
    if (nc > limit) cut();
  }
  for (; i < n; ++i) {
    if (strict ? x[i] > tau : x[i] >= tau) {
      cand_[nc++] = Cand{x[i], 0.0f, (int32_t)i};
      if (nc > limit) cut();
    }
  }
  if (nc > k) select_top(cand_.data(), nc, k), nc = k;
  cand_.resize(nc);
  std::sort(cand_.begin(), cand_.end(), [](const Cand& u, const Cand& v) { return u.id < v.id; });
}

int32_t Sampler::pick(const float* logits, int64_t n, bool force_greedy) {
  plan(logits, n, force_greedy);
  if (plan_.token >= 0) return plan_.token;
  if (plan_.full) {
    const double r = rng_.uniform() * plan_.total;
    // The block holding r, then a walk inside it. Rounding can only run off a block's end
    // by an ulp: the block's last token with weight is taken.
    double acc = 0;
    size_t b = 0;
    for (; b + 1 < block_sums_.size(); ++b) {
      if (r < acc + block_sums_[b]) break;
      acc += block_sums_[b];
    }
    const int64_t lo = (int64_t)b * kBlock, hi = std::min(plan_.n, lo + kBlock);
    int32_t last = -1;
    for (int64_t i = lo; i < hi; ++i) {
      const float w = exp_neg((plan_.x[i] - plan_.m) * plan_.inv_t);
      if (!(w > 0.0f)) continue;
      acc += w;
      last = (int32_t)i;
      if (r < acc) return last;
    }
    if (last >= 0) return last;
    float bv;  // a block without weight: unreachable, as r < total
    return (int32_t)argmax_finite(plan_.x, plan_.n, &bv);
  }
  double total = 0;
  for (const Cand& c : cand_)
    if (kept(c)) total += c.w;
  const double r = rng_.uniform() * total;
  double acc = 0;
  int32_t last = -1;
  for (const Cand& c : cand_) {
    if (!kept(c)) continue;
    acc += c.w;
    last = c.id;
    if (r < acc) return last;
  }
  if (last < 0) fail("sample: internal error, empty candidate set");
  return last;
}

void Sampler::distribution(const float* logits, int64_t n, bool force_greedy,
                           std::vector<std::pair<int32_t, double>>& out) {
  out.clear();
  plan(logits, n, force_greedy);
  if (plan_.token >= 0) {
    out.emplace_back(plan_.token, 1.0);
    return;
  }
  double total = 0;
  if (plan_.full) {
    for (int64_t i = 0; i < plan_.n; ++i) {
      const float w = exp_neg((plan_.x[i] - plan_.m) * plan_.inv_t);
      if (w > 0.0f) out.emplace_back((int32_t)i, (double)w), total += w;
    }
  } else {
    for (const Cand& c : cand_)
      if (kept(c)) out.emplace_back(c.id, (double)c.w), total += c.w;
  }
  for (auto& e : out) e.second /= total;
}

}  // namespace dsv4
