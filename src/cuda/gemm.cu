// Tensor-core prefill products (gemm.h): dequantize-to-scratch kernels and the cuBLAS calls.
#include <cublas_v2.h>

#include <cstdio>

#include "cuda/block_decode.cuh"
#include "cuda/cuda_check.h"
#include "cuda/fwd_common.cuh"
#include "cuda/gemm.h"
#include "cuda/launch_repeat.h"

namespace dsv4::cuda::gemm {
namespace {

constexpr uint32_t kF32 = (uint32_t)GgmlType::F32, kF16 = (uint32_t)GgmlType::F16,
                   kBF16 = (uint32_t)GgmlType::BF16, kQ8_0 = (uint32_t)GgmlType::Q8_0,
                   kQ2_K = (uint32_t)GgmlType::Q2_K, kQ4_K = (uint32_t)GgmlType::Q4_K,
                   kIQ2_XXS = (uint32_t)GgmlType::IQ2_XXS;

unsigned grid_for(int64_t total, int threads) {
  const int64_t want = (total + threads - 1) / threads;
  return (unsigned)(want < 65536 ? (want > 0 ? want : 1) : 65536);
}

struct Pack8 {
  __device__ static void store(bf16* out, const float (&v)[8]) {
    __nv_bfloat162 p[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) p[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    *reinterpret_cast<uint4*>(out) = *reinterpret_cast<const uint4*>(p);
  }
  __device__ static void store(float* out, const float (&v)[8]) {
    reinterpret_cast<float4*>(out)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(out)[1] = make_float4(v[4], v[5], v[6], v[7]);
  }
};

// The source matrix of blockIdx.y = expert-list entry * (w1 ? 2 : 1) + matrix (0: w0, 1: w1);
// its output is matrix blockIdx.y of `out`. Without a list (list.n == 0) the single matrix w0.
__device__ __forceinline__ const uint8_t* block_matrix(const uint8_t* w0, const uint8_t* w1,
                                                       int64_t expert_bytes,
                                                       const ExpertList& list) {
  const int nm = w1 ? 2 : 1;
  const int mat = (int)blockIdx.y % nm, ei = (int)blockIdx.y / nm;
  const int64_t expert = list.n > 0 ? list.ids[ei] : 0;
  return (mat == 0 ? w0 : w1) + expert * expert_bytes;
}

// Eight consecutive values per thread (one block of every format holds a multiple of 8), grid
// over rows * cols / 8, blockIdx.y selects (expert, matrix) for stacked tensors.
template <uint32_t T, class Out>
__global__ void dequant_kernel(const uint8_t* w0, const uint8_t* w1, int64_t expert_bytes,
                               int64_t row_bytes, int64_t rows, int64_t cols, ExpertList list,
                               Out* out) {
  const uint8_t* base = block_matrix(w0, w1, expert_bytes, list);
  Out* o = out + (int64_t)blockIdx.y * rows * cols;
  const int64_t per_row = cols / 8, total = rows * per_row;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = t / per_row;
    const int c0 = (int)(t - r * per_row) * 8;
    const uint8_t* row = base + r * row_bytes;
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = mv::decode_value(T, row, c0 + j);
    Pack8::store(o + r * cols + c0, v);
  }
}

// Block-wise decoders for the routed-expert formats of the q2 layout (the bulk of a prefill
// chunk's dequantization): one thread per 32 (IQ2_XXS) or 16 (Q2_K) values sharing their scale,
// with the f32 operations of decode_value, so the output is identical to dequant_kernel's.
template <class Out>
__global__ void dequant_iq2xxs_kernel(const uint8_t* w0, const uint8_t* w1, int64_t expert_bytes,
                                      int64_t row_bytes, int64_t rows, int64_t cols,
                                      ExpertList list, Out* out) {
  const uint8_t* base = block_matrix(w0, w1, expert_bytes, list);
  Out* o = out + (int64_t)blockIdx.y * rows * cols;
  const int64_t per_row = cols / 32, total = rows * per_row;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = t / per_row;
    const int gi = (int)(t - r * per_row);  // group of 32 values in the row
    const uint8_t* b = base + r * row_bytes + 66 * (int64_t)(gi / 8);
    const int g = gi % 8;
    const float d = mv::f16f(mv::ld_u16(b));
    const uint32_t A = mv::ld_u16(b + 2 + 8 * g) | (mv::ld_u16(b + 4 + 8 * g) << 16);
    const uint32_t B = mv::ld_u16(b + 6 + 8 * g) | (mv::ld_u16(b + 8 + 8 * g) << 16);
    const float db = __fmul_rn(__fmul_rn(d, __fadd_rn(0.5f, (float)(B >> 28))), 0.25f);
    Out* dst = o + r * cols + 32 * (int64_t)gi;
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const uint64_t grid = mv::g_grid64.v[(A >> (8 * l)) & 0xFF];
      const uint32_t s7 = (B >> (7 * l)) & 127;
      const uint32_t signs = s7 | ((__popc(s7) & 1u) << 7);
      float v[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float w = __fmul_rn(db, (float)(uint32_t)((grid >> (8 * j)) & 0xFF));
        v[j] = (signs >> j) & 1 ? -w : w;
      }
      Pack8::store(dst + 8 * l, v);
    }
  }
}

