// Embedding, hyper-connections (HCPre with Sinkhorn, HCPost, HCHead), row RMSNorm, argmax.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/fwd_common.cuh"
#include "cuda/fwd_hc_mix.cuh"
#include "cuda/fwd_kernels.h"
#include "cuda/pdl.cuh"

namespace dsv4::cuda::fwd {

namespace {

constexpr int kThreads = 256;
constexpr int kRowThreads = 1024;  // one block per token row of hc * D: latency-bound loops
constexpr int kMaxHc = 16;

__global__ void embed_kernel(const uint8_t* table, uint32_t type, int64_t row_bytes,
                             const int32_t* tokens, int D, int hc, float* X) {
  pdl_trigger();
  pdl_wait();
  const int i = blockIdx.x;
  const uint8_t* row = table + (int64_t)tokens[i] * row_bytes;
  float* x = X + (int64_t)i * hc * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float v;
    if (type == 0) {
      v = reinterpret_cast<const float*>(row)[d];
    } else if (type == 1) {
      v = __half2float(reinterpret_cast<const __half*>(row)[d]);
    } else {
      const uint16_t b = reinterpret_cast<const uint16_t*>(row)[d];
      v = __uint_as_float((uint32_t)b << 16);
    }
    for (int s = 0; s < hc; ++s) x[s * D + d] = v;
  }
}

// ops::sinkhorn, one thread.
__device__ void sinkhorn_d(float* m, int hc, int iters, float eps) {
  for (int j = 0; j < hc; ++j) {
    float mx = m[j * hc];
    for (int k = 1; k < hc; ++k) mx = fmaxf(mx, m[j * hc + k]);
    float sum = 0.0f;
    for (int k = 0; k < hc; ++k) {
      m[j * hc + k] = expf(m[j * hc + k] - mx);
      sum += m[j * hc + k];
    }
    for (int k = 0; k < hc; ++k) m[j * hc + k] = m[j * hc + k] / sum + eps;
  }
  auto col_norm = [&] {
    for (int k = 0; k < hc; ++k) {
      float s = 0.0f;
      for (int j = 0; j < hc; ++j) s += m[j * hc + k];
      for (int j = 0; j < hc; ++j) m[j * hc + k] /= (s + eps);
    }
  };
  auto row_norm = [&] {
    for (int j = 0; j < hc; ++j) {
      float s = 0.0f;
      for (int k = 0; k < hc; ++k) s += m[j * hc + k];
      for (int k = 0; k < hc; ++k) m[j * hc + k] /= (s + eps);
    }
  };
  col_norm();
  for (int it = 1; it < iters; ++it) {
    row_norm();
    col_norm();
  }
}

__global__ void __launch_bounds__(kRowThreads)
    hc_pre_kernel(const float* X, const float* mixes, const float* base, const float* scale,
                  const float* norm_w, int D, int hc, int iters, float rms_eps, float hc_eps,
                  float* post, float* comb, float* xin) {
  pdl_trigger();
  pdl_wait();
  __shared__ float red[33];
  __shared__ float pre[kMaxHc];
  __shared__ float cm[kMaxHc * kMaxHc];
  const int i = blockIdx.x;
  const int HD = hc * D, mix = (2 + hc) * hc;
  const float* x = X + (int64_t)i * HD;
  float ss = 0.0f;
  for (int d = threadIdx.x; d < HD; d += blockDim.x) ss += x[d] * x[d];
  ss = block_sum(ss, red);
  float* out = xin + (int64_t)i * D;
  float ss2 = 0.0f;
  if (hc * hc <= 32) {
    const float* mi = mixes + (int64_t)i * mix;
    const float r = 1.0f / sqrtf(ss / (float)HD + rms_eps);
    if (threadIdx.x < hc) {
      const int t = threadIdx.x;
      pre[t] = sigmoid_f(mi[t] * r * scale[0] + base[t]) + hc_eps;
      post[i * hc + t] = 2.0f * sigmoid_f(mi[hc + t] * r * scale[1] + base[hc + t]);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      // Warp 0, one lane per matrix element: the same float operations in the same order as the
      // one-thread sinkhorn_d, so the result is identical. The other warps meanwhile compute xin.
      const int t = threadIdx.x;
      const bool act = t < hc * hc;
      const int row = act ? t / hc : 0, col = act ? t % hc : 0;
      float v = 0.0f;
      if (act) {
        v = mi[2 * hc + t] * r * scale[2] + base[2 * hc + t];
        cm[t] = v;
      }
      __syncwarp();
      if (act) {
        float mx = cm[row * hc];
        for (int q = 1; q < hc; ++q) mx = fmaxf(mx, cm[row * hc + q]);
        v = expf(v - mx);
      }
      __syncwarp();
      if (act) cm[t] = v;
      __syncwarp();
      if (act) {
        float sum = 0.0f;
        for (int q = 0; q < hc; ++q) sum += cm[row * hc + q];
        v = v / sum + hc_eps;
      }
      __syncwarp();
      if (act) cm[t] = v;
      __syncwarp();
      for (int it = 0; it < (iters > 1 ? iters : 1); ++it) {
        if (it > 0) {  // row normalisation
          float sr = 0.0f;
          if (act)
            for (int q = 0; q < hc; ++q) sr += cm[row * hc + q];
          __syncwarp();
          if (act) cm[t] = v = v / (sr + hc_eps);
          __syncwarp();
        }
        float sc = 0.0f;  // column normalisation
        if (act)
          for (int q = 0; q < hc; ++q) sc += cm[q * hc + col];
        __syncwarp();
        if (act) cm[t] = v = v / (sc + hc_eps);
        __syncwarp();
      }
      if (act) comb[(int64_t)i * hc * hc + t] = v;
    } else {
      for (int d = threadIdx.x - 32; d < D; d += blockDim.x - 32) {
        float acc = 0.0f;
        for (int s2 = 0; s2 < hc; ++s2) acc += pre[s2] * x[s2 * D + d];
        out[d] = acc;
        ss2 += acc * acc;
      }
    }
  } else {
    if (threadIdx.x == 0) {
      const float r = 1.0f / sqrtf(ss / (float)HD + rms_eps);
      const float* mi = mixes + (int64_t)i * mix;
      float m[(2 + kMaxHc) * kMaxHc];
      for (int j = 0; j < mix; ++j) m[j] = mi[j] * r;
      for (int s2 = 0; s2 < hc; ++s2) {
        pre[s2] = sigmoid_f(m[s2] * scale[0] + base[s2]) + hc_eps;
        post[i * hc + s2] = 2.0f * sigmoid_f(m[hc + s2] * scale[1] + base[hc + s2]);
      }
      for (int j = 0; j < hc * hc; ++j) cm[j] = m[2 * hc + j] * scale[2] + base[2 * hc + j];
      sinkhorn_d(cm, hc, iters, hc_eps);
      for (int j = 0; j < hc * hc; ++j) comb[(int64_t)i * hc * hc + j] = cm[j];
    }
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float acc = 0.0f;
      for (int s2 = 0; s2 < hc; ++s2) acc += pre[s2] * x[s2 * D + d];
      out[d] = acc;
      ss2 += acc * acc;
    }
  }
  ss2 = block_sum(ss2, red);
  const float r2 = 1.0f / sqrtf(ss2 / (float)D + rms_eps);
  for (int d = threadIdx.x; d < D; d += blockDim.x) out[d] = norm_w[d] * (out[d] * r2);
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

// hc_pre for small hc (hc*hc <= 32) and D/4 <= 1024: every thread keeps its hc float4 of X in
// registers (one pass over X, all loads in flight). With two blocks per token (gridDim.y == 2, a
// decode token: Sinkhorn runs beside the xin pass) block y = 0 writes xin and block y = 1 (same ss,
// same reduction order, so the same r) writes post and comb; with one (a prefill chunk: X is read
// once) the block writes xin and then its warp 0 writes post and comb.
//
// `parts` (one token, n == 1): the mixes come as G partial sums [G][(2 + HC) HC] (hc_mix_partials)
// and one warp per mix adds it up over the G slices, in a fixed order.
//
// mode kHcPreXin / kHcPreComb (one token, gridDim.y == 1): only xin, or only post and comb. The
// decode forward runs the second on a side stream, so that the Sinkhorn warp (~2 us of dependent
// shuffles and divisions) is not on the chain: nothing reads post and comb before hc_post / the
// MoE combine. Both launches form r and the mixes exactly as the two-block launch does.
constexpr int kHcPreBoth = 0, kHcPreXin = 1, kHcPreComb = 2;
template <int HC>
__global__ void __launch_bounds__(kRowThreads)
    hc_pre_reg_kernel(const float* X, const float* mixes, const float* parts, int G,
                      const float* base, const float* scale, const float* norm_w, int D, int iters,
                      float rms_eps, float hc_eps, float* post, float* comb, float* xin, int mode) {
  static_assert(HC * HC <= 32, "one lane per matrix element");
  constexpr int kMix = (2 + HC) * HC;
  __shared__ float red[33];
  __shared__ float mix_sh[kMix];
  const int i = blockIdx.x, t = threadIdx.x;
  const int D4 = D >> 2, HD = HC * D;
  const bool act = t < D4;
  const bool comb_block = mode == kHcPreComb || (mode == kHcPreBoth && blockIdx.y == 1);
  // Weights are constant: read before waiting for the predecessors (their latency overlaps it).
  float4 nw = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float pre_scale = 0.0f, pre_base[HC];
  if (!comb_block) {
    if (act)
      nw = make_float4(norm_w[4 * t], norm_w[4 * t + 1], norm_w[4 * t + 2], norm_w[4 * t + 3]);
    pre_scale = scale[0];
#pragma unroll
    for (int s = 0; s < HC; ++s) pre_base[s] = base[s];
  }
  pdl_trigger();
  pdl_wait();
  const float4* x4 = reinterpret_cast<const float4*>(X + (int64_t)i * HD);
  float4 xs[HC];
#pragma unroll
  for (int s = 0; s < HC; ++s) xs[s] = act ? x4[s * D4 + t] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (parts) {
    const int lane = t & 31;
    for (int m = t >> 5; m < kMix; m += (int)(blockDim.x >> 5)) {
      float v = 0.0f;
      for (int g = lane; g < G; g += 32) v += parts[(int64_t)g * kMix + m];
      v = warp_sum(v);
      if (lane == 0) mix_sh[m] = v;
    }
  }
  float ss = 0.0f;
#pragma unroll
  for (int s = 0; s < HC; ++s)
    ss += xs[s].x * xs[s].x + xs[s].y * xs[s].y + xs[s].z * xs[s].z + xs[s].w * xs[s].w;
  ss = block_sum(ss, red);  // its barriers also publish mix_sh
  const float r = 1.0f / sqrtf(ss / (float)HD + rms_eps);
  const float* mi = parts ? mix_sh : mixes + (int64_t)i * kMix;
  if (comb_block) {
    if (t < 32) hc_post_comb_warp<HC>(mi, r, base, scale, iters, hc_eps, i, post, comb);
    return;
  }
  float pre[HC];
#pragma unroll
  for (int s = 0; s < HC; ++s) pre[s] = sigmoid_f(mi[s] * r * pre_scale + pre_base[s]) + hc_eps;
  float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
  for (int s = 0; s < HC; ++s) {
    o.x += pre[s] * xs[s].x;
    o.y += pre[s] * xs[s].y;
    o.z += pre[s] * xs[s].z;
    o.w += pre[s] * xs[s].w;
  }
  float ss2 = o.x * o.x + o.y * o.y + o.z * o.z + o.w * o.w;
  ss2 = block_sum(ss2, red);
  const float r2 = 1.0f / sqrtf(ss2 / (float)D + rms_eps);
  if (act) {
    float4 w;
    w.x = nw.x * (o.x * r2);
    w.y = nw.y * (o.y * r2);
    w.z = nw.z * (o.z * r2);
    w.w = nw.w * (o.w * r2);
    reinterpret_cast<float4*>(xin + (int64_t)i * D)[t] = w;
  }
  // One block per token (gridDim.y == 1, the prefill launch): warp 0 also forms post and comb,
  // after xin, so X is read once per token instead of twice.
  if (mode == kHcPreBoth && gridDim.y == 1 && t < 32)
    hc_post_comb_warp<HC>(mi, r, base, scale, iters, hc_eps, i, post, comb);
}

// Partial mixes of one token: CTA g multiplies columns [g S, (g + 1) S) (S = kMixSlice) of the
// F16 matrix W [rows][cols] by x; warp w takes rows w, w + 8, ..., each lane 8 columns (one 16-byte
// load of W per row, two of x), and writes parts[g][row]. With 24 rows one CTA per row (the matvec
// kernel's grid) left most SMs idle for ~7 us; 64 slices finish in about a launch.
__global__ void __launch_bounds__(kMixThreads)
    hc_mix_partials_kernel(const __half* W, const float* x, int rows, int cols, float* parts) {
  pdl_trigger();
  pdl_wait();
  const int g = blockIdx.x, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int c = g * kMixSlice + 8 * lane;
  const float4* xp = reinterpret_cast<const float4*>(x + c);
  const float4 xa = xp[0], xb = xp[1];
  for (int row = w; row < rows; row += kMixThreads / 32) {
    const uint4 wv = __ldg(reinterpret_cast<const uint4*>(W + (int64_t)row * cols + c));
    const float v = warp_sum(half8_dot(wv, xa, xb));
    if (lane == 0) parts[(int64_t)g * rows + row] = v;
  }
}

// hc_post of one token (HC = 4) fused with the next sublayer's hc_mix_partials (fwd_hc_mix.cuh):
// one dependent launch fewer between the attention output and the MoE sublayer's hc_pre. Element
// y[k][d] is computed as in hc_post_kernel.
__global__ void __launch_bounds__(kMixThreads)
    hc_post_mix_kernel(const float* f, const float* post, const float* comb, int D, float* X,
                       const __half* W, int rows, float* parts) {
  const int g = blockIdx.x;
  uint4 wv[kMixRowsPerWarp];
  hc_mix_slice_begin(W, D, rows, wv);
  const HcPostIn in = hc_post_load(post, comb, D, X, g);
  hc_post_mix_tail(f[g * kPmD + threadIdx.x % kPmD], in, D, X, wv, rows, g, parts);
}

// HC > 0: hc known at compile time (registers; runtime-sized arrays live in local memory).
template <int HC>
__global__ void hc_post_kernel(const float* f, const float* post, const float* comb, int D,
                               int hc_rt, float* X) {
  pdl_trigger();
  pdl_wait();
  const int hc = HC > 0 ? HC : hc_rt;
  const int i = blockIdx.y;
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= D) return;
  float* x = X + (int64_t)i * hc * D;
  const float* cm = comb + (int64_t)i * hc * hc;
  constexpr int kN = HC > 0 ? HC : kMaxHc;
  float xs[kN], y[kN];
#pragma unroll
  for (int j = 0; j < kN; ++j)
    if (HC > 0 || j < hc) xs[j] = x[j * D + d];
  const float fv = f[(int64_t)i * D + d];
#pragma unroll
  for (int k = 0; k < kN; ++k) {
    if (HC == 0 && k >= hc) break;
    float acc = 0.0f;
#pragma unroll
    for (int j = 0; j < kN; ++j)
      if (HC > 0 || j < hc) acc += cm[j * hc + k] * xs[j];
    y[k] = post[i * hc + k] * fv + acc;
  }
#pragma unroll
  for (int k = 0; k < kN; ++k)
    if (HC > 0 || k < hc) x[k * D + d] = y[k];
}

