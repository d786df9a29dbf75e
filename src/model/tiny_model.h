// Deterministic generator of DeepSeek V4 Flash GGUFs of any (small) configuration, with the real
// tensor names, metadata keys and quant types, and random weights. Used by tests, by the golden
// reference harness and as the built-in demo model.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/ggml_type.h"
#include "gguf/gguf.h"
#include "model/config.h"

namespace dsv4 {

struct TinySpec {
  std::string name = "dsv4-tiny";
  uint32_t n_embd = 256;
  std::vector<uint32_t> ratios{0, 0, 4, 128, 4};  // one per main layer
  uint32_t n_head = 4;
  uint32_t head_dim = 512;
  uint32_t rope_dim = 64;
  uint32_t q_lora_rank = 64;
  uint32_t o_groups = 2;
  uint32_t o_lora_rank = 64;
  uint32_t n_expert = 16;
  uint32_t n_expert_used = 6;
  uint32_t expert_ff = 256;
  uint32_t n_hash_layers = 3;
  uint32_t window = 128;
  uint32_t idx_n_head = 4;
  uint32_t idx_head_dim = 128;
  uint32_t idx_topk = 16;
  uint32_t hc_mult = 4;
  uint32_t hc_sinkhorn_iters = 20;
  uint32_t vocab = 0;  // 0: byte-level vocabulary (256 bytes + specials)
  bool mtp = true;
  // Types as in the published files (q2 recipe by default).
  GgmlType attn_type = GgmlType::Q8_0;  // attention, shared experts, head, MTP projections
  GgmlType expert_gate_type = GgmlType::IQ2_XXS;  // routed gate and up
  GgmlType expert_down_type = GgmlType::Q2_K;
  GgmlType f16_type = GgmlType::F16;  // embedding, compressor, indexer, router, HC fn
  // Writes every weight as F32 holding exactly the values of the quantized file (the same seed
  // gives the same values), for references that cannot read the block formats.
  bool all_f32 = false;
  uint64_t seed = 1;
  std::string tokenizer_gguf;  // optional: copy tokenizer.* keys (and vocab size) from here
};

// Named presets: "tiny" (q2 types, top-k 16), "tiny-k512" (q2 types, top-k 512),
// "tiny-q4" (wider, Q4_K experts, top-k 32). Unknown names throw.
TinySpec tiny_preset(const std::string& name);

struct TinyFiles {
  gguf::Writer main;
  gguf::Writer mtp;  // empty (no tensors) unless spec.mtp
};
TinyFiles build_tiny_model(const TinySpec& spec);
// Writes `path` and, when spec.mtp, `mtp_path` (if non-empty).
void write_tiny_model(const TinySpec& spec, const std::string& path, const std::string& mtp_path);

// A model's layout without data: the metadata (as a tensor-less GGUF, for read_model_config) and
// every tensor's name, type and shape in file order (TensorInfo::data null, offset 0, nbytes
// computed). What synthetic device models are built from.
struct LayoutModel {
  gguf::Writer meta;  // metadata only, no tensors
  std::vector<gguf::TensorInfo> tensors;
};
// The published full-size layouts ("q2", "q4", "mtp"), in memory.
LayoutModel build_layout_model(const std::string& recipe);
// The config in a layout's metadata (read_model_config over the tensor-less GGUF).
ModelConfig layout_config(const LayoutModel& m);
// The layout of a tiny model (same tensors as build_tiny_model(spec).main, no data, byte vocab
// metadata included); `spec.mtp` is ignored.
LayoutModel layout_of_spec(const TinySpec& spec);

// The full-size published layouts ("q2", "q4", "mtp") with all-zero tensor data, written as a
// sparse file: proves layout acceptance and `inspect` figures without the real weights.
void write_layout_model(const std::string& recipe, const std::string& path);

}  // namespace dsv4
