// Host-side planning of a matrix-vector launch: fast kernel or generic fallback, lanes per row,
// warps per CTA, shared-memory layout. Pure function of the shape and the device limits, so it
// is unit-tested without a GPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "core/ggml_type.h"
#include "cuda/mv_params.h"

namespace dsv4::cuda::mv {

// Fast-path geometry of a type, nullopt when only the generic kernel handles it.
std::optional<FormatGeom> format_geom(GgmlType t);

struct DeviceLimits {
  int sm_count = 132;
  size_t smem_per_block = 227 * 1024;  // opt-in dynamic shared memory per block
};

struct Shape {
  GgmlType type = GgmlType::F32;
  int64_t rows = 0, cols = 0;
  int nb = 1, n_mats = 1, n_slots = 1;
  bool aligned = true;  // pointers and strides meet the fast path's alignment (see matvec.cpp)
};

// Warps per SM the planner aims for (latency hiding; each warp keeps `stages` units in flight).
inline constexpr int kTargetWarpsPerSm = 16;

struct Plan {
  bool fast = false;
  std::string why_generic;  // set when !fast
  int lr_log2 = 0;          // lanes per row = 1 << lr_log2
  int ks = 1;               // warps per CTA
  int threads = 32;
  int groups = 0;           // CTAs per (mat, slot)
  int64_t ctas = 0;
  int units = 0, steps = 0;
  size_t smem = 0, off_xsum = 0, off_tab = 0, off_ring = 0;
};

Plan plan_matvec(const Shape& s, const DeviceLimits& lim);
std::string to_string(const Plan& p);

}  // namespace dsv4::cuda::mv