// HC = 4 with D % 4 == 0 (the model's shape): the operations of hc_post_kernel<4> per element,
// four consecutive d per thread as float4 and kPostVecD per block (the scalar kernel, one element
// per thread and 16 scalar comb/post loads each, took ~0.7 ms per layer of an 8K chunk against
// ~0.28 ms of bytes).
constexpr int kPostVecThreads = 256, kPostVecD = 4 * kPostVecThreads;
__global__ void __launch_bounds__(kPostVecThreads)
    hc_post_vec_kernel(const float* f, const float* post, const float* comb, int D, float* X) {
  pdl_trigger();
  pdl_wait();
  const int i = blockIdx.y;
  const int d = blockIdx.x * kPostVecD + 4 * threadIdx.x;
  if (d >= D) return;
  const float4 fv = *reinterpret_cast<const float4*>(f + (int64_t)i * D + d);
  hc_post4(fv, post + i * 4, comb + (int64_t)i * 16, D, X + (int64_t)i * 4 * D + d);
}

__global__ void __launch_bounds__(kRowThreads)
    hc_head_kernel(const float* X, const float* mixes, const float* base, const float* scale,
                   const float* norm_w, int D, int hc, float rms_eps, float hc_eps, float* z) {
  pdl_trigger();
  pdl_wait();
  __shared__ float red[33];
  __shared__ float w[kMaxHc];
  const int i = blockIdx.x;
  const int HD = hc * D;
  const float* x = X + (int64_t)i * HD;
  float ss = 0.0f;
  for (int d = threadIdx.x; d < HD; d += blockDim.x) ss += x[d] * x[d];
  ss = block_sum(ss, red);
  if (threadIdx.x == 0) {
    const float r = 1.0f / sqrtf(ss / (float)HD + rms_eps);
    for (int s = 0; s < hc; ++s)
      w[s] = sigmoid_f(mixes[(int64_t)i * hc + s] * r * scale[0] + base[s]) + hc_eps;
  }
  __syncthreads();
  float* out = z + (int64_t)i * D;
  float ss2 = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < hc; ++s) acc += w[s] * x[s * D + d];
    out[d] = acc;
    ss2 += acc * acc;
  }
  ss2 = block_sum(ss2, red);
  const float r2 = 1.0f / sqrtf(ss2 / (float)D + rms_eps);
  for (int d = threadIdx.x; d < D; d += blockDim.x) out[d] = norm_w[d] * (out[d] * r2);
}

