// GPU matrix-vector kernels against the CPU oracle (quant::matvec / matmul).
//
// Every GPU test draws fresh random valid blocks and x from a seed taken from the clock (printed;
// DSV4_TEST_SEED=<n> reproduces a run), poisons the output with NaN before the launch and checks
// every output element was overwritten. Tolerance per row: |y_gpu - y_cpu| <= 1e-5 * S + 1e-6,
// S = sum_i |w_i x_i| (float64). Why it holds: both sides decode the weights exactly (the GPU
// uses the CPU's f32 operations; Q8_0/F16/BF16/F32/IQ2_XXS decoded values are products of an
// f16-derived scale and a small integer) and accumulate in f32 with fma; they differ only in
// summation order, so each is within gamma_k * S of the exact sum with k the longest chain of
// dependent roundings: the CPU uses 32 lanes (k = cols/32 + 5 <= 261 for cols <= 8192); the GPU
// sums 8-32 values per chain, then per block, per unit and over the lanes/warps of a row
// (k <= ~48 + units per lane). The worst-case bound (k_cpu + k_gpu) * 2^-24 * S is ~1.8e-5 * S
// at 8192 columns, but round-to-nearest errors are unbiased and independent, so the actual error
// grows like sqrt(k) * 2^-24 * S (~1e-6 * S with a wide margin; the test prints the largest
// observed ratio). Q2_K and Q4_K compute d1*sum(q x) - m1*sum(x) per sub-block, whose error is
// relative to sum(|d1 q| + |m1|)|x| rather than S; with the random blocks' scales that sum is a
// few times S, still far inside the bound. The generic (fallback) kernel must equal the CPU bit
// for bit. Rows of float64 dequantize+dot double-check the CPU oracle itself.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/ggml_type.h"
#include "cuda/device.h"
#include "cuda/matvec.h"
#include "cuda/mv_plan.h"
#include "quant/quant.h"
#include "test_seed.h"

namespace {

using dsv4::GgmlType;
namespace cu = dsv4::cuda;
namespace mv = dsv4::cuda::mv;

using dsv4::test::run_seed;
uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t z = a + 0x9e3779b97f4a7c15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

bool have_gpu() {
  return cu::device_count() > 0;
}

// DSV4_MV_TUNE=key=value,... runs every test under other planner knobs (mv_plan.h Tuning; the keys
// of bench_matvec --tune), so that each launch geometry the benchmark tries is checked too.
const bool kTuneApplied = [] {
  const char* e = std::getenv("DSV4_MV_TUNE");
  if (!e) return false;
  (void)mv::tuning();  // reads DSV4_MV_TUNE (unknown keys are reported there)
  std::printf("[   tune   ] DSV4_MV_TUNE=%s\n", e);
  return true;
}();
#define REQUIRE_GPU()                                                    \
  do {                                                                   \
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device: GPU test skipped"; \
  } while (0)

struct HostMatrix {
  GgmlType type;
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;
  std::vector<uint8_t> bytes;
  const uint8_t* row(int64_t r) const { return bytes.data() + (size_t)r * row_bytes; }
};

HostMatrix random_matrix(GgmlType t, int64_t rows, int64_t cols, uint64_t seed) {
  HostMatrix m;
  m.type = t;
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = dsv4::ggml_row_bytes(t, (uint64_t)cols);
  m.bytes.resize(m.row_bytes * (size_t)rows);
  // Rows in parallel chunks (random_blocks is deterministic per (type, seed)).
  const int64_t chunk = std::max<int64_t>(1, (1 << 22) / std::max<int64_t>(cols, 1));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    dsv4::quant::random_blocks(t, mix(seed, (uint64_t)r0), 1.0f,
                               m.bytes.data() + (size_t)r0 * m.row_bytes, n * cols);
  }
  return m;
}

std::vector<float> random_x(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x((size_t)n);
  for (auto& v : x) v = nd(rng);
  return x;
}

// S[r] = sum_i |w_i x_i| (float64), and optionally the float64 dot.
void abs_dots(const HostMatrix& m, const float* x, std::vector<double>* sabs,
              std::vector<double>* exact) {
  sabs->assign((size_t)m.rows, 0.0);
  if (exact) exact->assign((size_t)m.rows, 0.0);
#pragma omp parallel
  {
    std::vector<float> w((size_t)m.cols);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < m.rows; ++r) {
      dsv4::quant::dequantize_row(m.type, m.row(r), w.data(), m.cols);
      double s = 0, e = 0;
      for (int64_t i = 0; i < m.cols; ++i) {
        const double p = (double)w[(size_t)i] * (double)x[i];
        s += std::fabs(p);
        e += p;
      }
      (*sabs)[(size_t)r] = s;
      if (exact) (*exact)[(size_t)r] = e;
    }
  }
}

struct Cmp {
  int64_t bad = 0, nan = 0;
  double worst_ratio = 0;  // max |err| / S
  int64_t worst_row = -1;
  std::string first_bad;
};

Cmp compare(const float* got, const float* ref, const double* sabs, int64_t n) {
  Cmp c;
  for (int64_t r = 0; r < n; ++r) {
    if (!std::isfinite(got[r])) {
      if (c.nan++ == 0 && c.first_bad.empty())
        c.first_bad = "row " + std::to_string(r) + " not finite (not written?)";
      continue;
    }
    const double err = std::fabs((double)got[r] - (double)ref[r]);
    const double tol = 1e-5 * sabs[r] + 1e-6;
    const double ratio = err / std::max(sabs[r], 1e-30);
    if (ratio > c.worst_ratio) {
      c.worst_ratio = ratio;
      c.worst_row = r;
    }
    if (err > tol && c.bad++ == 0 && c.first_bad.empty())
      c.first_bad = "row " + std::to_string(r) + ": gpu " + std::to_string(got[r]) + " cpu " +
                    std::to_string(ref[r]) + " S " + std::to_string(sabs[r]);
  }
  return c;
}

int64_t bit_mismatches(const float* a, const float* b, int64_t n, int64_t* first) {
  int64_t bad = 0;
  *first = -1;
  for (int64_t i = 0; i < n; ++i)
    if (std::memcmp(&a[i], &b[i], 4) != 0) {
      if (bad++ == 0) *first = i;
    }
  return bad;
}

void sync_check() {
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
}

// ---------------------------------------------------------------------------------------------
// Host-only: planner and error layer (no device needed).

constexpr mv::DeviceLimits kH100{132, 227 * 1024};

struct RealShape {
  GgmlType t;
  int64_t rows, cols;
  int n_mats, n_slots;
};
const RealShape kRealShapes[] = {
    {GgmlType::Q8_0, 1024, 4096, 1, 1},    {GgmlType::Q8_0, 32768, 1024, 1, 1},
    {GgmlType::Q8_0, 512, 4096, 1, 1},     {GgmlType::Q8_0, 4096, 8192, 1, 1},
    {GgmlType::Q8_0, 1024, 4096, 1, 8},    {GgmlType::Q8_0, 2048, 4096, 2, 1},
    {GgmlType::Q8_0, 4096, 2048, 1, 1},    {GgmlType::Q8_0, 129280, 4096, 1, 1},
    {GgmlType::IQ2_XXS, 2048, 4096, 2, 6}, {GgmlType::Q2_K, 4096, 2048, 1, 6},
    {GgmlType::Q4_K, 2048, 4096, 2, 6},    {GgmlType::Q4_K, 4096, 2048, 1, 6},
    {GgmlType::F16, 24, 16384, 1, 1},      {GgmlType::F16, 1024, 4096, 2, 1},
    {GgmlType::F16, 512, 4096, 2, 1},      {GgmlType::F16, 8192, 1024, 1, 1},
    {GgmlType::F16, 64, 4096, 1, 1},       {GgmlType::F16, 256, 4096, 2, 1},
    {GgmlType::F16, 256, 4096, 1, 1},      {GgmlType::F16, 4, 16384, 1, 1},
};

