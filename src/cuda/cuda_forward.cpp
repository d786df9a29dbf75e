// The GPU forward pass (cuda/cuda_forward.h): the CPU reference's layer loop
// (src/model/cpu_forward.cpp) with every step a kernel of src/cuda/fwd_*.cu or a quantized matvec.
// All scratch is allocated in the constructor for max_batch tokens; the session's state is sized
// for max_ctx. Kernels read the chunk's first position and the token ids from device memory, and
// no launch geometry depends on the position in the capture path, so the one-token step is
// captured as a CUDA graph and replayed: one graph per context bound (graph_bound), each sized for
// its bound rather than the capacity.
#include "cuda/cuda_forward.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "cuda/device.h"
#include "cuda/fwd_kernels.h"
#include "cuda/gemm.h"
#include "cuda/gemm_experts.h"
#include "cuda/launch_repeat.h"
#include "cuda/matvec.h"
#include "model/ops.h"
#include "model/state_extent.h"
#include "quant/quant.h"

namespace dsv4::cuda {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kDefaultMoeGroup = 1;

const float* fptr(const TensorRef& t) {
  return t.present() ? reinterpret_cast<const float*>(t.data) : nullptr;
}

// A small float tensor as f32 in device memory (a copy when stored as F16/BF16).
DeviceBuffer to_f32_device(const TensorRef& t) {
  const int64_t n = t.ne[0] * t.ne[1] * t.ne[2];
  std::vector<uint8_t> raw(t.nbytes);
  DSV4_CUDA_CHECK(cudaMemcpy(raw.data(), t.data, t.nbytes, cudaMemcpyDeviceToHost));
  std::vector<float> v((size_t)n);
  quant::dequantize_row(t.type, raw.data(), v.data(), n);
  DeviceBuffer b(sizeof(float) * (size_t)n);
  b.upload(v.data(), sizeof(float) * (size_t)n);
  return b;
}

DeviceBuffer upload_floats(const std::vector<float>& v) {
  DeviceBuffer b(sizeof(float) * std::max<size_t>(v.size(), 1));
  if (!v.empty()) b.upload(v.data(), sizeof(float) * v.size());
  return b;
}

template <typename T>
DeviceBuffer scratch(int64_t n) {
  return DeviceBuffer(sizeof(T) * (size_t)std::max<int64_t>(n, 1));
}

}  // namespace

// DSV4_CUDA_REPEAT=stage:count,... (diagnostic): the named forward stages' kernels are launched
// `count` times (count 0..8; "stage" alone means 2), in the decode graph too. The slowdown of a
// decoded token is then (count - 1) times the stage's cost on the critical path. Count 0 knocks
// the stage out: the logits are wrong, and the speed-up is what the stage costs the critical path
// with everything else as it is (an upper bound on what making it faster could gain).
class RepeatSpec {
 public:
  RepeatSpec() = default;
  explicit RepeatSpec(std::string_view spec) {
    while (!spec.empty()) {
      const size_t comma = spec.find(',');
      std::string_view item = spec.substr(0, comma);
      spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
      if (item.empty()) continue;
      int count = 2;
      if (const size_t colon = item.find(':'); colon != std::string_view::npos) {
        count = std::atoi(std::string(item.substr(colon + 1)).c_str());
        item = item.substr(0, colon);
      }
      if (count < 0 || count > 8)
        fail("DSV4_CUDA_REPEAT: stage '{}' count must be 0..8", std::string(item));
      counts_[std::string(item)] = count;
    }
  }
  bool empty() const { return counts_.empty(); }
  int count(const char* stage) const {
    if (counts_.empty()) return 1;
    const auto it = counts_.find(stage);
    return it == counts_.end() ? 1 : it->second;
  }

 private:
  std::map<std::string, int, std::less<>> counts_;
};

// DSV4_CUDA_PROFILE=1: events around every stage of the non-graph path, summed per stage name
// over layers and chunks, separately for one-token (decode) and multi-token (prefill) chunks; the
// table goes to stderr every DSV4_CUDA_PROFILE_EVERY decode tokens (default 0: never) and when the
// model is destroyed.
class StageProfiler {
 public:
  bool on = false;
  int64_t every = 0;

  StageProfiler() {
    const char* e = std::getenv("DSV4_CUDA_PROFILE");
    on = e && *e && std::strcmp(e, "0") != 0;
    const char* ev = std::getenv("DSV4_CUDA_PROFILE_EVERY");
    if (ev) every = std::max<long long>(0, std::atoll(ev));
    if (const char* r = std::getenv("DSV4_CUDA_REPEAT")) repeats_ = RepeatSpec(r);
    const char* t = std::getenv("DSV4_CUDA_TRACE");
    trace_ = !on && t && *t && std::strcmp(t, "0") != 0;
    probes_ = trace_ && (std::strcmp(t, "2") == 0 || std::strcmp(t, "3") == 0);
    // 3: stamps only where a sublayer starts (the probes' references), so that the chain between
    // them runs as untraced but for the probes at the branch ends and around the attention join.
    sparse_stamps_ = trace_ && std::strcmp(t, "3") == 0;
    if (trace_) {
      DSV4_CUDA_CHECK(cudaMalloc(&trace_ts_, sizeof(unsigned long long) * kTraceSlots));
      DSV4_CUDA_CHECK(cudaMalloc(&trace_acc_, sizeof(unsigned long long) * (kTraceSlots + 1)));
      DSV4_CUDA_CHECK(cudaMemset(trace_acc_, 0, sizeof(unsigned long long) * (kTraceSlots + 1)));
    }
    if (probes_) {
      DSV4_CUDA_CHECK(cudaMalloc(&probe_acc_, sizeof(unsigned long long) * kTraceSlots));
      DSV4_CUDA_CHECK(cudaMemset(probe_acc_, 0, sizeof(unsigned long long) * kTraceSlots));
    }
  }
  // DSV4_CUDA_REPEAT gave stage counts (stages may be knocked out).
  bool repeating() const { return !repeats_.empty(); }
  ~StageProfiler() {
    if (on) report();
    if (trace_) {
      report_trace();
      cudaFree(trace_ts_);
      cudaFree(trace_acc_);
      if (probe_acc_) cudaFree(probe_acc_);
    }
    for (cudaEvent_t e : pool_) cudaEventDestroy(e);
  }
  // DSV4_CUDA_TRACE=1 (graphs stay on): one-token chunks get a stamp kernel at every mark on the
  // main stream, and the report charges each stage the time from its stamp to the next one,
  // measured inside the replayed decode graph. A stamp waits for everything queued before it, so
  // side-stream stages are charged to the main-stream interval in which they are joined, and a
  // kernel launched early under PDL (weights streamed before its wait) shifts time into the
  // interval before its own. Every stamp adds a dependent launch (~0.65 us on an H200).
  void begin_chunk(int64_t tokens) {
    trace_on_ = trace_ && tokens == 1;
    trace_i_ = 0;
    probe_i_ = 0;
    probe_ref_ = -1;
  }
  // DSV4_CUDA_TRACE=2 (and 3, with stamps only at the sublayers' starts): charges `name` the
  // time from the sublayer's first stamp (attn_hc_fn / ffn_hc_fn) to this point of stream `s` (a
  // side branch's end, or the main stream before a join), averaged over its occurrences: which
  // branch a join waits for.
  void probe(const char* name, cudaStream_t s) {
    if (!trace_on_ || !probes_ || probe_ref_ < 0 || probe_i_ >= kTraceSlots) return;
    if ((size_t)probe_i_ == probe_names_.size())
      probe_names_.emplace_back(name);
    else if (probe_names_[probe_i_] != name)
      trace_mixed_ = true;
    fwd::trace_probe(trace_ts_, probe_acc_, probe_ref_, probe_i_, s);
    ++probe_i_;
  }
  // The interval from this mark to the next one is charged to `name`; the launches from here to
  // the next mark are issued as often as DSV4_CUDA_REPEAT names `name`.
  void mark(const char* name, cudaStream_t s) {
    // Only under DSV4_CUDA_REPEAT (a one-thread benchmark): the count is process-wide, so
    // concurrent forwards must not write it.
    if (!repeats_.empty()) launch_repeat() = repeats_.count(name);
    const bool sublayer = trace_on_ && (std::strcmp(name, "attn_hc_fn") == 0 ||
                                        std::strcmp(name, "ffn_hc_fn") == 0 || name[0] == '\0');
    if (trace_on_ && trace_i_ < kTraceSlots && (sublayer || !sparse_stamps_)) {
      if ((size_t)trace_i_ == trace_names_.size())
        trace_names_.emplace_back(name);
      else if (trace_names_[trace_i_] != name)
        trace_mixed_ = true;
      if (sublayer && name[0] != '\0') probe_ref_ = trace_i_;
      fwd::trace_stamp(trace_ts_, trace_acc_, trace_i_, kTraceSlots, s);
      ++trace_i_;
    }
    if (!on) return;
    if (used_ == pool_.size()) {
      cudaEvent_t e;
      DSV4_CUDA_CHECK(cudaEventCreate(&e));
      pool_.push_back(e);
    }
    DSV4_CUDA_CHECK(cudaEventRecord(pool_[used_], s));
    names_.push_back(name);
    ++used_;
  }
  // After the chunk's stream work finished (stream synchronized): collect the intervals.
  void end_chunk(int64_t tokens, cudaStream_t s) {
    if (trace_on_) {
      mark("", s);
      trace_on_ = false;
    }
    if (!on || used_ == 0) return;
    mark("", s);
    DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
    Phase& ph = tokens == 1 ? decode_ : prefill_;
    for (size_t i = 0; i + 1 < used_; ++i) {
      float ms = 0;
      DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, pool_[i], pool_[i + 1]));
      ph.ms[names_[i]] += ms;
      ph.total += ms;
    }
    ph.tokens += tokens;
    used_ = 0;
    names_.clear();
    if (tokens == 1 && every > 0 && decode_.tokens % every == 0) report();
  }
  void report() const {
    print("decode", decode_);
    print("prefill", prefill_);
  }

 private:
  struct Phase {
    std::map<std::string, double> ms;
    double total = 0;
    int64_t tokens = 0;
  };
  static void print(const char* what, const Phase& ph) {
    if (ph.tokens == 0) return;
    std::vector<std::pair<double, std::string>> rows;
    for (const auto& [k, v] : ph.ms) rows.emplace_back(v, k);
    std::sort(rows.rbegin(), rows.rend());
    std::fprintf(stderr,
                 "# cuda profile (%s): %lld tokens, %.3f ms/token in events, %.1f tok/s\n"
                 "# %-18s %12s %7s\n",
                 what, (long long)ph.tokens, ph.total / (double)ph.tokens,
                 ph.total > 0 ? 1e3 * (double)ph.tokens / ph.total : 0.0, "stage", "ms/token", "%");
    for (const auto& [v, k] : rows)
      std::fprintf(stderr, "# %-18s %12.4f %6.1f%%\n", k.c_str(), v / (double)ph.tokens,
                   ph.total > 0 ? 100.0 * v / ph.total : 0.0);
  }
  void report_trace() const {
    std::vector<unsigned long long> acc(kTraceSlots + 1);
    if (cudaMemcpy(acc.data(), trace_acc_, sizeof(unsigned long long) * acc.size(),
                   cudaMemcpyDeviceToHost) != cudaSuccess)
      return;
    const double tokens = (double)acc[kTraceSlots];
    if (tokens == 0) return;
    std::map<std::string, std::pair<double, int>> by;  // ns per token, marks per token
    double total = 0;
    for (size_t i = 0; i + 1 < trace_names_.size(); ++i) {
      auto& e = by[trace_names_[i]];
      e.first += (double)acc[i] / tokens;
      e.second += 1;
      total += (double)acc[i] / tokens;
    }
    std::vector<std::tuple<double, std::string, int>> rows;
    for (const auto& [k, v] : by) rows.emplace_back(v.first, k, v.second);
    std::sort(rows.rbegin(), rows.rend());
    std::fprintf(stderr,
                 "# cuda trace (decode graph): %.0f tokens, %.3f ms/token between stamps%s\n"
                 "# %-18s %10s %6s %6s %10s\n",
                 tokens, total * 1e-6, trace_mixed_ ? " (stage lists differed between graphs)" : "",
                 "stage", "us/token", "%", "marks", "us/mark");
    for (const auto& [v, k, m] : rows)
      std::fprintf(stderr, "# %-18s %10.2f %5.1f%% %6d %10.3f\n", k.c_str(), v * 1e-3,
                   total > 0 ? 100.0 * v / total : 0.0, m, v * 1e-3 / m);
    if (!probes_ || probe_names_.empty()) return;
    std::vector<unsigned long long> pacc(probe_names_.size());
    if (cudaMemcpy(pacc.data(), probe_acc_, sizeof(unsigned long long) * pacc.size(),
                   cudaMemcpyDeviceToHost) != cudaSuccess)
      return;
    std::map<std::string, std::pair<double, int>> pb;
    for (size_t i = 0; i < probe_names_.size(); ++i) {
      auto& e = pb[probe_names_[i]];
      e.first += (double)pacc[i] / tokens;
      e.second += 1;
    }
    std::fprintf(stderr, "# trace probes: us from the sublayer's first stamp, mean per mark\n");
    for (const auto& [k, v] : pb)
      std::fprintf(stderr, "# %-22s %10.3f %6d\n", k.c_str(), v.first * 1e-3 / v.second, v.second);
  }
  static constexpr int kTraceSlots = 8192;
  bool trace_ = false, trace_on_ = false, trace_mixed_ = false, probes_ = false,
       sparse_stamps_ = false;
  int trace_i_ = 0, probe_i_ = 0, probe_ref_ = -1;
  unsigned long long* probe_acc_ = nullptr;
  std::vector<std::string> probe_names_;
  unsigned long long* trace_ts_ = nullptr;
  unsigned long long* trace_acc_ = nullptr;
  std::vector<std::string> trace_names_;
  RepeatSpec repeats_;
  std::vector<cudaEvent_t> pool_;
  std::vector<const char*> names_;
  size_t used_ = 0;
  Phase decode_, prefill_;
};

