// Weight binding: every tensor found by name, its type and shape checked against the config
// (spec/ARCH.md §11.3, §11.4). Tensors stay in the mapped file; nothing is copied.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/ggml_type.h"
#include "gguf/gguf.h"
#include "model/config.h"

namespace dsv4 {

struct TensorRef {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::array<int64_t, 3> ne{1, 1, 1};  // GGUF order: ne[0] = row length (input dim)
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;

  bool present() const { return data != nullptr; }
  int64_t cols() const { return ne[0]; }
  int64_t rows() const { return ne[1]; }
  uint64_t row_bytes() const { return ggml_row_bytes(type, (uint64_t)ne[0]); }
  // Start of matrix `e` of a 3-D stacked tensor (routed experts).
  const uint8_t* matrix(int64_t e) const { return data + (uint64_t)e * row_bytes() * ne[1]; }
};

struct LayerWeights {
  uint32_t ratio = 0;
  TensorRef hc_attn_fn, hc_attn_base, hc_attn_scale, hc_ffn_fn, hc_ffn_base, hc_ffn_scale;
  TensorRef attn_norm, ffn_norm;
  TensorRef q_a, q_a_norm, q_b, kv, kv_norm, sinks, o_a, o_b;
  TensorRef comp_ape, comp_kv, comp_gate, comp_norm;                 // ratio > 0
  TensorRef idx_q_b, idx_proj, idx_ape, idx_kv, idx_gate, idx_norm;  // ratio == 4
  TensorRef gate_inp, exp_probs_b, tid2eid;                          // router
  TensorRef gate_exps, up_exps, down_exps, gate_shexp, up_shexp, down_shexp;
};

struct MtpWeights {
  LayerWeights block;
  TensorRef hc_head_fn, hc_head_base, hc_head_scale, e_proj, h_proj, enorm, hnorm, norm;
};

struct ModelWeights {
  TensorRef tok_embd, output, output_norm, output_hc_fn, output_hc_base, output_hc_scale;
  std::vector<LayerWeights> layers;
  std::optional<MtpWeights> mtp;
};

// A loaded model: the mapped GGUF file(s), the config and the bound weights.
struct Model {
  std::unique_ptr<gguf::File> file;
  std::unique_ptr<gguf::File> mtp_file;  // separate MTP GGUF, when given
  ModelConfig cfg;
  ModelWeights w;
};

// Opens and validates a model. `mtp_path` may be empty; MTP tensors are also accepted when the
// main file itself carries `mtp.0.*`.
std::unique_ptr<Model> load_model(const std::string& path, const std::string& mtp_path = "");
// Same from already-parsed files (tests, synthetic models).
std::unique_ptr<Model> bind_model(std::unique_ptr<gguf::File> main,
                                  std::unique_ptr<gguf::File> mtp = nullptr);

// Binds a data-less layout (e.g. build_layout_model's tensors): names, types and shapes are
// checked as for a file; every TensorRef.data is null, to be pointed at real storage by the
// caller (synthetic device models). `name` appears in error messages.
ModelWeights bind_layout(const ModelConfig& cfg, const std::vector<gguf::TensorInfo>& tensors,
                         const std::vector<gguf::TensorInfo>* mtp_tensors = nullptr,
                         const std::string& name = "layout");

// Which routed-expert recipe a model uses, e.g. "IQ2_XXS/IQ2_XXS/Q2_K".
std::string expert_recipe(const ModelWeights& w);

}  // namespace dsv4