void expect_plan_invariants(const mv::Shape& s, const mv::Plan& p, const mv::DeviceLimits& lim) {
  const auto g = mv::format_geom(s.type);
  ASSERT_TRUE(g.has_value());
  const int lr = 1 << p.lr_log2;
  EXPECT_EQ(p.units * (int64_t)g->unit_values, s.cols);
  EXPECT_EQ(p.units % (p.ks * lr), 0);
  EXPECT_EQ((int64_t)p.steps * p.ks * lr, p.units);
  EXPECT_GE((int64_t)p.groups * (32 / lr), s.rows);
  EXPECT_LT((int64_t)(p.groups - 1) * (32 / lr), s.rows);
  EXPECT_EQ(p.ctas, (int64_t)p.groups * s.n_mats * s.n_slots);
  EXPECT_EQ(p.threads, 32 * p.ks);
  EXPECT_LE(p.threads, mv::max_threads_for_nb(s.nb));
  EXPECT_LE(p.smem, lim.smem_per_block);
  EXPECT_GE(p.stages, 1);
  EXPECT_EQ(p.stages & (p.stages - 1), 0);
  if (p.bulk) {
    EXPECT_LE(p.stages, mv::kMaxBulkStages);
  } else {
    EXPECT_EQ(p.stages, g->stages);
  }
  const int wg = p.persist ? p.persist_warps : p.ks;  // warps of a launched CTA
  if (p.persist) {
    EXPECT_TRUE(p.bulk);
    EXPECT_EQ(p.ks, 1);
    EXPECT_GE(p.persist_warps, 1);
    EXPECT_LE(32 * p.persist_warps, mv::max_threads_for_nb(s.nb));
  }
  EXPECT_EQ(p.off_bar, p.off_ring + (size_t)wg * p.stages * 32 * g->slot_bytes);
  EXPECT_EQ(p.smem, p.off_bar + (p.bulk ? (size_t)wg * mv::kBarBytesPerWarp : 0));
  EXPECT_EQ(p.off_bar % 16, 0u);
  EXPECT_EQ(p.off_xsum % 16, 0u);
  EXPECT_EQ(p.off_ring % 16, 0u);
  if (g->smem_x) {
    EXPECT_TRUE(p.smem_x);
  }
  if (p.smem_x) {
    EXPECT_GE(p.off_xsum, (size_t)s.nb * s.cols * 4);
  }
  // the ring of a warp holds the cross-warp partial sums
  EXPECT_GE((size_t)p.stages * 32 * g->slot_bytes, (size_t)s.nb * 32 * 4);
}

// The IQ2_XXS int8-x plans: the decoder's tables (2 KiB, or 24 / 48 KiB replicated) lie between x
// and the ring, the persistent CTAs take Tuning::iq2_pw warps with the replicated tables, and the
// shared memory fits the device.
TEST(CudaMatvecPlan, Iq2X8TablesInTheLayout) {
  const mv::Tuning saved = mv::tuning();
  for (int rep : {0, 16, 32})
    for (int pw : {4, 8, 12}) {
      mv::tuning().iq2_rep = rep;
      mv::tuning().iq2_pw = pw;
      mv::Shape s{GgmlType::IQ2_XXS, 2048, 4096, 1, 2, 6, true};
      s.x8 = true;
      const mv::Plan p = mv::plan_matvec(s, kH100);
      SCOPED_TRACE("rep " + std::to_string(rep) + " pw " + std::to_string(pw) + ": " +
                   mv::to_string(p));
      ASSERT_TRUE(p.fast);
      EXPECT_TRUE(p.x8);
      EXPECT_EQ(p.table_rep, rep);
      const size_t tab = rep ? (size_t)(256 + 128) * 4 * rep : 2048;
      EXPECT_GE(p.off_ring, p.off_tab + tab);
      EXPECT_GE(p.off_tab, (size_t)(8 * 592));  // x: 8 units of 512 int8 + scales + padding
      EXPECT_LE(p.smem, kH100.smem_per_block);
      ASSERT_TRUE(p.persist);
      EXPECT_EQ(p.persist_warps, rep ? pw : saved.persist_warps);
      s.side = true;  // beside the chain: at most side_persist_warps
      const mv::Plan ps = mv::plan_matvec(s, kH100);
      EXPECT_LE(ps.persist_warps, saved.side_persist_warps);
      EXPECT_EQ(ps.persist_max_ctas, saved.side_persist_ctas);
      EXPECT_EQ(p.persist_max_ctas, 0);  // the chain's kernels: as many as are resident
    }
  mv::tuning() = saved;
}

TEST(CudaMatvecPlan, RealDecodeShapesTakeTheFastPath) {
  for (const auto& r : kRealShapes)
    for (int nb : {1, 2, 4, 8}) {
      mv::Shape s{r.t, r.rows, r.cols, nb, r.n_mats, r.n_slots, true};
      const mv::Plan p = mv::plan_matvec(s, kH100);
      SCOPED_TRACE(std::string(dsv4::ggml_type_name(r.t)) + " " + std::to_string(r.rows) + "x" +
                   std::to_string(r.cols) + " nb=" + std::to_string(nb) + ": " + mv::to_string(p));
      ASSERT_TRUE(p.fast);
      expect_plan_invariants(s, p, kH100);
    }
}

TEST(CudaMatvecPlan, InvariantsOverManyShapes) {
  const GgmlType types[] = {GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q2_K, GgmlType::IQ2_XXS,
                            GgmlType::F16,  GgmlType::BF16, GgmlType::F32};
  for (GgmlType t : types)
    for (int64_t rows : {1, 3, 24, 31, 32, 33, 100, 512, 1000, 4096, 70001})
      for (int64_t cols : {256, 512, 1024, 1536, 2048, 3072, 4096, 5120, 8192, 16384})
        for (int nb : {1, 3, 8})
          for (int slots : {1, 6}) {
            mv::Shape s{t, rows, cols, nb, 1, slots, true};
            for (const auto& lim : {kH100, mv::DeviceLimits{16, 99 * 1024}}) {
              const mv::Plan p = mv::plan_matvec(s, lim);
              SCOPED_TRACE(std::string(dsv4::ggml_type_name(t)) + " " + std::to_string(rows) + "x" +
                           std::to_string(cols) + " nb=" + std::to_string(nb) + ": " +
                           mv::to_string(p));
              const auto g = mv::format_geom(t);
              if (cols % g->unit_values == 0 &&
                  (!g->smem_x || (size_t)nb * cols * 4 <= 64 * 1024)) {
                ASSERT_TRUE(p.fast);
              }
              if (p.fast) expect_plan_invariants(s, p, lim);
            }
          }
}

