// Session-state memory plan (spec/ARCH.md §9, §10): how many bytes one session's KV state takes
// for a given context, by part, for the storage this engine uses (FP32 everywhere, as ds4) or the
// compact storage the real model's precision allows (spec: FP8 nope dims with UE8M0 scales per 64
// + BF16 rope dims per attention row = 583 B; FP4 indexer rows with a scale per 32 = 68 B;
// frontiers stay FP32).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace dsv4 {

enum class StateStorage { kF32, kSpec };

struct KvPlan {
  int64_t ctx_tokens = 0;
  StateStorage storage = StateStorage::kF32;
  uint32_t n_window_layers = 0, n_ratio4_layers = 0, n_ratio128_layers = 0;
  uint64_t attn_row_bytes = 0;     // one KV row (head_dim values) in this storage
  uint64_t indexer_row_bytes = 0;  // one indexer row (idx_head_dim values)
  // Fixed parts (independent of the context).
  uint64_t raw_bytes = 0;       // raw sliding windows: every layer, `window` rows
  uint64_t frontier_bytes = 0;  // compressor frontier state (kv + score), FP32
  // Parts that grow with the context: floor(ctx / ratio) rows per compressed layer.
  uint64_t comp4_bytes = 0;    // ratio-4 attention rows
  uint64_t comp128_bytes = 0;  // ratio-128 attention rows
  uint64_t indexer_bytes = 0;  // ratio-4 indexer rows
  uint64_t fixed_bytes() const { return raw_bytes + frontier_bytes; }
  uint64_t rows_bytes() const { return comp4_bytes + comp128_bytes + indexer_bytes; }
  uint64_t total_bytes() const { return fixed_bytes() + rows_bytes(); }
  // Asymptotic growth per token of context (exact when ratios divide the context).
  double bytes_per_token = 0;
};

// Throws when ctx_tokens < 0 or the config has a ratio other than 0, 4, 128.
KvPlan kv_memory_plan(const ModelConfig& cfg, int64_t ctx_tokens, StateStorage storage);

// Multi-line human summary ("KV plan at 65536 tokens (f32): ...").
std::string kv_plan_text(const KvPlan& p);

// Weight traffic of one decoded token (batch 1), from the bound tensors: every non-routed
// tensor of the main model, one embedding row and one hash-table row, n_expert_used / n_expert
// of each routed stack; the MTP block is excluded. Same figures as inspect's summary.
struct WeightTraffic {
  uint64_t bytes_per_token = 0;
  uint64_t host_bytes_per_token = 0;  // part in layers marked host-resident
  uint64_t active_params = 0;         // multiplied per token (no embedding table, no hash table)
};
WeightTraffic weight_traffic(const ModelConfig& cfg, const ModelWeights& w,
                             const std::vector<bool>& host_resident = {});

}  // namespace dsv4
