// Prefill attention kernels against a CPU double-precision reference of §5.6-5.7 (sparse
// attention with sinks, inverse RoPE of the output tail), on fresh random data (seed printed;
// DSV4_TEST_SEED=<n> reproduces) with NaN-poisoned outputs:
//  * fwd::attention without tensor cores (the f32 kernels): per-row relative error <= 1e-5;
//  * fwd::attention_mma (bf16 mma.sync), two bounds on the per-row relative L2 error:
//    - against the reference fed the kernel's bf16-rounded q and key/value rows: <= 1e-2. What
//      is left is the bf16 rounding of the weights P (2^-9 = 0.2% each, random) and f32 sums;
//      one wrong key among 640 of a flat head already moves a row by ~5%.
//    - against the exact reference: <= 5e-2. Rounding q and the keys (0.2% each) moves each
//      score by ~0.3% of its size, i.e. each weight by ~0.3% times the score spread; with a
//      spread of ~4 (the peaked heads below) rows land at 1-2.5% (2.3% seen on the H200).
// Shapes: H 4, 8, 20, 40, 64 (padded to 16-head tiles), ratio 0 / 4 (indexer selection, with
// and without it in one chunk) / 128, chunks at the prompt start (windows inside the chunk) and
// after it (windows partly in the ring), key counts from 1 to 640.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/device.h"
#include "cuda/fwd_kernels.h"
#include "cuda_test_util.h"
#include "test_seed.h"

