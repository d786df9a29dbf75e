// Selection kernels of the forward pass against CPU references, on fresh random data (seed
// printed; DSV4_TEST_SEED=<n> reproduces) with poisoned outputs:
//  * the indexer top-k (fwd::idx_topk, one block per token, and fwd::idx_topk_large, many blocks
//    for one token at long context): the topk largest scores, exact ties to the lower index,
//    output sorted by index; distributions with no ties, with many ties inside the threshold bin,
//    and with one value repeated (the large path's fallback);
//  * the MoE pair grouping (fwd::moe_group_sorted): experts ascending, each expert's pairs in
//    slot-major order, with each row's token, weight and each pair's row.
//  * the argmax of the logits (fwd::argmax: many blocks) and the router's top-k (fwd::router);
//  * the indexer scores of a decode token (fwd::idx_scores, both kernels).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <numeric>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include "cuda/device.h"
#include "cuda/fwd_kernels.h"
#include "cuda_test_util.h"
#include "test_seed.h"

namespace {

namespace cu = dsv4::cuda;

using dsv4::test::run_seed;

std::vector<int32_t> cpu_topk(const std::vector<float>& sc, int64_t visible, int topk) {
  std::vector<int32_t> idx((size_t)visible);
  std::iota(idx.begin(), idx.end(), 0);
  // -0 and +0 are equal keys, as in the kernels.
  auto key = [&](int32_t i) { return sc[(size_t)i] == 0.0f ? 0.0f : sc[(size_t)i]; };
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return key(a) > key(b); });
  idx.resize((size_t)topk);
  std::sort(idx.begin(), idx.end());
  return idx;
}

void check_case(const char* name, const std::vector<float>& sc, int64_t visible, int topk) {
  cu::Stream st;
  const int32_t p = (int32_t)(4 * visible - 1);  // (p + 1) / 4 == visible
  cu::DeviceBuffer dsc(sizeof(float) * sc.size()), dp(sizeof(int32_t));
  dsc.upload(sc.data(), sizeof(float) * sc.size());
  dp.upload(&p, sizeof p);
  cu::DeviceBuffer one(sizeof(int32_t) * (size_t)topk), large(sizeof(int32_t) * (size_t)topk),
      small(sizeof(int32_t) * (size_t)topk);
  one.fill_bytes(0xff);
  large.fill_bytes(0xff);
  small.fill_bytes(0xff);
  cu::DeviceBuffer ws((size_t)dsv4::cuda::fwd::topk_large_workspace_bytes(topk));
  dsv4::cuda::fwd::idx_topk(dsc.as<float>(), 1, (int)sc.size(), topk, dp.as<int32_t>(),
                            one.as<int32_t>(), st.get());
  // The same selection by a 256-thread block (a rows bound within idx_topk_small_rows()).
  const bool small_block = visible <= dsv4::cuda::fwd::idx_topk_small_rows();
  if (small_block)
    dsv4::cuda::fwd::idx_topk(dsc.as<float>(), 1, (int)sc.size(), topk, dp.as<int32_t>(),
                              small.as<int32_t>(), st.get(), visible);
  dsv4::cuda::fwd::idx_topk_large(dsc.as<float>(), topk, dp.as<int32_t>(), (int)sc.size(),
                                  ws.data(), large.as<int32_t>(), st.get());
  st.sync();
  std::vector<int32_t> g1((size_t)topk), g2((size_t)topk);
  one.download(g1.data(), sizeof(int32_t) * (size_t)topk);
  large.download(g2.data(), sizeof(int32_t) * (size_t)topk);
  const auto ref = cpu_topk(sc, visible, topk);
  EXPECT_EQ(g1, ref) << name << ": one-block top-k";
  if (small_block) {
    std::vector<int32_t> g3((size_t)topk);
    small.download(g3.data(), sizeof(int32_t) * (size_t)topk);
    EXPECT_EQ(g3, ref) << name << ": one-block top-k, 256 threads";
  }
  EXPECT_EQ(g2, ref) << name << ": multi-block top-k";
}