// A thread's first kRmsPre values are loaded at once (the weights before the PDL wait: they are
// constant) and kept in registers for the output; the rest as a strided loop. Same operations in
// the same order as one loop.
constexpr int kRmsPre = 4;
__global__ void rms_rows_kernel(const float* x, const float* w, int dim, float eps, float* out) {
  const int t = threadIdx.x, bd = blockDim.x;
  float wv[kRmsPre];
#pragma unroll
  for (int u = 0; u < kRmsPre; ++u) wv[u] = w && t + u * bd < dim ? w[t + u * bd] : 0.0f;
  pdl_trigger();
  pdl_wait();
  __shared__ float red[33];
  const int i = blockIdx.x;
  const float* xi = x + (int64_t)i * dim;
  float* oi = out + (int64_t)i * dim;
  float xv[kRmsPre];
#pragma unroll
  for (int u = 0; u < kRmsPre; ++u) xv[u] = t + u * bd < dim ? xi[t + u * bd] : 0.0f;
  float ss = 0.0f;
#pragma unroll
  for (int u = 0; u < kRmsPre; ++u)
    if (t + u * bd < dim) ss += xv[u] * xv[u];
  for (int d = t + kRmsPre * bd; d < dim; d += bd) ss += xi[d] * xi[d];
  ss = block_sum(ss, red);
  const float r = 1.0f / sqrtf(ss / (float)dim + eps);
#pragma unroll
  for (int u = 0; u < kRmsPre; ++u)
    if (t + u * bd < dim) oi[t + u * bd] = w ? wv[u] * (xv[u] * r) : xv[u] * r;
  for (int d = t + kRmsPre * bd; d < dim; d += bd) oi[d] = w ? w[d] * (xi[d] * r) : xi[d] * r;
}

