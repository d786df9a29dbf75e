// Event timing shared by the CUDA micro-benchmarks: the median of timed launches, each preceded
// by a short spin kernel so that the events time the GPU work and not the host's launch latency.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/device.h"

namespace dsv4::bench {

// Keeps the GPU busy (~50 us) while the host enqueues the timed launch.
inline __global__ void spin_kernel(long long cycles) {
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Median microseconds of `reps` calls of launch(i) on `s` after `warmup` untimed ones.
template <class F>
double time_median_us(int warmup, int reps, F&& launch, cudaStream_t s = nullptr) {
  cuda::Event a, b;
  for (int i = 0; i < warmup; ++i) launch(i);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    spin_kernel<<<1, 1, 0, s>>>(100000);
    a.record(s);
    launch(warmup + i);
    b.record(s);
    b.sync();
    t.push_back(1000.0 * cuda::Event::elapsed_ms(a, b));
  }
  DSV4_CUDA_CHECK(cudaGetLastError());
  return median(t);
}

}  // namespace dsv4::bench
