#include "cuda/mv_plan.h"

#include <fmt/core.h>

#include <algorithm>

namespace dsv4::cuda::mv {

std::optional<FormatGeom> format_geom(GgmlType t) {
  switch (t) {
    case GgmlType::Q8_0: return kGeomQ8_0;
    case GgmlType::Q4_K: return kGeomQ4_K;
    case GgmlType::Q2_K: return kGeomQ2_K;
    case GgmlType::IQ2_XXS: return kGeomIQ2_XXS;
    case GgmlType::F16: return kGeomF16;
    case GgmlType::BF16: return kGeomBF16;
    case GgmlType::F32: return kGeomF32;
    default: return std::nullopt;
  }
}

namespace {
size_t align16(size_t n) { return (n + 15) & ~size_t{15}; }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace

Plan plan_matvec(const Shape& s, const DeviceLimits& lim) {
  Plan p;
  auto generic = [&](std::string why) {
    p = Plan{};
    p.why_generic = std::move(why);
    return p;
  };
  const auto geom = format_geom(s.type);
  if (!geom) return generic("no fast kernel for this type");
  const FormatGeom& g = *geom;
  if (s.cols % g.unit_values != 0)
    return generic(fmt::format("cols {} not a multiple of the {}-value unit", s.cols, g.unit_values));
  if (!s.aligned) return generic("pointer or stride not aligned for the fast kernel");
  if (s.rows <= 0 || s.rows > 0x7fffffff || s.cols > 0x7fffffff) return generic("shape out of range");
  // The kernel addresses the 32 rows of a step with 32-bit offsets.
  const int64_t row_bytes = s.cols / g.unit_values * g.unit_bytes;
  if (32 * row_bytes >= (int64_t{1} << 31)) return generic("rows too long for the fast kernel");

  p.units = (int)(s.cols / g.unit_values);
  const size_t x_bytes = g.smem_x ? (size_t)s.nb * (size_t)s.cols * 4 : 0;
  const size_t xsum_bytes = g.smem_x && g.xsum_group ? (size_t)s.nb * (size_t)(s.cols / 16) * 4 : 0;
  p.off_xsum = align16(x_bytes);
  p.off_tab = align16(p.off_xsum + xsum_bytes);
  p.off_ring = align16(p.off_tab + (size_t)g.table_bytes);
  const size_t ring_per_warp = (size_t)g.stages * 32 * (size_t)g.slot_bytes;
  if (p.off_ring + ring_per_warp > lim.smem_per_block)
    return generic(fmt::format("x staging ({} B) does not fit in shared memory", p.off_ring));

  const int64_t mats_slots = (int64_t)s.n_mats * s.n_slots;
  auto ctas_for = [&](int lrl) { return mats_slots * ceil_div(s.rows, 32 >> lrl); };
  // More lanes per row (fewer rows per CTA) while the grid would leave SMs idle.
  // KS * LR always divides the unit count (the kernel has no tail handling).
  int lrl = 0;
  while (lrl < 3 && ctas_for(lrl) < 2 * (int64_t)lim.sm_count && p.units % (2 << lrl) == 0) ++lrl;
  p.lr_log2 = lrl;
  p.ctas = ctas_for(lrl);
  p.groups = (int)ceil_div(s.rows, 32 >> lrl);
  if (p.ctas > 0x7fffffff) return generic("grid too large");

  // More warps per CTA (k-split) while the device is not filled and every warp keeps units.
  const int ks_max = max_threads_for_nb(s.nb) / 32;
  int ks = 1;
  while (ks * 2 <= ks_max && p.ctas * ks < (int64_t)kTargetWarpsPerSm * lim.sm_count &&
         p.units % ((ks * 2) << lrl) == 0 && p.off_ring + (size_t)(ks * 2) * ring_per_warp <= lim.smem_per_block)
    ks *= 2;
  p.ks = ks;
  p.threads = 32 * ks;
  p.steps = (int)ceil_div(p.units, (int64_t)ks << lrl);
  p.smem = p.off_ring + (size_t)ks * ring_per_warp;
  p.fast = true;
  return p;
}

std::string to_string(const Plan& p) {
  if (!p.fast) return "generic (" + p.why_generic + ")";
  return fmt::format("fast: ctas={} warps/cta={} lanes/row={} units={} steps={} smem={}B", p.ctas,
                     p.ks, 1 << p.lr_log2, p.units, p.steps, p.smem);
}

}  // namespace dsv4::cuda::mv
