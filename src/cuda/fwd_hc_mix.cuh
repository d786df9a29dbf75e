// The decode step's HC mix partials (fwd_kernels.h: hc_mix_partials) computed by the kernel that
// writes X (hc_post, the MoE combine): CTA g of kMixThreads threads owns positions
// [g kPmD, (g + 1) kPmD) of the four streams, i.e. the kMixSlice columns {k D + d} of the next
// sublayer's F16 mix matrix [rows][4 D]. It loads its weights before the PDL wait
// (hc_mix_slice_load), writes the new X values of its positions to shared memory, and then
// writes parts[g][rows] (hc_mix_slice_store). The G = D / kPmD slices group the columns
// differently from hc_mix_partials, so the sums differ in rounding only.
#pragma once
#include <cuda_fp16.h>

#include "cuda/fwd_common.cuh"

namespace dsv4::cuda::fwd {

constexpr int kMixSlice = 256, kMixThreads = 256, kMixMaxRows = 32;
constexpr int kPmD = kMixSlice / 4;  // positions per CTA (hc = 4)
constexpr int kMixRowsPerWarp = kMixMaxRows / (kMixThreads / 32);
static_assert(kMixThreads == 4 * kPmD, "one thread per (stream, position)");

// Lane l's 8 columns of rows w, w + 8, ... (w = its warp) of slice g: 16-byte loads.
__device__ __forceinline__ void hc_mix_slice_load(const __half* W, int D, int rows, int g,
                                                  uint4 (&wv)[kMixRowsPerWarp]) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int cl = 8 * lane;  // local columns cl..cl+7: stream cl / kPmD, positions from cl % kPmD
  const int64_t col = (int64_t)(cl / kPmD) * D + g * kPmD + cl % kPmD;
#pragma unroll
  for (int q = 0; q < kMixRowsPerWarp; ++q) {
    const int row = w + (kMixThreads / 32) * q;
    wv[q] = row < rows ? __ldg(reinterpret_cast<const uint4*>(W + (int64_t)row * 4 * D + col))
                       : make_uint4(0u, 0u, 0u, 0u);
  }
}

// xs [kMixSlice]: the new X at the slice's columns (stream-major), visible to the whole block.
__device__ __forceinline__ void hc_mix_slice_store(const float* xs,
                                                   const uint4 (&wv)[kMixRowsPerWarp], int rows,
                                                   int g, float* parts) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const float4 xa = *reinterpret_cast<const float4*>(xs + 8 * lane);
  const float4 xb = *reinterpret_cast<const float4*>(xs + 8 * lane + 4);
#pragma unroll
  for (int q = 0; q < kMixRowsPerWarp; ++q) {
    const int row = w + (kMixThreads / 32) * q;
    if (row >= rows) break;
    const __half2* h = reinterpret_cast<const __half2*>(&wv[q]);
    const float2 w0 = __half22float2(h[0]), w1 = __half22float2(h[1]);
    const float2 w2 = __half22float2(h[2]), w3 = __half22float2(h[3]);
    float v = w0.x * xa.x + w0.y * xa.y + w1.x * xa.z + w1.y * xa.w;
    v += w2.x * xb.x + w2.y * xb.y + w3.x * xb.z + w3.y * xb.w;
    v = warp_sum(v);
    if (lane == 0) parts[(int64_t)g * rows + row] = v;
  }
}

}  // namespace dsv4::cuda::fwd
