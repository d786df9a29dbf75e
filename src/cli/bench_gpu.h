// dsv4 bench --gpu: the frontier sweep on the CUDA backend (bench_gpu.cpp, built with
// DSV4_CUDA). Weight-traffic and FLOP figures are computed from the bound tensors.
#pragma once
#include <cstdint>
#include <string>

namespace dsv4::cli {

struct GpuBenchOptions {
  std::string model;      // GGUF path (empty with `synthetic`)
  std::string synthetic;  // "q2" / "q4": synthetic weights in device memory
  uint64_t seed = 1;      // synthetic weights
  double expert_host_fraction = -1;
  double reserve_gib = 6;
  int64_t ctx_start = 128, ctx_max = 512, step_incr = 0, gen_tokens = 16;
  double step_mul = 2.0;
  int64_t max_batch = 2048;
  bool qat = true;
  bool prefill_gemm = true;   // tensor-core GEMM prefill (CudaOptions::prefill_gemm)
  bool decode_x8 = true;      // int8 x for the 2-bit expert matvecs (CudaOptions::decode_x8)
  bool dense_x8 = true;       // int8 x for the Q8_0 projections (CudaOptions::dense_x8)
  bool fill_context = false;  // reach frontiers with fill_synthetic_context, not prefill
  std::string prompt_file;    // text prompt (tokenized when the model has a tokenizer)
};

// Runs the sweep, printing the placement, the KV plan and the CSV to stdout.
void run_gpu_bench(const GpuBenchOptions& o);

}  // namespace dsv4::cli
