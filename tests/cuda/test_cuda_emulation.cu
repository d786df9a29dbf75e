// Host emulation of the fast matrix-vector kernel (no GPU needed): the same decoders
// (mv_fmt_*.cuh, compiled for the host with exact emulations of the intrinsics) and the same work
// mapping (unit_of, granule_src/dst) replayed step by step: every stage is filled granule by
// granule from the weights into a buffer pre-filled with garbage, each lane decodes its slot, the
// lanes of a row are reduced in the kernel's xor-butterfly order and the warps in warp order.
// Checks: every byte of every consumed slot is written exactly once per step, no granule reads
// outside the matrix, and the result matches quant::matvec / matmul within the tolerance of
// test_cuda_matvec.cpp, for the planner's launch geometry and for every other valid one.
#include <gtest/gtest.h>

#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "core/ggml_type.h"
#include "cuda/mv_fmt_f16.cuh"
#include "cuda/mv_fmt_f32.cuh"
#include "cuda/mv_fmt_iq2_xxs.cuh"
#include "cuda/mv_fmt_q2_k.cuh"
#include "cuda/mv_fmt_q4_k.cuh"
#include "cuda/mv_fmt_q8_0.cuh"
#include "cuda/mv_plan.h"
#include "quant/quant.h"
#include "test_seed.h"

