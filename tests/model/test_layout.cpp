#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "model/inspect.h"
#include "model/tiny_model.h"

using namespace dsv4;
namespace fs = std::filesystem;

// The full-size published layouts, written as sparse files (no disk cost), are accepted and
// measured: 284.33 B parameters, 80.76 GiB (q2), 153.3 GiB (q4), 6.61 B MTP parameters.
TEST(Layout, PublishedQ2Q4AndMtp) {
  const fs::path dir = fs::temp_directory_path() / ("dsv4_layout_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string q2 = dir / "q2.gguf", q4 = dir / "q4.gguf", mtp = dir / "mtp.gguf";
  write_layout_model("q2", q2);
  write_layout_model("q4", q4);
  write_layout_model("mtp", mtp);
  struct stat st {};
  ASSERT_EQ(stat(q2.c_str(), &st), 0);
  EXPECT_LT((uint64_t)st.st_blocks * 512, 64ull << 20) << "layout file should be sparse";

  auto m2 = load_model(q2, mtp);
  const ModelSummary s2 = summarize(*m2);
  EXPECT_EQ(s2.layout, "published q2");
  EXPECT_EQ(s2.n_tensors, 1328u);
  EXPECT_NEAR(s2.params_total / 1e9, 284.33, 0.005);
  EXPECT_NEAR(s2.params_active / 1e9, 13.27, 0.005);
  EXPECT_NEAR(s2.params_mtp / 1e9, 6.61, 0.005);
  EXPECT_NEAR(s2.bytes_total / 1073741824.0, 80.76, 0.005);
  EXPECT_NEAR(s2.bytes_per_token / 1e9, 9.56, 0.01);
  EXPECT_TRUE(m2->cfg.is_flash_shape());

  auto m4 = load_model(q4);
  const ModelSummary s4 = summarize(*m4);
  EXPECT_EQ(s4.layout, "published q4");
  EXPECT_NEAR(s4.bytes_total / 1073741824.0, 153.3, 0.05);
  EXPECT_NEAR(s4.bytes_per_token / 1e9, 11.38, 0.01);
  fs::remove_all(dir);
}

// The same layouts in memory (no file): the config and every bound tensor's name, type, shape
// and size equal the file's; no data pointers.
TEST(Layout, InMemoryLayoutBindsLikeTheFile) {
  const fs::path dir = fs::temp_directory_path() / ("dsv4_layout_mem_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string q2 = dir / "q2.gguf";
  write_layout_model("q2", q2);
  auto file = load_model(q2);
  const LayoutModel lm = build_layout_model("q2");
  const ModelConfig cfg = layout_config(lm);
  EXPECT_TRUE(cfg.is_flash_shape());
  EXPECT_EQ(cfg.n_layer, file->cfg.n_layer);
  EXPECT_EQ(cfg.compress_ratio, file->cfg.compress_ratio);
  ASSERT_EQ(lm.tensors.size(), file->file->tensors().size());
  uint64_t total = 0;
  for (size_t i = 0; i < lm.tensors.size(); ++i) {
    const auto& a = lm.tensors[i];
    const auto& b = file->file->tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.type, b.type) << a.name;
    EXPECT_EQ(a.ne, b.ne) << a.name;
    EXPECT_EQ(a.nbytes, b.nbytes) << a.name;
    EXPECT_EQ(a.data, nullptr);
    total += a.nbytes;
  }
  EXPECT_NEAR(total / 1073741824.0, 80.76, 0.005);
  const ModelWeights w = bind_layout(cfg, lm.tensors);
  ASSERT_EQ(w.layers.size(), 43u);
  EXPECT_FALSE(w.mtp.has_value());
  EXPECT_EQ(w.layers[5].down_exps.nbytes, file->w.layers[5].down_exps.nbytes);
  EXPECT_EQ(w.layers[5].down_exps.type, GgmlType::Q2_K);
  EXPECT_EQ(w.layers[0].tid2eid.data, nullptr);
  EXPECT_EQ(w.layers[0].tid2eid.name, "blk.0.ffn_gate_tid2eid.weight");
  EXPECT_EQ(w.output.ne[1], 129280);
  const LayoutModel mtp_layout = build_layout_model("mtp");
  const ModelWeights wm = bind_layout(cfg, lm.tensors, &mtp_layout.tensors);
  ASSERT_TRUE(wm.mtp.has_value());
  EXPECT_EQ(wm.mtp->block.gate_exps.type, GgmlType::Q4_K);
  EXPECT_THROW(build_layout_model("q3"), Error);

  // A tiny spec's layout matches its generated file tensor for tensor.
  const TinySpec spec = tiny_preset("tiny");
  const LayoutModel tl = layout_of_spec(spec);
  const TinyFiles tf = build_tiny_model(spec);
  const gguf::File tfile = gguf::File::parse(MappedFile::from_bytes(tf.main.to_bytes(), "tiny"));
  ASSERT_EQ(tl.tensors.size(), tfile.tensors().size());
  for (size_t i = 0; i < tl.tensors.size(); ++i) {
    EXPECT_EQ(tl.tensors[i].name, tfile.tensors()[i].name);
    EXPECT_EQ(tl.tensors[i].nbytes, tfile.tensors()[i].nbytes);
  }
  EXPECT_EQ(layout_config(tl).n_vocab, read_model_config(tfile).n_vocab);
  fs::remove_all(dir);
}