class SessionImpl final : public CudaSession {
 public:
  struct Layer {
    DeviceBuffer raw, comp, idx, ckv, csc, ikv, isc;
  };
  ~SessionImpl() override {
    for (DecodeGraph& g : graphs) {
      if (g.exec) cudaGraphExecDestroy(g.exec);
      if (g.graph) cudaGraphDestroy(g.graph);
    }
  }
  int64_t n_past() const override { return n_past_; }

  const void* owner = nullptr;
  int64_t n_past_ = 0;
  std::vector<Layer> layers;
  // Decode graphs, one per context bound (CudaModel::Impl::graph_bound): each is captured the
  // first time the session's length reaches its bound's range.
  struct DecodeGraph {
    int64_t bound = 0;
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
  };
  std::vector<DecodeGraph> graphs;
};

// Work queued on `later` from now on runs after what `earlier` has queued so far (through `ev`;
// a graph edge when captured). The decode branches' fork and join.
static void order_after(cudaStream_t later, cudaStream_t earlier, const Event& ev) {
  ev.record(earlier);
  DSV4_CUDA_CHECK(cudaStreamWaitEvent(later, ev.get(), 0));
}

struct CudaModel::Impl {
  struct LayerDev {
    const LayerWeights* L = nullptr;
    uint32_t ratio = 0;
    const float* freqs = nullptr;
    DeviceBuffer comp_ape, idx_ape;  // f32 copies
    float clamp = 0;
  };

  const DeviceModel& dm;
  ModelConfig c;
  CudaOptions opt;
  Stream stream;
  mutable StageProfiler prof;
  DeviceBuffer rope_plain, rope_yarn;
  std::vector<LayerDev> layers;
  int64_t B = 0;        // max tokens per chunk
  int64_t idx_cap = 0;  // indexer rows per ratio-4 layer (= max_ctx / 4)
  int max_keys = 0;     // most keys one attention query visits
  float idx_wscale = 0;

  // Scratch (max_batch tokens).
  DeviceBuffer att_part;  // attention partial results (decode key split)
  // Multi-block decode top-k (fwd::idx_topk_large) once a layer holds >= kLargeTopkRows indexer
  // rows: one block scanning them all is the decode bottleneck at long context.
  static constexpr int64_t kLargeTopkRows = 65536;
  DeviceBuffer topk_ws;
  DeviceBuffer tok, p0, X, mixes, post, comb, xin, qa, qr, q, kv, kvn, ckv, csc, pooled, ikv, isc,
      ipooled, iq, iw, scores, sel, o, u, f, rlog, ids, wts, xrep, gu, h, contrib, shout, z, logits,
      amax, amax_ws, mix_parts;
  // Expert-grouped routed experts of multi-token chunks (fwd::moe_group): groups of moe_gn rows
  // (env DSV4_CUDA_MOE_GROUP: 1..8, 0 = the per-pair path for every chunk). Buffers hold up to
  // S groups / G_rows rows for any group size.
  int moe_gn = kDefaultMoeGroup;
  int64_t S = 0, G_rows = 0;
  DeviceBuffer g_slot, g_pos, g_w, g_tok, g_x, g_gu, g_h, g_out;
  // Prefill GEMM path (opt.prefill_gemm): cuBLAS, the dequantized-weight scratch (one dense
  // product, or a batch of expert_batch experts' gate+up or down), bf16 activations.
  std::unique_ptr<gemm::Blas> blas;
  DeviceBuffer wq, xq, idx_dots,
      sort_tmp;          // idx_dots: indexer query-row dot products of a sub-chunk
  int expert_batch = 1;  // experts per dequantize launch (wq holds two such batches)
  // Grouped expert GEMMs with in-kernel decoding (gemm_experts.h): the tile list of a chunk.
  // DSV4_EXPERT_GEMM=cublas: the dequantize + cuBLAS path for every layer (comparisons);
  // DSV4_EXPERT_GEMM=mma: the grouped GEMMs on the mma.sync kernel instead of wgmma (A/B timing).
  DeviceBuffer exp_tiles;
  bool fused_experts = true;
  static constexpr int kSide = 5;
  std::vector<Stream> side;
  std::vector<std::unique_ptr<gemm::Blas>> side_blas;
  Event ev_ready[2], ev_done[2], ev_side[kSide];
  // Decode branches (par_decode): a layer's independent products run on the side streams beside
  // the query path, forked from and joined back to `stream` through these events (graph branches
  // when captured). DSV4_CUDA_PAR=0, or the stage profiler, keeps decode on one stream.
  bool par_decode = true;
  // The decode branch of the indexer's head-weight product (idx_proj; 2: after the indexer's
  // compressor on its branch, 0: after the kv row, 4: a branch of its own).
  int idx_proj_branch = 4;
  // One token (par_decode): HCPre's post and comb (its Sinkhorn warp, ~2 us of dependent shuffles
  // and divisions) run on hc_side beside the chain, which needs only xin; the stream is joined
  // before hc_post / the MoE combine read them. DSV4_HC_COMB_SIDE=0: one launch on the chain.
  bool hc_comb_side = true;
  Stream hc_side;
  Event ev_hc_fork, ev_hc_join;
  bool hc_forked = false;
  // Forks hc_side after what `stream` has queued (X and the mixes' producers, and the previous
  // readers of post and comb) and returns it, or nullptr when the split is off for this chunk.
  cudaStream_t fork_hc_side(int n) {
    if (!(n == 1 && par_decode && hc_comb_side)) return nullptr;
    order_after(hc_side.get(), stream.get(), ev_hc_fork);
    hc_forked = true;
    return hc_side.get();
  }
  void join_hc_side() {
    if (!hc_forked) return;
    order_after(stream.get(), hc_side.get(), ev_hc_join);
    hc_forked = false;
  }
  // One token: the router stores the slots by ascending expert id (the combine's order), so the
  // combine reads no ids; DSV4_SORTED_SLOTS=0 keeps the score order (A/B).
  bool sorted_slots_on = true;
  // DSV4_HC_POST_MIX=0: hc_post / the MoE combine and hc_mix_partials apart (A/B).
  bool hc_post_mix_on = true;
  bool attn_parts_ready = false;  // the previous layer's combine wrote this layer's mix partials
  // DSV4_HC_MIXES=0: the chunk's HC mixes by dequantize + SGEMM instead of fwd::hc_mixes (A/B).
  bool hc_mixes_on = true;
  Event ev_fork[kSide], ev_join[kSide];
  DeviceBuffer sgu, sh;  // the shared expert's gate/up and SwiGLU rows of a decode step
  std::vector<int32_t> host_slots;

