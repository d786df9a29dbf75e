// The HC mixes of a prefill chunk: mixes[i][r] = sum_c W[r][c] X[i][c], W the sublayer's F16
// mix matrix [rows][cols] (rows = (2 + hc) hc = 24, cols = hc D = 16384 for the real model), X
// the f32 residual streams [n][cols]. cuBLAS SGEMM on the dequantized matrix ran this 24-row
// product at ~20 TFLOP/s (0.26-0.42 ms per call at 8K tokens, two calls per layer); the bytes are
// X's (n cols 4 bytes, 537 MB at 8K: 0.125 ms at 4.3 TB/s) and the FMAs 3.2 G (~0.1 ms).
//
// CTA: kTok tokens, all rows, the columns in chunks of kChunk staged in shared memory by cp.async
// (X as f32, W as F16, converted when read: exact) in a ring of kStages chunks, so that three
// chunks' loads are in flight while one is multiplied (with one chunk of register prefetch the
// kernel took ~0.37 ms per call at 8K tokens: the loads in flight per SM, not the FMAs, bound it).
// Lane (tg, rg) = (lane / 4, lane % 4) of warp w owns tokens tg + 8 i (i < 4) and rows rg + 4 j
// (j < 6): 24 sums, fed per 4 columns by 4 + 6 float4 loads (row pitches of kChunk + 4 floats
// keep the 8 distinct token rows and the 4 distinct weight rows of a load on different banks).
// Warp w takes columns [16 w, 16 w + 16) of every chunk; the 8 warps' sums are added in warp
// order at the end (deterministic).
#include <cuda_fp16.h>

#include "cuda/cp_async.cuh"
#include "cuda/cuda_check.h"
#include "cuda/fwd_common.cuh"
#include "cuda/fwd_kernels.h"
#include "cuda/pdl.cuh"

namespace dsv4::cuda::fwd {
namespace {

constexpr int kTok = 32, kMaxRows = 24, kChunk = 128, kThreads = 256, kStages = 4;
constexpr int kXPitch = kChunk + 4;  // floats
constexpr int kWPitch = kChunk + 8;  // halves
constexpr int kWarps = kThreads / 32, kColsPerWarp = kChunk / kWarps;
constexpr int kXCopies = kTok * kChunk / 4 / kThreads;  // 16-byte copies of X per thread, chunk
constexpr int kWCopies = kMaxRows * kChunk / 8;         // 16-byte copies of W per chunk
constexpr int kWCopiesPerThread = (kWCopies + kThreads - 1) / kThreads;
static_assert(kXCopies * kThreads * 4 == kTok * kChunk && kColsPerWarp % 4 == 0);

// A ring of kStages chunks (X as f32, W as F16), reused at the end for the warps' sums.
struct Stage {
  float x[kTok][kXPitch];
  __half w[kMaxRows][kWPitch];
};
union Smem {
  Stage st[kStages];
  float red[kWarps][kTok][kMaxRows];
};
constexpr size_t kSmemBytes = sizeof(Smem);

__global__ void __launch_bounds__(kThreads, 2)
    hc_mixes_kernel(const __half* W, const float* X, int n, int rows, int cols, float* mixes) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_raw);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int t0 = blockIdx.x * kTok;
  const int tg = lane >> 2, rg = lane & 3;
  const int nchunks = cols / kChunk;

