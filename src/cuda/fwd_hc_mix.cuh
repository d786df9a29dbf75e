// The decode step's HC mix partials (fwd_kernels.h: hc_mix_partials) computed by the kernel that
// writes X (hc_post, the MoE combine): CTA g of kMixThreads threads owns positions
// [g kPmD, (g + 1) kPmD) of the four streams, i.e. the kMixSlice columns {k D + d} of the next
// sublayer's F16 mix matrix [rows][4 D]. It loads its weights before the PDL wait
// (hc_mix_slice_load), then writes the new X values of its positions and parts[g][rows]
// (hc_post_mix_tail). The G = D / kPmD slices group the columns differently from
// hc_mix_partials, so the sums differ in rounding only.
#pragma once
#include <cuda_fp16.h>

#include "cuda/fwd_common.cuh"
#include "cuda/pdl.cuh"

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

// The start of a fused kernel: this CTA's mix weights requested, then the PDL wait (the weights
// are constant, so they may be read while the predecessor still runs).
__device__ __forceinline__ void hc_mix_slice_begin(const __half* W, int D, int rows,
                                                   uint4 (&wv)[kMixRowsPerWarp]) {
  hc_mix_slice_load(W, D, rows, (int)blockIdx.x, wv);
  pdl_trigger();
  pdl_wait();
}

// HCPost (hc = 4) of four consecutive positions d .. d + 3 of one token, in place: x[k D + d ..]
// = post[k] f + sum_j comb[j][k] x[j D + d ..], with the per-element operations of
// hc_post_kernel<4> (the chunk kernels hc_post_vec_kernel and moe_combine_post_vec_kernel).
__device__ __forceinline__ void hc_post4(const float4& fv, const float* post, const float* comb,
                                         int D, float* x) {
  float4 xs[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) xs[j] = *reinterpret_cast<const float4*>(x + j * D);
  float4 y[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float m = comb[j * 4 + k];
      acc.x += m * xs[j].x;
      acc.y += m * xs[j].y;
      acc.z += m * xs[j].z;
      acc.w += m * xs[j].w;
    }
    const float p = post[k];
    y[k] = make_float4(p * fv.x + acc.x, p * fv.y + acc.y, p * fv.z + acc.z, p * fv.w + acc.w);
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) *reinterpret_cast<float4*>(x + k * D) = y[k];
}

// Dot product of 8 F16 weights with 8 floats, in hc_mix_partials' order.
__device__ __forceinline__ float half8_dot(const uint4& wv, const float4& xa, const float4& xb) {
  const __half2* h = reinterpret_cast<const __half2*>(&wv);
  const float2 w0 = __half22float2(h[0]), w1 = __half22float2(h[1]);
  const float2 w2 = __half22float2(h[2]), w3 = __half22float2(h[3]);
  float v = w0.x * xa.x + w0.y * xa.y + w1.x * xa.z + w1.y * xa.w;
  v += w2.x * xb.x + w2.y * xb.y + w3.x * xb.z + w3.y * xb.w;
  return v;
}

// After the PDL wait, thread t (stream k = t / kPmD, position d = g kPmD + t % kPmD) loads its
// HCPost inputs: the old X[j][d], comb[j][k] and post[k]. Separate from the tail so that a kernel
// can request them before its other round trips.
struct HcPostIn {
  float xo[4], cm[4], p;
};
__device__ __forceinline__ HcPostIn hc_post_load(const float* post, const float* comb, int D,
                                                 const float* X, int g) {
  const int t = threadIdx.x, k = t / kPmD, d = g * kPmD + t % kPmD;
  HcPostIn in;
#pragma unroll
  for (int j = 0; j < 4; ++j) in.xo[j] = X[(int64_t)j * D + d];
#pragma unroll
  for (int j = 0; j < 4; ++j) in.cm[j] = comb[j * 4 + k];
  in.p = post[k];
  return in;
}

// The tail of a fused kernel: fv is the sublayer output at d. Writes the HCPost result
// y = post[k] fv + sum_j comb[j][k] X[j][d] (the operations of hc_post_kernel) over X, then the
// slice's partial mixes parts[g][rows] from the weights of hc_mix_slice_load.
__device__ __forceinline__ void hc_post_mix_tail(float fv, const HcPostIn& in, int D, float* X,
                                                 const uint4 (&wv)[kMixRowsPerWarp], int rows,
                                                 int g, float* parts) {
  __shared__ __align__(16) float xs[kMixSlice];
  const int t = threadIdx.x, k = t / kPmD, d = g * kPmD + t % kPmD;
  float acc = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) acc += in.cm[j] * in.xo[j];
  const float y = in.p * fv + acc;
  xs[t] = y;
  __syncthreads();  // every thread of this position has read the old X values
  X[(int64_t)k * D + d] = y;
  const int lane = t & 31, w = t >> 5;
  const float4 xa = *reinterpret_cast<const float4*>(xs + 8 * lane);
  const float4 xb = *reinterpret_cast<const float4*>(xs + 8 * lane + 4);
#pragma unroll
  for (int q = 0; q < kMixRowsPerWarp; ++q) {
    const int row = w + (kMixThreads / 32) * q;
    if (row >= rows) break;
    const float v = warp_sum(half8_dot(wv[q], xa, xb));
    if (lane == 0) parts[(int64_t)g * rows + row] = v;
  }
}

}  // namespace dsv4::cuda::fwd
