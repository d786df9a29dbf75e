// Matrix-vector bandwidth benchmark for batch-1 decode (one GPU).
//
//   bench_matvec [--reps N] [--quick] [--only LABEL_SUBSTRING]
//
// 1. Achievable read bandwidth: a pure streaming-read kernel (16-byte loads, 4 in flight per
//    thread, several grid sizes; best kept) over 2 GiB, and a device-to-device copy for reference.
// 2. Every matvec of one decoded token at the real shapes (ARCH.md §11.3, §14.2), in the q2 layout
//    (IQ2_XXS gate/up, Q2_K down, Q8_0 attention/shared/head, F16 compressors/indexer/router/HC)
//    and the q4 experts (Q4_K): median of N >= 50 timed launches (CUDA events around each) after a
//    warm-up, weights rotated through enough copies to exceed 3x the L2 so they come from HBM;
//    random valid blocks, random x. CSV: format,rows,cols,bytes,median_us,GB_s, then the label,
//    launches per token, the fraction of the streaming bandwidth and the launch plan.
// 3. Per-token sums: bytes (expect ~9.56 GB for q2) and the projected decode time per token if
//    only weight streaming counted (sum of launches x median), also at the measured stream rate.
#include <cuda_runtime.h>
#include <omp.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_timing.cuh"
#include "core/ggml_type.h"
#include "cuda/device.h"
#include "cuda/matvec.h"
#include "cuda/mv_plan.h"
#include "quant/quant.h"

