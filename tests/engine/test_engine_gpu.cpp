// The GPU backend (engine/backend.h over CudaModel) against the CPU backend on the generated tiny
// model (label gpu; every test skips with a message when no CUDA device is present):
//  * greedy decoding: GPU logits equal the CPU's to f32 rounding (gpu_exact, QAT off) and pick the
//    same token except at a near tie;
//  * download -> upload of a session, then more tokens: the same logits bit for bit as the
//    uninterrupted session; the downloaded state equals the CPU reference's (host layout);
//  * clone: an independent session;
//  * the Engine with --gpu: the same text as the CPU engine, prefix reuse, and disk snapshots
//    written from GPU sessions restore into CPU sessions and vice versa.
// Prompts are longer than the raw window (128) and cover several compressed and indexer rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "cuda/device.h"
#include "engine/backend.h"
#include "engine/engine.h"
#include "model/tiny_model.h"
#include "model/weights.h"
#include "tiny_model_fixture.h"

using namespace dsv4;
using namespace dsv4::engine;
namespace fs = std::filesystem;

namespace {

using engine_test::model_path;
using engine_test::temp_root;

#define SKIP_WITHOUT_GPU() \
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device: the GPU backend tests need one"

const Model& model() {
  static const std::unique_ptr<Model> m = load_model(model_path());
  return *m;
}

// QAT off: the FP8/FP4 roundings would turn f32-rounding differences into occasional one-step
// jumps; without them GPU and CPU agree to ~1e-5 of the logit range (test_cuda_forward).
const Backend& cpu() {
  static const auto b = make_cpu_backend(model(), false);
  return *b;
}
const Backend& gpu() {
  static const auto b = [] {
    BackendOptions o;
    o.gpu = true;
    o.qat = false;
    o.max_ctx = 1024;
    o.gpu_batch = 256;  // prompts of 300 tokens run as two chunks
    o.gpu_exact = true;
    return make_backend(model(), o);
  }();
  return *b;
}

std::vector<int32_t> random_tokens(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t((size_t)n);
  for (auto& x : t) x = (int32_t)(rng() % 256);  // byte tokens
  return t;
}

int argmax(const std::vector<float>& x) {
  return (int)(std::max_element(x.begin(), x.end()) - x.begin());
}
float top2_margin(const std::vector<float>& x) {
  float a = -INFINITY, b = -INFINITY;
  for (float v : x) {
    if (v > a) {
      b = a;
      a = v;
    } else if (v > b) {
      b = v;
    }
  }
  return a - b;
}
// max |a - b| relative to max(1, max |b|).
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0, r = 1;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    d = std::max(d, (double)std::fabs(a[i] - b[i]));
    r = std::max(r, (double)std::fabs(b[i]));
  }
  return d / r;
}
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), 4 * a.size()) == 0;
}
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, (double)std::fabs(a[i] - b[i]));
  return d;
}

}  // namespace

TEST(GpuBackend, GreedyDecodeMatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::printf("  backend: %s\n", gpu().describe().c_str());
  const auto prompt = random_tokens(300, 1);
  auto cs = cpu().new_session();
  auto gs = gpu().new_session();
  std::vector<float> lc, lg;
  cpu().forward(*cs, prompt.data(), 300, lc);
  gpu().forward(*gs, prompt.data(), 100, lg);  // chunked differently from the CPU
  gpu().forward(*gs, prompt.data() + 100, 200, lg);
  EXPECT_EQ(gs->n_past(), 300);
  double worst = rel_diff(lg, lc);
  int ties = 0, agree = 0;
  const int steps = 40;
  for (int s = 0; s < steps; ++s) {
    const int32_t next = argmax(lc);  // the CPU's choice is fed to both
    if (argmax(lg) == next)
      ++agree;
    else if (top2_margin(lc) < 1e-3f)
      ++ties;  // a near tie may go either way
    cpu().forward(*cs, &next, 1, lc);
    gpu().forward(*gs, &next, 1, lg);
    worst = std::max(worst, rel_diff(lg, lc));
  }
  std::printf("  max |dlogit| / max|logit| = %.3g; greedy agreement %d/%d (%d near ties)\n", worst,
              agree, steps, ties);
  EXPECT_LE(worst, 1e-3);
  EXPECT_EQ(agree + ties, steps);
  EXPECT_GT(gs->bytes(), 0u);
}