// Many blocks (one block took ~52 us for the 129 280 logits of a token): each block's best as
// (order key << 32 | ~index), so that the u64 maximum is the largest value at the lowest index,
// joins ws->best by atomicMax; the last block to finish writes the id and resets ws for the next
// call. NaN is skipped; no candidate (n == 0 or all NaN) gives 0.
struct ArgmaxWs {
  unsigned long long best;
  unsigned int done;
};
constexpr int kArgmaxThreads = 256, kArgmaxBlocks = 128;
__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_kernel(const float* x, int n, int32_t* out, ArgmaxWs* ws) {
  pdl_trigger();
  pdl_wait();
  __shared__ unsigned long long sb[kArgmaxThreads / 32];
  __shared__ bool last;
  unsigned long long b = 0;
  for (int t = (int)(blockIdx.x * blockDim.x + threadIdx.x); t < n;
       t += (int)(gridDim.x * blockDim.x)) {
    const float v = x[t];
    if (v == v) {
      const unsigned long long c = ((unsigned long long)order_key(v) << 32) | (uint32_t)~t;
      b = c > b ? c : b;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long ob = __shfl_xor_sync(0xffffffffu, b, o);
    b = ob > b ? ob : b;
  }
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  if (lane == 0) sb[wid] = b;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < (int)(blockDim.x >> 5); ++w) b = sb[w] > b ? sb[w] : b;
    if (b) atomicMax(&ws->best, b);
    __threadfence();
    last = atomicAdd(&ws->done, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last || threadIdx.x != 0) return;
  __threadfence();
  const unsigned long long r = atomicExch(&ws->best, 0ull);
  ws->done = 0;
  out[0] = r ? (int32_t) ~(uint32_t)r : 0;
}