template <class Out>
__global__ void dequant_q2k_kernel(const uint8_t* w0, const uint8_t* w1, int64_t expert_bytes,
                                   int64_t row_bytes, int64_t rows, int64_t cols, ExpertList list,
                                   Out* out) {
  const uint8_t* base = block_matrix(w0, w1, expert_bytes, list);
  Out* o = out + (int64_t)blockIdx.y * rows * cols;
  const int64_t per_row = cols / 16, total = rows * per_row;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = t / per_row;
    const int si = (int)(t - r * per_row);  // 16-value sub-block in the row
    const uint8_t* b = base + r * row_bytes + 84 * (int64_t)(si / 16);
    const int j = si % 16;  // sub-block in the block: values 16j .. 16j+15
    const int h = j / 8, shift = 2 * ((j % 8) / 2), l0 = (j % 2) * 16;
    const uint32_t sc = b[j];
    const float d = mv::f16f(mv::ld_u16(b + 80)), dmin = mv::f16f(mv::ld_u16(b + 82));
    const float dl = __fmul_rn(d, (float)(sc & 0xF));
    const float ml = __fmul_rn(dmin, (float)(sc >> 4));
    const uint8_t* q = b + 16 + 32 * h + l0;
    Out* dst = o + r * cols + 16 * (int64_t)si;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e)
        v[e] = __fsub_rn(__fmul_rn(dl, (float)((q[8 * half + e] >> shift) & 3)), ml);
      Pack8::store(dst + 8 * half, v);
    }
  }
}

template <class Out>
void launch_dequant(uint32_t type, const void* w0, const void* w1, int64_t expert_bytes,
                    int64_t row_bytes, int64_t rows, int64_t cols, const ExpertList& list, Out* out,
                    cudaStream_t s) {
  if (cols % 8 != 0) throw_invalid_argument("gemm dequant: cols must be a multiple of 8");
  const int64_t total = rows * (cols / 8);
  if (total <= 0) return;
  const int threads = 256;
  const int64_t want = (total + threads - 1) / threads;
  const unsigned blocks = (unsigned)(want < 65536 ? want : 65536);
  const unsigned ny = (unsigned)((list.n > 0 ? list.n : 1) * (w1 ? 2 : 1));
  const dim3 grid(blocks, ny);
  const auto* a = static_cast<const uint8_t*>(w0);
  const auto* b = static_cast<const uint8_t*>(w1);
#define DSV4_DQ(T)       \
  dequant_kernel<T, Out> \
      <<<grid, threads, 0, s>>>(a, b, expert_bytes, row_bytes, rows, cols, list, out)
  if (type == kIQ2_XXS && cols % 256 == 0) {
    dequant_iq2xxs_kernel<Out><<<dim3(grid_for(total / 4, threads), ny), threads, 0, s>>>(
        a, b, expert_bytes, row_bytes, rows, cols, list, out);
    DSV4_CUDA_CHECK_LAUNCH("dequant_iq2xxs_kernel");
    return;
  }
  if (type == kQ2_K && cols % 256 == 0) {
    dequant_q2k_kernel<Out><<<dim3(grid_for(total / 2, threads), ny), threads, 0, s>>>(
        a, b, expert_bytes, row_bytes, rows, cols, list, out);
    DSV4_CUDA_CHECK_LAUNCH("dequant_q2k_kernel");
    return;
  }
  switch (type) {
    case kF32:
      DSV4_DQ(kF32);
      break;
    case kF16:
      DSV4_DQ(kF16);
      break;
    case kBF16:
      DSV4_DQ(kBF16);
      break;
    case kQ8_0:
      DSV4_DQ(kQ8_0);
      break;
    case kQ2_K:
      DSV4_DQ(kQ2_K);
      break;
    case kQ4_K:
      DSV4_DQ(kQ4_K);
      break;
    case kIQ2_XXS:
      DSV4_DQ(kIQ2_XXS);
      break;
    default:
      throw_invalid_argument("gemm dequant: unsupported weight type");
  }
#undef DSV4_DQ
  DSV4_CUDA_CHECK_LAUNCH("dequant_kernel");
}