namespace {

namespace cu = dsv4::cuda;
namespace fwd = dsv4::cuda::fwd;
using dsv4::test::run_seed;

constexpr int kHd = 512, kRd = 64, kW = 128;

struct Case {
  int H, n, p0, ratio, topk;
};

struct Data {
  Case c;
  std::vector<float> q, kvn, ring, comp, sinks, freqs;
  std::vector<int32_t> sel;
  int64_t comp_rows = 1;
};

// The key rows token i visits, in the kernels' canonical order (QueryKeys).
std::vector<const float*> keys_of(const Data& d, int i) {
  const int64_t p = (int64_t)d.c.p0 + i;
  const int64_t visible = d.c.ratio ? (p + 1) / d.c.ratio : 0;
  const bool use_sel = d.c.ratio == 4 && visible > d.c.topk;
  std::vector<const float*> ks;
  const int64_t n_comp = use_sel ? d.c.topk : visible;
  for (int64_t j = 0; j < n_comp; ++j) {
    const int64_t r = use_sel ? d.sel[(size_t)i * d.c.topk + j] : j;
    ks.push_back(d.comp.data() + r * kHd);
  }
  for (int64_t t = std::max<int64_t>(0, p - kW + 1); t <= p; ++t)
    ks.push_back(t >= d.c.p0 ? d.kvn.data() + (t - d.c.p0) * kHd : d.ring.data() + (t % kW) * kHd);
  return ks;
}

Data make_data(const Case& c, std::mt19937_64& rng) {
  Data d;
  d.c = c;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto fill = [&](std::vector<float>& v, size_t count, float sd) {
    v.resize(count);
    for (float& x : v) x = sd * nd(rng);
  };
  // Heads with larger q give peaked softmaxes (score spread ~4), the others flat ones.
  d.q.resize((size_t)c.n * c.H * kHd);
  for (int i = 0; i < c.n; ++i)
    for (int h = 0; h < c.H; ++h) {
      const float sd = h % 3 == 0 ? 4.0f : 1.0f;
      for (int e = 0; e < kHd; ++e) d.q[((size_t)i * c.H + h) * kHd + e] = sd * nd(rng);
    }
  fill(d.kvn, (size_t)c.n * kHd, 1.0f);
  fill(d.ring, (size_t)kW * kHd, 1.0f);
  d.comp_rows = c.ratio ? std::max<int64_t>(1, ((int64_t)c.p0 + c.n) / c.ratio) : 1;
  fill(d.comp, (size_t)d.comp_rows * kHd, 1.0f);
  fill(d.sinks, (size_t)c.H, 2.0f);
  d.freqs.resize(kRd / 2);
  for (int k = 0; k < kRd / 2; ++k) d.freqs[k] = std::pow(10000.0f, -2.0f * k / kRd);
  d.sel.assign((size_t)c.n * c.topk, 0);
  for (int i = 0; i < c.n; ++i) {
    const int64_t visible = c.ratio == 4 ? ((int64_t)c.p0 + i + 1) / 4 : 0;
    if (visible <= c.topk) continue;
    std::vector<int32_t> all((size_t)visible);
    for (int64_t r = 0; r < visible; ++r) all[(size_t)r] = (int32_t)r;
    std::shuffle(all.begin(), all.end(), rng);
    all.resize((size_t)c.topk);
    std::sort(all.begin(), all.end());
    std::copy(all.begin(), all.end(), d.sel.begin() + (int64_t)i * c.topk);
  }
  return d;
}

// x rounded to bf16 (to nearest even), as the kernel's conversions do.
float bf16_round(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  std::memcpy(&x, &u, 4);
  return x;
}

// bf16_inputs: q and the key rows rounded to bf16 first (the mma kernel's inputs).
std::vector<double> reference(const Data& dd, bool bf16_inputs) {
  Data rounded;
  if (bf16_inputs) {
    rounded = dd;
    for (auto* v : {&rounded.q, &rounded.kvn, &rounded.ring, &rounded.comp})
      for (float& x : *v) x = bf16_round(x);
  }
  const Data& d = bf16_inputs ? rounded : dd;
  const Case& c = d.c;
  std::vector<double> o((size_t)c.n * c.H * kHd);
  for (int i = 0; i < c.n; ++i) {
    const int64_t p = (int64_t)c.p0 + i;
    const auto ks = keys_of(d, i);
    std::vector<double> s(ks.size());
    for (int h = 0; h < c.H; ++h) {
      const float* qh = d.q.data() + ((size_t)i * c.H + h) * kHd;
      double m = d.sinks[h];
      for (size_t j = 0; j < ks.size(); ++j) {
        double acc = 0.0;
        for (int e = 0; e < kHd; ++e) acc += (double)qh[e] * ks[j][e];
        s[j] = acc / std::sqrt((double)kHd);
        m = std::max(m, s[j]);
      }
      double den = std::exp(d.sinks[h] - m);
      double* oh = o.data() + ((size_t)i * c.H + h) * kHd;
      for (size_t j = 0; j < ks.size(); ++j) {
        const double w = std::exp(s[j] - m);
        den += w;
        for (int e = 0; e < kHd; ++e) oh[e] += w * ks[j][e];
      }
      for (int e = 0; e < kHd; ++e) oh[e] /= den;
      // Inverse RoPE of the tail, with the kernels' f32 angle.
      double* t = oh + (kHd - kRd);
      for (int k = 0; k < kRd / 2; ++k) {
        const float ang = (float)p * d.freqs[k];
        const double cs = std::cos((double)ang), sn = -std::sin((double)ang);
        const double a = t[2 * k], b = t[2 * k + 1];
        t[2 * k] = a * cs - b * sn;
        t[2 * k + 1] = a * sn + b * cs;
      }
    }
  }
  return o;
}

// Largest per-(token, head) relative L2 error; every value must be finite.
double max_row_rel(const std::vector<float>& got, const std::vector<double>& ref, int rows) {
  double worst = 0.0;
  for (int r = 0; r < rows; ++r) {
    double dd = 0.0, rr = 0.0;
    for (int e = 0; e < kHd; ++e) {
      const float g = got[(size_t)r * kHd + e];
      if (!std::isfinite(g)) return INFINITY;
      const double x = ref[(size_t)r * kHd + e];
      dd += (g - x) * (g - x);
      rr += x * x;
    }
    worst = std::max(worst, std::sqrt(dd) / std::max(std::sqrt(rr), 1e-6));
  }
  return worst;
}

struct Dev {
  cu::DeviceBuffer q, kvn, ring, comp, sinks, freqs, sel, p0, o;
  int max_keys = 0;
  explicit Dev(const Data& d) {
    auto up = [](cu::DeviceBuffer& b, const auto& v) {
      b = cu::DeviceBuffer(sizeof(v[0]) * v.size());
      b.upload(v.data(), sizeof(v[0]) * v.size());
    };
    up(q, d.q);
    up(kvn, d.kvn);
    up(ring, d.ring);
    up(comp, d.comp);
    up(sinks, d.sinks);
    up(freqs, d.freqs);
    up(sel, d.sel);
    const int32_t pp = d.c.p0;
    p0 = cu::DeviceBuffer(sizeof pp);
    p0.upload(&pp, sizeof pp);
    o = cu::DeviceBuffer(sizeof(float) * (size_t)d.c.n * d.c.H * kHd);
    for (int i = 0; i < d.c.n; ++i) max_keys = std::max(max_keys, (int)keys_of(d, i).size());
  }
  std::vector<float> run(const Data& d, int mode, const cu::Stream& st) {
    const Case& c = d.c;
    o.fill_bytes(0xff);  // NaN
    const float* cp = c.ratio ? comp.as<float>() : nullptr;
    if (mode == 3) {  // one decode token on tensor cores: key ranges + the combine
      cu::DeviceBuffer part(sizeof(float) * (size_t)fwd::attention_part_floats(c.H, kHd, max_keys));
      part.fill_bytes(0xff);
      EXPECT_TRUE(fwd::attention_decode_mma(q.as<float>(), kvn.as<float>(), ring.as<float>(), cp,
                                            sel.as<int32_t>(), sinks.as<float>(), c.H, kHd, kRd, kW,
                                            c.ratio, c.topk, freqs.as<float>(), p0.as<int32_t>(),
                                            max_keys, o.as<float>(), part.as<float>(), st.get()));
      st.sync();
    } else if (mode == 2)
      fwd::attention_mma(q.as<float>(), kvn.as<float>(), ring.as<float>(), cp, sel.as<int32_t>(),
                         sinks.as<float>(), c.n, c.H, kHd, kRd, kW, c.ratio, c.topk,
                         freqs.as<float>(), p0.as<int32_t>(), o.as<float>(), st.get());
    else
      fwd::attention(q.as<float>(), kvn.as<float>(), ring.as<float>(), cp, sel.as<int32_t>(),
                     sinks.as<float>(), c.n, c.H, kHd, kRd, kW, c.ratio, c.topk, freqs.as<float>(),
                     p0.as<int32_t>(), max_keys, o.as<float>(), nullptr, mode == 1, st.get());
    st.sync();
    std::vector<float> h((size_t)c.n * c.H * kHd);
    o.download(h.data(), sizeof(float) * h.size());
    return h;
  }
};

TEST(CudaAttention, MmaSupportedShapes) {
  EXPECT_TRUE(fwd::attention_mma_supported(64, 512, 64));
  EXPECT_TRUE(fwd::attention_mma_supported(4, 512, 64));
  EXPECT_FALSE(fwd::attention_mma_supported(65, 512, 64));
  EXPECT_FALSE(fwd::attention_mma_supported(8, 256, 64));
  EXPECT_FALSE(fwd::attention_mma_supported(8, 512, 63));
}

TEST(CudaAttention, MmaAndF32MatchReference) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed());
  const Case cases[] = {
      {8, 200, 0, 0, 64},       // prompt start: 1..128 keys, all in the chunk
      {8, 70, 300, 4, 64},      // selection active, windows partly in the ring
      {4, 100, 1000, 128, 64},  // all compressed rows + window
      {64, 24, 4000, 4, 512},   // the real shape: 512 selected + 128 raw = 640 keys
      {64, 40, 250, 128, 512},  // ratio 128 at a partial ring
      {64, 300, 10, 4, 64},     // selection switches on inside the chunk (p >= 259)
      {20, 33, 500, 4, 128},    // H padded to 32
      {40, 50, 90, 0, 64},      // H padded to 48
  };
  cu::Stream st;
  for (const Case& c : cases) {
    ASSERT_TRUE(fwd::attention_mma_supported(c.H, kHd, kRd));
    const Data d = make_data(c, rng);
    const auto ref = reference(d, false), ref16 = reference(d, true);
    Dev dev(d);
    const auto f32 = dev.run(d, 0, st);
    const auto mma = dev.run(d, 2, st);
    const auto disp = dev.run(d, 1, st);
    const int rows = c.n * c.H;
    const double e32 = max_row_rel(f32, ref, rows), emma = max_row_rel(mma, ref, rows),
                 emma16 = max_row_rel(mma, ref16, rows);
    std::printf(
        "  H %2d n %3d p0 %4d ratio %3d topk %3d keys <= %3d: f32 %.2e, mma %.2e (bf16 inputs "
        "%.2e)\n",
        c.H, c.n, c.p0, c.ratio, c.topk, dev.max_keys, e32, emma, emma16);
    EXPECT_LE(e32, 1e-5) << "f32 kernel, H " << c.H << " ratio " << c.ratio;
    EXPECT_LE(emma16, 1e-2) << "mma kernel vs bf16-input reference, H " << c.H << " ratio "
                            << c.ratio;
    EXPECT_LE(emma, 5e-2) << "mma kernel, H " << c.H << " ratio " << c.ratio;
    // With tensor_cores, fwd::attention dispatches multi-token chunks to the mma kernel.
    EXPECT_TRUE(disp == mma) << "fwd::attention(tensor_cores) is not attention_mma";
  }
}

