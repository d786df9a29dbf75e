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
// x8: the int8-x variant where the type has one (IQ2_XXS, Q2_K, Q8_0), else the type's usual
// geometry; iq2_rep (Tuning::iq2_rep) picks the IQ2_XXS int8-x decoder.
std::optional<FormatGeom> format_geom(GgmlType t, bool x8 = false, int iq2_rep = 0);

struct DeviceLimits {
  int sm_count = 132;
  size_t smem_per_block = 227 * 1024;  // opt-in dynamic shared memory per block
};

struct Shape {
  GgmlType type = GgmlType::F32;
  int64_t rows = 0, cols = 0;
  int nb = 1, n_mats = 1, n_slots = 1;
  bool aligned = true;      // pointers and strides meet the fast path's alignment (see matvec.cpp)
  bool aligned16 = true;    // weight pointers and strides 16-byte aligned (bulk copies)
  bool per_slot_x = false;  // slots read different x vectors
  bool x8 = false;          // x quantized to int8 per 32 values where the format supports it
  bool side = false;        // runs beside other kernels (MatvecOp::side)
};

// Planner knobs (defaults are the tuned values; bench_matvec can sweep them).
struct Tuning {
  int target_warps_per_sm = 16;  // k-split until the grid has this many warps per SM
  int bulk = 1;             // bulk (TMA) copies: 0 never (no persistent kernel either); 1 for Q8_0
                            // and the persistent kernel; 2 wherever the shape allows
  int bulk_stages = 2;      // ring depth in bulk mode (capped by the steps unless persistent)
  int bulk_force_lr = 0;    // 1: raise lanes per row so that bulk copies apply (2-bit formats)
  int min_ctas_per_sm = 1;  // more lanes per row while the grid has fewer CTAs than this per SM
  // Lanes per row at most 1 << this (<= 5) for the decode chain's shapes. 8 rather than 32 (the
  // persistent Q8_0 / F16 products had 16-32 lanes per row, one unit each; with 8 each lane walks
  // several units of its row): H200 q2 decode @2K 173.1-173.8 tok/s against 171.9-172.1 (three
  // rounds, side shapes capped alike; 16 lanes: 173.5-173.6, 4 lanes: 165.7-166.5), @64K
  // 155.7 / 156.0 against 153.5 / 153.1. 32 lanes here with 8 on the side: 171.2-172.1.
  int max_lr_log2 = 3;
  // ... for side-stream shapes (Shape::side): 4 lanes. H200 q2 decode @2K 174.5-175.3 tok/s
  // against 173.9-174.0 with 8 (three rounds; 2 lanes 171.3-172.0, 1 lane 148.9-149.6; 32 lanes
  // 171.0-172.2), @64K 157.7 / 157.8 against 156.1 / 156.3.
  int side_max_lr_log2 = 2;
  int bulk_max_steps = 2;   // bulk copies only when a warp has at most this many steps
  int q8_smem_x = 1;  // Q8_0 x in shared memory: 0 never, 1 in CTAs of >= q8_smem_x_min_ks warps
                      // (and in persistent CTAs), 2 always
  int q8_smem_x_min_ks = 4;
  int target_q8 = 16;     // target_warps_per_sm for Q8_0
  int target_iq2 = 32;    // ... IQ2_XXS
  int target_q2k = 8;     // ... and Q2_K (the routed down: 16 -> 8 took it from 16.6 to 14.0 us
                          // alone, 4 CTA-warps to 2; with iq2_pw 12, H200 q2 decode @2K
                          // 160.7-161.0 -> 162.9-163.5 tok/s, @64K 147.8 -> 151.5)
  int target_float = 8;   // ... F16, BF16 and F32
  int persist = 3;        // persistent kernel (bulk, no k-split): 0 off, 1 Q8_0, 2 every format,
                          // 3 Q8_0 and IQ2_XXS
  int persist_warps = 8;  // warps per persistent CTA
  int persist_items = 8;  // raise lanes per row until each warp has about this many row groups
  int persist_occ = 2;    // resident persistent CTAs per SM assumed by that estimate
  // Side-stream shapes (Shape::side): persistent CTAs of at most this many warps (0: not
  // persistent). Half the ring of the chain's CTAs leaves room for the chain's kernels beside
  // them: H200 q2 decode @2K 144.5 tok/s with 8, 146.0 with 4, 142.8 not persistent.
  int side_persist_warps = 4;
  // ... and at most this many of those CTAs per SM (0: as many as are resident), so that the
  // chain's persistent kernels find shared memory beside them (the shared expert's Q8_0 CTAs of
  // ~75 KB took three per SM, leaving no room for the routed gate+up's 131 KB). H200 q2 decode,
  // three rounds: @2K 152.5-152.6 tok/s with 0, 154.1 with 1; @64K 139.9-140.0 / 140.2-140.3.
  int side_persist_ctas = 1;
  // IQ2_XXS with int8 x: 0 the arithmetic sign decoder with one 2 KiB grid (FmtIQ2_XXS_X8); 16
  // or 32: grid and sign selectors from tables replicated that many times (FmtIQ2_XXS_X8R, 24 or
  // 48 KiB per CTA), whose persistent CTAs take iq2_pw warps. H200 q2 decode @2K, two rounds:
  // 149.5 / 149.7 tok/s with 0, 152.8 / 152.7 with 16 and 12 warps (6 experts' gate+up alone
  // 26.8 -> 24.3 us); with side_persist_ctas = 1, three rounds: 153.1-153.2 with 12 warps,
  // 153.6-153.9 with 10 (a 113 KB CTA beside a side-branch CTA).
  // Once HCPre's Sinkhorn left the chain and the attention kernels got shorter (thirteenth
  // session), 12 warps won again: 12 / 14 / 16 warps with target_q2k = 8 gave 162.9-163.5 /
  // 162.9-163.4 / 160.8-161.1 tok/s @2K.
  // With 8 lanes per row (fourteenth session) the 32 copies (48 KiB, no bank conflicts where 16
  // copies averaged 2-way: the loop is bound by the shared-memory pipe as much as by issue) won:
  // @2K 177.0-177.8 tok/s against 174.9-175.0 (three rounds; 14 warps 169.4-170.3), @64K
  // 159.5 / 159.5 against 157.4 / 157.8.
  int iq2_rep = 32;
  int iq2_pw = 12;
};
// The planner knobs in use: defaults, then DSV4_MV_TUNE (a spec for apply_tuning_spec) read at
// the first call, so any program (tests, bench_matvec, dsv4 bench) runs under other knobs.
Tuning& tuning();
// Applies "key=value,..." to t (keys: target bulk stages force_lr min_ctas max_lr bulk_max_steps
// q8x q8x_ks t_q8 t_iq2 t_q2k t_f16 persist pw pitems pocc side_pw side_ctas iq2_rep iq2_pw; a key
// without value means
// 1). Returns an empty string, or the first unknown key (the keys before it are applied).
std::string apply_tuning_spec(Tuning& t, const std::string& spec);