TEST(CudaTopk, RandomScoresNoTies) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed());
  std::normal_distribution<float> nd(0.0f, 3.0f);
  // One token stages up to 49152 keys in shared memory (kTopkSmemKeysDecode; the score stride
  // here is visible + 100, so 49100 and below are staged); 49153 and up are read from global.
  for (int64_t visible : {600, 4096, 4097, 20000, 49052, 49153, 131072}) {
    std::vector<float> sc((size_t)visible + 100, std::nanf(""));  // rows past visible: poison
    for (int64_t r = 0; r < visible; ++r) sc[(size_t)r] = nd(rng);
    check_case("normal", sc, visible, 512);
  }
}

TEST(CudaTopk, TiesInsideTheThresholdBin) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed() + 1);
  const int64_t visible = 70000;
  std::vector<float> sc((size_t)visible);
  // Values on a coarse grid: many exact ties, all of one value's copies in one 16-bit bin.
  std::uniform_int_distribution<int> ud(0, 3000);
  for (auto& v : sc) v = (float)ud(rng) * 0.25f - 300.0f;
  for (int i = 0; i < 50; ++i) sc[(size_t)(rng() % visible)] = 0.0f;
  for (int i = 0; i < 50; ++i) sc[(size_t)(rng() % visible)] = -0.0f;
  check_case("ties", sc, visible, 512);
  check_case("ties, topk 16", sc, visible, 16);
}

TEST(CudaTopk, TiesWithStagedKeys) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed() + 7);
  for (int64_t visible : {513, 3000}) {
    std::vector<float> sc((size_t)visible + 50, std::nanf(""));
    std::uniform_int_distribution<int> ud(0, 40);  // ~visible / 40 copies of each value
    for (int64_t r = 0; r < visible; ++r) sc[(size_t)r] = (float)ud(rng) * 0.5f - 10.0f;
    sc[(size_t)(rng() % visible)] = -0.0f;
    check_case("staged ties", sc, visible, 512);
  }
}

// Scores of one magnitude (keys sharing their top bits), ties, negative values, sizes whose keys
// are staged in shared memory (four per 16-byte load, a partial last quad) and read from global
// memory, and every key equal.
TEST(CudaTopk, ScoresOfOneMagnitude) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed() + 11);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  std::uniform_int_distribution<int> grid(0, 200);
  for (int64_t visible : {601, 4095, 16384, 49051, 60000}) {
    std::vector<float> sc((size_t)visible + 100, std::nanf(""));
    for (int64_t r = 0; r < visible; ++r) sc[(size_t)r] = 1.0f + 1e-3f * ud(rng);
    check_case("near 1", sc, visible, 512);
    for (int64_t r = 0; r < visible; ++r) sc[(size_t)r] = -100.0f - 0.01f * (float)grid(rng);
    check_case("near -100, ties", sc, visible, 512);
  }
  for (int64_t visible : {513, 3001, 16383}) {
    std::vector<float> sc((size_t)visible + 10, 7.0f);
    check_case("all equal", sc, visible, 512);
    sc[(size_t)visible - 1] = 7.0f + 1e-6f;  // the last key (in the partial quad) is the largest
    check_case("all equal but the last", sc, visible, 512);
  }
}