  Impl(const DeviceModel& m, CudaOptions op) : dm(m), c(m.cfg), opt(op) {
    if (opt.max_ctx <= 0 || opt.max_batch <= 0)
      fail("CudaModel: max_ctx and max_batch must be > 0");
    if (opt.max_ctx > (int64_t)1 << 30) fail("CudaModel: max_ctx {} too large", opt.max_ctx);
    if (c.head_dim > 1024 || c.rope_dim > c.head_dim || c.rope_dim % 2 != 0)
      fail("CudaModel: head_dim {} / rope_dim {} unsupported", c.head_dim, c.rope_dim);
    if (c.hc_mult > 16 || c.n_expert_used > 16) fail("CudaModel: hc_mult or n_expert_used > 16");
    if (opt.max_batch > 8192) fail("CudaModel: max_batch {} > 8192", opt.max_batch);
    B = std::min(opt.max_batch, opt.max_ctx);
    {
      size_t free_b = 0, total_b = 0;
      DSV4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
      const uint64_t need = CudaModel::scratch_bytes(c, opt);
      if (need > free_b)
        fail(
            "CudaModel: scratch for max_batch {} (max_ctx {}) needs {:.2f} GiB, {:.2f} GiB free "
            "on the device: lower the prefill chunk (bench --batch, serve --prefill-chunk) or "
            "leave more memory free (bench --reserve-gib, a smaller --ctx)",
            B, opt.max_ctx, need / 1073741824.0, free_b / 1073741824.0);
    }
    if (prof.on) opt.use_graph = false;  // events need the direct path
    rope_plain = upload_floats(ops::rope_freqs(c.rope_dim, c.rope_base, false, c));
    rope_yarn = upload_floats(ops::rope_freqs(c.rope_dim, c.compress_rope_base, true, c));
    idx_cap = opt.max_ctx / 4;
    idx_wscale =
        (float)(std::pow((double)c.idx_head_dim, -0.5) * std::pow((double)c.idx_n_head, -0.5));
    layers.resize(c.n_layer);
    for (uint32_t l = 0; l < c.n_layer; ++l) {
      LayerDev& d = layers[l];
      d.L = &dm.w.layers[l];
      d.ratio = d.L->ratio;
      d.freqs = d.ratio ? rope_yarn.as<float>() : rope_plain.as<float>();
      d.clamp = c.swiglu_clamp.at(l);
      if (d.ratio) d.comp_ape = to_f32_device(d.L->comp_ape);
      if (d.ratio == 4) d.idx_ape = to_f32_device(d.L->idx_ape);
    }
    max_keys = keys_for(opt.max_ctx);
    const int64_t D = c.n_embd, HD = c.hc_dim(), hd = c.head_dim, H = c.n_head;
    const int64_t ID = c.idx_head_dim, IH = c.idx_n_head, F = c.expert_ff, k = c.n_expert_used;
    tok = scratch<int32_t>(B);
    p0 = scratch<int32_t>(1);
    X = scratch<float>(B * HD);
    mixes = scratch<float>(B * c.hc_mix());
    post = scratch<float>(B * c.hc_mult);
    comb = scratch<float>(B * c.hc_mult * c.hc_mult);
    xin = scratch<float>(B * D);
    qa = scratch<float>(B * c.q_lora_rank);
    qr = scratch<float>(B * c.q_lora_rank);
    q = scratch<float>(B * H * hd);
    kv = scratch<float>(B * hd);
    kvn = scratch<float>(B * hd);
    ckv = scratch<float>(B * 2 * hd);
    csc = scratch<float>(B * 2 * hd);
    pooled = scratch<float>(B * hd);
    ikv = scratch<float>(B * 2 * ID);
    isc = scratch<float>(B * 2 * ID);
    ipooled = scratch<float>(B * ID);
    iq = scratch<float>(B * IH * ID);
    iw = scratch<float>(B * IH);
    scores = scratch<float>(B * idx_cap);
    sel = scratch<int32_t>(B * c.idx_topk);
    o = scratch<float>(B * H * hd);
    att_part = scratch<float>(fwd::attention_part_floats((int)H, (int)hd, max_keys));
    if (idx_cap >= kLargeTopkRows && c.idx_topk > 0)
      topk_ws = DeviceBuffer((size_t)fwd::topk_large_workspace_bytes((int)c.idx_topk));
    u = scratch<float>(B * c.o_groups * c.o_lora_rank);
    f = scratch<float>(B * D);
    rlog = scratch<float>(B * c.n_expert);
    ids = scratch<int32_t>(B * k);
    wts = scratch<float>(B * k);
    gu = scratch<float>(2 * k * B * F);
    h = scratch<float>(k * B * F);
    xrep = scratch<float>(k * B * D);
    contrib = scratch<float>(k * B * D);
    shout = scratch<float>(B * D);
    z = scratch<float>(B * D);
    logits = scratch<float>(B * c.n_vocab);
    amax = scratch<int32_t>(1);
    mix_parts = scratch<float>(fwd::hc_mix_slices(HD) * (2 + c.hc_mult) * c.hc_mult);
    amax_ws = DeviceBuffer((size_t)fwd::argmax_workspace_bytes());
    amax_ws.fill_bytes(0);
    side.resize(kSide);
    if (const char* e = std::getenv("DSV4_CUDA_PAR")) par_decode = std::strcmp(e, "0") != 0;
    if (const char* e = std::getenv("DSV4_HC_POST_MIX")) hc_post_mix_on = std::strcmp(e, "0") != 0;
    if (const char* e = std::getenv("DSV4_HC_COMB_SIDE")) hc_comb_side = std::strcmp(e, "0") != 0;
    if (const char* e = std::getenv("DSV4_HC_MIXES")) hc_mixes_on = std::strcmp(e, "0") != 0;
    if (const char* e = std::getenv("DSV4_SORTED_SLOTS"))
      sorted_slots_on = std::strcmp(e, "0") != 0;
    if (const char* e = std::getenv("DSV4_IDX_GEMM_ROWS")) opt.idx_gemm_rows = std::atoll(e);
    if (const char* e = std::getenv("DSV4_IDX_TF32_MMA")) opt.idx_scores_mma = std::strcmp(e, "0");
    if (const char* e = std::getenv("DSV4_IDX_PROJ_BRANCH")) {
      const int b = std::atoi(e);
      if (b == 0 || b == 2 || b == 4) idx_proj_branch = b;
    }
    if (prof.on) par_decode = false;  // stage events on one stream
    if (const char* e = std::getenv("DSV4_GRAPH_BOUND"); e && !std::strcmp(e, "capacity"))
      opt.graph_min_bound = opt.max_ctx;  // one graph, sized for the capacity
    int64_t shexp_ff = 1;
    for (const LayerDev& d : layers) shexp_ff = std::max(shexp_ff, d.L->gate_shexp.rows());
    sgu = scratch<float>(2 * shexp_ff);
    sh = scratch<float>(shexp_ff);
    if (B > 1) {
      if (const char* e = std::getenv("DSV4_CUDA_MOE_GROUP")) moe_gn = std::atoi(e);
      if (moe_gn < 0 || moe_gn > 8) fail("DSV4_CUDA_MOE_GROUP must be 0..8, got {}", moe_gn);
      const int64_t pairs = k * B, used = std::min<int64_t>(c.n_expert, k * B);
      S = pairs + used;                // gn = 1
      G_rows = pairs + 8 * used;       // >= S * gn for every gn: pairs + (gn - 1) * used
      if (G_rows > 65535) moe_gn = 0;  // the row kernels' grid.y limit: per-pair path
      g_slot = scratch<int32_t>(S);
      g_pos = scratch<int32_t>(k * B);
      g_w = scratch<float>(G_rows);
      g_tok = scratch<int32_t>(G_rows);
      g_x = scratch<float>(G_rows * D);
      g_gu = scratch<float>(2 * G_rows * F);
      g_h = scratch<float>(G_rows * F);
      g_out = scratch<float>(G_rows * D);
    }
    if (opt.prefill_gemm && B >= opt.gemm_min_tokens && B > 1) init_gemm();
    // Poison (NaN) every float scratch buffer: a kernel reading what no step wrote shows up as
    // NaN logits in the tests. Under DSV4_CUDA_REPEAT zeros instead: a knocked-out stage's output
    // is then never written, and NaN there would reach the router, whose ids -1 make the expert
    // products skip their work (a knock-out of kv_norm_rope measured 6.7 us per layer that way).
    const int scratch_fill = prof.repeating() ? 0 : 0xff;
    for (DeviceBuffer* b : {&X,       &mixes, &post, &comb,   &xin,      &qa,  &qr,      &q,  &kv,
                            &kvn,     &ckv,   &csc,  &pooled, &ikv,      &isc, &ipooled, &iq, &iw,
                            &scores,  &o,     &u,    &f,      &rlog,     &wts, &xrep,    &gu, &h,
                            &contrib, &shout, &z,    &logits, &att_part, &sgu, &sh})
      b->fill_bytes(scratch_fill);
    sel.fill_bytes(0);
    ids.fill_bytes(0);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  }

  void init_gemm() {
    const int64_t D = c.n_embd, F = c.expert_ff;
    int64_t dense = 0, dense_cols = 0, f32_elems = 0;
    for (const LayerDev& d : layers) {
      const LayerWeights& L = *d.L;
      for (const TensorRef* t : {&L.q_a, &L.q_b, &L.kv, &L.comp_kv, &L.comp_gate, &L.idx_kv,
                                 &L.idx_gate, &L.idx_q_b, &L.idx_proj, &L.o_b, &L.down_shexp}) {
        if (!t->present()) continue;
        dense = std::max(dense, t->rows() * t->cols());
        dense_cols = std::max(dense_cols, t->cols());
      }
      dense = std::max(dense, L.gate_shexp.rows() * L.gate_shexp.cols() * 2);
      dense = std::max(dense, c.o_groups * c.o_lora_rank * L.o_a.cols());
      f32_elems = std::max({f32_elems, L.hc_attn_fn.rows() * L.hc_attn_fn.cols(),
                            L.hc_ffn_fn.rows() * L.hc_ffn_fn.cols(),
                            L.gate_inp.rows() * L.gate_inp.cols()});
    }
    f32_elems = std::max(f32_elems, dm.w.output_hc_fn.rows() * dm.w.output_hc_fn.cols());
    dense_cols = std::max({dense_cols, (int64_t)c.n_head * c.head_dim, F});
    // Experts per dequantize launch: up to 256 MiB of bf16 gate+up weights, two such batches.
    const int64_t per_expert = 2 * F * D;
    expert_batch =
        (int)std::clamp<int64_t>(((int64_t)256 << 20) / (2 * per_expert), 1, gemm::kMaxExpertBatch);
    const int64_t wq_bytes = std::max({2 * dense, 4 * f32_elems, 4 * expert_batch * per_expert});
    wq = DeviceBuffer((size_t)wq_bytes);
    xq = DeviceBuffer((size_t)(2 * B * dense_cols));
    host_slots.resize((size_t)(c.n_expert_used * B));
    {
      const int64_t cap = gemm::expert_tile_capacity(c.n_expert_used * B, c.n_expert);
      exp_tiles = DeviceBuffer((size_t)(16 * (cap + 1)));
      const char* e = std::getenv("DSV4_EXPERT_GEMM");
      fused_experts = !(e && std::string_view(e) == "cublas");
    }
    sort_tmp = DeviceBuffer(fwd::moe_sort_temp_bytes((int)(c.n_expert_used * B), (int)c.n_expert));
    if (c.idx_n_head > 0)  // up to 256 MiB, at least one token's dots at full capacity
      idx_dots = DeviceBuffer((size_t)std::max<int64_t>(
          4 * c.idx_n_head * idx_cap,
          std::min<int64_t>((int64_t)256 << 20, 4 * B * c.idx_n_head * idx_cap)));
    blas = std::make_unique<gemm::Blas>(stream.get());
    for (int k = 0; k < kSide; ++k)
      side_blas.push_back(std::make_unique<gemm::Blas>(side[k].get()));
  }

  bool use_gemm(int64_t n) const { return blas && n >= opt.gemm_min_tokens; }

  // Most keys one attention query visits while the context holds at most `ctx` tokens: the raw
  // window plus the compressed rows (all of them, or the indexer's top-k on ratio-4 layers).
  int keys_for(int64_t ctx) const {
    int64_t comp_keys = 0;
    for (const LayerDev& d : layers) {
      if (d.ratio == 4)
        comp_keys = std::max<int64_t>(comp_keys, std::min<int64_t>(c.idx_topk, ctx / 4));
      else if (d.ratio)
        comp_keys = std::max<int64_t>(comp_keys, ctx / d.ratio);
    }
    return (int)(comp_keys + c.window);
  }

  // The context bound a decode graph is captured for, given the tokens the session will hold
  // after the step: graph_min_bound times a power of two, at most max_ctx. The geometry that grows
  // with the context (indexer rows scored, the multi-block top-k, attention key ranges) follows
  // the bound, so a session sized for 1M decodes at 64K about as fast as one sized for 64K; a
  // new graph is captured each time the length crosses a bound (~9 per session at most).
  // DSV4_GRAPH_BOUND=capacity: one graph for max_ctx (the old behaviour, for A/B timing).
  int64_t graph_bound(int64_t need) const {
    int64_t b = std::max<int64_t>(1, opt.graph_min_bound);
    while (b < need && b < opt.max_ctx) b *= 2;
    return std::min<int64_t>(b, opt.max_ctx);
  }
  // Set while a decode graph is captured: its context bound (graph_bound).
  int64_t capture_bound = 0;

  // Set around projections that share one input after xq was filled with bf16(x) once
  // (hold_bf16): the attention sublayer's seven products of xin, then q_b and idx_q_b of qr.
  // proj() then skips the conversion (each is ~0.1 ms at 8K tokens). Null everywhere else.
  const float* xq_holds = nullptr;
  void hold_bf16(const float* x, int64_t n, int64_t cols) {
    xq_holds = nullptr;
    if (!use_gemm(n)) return;
    gemm::to_bf16(x, n, cols, cols, xq.as<gemm::bf16>(), stream.get());
    xq_holds = x;
  }

  // y[n][rows] = W x[n][cols]: bf16 tensor-core GEMM for long chunks, else the matvec kernels.
  // `s`: the stream of the matvec path (a decode branch); GEMM chunks run on the stream.
  // `x8`: the matvec path may quantize x to int8 (a Q8_0 projection with opt.dense_x8).
  void proj(const TensorRef& w, const float* x, int64_t n, float* y, cudaStream_t s = nullptr,
            bool x8 = false, const char* tag = nullptr) const {
    if (!use_gemm(n)) return mv(w, x, n, y, s, x8, tag);
    cudaStream_t cs = stream.get();
    const int64_t rows = w.rows(), cols = w.cols();
    gemm::dequant_bf16((uint32_t)w.type, w.data, (int64_t)w.row_bytes(), rows, cols,
                       wq.as<gemm::bf16>(), cs);
    if (x != xq_holds) gemm::to_bf16(x, n, cols, cols, xq.as<gemm::bf16>(), cs);
    blas->bf16_nt(wq.as<gemm::bf16>(), xq.as<gemm::bf16>(), y, rows, cols, n, cols, rows);
  }