namespace {

using dsv4::GgmlType;
namespace cu = dsv4::cuda;

__global__ void stream_read_kernel(const uint4* __restrict__ p, size_t n, unsigned* out) {
  uint32_t acc = 0;
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = __ldg(p + i), b = __ldg(p + i + stride), c = __ldg(p + i + 2 * stride),
                d = __ldg(p + i + 3 * stride);
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^
           d.w;
  }
  for (; i < n; i += stride) {
    const uint4 a = __ldg(p + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x9e3779b9u) out[0] = acc;  // keeps the loads; practically never stores
}

using dsv4::bench::time_median_us;

struct Case {
  std::string label;
  GgmlType type;
  int64_t rows, cols;
  int n_mats = 1;
  int n_slots = 1;       // experts (with ids) or groups (no ids)
  bool experts = false;  // slots select from a stacked tensor through ids
  bool per_slot_x = false;
  int per_token_q2 = 0;  // launches per decoded token, q2 layout
  int per_token_q4 = 0;  // launches per decoded token, q4 layout
  bool x8 = false;       // MatvecOp::x8 (int8 x)
};

std::vector<Case> decode_cases() {
  const GgmlType Q8 = GgmlType::Q8_0, F16 = GgmlType::F16;
  std::vector<Case> c;
  // attention (43 layers); int8 x by default (CudaOptions::dense_x8), f32 x below
  c.push_back({"attn_q_a", Q8, 1024, 4096, 1, 1, false, false, 43, 43, true});
  c.push_back({"attn_q_b", Q8, 32768, 1024, 1, 1, false, false, 43, 43, true});
  c.push_back({"attn_kv", Q8, 512, 4096, 1, 1, false, false, 43, 43, true});
  c.push_back({"attn_output_a (8 groups)", Q8, 1024, 4096, 1, 8, false, true, 43, 43, true});
  c.push_back({"attn_output_b", Q8, 4096, 8192, 1, 1, false, false, 43, 43, true});
  // shared expert
  c.push_back({"shexp gate+up", Q8, 2048, 4096, 2, 1, false, false, 43, 43, true});
  c.push_back({"shexp down", Q8, 4096, 2048, 1, 1, false, false, 43, 43, true});
  // routed experts, 6 per token
  // q2: int8 x by default (CudaOptions::decode_x8); the f32-x kernels below for comparison
  c.push_back({"exps gate+up x6", GgmlType::IQ2_XXS, 2048, 4096, 2, 6, true, false, 43, 0, true});
  c.push_back({"exps down x6", GgmlType::Q2_K, 4096, 2048, 1, 6, true, true, 43, 0, true});
  c.push_back({"exps gate+up x6", GgmlType::Q4_K, 2048, 4096, 2, 6, true, false, 0, 43});
  c.push_back({"exps down x6", GgmlType::Q4_K, 4096, 2048, 1, 6, true, true, 0, 43});
  // F16 side weights
  c.push_back({"hc_attn/ffn_fn", F16, 24, 16384, 1, 1, false, false, 86, 86});
  c.push_back({"compressor kv+gate r4", F16, 1024, 4096, 2, 1, false, false, 21, 21});
  c.push_back({"compressor kv+gate r128", F16, 512, 4096, 2, 1, false, false, 20, 20});
  c.push_back({"indexer q_b", F16, 8192, 1024, 1, 1, false, false, 21, 21});
  c.push_back({"indexer proj", F16, 64, 4096, 1, 1, false, false, 21, 21});
  c.push_back({"indexer compressor kv+gate", F16, 256, 4096, 2, 1, false, false, 21, 21});
  c.push_back({"router", F16, 256, 4096, 1, 1, false, false, 43, 43});
  // once per token
  c.push_back({"output head", Q8, 129280, 4096, 1, 1, false, false, 1, 1});
  c.push_back({"output_hc_fn", F16, 4, 16384, 1, 1, false, false, 1, 1});
  // one expert matrix alone (per-format numbers, not in the per-token sum)
  c.push_back({"one expert gate f32-x", GgmlType::IQ2_XXS, 2048, 4096, 1, 1, false, false, 0, 0});
  c.push_back({"one expert gate", GgmlType::IQ2_XXS, 2048, 4096, 1, 1, false, false, 0, 0, true});
  // f32 x (bench --f32-x), not in the per-token sum
  c.push_back({"exps gate+up x6 f32-x", GgmlType::IQ2_XXS, 2048, 4096, 2, 6, true, false, 0, 0});
  c.push_back({"exps down x6 f32-x", GgmlType::Q2_K, 4096, 2048, 1, 6, true, true, 0, 0});
  c.push_back({"attn_q_b f32-x", Q8, 32768, 1024, 1, 1, false, false, 0, 0});
  c.push_back({"attn_output_a (8 groups) f32-x", Q8, 1024, 4096, 1, 8, false, true, 0, 0});
  c.push_back({"attn_output_b f32-x", Q8, 4096, 8192, 1, 1, false, false, 0, 0});
  c.push_back({"shexp gate+up f32-x", Q8, 2048, 4096, 2, 1, false, false, 0, 0});
  c.push_back({"one expert down", GgmlType::Q2_K, 4096, 2048, 1, 1, false, false, 0, 0});
  c.push_back({"one expert gate", GgmlType::Q4_K, 2048, 4096, 1, 1, false, false, 0, 0});
  c.push_back({"one expert down", GgmlType::Q4_K, 4096, 2048, 1, 1, false, false, 0, 0});
  c.push_back({"bf16 4096x4096", GgmlType::BF16, 4096, 4096, 1, 1, false, false, 0, 0});
  c.push_back({"f32 4096x4096", GgmlType::F32, 4096, 4096, 1, 1, false, false, 0, 0});
  return c;
}

void fill_random_blocks(GgmlType t, int64_t rows, int64_t cols, uint64_t seed,
                        std::vector<uint8_t>& out) {
  const size_t rb = dsv4::ggml_row_bytes(t, (uint64_t)cols);
  out.resize(rb * (size_t)rows);
  const int64_t chunk = std::max<int64_t>(1, (1 << 22) / cols);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    dsv4::quant::random_blocks(t, seed * 1000003 + (uint64_t)r0, 1.0f, out.data() + (size_t)r0 * rb,
                               n * cols);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 100;
  bool quick = false;
  // --l2-hot: one copy of the weights, so a tensor that fits in the L2 is read from it after the
  // first launch (what an L2 prefetch ahead of the kernel would give).
  bool l2_hot = false;
  std::string only;  // run only the cases whose "format label" contains this (profiling)
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc)
      reps = std::max(50, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--quick"))
      quick = true;
    else if (!std::strcmp(argv[i], "--l2-hot"))
      l2_hot = true;
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc)
      only = argv[++i];
    else if (!std::strcmp(argv[i], "--tune") && i + 1 < argc) {
      // --tune key=value,...: planner knobs (cuda/mv_plan.h Tuning)
      const std::string spec = argv[++i];
      const std::string bad = dsv4::cuda::mv::apply_tuning_spec(dsv4::cuda::mv::tuning(), spec);
      if (!bad.empty()) {
        std::fprintf(stderr, "unknown --tune key %s\n", bad.c_str());
        return 2;
      }
      std::printf("# tune: %s\n", spec.c_str());
    } else {
      std::fprintf(stderr, "usage: %s [--reps N>=50] [--quick] [--only LABEL]\n", argv[0]);
      return 2;
    }
  }
  try {
    if (cu::device_count() == 0) {
      std::fprintf(stderr, "bench_matvec: no CUDA device\n");
      return 1;
    }
    const cu::DeviceInfo& dev = cu::current_device_info();
    size_t free_b = 0, total_b = 0;
    DSV4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    std::printf("# device: %s, cc %d.%d, %d SMs, L2 %zu MiB, %zu/%zu MiB free\n", dev.name.c_str(),
                dev.cc_major, dev.cc_minor, dev.sm_count, dev.l2_bytes >> 20, free_b >> 20,
                total_b >> 20);

    // 1. Streaming read and copy bandwidth.
    double stream_gbs = 0;
    if (!only.empty())
      stream_gbs = 4300;  // not measured with --only (nominal H200 value)
    else {
      const size_t bytes = std::min<size_t>(size_t{2} << 30, free_b / 4) & ~size_t{4095};
      cu::DeviceBuffer buf(bytes), out(64);
      DSV4_CUDA_CHECK(cudaMemset(buf.data(), 0x5a, bytes));
      const size_t n = bytes / 16;
      for (int per_sm : {4, 8, 16, 32})
        for (int threads : {256, 512}) {
          const int blocks = dev.sm_count * per_sm;
          if (per_sm * threads > dev.max_threads_per_sm) continue;
          const double us = time_median_us(3, quick ? 10 : 20, [&](int) {
            stream_read_kernel<<<blocks, threads>>>(buf.as<const uint4>(), n, out.as<unsigned>());
          });
          const double gbs = bytes / us * 1e-3;
          std::printf("# stream read %zu MiB, %d blocks x %d threads: %.1f us, %.1f GB/s\n",
                      bytes >> 20, blocks, threads, us, gbs);
          stream_gbs = std::max(stream_gbs, gbs);
        }
      const size_t half = bytes / 2;
      const double us = time_median_us(2, 10, [&](int) {
        DSV4_CUDA_CHECK(
            cudaMemcpyAsync(buf.as<char>() + half, buf.data(), half, cudaMemcpyDeviceToDevice));
      });
      std::printf("# device-to-device copy %zu MiB: %.1f us, %.1f GB/s (read + write)\n",
                  half >> 20, us, 2.0 * half / us * 1e-3);
      std::printf("# achievable read bandwidth (best stream read): %.1f GB/s\n", stream_gbs);
    }

    // 2. The decode matvecs.
    std::printf(
        "format,rows,cols,bytes,median_us,GB_s,label,per_token_q2,per_token_q4,frac_of_stream,"
        "plan\n");
    double q2_us = 0, q4_us = 0, q2_bytes = 0, q4_bytes = 0;
    std::mt19937_64 rng(12345);
    for (const Case& c : decode_cases()) {
      if (quick && c.per_token_q2 == 0 && c.per_token_q4 == 0) continue;
      if (!only.empty() && (std::string(dsv4::ggml_type_name(c.type)) + " " + c.label).find(only) ==
                               std::string::npos)
        continue;
      const size_t rb = dsv4::ggml_row_bytes(c.type, (uint64_t)c.cols);
      const int n_expert = c.experts ? 16 : c.n_slots;  // stacked experts / groups per tensor
      const size_t tensor_bytes = rb * (size_t)c.rows * (size_t)n_expert;
      const size_t touched = rb * (size_t)c.rows * (size_t)c.n_slots * (size_t)c.n_mats;
      // Enough copies of the weights to exceed 3x the L2 (the tensor is read from HBM every time).
      const size_t per_copy = tensor_bytes * (size_t)c.n_mats;
      const int copies =
          l2_hot ? 1
                 : (int)std::min<size_t>(
                       512, std::max<size_t>(1, (3 * dev.l2_bytes + touched - 1) / touched));
      std::vector<uint8_t> host;
      fill_random_blocks(c.type, c.rows * n_expert, c.cols, rng(), host);
      std::vector<cu::DeviceBuffer> w;
      for (int k = 0; k < copies * c.n_mats; ++k) {
        w.emplace_back(per_copy / c.n_mats);
        w.back().upload(host.data(), host.size());
      }
      // x: one vector, or one per slot; values N(0,1).
      const int64_t nx = (c.per_slot_x ? c.n_slots : 1) * c.cols;
      std::vector<float> hx((size_t)nx);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      for (auto& v : hx) v = nd(rng);
      cu::DeviceBuffer dx(hx.size() * 4), dy((size_t)c.n_mats * c.n_slots * c.rows * 4),
          dids(64 * 4);
      dx.upload(hx.data(), hx.size() * 4);
      std::vector<int32_t> ids(16);
      for (int i = 0; i < 16; ++i) ids[(size_t)i] = i;
      std::shuffle(ids.begin(), ids.end(), rng);
      dids.upload(ids.data(), ids.size() * 4);

      auto op_for = [&](int copy) {
        cu::MatvecOp op;
        op.type = c.type;
        op.n_mats = c.n_mats;
        for (int m = 0; m < c.n_mats; ++m) op.w[m] = w[(size_t)(copy * c.n_mats + m)].data();
        op.rows = c.rows;
        op.cols = c.cols;
        op.n_slots = c.n_slots;
        if (c.n_slots > 1) {
          op.expert_stride_bytes = (int64_t)(rb * (size_t)c.rows);
          op.n_expert = n_expert;
          op.ids = c.experts ? dids.as<int32_t>() : nullptr;
        }
        op.x = dx.as<float>();
        op.x_slot_stride = c.per_slot_x ? c.cols : 0;
        op.y = dy.as<float>();
        op.x8 = c.x8;
        return op;
      };
      const std::string plan = cu::matvec_describe(op_for(0));
      const double us = time_median_us(5, reps, [&](int i) { cu::matvec_run(op_for(i % copies)); });
      const double gbs = touched / us * 1e-3;
      std::printf("%s,%" PRId64 ",%" PRId64 ",%zu,%.2f,%.1f,%s,%d,%d,%.3f,\"%s\"\n",
                  std::string(dsv4::ggml_type_name(c.type)).c_str(), c.rows * c.n_slots * c.n_mats,
                  c.cols, touched, us, gbs, c.label.c_str(), c.per_token_q2, c.per_token_q4,
                  gbs / stream_gbs, plan.c_str());
      std::fflush(stdout);
      q2_us += c.per_token_q2 * us;
      q4_us += c.per_token_q4 * us;
      q2_bytes += c.per_token_q2 * (double)touched;
      q4_bytes += c.per_token_q4 * (double)touched;
    }

    // 3. Per-token projection.
    std::printf(
        "# per token, q2 layout: %.3f GB of weights; projected decode %.3f ms/token (%.1f tok/s) "
        "if only "
        "weight streaming counted; at the stream rate it would be %.3f ms; effective %.1f GB/s = "
        "%.0f%% of "
        "stream\n",
        q2_bytes * 1e-9, q2_us * 1e-3, 1e6 / q2_us, q2_bytes / stream_gbs * 1e-6,
        q2_bytes / q2_us * 1e-3, 100.0 * q2_bytes / q2_us * 1e-3 / stream_gbs);
    std::printf(
        "# per token, q4 layout: %.3f GB of weights; projected decode %.3f ms/token (%.1f tok/s); "
        "at the "
        "stream rate %.3f ms; effective %.1f GB/s = %.0f%% of stream\n",
        q4_bytes * 1e-9, q4_us * 1e-3, 1e6 / q4_us, q4_bytes / stream_gbs * 1e-6,
        q4_bytes / q4_us * 1e-3, 100.0 * q4_bytes / q4_us * 1e-3 / stream_gbs);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_matvec: %s\n", e.what());
    return 1;
  }
  return 0;
}