TEST(CudaMatvecPlan, OddShapesFallBackToGeneric) {
  auto plan = [](GgmlType t, int64_t rows, int64_t cols, bool aligned = true, int nb = 1) {
    return mv::plan_matvec(mv::Shape{t, rows, cols, nb, 1, 1, aligned}, kH100);
  };
  EXPECT_FALSE(plan(GgmlType::IQ2_XXS, 64, 256).fast);  // 1 block: not a 2-block unit
  EXPECT_TRUE(plan(GgmlType::IQ2_XXS, 64, 512).fast);
  EXPECT_FALSE(plan(GgmlType::Q8_0, 64, 96).fast);
  EXPECT_TRUE(plan(GgmlType::Q8_0, 64, 256).fast);
  EXPECT_TRUE(plan(GgmlType::Q2_K, 64, 256).fast);
  EXPECT_TRUE(plan(GgmlType::Q4_K, 64, 256).fast);
  EXPECT_FALSE(plan(GgmlType::F16, 5, 96).fast);
  EXPECT_FALSE(plan(GgmlType::Q8_0, 64, 4096, false).fast);
  EXPECT_FALSE(plan(GgmlType::Q4_0, 64, 4096).fast);
  // x staging beyond shared memory: 8 vectors of 16384 values
  EXPECT_FALSE(plan(GgmlType::Q4_K, 64, 16384, true, 8).fast);
  EXPECT_TRUE(plan(GgmlType::Q8_0, 64, 16384, true, 8).fast);  // Q8_0 reads x from global
}

// A shape marked side (a decode graph branch) gets persistent CTAs of at most side_persist_warps
// warps, so its shared memory leaves room for the chain's kernels; 0 turns persistence off.
TEST(CudaMatvecPlan, SideShapesTakeSmallerPersistentCtas) {
  // attn_q_b (f32 x: expect_plan_invariants checks the f32 x staging)
  mv::Shape s{GgmlType::Q8_0, 32768, 1024, 1, 1, 1, true};
  mv::Tuning& tu = mv::tuning();
  const mv::Tuning saved = tu;
  tu = mv::Tuning{};
  const mv::Plan chain = mv::plan_matvec(s, kH100);
  s.side = true;
  const mv::Plan side = mv::plan_matvec(s, kH100);
  tu.side_persist_warps = 0;
  const mv::Plan off = mv::plan_matvec(s, kH100);
  tu = saved;
  ASSERT_TRUE(chain.fast && chain.persist) << mv::to_string(chain);
  ASSERT_TRUE(side.fast && side.persist) << mv::to_string(side);
  EXPECT_EQ(chain.persist_warps, mv::Tuning{}.persist_warps);
  EXPECT_EQ(side.persist_warps,
            std::min(mv::Tuning{}.persist_warps, mv::Tuning{}.side_persist_warps));
  EXPECT_LT(side.smem, chain.smem);
  expect_plan_invariants(s, side, kH100);
  EXPECT_TRUE(off.fast) << mv::to_string(off);
  EXPECT_FALSE(off.persist) << mv::to_string(off);
}

// plan_matvec's knobs argument replaces mv::tuning() for that plan only (per-product knobs,
// MatvecOp::tag): the router's logits product at 16 lanes per row takes twice the CTAs.
TEST(CudaMatvecPlan, KnobsArgumentOverridesTheTuning) {
  const mv::Shape s{GgmlType::F16, 256, 4096, 1, 1, 1, true};
  mv::Tuning knobs = mv::tuning();
  ASSERT_EQ(mv::apply_tuning_spec(knobs, "max_lr=4"), "");
  const mv::Plan dflt = mv::plan_matvec(s, kH100);
  const mv::Plan same = mv::plan_matvec(s, kH100, nullptr);
  const mv::Plan wide = mv::plan_matvec(s, kH100, &knobs);
  ASSERT_TRUE(dflt.fast && wide.fast) << mv::to_string(wide);
  EXPECT_EQ(mv::to_string(same), mv::to_string(dflt));
  EXPECT_EQ(dflt.lr_log2, mv::tuning().max_lr_log2);
  EXPECT_EQ(wide.lr_log2, 4);
  EXPECT_EQ(wide.ctas, 2 * dflt.ctas);
  expect_plan_invariants(s, wide, kH100);
  EXPECT_EQ(mv::apply_tuning_spec(knobs, "no_such_knob=1"), "no_such_knob");
}

// MatvecOp::tag: a tag with a built-in default (gate_inp) plans with it, DSV4_MV_TUNE_<TAG>
// replaces the default (empty: none), and an untagged op plans with the global knobs.
TEST(CudaMatvecPlan, TaggedProductsTakeTheirKnobs) {
  REQUIRE_GPU();
  cu::MatvecOp op;
  op.type = GgmlType::F16;
  op.rows = 256;
  op.cols = 4096;
  cu::DeviceBuffer w(256 * 4096 * 2), x(4096 * 4), y(256 * 4);
  op.w[0] = w.data();
  op.x = x.as<float>();
  op.y = y.as<float>();
  const std::string untagged = cu::matvec_describe(op);
  op.tag = "gate_inp";
  const std::string gate_inp = cu::matvec_describe(op);
  EXPECT_NE(untagged.find("lanes/row=8 "), std::string::npos) << untagged;
  EXPECT_NE(gate_inp.find("lanes/row=16 "), std::string::npos) << gate_inp;
  // The routed gate+up (IQ2_XXS, int8 x, six selected experts) takes one bulk stage.
  {
    cu::MatvecOp ex;
    ex.type = GgmlType::IQ2_XXS;
    ex.x8 = true;
    ex.w[0] = w.data();
    ex.w[1] = w.data();
    ex.n_mats = 2;
    ex.rows = 2048;
    ex.cols = 4096;
    ex.expert_stride_bytes = 2048 * (4096 / 256) * 66;
    ex.n_expert = 256;
    ex.ids = reinterpret_cast<const int32_t*>(y.data());
    ex.n_slots = 6;
    ex.x = x.as<float>();
    ex.y = y.as<float>();
    const std::string plain = cu::matvec_describe(ex);
    ex.tag = "exp_gate_up";
    const std::string tagged = cu::matvec_describe(ex);
    EXPECT_NE(plain.find("bulkx2"), std::string::npos) << plain;
    EXPECT_NE(tagged.find("bulkx1"), std::string::npos) << tagged;
  }
  ::setenv("DSV4_MV_TUNE_TEST_PLAN_TAG", "max_lr=1", 1);
  op.tag = "test_plan_tag";
  const std::string narrow = cu::matvec_describe(op);
  EXPECT_NE(narrow.find("lanes/row=2 "), std::string::npos) << narrow;
  ::setenv("DSV4_MV_TUNE_TEST_PLAN_EMPTY", "", 1);
  op.tag = "test_plan_empty";
  EXPECT_EQ(cu::matvec_describe(op), untagged);
}

TEST(CudaError, CheckNamesCallFileAndLine) {
  auto failing_call = [] { return cudaErrorInvalidValue; };
  try {
    DSV4_CUDA_CHECK(failing_call());
    FAIL() << "no throw";
  } catch (const dsv4::Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("cudaErrorInvalidValue"), std::string::npos) << w;
    EXPECT_NE(w.find("failing_call()"), std::string::npos) << w;
    EXPECT_NE(w.find("test_cuda_matvec.cpp:"), std::string::npos) << w;
  }
}