namespace {

using dsv4::GgmlType;
namespace mv = dsv4::cuda::mv;

using dsv4::test::run_seed;

struct Problem {
  GgmlType t;
  int64_t rows, cols;
  int nb = 1, n_mats = 1, n_slots = 1, n_expert = 0;
  bool per_slot_x = false;
};

struct Data {
  std::vector<std::vector<uint8_t>> w;  // per mat: n_expert (or 1) matrices of rows x cols
  std::vector<int32_t> ids;
  std::vector<float> x;  // [slot][vec][cols] (slot stride 0 when shared)
  size_t row_bytes = 0;
};

Data make_data(const Problem& pr, uint64_t seed) {
  Data d;
  d.row_bytes = dsv4::ggml_row_bytes(pr.t, (uint64_t)pr.cols);
  const int64_t n_e = pr.n_expert > 0 ? pr.n_expert : 1;
  for (int m = 0; m < pr.n_mats; ++m) {
    d.w.emplace_back(d.row_bytes * (size_t)(pr.rows * n_e));
    dsv4::quant::random_blocks(pr.t, seed + 17 * (uint64_t)m, 1.0f, d.w.back().data(),
                               pr.rows * n_e * pr.cols);
  }
  std::mt19937_64 rng(seed ^ 0x1234);
  if (pr.n_expert > 0) {
    for (int s = 0; s < pr.n_slots; ++s) d.ids.push_back((int32_t)((s * 7 + 3) % pr.n_expert));
  }
  const int64_t nx = (pr.per_slot_x ? pr.n_slots : 1) * (int64_t)pr.nb * pr.cols;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  d.x.resize((size_t)nx);
  for (auto& v : d.x) v = nd(rng);
  return d;
}

// The kernel, replayed on the host. Returns y[mat][slot][vec][rows].
template <class F, int NB>
std::vector<float> emulate(const Problem& pr, const Data& d, const mv::Plan& plan) {
  constexpr mv::FormatGeom g = F::kGeom;
  constexpr int kWords = g.unit_bytes / 4;
  constexpr int kPer = g.unit_bytes / g.copy_bytes;
  const int lr = 1 << plan.lr_log2, rpc = 32 >> plan.lr_log2;
  const int64_t x_slot_stride = pr.per_slot_x ? (int64_t)pr.nb * pr.cols : 0;
  std::vector<float> y((size_t)(pr.n_mats * pr.n_slots * pr.nb * pr.rows), std::nanf(""));
  std::vector<uint32_t> tab(g.table_bytes / 4 + 1);
  if constexpr (g.table_bytes > 0)
    for (int i = 0; i < g.table_bytes / 4; ++i) tab[(size_t)i] = F::table_word(i);

  for (int64_t cta = 0; cta < plan.ctas; ++cta) {
    int64_t b = cta;
    const int group = (int)(b % plan.groups);
    b /= plan.groups;
    const int slot = (int)(b % pr.n_slots), mat = (int)(b / pr.n_slots);
    const int row0 = group * rpc;
    const int rows_here = std::min<int>(rpc, (int)pr.rows - row0);
    const int64_t expert = pr.n_expert > 0 ? d.ids[(size_t)slot] : 0;
    const std::vector<uint8_t>& wbuf = d.w[(size_t)mat];
    const uint8_t* W =
        wbuf.data() + (size_t)expert * pr.rows * d.row_bytes + (size_t)row0 * d.row_bytes;
    const float* xg = d.x.data() + slot * x_slot_stride;

    // x staging as the kernel does it
    std::vector<float> xs, xsum;
    if constexpr (g.smem_x) {
      xs.resize((size_t)NB * pr.cols);
      for (size_t i = 0; i < xs.size(); ++i) xs[i] = xg[i] * mv::kXScale;
      if constexpr (g.xsum_group == 16) {
        xsum.resize((size_t)NB * pr.cols / 16);
        for (size_t i = 0; i < xsum.size(); ++i) {
          const float* q = xg + 16 * i;
          const float s = (((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7]))) +
                          (((q[8] + q[9]) + (q[10] + q[11])) + ((q[12] + q[13]) + (q[14] + q[15])));
          xsum[i] = s * mv::kXsumScale;
        }
      }
    }

    std::vector<std::vector<float>> warp_acc((size_t)plan.ks, std::vector<float>(32 * NB, 0.0f));
    std::vector<uint8_t> stage(32 * (size_t)g.slot_bytes);
    std::vector<int> written(stage.size());
    for (int warp = 0; warp < plan.ks; ++warp) {
      float acc[32][NB] = {};
      for (int s = 0; s < plan.steps; ++s) {
        std::fill(stage.begin(), stage.end(), 0xCD);
        std::fill(written.begin(), written.end(), 0);
        const size_t ws = (size_t)mv::unit_of(s, plan.ks, warp, plan.lr_log2, 0) * g.unit_bytes;
        for (int lane = 0; lane < 32; ++lane)
          for (int it = 0; it < kPer; ++it) {
            const int i = lane + 32 * it;
            const int src = mv::granule_src<kPer, g.unit_bytes, g.copy_bytes>(
                i, plan.lr_log2, rows_here - 1, (int)d.row_bytes);
            const int dst = mv::granule_dst<kPer, g.unit_bytes, g.slot_bytes, g.copy_bytes>(i);
            const uint8_t* from = W + ws + src;
            EXPECT_TRUE(from >= wbuf.data() && from + g.copy_bytes <= wbuf.data() + wbuf.size())
                << "granule " << i << " reads outside the weights";
            EXPECT_TRUE(dst >= 0 && dst + g.copy_bytes <= (int)stage.size());
            std::memcpy(stage.data() + dst, from, g.copy_bytes);
            for (int k = 0; k < g.copy_bytes; ++k) written[(size_t)(dst + k)]++;
          }
        for (int lane = 0; lane < 32; ++lane) {
          for (int k = 0; k < g.unit_bytes; ++k)
            if (written[(size_t)(lane * g.slot_bytes + k)] != 1) {
              ADD_FAILURE() << "slot " << lane << " byte " << k << " step " << s << " written "
                            << written[(size_t)(lane * g.slot_bytes + k)] << " times";
              return y;
            }
          uint32_t w[kWords];
          std::memcpy(w, stage.data() + (size_t)lane * g.slot_bytes, sizeof w);
          const int u = mv::unit_of(s, plan.ks, warp, plan.lr_log2, lane & (lr - 1));
          EXPECT_LT(u, plan.units);
          // the unit this lane decodes must be the one of its row
          const int rr = std::min(lane >> plan.lr_log2, rows_here - 1);
          EXPECT_EQ(
              std::memcmp(w, W + (size_t)rr * d.row_bytes + (size_t)u * g.unit_bytes, g.unit_bytes),
              0)
              << "lane " << lane << " step " << s << " warp " << warp;
          float a[NB];
          for (int v = 0; v < NB; ++v) a[v] = acc[lane][v];
          if constexpr (g.smem_x) {
            const mv::XPlain xa{xs.data() + (int64_t)u * g.unit_values, pr.cols};
            F::template dot<NB>(w, xa, xsum.data() + (int64_t)u * (g.unit_values / 16),
                                (int)(pr.cols >> 4), tab.data(), a);
          } else {
            const mv::XPlain xa{xg + (int64_t)u * g.unit_values, pr.cols};
            F::template dot<NB>(w, xa, nullptr, 0, tab.data(), a);
          }
          for (int v = 0; v < NB; ++v) acc[lane][v] = a[v];
        }
      }
      for (int v = 0; v < NB; ++v)
        for (int off = lr >> 1; off > 0; off >>= 1) {
          float nxt[32];
          for (int l = 0; l < 32; ++l) nxt[l] = acc[l][v] + acc[l ^ off][v];
          for (int l = 0; l < 32; ++l) acc[l][v] = nxt[l];
        }
      for (int l = 0; l < 32; ++l)
        for (int v = 0; v < NB; ++v) warp_acc[(size_t)warp][(size_t)(v * 32 + l)] = acc[l][v];
    }
    for (int lane = 0; lane < 32; ++lane) {
      const int my_k = lane & (lr - 1), my_r = lane >> plan.lr_log2;
      if (my_k != 0 || my_r >= rows_here) continue;
      for (int v = 0; v < NB; ++v) {
        float t = warp_acc[0][(size_t)(v * 32 + lane)];
        for (int w2 = 1; w2 < plan.ks; ++w2) t += warp_acc[(size_t)w2][(size_t)(v * 32 + lane)];
        const size_t at = (((size_t)mat * pr.n_slots + slot) * pr.nb + v) * pr.rows + row0 + my_r;
        y[at] = F::kDenormal ? t * mv::kDenormOutScale : t;
      }
    }
  }
  return y;
}