  // The same with f32 weights and inputs (products whose inputs need f32 range or precision).
  void proj_f32(const TensorRef& w, const float* x, int64_t n, float* y,
                const char* tag = nullptr) const {
    if (!use_gemm(n)) return mv(w, x, n, y, nullptr, false, tag);
    const int64_t rows = w.rows(), cols = w.cols();
    gemm::dequant_f32((uint32_t)w.type, w.data, (int64_t)w.row_bytes(), rows, cols, wq.as<float>(),
                      stream.get());
    blas->f32_nt(wq.as<float>(), x, y, rows, cols, n, cols, rows);
  }

  // Whether routed_fused handles this layer's expert formats.
  bool fused_ok(const LayerWeights& L) const {
    const int64_t D = c.n_embd, F = c.expert_ff;
    return fused_experts && L.gate_exps.type == L.up_exps.type &&
           L.gate_exps.row_bytes() == L.up_exps.row_bytes() &&
           gemm::expert_gemm_supported((uint32_t)L.gate_exps.type, D) &&
           gemm::expert_gemm_supported((uint32_t)L.down_exps.type, F);
  }

  // The (token, slot) pairs of a long chunk sorted by expert (moe_group_sorted: a stable radix
  // sort; g_slot, g_pos, g_w, g_tok) and their inputs gathered as bf16 rows into g_x. Returns the
  // pair count.
  int group_pairs(int n) {
    cudaStream_t cs = stream.get();
    const int D = (int)c.n_embd, E = (int)c.n_expert, k = (int)c.n_expert_used;
    const int pairs = k * n;
    prof.mark("exp_group", cs);
    fwd::moe_group_sorted(ids.as<int32_t>(), wts.as<float>(), n, k, E, sort_tmp.data(),
                          sort_tmp.size(), g_slot.as<int32_t>(), g_pos.as<int32_t>(),
                          g_w.as<float>(), g_tok.as<int32_t>(), cs);
    gemm::gather_rows_bf16(xin.as<float>(), g_tok.as<int32_t>(), pairs, D, g_x.as<gemm::bf16>(),
                           cs);
    return pairs;
  }

  // Routed experts of a long chunk with two grouped GEMM launches (gemm_experts.h): pairs
  // grouped by expert (moe_group_sorted), the tile list built on the device, gate+up with the
  // SwiGLU fused (bf16 h), then down into g_out rows (g_pos), combined by moe_combine_post. The
  // weights are decoded inside the GEMM: no bf16 weight scratch, no host round trip.
  void routed_fused(const LayerWeights& L, int n, float clamp) {
    cudaStream_t cs = stream.get();
    const int D = (int)c.n_embd, F = (int)c.expert_ff, E = (int)c.n_expert;
    const int pairs = group_pairs(n);
    gemm::bf16* gx = g_x.as<gemm::bf16>();
    gemm::bf16* hq = g_h.as<gemm::bf16>();
    gemm::ExpertTiles t;
    t.capacity = (int)gemm::expert_tile_capacity(pairs, E);
    t.tiles = exp_tiles.as<int4>();
    t.count = reinterpret_cast<int32_t*>(exp_tiles.as<int4>() + t.capacity);
    gemm::expert_tiles(g_slot.as<int32_t>(), pairs, E, t, cs);
    prof.mark("exp_gemm_gate_up", cs);
    gemm::expert_gemm((uint32_t)L.gate_exps.type, L.gate_exps.data, L.up_exps.data,
                      F * (int64_t)L.gate_exps.row_bytes(), (int64_t)L.gate_exps.row_bytes(), F, D,
                      gx, t, g_w.as<float>(), clamp, hq, nullptr, cs);
    prof.mark("exp_gemm_down", cs);
    gemm::expert_gemm((uint32_t)L.down_exps.type, L.down_exps.data, nullptr,
                      D * (int64_t)L.down_exps.row_bytes(), (int64_t)L.down_exps.row_bytes(), D, F,
                      hq, t, nullptr, 0.0f, nullptr, g_out.as<float>(), cs);
  }

  // Routed experts of a long chunk with GEMMs: pairs grouped by expert (moe_group_sorted: a stable
  // radix sort), the expert of each row read back to the host, then per batch of experts one
  // dequantize launch and one GEMM per expert over its rows. Contributions land in g_out rows
  // (g_pos), combined by moe_combine_post.
  void routed_gemm(const LayerWeights& L, int n, float clamp) {
    cudaStream_t cs = stream.get();
    const int D = (int)c.n_embd, F = (int)c.expert_ff, E = (int)c.n_expert;
    const int pairs = group_pairs(n);
    gemm::bf16* gx = g_x.as<gemm::bf16>();
    gemm::bf16* hq = g_h.as<gemm::bf16>();
    DSV4_CUDA_CHECK(cudaMemcpyAsync(host_slots.data(), g_slot.data(), sizeof(int32_t) * pairs,
                                    cudaMemcpyDeviceToHost, cs));
    stream.sync();
    // Runs of equal experts (ascending): (expert, first row, rows).
    struct Run {
      int32_t e;
      int r0, cnt;
    };
    std::vector<Run> runs;
    for (int r = 0; r < pairs; ++r) {
      const int32_t e = host_slots[(size_t)r];
      if (e < 0 || e >= E) fail("cuda forward: expert id {} out of range in a prefill chunk", e);
      if (runs.empty() || runs.back().e != e) runs.push_back({e, r, 0});
      ++runs.back().cnt;
    }
    // Batches of expert_batch experts alternate between the two halves of wq: the main stream
    // dequantizes batch b while the side streams still multiply batch b - 1, and each expert's
    // GEMM runs on side stream i % kSide, so several small GEMMs share the GPU.
    const int64_t half = (int64_t)expert_batch * 2 * F * D;
    auto pass = [&](const TensorRef& w0, const TensorRef& w1, int64_t rows, int64_t cols,
                    const gemm::bf16* xin_rows, float* out_rows) {
      const int64_t stride = rows * (int64_t)w0.row_bytes();
      size_t bi = 0;
      for (size_t b0 = 0; b0 < runs.size(); b0 += (size_t)expert_batch, ++bi) {
        gemm::ExpertList list;
        list.n = (int)std::min<size_t>((size_t)expert_batch, runs.size() - b0);
        for (int i = 0; i < list.n; ++i) list.ids[i] = runs[b0 + (size_t)i].e;
        const int buf = (int)(bi % 2);
        gemm::bf16* w = wq.as<gemm::bf16>() + buf * half;
        if (bi >= 2) DSV4_CUDA_CHECK(cudaStreamWaitEvent(cs, ev_done[buf].get(), 0));
        gemm::dequant_experts_bf16((uint32_t)w0.type, w0.data, w1.present() ? w1.data : nullptr,
                                   stride, (int64_t)w0.row_bytes(), rows, cols, list, w, cs);
        ev_ready[buf].record(cs);
        const int64_t out_rows_per = w1.present() ? 2 * rows : rows;
        for (int k = 0; k < kSide; ++k)
          DSV4_CUDA_CHECK(cudaStreamWaitEvent(side[k].get(), ev_ready[buf].get(), 0));
        for (int i = 0; i < list.n; ++i) {
          const Run& r = runs[b0 + (size_t)i];
          side_blas[i % kSide]->bf16_nt(w + (int64_t)i * out_rows_per * cols,
                                        xin_rows + (int64_t)r.r0 * cols,
                                        out_rows + (int64_t)r.r0 * out_rows_per, out_rows_per, cols,
                                        r.cnt, cols, out_rows_per);
        }
        for (int k = 1; k < kSide; ++k) {
          ev_side[k].record(side[k].get());
          DSV4_CUDA_CHECK(cudaStreamWaitEvent(side[0].get(), ev_side[k].get(), 0));
        }
        ev_done[buf].record(side[0].get());
      }
      for (int k = 0; k < kSide; ++k) {  // join
        ev_side[k].record(side[k].get());
        DSV4_CUDA_CHECK(cudaStreamWaitEvent(cs, ev_side[k].get(), 0));
      }
    };
    prof.mark("exp_gemm_gate_up", cs);
    pass(L.gate_exps, L.up_exps, F, D, gx, g_gu.as<float>());
    prof.mark("swiglu", cs);
    gemm::swiglu_bf16(g_gu.as<float>(), g_w.as<float>(), pairs, F, clamp, hq, cs);
    prof.mark("exp_gemm_down", cs);
    pass(L.down_exps, TensorRef{}, D, F, hq, g_out.as<float>());
  }

  // Shared expert of a long chunk: gate and up dequantized into one [2F][D] matrix, one GEMM,
  // SwiGLU to bf16, the down GEMM into shout.
  void shared_gemm(const LayerWeights& L, int n, float clamp) {
    cudaStream_t cs = stream.get();
    const int64_t D = c.n_embd, F = L.gate_shexp.rows();
    gemm::bf16* w = wq.as<gemm::bf16>();
    gemm::dequant_bf16((uint32_t)L.gate_shexp.type, L.gate_shexp.data,
                       (int64_t)L.gate_shexp.row_bytes(), F, D, w, cs);
    gemm::dequant_bf16((uint32_t)L.up_shexp.type, L.up_shexp.data, (int64_t)L.up_shexp.row_bytes(),
                       F, D, w + F * D, cs);
    gemm::to_bf16(xin.as<float>(), n, D, D, xq.as<gemm::bf16>(), cs);
    blas->bf16_nt(w, xq.as<gemm::bf16>(), gu.as<float>(), 2 * F, D, n, D, 2 * F);
    gemm::swiglu_bf16(gu.as<float>(), nullptr, n, (int)F, clamp, xq.as<gemm::bf16>(), cs);
    gemm::dequant_bf16((uint32_t)L.down_shexp.type, L.down_shexp.data,
                       (int64_t)L.down_shexp.row_bytes(), D, F, w, cs);
    blas->bf16_nt(w, xq.as<gemm::bf16>(), shout.as<float>(), D, F, n, F, D);
  }

  // y[n][rows] = W x[n][cols], in launches of 8 vectors per slot (on `s`, default the stream).
  // tag: MatvecOp::tag (per-product planner knobs).
  void mv(const TensorRef& w, const float* x, int64_t n, float* y, cudaStream_t s = nullptr,
          bool x8 = false, const char* tag = nullptr) const {
    const int64_t rows = w.rows(), cols = w.cols();
    int64_t done = 0;
    while (done < n) {
      MatvecOp op;
      op.type = w.type;
      op.x8 = x8;
      op.w[0] = w.data;
      op.rows = rows;
      op.cols = cols;
      op.x = x + done * cols;
      op.y = y + done * rows;
      const int64_t groups = (n - done) / 8;
      if (groups > 0) {
        op.n_slots = (int)groups;
        op.nb = 8;
        op.x_slot_stride = 8 * cols;
        done += groups * 8;
      } else {
        op.nb = (int)(n - done);
        done = n;
      }
      op.side = s != nullptr && s != stream.get();
      op.tag = tag;
      matvec_run(op, s ? s : stream.get());
    }
  }