__global__ void fill_kernel(float* p, int64_t n, float v) {
  pdl_trigger();
  pdl_wait();
  const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (t < n) p[t] = v;
}

// Uniform in [-a, a] from a 64-bit hash of (seed, index): counter-based, so any n and any
// launch geometry give the same values.
__global__ void fill_random_kernel(float* p, int64_t n, uint64_t seed, float a) {
  pdl_trigger();
  pdl_wait();
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < n;
       t += (int64_t)gridDim.x * blockDim.x) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (uint64_t)(t + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = (float)(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    p[t] = a * (2.0f * u - 1.0f);
  }
}

}  // namespace

void embed(const void* table, uint32_t type, int64_t row_bytes, const int32_t* tokens, int n, int D,
           int hc, float* X, cudaStream_t s) {
  if (type != 0 && type != 1 && type != 30)
    throw_invalid_argument("cuda forward: token embedding must be F32, F16 or BF16");
  if (hc > kMaxHc) throw_invalid_argument("cuda forward: hc_mult > 16");
  launch_k(embed_kernel, n, kThreads, 0, s, static_cast<const uint8_t*>(table), type, row_bytes,
           tokens, D, hc, X);
  FWD_LAUNCH_CHECK("embed_kernel");
}

namespace {
// One token's hc_pre_reg_kernel<4>: both halves in one launch of two blocks, or (comb_s) xin on s
// and post + comb on comb_s.
void launch_hc_pre_reg(const float* X, const float* mixes, const float* parts, int G,
                       const float* base, const float* scale, const float* norm_w, int n, int D,
                       int iters, float rms_eps, float hc_eps, float* post, float* comb, float* xin,
                       cudaStream_t s, cudaStream_t comb_s) {
  const int threads = ((D / 4 + 31) / 32) * 32;
  auto launch = [&](dim3 grid, cudaStream_t st, int mode) {
    launch_k(hc_pre_reg_kernel<4>, grid, threads, 0, st, X, mixes, parts, G, base, scale, norm_w, D,
             iters, rms_eps, hc_eps, post, comb, xin, mode);
    FWD_LAUNCH_CHECK("hc_pre_reg_kernel");
  };
  if (comb_s && n == 1) {
    launch(dim3(1, 1), s, kHcPreXin);
    launch(dim3(1, 1), comb_s, kHcPreComb);
  } else {
    launch(dim3((unsigned)n, n == 1 ? 2 : 1), s, kHcPreBoth);
  }
}
}  // namespace