__global__ void to_bf16_kernel(const float* x, int64_t rows, int64_t cols, int64_t ldx, bf16* y) {
  const int64_t per_row = cols / 2, total = rows * per_row;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = t / per_row, c = (t - r * per_row) * 2;
    const float2 v = *reinterpret_cast<const float2*>(x + r * ldx + c);
    *reinterpret_cast<__nv_bfloat162*>(y + r * cols + c) = __floats2bfloat162_rn(v.x, v.y);
  }
}

__global__ void gather_rows_bf16_kernel(const float* x, const int32_t* idx, int64_t rows,
                                        int64_t cols, bf16* out) {
  const int64_t per_row = cols / 2, total = rows * per_row;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = t / per_row, c = (t - r * per_row) * 2;
    const float2 v = *reinterpret_cast<const float2*>(x + (int64_t)idx[r] * cols + c);
    *reinterpret_cast<__nv_bfloat162*>(out + r * cols + c) = __floats2bfloat162_rn(v.x, v.y);
  }
}

__global__ void swiglu_bf16_kernel(const float* gu, const float* row_w, int64_t rows, int F,
                                   float clamp, bf16* h) {
  const int64_t total = rows * F;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = t / F;
    const int f = (int)(t - r * F);
    const float* g = gu + r * 2 * F;
    const float v = fwd::swiglu_f(g[f], g[F + f], clamp);
    h[t] = __float2bfloat16_rn(row_w ? row_w[r] * v : v);
  }
}

void check_blas(cublasStatus_t st, const char* call) {
  if (st == CUBLAS_STATUS_SUCCESS) return;
  char msg[256];
  std::snprintf(msg, sizeof msg, "cuBLAS call %s failed: status %d", call, (int)st);
  throw_invalid_argument(msg);
}
#define DSV4_BLAS(expr) check_blas((expr), #expr)

int to_int(int64_t v, const char* what) {
  if (v < 0 || v > 0x7fffffff) {
    char msg[128];
    std::snprintf(msg, sizeof msg, "gemm: %s = %lld out of cuBLAS's int range", what, (long long)v);
    throw_invalid_argument(msg);
  }
  return (int)v;
}

}  // namespace

void dequant_bf16(uint32_t type, const void* w, int64_t row_bytes, int64_t rows, int64_t cols,
                  bf16* out, cudaStream_t s) {
  launch_dequant<bf16>(type, w, nullptr, 0, row_bytes, rows, cols, ExpertList{}, out, s);
}

void dequant_f32(uint32_t type, const void* w, int64_t row_bytes, int64_t rows, int64_t cols,
                 float* out, cudaStream_t s) {
  launch_dequant<float>(type, w, nullptr, 0, row_bytes, rows, cols, ExpertList{}, out, s);
}

void dequant_experts_bf16(uint32_t type, const void* w0, const void* w1, int64_t expert_bytes,
                          int64_t row_bytes, int64_t rows, int64_t cols, const ExpertList& list,
                          bf16* out, cudaStream_t s) {
  if (list.n <= 0 || list.n > kMaxExpertBatch)
    throw_invalid_argument("gemm dequant: expert batch must hold 1..64 experts");
  launch_dequant<bf16>(type, w0, w1, expert_bytes, row_bytes, rows, cols, list, out, s);
}

void to_bf16(const float* x, int64_t rows, int64_t cols, int64_t ldx, bf16* y, cudaStream_t s) {
  if (cols % 2 != 0 || ldx % 2 != 0) throw_invalid_argument("to_bf16: cols and ldx must be even");
  to_bf16_kernel<<<grid_for(rows * cols / 2, 256), 256, 0, s>>>(x, rows, cols, ldx, y);
  DSV4_CUDA_CHECK_LAUNCH("to_bf16_kernel");
}

