// The prefill GEMM building blocks (src/cuda/gemm.h) against the CPU on fresh random data
// (seed from the clock, printed; DSV4_TEST_SEED=<n> reproduces), outputs poisoned with NaN:
//  * dequantization of every weight format, single matrices and expert lists, equals the CPU
//    decoder exactly (f32) and after one round-to-nearest-even to bf16 (bf16);
//  * bf16 and f32 GEMMs (plain and strided batched) against float64 products of the same
//    (bf16-rounded) inputs, within f32 accumulation error;
//  * the row gather and the SwiGLU to bf16 against the CPU formula;
//  * the grouped expert GEMMs with in-kernel decoding (gemm_experts.h), plain and with the fused
//    SwiGLU, for every format, against float64 products of the bf16-rounded decoded weights and
//    activations, with experts of 0, 1, odd and > 128 rows, weights in device and in mapped host
//    memory.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "core/ggml_type.h"
#include "cuda/device.h"
#include "cuda/gemm.h"
#include "cuda/gemm_experts.h"
#include "cuda_test_util.h"
#include "quant/quant.h"
#include "test_seed.h"

namespace {

using dsv4::GgmlType;
namespace cu = dsv4::cuda;
namespace gm = dsv4::cuda::gemm;

using dsv4::test::run_seed;

using dsv4::test::download;
using dsv4::test::upload;

// Round to nearest even, as __float2bfloat16_rn (finite inputs).
uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
float bf16_value(uint16_t b) {
  const uint32_t u = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::vector<float> randn(size_t n, uint64_t seed, float sd = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

struct Fmt {
  GgmlType t;
  const char* name;
};
const Fmt kFormats[] = {{GgmlType::F32, "F32"},        {GgmlType::F16, "F16"},
                        {GgmlType::BF16, "BF16"},      {GgmlType::Q8_0, "Q8_0"},
                        {GgmlType::Q2_K, "Q2_K"},      {GgmlType::Q4_K, "Q4_K"},
                        {GgmlType::IQ2_XXS, "IQ2_XXS"}};

TEST(CudaGemm, DequantizeEqualsCpuDecoder) {
  REQUIRE_GPU();
  const uint64_t seed = run_seed();
  cu::Stream st;
  for (const Fmt& f : kFormats) {
    // Two experts' worth of [rows][cols]; cols 512 covers every block size.
    const int64_t rows = 48, cols = 512, E = 3;
    const size_t rb = dsv4::ggml_row_bytes(f.t, (uint64_t)cols);
    std::vector<uint8_t> w(rb * (size_t)(rows * E));
    dsv4::quant::random_blocks(f.t, seed + (uint64_t)f.t, 1.0f, w.data(), rows * E * cols);
    std::vector<float> ref((size_t)(rows * E * cols));
    for (int64_t r = 0; r < rows * E; ++r)
      dsv4::quant::dequantize_row(f.t, w.data() + (size_t)r * rb, ref.data() + r * cols, cols);
    auto dw = upload(w);
    // Single matrix (expert 1), f32 and bf16.
    cu::DeviceBuffer o32(sizeof(float) * (size_t)(rows * cols)), o16(2 * (size_t)(rows * cols));
    o32.fill_bytes(0xff);
    o16.fill_bytes(0xff);
    const uint8_t* e1 = dw.as<uint8_t>() + rb * (size_t)rows;
    gm::dequant_f32((uint32_t)f.t, e1, (int64_t)rb, rows, cols, o32.as<float>(), st.get());
    gm::dequant_bf16((uint32_t)f.t, e1, (int64_t)rb, rows, cols, o16.as<gm::bf16>(), st.get());
    // Expert list {2, 0} of gate = w, up = w (two matrices per expert).
    gm::ExpertList list;
    list.n = 2;
    list.ids[0] = 2;
    list.ids[1] = 0;
    cu::DeviceBuffer ol(2 * (size_t)(4 * rows * cols));
    ol.fill_bytes(0xff);
    gm::dequant_experts_bf16((uint32_t)f.t, dw.data(), dw.data(), (int64_t)rb * rows, (int64_t)rb,
                             rows, cols, list, ol.as<gm::bf16>(), st.get());
    st.sync();
    const auto g32 = download<float>(o32, (size_t)(rows * cols));
    const auto g16 = download<uint16_t>(o16, (size_t)(rows * cols));
    const auto gl = download<uint16_t>(ol, (size_t)(4 * rows * cols));
    int64_t bad32 = 0, bad16 = 0, badl = 0;
    for (int64_t i = 0; i < rows * cols; ++i) {
      const float r = ref[(size_t)(rows * cols + i)];
      bad32 += std::memcmp(&g32[(size_t)i], &r, 4) != 0;
      bad16 += g16[(size_t)i] != bf16_bits(r);
    }
    const int64_t order[4] = {2, 2, 0, 0};  // [gate; up] of expert 2, then of expert 0
    for (int m = 0; m < 4; ++m)
      for (int64_t i = 0; i < rows * cols; ++i)
        badl += gl[(size_t)(m * rows * cols + i)] !=
                bf16_bits(ref[(size_t)(order[m] * rows * cols + i)]);
    EXPECT_EQ(bad32, 0) << f.name;
    EXPECT_EQ(bad16, 0) << f.name;
    EXPECT_EQ(badl, 0) << f.name;
  }
}

// Larger 2-bit matrices at the real expert width run the block-wise decoders over many blocks.
TEST(CudaGemm, DequantizeExpertFormatsAtRealWidth) {
  REQUIRE_GPU();
  const uint64_t seed = run_seed();
  cu::Stream st;
  for (GgmlType t : {GgmlType::IQ2_XXS, GgmlType::Q2_K}) {
    const int64_t rows = 96, cols = 4096;
    const size_t rb = dsv4::ggml_row_bytes(t, (uint64_t)cols);
    std::vector<uint8_t> w(rb * (size_t)rows);
    dsv4::quant::random_blocks(t, seed ^ 0x5151, 1.0f, w.data(), rows * cols);
    auto dw = upload(w);
    cu::DeviceBuffer o(sizeof(float) * (size_t)(rows * cols));
    o.fill_bytes(0xff);
    gm::dequant_f32((uint32_t)t, dw.data(), (int64_t)rb, rows, cols, o.as<float>(), st.get());
    st.sync();
    const auto g = download<float>(o, (size_t)(rows * cols));
    std::vector<float> ref((size_t)cols);
    int64_t bad = 0;
    for (int64_t r = 0; r < rows; ++r) {
      dsv4::quant::dequantize_row(t, w.data() + (size_t)r * rb, ref.data(), cols);
      bad += std::memcmp(g.data() + r * cols, ref.data(), 4 * (size_t)cols) != 0;
    }
    EXPECT_EQ(bad, 0) << "rows differing, type " << (int)t;
  }
}

// Y = X W^T against float64 on the same rounded inputs. f32 accumulation over K terms: error
// within ~K * 2^-24 * sum |x w| in the worst case; we allow 1e-5 * S + 1e-6 per element (the
// errors are unbiased: sqrt(K) growth).
TEST(CudaGemm, ProductsMatchFloat64) {
  REQUIRE_GPU();
  const uint64_t seed = run_seed();
  cu::Stream st;
  gm::Blas blas(st.get());
  const int64_t rows = 160, cols = 384, n = 70, ldx = cols + 64, ldy = rows + 32, batch = 3;
  const auto w = randn((size_t)(batch * rows * cols), seed + 1);
  const auto x = randn((size_t)(n * ldx + (batch - 1) * cols), seed + 2);
  std::vector<uint16_t> wb(w.size());
  for (size_t i = 0; i < w.size(); ++i) wb[i] = bf16_bits(w[i]);
  // The batched call: W and Y advance per batch entry, X is shared (x_stride 0).
  auto dw32 = upload(w), dx32 = upload(x), dwb = upload(wb);
  std::vector<uint16_t> xbf((size_t)(n * ldx));
  for (int64_t i = 0; i < n * ldx; ++i) xbf[(size_t)i] = bf16_bits(x[(size_t)i]);
  auto dxb = upload(xbf);
  cu::DeviceBuffer y32(sizeof(float) * (size_t)(n * ldy)),
      yb(sizeof(float) * (size_t)(n * ldy * batch));
  cu::DeviceBuffer yt(sizeof(float) * (size_t)(n * ldy));
  y32.fill_bytes(0xff);
  yb.fill_bytes(0xff);
  yt.fill_bytes(0xff);
  blas.f32_nt(dw32.as<float>(), dx32.as<float>(), y32.as<float>(), rows, cols, n, ldx, ldy);
  blas.tf32_nt(dw32.as<float>(), dx32.as<float>(), yt.as<float>(), rows, cols, n, ldx, ldy);
  blas.bf16_nt(dwb.as<gm::bf16>(), dxb.as<gm::bf16>(), yb.as<float>(), rows, cols, n, ldx, ldy,
               (int)batch, rows * cols, 0, n * ldy);
  st.sync();
  const auto g32 = download<float>(y32, (size_t)(n * ldy));
  const auto gb = download<float>(yb, (size_t)(n * ldy * batch));
  const auto gt = download<float>(yt, (size_t)(n * ldy));
  double worst32 = 0, worstb = 0, worstt = 0;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t r = 0; r < rows; ++r) {
        double e32 = 0, s32 = 0, eb = 0, sb = 0;
        for (int64_t c = 0; c < cols; ++c) {
          const double p =
              (double)w[(size_t)((b * rows + r) * cols + c)] * x[(size_t)(i * ldx + c)];
          e32 += p;
          s32 += std::fabs(p);
          const double q = (double)bf16_value(wb[(size_t)((b * rows + r) * cols + c)]) *
                           bf16_value(xbf[(size_t)(i * ldx + c)]);
          eb += q;
          sb += std::fabs(q);
        }
        const float gv = gb[(size_t)(b * n * ldy + i * ldy + r)];
        ASSERT_TRUE(std::isfinite(gv));
        worstb = std::max(worstb, std::fabs(gv - eb) / (sb + 1e-30));
        if (b == 0) {
          const float fv = g32[(size_t)(i * ldy + r)];
          ASSERT_TRUE(std::isfinite(fv));
          worst32 = std::max(worst32, std::fabs(fv - e32) / (s32 + 1e-30));
          const float tv = gt[(size_t)(i * ldy + r)];
          ASSERT_TRUE(std::isfinite(tv));
          worstt = std::max(worstt, std::fabs(tv - e32) / (s32 + 1e-30));
        }
      }
  std::printf("  worst |err| / sum|x w|: f32 %.3g, bf16 inputs %.3g, tf32 %.3g\n", worst32, worstb,
              worstt);
  EXPECT_LE(worst32, 1e-5);
  EXPECT_LE(worstb, 1e-5);
  // TF32 rounds both inputs to 10-bit mantissas (relative 2^-11 each): the error is at most
  // ~2^-10 of sum|x w| plus the f32 accumulation.
  EXPECT_LE(worstt, 1.2e-3);
}

TEST(CudaGemm, GatherAndSwigluMatchCpu) {
  REQUIRE_GPU();
  const uint64_t seed = run_seed();
  cu::Stream st;
  const int64_t n = 9, D = 64, rows = 20, F = 48;
  const float clamp = 3.5f;
  const auto x = randn((size_t)(n * D), seed + 3);
  std::vector<int32_t> idx((size_t)rows);
  std::mt19937 rng((uint32_t)seed);
  for (auto& v : idx) v = (int32_t)(rng() % n);
  const auto gu = randn((size_t)(rows * 2 * F), seed + 4, 3.0f);
  const auto rw = randn((size_t)rows, seed + 5);
  auto dx = upload(x), didx = upload(idx), dgu = upload(gu), drw = upload(rw);
  cu::DeviceBuffer og(2 * (size_t)(rows * D)), oh(2 * (size_t)(rows * F)),
      oh1(2 * (size_t)(rows * F));
  og.fill_bytes(0xff);
  oh.fill_bytes(0xff);
  oh1.fill_bytes(0xff);
  gm::gather_rows_bf16(dx.as<float>(), didx.as<int32_t>(), rows, D, og.as<gm::bf16>(), st.get());
  gm::swiglu_bf16(dgu.as<float>(), drw.as<float>(), rows, (int)F, clamp, oh.as<gm::bf16>(),
                  st.get());
  gm::swiglu_bf16(dgu.as<float>(), nullptr, rows, (int)F, clamp, oh1.as<gm::bf16>(), st.get());
  st.sync();
  const auto g = download<uint16_t>(og, (size_t)(rows * D));
  const auto h = download<uint16_t>(oh, (size_t)(rows * F));
  const auto h1 = download<uint16_t>(oh1, (size_t)(rows * F));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < D; ++d)
      ASSERT_EQ(g[(size_t)(r * D + d)], bf16_bits(x[(size_t)(idx[(size_t)r] * D + d)]));
  int64_t off = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t f = 0; f < F; ++f) {
      const float gv = std::fmin(gu[(size_t)(r * 2 * F + f)], clamp);
      const float uv = std::fmin(std::fmax(gu[(size_t)(r * 2 * F + F + f)], -clamp), clamp);
      const float v = gv / (1.0f + std::exp(-gv)) * uv;
      // expf on the device may differ from the host's by an ulp: compare within bf16 rounding.
      const float got = bf16_value(h[(size_t)(r * F + f)]),
                  got1 = bf16_value(h1[(size_t)(r * F + f)]);
      off += std::fabs(got - rw[(size_t)r] * v) > 1e-2f * std::fabs(rw[(size_t)r] * v) + 1e-6f;
      off += std::fabs(got1 - v) > 1e-2f * std::fabs(v) + 1e-6f;
    }
  EXPECT_EQ(off, 0);
}