TEST(CudaDevice, ReportsOrSkips) {
  if (!have_gpu()) {
    EXPECT_EQ(cu::device_count(), 0);
    GTEST_SKIP() << "no CUDA device: GPU test skipped";
  }
  const auto& d = cu::current_device_info();
  std::printf("[   info   ] device %d: %s, cc %d.%d, %d SMs, %zu KiB smem/block, %zu MiB L2\n",
              d.id, d.name.c_str(), d.cc_major, d.cc_minor, d.sm_count,
              d.smem_per_block_optin / 1024, d.l2_bytes >> 20);
  EXPECT_GT(d.sm_count, 0);
  cu::DeviceBuffer b(1024);
  std::vector<uint8_t> h(1024, 7), back(1024, 0);
  b.upload(h.data(), h.size());
  b.download(back.data(), back.size());
  EXPECT_EQ(h, back);
  EXPECT_THROW(b.upload(h.data(), 2048), dsv4::Error);
}

// ---------------------------------------------------------------------------------------------
// Single matrix, batch 1, all formats, real and odd shapes.

struct Case {
  GgmlType t;
  int64_t cols, rows;  // "cols -> rows" as in ARCH.md
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << dsv4::ggml_type_name(c.t) << " " << c.cols << "->" << c.rows;
}
std::string case_name(const testing::TestParamInfo<Case>& i) {
  return std::string(dsv4::ggml_type_name(i.param.t)) + "_" + std::to_string(i.param.cols) + "to" +
         std::to_string(i.param.rows);
}

class CudaMatvec : public testing::TestWithParam<Case> {};

TEST_P(CudaMatvec, MatchesCpu) {
  REQUIRE_GPU();
  const Case c = GetParam();
  const uint64_t seed =
      mix(run_seed(), (uint64_t)c.t * 1000003 + (uint64_t)c.cols * 7 + (uint64_t)c.rows);
  const HostMatrix m = random_matrix(c.t, c.rows, c.cols, seed);
  const std::vector<float> x = random_x(c.cols, seed ^ 0x55);
  std::vector<float> ref((size_t)c.rows);
  dsv4::quant::matvec(c.t, m.bytes.data(), c.rows, c.cols, x.data(), ref.data());
  std::vector<double> sabs, exact;
  abs_dots(m, x.data(), &sabs, &exact);

  // The CPU oracle itself against float64 on a few rows.
  for (int64_t r : {int64_t{0}, c.rows / 2, c.rows - 1}) {
    EXPECT_LE(std::fabs((double)ref[(size_t)r] - exact[(size_t)r]), 1e-5 * sabs[(size_t)r] + 1e-6)
        << "CPU oracle vs float64, row " << r;
  }

  cu::DeviceBuffer dw(m.bytes.size()), dx(x.size() * 4), dy(ref.size() * 4);
  dw.upload(m.bytes.data(), m.bytes.size());
  dx.upload(x.data(), x.size() * 4);
  std::vector<float> got(ref.size());

  cu::MatvecOp op;
  op.type = c.t;
  op.w[0] = dw.data();
  op.rows = c.rows;
  op.cols = c.cols;
  op.x = dx.as<float>();
  op.y = dy.as<float>();
  for (auto path : {cu::MatvecPath::kAuto, cu::MatvecPath::kGeneric}) {
    op.path = path;
    dy.fill_bytes(0xFF);  // NaN
    cu::matvec_run(op);
    sync_check();
    dy.download(got.data(), got.size() * 4);
    const Cmp cmp = compare(got.data(), ref.data(), sabs.data(), c.rows);
    const std::string plan = cu::matvec_describe(op);
    std::printf("[   info   ] %s %" PRId64 "->%" PRId64 " %s: max |err|/S = %.3g\n",
                std::string(dsv4::ggml_type_name(c.t)).c_str(), c.cols, c.rows, plan.c_str(),
                cmp.worst_ratio);
    EXPECT_EQ(cmp.nan, 0) << plan << ": " << cmp.first_bad;
    EXPECT_EQ(cmp.bad, 0) << plan << ": " << cmp.first_bad;
    if (path == cu::MatvecPath::kGeneric) {
      int64_t first = -1;
      const int64_t mism = bit_mismatches(got.data(), ref.data(), c.rows, &first);
      EXPECT_EQ(mism, 0) << "generic kernel differs from quant::matvec bit for bit, first row "
                         << first << ": " << got[(size_t)std::max<int64_t>(first, 0)] << " vs "
                         << ref[(size_t)std::max<int64_t>(first, 0)];
    }
  }
  // Determinism: a second fast run gives the same bits.
  op.path = cu::MatvecPath::kAuto;
  std::vector<float> again(ref.size());
  dy.fill_bytes(0xFF);
  cu::matvec_run(op);
  sync_check();
  dy.download(got.data(), got.size() * 4);
  dy.fill_bytes(0xFF);
  cu::matvec(c.t, dw.data(), c.rows, c.cols, dx.as<float>(), dy.as<float>());
  sync_check();
  dy.download(again.data(), again.size() * 4);
  int64_t first = -1;
  EXPECT_EQ(bit_mismatches(got.data(), again.data(), c.rows, &first), 0) << "row " << first;
}

const Case kCases[] = {
    // Q8_0: attn_q_a, attn_q_b, attn_kv, attn_output_b, output head, shared experts, odd
    {GgmlType::Q8_0, 4096, 1024},
    {GgmlType::Q8_0, 1024, 32768},
    {GgmlType::Q8_0, 4096, 512},
    {GgmlType::Q8_0, 8192, 4096},
    {GgmlType::Q8_0, 4096, 129280},
    {GgmlType::Q8_0, 4096, 2048},
    {GgmlType::Q8_0, 2048, 4096},
    {GgmlType::Q8_0, 256, 64},
    {GgmlType::Q8_0, 96, 37},
    {GgmlType::Q8_0, 64, 1},
    // routed experts
    {GgmlType::IQ2_XXS, 4096, 2048},
    {GgmlType::IQ2_XXS, 256, 64},
    {GgmlType::IQ2_XXS, 1024, 100},
    {GgmlType::Q4_K, 4096, 2048},
    {GgmlType::Q4_K, 2048, 4096},
    {GgmlType::Q4_K, 256, 64},
    {GgmlType::Q4_K, 768, 33},
    {GgmlType::Q2_K, 2048, 4096},
    {GgmlType::Q2_K, 4096, 2048},
    {GgmlType::Q2_K, 256, 64},
    {GgmlType::Q2_K, 512, 5},
    // F16: compressor, HC, indexer q_b, indexer proj, router, odd
    {GgmlType::F16, 4096, 1024},
    {GgmlType::F16, 16384, 24},
    {GgmlType::F16, 1024, 8192},
    {GgmlType::F16, 4096, 64},
    {GgmlType::F16, 4096, 256},
    {GgmlType::F16, 256, 64},
    {GgmlType::F16, 96, 10},
    {GgmlType::BF16, 4096, 512},
    {GgmlType::BF16, 64, 3},
    {GgmlType::F32, 4096, 256},
    {GgmlType::F32, 256, 64},
    {GgmlType::F32, 32, 5},
};
INSTANTIATE_TEST_SUITE_P(Shapes, CudaMatvec, testing::ValuesIn(kCases), case_name);

// ---------------------------------------------------------------------------------------------
// Small batches (MTP / speculative verification): Y[v] = W X[v], v < nb.

