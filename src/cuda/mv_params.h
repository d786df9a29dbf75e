// Fast matrix-vector path: per-format geometry and the kernel parameter block. Shared by the
// host planner (mv_plan.cpp) and the kernels (mv_*.cu); plain C++, no device code.
//
// Kernel layout ("lane = row"): a CTA owns 32/LR consecutive rows of one (matrix, slot) and KS
// warps; each lane owns one row and LR lanes share a row. A lane consumes fixed-size "units" of
// its row (a whole number of GGUF blocks, see FormatGeom). Warp w, lane (r, k) takes the units
// u = (s*KS + w)*LR + k for steps s = 0, 1, ...: every step a warp streams 32 units (LR adjacent
// units of each of its 32/LR rows) with cp.async into a private shared-memory ring of
// `stages` stages, each lane copies its own unit into registers and decodes it while the next
// stages are in flight. x is read as float4 loads, from global memory (F16, BF16, F32, Q8_0 in
// small CTAs) or from a copy in shared memory (Q2_K, Q4_K, IQ2_XXS pre-scaled; Q8_0 in CTAs of
// several warps), padded by 16 bytes per unit so that the LR lanes of a row hit other banks.
// Partial sums are reduced over the LR lanes (shuffles), then over the KS warps (shared memory,
// fixed order), and written once.
//
// The ring is filled either with cp.async granules (FormatGeom::copy_bytes) or, where the planner
// sets `bulk`, with one cp.async.bulk (TMA) copy per row segment of a step (or per lane for padded
// slots) completing on an mbarrier per (warp, stage). With `persist` (bulk, KS = 1) the grid is
// the resident CTA count and each warp walks a range of the logical CTAs (row groups) through one
// continuous ring (mv_persist_kernel); the sums are formed in the same order as with KS = 1.
#pragma once
#include <cstdint>