// Grouped expert GEMMs: rows sorted by expert with uneven counts (0, 1, odd, > 128, > 256), one
// plain product (rows not a multiple of the 128-row tile) and one gate/up product with the fused
// SwiGLU (F not a multiple of the 64-value tile), every format, both CTA layouts.
TEST(CudaGemm, ExpertGemmMatchesFloat64) {
  REQUIRE_GPU();
  const uint64_t seed = run_seed();
  cu::Stream st;
  // Every wgmma N (64, 128, 192, 256), full and partial tiles, an expert over two tiles (257).
  const int E = 10;
  const int counts[E] = {3, 0, 1, 130, 0, 257, 64, 33, 128, 200};
  const int64_t K = 768, R = 200, F = 96;
  const float clamp = 2.5f;
  std::vector<int32_t> slot;
  for (int e = 0; e < E; ++e)
    for (int i = 0; i < counts[e]; ++i) slot.push_back(e);
  const int64_t pairs = (int64_t)slot.size();
  int expect_tiles = 0;
  for (int e = 0; e < E; ++e)
    expect_tiles += (counts[e] + gm::kExpertTileRows - 1) / gm::kExpertTileRows;
  // Activations rounded to bf16, row weights.
  const auto xf = randn((size_t)(pairs * K), seed + 11);
  std::vector<uint16_t> xb(xf.size());
  for (size_t i = 0; i < xf.size(); ++i) xb[i] = bf16_bits(xf[i]);
  const auto rw = randn((size_t)pairs, seed + 12);
  auto dslot = upload(slot), dx = upload(xb), drw = upload(rw);
  gm::ExpertTiles tl;
  tl.capacity = (int)gm::expert_tile_capacity(pairs, E);
  cu::DeviceBuffer tbuf((size_t)(16 * (tl.capacity + 1)));
  tbuf.fill_bytes(0xff);
  tl.tiles = tbuf.as<int4>();
  tl.count = reinterpret_cast<int32_t*>(tbuf.as<int4>() + tl.capacity);
  gm::expert_tiles(dslot.as<int32_t>(), (int)pairs, E, tl, st.get());
  st.sync();
  int32_t ntiles = -1;
  tbuf.download(&ntiles, 4, 16 * (size_t)tl.capacity);
  EXPECT_EQ(ntiles, expect_tiles);

  for (const Fmt& f : kFormats) {
    ASSERT_TRUE(gm::expert_gemm_supported((uint32_t)f.t, K)) << f.name;
    const size_t rb = dsv4::ggml_row_bytes(f.t, (uint64_t)K);
    // Plain: E experts of [R][K]; gate/up: E experts of [F][K] each.
    std::vector<uint8_t> wp(rb * (size_t)(E * R)), wg(rb * (size_t)(E * F)),
        wu(rb * (size_t)(E * F));
    dsv4::quant::random_blocks(f.t, seed + 21 + (uint64_t)f.t, 1.0f, wp.data(), E * R * K);
    dsv4::quant::random_blocks(f.t, seed + 41 + (uint64_t)f.t, 1.0f, wg.data(), E * F * K);
    dsv4::quant::random_blocks(f.t, seed + 61 + (uint64_t)f.t, 1.0f, wu.data(), E * F * K);
    auto dec = [&](const std::vector<uint8_t>& w, int64_t rows) {
      std::vector<float> v((size_t)(rows * K));
      for (int64_t r = 0; r < rows; ++r) {
        dsv4::quant::dequantize_row(f.t, w.data() + (size_t)r * rb, v.data() + r * K, K);
        for (int64_t c = 0; c < K; ++c)
          v[(size_t)(r * K + c)] = bf16_value(bf16_bits(v[(size_t)(r * K + c)]));
      }
      return v;
    };
    const auto fp = dec(wp, E * R), fg = dec(wg, E * F), fu = dec(wu, E * F);
    auto dwp = upload(wp), dwg = upload(wg), dwu = upload(wu);
    // Every kernel: the two mma.sync layouts must agree bit for bit; each (the wgmma one too,
    // whose tensor-core sums may round differently) is checked against float64.
    std::vector<gm::ExpertGemmShape> shapes = {gm::ExpertGemmShape::kWarps8,
                                               gm::ExpertGemmShape::kWarps4};
    if (gm::expert_wgmma_available()) shapes.push_back(gm::ExpertGemmShape::kWgmma);
    std::vector<std::vector<float>> ys;
    std::vector<std::vector<uint16_t>> hs;
    for (gm::ExpertGemmShape shape : shapes) {
      cu::DeviceBuffer y(sizeof(float) * (size_t)(pairs * R)), h(2 * (size_t)(pairs * F));
      y.fill_bytes(0xff);
      h.fill_bytes(0xff);
      gm::expert_gemm((uint32_t)f.t, dwp.data(), nullptr, (int64_t)rb * R, (int64_t)rb, R, K,
                      dx.as<gm::bf16>(), tl, nullptr, 0.0f, nullptr, y.as<float>(), st.get(),
                      shape);
      gm::expert_gemm((uint32_t)f.t, dwg.data(), dwu.data(), (int64_t)rb * F, (int64_t)rb, F, K,
                      dx.as<gm::bf16>(), tl, drw.as<float>(), clamp, h.as<gm::bf16>(), nullptr,
                      st.get(), shape);
      st.sync();
      ys.push_back(download<float>(y, (size_t)(pairs * R)));
      hs.push_back(download<uint16_t>(h, (size_t)(pairs * F)));
    }
    EXPECT_EQ(std::memcmp(ys[0].data(), ys[1].data(), 4 * ys[0].size()), 0)
        << f.name << " y, 4 warps";
    EXPECT_EQ(std::memcmp(hs[0].data(), hs[1].data(), 2 * hs[0].size()), 0)
        << f.name << " h, 4 warps";
    // The wgmma kernel decodes IQ2_XXS and Q2_K through tables (xdec::lut) and sums with other
    // instructions; on these inputs its results have equalled the mma.sync ones bit for bit,
    // which checks that the table decoders are exact.
    if (shapes.size() > 2) {
      EXPECT_EQ(std::memcmp(ys[0].data(), ys[2].data(), 4 * ys[0].size()), 0)
          << f.name << " y, wgmma";
      EXPECT_EQ(std::memcmp(hs[0].data(), hs[2].data(), 2 * hs[0].size()), 0)
          << f.name << " h, wgmma";
    }
    auto dot = [&](const std::vector<float>& w, int64_t wr, int64_t r, double& sum) {
      double acc = 0;
      sum = 0;
      for (int64_t c = 0; c < K; ++c) {
        const double p = (double)w[(size_t)(wr * K + c)] * bf16_value(xb[(size_t)(r * K + c)]);
        acc += p;
        sum += std::fabs(p);
      }
      return acc;
    };
    for (size_t si = 0; si < shapes.size(); si += 2) {  // 8 warps (= 4 warps) and wgmma
      const std::vector<float>& gy = ys[si];
      const std::vector<uint16_t>& gh = hs[si];
      const char* kname = si == 0 ? "mma" : "wgmma";
      double worst = 0;
      int64_t bad_h = 0, nonfinite = 0;
      for (int64_t r = 0; r < pairs; ++r) {
        const int64_t e = slot[(size_t)r];
        for (int64_t m = 0; m < R; ++m) {
          double S = 0;
          const double ref = dot(fp, e * R + m, r, S);
          const float got = gy[(size_t)(r * R + m)];
          if (!std::isfinite(got)) {
            ++nonfinite;
            continue;
          }
          worst = std::max(worst, std::fabs(got - ref) / (S + 1e-30));
        }
        for (int64_t j = 0; j < F; ++j) {
          double Sg = 0, Su = 0;
          const double g = dot(fg, e * F + j, r, Sg), u = dot(fu, e * F + j, r, Su);
          const double gc = std::min(g, (double)clamp),
                       uc = std::clamp(u, -(double)clamp, (double)clamp);
          const double ref = rw[(size_t)r] * gc / (1.0 + std::exp(-gc)) * uc;
          const float got = bf16_value(gh[(size_t)(r * F + j)]);
          const double tol = 1e-2 * std::fabs(ref) +
                             std::fabs(rw[(size_t)r]) * 1e-5 *
                                 (1.2 * std::fabs(uc) * Sg + (std::fabs(gc) + 1) * Su) +
                             1e-6;
          bad_h += !(std::fabs(got - ref) <= tol);
        }
      }
      std::printf("  %s %s: worst |err| / sum|x w| %.3g\n", f.name, kname, worst);
      EXPECT_EQ(nonfinite, 0) << f.name << " " << kname;
      EXPECT_LE(worst, 1e-5) << f.name << " " << kname;
      EXPECT_EQ(bad_h, 0) << f.name << " " << kname;
    }

    // The same weights in mapped pinned host memory (host-resident experts): the same bits.
    if (f.t == GgmlType::IQ2_XXS || f.t == GgmlType::Q2_K || f.t == GgmlType::Q4_K) {
      void* hp = nullptr;
      ASSERT_EQ(cudaHostAlloc(&hp, wp.size(), cudaHostAllocMapped), cudaSuccess);
      std::memcpy(hp, wp.data(), wp.size());
      void* dp = nullptr;
      ASSERT_EQ(cudaHostGetDevicePointer(&dp, hp, 0), cudaSuccess);
      for (size_t si = 0; si < shapes.size(); si += 2) {
        cu::DeviceBuffer y2(sizeof(float) * (size_t)(pairs * R));
        y2.fill_bytes(0xff);
        gm::expert_gemm((uint32_t)f.t, dp, nullptr, (int64_t)rb * R, (int64_t)rb, R, K,
                        dx.as<gm::bf16>(), tl, nullptr, 0.0f, nullptr, y2.as<float>(), st.get(),
                        shapes[si]);
        st.sync();
        const auto gy2 = download<float>(y2, (size_t)(pairs * R));
        EXPECT_EQ(std::memcmp(ys[si].data(), gy2.data(), 4 * gy2.size()), 0) << f.name << " " << si;
      }
      cudaFreeHost(hp);
    }
  }
}

}  // namespace
