// Tensor-core matrix products for multi-token chunks (prefill): the quantized weights of one
// product are dequantized to bf16 in a scratch buffer (bit-exact decoding, then one rounding to
// bf16), activations are rounded to bf16, and cuBLAS multiplies with f32 accumulation and f32
// output. Products whose inputs need f32 range or precision (the hyper-connection mixes, the
// router) use the f32 variant: weights dequantized to f32, plain f32 GEMM.
//
// Layouts are row-major as in the rest of the forward pass: W [rows][cols], X [n][cols] (row
// stride ldx), Y [n][rows] (row stride ldy): Y = X W^T. All calls are asynchronous on the stream
// the Blas object was bound to.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda::gemm {

using bf16 = __nv_bfloat16;

// out[r][c] = value c of row r of a block-format matrix (ggml type id), rows `row_bytes` apart,
// rounded to bf16. cols must be a multiple of 8 and of the format's block size.
void dequant_bf16(uint32_t type, const void* w, int64_t row_bytes, int64_t rows, int64_t cols,
                  bf16* out, cudaStream_t s);

// The same into f32 (exact).
void dequant_f32(uint32_t type, const void* w, int64_t row_bytes, int64_t rows, int64_t cols,
                 float* out, cudaStream_t s);

// Up to kMaxExpertBatch experts of stacked expert tensors in one launch: for i < n_experts,
// out[i] = [rows of w0[ids[i]] ; rows of w1[ids[i]]] (w1 may be null: one matrix per expert),
// each expert matrix `rows` x `cols`, experts `expert_bytes` apart.
constexpr int kMaxExpertBatch = 64;
struct ExpertList {
  int32_t ids[kMaxExpertBatch];
  int n = 0;
};
void dequant_experts_bf16(uint32_t type, const void* w0, const void* w1, int64_t expert_bytes,
                          int64_t row_bytes, int64_t rows, int64_t cols, const ExpertList& list,
                          bf16* out, cudaStream_t s);

// y[i] = bf16(x[i]) for rows of `cols` values, rows `ldx` floats apart in x, packed in y.
void to_bf16(const float* x, int64_t rows, int64_t cols, int64_t ldx, bf16* y, cudaStream_t s);

// out[r] = bf16(x[idx[r]]) for rows of `cols` values (x rows `cols` apart).
void gather_rows_bf16(const float* x, const int32_t* idx, int64_t rows, int64_t cols, bf16* out,
                      cudaStream_t s);

// SwiGLU of gate/up GEMM rows: gu [rows][2F] (gate then up), h[r][f] = w_r * silu(min(g, c)) *
// clamp(u, -c, c) in bf16, w_r = row_w[r] (row_w null: 1). Same f32 operations as fwd::swiglu.
void swiglu_bf16(const float* gu, const float* row_w, int64_t rows, int F, float clamp, bf16* h,
                 cudaStream_t s);

// A cuBLAS handle bound to one stream.
class Blas {
 public:
  explicit Blas(cudaStream_t s);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // Y[n][rows] (row stride ldy) = X[n][cols] (row stride ldx) * W[rows][cols]^T, bf16 inputs,
  // f32 accumulation and output. `batch` > 1: strided batched over W (+ w_stride elements),
  // X (+ x_stride) and Y (+ y_stride).
  void bf16_nt(const bf16* W, const bf16* X, float* Y, int64_t rows, int64_t cols, int64_t n,
               int64_t ldx, int64_t ldy, int batch = 1, int64_t w_stride = 0, int64_t x_stride = 0,
               int64_t y_stride = 0) const;
  // The same in f32 (no TF32).
  void f32_nt(const float* W, const float* X, float* Y, int64_t rows, int64_t cols, int64_t n,
              int64_t ldx, int64_t ldy) const;
  // The same on the tensor cores in TF32: f32 inputs rounded to 10-bit mantissas, f32
  // accumulation (~8x the SGEMM rate; for products whose official precision is BF16).
  void tf32_nt(const float* W, const float* X, float* Y, int64_t rows, int64_t cols, int64_t n,
               int64_t ldx, int64_t ldy) const;

 private:
  void* h_ = nullptr;  // cublasHandle_t
};

}  // namespace dsv4::cuda::gemm