// Warps per SM the planner aims for (latency hiding; each warp keeps `stages` units in flight).
inline constexpr int kTargetWarpsPerSm = 16;

struct Plan {
  bool fast = false;
  std::string why_generic;  // set when !fast
  int lr_log2 = 0;          // lanes per row = 1 << lr_log2
  int ks = 1;               // warps per CTA
  int threads = 32;
  int groups = 0;  // CTAs per (mat, slot)
  int64_t ctas = 0;
  int units = 0, steps = 0;
  size_t smem = 0, off_xsum = 0, off_tab = 0, off_ring = 0;
  bool bulk = false;    // ring filled by cp.async.bulk (mbarriers at off_bar)
  bool smem_x = false;  // x staged in shared memory (always for the denormal formats)
  bool x8 = false;      // ... as int8 per 32 values (FormatGeom::x8)
  // Persistent kernel (bulk, ks == 1): persist_warps warps per CTA, as many CTAs as are resident;
  // ctas stays the logical count (row groups x slots x mats), smem is per physical CTA.
  bool persist = false;
  int persist_warps = 0;
  int persist_max_ctas = 0;  // per SM (0: as many as are resident)
  int table_rep = 0;         // IQ2_XXS int8 x: copies of the selector tables (0: FmtIQ2_XXS_X8)
  int stages = 0;            // ring depth (per warp)
  size_t off_bar = 0;
};

// knobs: the planner knobs to use (default: tuning()).
Plan plan_matvec(const Shape& s, const DeviceLimits& lim, const Tuning* knobs = nullptr);
std::string to_string(const Plan& p);

}  // namespace dsv4::cuda::mv