void hc_pre(const float* X, const float* mixes, const float* base, const float* scale,
            const float* norm_w, int n, int D, int hc, int iters, float rms_eps, float hc_eps,
            float* post, float* comb, float* xin, cudaStream_t s, cudaStream_t comb_s) {
  if (hc > kMaxHc) throw_invalid_argument("cuda forward: hc_mult > 16");
  const bool aligned =
      (reinterpret_cast<uintptr_t>(X) & 15) == 0 && (reinterpret_cast<uintptr_t>(xin) & 15) == 0;
  if (hc == 4 && D % 4 == 0 && D / 4 <= kRowThreads && aligned) {
    launch_hc_pre_reg(X, mixes, nullptr, 0, base, scale, norm_w, n, D, iters, rms_eps, hc_eps, post,
                      comb, xin, s, comb_s);
    return;
  }
  launch_k(hc_pre_kernel, n, kRowThreads, 0, s, X, mixes, base, scale, norm_w, D, hc, iters,
           rms_eps, hc_eps, post, comb, xin);
  FWD_LAUNCH_CHECK("hc_pre_kernel");
}

bool hc_mix_partials_supported(int64_t rows, int64_t cols, int hc, int D) {
  return hc == 4 && rows == (2 + hc) * hc && rows <= kMixMaxRows && cols == (int64_t)hc * D &&
         cols % kMixSlice == 0 && D % 4 == 0 && D / 4 <= kRowThreads;
}

