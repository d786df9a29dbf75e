#include "cuda/matvec.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"
#include "cuda/device.h"
#include "cuda/mv_launch.h"
#include "cuda/mv_plan.h"

namespace dsv4::cuda {

bool matvec_supported(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q2_K:
    case GgmlType::Q4_K:
    case GgmlType::IQ2_XXS:
      return true;
    default:
      return false;
  }
}

namespace {

struct Prepared {
  mv::Params p{};
  mv::Shape shape;
};

bool aligned(const void* ptr, size_t a) {
  return reinterpret_cast<uintptr_t>(ptr) % a == 0;
}

Prepared prepare(const MatvecOp& op) {
  if (!matvec_supported(op.type))
    fail("cuda::matvec: type {} not supported", ggml_type_name(op.type));
  const auto traits = ggml_type_traits((uint32_t)op.type);
  if (op.rows <= 0 || op.cols <= 0 || op.rows > 0x7fffffff || op.cols > 0x7fffffff)
    fail("cuda::matvec: bad shape {}x{}", op.rows, op.cols);
  if (op.cols % traits->block_elems != 0)
    fail("cuda::matvec: cols {} not a multiple of the {} block size {}", op.cols,
         ggml_type_name(op.type), traits->block_elems);
  if (op.nb < 1 || op.nb > mv::kMaxNb) fail("cuda::matvec: nb {} outside 1..{}", op.nb, mv::kMaxNb);
  if (op.n_mats < 1 || op.n_mats > 2) fail("cuda::matvec: n_mats {} outside 1..2", op.n_mats);
  if (op.n_slots < 1) fail("cuda::matvec: n_slots {} < 1", op.n_slots);
  if (!op.x || !op.y) fail("cuda::matvec: null x or y");
  for (int m = 0; m < op.n_mats; ++m)
    if (!op.w[m]) fail("cuda::matvec: null weight pointer {}", m);
  if (op.expert_stride_bytes < 0 || op.n_expert < 0) fail("cuda::matvec: negative expert stride");

  Prepared r;
  mv::Params& p = r.p;
  p.w[0] = static_cast<const uint8_t*>(op.w[0]);
  p.w[1] = static_cast<const uint8_t*>(op.n_mats > 1 ? op.w[1] : op.w[0]);
  p.row_bytes = (int64_t)ggml_row_bytes(op.type, (uint64_t)op.cols);
  p.expert_bytes = op.expert_stride_bytes;
  p.ids = op.ids;
  p.n_expert = op.n_expert;
  p.n_slots = op.n_slots;
  p.n_mats = op.n_mats;
  p.rows = (int)op.rows;
  p.cols = (int)op.cols;
  p.x = op.x;
  p.x_slot_stride = op.x_slot_stride;
  p.x_vec_stride = op.x_vec_stride ? op.x_vec_stride : op.cols;
  p.y = op.y;
  p.y_vec_stride = op.y_vec_stride ? op.y_vec_stride : op.rows;
  p.y_slot_stride = op.y_slot_stride ? op.y_slot_stride : (int64_t)op.nb * op.rows;
  p.y_mat_stride = op.y_mat_stride ? op.y_mat_stride : (int64_t)op.n_slots * op.nb * op.rows;

  mv::Shape& s = r.shape;
  s.type = op.type;
  s.rows = op.rows;
  s.cols = op.cols;
  s.nb = op.nb;
  s.n_mats = op.n_mats;
  s.n_slots = op.n_slots;
  s.per_slot_x = op.n_slots > 1 && op.x_slot_stride != 0;
  s.x8 = op.x8;
  s.side = op.side;
  const auto geom = mv::format_geom(op.type, op.x8);
  bool ok = op.path == MatvecPath::kAuto && geom.has_value();
  if (ok) {
    const size_t g = (size_t)geom->copy_bytes;
    for (int m = 0; m < op.n_mats; ++m) ok = ok && aligned(p.w[m], g);
    ok = ok && p.row_bytes % (int64_t)g == 0 && p.expert_bytes % (int64_t)g == 0;
    ok = ok && aligned(op.x, 16) && p.x_vec_stride % 4 == 0 && p.x_slot_stride % 4 == 0;
  }
  s.aligned = ok;
  bool a16 = ok;
  for (int m = 0; m < op.n_mats; ++m) a16 = a16 && aligned(p.w[m], 16);
  s.aligned16 = a16 && p.row_bytes % 16 == 0 && p.expert_bytes % 16 == 0;
  return r;
}

// The weights are read once per token (~9.6 GB through a ~50 MB L2): their copies carry the L2
// evict_first policy, so that the activations, KV rows and partial results the next kernels read
// stay in L2. H200 q2 decode @2K 181.5-182.3 tok/s against 177.5-178.3 for the copies without a
// hint (f22c331), @64K 162.8 against 159.5-160.0. DSV4_L2_HINT=0 (evict_normal, for A/B) measured
// slower than no hint (174.8-175.3 @2K): the copies' default policy is not evict_normal.
bool l2_evict_first_on() {
  static const bool on = [] {
    const char* e = std::getenv("DSV4_L2_HINT");
    return !(e && e[0] == '0');
  }();
  return on;
}

// Per-product planner knobs (MatvecOp::tag) on top of the global ones, where a product's best
// plan depends on its neighbours in the decode graph or the global knobs' plan misfits it.
struct TagDefault {
  const char* tag;
  const char* spec;
};
constexpr TagDefault kTagDefaults[] = {
    // The grouped output projection (8 x 4.5 MB, each group its own x) in 512 CTAs of 4 warps
    // with one bulk stage (40 KB each, all resident at once) instead of 256 CTAs of 16 warps
    // (145 KB, one per SM: two waves, the second streaming nothing before the first ends).
    // H200 q2 decode, three rounds: @2K 193.4-193.7 tok/s against 189.3-189.5, @64K 183.8
    // against 180.1-180.2 (two).
    {"o_a", "t_q8=8,stages=1,min_ctas=2"},
    // The routed gate+up with one bulk stage (105 KB: two CTAs of 12 warps per SM). H200 q2
    // decode, five rounds @2K: +0.3-0.8 % (193.3-194.6 tok/s against 192.4-193.8), @64K 183.7 /
    // 184.7 against 182.9 / 182.9.
    {"exp_gate_up", "stages=1"},
    // The shared expert's branch had ~29 us of slack per layer beside the routed chain: its CTAs
    // small enough to leave the chain's kernels room. The router's 2 MB F16 logits product in
    // twice the CTAs (two rows each) for a shorter latency. The three together, H200 q2 decode,
    // four rounds @2K: 184.5-184.7 tok/s against 182.3-182.8 without; @64K 172.7 / 172.9 against
    // 170.1 / 170.5; @16K 181.2 / 182.0 against 179.6 / 180.0.
    {"shexp_down", "side_pw=2"},
    {"shexp_gate_up", "side_ctas=2"},
    {"gate_inp", "max_lr=4"},
};

// The knobs of the products tagged `tag`: DSV4_MV_TUNE_<TAG> (upper-cased; empty: none) if set,
// else the tag's default above, applied to a copy of mv::tuning(); null when neither applies.
// Read once per tag.
const mv::Tuning* tagged_tuning(const char* tag) {
  if (!tag) return nullptr;
  static std::mutex mu;
  static std::map<std::string, std::optional<mv::Tuning>, std::less<>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(std::string_view(tag));
  if (it == cache.end()) {
    std::string var = "DSV4_MV_TUNE_";
    for (const char* c = tag; *c; ++c) var += (char)std::toupper((unsigned char)*c);
    const char* spec = std::getenv(var.c_str());
    if (!spec)
      for (const TagDefault& d : kTagDefaults)
        if (std::strcmp(d.tag, tag) == 0) spec = d.spec;
    std::optional<mv::Tuning> t;
    if (spec) {
      t = mv::tuning();
      const std::string bad = mv::apply_tuning_spec(*t, spec);
      if (!bad.empty()) std::fprintf(stderr, "%s: unknown key '%s'\n", var.c_str(), bad.c_str());
    }
    it = cache.emplace(tag, t).first;
  }
  return it->second ? &*it->second : nullptr;
}

mv::DeviceLimits limits() {
  const DeviceInfo& d = current_device_info();
  mv::DeviceLimits l;
  l.sm_count = d.sm_count;
  l.smem_per_block = d.smem_per_block_optin;
  return l;
}

}  // namespace