template <class F>
std::vector<float> emulate_nb(const Problem& pr, const Data& d, const mv::Plan& plan) {
  switch (pr.nb) {
    case 1:
      return emulate<F, 1>(pr, d, plan);
    case 2:
      return emulate<F, 2>(pr, d, plan);
    case 3:
      return emulate<F, 3>(pr, d, plan);
    case 5:
      return emulate<F, 5>(pr, d, plan);
    case 8:
      return emulate<F, 8>(pr, d, plan);
    default:
      ADD_FAILURE() << "nb " << pr.nb;
      return {};
  }
}

std::vector<float> emulate_any(const Problem& pr, const Data& d, const mv::Plan& plan) {
  switch (pr.t) {
    case GgmlType::Q8_0:
      return emulate_nb<mv::FmtQ8_0>(pr, d, plan);
    case GgmlType::Q4_K:
      return emulate_nb<mv::FmtQ4_K>(pr, d, plan);
    case GgmlType::Q2_K:
      return emulate_nb<mv::FmtQ2_K>(pr, d, plan);
    case GgmlType::IQ2_XXS:
      return emulate_nb<mv::FmtIQ2_XXS>(pr, d, plan);
    case GgmlType::F16:
      return emulate_nb<mv::FmtF16>(pr, d, plan);
    case GgmlType::BF16:
      return emulate_nb<mv::FmtBF16>(pr, d, plan);
    case GgmlType::F32:
      return emulate_nb<mv::FmtF32>(pr, d, plan);
    default:
      ADD_FAILURE() << "type";
      return {};
  }
}

// Checks y against the CPU for every (mat, slot, vec); returns the largest |err| / S.
double check_against_cpu(const Problem& pr, const Data& d, const std::vector<float>& y,
                         const std::string& what) {
  double worst = 0;
  std::vector<float> wrow((size_t)pr.cols);
  for (int m = 0; m < pr.n_mats; ++m)
    for (int s = 0; s < pr.n_slots; ++s) {
      const int64_t expert = pr.n_expert > 0 ? d.ids[(size_t)s] : 0;
      const uint8_t* base = d.w[(size_t)m].data() + (size_t)expert * pr.rows * d.row_bytes;
      const float* xs = d.x.data() + (pr.per_slot_x ? (size_t)s * pr.nb * pr.cols : 0);
      std::vector<float> ref((size_t)(pr.nb * pr.rows));
      dsv4::quant::matmul(pr.t, base, pr.rows, pr.cols, xs, pr.nb, ref.data());
      for (int v = 0; v < pr.nb; ++v)
        for (int64_t r = 0; r < pr.rows; ++r) {
          dsv4::quant::dequantize_row(pr.t, base + (size_t)r * d.row_bytes, wrow.data(), pr.cols);
          double sabs = 0;
          for (int64_t i = 0; i < pr.cols; ++i)
            sabs += std::fabs((double)wrow[(size_t)i] * xs[v * pr.cols + i]);
          const float got = y[(((size_t)m * pr.n_slots + s) * pr.nb + v) * pr.rows + (size_t)r];
          const float want = ref[(size_t)(v * pr.rows + r)];
          if (!std::isfinite(got)) {
            ADD_FAILURE() << what << ": mat " << m << " slot " << s << " vec " << v << " row " << r
                          << " not written";
            return worst;
          }
          const double err = std::fabs((double)got - want);
          worst = std::max(worst, err / std::max(sabs, 1e-30));
          if (err > 1e-5 * sabs + 1e-6) {
            ADD_FAILURE() << what << ": mat " << m << " slot " << s << " vec " << v << " row " << r
                          << " got " << got << " want " << want << " S " << sabs;
            return worst;
          }
        }
    }
  return worst;
}