// The decode histogram path (>= 4096 staged rows, 1024 threads): the threshold bin's keys are
// ranked as candidates, ties at the threshold key go to the lowest rows; with more candidates than
// it holds (kTopkCandMax) the block falls back to the radix select. Values spread over a wide
// range with one tied value straddling the cut, tied counts below and above the candidate limit.
TEST(CudaTopk, HistogramPathTiesAtTheCut) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed() + 4096);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t visible : {4096, 20000, 49000})
    for (int copies : {1, 300, 1000, 2000}) {
      std::vector<float> sc((size_t)visible + 40, std::nanf(""));
      for (int64_t r = 0; r < visible; ++r) sc[(size_t)r] = nd(rng);
      // 400 keys above the tied value, `copies` of it: the 512th largest is one of the copies.
      for (int i = 0; i < 400; ++i) sc[(size_t)(rng() % visible)] = 10.0f + (float)i;
      for (int i = 0; i < copies; ++i) sc[(size_t)(rng() % visible)] = 5.0f;
      check_case(("tied cut x" + std::to_string(copies)).c_str(), sc, visible, 512);
      // Keys of one binade: the digit spans only their low bits.
      for (int64_t r = 0; r < visible; ++r) sc[(size_t)r] = 3.0f + 0.5f * std::fabs(nd(rng));
      check_case("one binade", sc, visible, 512);
      check_case("one binade, topk 2048", sc, visible, 2048);
    }
}

TEST(CudaTopk, HugeTieFallsBackToOneBlock) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed() + 2);
  const int64_t visible = 50000;
  std::vector<float> sc((size_t)visible, 1.5f);  // every key in the threshold bin
  for (int i = 0; i < 100; ++i) sc[(size_t)(rng() % visible)] = 2.0f + (float)i;
  check_case("one value", sc, visible, 512);
}

TEST(CudaMoeGroup, SortedMatchesCpu) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed() + 3);
  for (auto [n, k, E] : {std::tuple{1, 6, 256}, {777, 6, 256}, {8192, 6, 256}, {50, 2, 5}}) {
    const int pairs = n * k;
    std::vector<int32_t> ids((size_t)pairs);  // [k][n], distinct experts per token
    for (int i = 0; i < n; ++i) {
      std::vector<int32_t> e((size_t)E);
      std::iota(e.begin(), e.end(), 0);
      std::shuffle(e.begin(), e.end(), rng);
      for (int j = 0; j < k; ++j) ids[(size_t)j * n + i] = e[(size_t)j];
    }
    std::vector<float> wts((size_t)pairs);
    for (auto& w : wts) w = (float)(rng() % 1000) / 1000.0f;
    // CPU: stable order by expert of the slot-major pair index.
    std::vector<int32_t> order((size_t)pairs);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return ids[(size_t)a] < ids[(size_t)b]; });
    cu::Stream st;
    cu::DeviceBuffer dids(4 * (size_t)pairs), dw(4 * (size_t)pairs), slot(4 * (size_t)pairs),
        pos(4 * (size_t)pairs), roww(4 * (size_t)pairs), rowt(4 * (size_t)pairs);
    dids.upload(ids.data(), 4 * (size_t)pairs);
    dw.upload(wts.data(), 4 * (size_t)pairs);
    for (auto* b : {&slot, &pos, &roww, &rowt}) b->fill_bytes(0xff);
    const size_t tb = dsv4::cuda::fwd::moe_sort_temp_bytes(pairs, E);
    cu::DeviceBuffer tmp(tb);
    dsv4::cuda::fwd::moe_group_sorted(dids.as<int32_t>(), dw.as<float>(), n, k, E, tmp.data(), tb,
                                      slot.as<int32_t>(), pos.as<int32_t>(), roww.as<float>(),
                                      rowt.as<int32_t>(), st.get());
    st.sync();
    std::vector<int32_t> gs((size_t)pairs), gp((size_t)pairs), gt((size_t)pairs);
    std::vector<float> gw((size_t)pairs);
    slot.download(gs.data(), 4 * (size_t)pairs);
    pos.download(gp.data(), 4 * (size_t)pairs);
    rowt.download(gt.data(), 4 * (size_t)pairs);
    roww.download(gw.data(), 4 * (size_t)pairs);
    int bad = 0;
    for (int r = 0; r < pairs; ++r) {
      const int q = order[(size_t)r], j = q / n, i = q % n;
      bad += gs[(size_t)r] != ids[(size_t)q];
      bad += gp[(size_t)q] != r;
      bad += gt[(size_t)r] != i;
      bad += gw[(size_t)r] != wts[(size_t)i * k + j];
    }
    EXPECT_EQ(bad, 0) << "n " << n << " k " << k << " E " << E;
  }
}

}  // namespace

