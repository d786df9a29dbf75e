// Programmatic dependent launch (Hopper): a kernel launched with the programmatic-serialization
// attribute (the fast matvec kernels, mv_launch.cuh) may start while its predecessor in the
// stream is still running, once every block of the predecessor has called pdl_trigger() (or
// exited). It must call pdl_wait() before it reads anything a predecessor wrote or writes anything
// a predecessor reads; before that it may only touch constant data (the weights). Both are no-ops
// for kernels launched normally and on architectures before sm_90.
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>
#include <utility>

#include "cuda/cuda_check.h"
#include "cuda/launch_repeat.h"

namespace dsv4::cuda {

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Launches `kernel` on `s` with programmatic stream serialization: its blocks may be scheduled
// while its predecessor finishes, so the kernel must follow the rules above (the forward kernels
// wait first, which hides the launch gap; the matvec kernels start their weight copies before
// waiting). DSV4_PDL=0: plain launches.
inline bool pdl_launches_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("DSV4_PDL");
    return !(e && e[0] == '0');
  }();
  return on;
}
template <typename... KArgs, typename... Args>
void launch_once(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                 Args&&... args) {
  if (!pdl_launches_enabled()) {
    kernel<<<grid, block, smem, s>>>(std::forward<Args>(args)...);
    return;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), "cudaLaunchKernelEx",
        __FILE__, __LINE__);
}

template <typename... KArgs, typename... Args>
void launch_k(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
              Args&&... args) {
  const int n = launch_repeat();
  if (n == 0) return;  // a knocked-out stage (DSV4_CUDA_REPEAT=stage:0)
  for (int i = 1; i < n; ++i) launch_once(kernel, grid, block, smem, s, args...);
  launch_once(kernel, grid, block, smem, s, std::forward<Args>(args)...);
}

}  // namespace dsv4::cuda
