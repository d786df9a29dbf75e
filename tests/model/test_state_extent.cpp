// layer_state_extent against the sizes the CPU forward really produces: every layer's buffers
// and the MTP block's, after token counts on and off the ratio-4 and ratio-128 boundaries.
#include <gtest/gtest.h>

#include "core/error.h"
#include "model/cpu_forward.h"
#include "model/state_extent.h"
#include "model_test_util.h"

using namespace dsv4;

namespace {

void expect_extent(const LayerState& st, const LayerStateExtent& e, const std::string& what) {
  EXPECT_EQ(st.raw.size(), e.raw) << what;
  EXPECT_EQ(st.comp.size(), e.comp) << what;
  EXPECT_EQ(st.idx.size(), e.idx) << what;
  EXPECT_EQ(st.ckv.size(), e.ckv) << what;
  EXPECT_EQ(st.cscore.size(), e.cscore) << what;
  EXPECT_EQ(st.ikv.size(), e.ikv) << what;
  EXPECT_EQ(st.iscore.size(), e.iscore) << what;
}

void expect_session(const ModelConfig& c, const CpuSession& s, const std::string& when) {
  ASSERT_EQ(s.layers.size(), c.n_layer);
  for (uint32_t l = 0; l < c.n_layer; ++l)
    expect_extent(s.layers[l], layer_state_extent(c, c.ratio(l), s.n_past),
                  when + " layer " + std::to_string(l));
  expect_extent(s.mtp, layer_state_extent(c, 0, s.mtp_n_past), when + " MTP");
}

}  // namespace

// Hand-computed sizes on the published dimensions (head_dim 512, indexer 128, window 128).
TEST(StateExtent, FlashShapes) {
  ModelConfig c;
  c.head_dim = 512;
  c.idx_head_dim = 128;
  c.window = 128;
  const LayerStateExtent r4 = layer_state_extent(c, 4, 10);  // two closed windows, 2 pending
  EXPECT_EQ(r4.raw, 128u * 512);
  EXPECT_EQ(r4.comp, 2u * 512);
  EXPECT_EQ(r4.idx, 2u * 128);
  EXPECT_EQ(r4.ckv, 2u * 4 * 2 * 512);  // two lanes of 4 slots, each slot two lanes wide
  EXPECT_EQ(r4.cscore, r4.ckv);
  EXPECT_EQ(r4.ikv, 8u * 2 * 128);
  EXPECT_EQ(r4.iscore, r4.ikv);
  const LayerStateExtent r128 = layer_state_extent(c, 128, 300);
  EXPECT_EQ(r128.comp, 2u * 512);
  EXPECT_EQ(r128.ckv, 128u * 512);
  EXPECT_EQ(r128.cscore, r128.ckv);
  EXPECT_EQ(r128.idx, 0u);
  EXPECT_EQ(r128.ikv + r128.iscore, 0u);
  const LayerStateExtent r0 = layer_state_extent(c, 0, 1000);  // window-only (and MTP)
  EXPECT_EQ(r0.raw, 128u * 512);
  EXPECT_EQ(r0.comp + r0.idx + r0.ckv + r0.cscore + r0.ikv + r0.iscore, 0u);
  EXPECT_THROW(layer_state_extent(c, 4, -1), Error);
}

// The tiny model has layers of ratio 0, 4 and 128 and an MTP block. Chunks end on and off the
// boundaries: 1, 3, 4 (ratio 4 closes), 7, 127, 128 (ratio 128 closes), 131, 257.
TEST(StateExtent, MatchesCpuForwardAndMtp) {
  TinySpec spec = tiny_preset("tiny");
  auto f = test::tiny_files(spec);
  auto model = bind_model(std::move(f.main), std::move(f.mtp));
  CpuModel m(*model, CpuOptions{});
  ASSERT_TRUE(m.has_mtp());
  const ModelConfig& c = m.config();
  CpuSession s = m.new_session();
  expect_session(c, s, "fresh");
  const int64_t ends[] = {1, 3, 4, 7, 127, 128, 131, 257};
  std::vector<int32_t> toks;
  for (int i = 0; i < 258; ++i) toks.push_back((i * 37 + 11) % 256);
  const int64_t HD = c.hc_dim();
  for (const int64_t end : ends) {
    const int64_t p0 = s.n_past, n = end - p0;
    ForwardResult r;
    m.forward(s, &toks[(size_t)p0], n, false, true, r);
    // The MTP block follows the main model: states of positions p0.., next tokens p0+1...
    std::vector<float> logits;
    m.mtp_forward(s, r.hc_final.data(), &toks[(size_t)p0 + 1], n, logits);
    ASSERT_EQ(s.n_past, end);
    ASSERT_EQ(s.mtp_n_past, end);
    ASSERT_EQ((int64_t)r.hc_final.size(), n * HD);
    expect_session(c, s, "after " + std::to_string(end) + " tokens");
  }
  // The rows really grew: 257 tokens close 64 ratio-4 windows and 2 ratio-128 ones.
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const size_t rows = c.ratio(l) == 4 ? 64 : c.ratio(l) == 128 ? 2 : 0;
    EXPECT_EQ(s.layers[l].comp.size(), rows * c.head_dim) << l;
  }
}
