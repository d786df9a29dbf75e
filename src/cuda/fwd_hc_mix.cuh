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
#include "cuda/fwd_kernels.h"
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

// Dot product of 8 F16 weights with 8 floats, in hc_mix_partials' order.
__device__ __forceinline__ float half8_dot(const uint4& wv, const float4& xa, const float4& xb) {
  const __half2* h = reinterpret_cast<const __half2*>(&wv);
  const float2 w0 = __half22float2(h[0]), w1 = __half22float2(h[1]);
  const float2 w2 = __half22float2(h[2]), w3 = __half22float2(h[3]);
  float v = w0.x * xa.x + w0.y * xa.y + w1.x * xa.z + w1.y * xa.w;
  v += w2.x * xb.x + w2.y * xb.y + w3.x * xb.z + w3.y * xb.w;
  return v;
}

// The tail of a fused kernel, after the PDL wait: thread t owns stream k = t / kPmD at position
// d = g kPmD + t % kPmD, and fv is the sublayer output at d. Writes the HCPost result
// y = post[k] fv + sum_j comb[j][k] X[j][d] (the operations of hc_post_kernel) over X, then the
// slice's partial mixes parts[g][rows] from the weights of hc_mix_slice_load.
__device__ __forceinline__ void hc_post_mix_tail(float fv, const float* post, const float* comb,
                                                 int D, float* X,
                                                 const uint4 (&wv)[kMixRowsPerWarp], int rows,
                                                 int g, float* parts) {
  __shared__ __align__(16) float xs[kMixSlice];
  const int t = threadIdx.x, k = t / kPmD, d = g * kPmD + t % kPmD;
  float xo[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) xo[j] = X[(int64_t)j * D + d];
  float acc = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) acc += comb[j * 4 + k] * xo[j];
  const float y = post[k] * fv + acc;
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

// post (HC values) and comb (HC x HC, Sinkhorn) of token i from its mixes `mi` and the rms factor
// r, by one full warp (lane t holds matrix element t) through shuffles, with the float
// operations in the order of sinkhorn_d.
template <int HC>
__device__ __forceinline__ void hc_post_comb_warp(const float* mi, float r, const float* base,
                                                  const float* scale, int iters, float hc_eps,
                                                  int i, float* post, float* comb) {
  const int t = (int)(threadIdx.x & 31);
  if (t < HC) post[i * HC + t] = 2.0f * sigmoid_f(mi[HC + t] * r * scale[1] + base[HC + t]);
  const bool a = t < HC * HC;
  const int row = a ? t / HC : 0, col = a ? t % HC : 0;
  constexpr unsigned kFull = 0xffffffffu;
  float v = a ? mi[2 * HC + t] * r * scale[2] + base[2 * HC + t] : 0.0f;
  float mx = __shfl_sync(kFull, v, row * HC);
#pragma unroll
  for (int q = 1; q < HC; ++q) mx = fmaxf(mx, __shfl_sync(kFull, v, row * HC + q));
  v = expf(v - mx);
  float sum = 0.0f;
#pragma unroll
  for (int q = 0; q < HC; ++q) sum += __shfl_sync(kFull, v, row * HC + q);
  v = v / sum + hc_eps;
  for (int it = 0; it < (iters > 1 ? iters : 1); ++it) {
    if (it > 0) {  // row normalisation
      float sr = 0.0f;
#pragma unroll
      for (int q = 0; q < HC; ++q) sr += __shfl_sync(kFull, v, row * HC + q);
      v = v / (sr + hc_eps);
    }
    float sc = 0.0f;  // column normalisation
#pragma unroll
    for (int q = 0; q < HC; ++q) sc += __shfl_sync(kFull, v, q * HC + col);
    v = v / (sc + hc_eps);
  }
  if (a) comb[(int64_t)i * HC * HC + t] = v;
}

