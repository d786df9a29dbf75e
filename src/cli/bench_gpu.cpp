// dsv4 bench --gpu (see bench_gpu.h): weights uploaded from a GGUF or synthesized in device
// memory, then ds4's frontier sweep on the CUDA forward. Timings are wall clock between
// cudaDeviceSynchronize calls.
#include "cli/bench_gpu.h"

#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "cli/cli_util.h"
#include "core/error.h"
#include "cuda/cuda_forward.h"
#include "cuda/device.h"
#include "model/memory_plan.h"
#include "model/tiny_model.h"
#include "model/weights.h"
#include "text/tokenizer.h"

namespace dsv4::cli {
namespace {

// Device-to-device copy bandwidth (read + write bytes per second), best of 5 copies of
// `bytes` (shrunk to fit free memory).
double copy_bandwidth_gbps(uint64_t bytes, uint64_t* used_bytes) {
  size_t free_b = 0, total_b = 0;
  DSV4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const uint64_t room = free_b > (512ull << 20) ? (free_b - (512ull << 20)) / 2 : 0;
  bytes = std::min(bytes, room) & ~((1ull << 20) - 1);
  *used_bytes = bytes;
  if (bytes < (64ull << 20)) return 0;
  cuda::DeviceBuffer a(bytes), b(bytes);
  a.fill_bytes(1);
  b.fill_bytes(0);
  DSV4_CUDA_CHECK(cudaMemcpy(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice));  // warm-up
  float best_ms = 0;
  for (int i = 0; i < 5; ++i) {
    cuda::Event e0, e1;
    e0.record();
    DSV4_CUDA_CHECK(cudaMemcpy(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice));
    e1.record();
    e1.sync();
    const float ms = cuda::Event::elapsed_ms(e0, e1);
    if (i == 0 || ms < best_ms) best_ms = ms;
  }
  return 2.0 * (double)bytes / (best_ms * 1e-3) / 1e9;
}

std::vector<int32_t> make_prompt(const GpuBenchOptions& o, const Model* model, uint32_t vocab,
                                 std::string& source) {
  const size_t n = (size_t)o.ctx_max;
  std::vector<int32_t> ids;
  std::string path = o.prompt_file;
  if (path.empty() && std::filesystem::exists("../shared/conformance/corpora/promessi_sposi.txt"))
    path = "../shared/conformance/corpora/promessi_sposi.txt";
  const bool has_tok = model && model->file->find("tokenizer.ggml.tokens") != nullptr;
  if (!path.empty() && has_tok) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("bench: cannot open prompt file {}", path);
    std::ostringstream ss;
    ss << in.rdbuf();
    const text::Tokenizer tok = text::Tokenizer::from_gguf(*model->file);
    const std::vector<int32_t> text_ids = tok.encode_text(ss.str());
    if (!text_ids.empty()) {
      ids.reserve(n);
      while (ids.size() < n) ids.push_back(text_ids[ids.size() % text_ids.size()]);
      source = fmt::format("{} ({} tokens{})", path, text_ids.size(),
                           text_ids.size() < n ? ", repeated" : "");
      return ids;
    }
  } else if (!o.prompt_file.empty() && !has_tok) {
    fail("bench: --prompt-file needs a model with a tokenizer (synthetic models have none)");
  }
  std::mt19937 rng(1234);
  ids.resize(n);
  for (auto& t : ids) t = (int32_t)(rng() % vocab);
  source = "pseudo-random token ids (seed 1234)";
  return ids;
}

void print_commented(const std::string& text) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) std::printf("# %s\n", line.c_str());
}

}  // namespace