TEST(CudaMatvecBatch, MatchesCpuMatmul) {
  REQUIRE_GPU();
  const Case cases[] = {
      {GgmlType::Q8_0, 4096, 1024}, {GgmlType::Q8_0, 8192, 512},    {GgmlType::Q4_K, 4096, 2048},
      {GgmlType::Q2_K, 2048, 1024}, {GgmlType::IQ2_XXS, 4096, 512}, {GgmlType::F16, 4096, 1024},
      {GgmlType::BF16, 1024, 256},  {GgmlType::F32, 1024, 256},     {GgmlType::IQ2_XXS, 256, 40}};
  for (const Case& c : cases)
    for (int nb : {2, 3, 5, 8}) {
      SCOPED_TRACE(std::string(dsv4::ggml_type_name(c.t)) + " " + std::to_string(c.cols) + "->" +
                   std::to_string(c.rows) + " nb=" + std::to_string(nb));
      const uint64_t seed = mix(run_seed(), 77 + (uint64_t)c.t * 31 + (uint64_t)nb);
      const HostMatrix m = random_matrix(c.t, c.rows, c.cols, seed);
      const std::vector<float> x = random_x(nb * c.cols, seed ^ 0x99);
      std::vector<float> ref((size_t)(nb * c.rows));
      dsv4::quant::matmul(c.t, m.bytes.data(), c.rows, c.cols, x.data(), nb, ref.data());
      cu::DeviceBuffer dw(m.bytes.size()), dx(x.size() * 4), dy(ref.size() * 4);
      dw.upload(m.bytes.data(), m.bytes.size());
      dx.upload(x.data(), x.size() * 4);
      dy.fill_bytes(0xFF);
      cu::matvec_batch(c.t, dw.data(), c.rows, c.cols, dx.as<float>(), nb, dy.as<float>());
      sync_check();
      std::vector<float> got(ref.size());
      dy.download(got.data(), got.size() * 4);
      for (int v = 0; v < nb; ++v) {
        std::vector<double> sabs;
        abs_dots(m, x.data() + (size_t)v * c.cols, &sabs, nullptr);
        const Cmp cmp = compare(got.data() + (size_t)v * c.rows, ref.data() + (size_t)v * c.rows,
                                sabs.data(), c.rows);
        EXPECT_EQ(cmp.nan, 0) << "vector " << v << ": " << cmp.first_bad;
        EXPECT_EQ(cmp.bad, 0) << "vector " << v << ": " << cmp.first_bad;
      }
    }
}

// ---------------------------------------------------------------------------------------------
// Experts: stacked [cols, rows, n_expert], selected ids, two tensors in one launch.

struct ExpertCase {
  GgmlType t;
  int64_t cols, rows;
  int n_mats;
  bool per_slot_x;
};

TEST(CudaMatvecExperts, SelectedExpertsMatchCpu) {
  REQUIRE_GPU();
  const ExpertCase cases[] = {
      {GgmlType::IQ2_XXS, 4096, 2048, 2, false}, {GgmlType::Q2_K, 2048, 4096, 1, true},
      {GgmlType::Q4_K, 4096, 2048, 2, false},    {GgmlType::Q4_K, 2048, 4096, 1, true},
      {GgmlType::Q8_0, 4096, 1024, 1, true},     {GgmlType::IQ2_XXS, 256, 96, 2, true}};
  constexpr int kExperts = 10, kSlots = 6;
  for (const ExpertCase& c : cases) {
    SCOPED_TRACE(std::string(dsv4::ggml_type_name(c.t)) + " " + std::to_string(c.cols) + "->" +
                 std::to_string(c.rows));
    const uint64_t seed = mix(run_seed(), 1234 + (uint64_t)c.t * 17 + (uint64_t)c.cols);
    std::vector<HostMatrix> mats;
    for (int m = 0; m < c.n_mats; ++m)
      mats.push_back(random_matrix(c.t, c.rows * kExperts, c.cols, mix(seed, (uint64_t)m)));
    std::vector<int32_t> ids(kExperts);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937_64(seed));
    ids.resize(kSlots);
    const int64_t nx = c.per_slot_x ? kSlots * c.cols : c.cols;
    const std::vector<float> x = random_x(nx, seed ^ 0xabc);

    std::vector<cu::DeviceBuffer> dw;
    for (auto& m : mats) {
      dw.emplace_back(m.bytes.size());
      dw.back().upload(m.bytes.data(), m.bytes.size());
    }
    cu::DeviceBuffer dids(ids.size() * 4), dx(x.size() * 4),
        dy((size_t)c.n_mats * kSlots * c.rows * 4);
    dids.upload(ids.data(), ids.size() * 4);
    dx.upload(x.data(), x.size() * 4);
    dy.fill_bytes(0xFF);
    cu::ExpertMatvec e;
    e.type = c.t;
    for (int m = 0; m < c.n_mats; ++m) e.w[m] = dw[(size_t)m].data();
    e.n_mats = c.n_mats;
    e.rows = c.rows;
    e.cols = c.cols;
    e.n_expert = kExperts;
    e.ids = dids.as<int32_t>();
    e.n_slots = kSlots;
    e.x = dx.as<float>();
    e.x_slot_stride = c.per_slot_x ? c.cols : 0;
    e.y = dy.as<float>();
    cu::matvec_experts(e);
    sync_check();
    std::vector<float> got((size_t)c.n_mats * kSlots * c.rows);
    dy.download(got.data(), got.size() * 4);

    for (int m = 0; m < c.n_mats; ++m)
      for (int s = 0; s < kSlots; ++s) {
        HostMatrix sub;
        sub.type = c.t;
        sub.rows = c.rows;
        sub.cols = c.cols;
        sub.row_bytes = mats[(size_t)m].row_bytes;
        const uint8_t* base = mats[(size_t)m].row((int64_t)ids[(size_t)s] * c.rows);
        sub.bytes.assign(base, base + sub.row_bytes * (size_t)c.rows);
        const float* xs = x.data() + (c.per_slot_x ? (size_t)s * c.cols : 0);
        std::vector<float> ref((size_t)c.rows);
        dsv4::quant::matvec(c.t, sub.bytes.data(), c.rows, c.cols, xs, ref.data());
        std::vector<double> sabs;
        abs_dots(sub, xs, &sabs, nullptr);
        const Cmp cmp = compare(got.data() + ((size_t)m * kSlots + s) * c.rows, ref.data(),
                                sabs.data(), c.rows);
        EXPECT_EQ(cmp.nan, 0) << "mat " << m << " slot " << s << ": " << cmp.first_bad;
        EXPECT_EQ(cmp.bad, 0) << "mat " << m << " slot " << s << ": " << cmp.first_bad;
      }

    // An out-of-range id poisons exactly its slot (NaN), the others stay correct.
    std::vector<int32_t> bad_ids = ids;
    bad_ids[2] = kExperts + 3;
    dids.upload(bad_ids.data(), bad_ids.size() * 4);
    dy.fill_bytes(0);
    cu::matvec_experts(e);
    sync_check();
    std::vector<float> got2(got.size());
    dy.download(got2.data(), got2.size() * 4);
    for (int m = 0; m < c.n_mats; ++m)
      for (int s = 0; s < kSlots; ++s)
        for (int64_t r = 0; r < c.rows; ++r) {
          const float v = got2[((size_t)m * kSlots + s) * c.rows + (size_t)r];
          if (s == 2) {
            ASSERT_TRUE(std::isnan(v)) << "mat " << m << " row " << r;
          } else {
            ASSERT_EQ(v, got[((size_t)m * kSlots + s) * c.rows + (size_t)r]);
          }
        }
  }
}