std::string matvec_describe(const MatvecOp& op) {
  const Prepared r = prepare(op);
  if (op.path == MatvecPath::kGeneric) return "generic (requested)";
  return mv::to_string(mv::plan_matvec(r.shape, limits(), tagged_tuning(op.tag)));
}

void matvec_run(const MatvecOp& op, cudaStream_t stream) {
  Prepared r = prepare(op);
  const mv::DeviceLimits lim = limits();
  const mv::Plan plan = op.path == MatvecPath::kGeneric
                            ? mv::Plan{}
                            : mv::plan_matvec(r.shape, lim, tagged_tuning(op.tag));
  if (!plan.fast) {
    mv::launch_generic(r.p, (uint32_t)op.type, op.nb, stream);
    return;
  }
  mv::Launch l;
  l.p = r.p;
  l.p.groups = plan.groups;
  l.p.lr_log2 = plan.lr_log2;
  l.p.ks = plan.ks;
  l.p.units = plan.units;
  l.p.steps = plan.steps;
  l.p.off_xsum = (uint32_t)plan.off_xsum;
  l.p.off_tab = (uint32_t)plan.off_tab;
  l.p.off_ring = (uint32_t)plan.off_ring;
  l.p.bulk = plan.bulk ? 1 : 0;
  l.p.smem_x = plan.smem_x ? 1 : 0;
  l.p.persist = plan.persist ? 1 : 0;
  l.p.stages = plan.stages;
  l.p.stages_log2 = 0;
  while ((1 << l.p.stages_log2) < plan.stages) ++l.p.stages_log2;
  l.p.off_bar = (uint32_t)plan.off_bar;
  l.ctas = plan.ctas;
  l.threads = plan.persist ? 32 * plan.persist_warps : plan.threads;
  l.sm_count = lim.sm_count;
  l.max_ctas_per_sm = plan.persist_max_ctas;
  l.smem = plan.smem;
  l.p.l2_evict_first = l2_evict_first_on() ? 1 : 0;
  switch (op.type) {
    case GgmlType::Q8_0:
      return plan.x8 ? mv::launch_q8_0_x8(l, op.nb, stream) : mv::launch_q8_0(l, op.nb, stream);
    case GgmlType::Q4_K:
      return mv::launch_q4_k(l, op.nb, stream);
    case GgmlType::Q2_K:
      return plan.x8 ? mv::launch_q2_k_x8(l, op.nb, stream) : mv::launch_q2_k(l, op.nb, stream);
    case GgmlType::IQ2_XXS:
      if (plan.x8 && plan.table_rep)
        return mv::launch_iq2_xxs_x8r(l, op.nb, plan.table_rep, stream);
      return plan.x8 ? mv::launch_iq2_xxs_x8(l, op.nb, stream)
                     : mv::launch_iq2_xxs(l, op.nb, stream);
    case GgmlType::F16:
      return mv::launch_f16(l, op.nb, stream);
    case GgmlType::BF16:
      return mv::launch_bf16(l, op.nb, stream);
    case GgmlType::F32:
      return mv::launch_f32(l, op.nb, stream);
    default:
      fail("cuda::matvec: no fast launcher for {}", ggml_type_name(op.type));
  }
}