TEST(GpuBackend, DownloadUploadRoundTripContinuesIdentically) {
  SKIP_WITHOUT_GPU();
  const auto prompt = random_tokens(301, 2);  // 301: an open compressor window at the end
  const auto more = random_tokens(40, 3);
  auto a = gpu().new_session();
  std::vector<float> la, lb;
  gpu().forward(*a, prompt.data(), 301, la);
  CpuSession scratch;
  CpuSession host = a->host_state(scratch);  // a copy: `a` goes on
  ASSERT_EQ(host.n_past, 301);

  // The host layout equals the CPU reference's state after the same tokens (raw ring slot
  // pos % window, compressed and indexer rows in order), to f32 rounding.
  auto c = cpu().new_session();
  std::vector<float> lc;
  cpu().forward(*c, prompt.data(), 301, lc);
  CpuSession cscratch;
  const CpuSession& ref = c->host_state(cscratch);
  ASSERT_EQ(host.layers.size(), ref.layers.size());
  double worst = 0;
  for (size_t l = 0; l < ref.layers.size(); ++l) {
    const LayerState &g = host.layers[l], &r = ref.layers[l];
    EXPECT_EQ(g.raw.size(), r.raw.size()) << "layer " << l;
    EXPECT_EQ(g.comp.size(), r.comp.size()) << "layer " << l;
    EXPECT_EQ(g.idx.size(), r.idx.size()) << "layer " << l;
    EXPECT_EQ(g.ckv.size(), r.ckv.size()) << "layer " << l;
    EXPECT_EQ(g.ikv.size(), r.ikv.size()) << "layer " << l;
    worst = std::max({worst, max_abs_diff(g.raw, r.raw), max_abs_diff(g.comp, r.comp),
                      max_abs_diff(g.idx, r.idx)});
  }
  std::printf("  downloaded state vs CPU state: max |diff| %.3g\n", worst);
  EXPECT_LE(worst, 1e-3);

  auto b = gpu().from_host(CpuSession(host));
  EXPECT_EQ(b->n_past(), 301);
  // Decode steps (graph replay) and then a multi-token chunk: bit for bit what `a` computes.
  for (int i = 0; i < 20; ++i) {
    gpu().forward(*a, &more[i], 1, la);
    gpu().forward(*b, &more[i], 1, lb);
    ASSERT_TRUE(same_bits(la, lb)) << "step " << i;
  }
  gpu().forward(*a, more.data() + 20, 20, la);
  gpu().forward(*b, more.data() + 20, 20, lb);
  EXPECT_TRUE(same_bits(la, lb));

  // The GPU state continues on the CPU, and the CPU state on the GPU (the frontiers included).
  auto on_cpu = cpu().from_host(CpuSession(host));
  auto on_gpu = gpu().from_host(CpuSession(ref));
  std::vector<float> x, y;
  cpu().forward(*on_cpu, more.data(), 40, x);
  gpu().forward(*on_gpu, more.data(), 40, y);
  cpu().forward(*c, more.data(), 40, lc);
  EXPECT_LE(rel_diff(x, lc), 1e-3);
  EXPECT_LE(rel_diff(y, lc), 1e-3);
  EXPECT_LE(rel_diff(la, lc), 1e-3);

  // Too long for the session capacity: a clear error, not a crash.
  CpuSession big = cpu().new_host_session();
  big.n_past = 5000;
  try {
    gpu().from_host(std::move(big));
    FAIL() << "a state longer than the capacity was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_ctx = 1024"), std::string::npos) << e.what();
  }
}

TEST(GpuBackend, CloneIsIndependent) {
  SKIP_WITHOUT_GPU();
  const auto prompt = random_tokens(200, 4);
  const auto x = random_tokens(10, 5), y = random_tokens(10, 6);
  auto a = gpu().new_session();
  std::vector<float> l;
  gpu().forward(*a, prompt.data(), 200, l);
  auto b = a->clone();
  EXPECT_EQ(b->n_past(), 200);
  EXPECT_EQ(b->bytes(), a->bytes());
  std::vector<float> la, lb, ra, rb;
  gpu().forward(*a, y.data(), 10, la);  // the original moves on first
  gpu().forward(*b, x.data(), 10, lb);
  EXPECT_EQ(a->n_past(), 210);
  EXPECT_EQ(b->n_past(), 210);
  // References: fresh sessions fed the same way.
  auto fa = gpu().new_session();
  auto fb = gpu().new_session();
  gpu().forward(*fa, prompt.data(), 200, l);
  gpu().forward(*fb, prompt.data(), 200, l);
  gpu().forward(*fa, y.data(), 10, ra);
  gpu().forward(*fb, x.data(), 10, rb);
  EXPECT_TRUE(same_bits(la, ra));
  EXPECT_TRUE(same_bits(lb, rb));
  EXPECT_FALSE(same_bits(la, lb));
}

// ---- The Engine with the GPU backend.