int hc_mix_slices(int64_t cols) {
  return (int)(cols / kMixSlice);
}

void hc_mix_partials(const void* w_f16, const float* x, int rows, int cols, float* parts,
                     cudaStream_t s) {
  if (rows <= 0 || rows > kMixMaxRows || cols % kMixSlice != 0 ||
      (reinterpret_cast<uintptr_t>(w_f16) & 15) != 0 || (reinterpret_cast<uintptr_t>(x) & 15) != 0)
    throw_invalid_argument("hc_mix_partials: unsupported shape or alignment");
  launch_k(hc_mix_partials_kernel, (unsigned)(cols / kMixSlice), kMixThreads, 0, s,
           static_cast<const __half*>(w_f16), x, rows, cols, parts);
  FWD_LAUNCH_CHECK("hc_mix_partials_kernel");
}

void hc_pre_parts(const float* X, const float* parts, int G, const float* base, const float* scale,
                  const float* norm_w, int D, int hc, int iters, float rms_eps, float hc_eps,
                  float* post, float* comb, float* xin, cudaStream_t s, cudaStream_t comb_s) {
  if (!hc_mix_partials_supported((2 + hc) * hc, (int64_t)hc * D, hc, D) || G <= 0 ||
      (reinterpret_cast<uintptr_t>(X) & 15) != 0 || (reinterpret_cast<uintptr_t>(xin) & 15) != 0)
    throw_invalid_argument("hc_pre_parts: unsupported shape or alignment");
  launch_hc_pre_reg(X, nullptr, parts, G, base, scale, norm_w, 1, D, iters, rms_eps, hc_eps, post,
                    comb, xin, s, comb_s);
}