// Grouped projection (attn_output_a): 8 groups of rows, each with its own x, no ids.
TEST(CudaMatvecExperts, GroupedRowsWithoutIds) {
  REQUIRE_GPU();
  constexpr int kGroups = 8;
  const int64_t cols = 4096, rows = 1024;
  const uint64_t seed = mix(run_seed(), 4242);
  const HostMatrix m = random_matrix(GgmlType::Q8_0, kGroups * rows, cols, seed);
  const std::vector<float> x = random_x(kGroups * cols, seed ^ 1);
  cu::DeviceBuffer dw(m.bytes.size()), dx(x.size() * 4), dy((size_t)kGroups * rows * 4);
  dw.upload(m.bytes.data(), m.bytes.size());
  dx.upload(x.data(), x.size() * 4);
  dy.fill_bytes(0xFF);
  cu::MatvecOp op;
  op.type = GgmlType::Q8_0;
  op.w[0] = dw.data();
  op.rows = rows;
  op.cols = cols;
  op.expert_stride_bytes = rows * (int64_t)m.row_bytes;
  op.n_expert = kGroups;
  op.n_slots = kGroups;
  op.x = dx.as<float>();
  op.x_slot_stride = cols;
  op.y = dy.as<float>();
  cu::matvec_run(op);
  sync_check();
  std::vector<float> got((size_t)kGroups * rows);
  dy.download(got.data(), got.size() * 4);
  for (int g = 0; g < kGroups; ++g) {
    HostMatrix sub = m;
    sub.rows = rows;
    sub.bytes.assign(m.row((int64_t)g * rows),
                     m.row((int64_t)g * rows) + m.row_bytes * (size_t)rows);
    std::vector<float> ref((size_t)rows);
    dsv4::quant::matvec(GgmlType::Q8_0, sub.bytes.data(), rows, cols, x.data() + (size_t)g * cols,
                        ref.data());
    std::vector<double> sabs;
    abs_dots(sub, x.data() + (size_t)g * cols, &sabs, nullptr);
    const Cmp cmp = compare(got.data() + (size_t)g * rows, ref.data(), sabs.data(), rows);
    EXPECT_EQ(cmp.nan + cmp.bad, 0) << "group " << g << ": " << cmp.first_bad;
  }
}

// Misaligned x (offset by one float) takes the generic path and is still exact.
TEST(CudaMatvecEdge, MisalignedInputFallsBackExactly) {
  REQUIRE_GPU();
  const int64_t cols = 1024, rows = 200;
  const uint64_t seed = mix(run_seed(), 99);
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::IQ2_XXS}) {
    const HostMatrix m = random_matrix(t, rows, cols, seed);
    std::vector<float> x = random_x(cols + 1, seed);
    std::vector<float> ref((size_t)rows);
    dsv4::quant::matvec(t, m.bytes.data(), rows, cols, x.data() + 1, ref.data());
    cu::DeviceBuffer dw(m.bytes.size()), dx(x.size() * 4), dy((size_t)rows * 4);
    dw.upload(m.bytes.data(), m.bytes.size());
    dx.upload(x.data(), x.size() * 4);
    dy.fill_bytes(0xFF);
    cu::MatvecOp op;
    op.type = t;
    op.w[0] = dw.data();
    op.rows = rows;
    op.cols = cols;
    op.x = dx.as<float>() + 1;
    op.y = dy.as<float>();
    EXPECT_NE(cu::matvec_describe(op).find("generic"), std::string::npos);
    cu::matvec_run(op);
    sync_check();
    std::vector<float> got((size_t)rows);
    dy.download(got.data(), got.size() * 4);
    int64_t first = -1;
    EXPECT_EQ(bit_mismatches(got.data(), ref.data(), rows, &first), 0)
        << dsv4::ggml_type_name(t) << " row " << first;
  }
}

TEST(CudaMatvecEdge, BadArgumentsThrow) {
  REQUIRE_GPU();
  cu::DeviceBuffer b(1 << 20);
  float* f = b.as<float>();
  EXPECT_THROW(cu::matvec(GgmlType::Q4_0, b.data(), 4, 256, f, f), dsv4::Error);
  EXPECT_THROW(cu::matvec(GgmlType::Q8_0, b.data(), 4, 48, f, f), dsv4::Error);  // 48 % 32
  EXPECT_THROW(cu::matvec_batch(GgmlType::Q8_0, b.data(), 4, 256, f, 9, f), dsv4::Error);
  EXPECT_THROW(cu::matvec(GgmlType::Q8_0, b.data(), 0, 256, f, f), dsv4::Error);
  EXPECT_THROW(cu::matvec(GgmlType::Q8_0, nullptr, 4, 256, f, f), dsv4::Error);
}

// ---------------------------------------------------------------------------------------------
// IQ2_XXS, Q2_K and Q8_0 with x quantized to int8 per 32 values (MatvecOp::x8), against a CPU model
// of that quantization (scale = absmax / 127, q = rint(x * 127 / absmax)) and, as a bound on what
// the quantization may cost, against the exact float64 dot: |y - exact| <= sum over groups of
// (absmax / 254) * sum |w| (half a step per value).

struct X8Ref {
  std::vector<double> y, s, bound, exact;  // per (vector, row)
};
X8Ref x8_reference(const HostMatrix& m, const float* x, int nb) {
  X8Ref r;
  const size_t n = (size_t)nb * (size_t)m.rows;
  r.y.assign(n, 0.0);
  r.s.assign(n, 0.0);
  r.bound.assign(n, 0.0);
  r.exact.assign(n, 0.0);
  const int64_t G = m.cols / 32;
  std::vector<float> sc((size_t)nb * G), amax((size_t)nb * G);
  std::vector<int> q((size_t)nb * m.cols);
  for (int v = 0; v < nb; ++v)
    for (int64_t g = 0; g < G; ++g) {
      const float* xg = x + (size_t)v * m.cols + 32 * g;
      float a = 0;
      for (int i = 0; i < 32; ++i) a = std::max(a, std::fabs(xg[i]));
      amax[(size_t)v * G + g] = a;
      sc[(size_t)v * G + g] = a / 127.0f;
      for (int i = 0; i < 32; ++i)
        q[(size_t)v * m.cols + 32 * g + i] = a > 0 ? (int)std::nearbyint(xg[i] * (127.0f / a)) : 0;
    }
#pragma omp parallel
  {
    std::vector<float> w((size_t)m.cols);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < m.rows; ++row) {
      dsv4::quant::dequantize_row(m.type, m.row(row), w.data(), m.cols);
      for (int v = 0; v < nb; ++v) {
        double y = 0, s = 0, b = 0, e = 0;
        for (int64_t g = 0; g < G; ++g) {
          double dq = 0, sq = 0, sw = 0;
          for (int i = 0; i < 32; ++i) {
            const size_t c = (size_t)(32 * g + i);
            dq += (double)w[c] * q[(size_t)v * m.cols + c];
            sq += std::fabs((double)w[c] * q[(size_t)v * m.cols + c]);
            sw += std::fabs((double)w[c]);
            e += (double)w[c] * x[(size_t)v * m.cols + c];
          }
          const double sg = sc[(size_t)v * G + g];
          y += sg * dq;
          s += sg * sq;
          b += amax[(size_t)v * G + g] / 254.0 * sw;
        }
        const size_t o = (size_t)v * m.rows + (size_t)row;
        r.y[o] = y;
        r.s[o] = s;
        r.bound[o] = b;
        r.exact[o] = e;
      }
    }
  }
  return r;
}