// One token's indexer scores by `run(q, w, k, p0, IH, ID, topk, wscale, grid, scores, stream)`
// against a double-precision reference: |err| <= rel * sum_h |w_h| sum_d |q k| + abs for each
// visible row; rows past the visible count keep their poison. Shapes: (heads, head dim, visible
// rows, grid rows).
template <class Run>
void check_idx_scores(uint64_t seed, double rel, double abs,
                      std::initializer_list<std::tuple<int, int, int, int>> shapes, Run run) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  cu::Stream st;
  for (auto [IH, ID, visible, grid] : shapes) {
    const int topk = 16;
    const float wscale = 0.125f;
    std::vector<float> q((size_t)IH * ID), w((size_t)IH), k((size_t)grid * ID);
    for (auto& v : q) v = nd(rng);
    for (auto& v : w) v = nd(rng);
    for (auto& v : k) v = nd(rng);
    const int32_t p = 4 * visible;  // (p + 1) / 4 == visible
    cu::DeviceBuffer dq(4 * q.size()), dw(4 * w.size()), dk(4 * k.size()), dp(4),
        ds(4 * (size_t)grid);
    dq.upload(q.data(), 4 * q.size());
    dw.upload(w.data(), 4 * w.size());
    dk.upload(k.data(), 4 * k.size());
    dp.upload(&p, 4);
    ds.fill_bytes(0xff);
    run(dq.as<float>(), dw.as<float>(), dk.as<float>(), dp.as<int32_t>(), IH, ID, topk, wscale,
        grid, ds.as<float>(), st.get());
    st.sync();
    std::vector<float> g((size_t)grid);
    ds.download(g.data(), 4 * g.size());
    int bad = 0;
    double worst = 0.0;
    for (int r = 0; r < grid; ++r) {
      if (r >= visible) {
        bad += !std::isnan(g[(size_t)r]);
        continue;
      }
      double ref = 0.0, mag = 0.0;
      for (int h = 0; h < IH; ++h) {
        double dot = 0.0, dmag = 0.0;
        for (int d = 0; d < ID; ++d) {
          dot += (double)q[(size_t)h * ID + d] * k[(size_t)r * ID + d];
          dmag += std::fabs((double)q[(size_t)h * ID + d] * k[(size_t)r * ID + d]);
        }
        const double wh = (double)w[(size_t)h] * wscale;
        ref += std::max(dot, 0.0) * wh;
        mag += dmag * std::fabs(wh);
      }
      const double err = std::fabs(g[(size_t)r] - ref);
      worst = std::max(worst, err / (mag + 1e-30));
      bad += !(err <= rel * mag + abs);
    }
    EXPECT_EQ(bad, 0) << "IH " << IH << " ID " << ID << " visible " << visible << " grid " << grid;
    std::printf("  IH %d ID %d rows %d: worst |err| / sum|q k w| %.3g\n", IH, ID, visible, worst);
  }
}

// fwd::idx_scores for one token: the decode kernel (grid_rows <= idx_scores_decode_max_rows(),
// 4096 by default) and the tiled kernel past it. Shapes: the q2 shape on both kernels, a tiny
// shape, a head count below 32 and an odd row count.
TEST(CudaIndexerScores, DecodeTokenMatchesDouble) {
  REQUIRE_GPU();
  check_idx_scores(run_seed() + 8, 1e-5, 1e-6,
                   {{64, 128, 600, 1024}, {64, 128, 5000, 5000}, {8, 32, 77, 128},
                    {20, 64, 1001, 2048}},
                   [](const float* q, const float* w, const float* k, const int32_t* p0, int IH,
                      int ID, int topk, float wscale, int grid, float* sc, cudaStream_t s) {
                     dsv4::cuda::fwd::idx_scores(q, w, k, 1, IH, ID, topk, wscale, p0, grid, grid,
                                                 sc, s);
                   });
}

