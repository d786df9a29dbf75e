#include "model/weights.h"

#include <cstring>
#include <initializer_list>
#include <map>

#include "core/error.h"

namespace dsv4 {
namespace {

// Type policy (docs/NOTES.md "weight types"): each tensor accepts the type it has in the
// published q2/q4/MTP files, plus plain float types (F32/F16/BF16) for quantized or F16 weights,
// which tiny reference models and converted checkpoints use. Norms, biases, scales and sinks
// are F32 as published; the hash table is I32.
enum class Kind {
  kF32,     // F32 only (norms, biases, HC base/scale, sinks)
  kFloat,   // F16 published; F32/BF16 also accepted
  kQ8,      // Q8_0 published; F32/F16/BF16 also accepted
  kExpert,  // IQ2_XXS / Q2_K / Q4_K published; F32/F16/BF16 also accepted
  kI32,
};

bool type_allowed(Kind k, GgmlType t) {
  const bool plain = t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16;
  switch (k) {
    case Kind::kF32:
      return t == GgmlType::F32;
    case Kind::kFloat:
      return plain;
    case Kind::kQ8:
      return plain || t == GgmlType::Q8_0;
    case Kind::kExpert:
      return plain || t == GgmlType::IQ2_XXS || t == GgmlType::Q2_K || t == GgmlType::Q4_K;
    case Kind::kI32:
      return t == GgmlType::I32;
  }
  return false;
}

const char* kind_text(Kind k) {
  switch (k) {
    case Kind::kF32:
      return "F32";
    case Kind::kFloat:
      return "F16 (or F32/BF16)";
    case Kind::kQ8:
      return "Q8_0 (or F32/F16/BF16)";
    case Kind::kExpert:
      return "IQ2_XXS, Q2_K or Q4_K (or F32/F16/BF16)";
    case Kind::kI32:
      return "I32";
  }
  return "?";
}

// Where tensors are looked up: a parsed file, or a data-less layout (tensor list).
class TensorSource {
 public:
  explicit TensorSource(const gguf::File& f) : file_(&f), name_(f.path()) {}
  TensorSource(const std::vector<gguf::TensorInfo>& ts, std::string name) : name_(std::move(name)) {
    for (const auto& t : ts) index_.emplace(t.name, &t);
  }
  const gguf::TensorInfo* find_tensor(const std::string& n) const {
    if (file_) return file_->find_tensor(n);
    auto it = index_.find(n);
    return it == index_.end() ? nullptr : it->second;
  }
  const std::string& path() const { return name_; }

 private:
  const gguf::File* file_ = nullptr;
  std::string name_;
  std::map<std::string, const gguf::TensorInfo*> index_;
};

class Binder {
 public:
  explicit Binder(const TensorSource& f) : f_(f) {}

  TensorRef get(const std::string& name, Kind kind, std::initializer_list<int64_t> shape) {
    const gguf::TensorInfo* t = f_.find_tensor(name);
    if (!t) fail("{}: missing tensor '{}'", f_.path(), name);
    return check(*t, kind, shape);
  }
  TensorRef get_opt(const std::string& name, Kind kind, std::initializer_list<int64_t> shape) {
    const gguf::TensorInfo* t = f_.find_tensor(name);
    return t ? check(*t, kind, shape) : TensorRef{};
  }
  bool has(const std::string& name) const { return f_.find_tensor(name) != nullptr; }

