// The CPU backend (engine/backend.h) on the tiny model: clone independence, host-state round
// trip, shape checks on restore, and the error naming --gpu in builds without CUDA.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/backend.h"
#include "model/tiny_model.h"
#include "model/weights.h"

using namespace dsv4;
using namespace dsv4::engine;
namespace fs = std::filesystem;

namespace {

const Model& model() {
  static const std::unique_ptr<Model> m = [] {
    TinySpec spec = tiny_preset("tiny");
    spec.mtp = false;
    const fs::path p =
        fs::temp_directory_path() / ("dsv4_test_backend_" + std::to_string(getpid()) + ".gguf");
    write_tiny_model(spec, p.string(), "");
    auto m = load_model(p.string());
    fs::remove(p);  // the mapping stays valid
    return m;
  }();
  return *m;
}

std::vector<int32_t> bytes(const std::string& s) {
  return std::vector<int32_t>(s.begin(), s.end());
}

bool same(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), 4 * a.size()) == 0;
}

}  // namespace

TEST(CpuBackend, CloneAndHostRoundTrip) {
  const auto be = make_cpu_backend(model(), true);
  EXPECT_EQ(be->describe(), "cpu");
  EXPECT_FALSE(be->is_gpu());
  const auto p = bytes("a prompt of some length"), x = bytes("xyz"), y = bytes("uvw");
  auto a = be->new_session();
  std::vector<float> l, la, lb, lc;
  be->forward(*a, p.data(), (int64_t)p.size(), l);
  EXPECT_EQ(l.size(), model().cfg.n_vocab);
  const uint64_t b0 = a->bytes();
  auto b = a->clone();
  CpuSession scratch;
  auto c = be->from_host(CpuSession(a->host_state(scratch)));
  be->forward(*a, y.data(), 3, la);  // the original moves on first
  be->forward(*b, x.data(), 3, lb);
  be->forward(*c, x.data(), 3, lc);
  EXPECT_EQ(b->n_past(), (int64_t)p.size() + 3);
  EXPECT_TRUE(same(lb, lc));
  EXPECT_FALSE(same(la, lb));
  EXPECT_GT(a->bytes(), 0u);
  EXPECT_GE(a->bytes(), b0);
}

TEST(CpuBackend, RestoreChecksShapes) {
  const auto be = make_cpu_backend(model(), true);
  CpuSession s = be->new_host_session();
  s.layers.pop_back();
  EXPECT_THROW(be->from_host(std::move(s)), Error);
  CpuSession t = be->new_host_session();
  t.layers[0].raw.resize(3);
  try {
    be->from_host(std::move(t));
    FAIL() << "a state of another shape was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 0"), std::string::npos) << e.what();
  }
}

#if !DSV4_TEST_HAVE_CUDA
TEST(CpuBackend, GpuRequestNamesTheFlagWithoutCuda) {
  BackendOptions o;
  o.gpu = true;
  o.max_ctx = 64;
  try {
    make_backend(model(), o, "--gpu");
    FAIL() << "a GPU backend was made in a build without CUDA";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--gpu"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no CUDA backend"), std::string::npos) << e.what();
  }
}
#endif
