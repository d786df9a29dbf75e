// Programmatic dependent launch (Hopper): a kernel launched with the programmatic-serialization
// attribute (the fast matvec kernels, mv_launch.cuh) may start while its predecessor in the
// stream is still running, once every block of the predecessor has called pdl_trigger() (or
// exited). It must call pdl_wait() before it reads anything a predecessor wrote or writes anything
// a predecessor reads; before that it may only touch constant data (the weights). Both are no-ops
// for kernels launched normally and on architectures before sm_90.
#pragma once

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

}  // namespace dsv4::cuda