  // Copy assignment: X piece q = tid + kThreads e is row q / (kChunk / 4), columns 4 (q % ..);
  // W piece q (< kWCopies) is row q / (kChunk / 8), columns 8 (q % ..). One commit group per chunk
  // (empty past the end, so that the group count stays uniform).
  auto issue = [&](int c) {
    if (c < nchunks) {
      Stage& st = sm.st[c % kStages];
      const int c0 = c * kChunk;
#pragma unroll
      for (int e = 0; e < kXCopies; ++e) {
        const int q = tid + kThreads * e, r = q / (kChunk / 4), c4 = q % (kChunk / 4);
        const bool ok = t0 + r < n;
        cp_async16_zfill(&st.x[r][4 * c4], X + (int64_t)(ok ? t0 + r : 0) * cols + c0 + 4 * c4,
                         ok ? 16 : 0);  // zeros past the chunk's tokens
      }
#pragma unroll
      for (int e = 0; e < kWCopiesPerThread; ++e) {
        const int q = tid + kThreads * e, r = q / (kChunk / 8), c8 = q % (kChunk / 8);
        if (q < kWCopies) {
          const bool ok = r < rows;
          cp_async16_zfill(&st.w[r][8 * c8], W + (int64_t)(ok ? r : 0) * cols + c0 + 8 * c8,
                           ok ? 16 : 0);  // zeros past the matrix's rows
        }
      }
    }
    cp_async_commit();
  };

  float acc[4][6];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 6; ++j) acc[i][j] = 0.0f;

#pragma unroll
  for (int c = 0; c < kStages - 1; ++c) issue(c);
  for (int c = 0; c < nchunks; ++c) {
    cp_async_wait<kStages - 2>();
    // Chunk c has landed for every thread, and every warp is done with chunk c - 1, whose stage
    // the copy issued next overwrites.
    __syncthreads();
    issue(c + kStages - 1);
    const Stage& st = sm.st[c % kStages];
#pragma unroll
    for (int s4 = 0; s4 < kColsPerWarp / 4; ++s4) {
      const int k = kColsPerWarp * warp + 4 * s4;
      float4 xa[4];
      float wa[6][4];
#pragma unroll
      for (int i = 0; i < 4; ++i) xa[i] = *reinterpret_cast<const float4*>(&st.x[tg + 8 * i][k]);
#pragma unroll
      for (int j = 0; j < 6; ++j) {
        const uint2 h = *reinterpret_cast<const uint2*>(&st.w[rg + 4 * j][k]);
        const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&h.x));
        const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&h.y));
        wa[j][0] = a.x;
        wa[j][1] = a.y;
        wa[j][2] = b.x;
        wa[j][3] = b.y;
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 6; ++j) {
          float a = acc[i][j];
          a = fmaf(xa[i].x, wa[j][0], a);
          a = fmaf(xa[i].y, wa[j][1], a);
          a = fmaf(xa[i].z, wa[j][2], a);
          a = fmaf(xa[i].w, wa[j][3], a);
          acc[i][j] = a;
        }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the ring becomes the sums' buffer

  // Sums of the 8 warps, in warp order.
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 6; ++j) sm.red[warp][tg + 8 * i][rg + 4 * j] = acc[i][j];
  __syncthreads();
  for (int o = tid; o < kTok * kMaxRows; o += kThreads) {
    const int t = o / kMaxRows, r = o % kMaxRows;
    if (t0 + t >= n || r >= rows) continue;
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) v += sm.red[w][t][r];
    mixes[(int64_t)(t0 + t) * rows + r] = v;
  }
}

}  // namespace

bool hc_mixes_supported(int64_t rows, int64_t cols, const void* w_f16) {
  return rows > 0 && rows <= kMaxRows && cols > 0 && cols % kChunk == 0 && cols <= 0x7fffffff &&
         (reinterpret_cast<uintptr_t>(w_f16) & 15) == 0;
}

void hc_mixes(const void* w_f16, const float* X, int n, int rows, int cols, float* mixes,
              cudaStream_t s) {
  if (n <= 0) return;
  if (!hc_mixes_supported(rows, cols, w_f16) || (reinterpret_cast<uintptr_t>(X) & 15) != 0)
    throw_invalid_argument("hc_mixes: unsupported shape or alignment");
  static const bool attr = [] {
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(
        hc_mixes_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kSmemBytes));
    return true;
  }();
  (void)attr;
  launch_k(hc_mixes_kernel, (unsigned)((n + kTok - 1) / kTok), kThreads, kSmemBytes, s,
           static_cast<const __half*>(w_f16), X, n, rows, cols, mixes);
  FWD_LAUNCH_CHECK("hc_mixes_kernel");
}

}  // namespace dsv4::cuda::fwd