TEST(CudaMatvecX8, MatchesInt8Reference) {
  REQUIRE_GPU();
  struct C {
    GgmlType t;
    int64_t cols, rows;
    int nb;
  };
  const GgmlType IQ2 = GgmlType::IQ2_XXS, Q2K = GgmlType::Q2_K, Q8 = GgmlType::Q8_0;
  for (const C c :
       {C{IQ2, 4096, 2048, 1}, C{IQ2, 4096, 512, 3}, C{IQ2, 512, 64, 1}, C{IQ2, 1024, 100, 8},
        C{Q2K, 2048, 4096, 1}, C{Q2K, 2048, 512, 3}, C{Q2K, 256, 64, 1}, C{Q2K, 1024, 100, 8},
        // Q8_0: q_b-like (persistent kernel), o_b-like (32 lanes per row), small, batched.
        C{Q8, 1024, 8192, 1}, C{Q8, 8192, 1024, 1}, C{Q8, 4096, 512, 3}, C{Q8, 256, 64, 1},
        C{Q8, 1024, 100, 8}}) {
    const std::string tn(dsv4::ggml_type_name(c.t));
    SCOPED_TRACE(tn + " " + std::to_string(c.cols) + "->" + std::to_string(c.rows) + " nb " +
                 std::to_string(c.nb));
    const uint64_t seed =
        mix(run_seed(), 0x78 + (uint64_t)c.cols * 3 + (uint64_t)c.nb + (uint64_t)c.t * 101);
    const HostMatrix m = random_matrix(c.t, c.rows, c.cols, seed);
    std::vector<float> x = random_x(c.nb * c.cols, seed ^ 0x99);
    for (int64_t i = 0; i < 32; ++i) x[(size_t)i] = 0.0f;  // an all-zero group (scale 0)
    const X8Ref ref = x8_reference(m, x.data(), c.nb);
    cu::DeviceBuffer dw(m.bytes.size()), dx(x.size() * 4), dy(ref.y.size() * 4);
    dw.upload(m.bytes.data(), m.bytes.size());
    dx.upload(x.data(), x.size() * 4);
    cu::MatvecOp op;
    op.type = c.t;
    op.w[0] = dw.data();
    op.rows = c.rows;
    op.cols = c.cols;
    op.x = dx.as<float>();
    op.nb = c.nb;
    op.y = dy.as<float>();
    op.x8 = true;
    const std::string plan = cu::matvec_describe(op);
    EXPECT_NE(plan.find("x8"), std::string::npos) << plan;
    dy.fill_bytes(0xFF);
    cu::matvec_run(op);
    sync_check();
    std::vector<float> got(ref.y.size());
    dy.download(got.data(), got.size() * 4);
    int bad = 0, over = 0;
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double err = std::fabs((double)got[i] - ref.y[i]);
      worst = std::max(worst, err / (ref.s[i] + 1e-30));
      if (!(err <= 1e-5 * ref.s[i] + 1e-6)) ++bad;
      if (!(std::fabs((double)got[i] - ref.exact[i]) <= 1.001 * ref.bound[i] + 1e-5 * ref.s[i]))
        ++over;
    }
    std::printf("[   info   ] %s x8 %" PRId64 "->%" PRId64 " nb %d %s: max |err|/S = %.3g\n",
                tn.c_str(), c.cols, c.rows, c.nb, plan.c_str(), worst);
    EXPECT_EQ(bad, 0) << "vs the int8 reference";
    EXPECT_EQ(over, 0) << "beyond the quantization bound vs float64";
  }
}

// The grouped output projection of one decode token as the forward pass runs it (o_a: 8 group
// matrices stored one after another, each with its own slice of x; MatvecOp::tag "o_a" plans it
// with its measured knobs, kTagDefaults in matvec.cpp: 512 CTAs of 4 warps, one bulk stage),
// against the int8-x reference of each group. The real shape, so that the plan is the decode's.
TEST(CudaMatvecX8, GroupedOutputProjectionUnderItsKnobs) {
  REQUIRE_GPU();
  const int G = 8;
  const int64_t rows = 1024, cols = 4096;
  const uint64_t seed = mix(run_seed(), 0x0a0a);
  const HostMatrix m = random_matrix(GgmlType::Q8_0, G * rows, cols, seed);
  std::vector<float> x = random_x(G * cols, seed ^ 0x55);
  cu::DeviceBuffer dw(m.bytes.size()), dx(x.size() * 4), dy((size_t)G * rows * 4);
  dw.upload(m.bytes.data(), m.bytes.size());
  dx.upload(x.data(), x.size() * 4);
  cu::MatvecOp op;
  op.type = GgmlType::Q8_0;
  op.x8 = true;
  op.w[0] = dw.data();
  op.rows = rows;
  op.cols = cols;
  op.expert_stride_bytes = rows * (int64_t)m.row_bytes;
  op.n_slots = G;
  op.x = dx.as<float>();
  op.x_slot_stride = cols;
  op.y = dy.as<float>();
  op.y_slot_stride = rows;
  op.tag = "o_a";
  const std::string plan = cu::matvec_describe(op);
  EXPECT_NE(plan.find("ctas=512 warps/cta=4 lanes/row=2 "), std::string::npos) << plan;
  EXPECT_NE(plan.find("bulkx1"), std::string::npos) << plan;
  dy.fill_bytes(0xFF);
  cu::matvec_run(op);
  sync_check();
  std::vector<float> got((size_t)G * rows);
  dy.download(got.data(), got.size() * 4);
  int bad = 0;
  double worst = 0;
  for (int g = 0; g < G; ++g) {
    HostMatrix mg;
    mg.type = m.type;
    mg.rows = rows;
    mg.cols = cols;
    mg.row_bytes = m.row_bytes;
    mg.bytes.assign(m.row(g * rows), m.row(g * rows) + (size_t)rows * m.row_bytes);
    const X8Ref ref = x8_reference(mg, x.data() + (size_t)g * cols, 1);
    for (int64_t r = 0; r < rows; ++r) {
      const double err = std::fabs((double)got[(size_t)(g * rows + r)] - ref.y[(size_t)r]);
      worst = std::max(worst, err / (ref.s[(size_t)r] + 1e-30));
      if (!(err <= 1e-5 * ref.s[(size_t)r] + 1e-6)) ++bad;
    }
  }
  std::printf("[   info   ] o_a x8 %d x %" PRId64 "->%" PRId64 " %s: max |err|/S = %.3g\n", G, cols,
              rows, plan.c_str(), worst);
  EXPECT_EQ(bad, 0) << "vs the int8 reference";
}