// hc_pre of one token (n = 1) by one block of any multiple of 32 threads (<= 1024) with
// D / 4 <= P * blockDim.x, from X and the G partial mixes [G][(2 + HC) HC] that other CTAs of the
// running grid wrote (read through L2): hc_pre_reg_kernel's operations, each thread owning P
// float4 of each stream, so the sums run in another order (rounding only). Writes xin, then post
// and comb (warp 0).
template <int HC, int P>
__device__ void hc_pre_block(const float* X, const float* parts, int G, const HcPreNext& a, int D) {
  static_assert(HC * HC <= 32, "one lane per matrix element");
  constexpr int kMix = (2 + HC) * HC;
  __shared__ float red[33];
  __shared__ float mix_sh[kMix];
  const int t = threadIdx.x, nt = blockDim.x, D4 = D >> 2, lane = t & 31;
  const float4* x4 = reinterpret_cast<const float4*>(X);
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float4 xs[P][HC];
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int j = t + p * nt;
#pragma unroll
    for (int s = 0; s < HC; ++s) xs[p][s] = j < D4 ? __ldcg(x4 + s * D4 + j) : zero;
  }
  for (int m = t >> 5; m < kMix; m += nt >> 5) {
    float v = 0.0f;
    for (int g = lane; g < G; g += 32) v += __ldcg(parts + (int64_t)g * kMix + m);
    v = warp_sum(v);
    if (lane == 0) mix_sh[m] = v;
  }
  float ss = 0.0f;
#pragma unroll
  for (int p = 0; p < P; ++p)
#pragma unroll
    for (int s = 0; s < HC; ++s)
      ss += xs[p][s].x * xs[p][s].x + xs[p][s].y * xs[p][s].y + xs[p][s].z * xs[p][s].z +
            xs[p][s].w * xs[p][s].w;
  ss = block_sum(ss, red);  // its barriers also publish mix_sh
  const float r = 1.0f / sqrtf(ss / (float)(HC * D) + a.rms_eps);
  float pre[HC];
#pragma unroll
  for (int s = 0; s < HC; ++s)
    pre[s] = sigmoid_f(mix_sh[s] * r * a.scale[0] + a.base[s]) + a.hc_eps;
  float4 o[P];
  float ss2 = 0.0f;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    o[p] = zero;
#pragma unroll
    for (int s = 0; s < HC; ++s) {
      o[p].x += pre[s] * xs[p][s].x;
      o[p].y += pre[s] * xs[p][s].y;
      o[p].z += pre[s] * xs[p][s].z;
      o[p].w += pre[s] * xs[p][s].w;
    }
    ss2 += o[p].x * o[p].x + o[p].y * o[p].y + o[p].z * o[p].z + o[p].w * o[p].w;
  }
  ss2 = block_sum(ss2, red);
  const float r2 = 1.0f / sqrtf(ss2 / (float)D + a.rms_eps);
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int j = t + p * nt;
    if (j < D4) {
      const int d = 4 * j;
      float4 w;
      w.x = a.norm_w[d] * (o[p].x * r2);
      w.y = a.norm_w[d + 1] * (o[p].y * r2);
      w.z = a.norm_w[d + 2] * (o[p].z * r2);
      w.w = a.norm_w[d + 3] * (o[p].w * r2);
      reinterpret_cast<float4*>(a.xin)[j] = w;
    }
  }
  if (t < 32)
    hc_post_comb_warp<HC>(mix_sh, r, a.base, a.scale, a.iters, a.hc_eps, 0, a.post, a.comb);
}

// The end of a fused HC kernel (hc_post_mix, moe_combine_post_mix) with a.done set: every CTA has
// written its X slice and partial mixes; the CTA that finishes last (an atomic count) runs the
// next sublayer's hc_pre (hc_pre_block, kMixThreads threads, D <= 16 kMixThreads) and resets the
// count, so the decode chain loses the hc_pre launch.
__device__ __forceinline__ void hc_pre_last(const HcPreNext& a, const float* X, const float* parts,
                                            int D) {
  if (!last_cta_arrives(a.done)) return;
  hc_pre_block<4, 4>(X, parts, (int)gridDim.x, a, D);
  if (threadIdx.x == 0) *a.done = 0u;
}

}  // namespace dsv4::cuda::fwd