  // Routed experts of a multi-token chunk grouped by expert: each group of gn rows (one expert's
  // (slot, token) pairs) is one gn-vector matvec slot, so an expert's weights are read once per gn
  // pairs, and consecutive slots use the same expert (L2 reuse). Contributions land in g_out rows
  // (g_pos). Measured on an H200 (q2 synthetic, 2K prefill): gn 0 (per pair) 240 tok/s, gn 1 248,
  // gn 2 244, gn 4 219, gn 8 ~70: the matvec kernels stage nb * cols floats of x per 32-row CTA,
  // so larger groups lose occupancy faster than they save weight bytes.
  void routed_grouped(const LayerWeights& L, int n, float clamp) {
    cudaStream_t cs = stream.get();
    const int D = (int)c.n_embd, F = (int)c.expert_ff, E = (int)c.n_expert,
              k = (int)c.n_expert_used;
    const int gn = moe_gn;
    const int64_t Sn = (int64_t)k * n / gn + std::min<int64_t>(E, (int64_t)k * n);
    const int rows = (int)(Sn * gn);
    prof.mark("exp_group", cs);
    fwd::moe_group(ids.as<int32_t>(), wts.as<float>(), n, k, E, (int)Sn, gn, g_slot.as<int32_t>(),
                   g_pos.as<int32_t>(), g_w.as<float>(), g_tok.as<int32_t>(), cs);
    fwd::moe_gather(xin.as<float>(), g_slot.as<int32_t>(), g_tok.as<int32_t>(), gn, rows, D,
                    g_x.as<float>(), cs);
    prof.mark("exp_gate_up", cs);
    MatvecOp op;
    op.type = L.gate_exps.type;
    op.x8 = opt.decode_x8;
    op.w[0] = L.gate_exps.data;
    op.w[1] = L.up_exps.data;
    op.n_mats = 2;
    op.rows = F;
    op.cols = D;
    op.expert_stride_bytes = (int64_t)F * (int64_t)L.gate_exps.row_bytes();
    op.n_expert = E;
    op.ids = g_slot.as<int32_t>();
    op.n_slots = (int)Sn;
    op.nb = gn;
    op.x = g_x.as<float>();
    op.x_slot_stride = gn * (int64_t)D;
    op.x_vec_stride = D;
    op.y = g_gu.as<float>();
    op.y_mat_stride = (int64_t)rows * F;
    op.y_slot_stride = gn * (int64_t)F;
    op.y_vec_stride = F;
    matvec_run(op, cs);
    prof.mark("swiglu", cs);
    fwd::swiglu_rows(g_gu.as<float>(), g_gu.as<float>() + (int64_t)rows * F, g_w.as<float>(),
                     g_slot.as<int32_t>(), gn, rows, F, clamp, g_h.as<float>(), cs);
    prof.mark("exp_down", cs);
    MatvecOp dn;
    dn.type = L.down_exps.type;
    dn.x8 = opt.decode_x8;
    dn.w[0] = L.down_exps.data;
    dn.rows = D;
    dn.cols = F;
    dn.expert_stride_bytes = (int64_t)D * (int64_t)L.down_exps.row_bytes();
    dn.n_expert = E;
    dn.ids = g_slot.as<int32_t>();
    dn.n_slots = (int)Sn;
    dn.nb = gn;
    dn.x = g_h.as<float>();
    dn.x_slot_stride = gn * (int64_t)F;
    dn.x_vec_stride = F;
    dn.y = g_out.as<float>();
    dn.y_slot_stride = gn * (int64_t)D;
    dn.y_vec_stride = D;
    matvec_run(dn, cs);
  }

  // One token with an F16 fn of a supported shape (hc = 4 among others): the mixes as
  // column-slice partial sums.
  bool mix_parts_path(const TensorRef& fn, int n) const {
    return n == 1 && fn.type == GgmlType::F16 && reinterpret_cast<uintptr_t>(fn.data) % 16 == 0 &&
           fwd::hc_mix_partials_supported(fn.rows(), fn.cols(), (int)c.hc_mult, (int)c.n_embd);
  }
  // HC mixes of X (fn · X) and HCPre + RMSNorm into post, comb and xin. One token with an F16
  // fn: partial mixes over column slices, summed inside hc_pre (the mixes matvec had one CTA per
  // row: 24 of 132 SMs busy for ~7 us, twice per layer on the decode critical path).
  // parts_ready: hc_post_mix / moe_combine_post_mix already wrote the partial mixes
  // (mix_parts_path(fn, n) holds).
  // One token: post and comb come from a launch on hc_side (fork_hc_side); the caller joins it
  // (join_hc_side) before hc_post / the MoE combine.
  void hc_mix_pre(const TensorRef& fn, const TensorRef& base, const TensorRef& scale,
                  const TensorRef& norm, int n, bool parts_ready = false) {
    cudaStream_t cs = stream.get();
    const int D = (int)c.n_embd, hc = (int)c.hc_mult;
    if (mix_parts_path(fn, n)) {
      if (!parts_ready)
        fwd::hc_mix_partials(fn.data, X.as<float>(), (int)fn.rows(), (int)fn.cols(),
                             mix_parts.as<float>(), cs);
      prof.mark("hc_pre", cs);
      fwd::hc_pre_parts(X.as<float>(), mix_parts.as<float>(), fwd::hc_mix_slices(fn.cols()),
                        fptr(base), fptr(scale), fptr(norm), D, hc, (int)c.hc_sinkhorn_iters,
                        c.rms_eps, c.hc_eps, post.as<float>(), comb.as<float>(), xin.as<float>(),
                        cs, fork_hc_side(n));
      return;
    }
    if (hc_mixes_on && use_gemm(n) && fn.type == GgmlType::F16 &&
        fwd::hc_mixes_supported(fn.rows(), fn.cols(), fn.data))
      fwd::hc_mixes(fn.data, X.as<float>(), n, (int)fn.rows(), (int)fn.cols(), mixes.as<float>(),
                    cs);
    else
      proj_f32(fn, X.as<float>(), n, mixes.as<float>());
    prof.mark("hc_pre", cs);
    fwd::hc_pre(X.as<float>(), mixes.as<float>(), fptr(base), fptr(scale), fptr(norm), n, D, hc,
                (int)c.hc_sinkhorn_iters, c.rms_eps, c.hc_eps, post.as<float>(), comb.as<float>(),
                xin.as<float>(), cs, hc == 4 ? fork_hc_side(n) : nullptr);
  }

  // y0 = W0 x and y1 = W1 x for one token on `s`: one launch when the two matrices share type
  // and geometry (the compressors' kv and gate), else two.
  void mv_pair(const TensorRef& w0, const TensorRef& w1, const float* x, float* y0, float* y1,
               cudaStream_t s, bool x8 = false, const char* tag = nullptr) const {
    if (w0.type != w1.type || w0.rows() != w1.rows() || w0.cols() != w1.cols()) {
      mv(w0, x, 1, y0, s, x8, tag);
      mv(w1, x, 1, y1, s, x8, tag);
      return;
    }
    MatvecOp op;
    op.type = w0.type;
    op.x8 = x8;
    op.w[0] = w0.data;
    op.w[1] = w1.data;
    op.n_mats = 2;
    op.rows = w0.rows();
    op.cols = w0.cols();
    op.x = x;
    op.y = y0;
    // Matrix 1's outputs go to y1: a distance in floats between two scratch buffers (both
    // 4-byte aligned device allocations, so the byte distance is a multiple of 4).
    op.y_mat_stride = (int64_t)(reinterpret_cast<uintptr_t>(y1) - reinterpret_cast<uintptr_t>(y0)) /
                      (int64_t)sizeof(float);
    op.side = s != stream.get();
    op.tag = tag;
    matvec_run(op, s);
  }

  // Fork/join of the decode branches: fork(k) makes side stream k continue after what `stream`
  // has queued so far; join_all() makes `stream` wait for every forked side stream.
  struct Branches {
    const Impl& m;
    bool on;
    bool forked[kSide] = {};
    cudaStream_t at(int k) const { return on ? m.side[k].get() : m.stream.get(); }
    void fork(int k) {
      if (!on) return;
      order_after(m.side[k].get(), m.stream.get(), m.ev_fork[k]);
      forked[k] = true;
    }
    void join(int k) {
      if (!on || !forked[k]) return;
      order_after(m.stream.get(), m.side[k].get(), m.ev_join[k]);
      forked[k] = false;
    }
    void join_all() {
      for (int k = 0; k < kSide; ++k) join(k);
    }
  };

  // The shared expert of one token on `s`, in its own scratch (sgu, sh) so that it can run
  // beside the routed experts: gate and up in one launch, SwiGLU, down into shout.
  void shared_decode(const LayerWeights& L, float clamp, cudaStream_t s) {
    const int64_t F = L.gate_shexp.rows();
    mv_pair(L.gate_shexp, L.up_shexp, xin.as<float>(), sgu.as<float>(), sgu.as<float>() + F, s,
            opt.dense_x8, "shexp_gate_up");
    fwd::swiglu(sgu.as<float>(), sgu.as<float>() + F, nullptr, 1, (int)c.n_expert_used, 1, (int)F,
                clamp, sh.as<float>(), s);
    mv(L.down_shexp, sh.as<float>(), 1, shout.as<float>(), s, opt.dense_x8, "shexp_down");
  }