TEST(CudaMatvecX8, ExpertsAndNanPropagate) {
  REQUIRE_GPU();
  constexpr int kExperts = 8, kSlots = 6;
  const int64_t rows = 256, cols = 2048;
  const std::vector<int32_t> ids = {5, 0, 7, 2, 2, 6};
  for (GgmlType t : {GgmlType::IQ2_XXS, GgmlType::Q2_K, GgmlType::Q8_0})
    for (bool per_slot : {false, true}) {
      const int n_mats = t == GgmlType::Q2_K ? 1 : 2;  // gate+up / down / a pair of Q8_0
      SCOPED_TRACE(std::string(dsv4::ggml_type_name(t)) + (per_slot ? " x per slot" : " shared x"));
      const uint64_t seed = mix(run_seed(), 0x7878 + (uint64_t)t);
      std::vector<HostMatrix> mats;
      for (int mi = 0; mi < n_mats; ++mi)
        mats.push_back(random_matrix(t, rows * kExperts, cols, mix(seed, mi)));
      std::vector<float> x = random_x(per_slot ? kSlots * cols : cols, seed ^ (per_slot ? 1 : 2));
      std::vector<cu::DeviceBuffer> dw;
      for (auto& m : mats) {
        dw.emplace_back(m.bytes.size());
        dw.back().upload(m.bytes.data(), m.bytes.size());
      }
      cu::DeviceBuffer dids(ids.size() * 4), dx(x.size() * 4), dy(2 * kSlots * rows * 4);
      dids.upload(ids.data(), ids.size() * 4);
      dx.upload(x.data(), x.size() * 4);
      cu::MatvecOp op;
      op.type = t;
      for (int mi = 0; mi < n_mats; ++mi) op.w[mi] = dw[(size_t)mi].data();
      op.n_mats = n_mats;
      op.rows = rows;
      op.cols = cols;
      op.expert_stride_bytes = rows * (int64_t)mats[0].row_bytes;
      op.n_expert = kExperts;
      op.ids = dids.as<int32_t>();
      op.n_slots = kSlots;
      op.x = dx.as<float>();
      op.x_slot_stride = per_slot ? cols : 0;
      op.y = dy.as<float>();
      op.x8 = true;
      dy.fill_bytes(0xFF);
      cu::matvec_run(op);
      sync_check();
      std::vector<float> got((size_t)n_mats * kSlots * rows);
      dy.download(got.data(), got.size() * 4);
      for (int mi = 0; mi < n_mats; ++mi)
        for (int sl = 0; sl < kSlots; ++sl) {
          HostMatrix sub;
          sub.type = t;
          sub.rows = rows;
          sub.cols = cols;
          sub.row_bytes = mats[(size_t)mi].row_bytes;
          const uint8_t* base = mats[(size_t)mi].row((int64_t)ids[(size_t)sl] * rows);
          sub.bytes.assign(base, base + sub.row_bytes * (size_t)rows);
          const X8Ref ref = x8_reference(sub, x.data() + (per_slot ? (size_t)sl * cols : 0), 1);
          for (int64_t r = 0; r < rows; ++r) {
            const double g = got[((size_t)mi * kSlots + sl) * rows + (size_t)r];
            ASSERT_LE(std::fabs(g - ref.y[(size_t)r]), 1e-5 * ref.s[(size_t)r] + 1e-6)
                << "mat " << mi << " slot " << sl << " row " << r;
          }
        }
      // A NaN in x reaches every output that reads it (as in the f32 kernels).
      x[(size_t)cols / 2 + 3] = std::nanf("");
      dx.upload(x.data(), x.size() * 4);
      dy.fill_bytes(0);
      cu::matvec_run(op);
      sync_check();
      dy.download(got.data(), got.size() * 4);
      for (int mi = 0; mi < n_mats; ++mi)
        for (int sl = 0; sl < kSlots; ++sl) {
          const bool reads = !per_slot || sl == 0;
          for (int64_t r = 0; r < rows; ++r) {
            const float g = got[((size_t)mi * kSlots + sl) * rows + (size_t)r];
            ASSERT_EQ(std::isnan(g), reads) << "mat " << mi << " slot " << sl << " row " << r;
          }
        }
    }
}

// The IQ2_XXS int8-x decoder with replicated selector tables (Tuning::iq2_rep 16 / 32) forms the
// same signed bytes, integer sums and float operations as the arithmetic one: the outputs must be
// identical bit for bit, for the 6 experts' gate+up of a decode token (persistent kernel), a
// batch (k-split kernel), bad expert ids (NaN rows) and x with a NaN.
TEST(CudaMatvecX8, Iq2ReplicatedTablesBitIdentical) {
  REQUIRE_GPU();
  struct C {
    int64_t rows, cols;
    int nb, n_slots;
    bool bad_id, nan_x;
  };
  const mv::Tuning saved = mv::tuning();
  for (const C c : {C{2048, 4096, 1, 6, false, false}, C{512, 4096, 3, 1, false, false},
                    C{256, 2048, 1, 6, true, false}, C{100, 1024, 8, 1, false, true},
                    C{64, 512, 1, 1, false, false}}) {
    SCOPED_TRACE(std::to_string(c.cols) + "->" + std::to_string(c.rows) + " nb " +
                 std::to_string(c.nb) + " slots " + std::to_string(c.n_slots));
    constexpr int kExperts = 8;
    const int64_t experts = c.n_slots > 1 ? kExperts : 1;
    const uint64_t seed = mix(run_seed(), 0x1a2 + (uint64_t)c.rows + (uint64_t)c.nb);
    std::vector<HostMatrix> mats;
    for (int mi = 0; mi < 2; ++mi)
      mats.push_back(random_matrix(GgmlType::IQ2_XXS, c.rows * experts, c.cols, mix(seed, mi)));
    std::vector<float> x = random_x(c.nb * c.cols, seed ^ 7);
    if (c.nan_x) x[(size_t)c.cols / 3] = std::nanf("");
    std::vector<int32_t> ids = {5, 0, 7, 2, 2, 6};
    if (c.bad_id) ids[3] = kExperts;
    std::vector<cu::DeviceBuffer> dw;
    for (auto& m : mats) {
      dw.emplace_back(m.bytes.size());
      dw.back().upload(m.bytes.data(), m.bytes.size());
    }
    const size_t n_out = 2 * (size_t)c.n_slots * (size_t)c.nb * (size_t)c.rows;
    cu::DeviceBuffer dids(ids.size() * 4), dx(x.size() * 4), dy(n_out * 4);
    dids.upload(ids.data(), ids.size() * 4);
    dx.upload(x.data(), x.size() * 4);
    cu::MatvecOp op;
    op.type = GgmlType::IQ2_XXS;
    op.w[0] = dw[0].data();
    op.w[1] = dw[1].data();
    op.n_mats = 2;
    op.rows = c.rows;
    op.cols = c.cols;
    op.nb = c.nb;
    if (c.n_slots > 1) {
      op.n_slots = c.n_slots;
      op.expert_stride_bytes = c.rows * (int64_t)mats[0].row_bytes;
      op.n_expert = kExperts;
      op.ids = dids.as<int32_t>();
    }
    op.x = dx.as<float>();
    op.y = dy.as<float>();
    op.x8 = true;
    std::vector<uint32_t> want(n_out), got(n_out);
    for (int rep : {0, 16, 32}) {
      mv::tuning().iq2_rep = rep;
      const std::string plan = cu::matvec_describe(op);
      if (rep) {
        EXPECT_NE(plan.find("tables x" + std::to_string(rep)), std::string::npos) << plan;
      }
      dy.fill_bytes(0xA5);
      cu::matvec_run(op);
      sync_check();
      dy.download(rep ? got.data() : want.data(), n_out * 4);
      if (!rep) continue;
      int diff = 0;
      for (size_t i = 0; i < n_out; ++i) diff += got[i] != want[i];
      EXPECT_EQ(diff, 0) << "rep " << rep << ": " << plan;
    }
    if (c.bad_id) {  // slot 3 of both matrices: NaN rows
      const float* y = reinterpret_cast<const float*>(want.data());
      EXPECT_TRUE(std::isnan(y[3 * (size_t)c.rows]));
      EXPECT_TRUE(std::isnan(y[(size_t)(c.n_slots + 3) * (size_t)c.rows + 1]));
    }
  }
  mv::tuning() = saved;
}

}  // namespace
