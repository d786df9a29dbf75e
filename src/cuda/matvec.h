// Quantized matrix-vector products for batch-1 decode on one GPU, reading GGUF blocks as stored.
//
//   y[r] = sum_c W[r][c] * x[c]       (W: rows x cols GGUF blocks, row-major, row r at r*row_bytes)
//
// x and y are f32 in device memory; accumulation is f32 (fma). Weights are decoded exactly as
// quant's CPU decoders do; the fast kernels differ from quant::matvec only in summation order
// (and, for Q2_K/Q4_K, in computing d1*sum(q x) - m1*sum(x) per sub-block instead of summing the
// decoded weights). Supported: F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS. Shapes the fast kernels
// do not cover (cols not a multiple of 64 values for Q8_0/F16/BF16, 32 for F32, 256 for
// Q2_K/Q4_K, 512 for IQ2_XXS; misaligned pointers) run on a generic kernel that equals
// quant::dot_row bit for bit. All calls are asynchronous on `stream` and throw dsv4::Error on bad
// arguments or launch failures.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "core/ggml_type.h"

namespace dsv4::cuda {

bool matvec_supported(GgmlType t);

enum class MatvecPath { kAuto, kGeneric };

// The general operation; the helpers below fill it in. Layouts (element strides, 0 = default):
//   W of (mat m, slot s): w[m] + e * expert_stride_bytes, e = ids ? ids[s] : s (0 if the stride
//     is 0); row r at + r * ggml_row_bytes(type, cols).
//   x of (slot s, vector v): x + s * x_slot_stride + v * x_vec_stride (default cols).
//   y of (mat m, slot s, vector v): y + m * y_mat_stride + s * y_slot_stride + v * y_vec_stride
//     (defaults: dense [n_mats][n_slots][nb][rows]).
// An id outside [0, n_expert) (when n_expert > 0) makes that slot's outputs NaN.
struct MatvecOp {
  GgmlType type = GgmlType::F32;
  const void* w[2] = {nullptr, nullptr};
  int n_mats = 1;  // 1 or 2 matrices of identical geometry sharing x and ids (e.g. gate and up)
  int64_t rows = 0, cols = 0;
  int64_t expert_stride_bytes = 0;
  int64_t n_expert = 0;
  const int32_t* ids = nullptr;  // device memory, n_slots entries
  int n_slots = 1;
  const float* x = nullptr;
  int64_t x_slot_stride = 0;  // 0: every slot reads the same x
  int64_t x_vec_stride = 0;
  int nb = 1;  // input vectors per slot, 1..8
  float* y = nullptr;
  int64_t y_mat_stride = 0, y_slot_stride = 0, y_vec_stride = 0;
  MatvecPath path = MatvecPath::kAuto;
  // Quantize x to int8 per 32 values (scale absmax / 127) and use integer dot products, where the
  // fast kernel of the type has that variant (IQ2_XXS, Q2_K, Q8_0): fewer instructions per weight
  // for formats that are instruction-bound with f32 x; results differ from the f32 path by the x
  // rounding (half a step of absmax/127 per value). Ignored elsewhere (other types, the generic
  // kernel).
  bool x8 = false;
  // Runs on a side stream beside the decode chain (a graph branch): the planner may then choose
  // a smaller shared-memory footprint so that the chain's kernels still fit on the SMs
  // (Tuning::side_persist).
  bool side = false;
  // The product's name for per-product planner knobs: DSV4_MV_TUNE_<TAG> (tag upper-cased, e.g.
  // DSV4_MV_TUNE_Q_B=side_pw=8) is applied on top of DSV4_MV_TUNE, for sweeps on the device.
  const char* tag = nullptr;
};

void matvec_run(const MatvecOp& op, cudaStream_t stream = nullptr);

// Human-readable launch plan of `op` on the current device ("fast: ..." or "generic (why)").
std::string matvec_describe(const MatvecOp& op);

// y[rows] = W x.
void matvec(GgmlType type, const void* w, int64_t rows, int64_t cols, const float* x, float* y,
            cudaStream_t stream = nullptr);

// Y[v][r] = W X[v] for v < nb (1..8): X is [nb][cols], Y is [nb][rows]. W is read once.
void matvec_batch(GgmlType type, const void* w, int64_t rows, int64_t cols, const float* x, int nb,
                  float* y, cudaStream_t stream = nullptr);

// Selected experts of stacked tensors [cols, rows, n_expert] (GGUF order; expert e at byte
// offset e * rows * row_bytes), one launch for all slots and for up to two tensors (gate and up).
// y is [n_mats][n_slots][rows]. x_slot_stride = 0 shares x between slots (gate/up); cols gives
// one x per slot (down projection).
struct ExpertMatvec {
  GgmlType type = GgmlType::F32;
  const void* w[2] = {nullptr, nullptr};
  int n_mats = 1;
  int64_t rows = 0, cols = 0, n_expert = 0;
  const int32_t* ids = nullptr;  // device memory [n_slots]
  int n_slots = 0;
  const float* x = nullptr;
  int64_t x_slot_stride = 0;
  float* y = nullptr;
};
void matvec_experts(const ExpertMatvec& e, cudaStream_t stream = nullptr);

}  // namespace dsv4::cuda
