#include "model/config.h"

#include <cmath>

#include "core/error.h"

namespace dsv4 {
namespace {

constexpr const char* kArch = "deepseek4";

std::string key(const char* suffix) {
  return std::string(kArch) + "." + suffix;
}

bool is_pow2(uint32_t v) {
  return v != 0 && (v & (v - 1)) == 0;
}

void expect(bool ok, const gguf::File& f, const std::string& k, const std::string& rule) {
  if (!ok) fail("{}: metadata key '{}': {}", f.path(), k, rule);
}

}  // namespace

bool ModelConfig::is_flash_shape() const {
  return n_layer == 43 && n_embd == 4096 && n_vocab == 129280 && n_head == 64 && head_dim == 512 &&
         rope_dim == 64 && q_lora_rank == 1024 && o_lora_rank == 1024 && o_groups == 8 &&
         n_expert == 256 && n_expert_used == 6 && expert_ff == 2048 && n_hash_layers == 3 &&
         window == 128 && idx_n_head == 64 && idx_head_dim == 128 && idx_topk == 512 &&
         hc_mult == 4;
}

ModelConfig read_model_config(const gguf::File& f) {
  ModelConfig c;
  if (const auto* a = f.find("general.architecture")) {
    std::string arch = f.get_string("general.architecture");
    expect(arch == kArch, f, "general.architecture", "is '" + arch + "', expected 'deepseek4'");
    (void)a;
  }
  if (f.find("general.name")) c.name = f.get_string("general.name");
  c.n_layer = f.get_u32(key("block_count"));
  c.n_embd = f.get_u32(key("embedding_length"));
  c.n_vocab = f.get_u32(key("vocab_size"));
  c.n_head = f.get_u32(key("attention.head_count"));
  const uint32_t n_head_kv = f.get_u32(key("attention.head_count_kv"));
  c.head_dim = f.get_u32(key("attention.key_length"));
  const uint32_t value_len = f.get_u32(key("attention.value_length"));
  c.rope_dim = f.get_u32(key("rope.dimension_count"));
  c.q_lora_rank = f.get_u32(key("attention.q_lora_rank"));
  c.o_lora_rank = f.get_u32(key("attention.output_lora_rank"));
  c.o_groups = f.get_u32(key("attention.output_group_count"));
  c.n_expert = f.get_u32(key("expert_count"));
  c.n_expert_used = f.get_u32(key("expert_used_count"));
  c.expert_ff = f.get_u32(key("expert_feed_forward_length"));
  c.n_expert_shared = f.get_u32(key("expert_shared_count"));
  c.n_hash_layers = f.get_u32(key("hash_layer_count"));
  c.window = f.get_u32(key("attention.sliding_window"));
  c.idx_n_head = f.get_u32(key("attention.indexer.head_count"));
  c.idx_head_dim = f.get_u32(key("attention.indexer.key_length"));
  c.idx_topk = f.get_u32(key("attention.indexer.top_k"));
  c.hc_mult = f.get_u32(key("hyper_connection.count"));
  c.hc_sinkhorn_iters = f.get_u32(key("hyper_connection.sinkhorn_iterations"));
  const uint32_t n_group = f.get_u32_opt(key("expert_group_count")).value_or(0);
  const uint32_t n_group_used = f.get_u32_opt(key("expert_group_used_count")).value_or(0);

  c.rope_orig_ctx = f.get_uint(key("rope.scaling.original_context_length"));
  c.rope_base = f.get_float(key("rope.freq_base"));
  c.rope_factor = f.get_float(key("rope.scaling.factor"));
  c.yarn_beta_fast = f.get_float(key("rope.scaling.yarn_beta_fast"));
  c.yarn_beta_slow = f.get_float(key("rope.scaling.yarn_beta_slow"));
  c.compress_rope_base = f.get_float(key("attention.compress_rope_freq_base"));
  c.expert_weights_scale = (float)f.get_float(key("expert_weights_scale"));
  c.rms_eps = (float)f.get_float(key("attention.layer_norm_rms_epsilon"));
  c.hc_eps = (float)f.get_float(key("hyper_connection.epsilon"));
  c.expert_weights_norm = f.get_bool(key("expert_weights_norm"));
  if (f.find(key("context_length"))) c.context_length = f.get_uint(key("context_length"));

  // llama.cpp writes the gating function; when present it must be sqrt(softplus) (= 4).
  if (f.find(key("expert_gating_func"))) {
    const uint64_t g = f.get_uint(key("expert_gating_func"));
    expect(g == 4, f, key("expert_gating_func"),
           fmt::format("is {}, expected 4 (sqrt-softplus scoring)", g));
  }

  const auto ratios = f.get_int_array(key("attention.compress_ratios"));
  expect(ratios.size() >= c.n_layer, f, key("attention.compress_ratios"),
         fmt::format("has {} entries, needs at least block_count = {}", ratios.size(), c.n_layer));
  for (uint32_t i = 0; i < c.n_layer; ++i) {
    const int64_t r = ratios[i];
    expect(r == 0 || r == 4 || r == 128, f, key("attention.compress_ratios"),
           fmt::format("entry {} is {}, expected 0, 4 or 128", i, r));
    c.compress_ratio.push_back((uint32_t)r);
  }
  const auto clamps = f.get_float_array(key("swiglu_clamp_exp"));
  expect(clamps.size() >= c.n_layer, f, key("swiglu_clamp_exp"),
         fmt::format("has {} entries, needs at least block_count = {}", clamps.size(), c.n_layer));
  for (uint32_t i = 0; i < c.n_layer; ++i) {
    expect(std::isfinite(clamps[i]) && clamps[i] > 0, f, key("swiglu_clamp_exp"),
           fmt::format("entry {} is {}, expected a positive limit", i, clamps[i]));
    c.swiglu_clamp.push_back((float)clamps[i]);
  }

  // Consistency rules: each one is something the math or a kernel depends on.
  expect(c.n_layer >= 1 && c.n_layer <= 256, f, key("block_count"), "must be in 1..256");
  expect(c.n_embd >= 32 && c.n_embd % 32 == 0, f, key("embedding_length"),
         fmt::format("is {}, must be a positive multiple of 32", c.n_embd));
  expect(c.n_vocab >= 2, f, key("vocab_size"), "must be at least 2");
  expect(n_head_kv == 1, f, key("attention.head_count_kv"),
         fmt::format("is {}, DeepSeek V4 has a single shared K=V head", n_head_kv));
  expect(value_len == c.head_dim, f, key("attention.value_length"),
         fmt::format("is {}, must equal key_length {} (K = V)", value_len, c.head_dim));
  expect(c.n_head >= 1, f, key("attention.head_count"), "must be at least 1");
  expect(c.rope_dim >= 2 && c.rope_dim % 2 == 0 && c.rope_dim < c.head_dim, f,
         key("rope.dimension_count"),
         fmt::format("is {}, must be even and smaller than key_length {}", c.rope_dim, c.head_dim));
  expect((c.head_dim - c.rope_dim) % 64 == 0, f, key("attention.key_length"),
         fmt::format("key_length {} - rope {} must be a multiple of 64 (FP8 blocks)", c.head_dim,
                     c.rope_dim));
  expect(c.o_groups >= 1 && c.n_head % c.o_groups == 0, f, key("attention.output_group_count"),
         fmt::format("is {}, must divide head_count {}", c.o_groups, c.n_head));
  expect(c.q_lora_rank >= 1, f, key("attention.q_lora_rank"), "must be at least 1");
  expect(c.o_lora_rank >= 1, f, key("attention.output_lora_rank"), "must be at least 1");
  expect(c.n_expert >= 1 && c.n_expert <= 65536, f, key("expert_count"), "must be in 1..65536");
  expect(c.n_expert_used >= 1 && c.n_expert_used <= c.n_expert, f, key("expert_used_count"),
         fmt::format("is {}, must be in 1..expert_count ({})", c.n_expert_used, c.n_expert));
  expect(c.expert_ff >= 1, f, key("expert_feed_forward_length"), "must be at least 1");
  expect(c.n_expert_shared == 1, f, key("expert_shared_count"),
         fmt::format("is {}, DeepSeek V4 has exactly one shared expert", c.n_expert_shared));
  expect(c.n_hash_layers <= c.n_layer, f, key("hash_layer_count"),
         fmt::format("is {}, exceeds block_count {}", c.n_hash_layers, c.n_layer));
  expect(n_group == 0 && n_group_used == 0, f, key("expert_group_count"),
         "grouped top-k routing is not part of DeepSeek V4 (must be 0 or absent)");
  expect(c.window >= 1, f, key("attention.sliding_window"), "must be at least 1");
  expect(is_pow2(c.idx_head_dim) && c.idx_head_dim >= c.rope_dim && c.idx_head_dim % 32 == 0, f,
         key("attention.indexer.key_length"),
         fmt::format("is {}, must be a power of two, >= rope dims {} and a multiple of 32 "
                     "(Hadamard and FP4 blocks)",
                     c.idx_head_dim, c.rope_dim));
  expect(c.idx_n_head >= 1, f, key("attention.indexer.head_count"), "must be at least 1");
  expect(c.idx_topk >= 1, f, key("attention.indexer.top_k"), "must be at least 1");
  expect(c.hc_mult >= 1 && c.hc_mult <= 16, f, key("hyper_connection.count"), "must be in 1..16");
  expect(c.hc_sinkhorn_iters >= 1, f, key("hyper_connection.sinkhorn_iterations"),
         "must be at least 1");
  expect(c.rope_orig_ctx >= 1, f, key("rope.scaling.original_context_length"), "must be >= 1");
  expect(c.rope_base > 1 && c.compress_rope_base > 1, f, key("rope.freq_base"),
         "RoPE bases must be > 1");
  expect(c.rope_factor >= 1, f, key("rope.scaling.factor"), "must be >= 1");
  expect(c.rms_eps > 0 && c.hc_eps > 0, f, key("attention.layer_norm_rms_epsilon"),
         "epsilons must be positive");
  expect(c.expert_weights_norm, f, key("expert_weights_norm"),
         "must be true (routing weights are renormalised)");
  return c;
}

}  // namespace dsv4