void hc_post_mix(const float* f, const float* post, const float* comb, int D, float* X,
                 const void* w_f16, int rows, float* parts, cudaStream_t s) {
  if (!hc_mix_partials_supported(rows, 4 * (int64_t)D, 4, D) ||
      (reinterpret_cast<uintptr_t>(w_f16) & 15) != 0)
    throw_invalid_argument("hc_post_mix: unsupported shape or alignment");
  launch_k(hc_post_mix_kernel, (unsigned)(D / kPmD), kMixThreads, 0, s, f, post, comb, D, X,
           static_cast<const __half*>(w_f16), rows, parts);
  FWD_LAUNCH_CHECK("hc_post_mix_kernel");
}

void hc_post(const float* f, const float* post, const float* comb, int n, int D, int hc, float* X,
             cudaStream_t s) {
  if (hc == 4 && D % 4 == 0 && (reinterpret_cast<uintptr_t>(f) & 15) == 0 &&
      (reinterpret_cast<uintptr_t>(X) & 15) == 0) {
    launch_k(hc_post_vec_kernel, dim3((unsigned)((D + kPostVecD - 1) / kPostVecD), (unsigned)n),
             kPostVecThreads, 0, s, f, post, comb, D, X);
    FWD_LAUNCH_CHECK("hc_post_vec_kernel");
    return;
  }
  dim3 grid((unsigned)((D + kThreads - 1) / kThreads), (unsigned)n);
  if (hc == 4)
    launch_k(hc_post_kernel<4>, grid, kThreads, 0, s, f, post, comb, D, hc, X);
  else
    launch_k(hc_post_kernel<0>, grid, kThreads, 0, s, f, post, comb, D, hc, X);
  FWD_LAUNCH_CHECK("hc_post_kernel");
}

void hc_head(const float* X, const float* mixes, const float* base, const float* scale,
             const float* norm_w, int n, int D, int hc, float rms_eps, float hc_eps, float* z,
             cudaStream_t s) {
  launch_k(hc_head_kernel, n, kRowThreads, 0, s, X, mixes, base, scale, norm_w, D, hc, rms_eps,
           hc_eps, z);
  FWD_LAUNCH_CHECK("hc_head_kernel");
}

void rms_rows(const float* x, const float* w, int n, int dim, float eps, float* out,
              cudaStream_t s) {
  launch_k(rms_rows_kernel, n, kThreads, 0, s, x, w, dim, eps, out);
  FWD_LAUNCH_CHECK("rms_rows_kernel");
}

int64_t argmax_workspace_bytes() {
  return (int64_t)sizeof(ArgmaxWs);
}

void argmax(const float* x, int n, int32_t* out, void* ws, cudaStream_t s) {
  const int want = (n + kArgmaxThreads * 8 - 1) / (kArgmaxThreads * 8);
  const unsigned blocks = (unsigned)(want < 1 ? 1 : (want > kArgmaxBlocks ? kArgmaxBlocks : want));
  launch_k(argmax_kernel, blocks, kArgmaxThreads, 0, s, x, n, out, static_cast<ArgmaxWs*>(ws));
  FWD_LAUNCH_CHECK("argmax_kernel");
}

void fill(float* p, int64_t n, float v, cudaStream_t s) {
  if (n <= 0) return;
  launch_k(fill_kernel, (unsigned)((n + 255) / 256), 256, 0, s, p, n, v);
  FWD_LAUNCH_CHECK("fill_kernel");
}

void fill_random(float* p, int64_t n, uint64_t seed, float a, cudaStream_t s) {
  if (n <= 0) return;
  const int64_t want = (n + 255) / 256;
  launch_k(fill_random_kernel, (unsigned)(want < 65536 ? want : 65536), 256, 0, s, p, n, seed, a);
  FWD_LAUNCH_CHECK("fill_random_kernel");
}

}  // namespace dsv4::cuda::fwd
