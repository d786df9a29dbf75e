#include <gtest/gtest.h>

#include "core/error.h"
#include "model/config.h"
#include "model_test_util.h"

using namespace dsv4;

namespace {

std::string config_error(const std::function<void(gguf::Writer&)>& edit) {
  TinySpec s = tiny_preset("tiny");
  s.mtp = false;
  auto files = test::tiny_files(s);
  auto f = test::rewrite(*files.main, edit);
  try {
    read_model_config(*f);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Config, ReadsTinyModel) {
  TinySpec s = tiny_preset("tiny");
  auto files = test::tiny_files(s);
  ModelConfig c = read_model_config(*files.main);
  EXPECT_EQ(c.n_layer, 5u);
  EXPECT_EQ(c.n_embd, 256u);
  EXPECT_EQ(c.head_dim, 512u);
  EXPECT_EQ(c.nope_dim(), 448u);
  EXPECT_EQ(c.compress_ratio, (std::vector<uint32_t>{0, 0, 4, 128, 4}));
  EXPECT_EQ(c.hc_mix(), 24u);
  EXPECT_FLOAT_EQ(c.expert_weights_scale, 1.5f);
  EXPECT_FALSE(c.is_flash_shape());
}

TEST(Config, RejectsBadValuesNamingTheKey) {
  using gguf::Value;
  struct Case {
    std::function<void(gguf::Writer&)> edit;
    const char* needle;
  };
  const Case cases[] = {
      {[](gguf::Writer& w) { w.set("deepseek4.attention.head_count_kv", Value::u32(2)); },
       "deepseek4.attention.head_count_kv"},
      {[](gguf::Writer& w) { w.set("deepseek4.attention.value_length", Value::u32(256)); },
       "value_length"},
      {[](gguf::Writer& w) { w.set("deepseek4.rope.dimension_count", Value::u32(96)); },
       "multiple of 64"},
      {[](gguf::Writer& w) { w.set("deepseek4.attention.indexer.key_length", Value::u32(96)); },
       "power of two"},
      {[](gguf::Writer& w) { w.set("deepseek4.expert_used_count", Value::u32(17)); },
       "expert_used_count"},
      {[](gguf::Writer& w) { w.set("deepseek4.attention.output_group_count", Value::u32(3)); },
       "must divide head_count"},
      {[](gguf::Writer& w) {
         w.set("deepseek4.attention.compress_ratios", Value::array_u32({0, 0, 4}));
       },
       "needs at least block_count"},
      {[](gguf::Writer& w) {
         w.set("deepseek4.attention.compress_ratios", Value::array_u32({0, 0, 4, 64, 4, 0}));
       },
       "entry 3 is 64"},
      {[](gguf::Writer& w) {
         w.set("deepseek4.swiglu_clamp_exp", Value::array_f32({10, 10}));
       },
       "swiglu_clamp_exp"},
      {[](gguf::Writer& w) { w.set("deepseek4.expert_gating_func", Value::u32(2)); },
       "expert_gating_func"},
      {[](gguf::Writer& w) { w.set("deepseek4.expert_group_count", Value::u32(8)); },
       "grouped top-k"},
      {[](gguf::Writer& w) { w.set("deepseek4.block_count", Value::i32(5)); },
       "deepseek4.block_count"},  // wrong GGUF type: must be UINT32
      {[](gguf::Writer& w) { w.set("deepseek4.expert_weights_norm", Value::boolean(false)); },
       "expert_weights_norm"},
      {[](gguf::Writer& w) { w.set("general.architecture", Value::str("llama")); },
       "general.architecture"},
  };
  for (const auto& c : cases) {
    const std::string err = config_error(c.edit);
    EXPECT_NE(err.find(c.needle), std::string::npos) << "expected '" << c.needle << "' in: " << err;
  }
}