// fwd::attention_decode_mma (one decode token: key ranges on tensor cores, bf16 inputs, then the
// f32 combine with the sink and the inverse RoPE) within the mma kernel's bounds, on the decode
// shapes: 640 keys (512 selected + 128 raw), all compressed rows at ratio 128 (a partial ring,
// and ~900 keys), few keys (most ranges empty), heads padded to 16-head tiles.
TEST(CudaAttention, DecodeMmaMatchesReference) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed() + 3);
  const Case cases[] = {
      {64, 1, 4000, 4, 512},      // the real shape at 16K context: 640 keys
      {64, 1, 250, 128, 512},     // ratio 128 at a partial ring
      {64, 1, 100000, 128, 512},  // 781 compressed rows + 128 raw
      {64, 1, 5, 0, 64},          // 6 keys: most of the 16 ranges are empty
      {8, 1, 300, 4, 64},         // selection active, 8 heads
      {20, 1, 500, 4, 128},       // H padded to 32
  };
  cu::Stream st;
  for (const Case& c : cases) {
    const Data d = make_data(c, rng);
    const auto ref = reference(d, false), ref16 = reference(d, true);
    Dev dev(d);
    const auto mma = dev.run(d, 3, st);
    const int rows = c.n * c.H;
    const double emma = max_row_rel(mma, ref, rows), emma16 = max_row_rel(mma, ref16, rows);
    std::printf("  decode H %2d p0 %6d ratio %3d keys %3d: mma %.2e (bf16 inputs %.2e)\n", c.H,
                c.p0, c.ratio, dev.max_keys, emma, emma16);
    EXPECT_LE(emma16, 1e-2) << "decode mma vs bf16-input reference, H " << c.H << " p0 " << c.p0;
    EXPECT_LE(emma, 5e-2) << "decode mma, H " << c.H << " p0 " << c.p0;
  }
}

}  // namespace