  void layer(SessionImpl& s, uint32_t li, int n, bool capture, int64_t host_p0) {
    const LayerDev& d = layers[li];
    const LayerWeights& L = *d.L;
    SessionImpl::Layer& st = s.layers[li];
    cudaStream_t cs = stream.get();
    const int D = (int)c.n_embd, hc = (int)c.hc_mult, hd = (int)c.head_dim, rd = (int)c.rope_dim;
    const int H = (int)c.n_head, QL = (int)c.q_lora_rank, W = (int)c.window;
    const int ID = (int)c.idx_head_dim, IH = (int)c.idx_n_head, topk = (int)c.idx_topk;
    const int F = (int)c.expert_ff, E = (int)c.n_expert, k = (int)c.n_expert_used;
    const float eps = c.rms_eps;
    const int32_t* P = p0.as<int32_t>();
    auto M = [&](const char* name) { prof.mark(name, cs); };

    // Attention sublayer.
    M("attn_hc_fn");
    hc_mix_pre(L.hc_attn_fn, L.hc_attn_base, L.hc_attn_scale, L.attn_norm, n, attn_parts_ready);
    attn_parts_ready = false;
    // One token: the kv row (branch 0), the compressor (1) and the indexer's compressor and head
    // weights (2) need only xin, and q_b (3) only qr: they run beside the indexer's query path.
    Branches br{*this, n == 1 && par_decode};
    const bool one = n == 1;
    br.fork(0);
    M("kv");
    hold_bf16(xin.as<float>(), n, D);  // every product up to q_a reads xin
    proj(L.kv, xin.as<float>(), n, kv.as<float>(), br.at(0), opt.dense_x8, "kv");
    M("kv_norm_rope");
    fwd::kv_norm_rope(kv.as<float>(), fptr(L.kv_norm), n, hd, rd, d.freqs, P, eps, opt.qat,
                      kvn.as<float>(), one ? st.raw.as<float>() : nullptr, W, br.at(0));
    if (br.on) prof.probe("a_br0_kv_end", br.at(0));
    if (d.ratio) {
      br.fork(1);
      M("comp_kv_gate");
      if (one) {
        mv_pair(L.comp_kv, L.comp_gate, xin.as<float>(), ckv.as<float>(), csc.as<float>(), br.at(1),
                false, "comp_kv_gate");
      } else {
        proj(L.comp_kv, xin.as<float>(), n, ckv.as<float>());
        proj(L.comp_gate, xin.as<float>(), n, csc.as<float>());
      }
      M("compressor");
      fwd::compressor(ckv.as<float>(), csc.as<float>(), d.comp_ape.as<float>(), n, (int)d.ratio, hd,
                      P, st.ckv.as<float>(), st.csc.as<float>(), pooled.as<float>(), br.at(1));
      M("compressor_emit");
      fwd::compressor_emit(pooled.as<float>(), fptr(L.comp_norm), n, (int)d.ratio, hd, rd, d.freqs,
                           P, eps, 0, opt.qat, st.comp.as<float>(), br.at(1));
      if (br.on) prof.probe(d.ratio == 4 ? "a_br1_comp_end_r4" : "a_br1_comp_end_r128", br.at(1));
    }
    const int64_t max_visible = (host_p0 + n) / 4;
    // Captured: sized for the graph's bound (every length up to it replays the same launches).
    const int64_t cap_rows = capture_bound / 4;
    const bool idx_query = d.ratio == 4 && (capture ? cap_rows > topk : max_visible > topk);
    if (d.ratio == 4) {
      br.fork(2);
      M("idx_kv_gate");
      if (one) {
        mv_pair(L.idx_kv, L.idx_gate, xin.as<float>(), ikv.as<float>(), isc.as<float>(), br.at(2),
                false, "idx_kv_gate");
      } else {
        proj(L.idx_kv, xin.as<float>(), n, ikv.as<float>());
        proj(L.idx_gate, xin.as<float>(), n, isc.as<float>());
      }
      M("idx_compressor");
      fwd::compressor(ikv.as<float>(), isc.as<float>(), d.idx_ape.as<float>(), n, 4, ID, P,
                      st.ikv.as<float>(), st.isc.as<float>(), ipooled.as<float>(), br.at(2));
      fwd::compressor_emit(ipooled.as<float>(), fptr(L.idx_norm), n, 4, ID, rd, d.freqs, P, eps, 1,
                           opt.qat, st.idx.as<float>(), br.at(2));
      if (br.on) prof.probe("a_br2_idxcomp_end", br.at(2));
      if (idx_query) {
        if (idx_proj_branch == 4) br.fork(4);
        M("idx_proj");
        proj(L.idx_proj, xin.as<float>(), n, iw.as<float>(), br.at(idx_proj_branch), false,
             "idx_proj");
        if (br.on) prof.probe("a_br4_idxproj_end", br.at(idx_proj_branch));
      }
    }
    M("q_a");
    proj(L.q_a, xin.as<float>(), n, qa.as<float>(), nullptr, opt.dense_x8, "q_a");
    M("q_a_norm");
    fwd::rms_rows(qa.as<float>(), fptr(L.q_a_norm), n, QL, eps, qr.as<float>(), cs);
    br.fork(3);
    M("q_b");
    hold_bf16(qr.as<float>(), n, QL);  // q_b and idx_q_b read qr
    proj(L.q_b, qr.as<float>(), n, q.as<float>(), br.at(3), opt.dense_x8,
         idx_query ? "q_b_r4" : "q_b");
    M("q_norm_rope");
    fwd::q_norm_rope(q.as<float>(), n, H, hd, rd, d.freqs, P, eps, br.at(3));
    if (br.on) prof.probe(d.ratio == 4 ? "a_br3_qb_end_r4" : "a_br3_qb_end", br.at(3));
    if (idx_query) {
      M("idx_q_proj");
      proj(L.idx_q_b, qr.as<float>(), n, iq.as<float>(), nullptr, false, "idx_q_b");
      M("idx_q");
      fwd::idx_q(iq.as<float>(), n, IH, ID, rd, d.freqs, P, opt.qat, cs);
      br.join(2);                // the indexer rows
      br.join(idx_proj_branch);  // ... and head weights
      const int grid_rows = (int)(capture ? cap_rows : max_visible);
      M("idx_scores");
      // A decode token over many rows: TF32 like a chunk's GEMM + reduce (the f32 tiled kernel's
      // FMAs took ~18 us per ratio-4 layer at 64K context), in one tensor-core kernel where the
      // shape allows (idx_scores_tf32), else by the GEMM path below.
      const bool many_rows = n == 1 && blas && opt.idx_gemm_rows > 0 &&
                             grid_rows >= opt.idx_gemm_rows &&
                             idx_dots.size() >= (size_t)4 * IH * grid_rows;
      if (many_rows && opt.idx_scores_mma &&
          fwd::idx_scores_tf32_ok(iq.as<float>(), st.idx.as<float>(), IH, ID)) {
        fwd::idx_scores_tf32(iq.as<float>(), iw.as<float>(), st.idx.as<float>(), IH, ID, topk,
                             idx_wscale, P, grid_rows, scores.as<float>(), cs);
      } else if (use_gemm(n) || many_rows) {
        // GEMM of T tokens' queries with the visible rows at a time (TF32 tensor cores: the
        // official scores are BF16 products; f32 SGEMM took 8 ms per layer at 8K), then the
        // ReLU-weighted sum over heads.
        const int64_t per_tok = (int64_t)IH * grid_rows;
        const int64_t T = std::max<int64_t>(1, (int64_t)(idx_dots.size() / 4) / per_tok);
        for (int64_t t0 = 0; t0 < n; t0 += T) {
          const int64_t nt = std::min<int64_t>(T, n - t0);
          blas->tf32_nt(st.idx.as<float>(), iq.as<float>() + t0 * IH * ID, idx_dots.as<float>(),
                        grid_rows, ID, nt * IH, ID, grid_rows);
          fwd::idx_reduce(idx_dots.as<float>(), iw.as<float>() + t0 * IH, (int)nt, IH, grid_rows,
                          idx_wscale, P, (int)t0, topk, (int)idx_cap,
                          scores.as<float>() + t0 * idx_cap, cs);
        }
      } else {
        fwd::idx_scores(iq.as<float>(), iw.as<float>(), st.idx.as<float>(), n, IH, ID, topk,
                        idx_wscale, P, grid_rows, (int)idx_cap, scores.as<float>(), cs);
      }
      M("idx_topk");
      if (n == 1 && !topk_ws.empty() && grid_rows >= kLargeTopkRows)
        fwd::idx_topk_large(scores.as<float>(), topk, P, grid_rows, topk_ws.data(),
                            sel.as<int32_t>(), cs);
      else
        fwd::idx_topk(scores.as<float>(), n, (int)idx_cap, topk, P, sel.as<int32_t>(), cs,
                      grid_rows);
    }
    xq_holds = nullptr;
    if (br.on) prof.probe(d.ratio == 4 ? "a_main_end_r4" : "a_main_end", cs);
    br.join_all();
    if (br.on) prof.probe(d.ratio == 4 ? "a_joined_r4" : "a_joined", cs);
    M("attention");
    fwd::attention(q.as<float>(), kvn.as<float>(), st.raw.as<float>(),
                   d.ratio ? st.comp.as<float>() : nullptr, sel.as<int32_t>(), fptr(L.sinks), n, H,
                   hd, rd, W, (int)d.ratio, topk, d.freqs, P,
                   capture ? keys_for(capture_bound) : max_keys, o.as<float>(),
                   att_part.as<float>(), n == 1 ? opt.decode_attention_mma : use_gemm(n), cs);
    if (n > 1) {  // one token: kv_norm_rope stored its row
      M("ring_store");
      fwd::ring_store(kvn.as<float>(), n, hd, W, P, st.raw.as<float>(), cs);
    }
    // Grouped output projection (§5.7).
    M("o_a");
    const int64_t G = c.o_groups, OL = c.o_lora_rank, gs = (int64_t)H * hd / G;
    if (use_gemm(n)) {
      // The G group matrices are consecutive rows of one tensor: one dequantize, one batched GEMM.
      gemm::dequant_bf16((uint32_t)L.o_a.type, L.o_a.data, (int64_t)L.o_a.row_bytes(), G * OL, gs,
                         wq.as<gemm::bf16>(), cs);
      gemm::to_bf16(o.as<float>(), n, (int64_t)H * hd, (int64_t)H * hd, xq.as<gemm::bf16>(), cs);
      blas->bf16_nt(wq.as<gemm::bf16>(), xq.as<gemm::bf16>(), u.as<float>(), OL, gs, n,
                    (int64_t)H * hd, G * OL, (int)G, OL * gs, gs, OL);
    }
    for (int t0 = 0; t0 < n && !use_gemm(n); t0 += 8) {
      MatvecOp op;
      op.type = L.o_a.type;
      op.x8 = opt.dense_x8;
      op.w[0] = L.o_a.data;
      op.rows = OL;
      op.cols = gs;
      op.expert_stride_bytes = OL * (int64_t)L.o_a.row_bytes();
      op.n_slots = (int)G;
      op.x = o.as<float>() + (int64_t)t0 * H * hd;
      op.x_slot_stride = gs;
      op.x_vec_stride = (int64_t)H * hd;
      op.nb = std::min(8, n - t0);
      op.y = u.as<float>() + (int64_t)t0 * G * OL;
      op.y_slot_stride = OL;
      op.y_vec_stride = G * OL;
      op.tag = "o_a";
      matvec_run(op, cs);
    }
    M("o_b");
    proj(L.o_b, u.as<float>(), n, f.as<float>(), nullptr, opt.dense_x8, "o_b");
    // One token: the MoE sublayer's HC mix partials come out of hc_post (one launch fewer on the
    // decode chain; DSV4_HC_POST_MIX=0 keeps them apart).
    const bool post_mix = hc_post_mix_on && mix_parts_path(L.hc_ffn_fn, n);
    join_hc_side();  // post and comb
    M("hc_post");
    if (post_mix)
      fwd::hc_post_mix(f.as<float>(), post.as<float>(), comb.as<float>(), D, X.as<float>(),
                       L.hc_ffn_fn.data, (int)L.hc_ffn_fn.rows(), mix_parts.as<float>(), cs);
    else
      fwd::hc_post(f.as<float>(), post.as<float>(), comb.as<float>(), n, D, hc, X.as<float>(), cs);

    // MoE sublayer.
    M("ffn_hc_fn");
    hc_mix_pre(L.hc_ffn_fn, L.hc_ffn_base, L.hc_ffn_scale, L.ffn_norm, n, post_mix);
    // One token: the shared expert (branch 0, its own scratch) runs beside the router and the
    // routed experts.
    Branches fb{*this, n == 1 && par_decode};
    if (fb.on) {
      fb.fork(0);
      M("shexp");
      shared_decode(L, d.clamp, fb.at(0));
      prof.probe("f_shexp_end", fb.at(0));
    }
    M("gate_inp");
    proj_f32(L.gate_inp, xin.as<float>(), n, rlog.as<float>(), "gate_inp");
    M("router");
    // One token: the slots stored in the combine's order (ascending id), so that the combine
    // needs no round trip for the ids (DSV4_SORTED_SLOTS=0: by score, A/B).
    const bool sorted_slots = n == 1 && sorted_slots_on;
    fwd::router(rlog.as<float>(), fptr(L.exp_probs_b),
                L.tid2eid.present() ? reinterpret_cast<const int32_t*>(L.tid2eid.data) : nullptr,
                tok.as<int32_t>(), n, E, k, c.expert_weights_scale, ids.as<int32_t>(),
                wts.as<float>(), cs, sorted_slots);
    const bool grouped_out = use_gemm(n) || (n > 1 && S > 0 && moe_gn > 0);
    if (use_gemm(n)) {
      // The dequantize + cuBLAS path: formats or widths the grouped kernel does not take, or
      // DSV4_EXPERT_GEMM=cublas (H200 q2, 8K chunk: 19.0 ms per layer against 13.7 fused).
      if (fused_ok(L))
        routed_fused(L, n, d.clamp);
      else
        routed_gemm(L, n, d.clamp);
    } else if (grouped_out) {
      routed_grouped(L, n, d.clamp);
    } else {
      // Routed experts: all k * n (slot, token) pairs in one launch each for gate+up and down,
      // slot-major (s = j * n + i, the router's id layout), reading replicated inputs.
      // One token: every slot reads xin itself (slot stride 0); more: slot s = j * n + i reads
      // its token's row from k copies of xin.
      if (n > 1) {
        M("replicate");
        fwd::replicate(xin.as<float>(), (int64_t)n * D, k, xrep.as<float>(), cs);
      }
      {
        MatvecOp op;
        op.type = L.gate_exps.type;
        op.x8 = opt.decode_x8;
        op.w[0] = L.gate_exps.data;
        op.w[1] = L.up_exps.data;
        op.n_mats = 2;
        op.rows = F;
        op.cols = D;
        op.expert_stride_bytes = (int64_t)F * (int64_t)L.gate_exps.row_bytes();
        op.n_expert = E;
        op.ids = ids.as<int32_t>();
        op.n_slots = k * n;
        op.x = n > 1 ? xrep.as<float>() : xin.as<float>();
        op.x_slot_stride = n > 1 ? D : 0;
        op.y = gu.as<float>();
        M("exp_gate_up");
        op.tag = "exp_gate_up";
        matvec_run(op, cs);
        M("swiglu");
        fwd::swiglu(gu.as<float>(), gu.as<float>() + (int64_t)k * n * F, wts.as<float>(), n, k,
                    k * n, F, d.clamp, h.as<float>(), cs);
        MatvecOp dn;
        dn.type = L.down_exps.type;
        dn.x8 = opt.decode_x8;
        dn.w[0] = L.down_exps.data;
        dn.rows = D;
        dn.cols = F;
        dn.expert_stride_bytes = (int64_t)D * (int64_t)L.down_exps.row_bytes();
        dn.n_expert = E;
        dn.ids = ids.as<int32_t>();
        dn.n_slots = k * n;
        dn.x = h.as<float>();
        dn.x_slot_stride = F;
        dn.y = contrib.as<float>();
        M("exp_down");
        dn.tag = "exp_down";
        matvec_run(dn, cs);
      }
    }
    M("shexp_gate_up");
    if (fb.on) {
      prof.probe("f_routed_end", cs);
      fb.join_all();
    } else if (use_gemm(n)) {
      shared_gemm(L, n, d.clamp);
    } else if (n <= 8 && L.gate_shexp.type == L.up_shexp.type &&
               L.gate_shexp.rows() == L.up_shexp.rows() &&
               L.gate_shexp.cols() == L.up_shexp.cols()) {
      MatvecOp op;  // gate and up in one launch
      op.type = L.gate_shexp.type;
      op.x8 = opt.dense_x8;
      op.w[0] = L.gate_shexp.data;
      op.w[1] = L.up_shexp.data;
      op.n_mats = 2;
      op.rows = L.gate_shexp.rows();
      op.cols = L.gate_shexp.cols();
      op.x = xin.as<float>();
      op.nb = n;
      op.y = gu.as<float>();
      op.y_mat_stride = (int64_t)n * F;
      op.y_vec_stride = F;
      matvec_run(op, cs);
    } else {
      mv(L.gate_shexp, xin.as<float>(), n, gu.as<float>(), nullptr, opt.dense_x8);
      mv(L.up_shexp, xin.as<float>(), n, gu.as<float>() + (int64_t)n * F, nullptr, opt.dense_x8);
    }
    if (!use_gemm(n) && !fb.on) {
      M("swiglu");
      fwd::swiglu(gu.as<float>(), gu.as<float>() + (int64_t)n * F, nullptr, n, k, n, F, d.clamp,
                  h.as<float>(), cs);
      M("shexp_down");
      mv(L.down_shexp, h.as<float>(), n, shout.as<float>(), nullptr, opt.dense_x8);
    }
    // One token: the next layer's attention HC mix partials come out of the combine.
    const TensorRef* next_fn = li + 1 < c.n_layer ? &layers[li + 1].L->hc_attn_fn : nullptr;
    const bool next_mix = hc_post_mix_on && !grouped_out && next_fn && mix_parts_path(*next_fn, n);
    join_hc_side();  // post and comb
    M("moe_combine_post");
    if (next_mix)
      fwd::moe_combine_post_mix(contrib.as<float>(), shout.as<float>(),
                                sorted_slots ? nullptr : ids.as<int32_t>(), k, D, post.as<float>(),
                                comb.as<float>(), X.as<float>(), next_fn->data,
                                (int)next_fn->rows(), mix_parts.as<float>(), cs);
    else
      fwd::moe_combine_post(grouped_out ? g_out.as<float>() : contrib.as<float>(),
                            shout.as<float>(), ids.as<int32_t>(),
                            grouped_out ? g_pos.as<int32_t>() : nullptr, n, k, D, post.as<float>(),
                            comb.as<float>(), hc, X.as<float>(), cs);
    attn_parts_ready = next_mix;
  }