mv::Plan plan_for(const Problem& pr, const mv::DeviceLimits& lim) {
  return mv::plan_matvec(mv::Shape{pr.t, pr.rows, pr.cols, pr.nb, pr.n_mats, pr.n_slots, true},
                         lim);
}

// Every other valid geometry: lanes per row 1..8, warps 1..16 with KS*LR dividing the units.
std::vector<mv::Plan> all_geometries(const Problem& pr, const mv::Plan& base) {
  std::vector<mv::Plan> out;
  for (int lrl = 0; lrl <= 3; ++lrl)
    for (int ks = 1; ks <= 16; ks *= 2) {
      if (base.units % (ks << lrl) != 0) continue;
      mv::Plan p = base;
      p.lr_log2 = lrl;
      p.ks = ks;
      p.threads = 32 * ks;
      p.groups = (int)((pr.rows + (32 >> lrl) - 1) / (32 >> lrl));
      p.ctas = (int64_t)p.groups * pr.n_mats * pr.n_slots;
      p.steps = p.units / (ks << lrl);
      out.push_back(p);
    }
  return out;
}

struct Named {
  const char* name;
  Problem pr;
  bool all_geoms;
};

void PrintTo(const Named& n, std::ostream* os) {
  *os << n.name;
}

class Emulation : public testing::TestWithParam<Named> {};

TEST_P(Emulation, KernelReplayMatchesCpu) {
  const Problem pr = GetParam().pr;
  const uint64_t seed = run_seed() ^ (uint64_t)std::hash<std::string>()(GetParam().name);
  const Data d = make_data(pr, seed);
  const mv::Plan plan = plan_for(pr, mv::DeviceLimits{132, 227 * 1024});
  ASSERT_TRUE(plan.fast) << mv::to_string(plan);
  const double w = check_against_cpu(pr, d, emulate_any(pr, d, plan), mv::to_string(plan));
  std::printf("[   info   ] %s %s: max |err|/S = %.3g\n", GetParam().name,
              mv::to_string(plan).c_str(), w);
  if (GetParam().all_geoms)
    for (const mv::Plan& p : all_geometries(pr, plan)) {
      SCOPED_TRACE(mv::to_string(p));
      check_against_cpu(pr, d, emulate_any(pr, d, p), mv::to_string(p));
    }
}

std::string named(const testing::TestParamInfo<Named>& i) {
  return i.param.name;
}

const Named kProblems[] = {
    {"Q8_0_256to64", {GgmlType::Q8_0, 64, 256}, true},
    {"Q8_0_1024to200", {GgmlType::Q8_0, 200, 1024}, true},
    {"Q8_0_4096to96_nb3", {GgmlType::Q8_0, 96, 4096, 3}, false},
    {"Q8_0_grouped_8x", {GgmlType::Q8_0, 64, 512, 1, 1, 8, 8, true}, false},
    {"Q4_K_512to40", {GgmlType::Q4_K, 40, 512}, true},
    {"Q4_K_4096to64", {GgmlType::Q4_K, 64, 4096}, false},
    {"Q4_K_2048to48_nb5", {GgmlType::Q4_K, 48, 2048, 5}, false},
    {"Q4_K_experts_gate_up", {GgmlType::Q4_K, 64, 1024, 1, 2, 6, 9, false}, false},
    {"Q2_K_512to40", {GgmlType::Q2_K, 40, 512}, true},
    {"Q2_K_2048to64", {GgmlType::Q2_K, 64, 2048}, false},
    {"Q2_K_1024to40_nb8", {GgmlType::Q2_K, 40, 1024, 8}, false},
    {"Q2_K_experts_down", {GgmlType::Q2_K, 96, 512, 1, 1, 6, 8, true}, false},
    {"IQ2_XXS_1024to40", {GgmlType::IQ2_XXS, 40, 1024}, true},
    {"IQ2_XXS_4096to64", {GgmlType::IQ2_XXS, 64, 4096}, false},
    {"IQ2_XXS_2048to33_nb2", {GgmlType::IQ2_XXS, 33, 2048, 2}, false},
    {"IQ2_XXS_experts_gate_up", {GgmlType::IQ2_XXS, 64, 1024, 1, 2, 6, 8, false}, false},
    {"F16_512to40", {GgmlType::F16, 40, 512}, true},
    {"F16_16384to24", {GgmlType::F16, 24, 16384}, false},
    {"F16_1024to64_nb5", {GgmlType::F16, 64, 1024, 5}, false},
    {"BF16_512to40", {GgmlType::BF16, 40, 512}, true},
    {"F32_256to40", {GgmlType::F32, 40, 256}, true},
    {"F32_1024to33_nb2", {GgmlType::F32, 33, 1024, 2}, false},
};
INSTANTIATE_TEST_SUITE_P(Fast, Emulation, testing::ValuesIn(kProblems), named);

