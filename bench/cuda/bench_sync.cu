// What one dependent step of the decode chain costs when the work is nearly nothing: N stages,
// each reading the whole D-float vector the previous stage wrote (as a matvec stages its x) and
// writing its own, chained three ways:
//   graph      N kernels captured in a CUDA graph, plain stream order;
//   graph_pdl  the same with programmatic dependent launch (pdl.cuh: trigger first, wait before
//              reading x), as the forward pass launches its kernels;
//   persistent one kernel of G co-resident CTAs, a grid-wide barrier between stages (one release
//              atomic per CTA, acquire spin on the arrival count), as a persistent decode kernel
//              would.
// Prints CSV mode,x_read,ctas,threads,D,stages,us_per_stage (median of the repetitions, CUDA
// events). The difference between graph_pdl and persistent is what a persistent per-layer kernel
// could save per stage on the chain (docs/NOTES.md). Usage: ./bench_sync [--stages N] [--reps R]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda/atomic>
#include <string>
#include <type_traits>
#include <vector>

#include "bench_timing.cuh"
#include "cuda/cuda_check.h"
#include "cuda/device.h"
#include "cuda/pdl.cuh"

namespace {

constexpr int kThreads = 256;

// One stage: every CTA sums the whole input (the x staging of a matvec), then writes its slice of
// the output, so stage i + 1 depends on every CTA of stage i. kVec: each thread issues all its
// 16-byte loads before it adds any (one L2 round trip); else a plain strided loop (the compiler
// keeps about one load in flight per thread: one round trip per 256 floats).
constexpr int kMaxD = 16384, kVecPer = kMaxD / 4 / kThreads;
template <bool kVec>
__device__ __forceinline__ void stage_body(const float* x, float* y, int D, int cta, int ctas) {
  __shared__ float part[kThreads / 32];
  float s = 0.0f;
  if constexpr (kVec) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4 v[kVecPer];
#pragma unroll
    for (int j = 0; j < kVecPer; ++j) {
      const int i = (int)threadIdx.x + j * kThreads;
      v[j] = i < D / 4 ? __ldcg(x4 + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int j = 0; j < kVecPer; ++j) s += (v[j].x + v[j].y) + (v[j].z + v[j].w);
  } else {
    for (int i = threadIdx.x; i < D; i += blockDim.x) s += __ldcg(x + i);
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
  __syncthreads();
  float t = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) t += part[w];
  for (int i = cta * kThreads + (int)threadIdx.x; i < D; i += ctas * kThreads)
    y[i] = 0.5f * __ldcg(x + i) + 1e-9f * t;
  __syncthreads();
}

template <bool kVec>
__global__ void __launch_bounds__(kThreads) stage_plain(const float* x, float* y, int D) {
  stage_body<kVec>(x, y, D, (int)blockIdx.x, (int)gridDim.x);
}

template <bool kVec>
__global__ void __launch_bounds__(kThreads) stage_pdl(const float* x, float* y, int D) {
  dsv4::cuda::pdl_trigger();
  dsv4::cuda::pdl_wait();
  stage_body<kVec>(x, y, D, (int)blockIdx.x, (int)gridDim.x);
}

// Stages alternate between buf and buf + D. `arrived` counts CTA arrivals over all barriers of all
// launches (zero before the first): barrier k of a launch is passed once it reaches base + (k + 1)
// * ctas, base being the arrivals of the launches before.
template <bool kVec>
__global__ void __launch_bounds__(kThreads)
    stages_persistent(float* buf, int D, int stages, unsigned* arrived, unsigned base) {
  cuda::atomic_ref<unsigned, cuda::thread_scope_device> count(*arrived);
  const unsigned ctas = gridDim.x;
  for (int k = 0; k < stages; ++k) {
    const float* x = buf + (k & 1) * D;
    float* y = buf + ((k + 1) & 1) * D;
    stage_body<kVec>(x, y, D, (int)blockIdx.x, (int)ctas);
    if (threadIdx.x == 0) {
      count.fetch_add(1u, cuda::memory_order_release);
      const unsigned target = base + (unsigned)(k + 1) * ctas;
      while (count.load(cuda::memory_order_acquire) < target) {
      }
    }
    __syncthreads();
  }
}

// Median time of a graph of `stages` stage kernels, per stage.
template <bool kVec>
double time_graph(bool pdl, float* buf, int D, int ctas, int stages, int reps, cudaStream_t s) {
  cudaGraph_t g = nullptr;
  DSV4_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int k = 0; k < stages; ++k) {
    const float* x = buf + (k & 1) * D;
    float* y = buf + ((k + 1) & 1) * D;
    if (pdl)
      dsv4::cuda::launch_once(stage_pdl<kVec>, dim3(ctas), dim3(kThreads), 0, s, x, y, D);
    else
      stage_plain<kVec><<<ctas, kThreads, 0, s>>>(x, y, D);
  }
  DSV4_CUDA_CHECK(cudaStreamEndCapture(s, &g));
  cudaGraphExec_t ge = nullptr;
  DSV4_CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
  const double us = dsv4::bench::time_median_us(
      1, reps, [&](int) { DSV4_CUDA_CHECK(cudaGraphLaunch(ge, s)); }, s);
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  return us / stages;
}