  // Everything of one chunk after the inputs are in `tok` / `p0`: embedding, layers, head for
  // rows [first, n) (none when first >= n), and the argmax of the first head row.
  void run_chunk(SessionImpl& s, int n, int first, bool capture, int64_t host_p0) {
    cudaStream_t cs = stream.get();
    const TensorRef& emb = dm.w.tok_embd;
    prof.begin_chunk(n);
    prof.mark("embed", cs);
    fwd::embed(emb.data, (uint32_t)emb.type, (int64_t)emb.row_bytes(), tok.as<int32_t>(), n,
               (int)c.n_embd, (int)c.hc_mult, X.as<float>(), cs);
    attn_parts_ready = false;
    for (uint32_t l = 0; l < c.n_layer; ++l) layer(s, l, n, capture, host_p0);
    if (first >= n) {
      prof.end_chunk(n, cs);
      return;
    }
    prof.mark("head_hc", cs);
    const int rows = n - first;
    const int64_t HD = c.hc_dim();
    const float* Xr = X.as<float>() + (int64_t)first * HD;
    proj_f32(dm.w.output_hc_fn, Xr, rows, mixes.as<float>());
    fwd::hc_head(Xr, mixes.as<float>(), fptr(dm.w.output_hc_base), fptr(dm.w.output_hc_scale),
                 fptr(dm.w.output_norm), rows, (int)c.n_embd, (int)c.hc_mult, c.rms_eps, c.hc_eps,
                 z.as<float>(), cs);
    prof.mark("output", cs);
    mv(dm.w.output, z.as<float>(), rows, logits.as<float>());
    prof.mark("argmax", cs);
    fwd::argmax(logits.as<float>(), (int)c.n_vocab, amax.as<int32_t>(), amax_ws.data(), cs);
    prof.end_chunk(n, cs);
  }

  void set_inputs(const int32_t* tokens, int n, int64_t pos) {
    const int32_t p = (int32_t)pos;
    DSV4_CUDA_CHECK(cudaMemcpyAsync(tok.data(), tokens, sizeof(int32_t) * (size_t)n,
                                    cudaMemcpyHostToDevice, stream.get()));
    DSV4_CUDA_CHECK(
        cudaMemcpyAsync(p0.data(), &p, sizeof(int32_t), cudaMemcpyHostToDevice, stream.get()));
    // The source values live on this stack frame: make sure they were read.
    stream.sync();
  }

  // One token through the captured graph (or directly): logits of it in `logits`, argmax in amax.
  void step1(SessionImpl& s, int32_t token) {
    set_inputs(&token, 1, s.n_past_);
    if (!opt.use_graph) {
      run_chunk(s, 1, 0, false, s.n_past_);
      return;
    }
    const int64_t bound = graph_bound(s.n_past_ + 1);
    SessionImpl::DecodeGraph* g = nullptr;
    for (SessionImpl::DecodeGraph& x : s.graphs)
      if (x.bound == bound) g = &x;
    if (!g) {
      SessionImpl::DecodeGraph ng;
      ng.bound = bound;
      capture_bound = bound;
      DSV4_CUDA_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
      try {
        run_chunk(s, 1, 0, true, s.n_past_);
      } catch (...) {
        cudaGraph_t eg = nullptr;
        cudaStreamEndCapture(stream.get(), &eg);
        if (eg) cudaGraphDestroy(eg);
        throw;
      }
      DSV4_CUDA_CHECK(cudaStreamEndCapture(stream.get(), &ng.graph));
      const cudaError_t e = cudaGraphInstantiate(&ng.exec, ng.graph, 0);
      if (e != cudaSuccess) {
        cudaGraphDestroy(ng.graph);
        DSV4_CUDA_CHECK(e);
      }
      s.graphs.push_back(ng);
      g = &s.graphs.back();
    }
    DSV4_CUDA_CHECK(cudaGraphLaunch(g->exec, stream.get()));
  }

  void check_tokens(const SessionImpl& s, const int32_t* tokens, int64_t n) const {
    if (n <= 0) fail("cuda forward: empty token batch");
    if (s.n_past_ + n > opt.max_ctx)
      fail("cuda forward: {} + {} tokens exceed the session capacity max_ctx = {}", s.n_past_, n,
           opt.max_ctx);
    for (int64_t i = 0; i < n; ++i)
      if (tokens[i] < 0 || (uint32_t)tokens[i] >= c.n_vocab)
        fail("token id {} at position {} is outside the vocabulary (0..{})", tokens[i],
             s.n_past_ + i, c.n_vocab - 1);
  }

  SessionImpl& session(CudaSession& cs) const {
    auto* s = dynamic_cast<SessionImpl*>(&cs);
    if (!s || s->owner != this) fail("cuda forward: session belongs to another model");
    return *s;
  }
  const SessionImpl& session(const CudaSession& cs) const {
    return session(const_cast<CudaSession&>(cs));  // the same check; nothing is written
  }
};

CudaModel::CudaModel(const DeviceModel& dm, CudaOptions opt)
    : impl_(std::make_unique<Impl>(dm, opt)) {}
CudaModel::~CudaModel() = default;

const ModelConfig& CudaModel::config() const {
  return impl_->c;
}

const CudaOptions& CudaModel::options() const {
  return impl_->opt;
}

std::unique_ptr<CudaSession> CudaModel::new_session() const {
  const Impl& m = *impl_;
  const ModelConfig& c = m.c;
  auto s = std::make_unique<SessionImpl>();
  s->owner = &m;
  s->layers.resize(c.n_layer);
  const int64_t hd = c.head_dim, ID = c.idx_head_dim;
  // NaN poison, but zeros under DSV4_CUDA_REPEAT: a knocked-out compressor_emit leaves rows
  // unwritten, and NaN read from them reaches the router (ids -1: the experts skip their rows).
  const int poison = m.prof.repeating() ? 0 : 0xff;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const uint32_t r = c.ratio(l);
    SessionImpl::Layer& L = s->layers[l];
    L.raw = scratch<float>((int64_t)c.window * hd);
    L.raw.fill_bytes(poison);  // NaN: ring slots are read only after they are written
    if (r > 0) {
      const int64_t lanes = ModelConfig::compressor_lanes(r);
      const int64_t fr = lanes * r * lanes * hd;
      L.comp = scratch<float>(m.opt.max_ctx / r * hd);
      L.comp.fill_bytes(poison);  // NaN: rows are read only after they are written
      L.ckv = scratch<float>(fr);
      L.ckv.fill_bytes(0);
      std::vector<float> ninf((size_t)fr, kNegInf);
      L.csc = scratch<float>(fr);
      L.csc.upload(ninf.data(), sizeof(float) * ninf.size());
    }
    if (r == 4) {
      const int64_t fr = 8 * 2 * ID;
      L.idx = scratch<float>(m.idx_cap * ID);
      L.idx.fill_bytes(poison);
      L.ikv = scratch<float>(fr);
      L.ikv.fill_bytes(0);
      std::vector<float> ninf((size_t)fr, kNegInf);
      L.isc = scratch<float>(fr);
      L.isc.upload(ninf.data(), sizeof(float) * ninf.size());
    }
  }
  // cudaMemset on the legacy stream does not order with the model's non-blocking stream.
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  return s;
}