// The decoders' building blocks against the format definitions.
TEST(EmulationIntrinsics, SignSpreadAndMagnitudes) {
  for (uint32_t s7 = 0; s7 < 128; ++s7) {
    const uint32_t m8 = s7 | ((mv::popc(s7) & 1u) << 7);
    const uint32_t tlo = ((m8 & 0xFu) * 0x10204080u) & 0x80808080u;
    const uint32_t thi = ((m8 >> 4) * 0x10204080u) & 0x80808080u;
    for (int j = 0; j < 8; ++j) {
      const uint32_t byte = ((j < 4 ? tlo : thi) >> (8 * (j & 3))) & 0xFF;
      EXPECT_EQ(byte, ((m8 >> j) & 1) ? 0x80u : 0u) << "s7 " << s7 << " j " << j;
    }
    EXPECT_EQ(__builtin_popcount(m8) % 2, 0);  // ksigns has even parity
  }
  for (int i = 0; i < 256; ++i) {
    const uint32_t nib = mv::kNibbleGrid.v[i];
    const uint32_t lo = mv::byte_perm(0x002B1908u, 0u, nib & 0xFFFF),
                   hi = mv::byte_perm(0x002B1908u, 0u, nib >> 16);
    const uint64_t grid = ((uint64_t)hi << 32) | lo;
    EXPECT_EQ(grid, dsv4::quant::detail::kIq2xxsGrid[i]) << "entry " << i;
  }
  // The replicated selector tables of FmtIQ2_XXS_X8R: every copy holds the same word, and the two
  // byte_perm of (grid | signs) give the signed bytes of the arithmetic decoder (FmtIQ2_XXS_X8).
  using R32 = mv::FmtIQ2_XXS_X8R<32>;
  using R16 = mv::FmtIQ2_XXS_X8R<16>;
  EXPECT_EQ(R32::kGeom.table_bytes, 4 * (256 + 128) * 32);
  for (int i = 0; i < R16::kGeom.table_bytes / 4; ++i)
    EXPECT_EQ(R16::table_word(i), R32::table_word(i / 16 * 32 + i % 16)) << "word " << i;
  for (uint32_t gi = 0; gi < 256; ++gi)
    for (uint32_t s7 = 0; s7 < 128; ++s7) {
      const uint32_t c = (gi * 7 + s7) % 32;  // any copy
      const uint32_t sel = R32::table_word((int)(gi * 32 + c)) |
                           R32::table_word(R32::kSignWord0 + (int)(s7 * 32 + c));
      const uint32_t wlo = mv::prmt(R32::kPos, R32::kNeg, sel);
      const uint32_t whi = mv::prmt(R32::kPos, R32::kNeg, sel >> 16);
      const uint32_t m8 = s7 | ((mv::popc(s7) & 1u) << 7);
      const uint32_t olo = ((m8 & 0xFu) * 0x00204081u) & 0x01010101u;
      const uint32_t ohi = ((m8 >> 4) * 0x00204081u) & 0x01010101u;
      const uint64_t g = dsv4::quant::detail::kIq2xxsGrid[gi];
      EXPECT_EQ(wlo, ((uint32_t)g ^ (olo * 0xFFu)) + olo) << "grid " << gi << " signs " << s7;
      EXPECT_EQ(whi, ((uint32_t)(g >> 32) ^ (ohi * 0xFFu)) + ohi)
          << "grid " << gi << " signs " << s7;
      for (int j = 0; j < 8; ++j) {
        const int mag = (int)((g >> (8 * j)) & 0xFF);
        const int want = ((m8 >> j) & 1) ? -mag : mag;
        const int got = (int)(int8_t)(((j < 4 ? wlo : whi) >> (8 * (j & 3))) & 0xFF);
        if (got != want) ADD_FAILURE() << "grid " << gi << " signs " << s7 << " value " << j;
      }
    }
  // denormal codes are exact and signed
  EXPECT_EQ(mv::byte_to_denormal<2>(0x00170000u), 23.0f * 0x1p-149f);
  EXPECT_EQ(mv::as_float(mv::prmt(0x2B190808u, 0x80000000u, mv::kSignMagSel<3>)),
            -43.0f * 0x1p-149f);
  EXPECT_EQ(mv::byte_to_float<1>(0x0000FF00u), 255.0f);
}

}  // namespace
