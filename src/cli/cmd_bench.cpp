// dsv4 bench: the ds4-bench frontier sweep (spec/TESTING.md §1.4). At each context frontier it
// times only the newly added prefill interval, snapshots the session, times `gen-tokens` greedy
// decode steps, and restores the snapshot. CSV columns match ds4's, plus decode weight GB/s.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#if DSV4_HAVE_CUDA
#include "cli/bench_gpu.h"
#endif
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/error.h"
#include "model/cpu_forward.h"
#include "model/inspect.h"

namespace dsv4::cli {
namespace {

uint64_t state_bytes(const CpuSession& s) {
  uint64_t b = 0;
  auto add = [&](const LayerState& l) {
    b += 4 * (l.raw.size() + l.comp.size() + l.idx.size() + l.ckv.size() + l.cscore.size() +
              l.ikv.size() + l.iscore.size());
  };
  for (const auto& l : s.layers) add(l);
  return b;
}

}  // namespace

void register_bench(CLI::App& app) {
  auto* sub = app.add_subcommand("bench", "Prefill/decode speed sweep over context frontiers");
  struct Opts {
    std::string model, backend = "cpu";
    int64_t ctx_start = 128, ctx_max = 512, step_incr = 0, gen_tokens = 16;
    double step_mul = 2.0;
    int threads = 0;
    bool qat = true;
    bool gpu = false;
    std::string synthetic, prompt_file;
    uint64_t seed = 1;
    double expert_host_fraction = -1, reserve_gib = 6;
    int64_t batch = 2048;
    bool no_gemm = false, fill_context = false, f32_x = false, f32_x_dense = false;
  };
  auto o = std::make_shared<Opts>();
  sub->add_option("-m,--model", o->model, "GGUF model");
  sub->add_option("--backend", o->backend, "cpu")->check(CLI::IsMember({"cpu"}));
  sub->add_option("--ctx-start", o->ctx_start, "first frontier (tokens)");
  sub->add_option("--ctx-max", o->ctx_max, "last frontier (tokens)");
  sub->add_option("--step-incr", o->step_incr, "linear step between frontiers");
  sub->add_option("--step-mul", o->step_mul, "geometric step between frontiers (default 2)");
  sub->add_option("--gen-tokens", o->gen_tokens, "greedy tokens timed at each frontier");
  sub->add_option("--threads", o->threads, "CPU threads (default: all cores)");
  sub->add_flag("--gpu", o->gpu, "run on the CUDA backend");
  sub->add_option("--synthetic", o->synthetic,
                  "GPU: random weights of the published layout, built in device memory")
      ->check(CLI::IsMember({"q2", "q4"}));
  sub->add_option("--seed", o->seed, "GPU: seed of the synthetic weights");
  sub->add_option("--expert-host-fraction", o->expert_host_fraction,
                  "GPU: routed-expert fraction in pinned host memory (< 0: automatic)");
  sub->add_option("--reserve-gib", o->reserve_gib,
                  "GPU: device memory left free for sessions and scratch (GiB, default 6)");
  sub->add_option("--batch", o->batch,
                  "GPU: prefill chunk, most tokens per forward call (default 2048; up to 8192: "
                  "larger chunks amortize the per-chunk expert dequantization)");
  sub->add_flag("--no-gemm", o->no_gemm,
                "GPU: prefill with the decode matvec kernels instead of tensor-core GEMMs");
  sub->add_flag("--f32-x", o->f32_x,
                "GPU: f32 inputs for every decode matvec (default: int8 per 32 values for the "
                "2-bit experts and the Q8_0 projections, CudaOptions::decode_x8 / dense_x8)");
  sub->add_flag("--f32-x-dense", o->f32_x_dense,
                "GPU: f32 inputs for the Q8_0 projections only (CudaOptions::dense_x8 off)");
  sub->add_flag("--fill-context", o->fill_context,
                "GPU: reach each frontier (rounded down to a multiple of 128) by filling the "
                "session state with random rows instead of prefilling: decode speed at long "
                "context without the prefill time (no prefill figures)");
  sub->add_option("--prompt-file", o->prompt_file,
                  "GPU: prompt text (default ../shared/conformance/corpora/promessi_sposi.txt "
                  "when present; used when the model has a tokenizer)");
  sub->callback([o] {
    if (o->gpu) {
#if DSV4_HAVE_CUDA
      GpuBenchOptions g;
      g.model = o->model;
      g.synthetic = o->synthetic;
      g.seed = o->seed;
      g.expert_host_fraction = o->expert_host_fraction;
      g.reserve_gib = o->reserve_gib;
      g.ctx_start = o->ctx_start;
      g.ctx_max = o->ctx_max;
      g.step_incr = o->step_incr;
      g.step_mul = o->step_mul;
      g.gen_tokens = o->gen_tokens;
      g.max_batch = o->batch;
      g.qat = o->qat;
      g.prefill_gemm = !o->no_gemm;
      g.decode_x8 = !o->f32_x;
      g.dense_x8 = !o->f32_x && !o->f32_x_dense;
      g.fill_context = o->fill_context;
      g.prompt_file = o->prompt_file;
      run_gpu_bench(g);
      return;
#else
      fail("bench --gpu: this build has no CUDA backend (configure with -DDSV4_CUDA=ON)");
#endif
    }
    if (!o->synthetic.empty()) fail("bench: --synthetic needs --gpu");
    if (o->model.empty()) fail("bench: -m MODEL is required");
    if (o->ctx_start < 1 || o->ctx_max < o->ctx_start)
      fail("bench: need 1 <= --ctx-start <= --ctx-max");
    if (o->threads > 0) omp_set_num_threads(o->threads);
    auto model = load_model(o->model);
    const ModelSummary sum = summarize(*model);
    CpuModel cpu(*model, CpuOptions{o->qat});
    const uint32_t V = model->cfg.n_vocab;
    // Prompt: deterministic pseudo-random token ids (the text prompt needs the tokenizer).
    std::mt19937 rng(1234);
    std::vector<int32_t> prompt((size_t)o->ctx_max);
    for (auto& t : prompt) t = (int32_t)(rng() % V);
    std::printf("# dsv4 bench: backend %s, %d threads, model %s\n", o->backend.c_str(),
                omp_get_max_threads(), sum.recognised.c_str());
    std::printf(
        "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes,"
        "decode_weight_GBps\n");
    CpuSession sess = cpu.new_session();
    int64_t ctx = 0, frontier = o->ctx_start;
    while (true) {
      const int64_t n = frontier - ctx;
      ForwardResult r;
      const double t0 = now_s();
      cpu.forward(sess, &prompt[(size_t)ctx], n, false, false, r);
      const double t_prefill = now_s() - t0;
      ctx = frontier;
      CpuSession snap = sess;
      int32_t tok =
          (int32_t)(std::max_element(r.logits.begin(), r.logits.end()) - r.logits.begin());
      const double t1 = now_s();
      for (int64_t g = 0; g < o->gen_tokens; ++g) {
        ForwardResult d;
        cpu.forward(sess, &tok, 1, false, false, d);
        tok = (int32_t)(std::max_element(d.logits.begin(), d.logits.end()) - d.logits.begin());
      }
      const double t_gen = now_s() - t1;
      const uint64_t kv = state_bytes(sess);
      sess = std::move(snap);
      const double gen_tps = o->gen_tokens / t_gen;
      std::printf("%lld,%lld,%.2f,%lld,%.2f,%llu,%.3f\n", (long long)ctx, (long long)n,
                  n / t_prefill, (long long)o->gen_tokens, gen_tps, (unsigned long long)kv,
                  gen_tps * sum.bytes_per_token / 1e9);
      std::fflush(stdout);
      if (frontier >= o->ctx_max) break;
      int64_t next =
          o->step_incr > 0 ? frontier + o->step_incr : (int64_t)std::ceil(frontier * o->step_mul);
      frontier = std::min(std::max(next, frontier + 1), o->ctx_max);
    }
  });
}

}  // namespace dsv4::cli
