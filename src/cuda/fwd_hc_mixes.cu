// The HC mixes of a prefill chunk: mixes[i][r] = sum_c W[r][c] X[i][c], W the sublayer's F16
// mix matrix [rows][cols] (rows = (2 + hc) hc = 24, cols = hc D = 16384 for the real model), X
// the f32 residual streams [n][cols]. cuBLAS SGEMM on the dequantized matrix ran this 24-row
// product at ~20 TFLOP/s (0.26-0.42 ms per call at 8K tokens, two calls per layer); the bytes are
// X's (n cols 4 bytes, 537 MB at 8K: 0.125 ms at 4.3 TB/s) and the FMAs 3.2 G (~0.1 ms).
//
// CTA: kTok tokens, all rows, the columns in chunks of kChunk staged in shared memory (X as f32,
// W converted from F16, exact), the next chunk's loads in registers while this one is multiplied.
// Lane (tg, rg) = (lane / 4, lane % 4) of warp w owns tokens tg + 8 i (i < 4) and rows rg + 4 j
// (j < 6): 24 sums, fed per 4 columns by 4 + 6 float4 loads (row pitches of kChunk + 4 floats
// keep the 8 distinct token rows and the 4 distinct weight rows of a load on different banks).
// Warp w takes columns [16 w, 16 w + 16) of every chunk; the 8 warps' sums are added in warp
// order at the end (deterministic).
#include <cuda_fp16.h>

#include "cuda/fwd_common.cuh"
#include "cuda/fwd_kernels.h"
#include "cuda/pdl.cuh"

namespace dsv4::cuda::fwd {
namespace {

constexpr int kTok = 32, kMaxRows = 24, kChunk = 128, kPitch = kChunk + 4, kThreads = 256;
constexpr int kWarps = kThreads / 32, kColsPerWarp = kChunk / kWarps;
constexpr int kXf4 = kTok * kChunk / 4 / kThreads;  // float4 loads of X per thread and chunk
constexpr int kWu4 = kMaxRows * kChunk / 8;         // 16-byte loads of W per chunk
constexpr int kWu4PerThread = (kWu4 + kThreads - 1) / kThreads;
static_assert(kXf4 * kThreads * 4 == kTok * kChunk && kColsPerWarp % 4 == 0);

// The staging buffers, reused at the end for the warps' sums.
union Smem {
  struct {
    float x[kTok][kPitch];
    float w[kMaxRows][kPitch];
  } st;
  float red[kWarps][kTok][kMaxRows];
};

__global__ void __launch_bounds__(kThreads, 2)
    hc_mixes_kernel(const __half* W, const float* X, int n, int rows, int cols, float* mixes) {
  pdl_trigger();
  pdl_wait();
  __shared__ __align__(16) Smem sm;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int t0 = blockIdx.x * kTok;
  const int tg = lane >> 2, rg = lane & 3;

  // Staging assignment: X float4 q = tid + kThreads e is row q / (kChunk / 4), column 4 (q % ..);
  // W 16-byte piece q = tid + kThreads e (< kWu4) is row q / (kChunk / 8), columns 8 (q % ..).
  float4 xr[kXf4];
  uint4 wr[kWu4PerThread];
  auto load = [&](int c0) {
#pragma unroll
    for (int e = 0; e < kXf4; ++e) {
      const int q = tid + kThreads * e, r = q / (kChunk / 4), c4 = q % (kChunk / 4);
      xr[e] =
          t0 + r < n
              ? __ldg(reinterpret_cast<const float4*>(X + (int64_t)(t0 + r) * cols + c0 + 4 * c4))
              : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int e = 0; e < kWu4PerThread; ++e) {
      const int q = tid + kThreads * e, r = q / (kChunk / 8), c8 = q % (kChunk / 8);
      wr[e] = q < kWu4 && r < rows
                  ? __ldg(reinterpret_cast<const uint4*>(W + (int64_t)r * cols + c0 + 8 * c8))
                  : make_uint4(0u, 0u, 0u, 0u);
    }
  };
  auto store = [&]() {
#pragma unroll
    for (int e = 0; e < kXf4; ++e) {
      const int q = tid + kThreads * e, r = q / (kChunk / 4), c4 = q % (kChunk / 4);
      *reinterpret_cast<float4*>(&sm.st.x[r][4 * c4]) = xr[e];
    }
#pragma unroll
    for (int e = 0; e < kWu4PerThread; ++e) {
      const int q = tid + kThreads * e, r = q / (kChunk / 8), c8 = q % (kChunk / 8);
      if (q < kWu4) {
        const __half2* h = reinterpret_cast<const __half2*>(&wr[e]);
        const float2 a = __half22float2(h[0]), b = __half22float2(h[1]);
        const float2 c = __half22float2(h[2]), d = __half22float2(h[3]);
        *reinterpret_cast<float4*>(&sm.st.w[r][8 * c8]) = make_float4(a.x, a.y, b.x, b.y);
        *reinterpret_cast<float4*>(&sm.st.w[r][8 * c8 + 4]) = make_float4(c.x, c.y, d.x, d.y);
      }
    }
  };

  float acc[4][6];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 6; ++j) acc[i][j] = 0.0f;

  load(0);
  for (int c0 = 0; c0 < cols; c0 += kChunk) {
    store();
    __syncthreads();
    if (c0 + kChunk < cols) load(c0 + kChunk);  // in flight while this chunk is multiplied
#pragma unroll
    for (int s4 = 0; s4 < kColsPerWarp / 4; ++s4) {
      const int k = kColsPerWarp * warp + 4 * s4;
      float4 xa[4], wa[6];
#pragma unroll
      for (int i = 0; i < 4; ++i) xa[i] = *reinterpret_cast<const float4*>(&sm.st.x[tg + 8 * i][k]);
#pragma unroll
      for (int j = 0; j < 6; ++j) wa[j] = *reinterpret_cast<const float4*>(&sm.st.w[rg + 4 * j][k]);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 6; ++j) {
          float a = acc[i][j];
          a = fmaf(xa[i].x, wa[j].x, a);
          a = fmaf(xa[i].y, wa[j].y, a);
          a = fmaf(xa[i].z, wa[j].z, a);
          a = fmaf(xa[i].w, wa[j].w, a);
          acc[i][j] = a;
        }
    }
    __syncthreads();  // every warp has read this chunk before the next one is stored
  }

  // Sums of the 8 warps, in warp order: red[warp][token][row].
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
  launch_k(hc_mixes_kernel, (unsigned)((n + kTok - 1) / kTok), kThreads, 0, s,
           static_cast<const __half*>(w_f16), X, n, rows, cols, mixes);
  FWD_LAUNCH_CHECK("hc_mixes_kernel");
}

}  // namespace dsv4::cuda::fwd