// fwd::idx_scores_tf32 (one decode token, mma.sync on TF32 inputs rounded to nearest, f32 sums):
// within the TF32 bound (two inputs rounded to 11 significant bits: ~2^-10 of each product's
// magnitude); the shapes above plus a row count that is not a multiple of the 128-row block.
TEST(CudaIndexerScores, Tf32DecodeTokenMatchesDouble) {
  REQUIRE_GPU();
  check_idx_scores(run_seed() + 9, 1e-3, 0.0,
                   {{64, 128, 600, 1024}, {64, 128, 5000, 5000}, {8, 32, 77, 128},
                    {20, 64, 1001, 2048}, {64, 128, 16383, 16400}},
                   [](const float* q, const float* w, const float* k, const int32_t* p0, int IH,
                      int ID, int topk, float wscale, int grid, float* sc, cudaStream_t s) {
                     ASSERT_TRUE(dsv4::cuda::fwd::idx_scores_tf32_ok(q, k, IH, ID));
                     dsv4::cuda::fwd::idx_scores_tf32(q, w, k, IH, ID, topk, wscale, p0, grid,
                                                      sc, s);
                   });
  EXPECT_FALSE(dsv4::cuda::fwd::idx_scores_tf32_ok(nullptr, nullptr, 65, 128));
  EXPECT_FALSE(dsv4::cuda::fwd::idx_scores_tf32_ok(nullptr, nullptr, 64, 256));
  EXPECT_FALSE(dsv4::cuda::fwd::idx_scores_tf32_ok(nullptr, nullptr, 64, 12));
}

// fwd::argmax (many blocks, atomicMax on (key, ~index)): the largest value at the lowest index,
// NaN skipped, 0 when nothing is comparable; the workspace is left zeroed for the next call.
TEST(CudaArgmax, LowestIndexOfTheMaximum) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed() + 5);
  const float nan = std::nanf("");
  cu::Stream st;
  cu::DeviceBuffer ws((size_t)dsv4::cuda::fwd::argmax_workspace_bytes()), out(4);
  // Synchronous copies (memsets on the legacy stream would race with the non-blocking stream).
  const std::vector<uint8_t> zero(ws.size(), 0);
  ws.upload(zero.data(), zero.size());
  auto run = [&](const std::vector<float>& x) {
    cu::DeviceBuffer dx(sizeof(float) * std::max<size_t>(x.size(), 1));
    if (!x.empty()) dx.upload(x.data(), sizeof(float) * x.size());
    const int32_t poison = -7;
    out.upload(&poison, 4);
    dsv4::cuda::fwd::argmax(dx.as<float>(), (int)x.size(), out.as<int32_t>(), ws.data(), st.get());
    st.sync();
    int32_t g = -2;
    out.download(&g, 4);
    return g;
  };
  for (int n : {1, 7, 1000, 129280, 300000}) {
    std::vector<float> x((size_t)n);
    for (auto& v : x) v = (float)((int64_t)(rng() % 2001) - 1000) / 7.0f;  // many equal values
    const float mx = *std::max_element(x.begin(), x.end());
    const int32_t ref = (int32_t)(std::find(x.begin(), x.end(), mx) - x.begin());
    EXPECT_EQ(run(x), ref) << "n " << n;
    // The maximum repeated near the end and NaNs before the first one change nothing.
    x[(size_t)n - 1] = mx;
    for (int i = 0; i < ref; i += 3) x[(size_t)i] = nan;
    EXPECT_EQ(run(x), ref) << "n " << n << " with NaN";
  }
  EXPECT_EQ(run({-0.0f, 0.0f, -1.0f}), 0);  // -0 == +0: the lower index
  EXPECT_EQ(run({-INFINITY, -INFINITY}), 0);
  EXPECT_EQ(run({nan, nan, nan}), 0);
  EXPECT_EQ(run({}), 0);
  EXPECT_EQ(run({1.0f, 5.0f, 5.0f}), 1);  // and the workspace was reset after the cases above
}

