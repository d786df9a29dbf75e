// Device-side generator of random valid tensor data for synthetic models (synthetic.cpp). Every
// byte is a counter-based hash of (seed, byte position): the same seed gives the same bytes on any
// GPU and launch shape. No fmt here (included by .cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda::synth {

// How a tensor's values are drawn (decoded RMS `scale` unless noted).
enum class Fill : int {
  kBlocks = 0,     // quantized: random codes, f16 scale fields from `scale` (RMS of the values)
  kUniform = 1,    // F32/F16: symmetric uniform values of RMS `scale`
  kAround = 2,     // F32/F16: `offset` + symmetric uniform of RMS `scale` (norms: 1 +- ...)
  kPositive = 3,   // F32: uniform in [offset, offset + scale) (HC scales)
  kExpertIds = 4,  // I32 [n_used][rows]: distinct expert ids < n_expert per row
};

struct FillArgs {
  void* dst = nullptr;  // device (or mapped host) pointer, 8-byte aligned
  int type = 0;         // GgmlType value
  Fill fill = Fill::kBlocks;
  uint64_t nbytes = 0;
  uint64_t n_elements = 0;
  uint64_t seed = 0;  // already mixed with the tensor identity
  float scale = 1.0f;
  float offset = 0.0f;
  int64_t row_len = 0;   // kExpertIds: ids per row (n_expert_used)
  int64_t n_expert = 0;  // kExpertIds
};

// Enqueues the kernels that fill `a.dst` on `stream` (no synchronization). Returns false for a
// type/fill combination it does not support (the caller reports it).
bool launch_fill(const FillArgs& a, cudaStream_t stream);

// The same bytes computed on the CPU into host memory `a.dst` (tests; no device needed).
bool fill_host(const FillArgs& a);

}  // namespace dsv4::cuda::synth
