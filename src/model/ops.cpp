#include "model/ops.h"

#include <algorithm>

namespace dsv4::ops {

void rms_norm(const float* x, const float* w, float eps, int64_t n, float* out) {
  float ss = 0.0f;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float r = 1.0f / std::sqrt(ss / (float)n + eps);
  if (w) {
    for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * r);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * r;
  }
}

std::vector<float> rope_freqs(uint32_t dim, double base, bool yarn, const ModelConfig& c) {
  const uint32_t half = dim / 2;
  std::vector<float> f(half);
  for (uint32_t k = 0; k < half; ++k) {
    const float e = (float)(2 * k) / (float)dim;
    f[k] = 1.0f / std::pow((float)base, e);
  }
  if (yarn && c.rope_orig_ctx > 0) {
    auto corr_dim = [&](double rot) {
      return dim * std::log((double)c.rope_orig_ctx / (rot * 2 * M_PI)) / (2 * std::log(base));
    };
    double low = std::floor(corr_dim(c.yarn_beta_fast));
    double high = std::ceil(corr_dim(c.yarn_beta_slow));
    low = std::max(low, 0.0);
    high = std::min(high, (double)dim - 1);
    if (low == high) high += 0.001;
    const float factor = (float)c.rope_factor;
    for (uint32_t k = 0; k < half; ++k) {
      float ramp = ((float)k - (float)low) / ((float)high - (float)low);
      ramp = std::clamp(ramp, 0.0f, 1.0f);
      const float smooth = 1.0f - ramp;
      f[k] = f[k] / factor * (1.0f - smooth) + f[k] * smooth;
    }
  }
  return f;
}

void rope_apply(float* x, const std::vector<float>& freqs, int64_t pos, bool inverse) {
  const float p = (float)pos;
  for (size_t k = 0; k < freqs.size(); ++k) {
    const float ang = p * freqs[k];
    const float c = (float)std::cos((double)ang);
    float s = (float)std::sin((double)ang);
    if (inverse) s = -s;
    const float a = x[2 * k], b = x[2 * k + 1];
    x[2 * k] = a * c - b * s;
    x[2 * k + 1] = a * s + b * c;
  }
}

void hadamard(float* x, int64_t n) {
  for (int64_t h = 1; h < n; h *= 2) {
    for (int64_t i = 0; i < n; i += 2 * h) {
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
  const float s = 1.0f / std::sqrt((float)n);
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void sinkhorn(float* m, int hc, int iters, float eps) {
  for (int j = 0; j < hc; ++j) {
    float mx = m[j * hc];
    for (int k = 1; k < hc; ++k) mx = std::max(mx, m[j * hc + k]);
    float sum = 0.0f;
    for (int k = 0; k < hc; ++k) {
      m[j * hc + k] = std::exp(m[j * hc + k] - mx);
      sum += m[j * hc + k];
    }
    for (int k = 0; k < hc; ++k) m[j * hc + k] = m[j * hc + k] / sum + eps;
  }
  auto col_norm = [&] {
    for (int k = 0; k < hc; ++k) {
      float s = 0.0f;
      for (int j = 0; j < hc; ++j) s += m[j * hc + k];
      for (int j = 0; j < hc; ++j) m[j * hc + k] /= (s + eps);
    }
  };
  auto row_norm = [&] {
    for (int j = 0; j < hc; ++j) {
      float s = 0.0f;
      for (int k = 0; k < hc; ++k) s += m[j * hc + k];
      for (int k = 0; k < hc; ++k) m[j * hc + k] /= (s + eps);
    }
  };
  col_norm();
  for (int it = 1; it < iters; ++it) {
    row_norm();
    col_norm();
  }
}

}  // namespace dsv4::ops
