#include <gtest/gtest.h>

#include "core/error.h"
#include "model/inspect.h"
#include "model/memory_plan.h"
#include "model/tiny_model.h"

using namespace dsv4;

namespace {

const ModelConfig& flash() {
  static const ModelConfig c = layout_config(build_layout_model("q2"));
  return c;
}

}  // namespace

// spec/ARCH.md §10: 21 ratio-4 + 20 ratio-128 layers, 3440 elements per token; raw windows
// 43 x 128 x 512; frontier state 3 051 520 FP32. Hand-computed below.
TEST(MemoryPlan, FlashF32) {
  const ModelConfig& c = flash();
  const KvPlan p2 = kv_memory_plan(c, 2048, StateStorage::kF32);
  EXPECT_EQ(p2.n_window_layers, 2u);
  EXPECT_EQ(p2.n_ratio4_layers, 21u);
  EXPECT_EQ(p2.n_ratio128_layers, 20u);
  EXPECT_EQ(p2.attn_row_bytes, 2048u);
  EXPECT_EQ(p2.indexer_row_bytes, 512u);
  EXPECT_EQ(p2.raw_bytes, 11272192u);         // 43 * 128 * 512 * 4
  EXPECT_EQ(p2.frontier_bytes, 12206080u);    // 3 051 520 * 4
  EXPECT_EQ(p2.comp4_bytes, 22020096u);       // 21 * 512 * 2048
  EXPECT_EQ(p2.indexer_bytes, 5505024u);      // 21 * 512 * 512
  EXPECT_EQ(p2.comp128_bytes, 655360u);       // 20 * 16 * 2048
  EXPECT_EQ(p2.rows_bytes(), 13760u * 2048);  // ds4's 13 760 B/token slope
  EXPECT_EQ(p2.total_bytes(), 51658752u);
  EXPECT_DOUBLE_EQ(p2.bytes_per_token, 13760.0);

  const KvPlan p64 = kv_memory_plan(c, 65536, StateStorage::kF32);
  EXPECT_EQ(p64.comp4_bytes, 704643072u);
  EXPECT_EQ(p64.indexer_bytes, 176160768u);
  EXPECT_EQ(p64.comp128_bytes, 20971520u);
  EXPECT_EQ(p64.total_bytes(), 925253632u);

  const KvPlan p1m = kv_memory_plan(c, 1048576, StateStorage::kF32);
  EXPECT_EQ(p1m.comp4_bytes, 11274289152ull);   // "ratio-4 attention rows 11.27 GB"
  EXPECT_EQ(p1m.indexer_bytes, 2818572288ull);  // "indexer rows are 2.82 GB"
  EXPECT_EQ(p1m.comp128_bytes, 335544320ull);
  EXPECT_EQ(p1m.rows_bytes(), 14428405760ull);  // "14.43 GB"
  EXPECT_EQ(p1m.total_bytes(), 14451884032ull);
  EXPECT_EQ(p1m.fixed_bytes(), p2.fixed_bytes());
}

// The compact storage of the spec: 583 B per KV row (448 FP8 + 7 UE8M0 scales + 64 BF16),
// 68 B per indexer row (64 B FP4 + 4 scales): "≈3.5 KB/token ≈ 3.7 GB at 1M".
TEST(MemoryPlan, FlashSpecStorage) {
  const ModelConfig& c = flash();
  const KvPlan p2 = kv_memory_plan(c, 2048, StateStorage::kSpec);
  EXPECT_EQ(p2.attn_row_bytes, 583u);
  EXPECT_EQ(p2.indexer_row_bytes, 68u);
  EXPECT_EQ(p2.raw_bytes, 3208832u);  // 43 * 128 * 583
  EXPECT_EQ(p2.frontier_bytes, 12206080u);
  EXPECT_EQ(p2.comp4_bytes, 6268416u);
  EXPECT_EQ(p2.indexer_bytes, 731136u);
  EXPECT_EQ(p2.comp128_bytes, 186560u);
  EXPECT_EQ(p2.total_bytes(), 22601024u);
  EXPECT_DOUBLE_EQ(p2.bytes_per_token, 3508.84375);  // 21 * 651 / 4 + 20 * 583 / 128

  const KvPlan p64 = kv_memory_plan(c, 65536, StateStorage::kSpec);
  EXPECT_EQ(p64.comp4_bytes, 200589312u);
  EXPECT_EQ(p64.indexer_bytes, 23396352u);
  EXPECT_EQ(p64.comp128_bytes, 5969920u);
  EXPECT_EQ(p64.total_bytes(), 245370496u);

  const KvPlan p1m = kv_memory_plan(c, 1048576, StateStorage::kSpec);
  EXPECT_EQ(p1m.total_bytes(), 3694704256ull);
  EXPECT_NEAR(p1m.total_bytes() / 1e9, 3.7, 0.01);
}

TEST(MemoryPlan, PartialRowsAndErrors) {
  const ModelConfig& c = flash();
  // 130 tokens: 32 ratio-4 rows, 1 ratio-128 row per layer.
  const KvPlan p = kv_memory_plan(c, 130, StateStorage::kF32);
  EXPECT_EQ(p.comp4_bytes, 21u * 32 * 2048);
  EXPECT_EQ(p.comp128_bytes, 20u * 1 * 2048);
  const KvPlan z = kv_memory_plan(c, 0, StateStorage::kF32);
  EXPECT_EQ(z.rows_bytes(), 0u);
  EXPECT_EQ(z.total_bytes(), z.fixed_bytes());
  EXPECT_THROW(kv_memory_plan(c, -1, StateStorage::kF32), Error);
  ModelConfig bad = c;
  bad.compress_ratio[5] = 8;
  EXPECT_THROW(kv_memory_plan(bad, 64, StateStorage::kF32), Error);
  EXPECT_NE(kv_plan_text(p).find("130 tokens"), std::string::npos);
}

// Decode traffic from the bound layout equals inspect's figures (spec/ARCH.md §14: 9.56 GB per
// token for q2, 13.27 B active parameters), and host-resident layers are attributed.
TEST(MemoryPlan, WeightTrafficMatchesInspect) {
  const LayoutModel lm = build_layout_model("q2");
  const ModelConfig c = layout_config(lm);
  const ModelWeights w = bind_layout(c, lm.tensors);
  const WeightTraffic t = weight_traffic(c, w);
  EXPECT_NEAR(t.bytes_per_token / 1e9, 9.56, 0.01);
  EXPECT_NEAR(t.active_params / 1e9, 13.27, 0.005);
  EXPECT_EQ(t.host_bytes_per_token, 0u);
  std::vector<bool> host(c.n_layer, false);
  host[42] = true;
  const WeightTraffic h = weight_traffic(c, w, host);
  EXPECT_EQ(h.bytes_per_token, t.bytes_per_token);
  const TensorRef& g = w.layers[42].gate_exps;
  // gate + up IQ2_XXS, down Q2_K, 6 of 256 experts.
  const double want = (2.0 * g.nbytes + w.layers[42].down_exps.nbytes) * 6 / 256;
  EXPECT_NEAR((double)h.host_bytes_per_token, want, 3);
}