namespace dsv4::cuda::mv {

struct FormatGeom {
  int unit_values;  // values per unit
  int unit_bytes;   // bytes of a unit in global memory (whole blocks)
  int copy_bytes;   // cp.async granule: 4 (cp.async.ca) or 16 (cp.async.cg)
  int slot_bytes;   // shared bytes per unit slot: an odd number of granules (no bank conflicts)
  int stages;       // ring depth per warp
  bool smem_x;      // x staged in shared memory, scaled by 2^kXShift
  int xsum_group;   // 16: per-16 sums of x staged too (K-quant minimums); 0: none
  int table_bytes;  // lookup table copied to shared memory (IQ2_XXS grid)
  // x staged as int8 per 32 values with one f32 scale each (absmax / 127) instead of f32: the
  // integer dot products (dp4a) take a third of the instructions of the f32 decoders.
  bool x8 = false;
};

// Shared bytes of one staged x unit: f32 values plus 4 floats of padding, or (x8) int8 values,
// their per-32 scales, (xsum_group) the per-16 sums of the quantized values as f32, and 16 bytes
// of padding (the LR lanes of a row then hit other banks).
constexpr int x_unit_bytes(const FormatGeom& g) {
  return g.x8 ? g.unit_values + 4 * (g.unit_values / 32) +
                    (g.xsum_group ? 4 * (g.unit_values / 16) : 0) + 16
              : 4 * (g.unit_values + 4);
}

// Q8_0: 8 blocks = 272 B = 17 x 16 B, 16-byte aligned whenever the row start is (cols % 256 == 0).
inline constexpr FormatGeom kGeomQ8_0{256, 272, 16, 272, 4, false, 0, 0};
inline constexpr FormatGeom kGeomQ4_K{256, 144, 16, 144, 2, true, 16, 0};      // 1 block
inline constexpr FormatGeom kGeomQ2_K{256, 84, 4, 84, 2, true, 16, 0};         // 1 block
inline constexpr FormatGeom kGeomIQ2_XXS{512, 132, 4, 132, 2, true, 0, 1024};  // 2 blocks
// IQ2_XXS with int8 x: the table holds the grid as bytes (2 KiB).
inline constexpr FormatGeom kGeomIQ2_XXS_X8{512, 132, 4, 132, 2, true, 0, 2048, true};
// IQ2_XXS with int8 x and selector tables replicated R times (FmtIQ2_XXS_X8R): the grid as code
// nibbles (256 words) and the signs as selector bits (128 words), word e of copy c at e * R + c.
constexpr FormatGeom geom_iq2_xxs_x8r(int R) {
  return FormatGeom{512, 132, 4, 132, 2, true, 0, (256 + 128) * 4 * R, true};
}
// Q2_K with int8 x: the minimums need the per-16 sums of the quantized x.
inline constexpr FormatGeom kGeomQ2_K_X8{256, 84, 4, 84, 2, true, 16, 0, true};
// Q8_0 with int8 x: a block and an x group are both 32 values.
inline constexpr FormatGeom kGeomQ8_0_X8{256, 272, 16, 272, 4, true, 0, 0, true};
inline constexpr FormatGeom kGeomF16{64, 128, 16, 144, 2, false, 0, 0};
inline constexpr FormatGeom kGeomBF16{64, 128, 16, 144, 2, false, 0, 0};
inline constexpr FormatGeom kGeomF32{32, 128, 16, 144, 2, false, 0, 0};

// Formats with smem_x decode codes into denormal floats (code * 2^-149, exact, no offset to
// subtract) and multiply them by x * 2^kXShift; the sums are scaled back by 2^(149-kXShift).
// Exact as long as |x| < 2^(128-kXShift) and products |w x| above ~2^(-126+149-kXShift) (smaller
// terms lose relative precision but are below 2^-70 in absolute value).
inline constexpr int kXShift = 96;

// Most threads per CTA for a batch size (512 threads cap registers at 128; batches need more).
constexpr int max_threads_for_nb(int nb) {
  return nb <= 1 ? 512 : 256;
}
inline constexpr int kMaxNb = 8;

struct Params {
  const uint8_t* w[2];   // weight bases (mat 0, mat 1)
  int64_t row_bytes;     // bytes per row
  int64_t expert_bytes;  // bytes between experts of a stacked tensor (0: single matrix)
  const int32_t* ids;    // device [n_slots] expert ids, or nullptr: slot s uses expert s
  int64_t n_expert;      // ids must be in [0, n_expert) (0: not checked); bad id -> NaN rows
  int n_slots, n_mats;
  int rows, cols;
  const float* x;  // x[slot][vec][cols]
  int64_t x_slot_stride, x_vec_stride;
  float* y;  // y[mat][slot][vec][rows]
  int64_t y_mat_stride, y_slot_stride, y_vec_stride;
  // launch geometry (from the planner)
  int groups;                            // row groups (CTAs) per (mat, slot)
  int lr_log2;                           // log2(lanes per row)
  int ks;                                // warps per CTA
  int units;                             // units per row
  int steps;                             // ceil(units / (ks << lr_log2))
  uint32_t off_xsum, off_tab, off_ring;  // shared-memory byte offsets (x staged at 0)
  // Bulk mode (TMA): the ring is filled with cp.async.bulk copies completing on one mbarrier per
  // (warp, stage) at off_bar + 64 * warp (8 B each); `stages` (a power of two, <= 8) is chosen by
  // the planner. cp.async mode: stages == FormatGeom::stages, off_bar unused.
  int bulk;
  int smem_x;   // x staged in shared memory (padded layout, mv_kernel.cuh)
  int persist;  // mv_persist_kernel: grid = resident CTAs, warps own ranges of row groups
  int stages, stages_log2;
  uint32_t off_bar;
  // Weight copies with the L2 evict_first policy (l2_stream_policy), else evict_normal.
  int l2_evict_first;
};

// Bytes of mbarriers reserved per warp in bulk mode (8 stages of 8 bytes).
inline constexpr int kBarBytesPerWarp = 64;
inline constexpr int kMaxBulkStages = 8;

}  // namespace dsv4::cuda::mv