// fwd::router (ranks over the biased scores): the CPU's order (descending biased score, ties to
// the lower index) with weights s / sum(s) * scale, on scores with many exact ties.
TEST(CudaRouter, MatchesCpuOrderWithTies) {
  REQUIRE_GPU();
  std::mt19937_64 rng(run_seed() + 6);
  for (auto [n, E, k] : {std::tuple{1, 256, 6}, {37, 256, 6}, {5, 16, 4}}) {
    std::vector<float> logits((size_t)n * E), bias((size_t)E);
    for (auto& v : logits) v = (float)((int64_t)(rng() % 9) - 4) * 0.5f;  // ties within a token
    for (auto& v : bias) v = (float)(rng() % 3) * 0.25f;
    cu::Stream st;
    cu::DeviceBuffer dl(4 * logits.size()), db(4 * bias.size()), ids(4 * (size_t)n * k),
        wts(4 * (size_t)n * k);
    dl.upload(logits.data(), 4 * logits.size());
    db.upload(bias.data(), 4 * bias.size());
    ids.fill_bytes(0xff);
    wts.fill_bytes(0xff);
    const float scale = 1.5f;
    dsv4::cuda::fwd::router(dl.as<float>(), db.as<float>(), nullptr, nullptr, n, E, k, scale,
                            ids.as<int32_t>(), wts.as<float>(), st.get());
    st.sync();
    std::vector<int32_t> gi((size_t)n * k);
    std::vector<float> gw((size_t)n * k);
    ids.download(gi.data(), 4 * gi.size());
    wts.download(gw.data(), 4 * gw.size());
    // sort_by_id: the same (id, weight) places, by ascending id.
    ids.fill_bytes(0xff);
    wts.fill_bytes(0xff);
    dsv4::cuda::fwd::router(dl.as<float>(), db.as<float>(), nullptr, nullptr, n, E, k, scale,
                            ids.as<int32_t>(), wts.as<float>(), st.get(), true);
    st.sync();
    std::vector<int32_t> si((size_t)n * k);
    std::vector<float> sw((size_t)n * k);
    ids.download(si.data(), 4 * si.size());
    wts.download(sw.data(), 4 * sw.size());
    for (int i = 0; i < n; ++i) {
      std::vector<std::pair<int32_t, float>> want, got;
      for (int j = 0; j < k; ++j) {
        want.emplace_back(gi[(size_t)j * n + i], gw[(size_t)i * k + j]);
        got.emplace_back(si[(size_t)j * n + i], sw[(size_t)i * k + j]);
      }
      std::stable_sort(want.begin(), want.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      EXPECT_EQ(got, want) << "token " << i << " sorted by id";
    }
    for (int i = 0; i < n; ++i) {
      std::vector<float> s((size_t)E), b((size_t)E);
      for (int e = 0; e < E; ++e) {
        const float x = logits[(size_t)i * E + (size_t)e];
        s[(size_t)e] = std::sqrt(x > 20.0f ? x : std::log1p(std::exp(x)));
        b[(size_t)e] = s[(size_t)e] + bias[(size_t)e];
      }
      std::vector<int32_t> order((size_t)E);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t c) { return b[(size_t)a] > b[(size_t)c]; });
      double sum = 0;
      for (int j = 0; j < k; ++j) sum += s[(size_t)order[(size_t)j]];
      for (int j = 0; j < k; ++j) {
        EXPECT_EQ(gi[(size_t)j * n + i], order[(size_t)j]) << "token " << i << " place " << j;
        EXPECT_NEAR(gw[(size_t)i * k + j], s[(size_t)order[(size_t)j]] / sum * scale, 1e-5)
            << "token " << i << " place " << j;
      }
    }
  }
}
