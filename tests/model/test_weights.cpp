#include <gtest/gtest.h>

#include "core/error.h"
#include "model_test_util.h"

using namespace dsv4;

namespace {

std::string bind_error(const std::function<bool(test::TensorEdit&)>& edit) {
  TinySpec s = tiny_preset("tiny");
  s.mtp = false;
  auto files = test::tiny_files(s);
  auto f = test::rewrite(*files.main, nullptr, edit);
  try {
    bind_model(std::move(f));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Weights, BindsTinyModelWithMtp) {
  TinySpec s = tiny_preset("tiny");
  auto files = test::tiny_files(s);
  auto m = bind_model(std::move(files.main), std::move(files.mtp));
  ASSERT_TRUE(m->w.mtp.has_value());
  EXPECT_EQ(m->w.layers.size(), 5u);
  EXPECT_TRUE(m->w.layers[2].idx_q_b.present());
  EXPECT_FALSE(m->w.layers[3].idx_q_b.present());
  EXPECT_TRUE(m->w.layers[0].tid2eid.present());
  EXPECT_TRUE(m->w.layers[3].exp_probs_b.present());
  EXPECT_EQ(expert_recipe(m->w), "IQ2_XXS/IQ2_XXS/Q2_K");
}

TEST(Weights, BindsAllF32Variant) {
  TinySpec s = tiny_preset("tiny");
  s.all_f32 = true;
  s.mtp = false;
  auto files = test::tiny_files(s);
  auto m = bind_model(std::move(files.main));
  EXPECT_EQ(expert_recipe(m->w), "F32/F32/F32");
}

TEST(Weights, RefusesWrongTensorsNamingThem) {
  EXPECT_NE(bind_error([](test::TensorEdit& e) {
              return e.name != "blk.3.attn_kv.weight";
            }).find("missing tensor 'blk.3.attn_kv.weight'"),
            std::string::npos);
  // Wrong shape.
  EXPECT_NE(bind_error([](test::TensorEdit& e) {
              if (e.name == "blk.1.attn_sinks.weight") {
                e.ne = {2};
                e.bytes.resize(8);
              }
              return true;
            }).find("'blk.1.attn_sinks.weight' has shape [2], expected [4]"),
            std::string::npos);
  // Wrong type: a norm stored as F16.
  EXPECT_NE(bind_error([](test::TensorEdit& e) {
              if (e.name == "output_norm.weight") {
                e.type = GgmlType::F16;
                e.bytes.resize(e.bytes.size() / 2);
              }
              return true;
            }).find("'output_norm.weight' has type F16, expected F32"),
            std::string::npos);
  // Gate and up experts of different types.
  EXPECT_NE(bind_error([](test::TensorEdit& e) {
              if (e.name == "blk.4.ffn_up_exps.weight") {
                e.type = GgmlType::Q2_K;
                e.bytes.assign(ggml_row_bytes(GgmlType::Q2_K, e.ne[0]) * e.ne[1] * e.ne[2], 0);
              }
              return true;
            }).find("must share a type"),
            std::string::npos);
  // A routed expert type the published files never use.
  EXPECT_NE(bind_error([](test::TensorEdit& e) {
              if (e.name == "blk.0.ffn_down_exps.weight") {
                e.type = GgmlType::Q8_0;
                e.bytes.assign(ggml_row_bytes(GgmlType::Q8_0, e.ne[0]) * e.ne[1] * e.ne[2], 0);
              }
              return true;
            }).find("'blk.0.ffn_down_exps.weight' has type Q8_0"),
            std::string::npos);
  // Hash table pointing outside the experts.
  EXPECT_NE(bind_error([](test::TensorEdit& e) {
              if (e.name == "blk.2.ffn_gate_tid2eid.weight") e.bytes[4 * 7] = 99;
              return true;
            }).find("'blk.2.ffn_gate_tid2eid.weight' entry 7"),
            std::string::npos);
}
