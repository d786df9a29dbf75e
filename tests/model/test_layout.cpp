#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

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