void run_gpu_bench(const GpuBenchOptions& o) {
  if (o.ctx_start < 1 || o.ctx_max < o.ctx_start) fail("bench: need 1 <= --ctx-start <= --ctx-max");
  if (o.gen_tokens < 1) fail("bench: --gen-tokens must be >= 1");
  if (o.model.empty() == o.synthetic.empty())
    fail("bench --gpu: give exactly one of -m MODEL or --synthetic q2|q4");
  if (!(o.reserve_gib >= 0)) fail("bench: --reserve-gib must be >= 0");
  if (cuda::device_count() == 0) fail("bench --gpu: no CUDA device");
  const cuda::DeviceInfo& dev = cuda::current_device_info();
  uint64_t copy_bytes = 0;
  const double bw = copy_bandwidth_gbps(4ull << 30, &copy_bytes);
  std::printf("# dsv4 bench: backend cuda, device %s (sm_%d%d, %d SMs, %.1f GiB)\n",
              dev.name.c_str(), dev.cc_major, dev.cc_minor, dev.sm_count,
              dev.global_mem / 1073741824.0);
  std::printf(
      "# device copy bandwidth: %.1f GB/s (read + write, %.2f GiB D2D cudaMemcpy, best of 5)\n", bw,
      copy_bytes / 1073741824.0);

  // The session's max_ctx and chunk size, known before the weights are placed: the device memory
  // left free must hold the scratch for --batch and the session state for --ctx-max.
  cuda::CudaOptions co;
  co.qat = o.qat;
  co.max_ctx = o.ctx_max + o.gen_tokens + 1;  // +1: the untimed warm-up decode step
  co.max_batch = o.max_batch;
  co.prefill_gemm = o.prefill_gemm;
  co.decode_x8 = o.decode_x8;
  co.dense_x8 = o.dense_x8;
  cuda::PlacementOptions po;
  po.expert_host_fraction = o.expert_host_fraction;
  po.reserve_bytes = (uint64_t)(o.reserve_gib * 1073741824.0);
  auto reserve_for = [&](const ModelConfig& rc) {
    const uint64_t need = cuda::CudaModel::scratch_bytes(rc, co) +
                          kv_memory_plan(rc, co.max_ctx, StateStorage::kF32).total_bytes() +
                          (1ull << 30);  // CUDA context, cuBLAS, fragmentation
    po.reserve_bytes = std::max(po.reserve_bytes, need);
  };
  std::unique_ptr<Model> model;
  std::unique_ptr<cuda::DeviceModel> dm;
  const double t_load0 = now_s();
  if (!o.synthetic.empty()) {
    reserve_for(layout_config(build_layout_model(o.synthetic)));
    dm = cuda::synthesize_model(o.synthetic, o.seed, po);
  } else {
    model = load_model(o.model);
    reserve_for(model->cfg);
    dm = cuda::upload_model(*model, po);
  }
  std::printf("# device memory kept free for the session and scratch: %.2f GiB\n",
              po.reserve_bytes / 1073741824.0);
  const double t_load = now_s() - t_load0;
  std::printf("# %s (%s in %.1f s)\n", cuda::describe_placement(*dm).c_str(),
              o.synthetic.empty() ? "uploaded" : "synthesized", t_load);
  const ModelConfig& cfg = dm->cfg;
  const WeightTraffic traffic = weight_traffic(cfg, dm->w, dm->host_resident);
  const uint64_t tok_bytes = traffic.bytes_per_token, host_tok = traffic.host_bytes_per_token;
  const uint64_t act = traffic.active_params;
  std::printf(
      "# weights read per decoded token: %.3f GB (%.3f GB of it from host memory); "
      "active parameters %.2f B\n",
      tok_bytes / 1e9, host_tok / 1e9, act / 1e9);

  print_commented(kv_plan_text(kv_memory_plan(cfg, co.max_ctx, StateStorage::kF32)));
  print_commented(kv_plan_text(kv_memory_plan(cfg, co.max_ctx, StateStorage::kSpec)));
  cuda::CudaModel cm(*dm, co);
  std::printf("# CUDA session state: %llu bytes (max_ctx %lld, max_batch %lld)\n",
              (unsigned long long)cm.session_bytes(), (long long)co.max_ctx,
              (long long)co.max_batch);
  std::printf(
      "# prefill: %s; decode matvecs: %s x (2-bit experts), %s x (Q8_0 projections); decode "
      "attention: %s\n",
      co.prefill_gemm ? "tensor-core GEMMs (bf16)" : "matvec kernels (f32)",
      co.decode_x8 ? "int8" : "f32", co.dense_x8 ? "int8" : "f32",
      co.decode_attention_mma ? "tensor cores (bf16 inputs)" : "f32");
  std::string source;
  const std::vector<int32_t> prompt = make_prompt(o, model.get(), cfg.n_vocab, source);
  std::printf("# prompt: %s\n", source.c_str());
  std::printf(
      "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes,decode_gbps,"
      "pct_of_bw,prefill_tflops\n");
  std::fflush(stdout);

  std::vector<float> logits;
  if (!o.fill_context) {
    // Untimed warm-up of the prefill path (cuBLAS picks its kernels on the first calls), in a
    // session that is freed again before the measured one is made.
    auto warm = cm.new_session();
    const int64_t wn = std::min<int64_t>({o.ctx_start, 256, co.max_ctx - 1});
    cm.forward(*warm, prompt.data(), wn, false, logits);
  }
  auto sess = cm.new_session();
  int64_t frontier = o.ctx_start;
  while (frontier <= o.ctx_max) {
    int64_t start = sess->n_past(), n = frontier - start;
    double t_prefill = 0;
    int32_t tok = 0;
    if (o.fill_context) {
      sess.reset();
      sess = cm.new_session();
      const int64_t filled = frontier / 128 * 128;
      if (filled <= 0) fail("bench --fill-context: frontier {} is below 128 tokens", frontier);
      cm.fill_synthetic_context(*sess, filled, o.seed + (uint64_t)filled);
      start = filled;
      n = 0;
      tok = prompt[0];
    } else {
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      const double t0 = now_s();
      cm.forward(*sess, prompt.data() + start, n, false, logits);
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      t_prefill = now_s() - t0;
      if (logits.size() != cfg.n_vocab)
        fail("bench: forward returned {} logits, expected {}", logits.size(), cfg.n_vocab);
      tok = (int32_t)(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    tok = cm.decode_greedy(*sess, tok);  // warm-up (graph capture), untimed
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    const double t1 = now_s();
    for (int64_t g = 0; g < o.gen_tokens; ++g) tok = cm.decode_greedy(*sess, tok);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    const double t_gen = now_s() - t1;
    const uint64_t kv = kv_memory_plan(cfg, sess->n_past(), StateStorage::kF32).total_bytes();
    const double gen_tps = o.gen_tokens / t_gen;
    const double gbps = gen_tps * tok_bytes / 1e9;
    const double tflops = n > 0 ? 2.0 * (double)act * n / t_prefill / 1e12 : 0.0;
    std::printf("%lld,%lld,%.2f,%lld,%.2f,%llu,%.1f,%.1f,%.2f\n", (long long)(start + n),
                (long long)n, n > 0 ? n / t_prefill : 0.0, (long long)o.gen_tokens, gen_tps,
                (unsigned long long)kv, gbps, bw > 0 ? 100.0 * gbps / bw : 0.0, tflops);
    std::fflush(stdout);
    if (frontier >= o.ctx_max) break;
    const int64_t next =
        o.step_incr > 0 ? frontier + o.step_incr : (int64_t)std::ceil(frontier * o.step_mul);
    frontier = std::min(std::max(next, sess->n_past() + 1), o.ctx_max);
    if (frontier <= sess->n_past()) break;  // the decoded tokens went past the last frontier
  }
}

}  // namespace dsv4::cli