// The same as one cooperative launch (the runtime refuses a grid that cannot be co-resident, which
// the spin barrier needs). The arrival count runs on across launches (zero before the first).
template <bool kVec>
double time_persistent(float* buf, unsigned* arrived, int D, int ctas, int stages, int reps,
                       cudaStream_t s) {
  DSV4_CUDA_CHECK(cudaMemsetAsync(arrived, 0, sizeof(unsigned), s));
  unsigned base = 0;
  const double us = dsv4::bench::time_median_us(
      1, reps,
      [&](int) {
        void* args[] = {&buf, &D, &stages, &arrived, &base};
        DSV4_CUDA_CHECK(cudaLaunchCooperativeKernel((const void*)stages_persistent<kVec>,
                                                    dim3(ctas), dim3(kThreads), args, 0, s));
        base += (unsigned)stages * (unsigned)ctas;
      },
      s);
  return us / stages;
}

}  // namespace

int main(int argc, char** argv) {
  int stages = 1000, reps = 15;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--stages")) stages = std::max(2, std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--reps")) reps = std::max(1, std::atoi(argv[i + 1]));
  }
  int dev = 0, sms = 0, coop = 0, per_sm = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&dev));
  DSV4_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  DSV4_CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
  DSV4_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, stages_persistent<true>, kThreads, 0));
  cudaDeviceProp prop{};
  DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  std::printf("# %s, %d SMs, cooperative launch %s, %d persistent CTAs per SM fit\n", prop.name,
              sms, coop ? "yes" : "no", per_sm);
  dsv4::cuda::DeviceBuffer dbuf(2 * kMaxD * sizeof(float)), darrived(sizeof(unsigned));
  dbuf.fill_bytes(0);
  float* buf = dbuf.as<float>();
  unsigned* arrived = darrived.as<unsigned>();
  const dsv4::cuda::Stream stream;
  const cudaStream_t s = stream.get();
  std::printf("mode,x_read,ctas,threads,D,stages,us_per_stage\n");
  auto sweep = [&](auto vec) {
    constexpr bool kVec = decltype(vec)::value;
    const char* rd = kVec ? "vector" : "loop";
    for (int D : {0, 4096, 16384}) {
      for (int mult : {1, 2}) {
        const int ctas = sms * mult;
        auto row = [&](const char* mode, double us) {
          std::printf("%s,%s,%d,%d,%d,%d,%.3f\n", mode, rd, ctas, kThreads, D, stages, us);
        };
        row("graph", time_graph<kVec>(false, buf, D, ctas, stages, reps, s));
        row("graph_pdl", time_graph<kVec>(true, buf, D, ctas, stages, reps, s));
        if (coop && mult <= per_sm)
          row("persistent", time_persistent<kVec>(buf, arrived, D, ctas, stages, reps, s));
        std::fflush(stdout);
      }
    }
  };
  sweep(std::false_type{});
  sweep(std::true_type{});
  return 0;
}