namespace {

using Kind = GenEvent::Kind;

EngineOptions engine_options(bool use_gpu) {
  EngineOptions o;
  o.model_path = model_path();
  o.threads = 2;
  o.qat = false;
  o.ctx_limit = 1024;
  o.gpu = use_gpu;
  o.gpu_exact = true;
  o.prefill_chunk = use_gpu ? 256 : 64;
  return o;
}

struct Result {
  std::string content;
  GenEvent done;
};

Result run(Engine& e, GenerationRequest req) {
  auto res = std::make_shared<Result>();
  e.submit(std::move(req), [res](const GenEvent& ev) {
     if (ev.kind == Kind::kContent) res->content += ev.text;
     if (ev.kind == Kind::kDone) res->done = ev;
   })->wait();
  return *res;
}

GenerationRequest completion(std::string prompt, int64_t max_tokens) {
  GenerationRequest r;
  r.raw_prompt = std::move(prompt);
  r.sampling.temperature = 0;
  r.stop.max_tokens = max_tokens;
  return r;
}

GenerationRequest chat(std::string user, int64_t max_tokens) {
  text::Message m;
  m.role = text::Role::kUser;
  m.content = std::move(user);
  GenerationRequest r;
  r.conversation = text::Conversation{{m}, {}};
  r.render.mode = text::ThinkingMode::kChat;
  r.sampling.temperature = 0;
  r.stop.max_tokens = max_tokens;
  return r;
}

// ~300 bytes: longer than the raw window, several compressed rows of both ratios.
std::string long_text(const char* seed) {
  std::string s;
  for (int i = 0; s.size() < 300; ++i) s += std::string(seed) + " " + std::to_string(i * 37) + ";";
  return s;
}

}  // namespace

TEST(GpuEngine, SameTextAsCpuAndPrefixReuse) {
  SKIP_WITHOUT_GPU();
  Engine g(engine_options(true));
  Engine c(engine_options(false));
  std::printf("  engine backend: %s\n", g.backend_description().c_str());
  EXPECT_NE(g.backend_description().find("cuda"), std::string::npos);
  const auto reqs = {completion(long_text("Once upon a time"), 12), chat(long_text("Hello"), 12),
                     completion("ab", 8)};
  for (const GenerationRequest& req : reqs) {
    const Result a = run(g, req);
    const Result b = run(c, req);
    EXPECT_EQ(a.done.finish, b.done.finish);
    EXPECT_EQ(a.done.usage.completion_tokens, b.done.usage.completion_tokens);
    EXPECT_EQ(a.content, b.content);
    // The same request again on the GPU: all but the last prompt token come from the snapshot.
    const Result again = run(g, req);
    EXPECT_EQ(again.done.usage.cache_source, Usage::CacheSource::kMemory);
    EXPECT_EQ(again.done.usage.cached_tokens, again.done.usage.prompt_tokens - 1);
    EXPECT_EQ(again.content, a.content);
  }
  const EngineStats st = g.stats();
  EXPECT_GT(st.live_sessions, 0);
  EXPECT_GT(st.session_bytes, 0u);  // device bytes of the pooled GPU sessions
}

TEST(GpuEngine, DiskSnapshotsCrossBackends) {
  SKIP_WITHOUT_GPU();
  for (const bool gpu_writes : {true, false}) {
    const fs::path dir = temp_root() / (gpu_writes ? "kv_from_gpu" : "kv_from_cpu");
    auto opts = [&](bool use_gpu) {
      EngineOptions o = engine_options(use_gpu);
      o.kv_disk_dir = dir.string();
      o.kv_disk_min_tokens = 16;
      o.kv_disk_align = 128;
      return o;
    };
    const auto req = completion(long_text("Disk cache"), 8);
    Result first;
    {
      Engine w(opts(gpu_writes));
      first = run(w, req);
      EXPECT_GE(w.stats().disk_files, 2) << "snapshots at 128, 256 and the last-but-one token";
    }
    Engine r(opts(!gpu_writes));
    const Result again = run(r, req);
    EXPECT_EQ(again.done.usage.cache_source, Usage::CacheSource::kDisk)
        << (gpu_writes ? "GPU -> CPU" : "CPU -> GPU");
    EXPECT_EQ(again.done.usage.cached_tokens, again.done.usage.prompt_tokens - 1);
    EXPECT_EQ(again.content, first.content) << (gpu_writes ? "GPU -> CPU" : "CPU -> GPU");
  }
}

TEST(GpuEngine, MtpIsRefused) {
  SKIP_WITHOUT_GPU();
  EngineOptions o = engine_options(true);
  o.mtp_path = model_path();
  try {
    Engine e(o);
    FAIL() << "--mtp with --gpu was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--mtp"), std::string::npos) << e.what();
  }
}