void matvec(GgmlType type, const void* w, int64_t rows, int64_t cols, const float* x, float* y,
            cudaStream_t stream) {
  MatvecOp op;
  op.type = type;
  op.w[0] = w;
  op.rows = rows;
  op.cols = cols;
  op.x = x;
  op.y = y;
  matvec_run(op, stream);
}

void matvec_batch(GgmlType type, const void* w, int64_t rows, int64_t cols, const float* x, int nb,
                  float* y, cudaStream_t stream) {
  MatvecOp op;
  op.type = type;
  op.w[0] = w;
  op.rows = rows;
  op.cols = cols;
  op.x = x;
  op.nb = nb;
  op.y = y;
  matvec_run(op, stream);
}

void matvec_experts(const ExpertMatvec& e, cudaStream_t stream) {
  if (e.n_slots < 1) fail("cuda::matvec_experts: n_slots {} < 1", e.n_slots);
  if (e.n_expert < 1) fail("cuda::matvec_experts: n_expert {} < 1", e.n_expert);
  MatvecOp op;
  op.type = e.type;
  op.w[0] = e.w[0];
  op.w[1] = e.w[1];
  op.n_mats = e.n_mats;
  op.rows = e.rows;
  op.cols = e.cols;
  op.expert_stride_bytes = e.rows * (int64_t)ggml_row_bytes(e.type, (uint64_t)e.cols);
  op.n_expert = e.n_expert;
  op.ids = e.ids;
  op.n_slots = e.n_slots;
  op.x = e.x;
  op.x_slot_stride = e.x_slot_stride;
  op.y = e.y;
  matvec_run(op, stream);
}

}  // namespace dsv4::cuda
