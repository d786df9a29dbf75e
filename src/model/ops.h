// Small CPU building blocks of the reference forward pass, each the exact formula of
// spec/ARCH.md (section named on each function). Plain loops: the CPU path is the oracle.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace dsv4::ops {

// §2: x / sqrt(mean(x^2) + eps) * w (w may be null: unweighted).
void rms_norm(const float* x, const float* w, float eps, int64_t n, float* out);

inline float sigmoid(float x) {
  return 1.0f / (1.0f + std::exp(-x));
}
inline float silu(float x) {
  return x / (1.0f + std::exp(-x));
}
// torch.nn.functional.softplus with its default threshold 20.
inline float softplus(float x) {
  return x > 20.0f ? x : std::log1p(std::exp(x));
}

// §5.3: per-pair inverse frequencies of one RoPE variant, computed in f32 like the reference.
std::vector<float> rope_freqs(uint32_t rope_dim, double base, bool yarn, const ModelConfig& c);
// Rotates the `rope_dim` values at `x` (interleaved pairs) by position p; inverse de-rotates.
void rope_apply(float* x, const std::vector<float>& freqs, int64_t pos, bool inverse);

// §12.5: natural-order (Sylvester) Walsh-Hadamard transform scaled by 1/sqrt(n); n power of 2.
void hadamard(float* x, int64_t n);

// §4.2: Sinkhorn normalisation of the hc x hc comb matrix in place (row-major [j][k]).
void sinkhorn(float* comb, int hc, int iters, float eps);

}  // namespace dsv4::ops
