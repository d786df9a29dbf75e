#include "cuda/mv_plan.h"

#include <fmt/core.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace dsv4::cuda::mv {

std::optional<FormatGeom> format_geom(GgmlType t, bool x8, int iq2_rep) {
  if (x8 && t == GgmlType::IQ2_XXS)
    return iq2_rep == 32   ? geom_iq2_xxs_x8r(32)
           : iq2_rep == 16 ? geom_iq2_xxs_x8r(16)
                           : kGeomIQ2_XXS_X8;
  if (x8 && t == GgmlType::Q2_K) return kGeomQ2_K_X8;
  if (x8 && t == GgmlType::Q8_0) return kGeomQ8_0_X8;
  switch (t) {
    case GgmlType::Q8_0:
      return kGeomQ8_0;
    case GgmlType::Q4_K:
      return kGeomQ4_K;
    case GgmlType::Q2_K:
      return kGeomQ2_K;
    case GgmlType::IQ2_XXS:
      return kGeomIQ2_XXS;
    case GgmlType::F16:
      return kGeomF16;
    case GgmlType::BF16:
      return kGeomBF16;
    case GgmlType::F32:
      return kGeomF32;
    default:
      return std::nullopt;
  }
}

std::string apply_tuning_spec(Tuning& t, const std::string& spec) {
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t end = spec.find(',', pos);
    if (end == std::string::npos) end = spec.size();
    const std::string kv = spec.substr(pos, end - pos);
    const size_t eq = kv.find('=');
    const std::string k = kv.substr(0, eq);
    const int v = eq == std::string::npos ? 1 : std::atoi(kv.c_str() + eq + 1);
    int* field = k == "target"           ? &t.target_warps_per_sm
                 : k == "bulk"           ? &t.bulk
                 : k == "stages"         ? &t.bulk_stages
                 : k == "force_lr"       ? &t.bulk_force_lr
                 : k == "min_ctas"       ? &t.min_ctas_per_sm
                 : k == "max_lr"         ? &t.max_lr_log2
                 : k == "side_max_lr"    ? &t.side_max_lr_log2
                 : k == "bulk_max_steps" ? &t.bulk_max_steps
                 : k == "q8x"            ? &t.q8_smem_x
                 : k == "q8x_ks"         ? &t.q8_smem_x_min_ks
                 : k == "t_q8"           ? &t.target_q8
                 : k == "t_iq2"          ? &t.target_iq2
                 : k == "t_q2k"          ? &t.target_q2k
                 : k == "t_f16"          ? &t.target_float
                 : k == "persist"        ? &t.persist
                 : k == "pw"             ? &t.persist_warps
                 : k == "pitems"         ? &t.persist_items
                 : k == "pocc"           ? &t.persist_occ
                 : k == "side_pw"        ? &t.side_persist_warps
                 : k == "side_ctas"      ? &t.side_persist_ctas
                 : k == "iq2_rep"        ? &t.iq2_rep
                 : k == "iq2_pw"         ? &t.iq2_pw
                                         : nullptr;
    if (!field) return k;
    *field = v;
    pos = end + 1;
  }
  return {};
}

Tuning& tuning() {
  static Tuning t = [] {
    Tuning d;
    if (const char* e = std::getenv("DSV4_MV_TUNE")) {
      const std::string bad = apply_tuning_spec(d, e);
      if (!bad.empty()) std::fprintf(stderr, "DSV4_MV_TUNE: unknown key '%s'\n", bad.c_str());
    }
    return d;
  }();
  return t;
}

namespace {
size_t align16(size_t n) {
  return (n + 15) & ~size_t{15};
}
int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}
// Lanes per bulk copy when slots are contiguous (slot == unit): the smallest power of two G with
// G * unit_bytes a multiple of 16. Padded slots: every lane copies its own unit (unit % 16 == 0).
int bulk_group_log2(const FormatGeom& g) {
  if (g.slot_bytes != g.unit_bytes) return g.unit_bytes % 16 == 0 ? 0 : -1;
  for (int l = 0; l <= 5; ++l)
    if (((int64_t)g.unit_bytes << l) % 16 == 0) return l;
  return -1;
}
}  // namespace

