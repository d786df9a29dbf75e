// Instantiation and launch of mv_fast_kernel<F, NB> for NB = 1..kMaxNb (included by mv_*.cu).
#pragma once
#include <atomic>

#include "cuda/cuda_check.h"
#include "cuda/mv_kernel.cuh"
#include "cuda/mv_launch.h"

namespace dsv4::cuda::mv {

// Raises a kernel's dynamic shared-memory limit once per device (cudaFuncSetAttribute is a
// host call we keep off the per-token path).
template <auto Kernel>
void ensure_smem_limit(size_t bytes) {
  if (bytes <= 48 * 1024) return;
  static std::atomic<size_t> done[64];
  int dev = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev >= 0 && dev < 64 && done[dev].load(std::memory_order_relaxed) >= bytes) return;
  DSV4_CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(bytes)));
  if (dev >= 0 && dev < 64) {
    size_t cur = done[dev].load(std::memory_order_relaxed);
    while (cur < bytes && !done[dev].compare_exchange_weak(cur, bytes)) {
    }
  }
}

template <class F, int NB>
void launch_fast_nb(const Launch& l, cudaStream_t s, const char* name) {
  ensure_smem_limit<mv_fast_kernel<F, NB>>(l.smem);
  mv_fast_kernel<F, NB><<<static_cast<unsigned>(l.ctas), l.threads, l.smem, s>>>(l.p);
  DSV4_CUDA_CHECK_LAUNCH(name);
}

template <class F>
void launch_fast(const Launch& l, int nb, cudaStream_t s, const char* name) {
  switch (nb) {
    case 1: return launch_fast_nb<F, 1>(l, s, name);
    case 2: return launch_fast_nb<F, 2>(l, s, name);
    case 3: return launch_fast_nb<F, 3>(l, s, name);
    case 4: return launch_fast_nb<F, 4>(l, s, name);
    case 5: return launch_fast_nb<F, 5>(l, s, name);
    case 6: return launch_fast_nb<F, 6>(l, s, name);
    case 7: return launch_fast_nb<F, 7>(l, s, name);
    case 8: return launch_fast_nb<F, 8>(l, s, name);
    default: throw_invalid_argument("matvec: batch size outside 1..8");
  }
}

}  // namespace dsv4::cuda::mv