std::unique_ptr<CudaSession> CudaModel::clone_session(const CudaSession& cs) const {
  Impl& m = *impl_;
  const SessionImpl& src = m.session(cs);
  auto out = new_session();
  SessionImpl& dst = m.session(*out);
  cudaStream_t st = m.stream.get();
  // The buffers' live part: the host layout's sizes (model/state_extent.h).
  auto copy = [&](const DeviceBuffer& to, const DeviceBuffer& from, size_t floats) {
    if (floats > 0)
      DSV4_CUDA_CHECK(cudaMemcpyAsync(to.data(), from.data(), sizeof(float) * floats,
                                      cudaMemcpyDeviceToDevice, st));
  };
  for (uint32_t l = 0; l < m.c.n_layer; ++l) {
    const LayerStateExtent e = layer_state_extent(m.c, m.c.ratio(l), src.n_past_);
    const SessionImpl::Layer &a = src.layers[l], &b = dst.layers[l];
    copy(b.raw, a.raw, e.raw);
    copy(b.comp, a.comp, e.comp);
    copy(b.idx, a.idx, e.idx);
    copy(b.ckv, a.ckv, e.ckv);
    copy(b.csc, a.csc, e.cscore);
    copy(b.ikv, a.ikv, e.ikv);
    copy(b.isc, a.isc, e.iscore);
  }
  m.stream.sync();
  dst.n_past_ = src.n_past_;  // no graph: the clone captures its own (it bakes in the buffers)
  return out;
}

void CudaModel::download_session(const CudaSession& cs, CpuSession& out) const {
  Impl& m = *impl_;
  const SessionImpl& s = m.session(cs);
  const ModelConfig& c = m.c;
  m.stream.sync();  // DeviceBuffer::download copies on the legacy stream
  CpuSession h;
  h.n_past = s.n_past_;
  h.layers.resize(c.n_layer);
  auto get = [](std::vector<float>& v, const DeviceBuffer& b, size_t floats) {
    v.resize(floats);
    if (floats > 0) b.download(v.data(), sizeof(float) * floats);
  };
  const int64_t W = c.window, hd = c.head_dim;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const LayerStateExtent e = layer_state_extent(c, c.ratio(l), s.n_past_);
    const SessionImpl::Layer& d = s.layers[l];
    LayerState& L = h.layers[l];
    get(L.raw, d.raw, e.raw);
    // Slots of positions not yet seen hold the device's NaN poison; a fresh CpuSession has 0.
    if (s.n_past_ < W) std::fill(L.raw.begin() + s.n_past_ * hd, L.raw.end(), 0.0f);
    get(L.comp, d.comp, e.comp);
    get(L.idx, d.idx, e.idx);
    get(L.ckv, d.ckv, e.ckv);
    get(L.cscore, d.csc, e.cscore);
    get(L.ikv, d.ikv, e.ikv);
    get(L.iscore, d.isc, e.iscore);
  }
  // The MTP block's state as CpuModel::new_session makes it (MTP does not run here).
  h.mtp.raw.assign((size_t)(W * hd), 0.0f);
  out = std::move(h);
}

std::unique_ptr<CudaSession> CudaModel::upload_session(const CpuSession& in) const {
  Impl& m = *impl_;
  const ModelConfig& c = m.c;
  if (in.n_past < 0) fail("cuda session upload: negative token count {}", in.n_past);
  if (in.n_past > m.opt.max_ctx)
    fail(
        "cuda session upload: the state holds {} tokens, more than the GPU session capacity "
        "max_ctx = {} (raise the context limit)",
        in.n_past, m.opt.max_ctx);
  if (in.layers.size() != c.n_layer)
    fail("cuda session upload: {} layers, the model has {}", in.layers.size(), c.n_layer);
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const LayerStateExtent e = layer_state_extent(c, c.ratio(l), in.n_past);
    const LayerState& L = in.layers[l];
    auto check = [&](const char* what, const std::vector<float>& v, size_t floats) {
      if (v.size() != floats)
        fail("cuda session upload: layer {} {}: {} values, expected {} for {} tokens", l, what,
             v.size(), floats, in.n_past);
    };
    check("raw window", L.raw, e.raw);
    check("compressed rows", L.comp, e.comp);
    check("indexer rows", L.idx, e.idx);
    check("compressor kv frontier", L.ckv, e.ckv);
    check("compressor score frontier", L.cscore, e.cscore);
    check("indexer kv frontier", L.ikv, e.ikv);
    check("indexer score frontier", L.iscore, e.iscore);
  }
  auto out = new_session();
  SessionImpl& s = m.session(*out);
  auto put = [](DeviceBuffer& b, const std::vector<float>& v) {
    if (!v.empty()) b.upload(v.data(), 4 * v.size());
  };
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const LayerState& L = in.layers[l];
    SessionImpl::Layer& d = s.layers[l];
    put(d.raw, L.raw);
    put(d.comp, L.comp);
    put(d.idx, L.idx);
    put(d.ckv, L.ckv);
    put(d.csc, L.cscore);
    put(d.ikv, L.ikv);
    put(d.isc, L.iscore);
  }
  // A pageable cudaMemcpy may return before its DMA is done, and the legacy stream does not
  // order with the model's non-blocking stream.
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  s.n_past_ = in.n_past;
  return out;
}

void CudaModel::forward(CudaSession& cs, const int32_t* tokens, int64_t n, bool all_logits,
                        std::vector<float>& out) const {
  Impl& m = *impl_;
  SessionImpl& s = m.session(cs);
  m.check_tokens(s, tokens, n);
  const int64_t V = m.c.n_vocab;
  out.resize((size_t)((all_logits ? n : 1) * V));
  int64_t done = 0;
  while (done < n) {
    const int64_t cnt = std::min(m.B, n - done);
    const bool last = done + cnt == n;
    int first = (int)cnt;  // no logits
    if (all_logits)
      first = 0;
    else if (last)
      first = (int)cnt - 1;
    if (cnt == 1 && first == 0) {
      m.step1(s, tokens[done]);
    } else {
      m.set_inputs(tokens + done, (int)cnt, s.n_past_);
      m.run_chunk(s, (int)cnt, first, false, s.n_past_);
    }
    if (first < cnt) {
      float* dst = all_logits ? out.data() + done * V : out.data();
      DSV4_CUDA_CHECK(cudaMemcpyAsync(dst, m.logits.data(),
                                      sizeof(float) * (size_t)((cnt - first) * V),
                                      cudaMemcpyDeviceToHost, m.stream.get()));
    }
    m.stream.sync();
    s.n_past_ += cnt;
    done += cnt;
  }
}

int32_t CudaModel::decode_greedy(CudaSession& cs, int32_t token) const {
  Impl& m = *impl_;
  SessionImpl& s = m.session(cs);
  m.check_tokens(s, &token, 1);
  m.step1(s, token);
  int32_t id = 0;
  DSV4_CUDA_CHECK(
      cudaMemcpyAsync(&id, m.amax.data(), sizeof(int32_t), cudaMemcpyDeviceToHost, m.stream.get()));
  m.stream.sync();
  s.n_past_ += 1;
  return id;
}

void CudaModel::fill_synthetic_context(CudaSession& cs, int64_t n, uint64_t seed) const {
  Impl& m = *impl_;
  SessionImpl& s = m.session(cs);
  const ModelConfig& c = m.c;
  if (s.n_past_ != 0)
    fail("fill_synthetic_context: the session is not fresh ({} tokens)", s.n_past_);
  if (n <= 0 || n % 128 != 0 || n >= m.opt.max_ctx)
    fail("fill_synthetic_context: {} tokens must be a positive multiple of 128 below max_ctx {}", n,
         m.opt.max_ctx);
  const float a = std::sqrt(3.0f);  // uniform [-a, a]: unit RMS
  cudaStream_t st = m.stream.get();
  const int64_t hd = c.head_dim, ID = c.idx_head_dim;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const uint32_t r = c.ratio(l);
    SessionImpl::Layer& L = s.layers[l];
    fwd::fill_random(L.raw.as<float>(), (int64_t)c.window * hd, seed + 3 * l, a, st);
    if (r > 0) fwd::fill_random(L.comp.as<float>(), n / r * hd, seed + 3 * l + 1, a, st);
    if (r == 4) fwd::fill_random(L.idx.as<float>(), n / 4 * ID, seed + 3 * l + 2, a, st);
  }
  m.stream.sync();
  s.n_past_ = n;
}

uint64_t CudaModel::scratch_bytes(const ModelConfig& c, const CudaOptions& opt) {
  // Mirrors the allocations of Impl's constructor and init_gemm (dense sizes from the config).
  const int64_t B = std::max<int64_t>(1, std::min(opt.max_batch, opt.max_ctx));
  const int64_t D = c.n_embd, hc = c.hc_mult, hd = c.head_dim, H = c.n_head, F = c.expert_ff;
  const int64_t k = c.n_expert_used, E = c.n_expert, ID = c.idx_head_dim, IH = c.idx_n_head;
  const int64_t QL = c.q_lora_rank, G = c.o_groups, OL = c.o_lora_rank, V = c.n_vocab;
  const int64_t idx_cap = opt.max_ctx / 4;
  const int64_t per_tok = hc * D + (int64_t)c.hc_mix() + hc + hc * hc + D + 2 * QL + H * hd +
                          2 * hd + 4 * hd + hd + 4 * ID + ID + IH * ID + IH + idx_cap +
                          (int64_t)c.idx_topk + H * hd + G * OL + D + E + 2 * k + 2 * k * F +
                          k * F + 2 * k * D + 2 * D + V;
  uint64_t floats = (uint64_t)(B * per_tok);
  if (B > 1) {
    const int64_t pairs = k * B, used = std::min(E, pairs);
    const int64_t S = pairs + used, rows = pairs + 8 * used;
    floats += (uint64_t)(S + pairs + 2 * rows + rows * D + 3 * rows * F + rows * D);
  }
  uint64_t bytes = 4 * floats;
  bytes += 4ull * (uint64_t)(H * 128 * (hd + 4));  // decode attention partials (most splits)
  bytes += 4ull * (uint64_t)(3 * F);               // the shared expert of a decode step
  if (opt.prefill_gemm && B >= opt.gemm_min_tokens && B > 1) {
    const int64_t dense = std::max(
        {QL * D, H * hd * QL, G * OL * (H * hd / std::max<int64_t>(G, 1)), D * G * OL, 2 * F * D});
    const int64_t f32_elems = std::max((int64_t)c.hc_mix() * hc * D, E * D);
    const int64_t per_expert = 2 * F * D;
    const int64_t eb = std::clamp<int64_t>(((int64_t)256 << 20) / (2 * per_expert), 1, 64);
    bytes += (uint64_t)std::max({2 * dense, 4 * f32_elems, 4 * eb * per_expert});
    bytes += (uint64_t)(2 * B * std::max({H * hd, F, QL, D}));
    bytes += (uint64_t)std::max<int64_t>(
        4 * IH * idx_cap, std::min<int64_t>((int64_t)256 << 20, 4 * B * IH * idx_cap));
    bytes += (uint64_t)(16 * k * B) + (64ull << 20);  // radix sort keys/values + CUB, cuBLAS
    bytes += (uint64_t)(16 * (k * B / 128 + std::min(E, k * B) + 1));  // expert tile list
  }
  return bytes;
}

uint64_t CudaModel::session_bytes() const {
  const Impl& m = *impl_;
  const ModelConfig& c = m.c;
  const uint64_t hd = c.head_dim, ID = c.idx_head_dim, ctx = (uint64_t)m.opt.max_ctx;
  uint64_t b = 0;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const uint64_t r = c.ratio(l);
    b += (uint64_t)c.window * hd * 4;
    if (r > 0) {
      const uint64_t lanes = ModelConfig::compressor_lanes((uint32_t)r);
      b += ctx / r * hd * 4 + 2 * lanes * r * lanes * hd * 4;
    }
    if (r == 4) b += ctx / 4 * ID * 4 + 2 * 8 * 2 * ID * 4;
  }
  return b;
}

}  // namespace dsv4::cuda