 private:
  TensorRef check(const gguf::TensorInfo& t, Kind kind, std::initializer_list<int64_t> shape) {
    if (!type_allowed(kind, t.type))
      fail("{}: tensor '{}' has type {}, expected {}", f_.path(), t.name, ggml_type_name(t.type),
           kind_text(kind));
    std::vector<int64_t> want(shape);
    bool same = t.ne.size() == want.size();
    for (size_t i = 0; same && i < want.size(); ++i) same = (int64_t)t.ne[i] == want[i];
    if (!same) {
      std::string got, exp;
      for (auto d : t.ne) got += (got.empty() ? "" : ", ") + std::to_string(d);
      for (auto d : want) exp += (exp.empty() ? "" : ", ") + std::to_string(d);
      fail("{}: tensor '{}' has shape [{}], expected [{}]", f_.path(), t.name, got, exp);
    }
    TensorRef r;
    r.name = t.name;
    r.type = t.type;
    for (size_t i = 0; i < t.ne.size(); ++i) r.ne[i] = (int64_t)t.ne[i];
    r.data = t.data;
    r.nbytes = t.nbytes;
    return r;
  }
  const TensorSource& f_;
};

// Binds one block's tensors under `prefix` ("blk.N." or "mtp.0.").
LayerWeights bind_block(Binder& b, const ModelConfig& c, const std::string& p, uint32_t ratio,
                        bool hash, bool require_bias) {
  const int64_t D = c.n_embd, hd = c.head_dim, H = c.n_head;
  const int64_t mix = c.hc_mix(), hcd = c.hc_dim();
  LayerWeights L;
  L.ratio = ratio;
  L.hc_attn_fn = b.get(p + "hc_attn_fn.weight", Kind::kFloat, {hcd, mix});
  L.hc_attn_base = b.get(p + "hc_attn_base.weight", Kind::kF32, {mix});
  L.hc_attn_scale = b.get(p + "hc_attn_scale.weight", Kind::kF32, {3});
  L.hc_ffn_fn = b.get(p + "hc_ffn_fn.weight", Kind::kFloat, {hcd, mix});
  L.hc_ffn_base = b.get(p + "hc_ffn_base.weight", Kind::kF32, {mix});
  L.hc_ffn_scale = b.get(p + "hc_ffn_scale.weight", Kind::kF32, {3});
  L.attn_norm = b.get(p + "attn_norm.weight", Kind::kF32, {D});
  L.ffn_norm = b.get(p + "ffn_norm.weight", Kind::kF32, {D});
  L.q_a = b.get(p + "attn_q_a.weight", Kind::kQ8, {D, c.q_lora_rank});
  L.q_a_norm = b.get(p + "attn_q_a_norm.weight", Kind::kF32, {c.q_lora_rank});
  L.q_b = b.get(p + "attn_q_b.weight", Kind::kQ8, {c.q_lora_rank, H * hd});
  L.kv = b.get(p + "attn_kv.weight", Kind::kQ8, {D, hd});
  L.kv_norm = b.get(p + "attn_kv_a_norm.weight", Kind::kF32, {hd});
  L.sinks = b.get(p + "attn_sinks.weight", Kind::kF32, {H});
  L.o_a = b.get(p + "attn_output_a.weight", Kind::kQ8,
                {H * hd / c.o_groups, (int64_t)c.o_groups * c.o_lora_rank});
  L.o_b = b.get(p + "attn_output_b.weight", Kind::kQ8, {(int64_t)c.o_groups * c.o_lora_rank, D});
  if (ratio > 0) {
    const int64_t lanes = ModelConfig::compressor_lanes(ratio);
    L.comp_ape = b.get(p + "attn_compressor_ape.weight", Kind::kFloat, {lanes * hd, ratio});
    L.comp_kv = b.get(p + "attn_compressor_kv.weight", Kind::kFloat, {D, lanes * hd});
    L.comp_gate = b.get(p + "attn_compressor_gate.weight", Kind::kFloat, {D, lanes * hd});
    L.comp_norm = b.get(p + "attn_compressor_norm.weight", Kind::kF32, {hd});
  }
  if (ratio == 4) {
    const int64_t id = c.idx_head_dim, ih = c.idx_n_head;
    L.idx_q_b = b.get(p + "indexer.attn_q_b.weight", Kind::kFloat, {c.q_lora_rank, ih * id});
    L.idx_proj = b.get(p + "indexer.proj.weight", Kind::kFloat, {D, ih});
    L.idx_ape = b.get(p + "indexer_compressor_ape.weight", Kind::kFloat, {2 * id, 4});
    L.idx_kv = b.get(p + "indexer_compressor_kv.weight", Kind::kFloat, {D, 2 * id});
    L.idx_gate = b.get(p + "indexer_compressor_gate.weight", Kind::kFloat, {D, 2 * id});
    L.idx_norm = b.get(p + "indexer_compressor_norm.weight", Kind::kF32, {id});
  }
  const int64_t E = c.n_expert, F = c.expert_ff;
  L.gate_inp = b.get(p + "ffn_gate_inp.weight", Kind::kFloat, {D, E});
  if (hash) {
    L.tid2eid = b.get(p + "ffn_gate_tid2eid.weight", Kind::kI32, {c.n_expert_used, c.n_vocab});
  } else if (require_bias) {
    L.exp_probs_b = b.get(p + "exp_probs_b.bias", Kind::kF32, {E});
  } else {
    L.exp_probs_b = b.get_opt(p + "exp_probs_b.bias", Kind::kF32, {E});
  }
  L.gate_exps = b.get(p + "ffn_gate_exps.weight", Kind::kExpert, {D, F, E});
  L.up_exps = b.get(p + "ffn_up_exps.weight", Kind::kExpert, {D, F, E});
  L.down_exps = b.get(p + "ffn_down_exps.weight", Kind::kExpert, {F, D, E});
  if (L.gate_exps.type != L.up_exps.type)
    fail(
        "tensor '{}' has type {} but '{}' has type {}: routed gate and up experts must share a "
        "type",
        L.gate_exps.name, ggml_type_name(L.gate_exps.type), L.up_exps.name,
        ggml_type_name(L.up_exps.type));
  L.gate_shexp = b.get(p + "ffn_gate_shexp.weight", Kind::kQ8, {D, F});
  L.up_shexp = b.get(p + "ffn_up_shexp.weight", Kind::kQ8, {D, F});
  L.down_shexp = b.get(p + "ffn_down_shexp.weight", Kind::kQ8, {F, D});
  // Quantized rows must hold whole blocks.
  for (const TensorRef* t : {&L.q_a, &L.q_b, &L.kv, &L.o_a, &L.o_b, &L.gate_exps, &L.up_exps,
                             &L.down_exps, &L.gate_shexp, &L.up_shexp, &L.down_shexp}) {
    (void)t->row_bytes();
  }
  return L;
}

void check_tid2eid(const TensorSource& f, const TensorRef& t, const ModelConfig& c) {
  if (!t.data) return;  // layout only
  const int32_t* ids = (const int32_t*)t.data;
  const uint64_t n = (uint64_t)c.n_vocab * c.n_expert_used;
  for (uint64_t i = 0; i < n; ++i) {
    int32_t v;
    std::memcpy(&v, ids + i, 4);
    if (v < 0 || (uint32_t)v >= c.n_expert)
      fail("{}: tensor '{}' entry {} (token {}) is expert {}, outside 0..{}", f.path(), t.name, i,
           i / c.n_expert_used, v, c.n_expert - 1);
  }
}

ModelWeights bind_weights(const ModelConfig& c, const TensorSource& main_src,
                          const TensorSource* mtp_src) {
  ModelWeights w;
  Binder b(main_src);
  const int64_t D = c.n_embd, V = c.n_vocab, hcd = c.hc_dim();
  w.tok_embd = b.get("token_embd.weight", Kind::kFloat, {D, V});
  w.output = b.get("output.weight", Kind::kQ8, {D, V});
  w.output_norm = b.get("output_norm.weight", Kind::kF32, {D});
  w.output_hc_fn = b.get("output_hc_fn.weight", Kind::kFloat, {hcd, c.hc_mult});
  w.output_hc_base = b.get("output_hc_base.weight", Kind::kF32, {c.hc_mult});
  w.output_hc_scale = b.get("output_hc_scale.weight", Kind::kF32, {1});
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    LayerWeights L =
        bind_block(b, c, fmt::format("blk.{}.", l), c.ratio(l), c.is_hash_layer(l), false);
    if (L.tid2eid.present()) check_tid2eid(main_src, L.tid2eid, c);
    w.layers.push_back(std::move(L));
  }
  // MTP: a separate file (published layout) or mtp.0.* inside the main file.
  const TensorSource* mf = mtp_src ? mtp_src : (b.has("mtp.0.e_proj.weight") ? &main_src : nullptr);
  if (mf) {
    Binder mb(*mf);
    MtpWeights t;
    const std::string p = "mtp.0.";
    t.block = bind_block(mb, c, p, 0, false, true);
    t.hc_head_fn = mb.get(p + "hc_head_fn.weight", Kind::kFloat, {hcd, c.hc_mult});
    t.hc_head_base = mb.get(p + "hc_head_base.weight", Kind::kF32, {c.hc_mult});
    t.hc_head_scale = mb.get(p + "hc_head_scale.weight", Kind::kF32, {1});
    t.e_proj = mb.get(p + "e_proj.weight", Kind::kQ8, {D, D});
    t.h_proj = mb.get(p + "h_proj.weight", Kind::kQ8, {D, D});
    t.enorm = mb.get(p + "enorm.weight", Kind::kF32, {D});
    t.hnorm = mb.get(p + "hnorm.weight", Kind::kF32, {D});
    t.norm = mb.get(p + "norm.weight", Kind::kF32, {D});
    w.mtp = std::move(t);
  }
  return w;
}

}  // namespace