Plan plan_matvec(const Shape& s, const DeviceLimits& lim, const Tuning* knobs) {
  const Tuning& tu = knobs ? *knobs : tuning();
  Plan p;
  auto generic = [&](std::string why) {
    p = Plan{};
    p.why_generic = std::move(why);
    return p;
  };
  const auto geom = format_geom(s.type, s.x8, tu.iq2_rep);
  if (!geom) return generic("no fast kernel for this type");
  const FormatGeom& g = *geom;
  const int table_rep =
      s.x8 && s.type == GgmlType::IQ2_XXS && (tu.iq2_rep == 16 || tu.iq2_rep == 32) ? tu.iq2_rep
                                                                                    : 0;
  if (s.cols % g.unit_values != 0)
    return generic(
        fmt::format("cols {} not a multiple of the {}-value unit", s.cols, g.unit_values));
  if (!s.aligned) return generic("pointer or stride not aligned for the fast kernel");
  if (s.rows <= 0 || s.rows > 0x7fffffff || s.cols > 0x7fffffff)
    return generic("shape out of range");
  // The kernel addresses the 32 rows of a step with 32-bit offsets.
  const int64_t row_bytes = s.cols / g.unit_values * g.unit_bytes;
  if (32 * row_bytes >= (int64_t{1} << 31)) return generic("rows too long for the fast kernel");

  p.units = (int)(s.cols / g.unit_values);
  const int bgl = bulk_group_log2(g);
  // Bulk copies paid only for Q8_0 (few steps per warp) and in the persistent kernel; F16/BF16/F32/
  // Q4_K were slower with them than with cp.async (bench/cuda/NOTES.md).
  const bool bulk_ok = tu.bulk != 0 && s.aligned16 && bgl >= 0 && row_bytes % 16 == 0;
  const bool bulk_shape = bulk_ok && (tu.bulk == 2 || s.type == GgmlType::Q8_0);
  const bool opt_x = s.type == GgmlType::Q8_0 && tu.q8_smem_x > 0;
  const int target =
      s.type == GgmlType::IQ2_XXS ? tu.target_iq2
      : s.type == GgmlType::Q2_K  ? tu.target_q2k
      : s.type == GgmlType::Q8_0  ? tu.target_q8
      : s.type == GgmlType::F16 || s.type == GgmlType::BF16 || s.type == GgmlType::F32
          ? tu.target_float
          : tu.target_warps_per_sm;
  const size_t stage_bytes = 32 * (size_t)g.slot_bytes;

  const int64_t mats_slots = (int64_t)s.n_mats * s.n_slots;
  auto ctas_for = [&](int lrl) { return mats_slots * ceil_div(s.rows, 32 >> lrl); };
  // More lanes per row (fewer rows per CTA) while the grid would leave SMs idle.
  // KS * LR always divides the unit count (the kernel has no tail handling).
  int lrl = 0;
  const int max_lrl = std::clamp(s.side ? tu.side_max_lr_log2 : tu.max_lr_log2, 0, 5);
  while (lrl < max_lrl && ctas_for(lrl) < tu.min_ctas_per_sm * (int64_t)lim.sm_count &&
         p.units % (2 << lrl) == 0)
    ++lrl;
  if (bulk_shape && tu.bulk_force_lr)
    while (lrl < bgl && p.units % (2 << lrl) == 0) ++lrl;
  p.lr_log2 = lrl;
  p.ctas = ctas_for(lrl);
  p.groups = (int)ceil_div(s.rows, 32 >> lrl);
  if (p.ctas > 0x7fffffff) return generic("grid too large");

  // Layout for (bulk, x staged): shared offsets, then the k-split.
  auto layout = [&](Plan& q, bool bulk, bool sx) -> bool {
    q.bulk = bulk;
    q.smem_x = sx;
    // x staged with padding per unit, its per-16 sums with 1 (bank-conflict free for LR > 1; see
    // mv_kernel.cuh).
    const size_t x_bytes = sx ? (size_t)s.nb * (size_t)q.units * (size_t)x_unit_bytes(g) : 0;
    const size_t xsum_bytes = sx && g.xsum_group && !g.x8 ? (size_t)s.nb * (size_t)q.units *
                                                                (size_t)(g.unit_values / 16 + 1) * 4
                                                          : 0;
    q.off_xsum = align16(x_bytes);
    q.off_tab = align16(q.off_xsum + xsum_bytes);
    q.off_ring = align16(q.off_tab + (size_t)g.table_bytes);
    auto stages_for = [&](int steps) {
      if (!bulk) return g.stages;
      const int cap = std::max(1, std::min(tu.bulk_stages, kMaxBulkStages));
      int st = 1;
      while (st < cap && st < steps) st *= 2;
      return st;
    };
    auto ring_for = [&](int ks) {
      const int steps = (int)ceil_div(q.units, (int64_t)ks << lrl);
      return (size_t)stages_for(steps) * stage_bytes;
    };
    auto smem_for = [&](int ks) {
      return q.off_ring + (size_t)ks * ring_for(ks) + (bulk ? (size_t)ks * kBarBytesPerWarp : 0);
    };
    // More warps per CTA (k-split) while the device is not filled and every warp keeps units.
    const int ks_max = max_threads_for_nb(s.nb) / 32;
    int ks = 1;
    while (ks * 2 <= ks_max && q.ctas * ks < (int64_t)target * lim.sm_count &&
           q.units % ((ks * 2) << lrl) == 0 && smem_for(ks * 2) <= lim.smem_per_block)
      ks *= 2;
    if (smem_for(ks) > lim.smem_per_block) return false;
    q.ks = ks;
    q.threads = 32 * ks;
    q.steps = (int)ceil_div(q.units, (int64_t)ks << lrl);
    q.stages = stages_for(q.steps);
    q.off_bar = q.off_ring + (size_t)ks * ring_for(ks);
    q.smem = smem_for(ks);
    return true;
  };

  std::optional<Plan> best;
  for (int bulk = bulk_shape && lrl >= bgl ? 1 : 0; bulk >= 0 && !best; --bulk) {
    for (int sx = g.smem_x || opt_x ? 1 : 0; sx >= (g.smem_x ? 1 : 0) && !best; --sx) {
      Plan q = p;
      if (!layout(q, bulk != 0, sx != 0)) continue;
      // Bulk copies only pay for warps with few steps; x staged for Q8_0 only in CTAs of several
      // warps.
      if (q.bulk && q.steps > tu.bulk_max_steps) continue;
      if (sx && !g.smem_x && tu.q8_smem_x == 1 && q.ks < tu.q8_smem_x_min_ks) continue;
      best = q;
    }
  }
  if (!best)
    return generic(fmt::format("x staging ({} B) or ring does not fit in shared memory",
                               g.smem_x ? (size_t)s.nb * (size_t)s.cols * 4 : 0));

  // Persistent kernel: bulk copies, one warp per row group (no k-split), lanes per row raised
  // until every warp of the resident grid has about tu.persist_items row groups. x is staged once
  // per CTA, so the slots must share it; Q8_0 goes persistent only with x staged (at 8-32 lanes
  // per row, loads of x from global memory scatter over as many lines).
  const bool sx_needed = g.smem_x || (opt_x && !s.per_slot_x);
  const bool persist_type = (tu.persist == 2 || (tu.persist >= 1 && s.type == GgmlType::Q8_0) ||
                             (tu.persist == 3 && s.type == GgmlType::IQ2_XXS)) &&
                            !(s.side && tu.side_persist_warps <= 0);
  if (persist_type && bulk_ok && !s.per_slot_x && (g.smem_x || opt_x || s.type != GgmlType::Q8_0)) {
    // The replicated tables take 24-48 KiB per CTA: fewer, larger CTAs.
    const int pw = table_rep ? tu.iq2_pw : tu.persist_warps;
    const int wpc = std::clamp(s.side ? std::min(pw, tu.side_persist_warps) : pw, 1,
                               max_threads_for_nb(s.nb) / 32);
    const int64_t want = (int64_t)tu.persist_items * wpc * tu.persist_occ * lim.sm_count;
    int l2 = 0;
    while (l2 < max_lrl && (l2 < bgl || ctas_for(l2) < want) && p.units % (2 << l2) == 0) ++l2;
    if (l2 >= bgl && p.units % (1 << l2) == 0) {
      Plan q = p;
      q.lr_log2 = l2;
      q.groups = (int)ceil_div(s.rows, 32 >> l2);
      q.ctas = ctas_for(l2);
      q.ks = 1;
      q.threads = 32;
      q.steps = p.units >> l2;
      q.bulk = true;
      q.smem_x = sx_needed;
      const size_t x_bytes =
          q.smem_x ? (size_t)s.nb * (size_t)q.units * (size_t)x_unit_bytes(g) : 0;
      const size_t xsum_bytes =
          q.smem_x && g.xsum_group && !g.x8
              ? (size_t)s.nb * (size_t)q.units * (size_t)(g.unit_values / 16 + 1) * 4
              : 0;
      q.off_xsum = align16(x_bytes);
      q.off_tab = align16(q.off_xsum + xsum_bytes);
      q.off_ring = align16(q.off_tab + (size_t)g.table_bytes);
      int st = 1;
      while (st < std::clamp(tu.bulk_stages, 1, kMaxBulkStages)) st *= 2;
      q.stages = st;
      q.off_bar = q.off_ring + (size_t)wpc * st * stage_bytes;
      q.smem = q.off_bar + (size_t)wpc * kBarBytesPerWarp;
      q.persist = true;
      q.persist_warps = wpc;
      q.persist_max_ctas = s.side ? tu.side_persist_ctas : 0;
      if (q.smem <= lim.smem_per_block && q.ctas <= 0x7fffffff) best = q;
    }
  }
  p = *best;
  p.fast = true;
  p.x8 = g.x8;
  p.table_rep = table_rep;
  return p;
}

std::string to_string(const Plan& p) {
  if (!p.fast) return "generic (" + p.why_generic + ")";
  return fmt::format(
      "fast: ctas={} warps/cta={} lanes/row={} units={} steps={} {}x{}{}{}{} smem={}B", p.ctas,
      p.ks, 1 << p.lr_log2, p.units, p.steps, p.bulk ? "bulk" : "cp.async", p.stages,
      p.smem_x ? (p.x8 ? " x8-smem" : " x-smem") : "",
      p.table_rep ? fmt::format(" tables x{}", p.table_rep) : std::string(),
      p.persist ? fmt::format(" persistent({} warps)", p.persist_warps) : std::string(), p.smem);
}

}  // namespace dsv4::cuda::mv
