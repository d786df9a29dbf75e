// Model hyper-parameters, read from GGUF metadata (spec/ARCH.md §1, §11.2). Nothing is hard-coded:
// tiny test models and the real 43-layer model go through the same code.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace dsv4 {

struct ModelConfig {
  uint32_t n_layer = 0;  // main layers (the MTP block is extra)
  uint32_t n_embd = 0;   // hidden size D
  uint32_t n_vocab = 0;
  uint32_t n_head = 0;    // attention heads
  uint32_t head_dim = 0;  // q, k, v head size (512)
  uint32_t rope_dim = 0;  // rotated tail of each head (64)
  uint32_t q_lora_rank = 0;
  uint32_t o_lora_rank = 0;
  uint32_t o_groups = 0;
  uint32_t n_expert = 0;
  uint32_t n_expert_used = 0;
  uint32_t expert_ff = 0;
  uint32_t n_expert_shared = 0;
  uint32_t n_hash_layers = 0;
  uint32_t window = 0;      // raw sliding window (128)
  uint32_t idx_n_head = 0;  // lightning indexer heads
  uint32_t idx_head_dim = 0;
  uint32_t idx_topk = 0;
  uint32_t hc_mult = 0;  // hyper-connection streams (4)
  uint32_t hc_sinkhorn_iters = 0;
  std::vector<uint32_t> compress_ratio;  // per main layer: 0, 4 or 128
  std::vector<float> swiglu_clamp;       // per main layer
  double rope_base = 10000;              // window-only layers
  double compress_rope_base = 160000;    // compressed layers (YaRN)
  double rope_factor = 16;
  double yarn_beta_fast = 32;
  double yarn_beta_slow = 1;
  uint64_t rope_orig_ctx = 65536;
  float expert_weights_scale = 1.5f;
  bool expert_weights_norm = true;
  float rms_eps = 1e-6f;
  float hc_eps = 1e-6f;
  uint64_t context_length = 0;  // informational (0 when absent)
  std::string name;             // general.name, informational

  uint32_t nope_dim() const { return head_dim - rope_dim; }
  uint32_t hc_dim() const { return hc_mult * n_embd; }
  uint32_t hc_mix() const { return (2 + hc_mult) * hc_mult; }
  uint32_t ratio(uint32_t layer) const { return compress_ratio.at(layer); }
  // The compressor of a ratio-4 layer overlaps two windows (two lanes of head_dim each).
  static uint32_t compressor_lanes(uint32_t ratio) { return ratio == 4 ? 2 : 1; }
  bool is_hash_layer(uint32_t layer) const { return layer < n_hash_layers; }
  // True when every dimension equals the published DeepSeek V4 Flash model.
  bool is_flash_shape() const;
};

// Reads and validates every key; throws dsv4::Error naming the key and the violated rule.
ModelConfig read_model_config(const gguf::File& f);

}  // namespace dsv4