std::unique_ptr<Model> bind_model(std::unique_ptr<gguf::File> main,
                                  std::unique_ptr<gguf::File> mtp) {
  auto m = std::make_unique<Model>();
  m->cfg = read_model_config(*main);
  const TensorSource ms(*main);
  std::optional<TensorSource> ts;
  if (mtp) ts.emplace(*mtp);
  m->w = bind_weights(m->cfg, ms, ts ? &*ts : nullptr);
  m->file = std::move(main);
  m->mtp_file = std::move(mtp);
  return m;
}

ModelWeights bind_layout(const ModelConfig& cfg, const std::vector<gguf::TensorInfo>& tensors,
                         const std::vector<gguf::TensorInfo>* mtp_tensors,
                         const std::string& name) {
  const TensorSource ms(tensors, name);
  std::optional<TensorSource> ts;
  if (mtp_tensors) ts.emplace(*mtp_tensors, name + " (MTP)");
  return bind_weights(cfg, ms, ts ? &*ts : nullptr);
}

std::unique_ptr<Model> load_model(const std::string& path, const std::string& mtp_path) {
  auto f = std::make_unique<gguf::File>(gguf::File::open(path));
  std::unique_ptr<gguf::File> mf;
  if (!mtp_path.empty()) mf = std::make_unique<gguf::File>(gguf::File::open(mtp_path));
  return bind_model(std::move(f), std::move(mf));
}

std::string expert_recipe(const ModelWeights& w) {
  if (w.layers.empty()) return "none";
  const auto& L = w.layers[0];
  return fmt::format("{}/{}/{}", ggml_type_name(L.gate_exps.type), ggml_type_name(L.up_exps.type),
                     ggml_type_name(L.down_exps.type));
}

}  // namespace dsv4