void gather_rows_bf16(const float* x, const int32_t* idx, int64_t rows, int64_t cols, bf16* out,
                      cudaStream_t s) {
  if (cols % 2 != 0) throw_invalid_argument("gather_rows_bf16: cols must be even");
  if (rows <= 0) return;
  gather_rows_bf16_kernel<<<grid_for(rows * cols / 2, 256), 256, 0, s>>>(x, idx, rows, cols, out);
  DSV4_CUDA_CHECK_LAUNCH("gather_rows_bf16_kernel");
}

void swiglu_bf16(const float* gu, const float* row_w, int64_t rows, int F, float clamp, bf16* h,
                 cudaStream_t s) {
  if (rows <= 0) return;
  swiglu_bf16_kernel<<<grid_for(rows * F, 256), 256, 0, s>>>(gu, row_w, rows, F, clamp, h);
  DSV4_CUDA_CHECK_LAUNCH("swiglu_bf16_kernel");
}

Blas::Blas(cudaStream_t s) {
  cublasHandle_t h = nullptr;
  DSV4_BLAS(cublasCreate(&h));
  h_ = h;
  DSV4_BLAS(cublasSetStream(h, s));
  DSV4_BLAS(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));  // no TF32 for the f32 products
}

Blas::~Blas() {
  if (h_) cublasDestroy(static_cast<cublasHandle_t>(h_));
}

void Blas::bf16_nt(const bf16* W, const bf16* X, float* Y, int64_t rows, int64_t cols, int64_t n,
                   int64_t ldx, int64_t ldy, int batch, int64_t w_stride, int64_t x_stride,
                   int64_t y_stride) const {
  if (n <= 0) return;
  const float one = 1.0f, zero = 0.0f;
  auto h = static_cast<cublasHandle_t>(h_);
  // Column-major view: Y^T (rows x n, ld ldy) = W (op T of cols x rows, ld cols) * X^T (cols x n).
  const int m = to_int(rows, "rows"), nn = to_int(n, "n"), k = to_int(cols, "cols");
  const int lda = k, ldb = to_int(ldx, "ldx"), ldc = to_int(ldy, "ldy");
  // DSV4_CUDA_REPEAT counts cover the library's launches too (launch_repeat.h).
  for (int rep = launch_repeat(); rep > 0; --rep) {
    if (batch <= 1) {
      DSV4_BLAS(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, W, CUDA_R_16BF, lda, X,
                             CUDA_R_16BF, ldb, &zero, Y, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT));
    } else {
      DSV4_BLAS(cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, W,
                                           CUDA_R_16BF, lda, w_stride, X, CUDA_R_16BF, ldb,
                                           x_stride, &zero, Y, CUDA_R_32F, ldc, y_stride, batch,
                                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
  }
}

void Blas::f32_nt(const float* W, const float* X, float* Y, int64_t rows, int64_t cols, int64_t n,
                  int64_t ldx, int64_t ldy) const {
  if (n <= 0) return;
  const float one = 1.0f, zero = 0.0f;
  auto h = static_cast<cublasHandle_t>(h_);
  for (int rep = launch_repeat(); rep > 0; --rep)
    DSV4_BLAS(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, to_int(rows, "rows"), to_int(n, "n"),
                          to_int(cols, "cols"), &one, W, to_int(cols, "cols"), X,
                          to_int(ldx, "ldx"), &zero, Y, to_int(ldy, "ldy")));
}

void Blas::tf32_nt(const float* W, const float* X, float* Y, int64_t rows, int64_t cols, int64_t n,
                   int64_t ldx, int64_t ldy) const {
  if (n <= 0) return;
  const float one = 1.0f, zero = 0.0f;
  auto h = static_cast<cublasHandle_t>(h_);
  const int m = to_int(rows, "rows"), nn = to_int(n, "n"), k = to_int(cols, "cols");
  for (int rep = launch_repeat(); rep > 0; --rep)
    DSV4_BLAS(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, W, CUDA_R_32F, k, X,
                           CUDA_R_32F, to_int(ldx, "ldx"), &zero, Y, CUDA_R_32F, to_int(ldy, "ldy"),
                           CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
}

}  // namespace dsv4::cuda::gemm
