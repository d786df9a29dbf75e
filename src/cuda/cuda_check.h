// CUDA error layer: every failing runtime call becomes a dsv4::Error naming the call, the CUDA
// error, the file and the line. Usable from .cu files (no fmt here; the throw lives in a .cpp).
#pragma once
#include <cuda_runtime.h>

namespace dsv4::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line);

inline void check(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess) throw_cuda_error(e, call, file, line);
}

// Throws dsv4::Error(msg) (for .cu host code, which does not include fmt).
[[noreturn]] void throw_invalid_argument(const char* msg);

// After a kernel launch: turns a launch error (bad configuration, too much shared memory, ...)
// into a dsv4::Error naming the kernel. Does not synchronize.
void check_launch(const char* kernel, const char* file, int line);

}  // namespace dsv4::cuda

#define DSV4_CUDA_CHECK(expr) ::dsv4::cuda::check((expr), #expr, __FILE__, __LINE__)
#define DSV4_CUDA_CHECK_LAUNCH(kernel_name) ::dsv4::cuda::check_launch((kernel_name), __FILE__, __LINE__)
