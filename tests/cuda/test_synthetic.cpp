// Synthetic device models: every generated tensor decodes to finite values with the CPU
// decoders, the hash routing table holds valid distinct expert ids, the same seed gives the
// same bytes, and the placement logic (device vs pinned host experts) is right. Needs a CUDA
// device except for the placement arithmetic.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "cuda/device.h"
#include "cuda/synthetic.h"
#include "model/tiny_model.h"
#include "quant/quant.h"

using namespace dsv4;
using namespace dsv4::cuda;

namespace {

#define REQUIRE_DEVICE()                                       \
  do {                                                         \
    if (device_count() == 0) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

std::vector<uint8_t> download(const TensorRef& t) {
  std::vector<uint8_t> b(t.nbytes);
  DSV4_CUDA_CHECK(cudaMemcpy(b.data(), t.data, t.nbytes, cudaMemcpyDefault));
  return b;
}

std::vector<const TensorRef*> all_refs(const ModelWeights& w) {
  std::vector<const TensorRef*> out;
  for_each_tensor(w, [&](const TensorRef& t) {
    if (!t.name.empty()) out.push_back(&t);
  });
  return out;
}

// Decodes `bytes` (tensor `t`) with the CPU decoders: finite values, norms about 1, matrices of
// RMS about 1/sqrt(row length); I32 hash tables: distinct ids < n_expert per row.
void check_values(const gguf::TensorInfo& t, const std::vector<uint8_t>& bytes, uint32_t n_expert) {
  if (t.type == GgmlType::I32) {
    const int32_t* ids = reinterpret_cast<const int32_t*>(bytes.data());
    const uint64_t k = t.ne[0];
    for (uint64_t r = 0; r < t.ne[1]; ++r)
      for (uint64_t j = 0; j < k; ++j) {
        const int32_t e = ids[r * k + j];
        ASSERT_TRUE(e >= 0 && (uint32_t)e < n_expert) << "row " << r;
        for (uint64_t q = 0; q < j; ++q) ASSERT_NE(ids[r * k + q], e) << "row " << r;
      }
    return;
  }
  const int64_t n = (int64_t)t.n_elements();
  std::vector<float> v((size_t)n);
  quant::dequantize_row(t.type, bytes.data(), v.data(), n);
  double ss = 0;
  for (float x : v) {
    ASSERT_TRUE(std::isfinite(x));
    ss += (double)x * x;
  }
  const double rms = std::sqrt(ss / n);
  if (t.name.find("norm.weight") != std::string::npos) {
    EXPECT_NEAR(rms, 1.0, 0.05);
  } else if (t.ne.size() > 1 && t.name.find("ape") == std::string::npos &&
             t.name != "token_embd.weight" && t.name != "output.weight") {
    const double want = 1.0 / std::sqrt((double)t.ne[0]);
    EXPECT_GT(rms, 0.4 * want);
    EXPECT_LT(rms, 2.0 * want);
  }
}

}  // namespace

TEST(SyntheticPlacement, HostLayers) {
  const std::vector<uint64_t> per(10, 100);
  // Auto: free 1000, reserve 100, others 300 -> 600 left -> 6 layers on device.
  EXPECT_EQ(host_expert_layers(-1, 100, 1000, 300, per), 4);
  EXPECT_EQ(host_expert_layers(-1, 0, 5000, 300, per), 0);
  EXPECT_EQ(host_expert_layers(-1, 100, 400, 300, per), 10);
  EXPECT_EQ(host_expert_layers(1.0, 100, 1000, 300, per), 10);
  EXPECT_EQ(host_expert_layers(0.5, 100, 1000, 300, per), 5);
  EXPECT_EQ(host_expert_layers(0.0, 0, 1300, 300, per), 0);
  EXPECT_THROW(host_expert_layers(0.0, 100, 1000, 300, per), Error);  // does not fit
  EXPECT_THROW(host_expert_layers(-1, 100, 350, 300, per), Error);    // others do not fit
  EXPECT_THROW(host_expert_layers(1.5, 0, 5000, 300, per), Error);
  EXPECT_THROW(host_expert_layers(std::nan(""), 0, 5000, 300, per), Error);
}

// The generator's values, replayed on the CPU (no device): every tensor of the tiny layouts
// decodes to finite values of the intended size, the hash table holds distinct valid ids, and
// the same seed gives the same bytes.
TEST(SyntheticHost, TinyLayoutValues) {
  for (const char* preset : {"tiny", "tiny-q4"}) {
    SCOPED_TRACE(preset);
    const LayoutModel lm = layout_of_spec(tiny_preset(preset));
    const ModelConfig cfg = layout_config(lm);
    size_t differing = 0;
    for (const auto& t : lm.tensors) {
      SCOPED_TRACE(t.name);
      const std::vector<uint8_t> bytes = synthesize_tensor_host(t, cfg, 42);
      ASSERT_EQ(bytes.size(), t.nbytes);
      EXPECT_EQ(bytes, synthesize_tensor_host(t, cfg, 42));
      differing += bytes != synthesize_tensor_host(t, cfg, 43);
      check_values(t, bytes, cfg.n_expert);
    }
    EXPECT_GT(differing, lm.tensors.size() / 2) << "another seed should change the data";
  }
}

// On the device (part of the experts in pinned host memory): every tensor holds exactly the
// CPU replay's bytes (so the checks above apply), the placement is as asked, the same seed gives
// the same bytes and another seed different ones.
TEST(Synthetic, TinyLayoutMatchesHostReplay) {
  REQUIRE_DEVICE();
  for (const char* preset : {"tiny", "tiny-q4"}) {
    SCOPED_TRACE(preset);
    const LayoutModel lm = layout_of_spec(tiny_preset(preset));
    PlacementOptions opt;
    opt.expert_host_fraction = 0.4;  // 2 of 5 layers' experts in pinned host memory
    opt.reserve_bytes = 0;
    auto a = synthesize_layout(lm, preset, 42, opt);
    auto b = synthesize_layout(lm, preset, 42, opt);
    auto c = synthesize_layout(lm, preset, 43, opt);
    ASSERT_EQ(a->host_resident.size(), 5u);
    EXPECT_FALSE(a->host_resident[2]);
    EXPECT_TRUE(a->host_resident[3]);
    EXPECT_TRUE(a->host_resident[4]);
    EXPECT_GT(a->host_bytes, 0u);
    EXPECT_GT(a->device_bytes, 0u);
    uint64_t total = 0;
    for (const auto& t : lm.tensors) total += t.nbytes;
    EXPECT_EQ(a->device_bytes + a->host_bytes, total);
    const auto ra = all_refs(a->w), rb = all_refs(b->w), rc = all_refs(c->w);
    ASSERT_EQ(ra.size(), lm.tensors.size());
    std::map<std::string, const gguf::TensorInfo*> info;
    for (const auto& t : lm.tensors) info[t.name] = &t;
    size_t differing = 0;
    for (size_t i = 0; i < ra.size(); ++i) {
      const TensorRef& t = *ra[i];
      SCOPED_TRACE(t.name);
      ASSERT_NE(t.data, nullptr);
      ASSERT_TRUE(info.count(t.name));
      const std::vector<uint8_t> bytes = download(t);
      EXPECT_EQ(bytes, synthesize_tensor_host(*info[t.name], a->cfg, 42)) << "device != host";
      EXPECT_EQ(bytes, download(*rb[i])) << "same seed, different bytes";
      differing += bytes != download(*rc[i]);
    }
    EXPECT_GT(differing, ra.size() / 2) << "another seed should change the data";
  }
}

TEST(Synthetic, UnknownRecipeThrows) {
  EXPECT_THROW(synthesize_model("q3", 1), Error);
}

// The full published q2 layout (80.76 GiB): opt-in (DSV4_TEST_FULL_SYNTH=1) since it takes the
// whole GPU. Auto placement; spot-checks a few tensors on the device and on the host.
TEST(Synthetic, FullQ2Layout) {
  REQUIRE_DEVICE();
  const char* env = std::getenv("DSV4_TEST_FULL_SYNTH");
  if (!env || std::string(env) != "1") GTEST_SKIP() << "set DSV4_TEST_FULL_SYNTH=1";
  auto dm = synthesize_model("q2", 7);
  EXPECT_NEAR((dm->device_bytes + dm->host_bytes) / 1073741824.0, 80.76, 0.005);
  EXPECT_TRUE(dm->cfg.is_flash_shape());
  ASSERT_EQ(dm->host_resident.size(), 43u);
  for (uint32_t l : {0u, 21u, 42u}) {
    const LayerWeights& L = dm->w.layers[l];
    for (const TensorRef* t : {&L.q_a, &L.down_exps, &L.gate_exps}) {
      SCOPED_TRACE(t->name);
      // First and last 1 MiB-ish of whole blocks.
      const uint64_t rb = t->row_bytes();
      const uint64_t rows = std::min<uint64_t>(64, t->nbytes / rb);
      std::vector<uint8_t> b(rows * rb);
      for (uint64_t off : {uint64_t{0}, t->nbytes - rows * rb}) {
        DSV4_CUDA_CHECK(cudaMemcpy(b.data(), t->data + off, b.size(), cudaMemcpyDefault));
        std::vector<float> v((size_t)(rows * t->ne[0]));
        quant::dequantize_row(t->type, b.data(), v.data(), (int64_t)v.size());
        for (float x : v) ASSERT_TRUE(std::isfinite(x));
      }
    }
  }
}
