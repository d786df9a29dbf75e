// Device helpers shared by the forward-pass kernels: reductions, RoPE, Hadamard and the QAT
// rounding functions, each a line-by-line port of its CPU definition (src/model/ops.cpp,
// src/core/lowp.h) so that the same inputs give the same floats.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cuda_check.h"

namespace dsv4::cuda::fwd {

#define FWD_LAUNCH_CHECK(name) ::dsv4::cuda::check_launch((name), __FILE__, __LINE__)

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
// `sh` holds >= 33 floats; the call synchronizes the block.
__device__ __forceinline__ float block_sum(float v, float* sh) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  if (wid == 0) {
    float t = lane < nw ? sh[lane] : 0.0f;
    t = warp_sum(t);
    if (lane == 0) sh[32] = t;
  }
  __syncthreads();
  return sh[32];
}
__device__ __forceinline__ float block_max(float v, float* sh) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  if (wid == 0) {
    float t = lane < nw ? sh[lane] : -INFINITY;
    t = warp_max(t);
    if (lane == 0) sh[32] = t;
  }
  __syncthreads();
  return sh[32];
}

__device__ __forceinline__ float sigmoid_f(float x) {
  return 1.0f / (1.0f + expf(-x));
}
// Unsigned key with the order of the float (NaN excluded by the callers); -0 and +0 are equal,
// as on the CPU.
__device__ __forceinline__ uint32_t order_key(float v) {
  if (v == 0.0f) return 0x80000000u;
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// __fadd_rn: the sum is never contracted into expf's last multiply, so every kernel that inlines
// this gets the same float.
__device__ __forceinline__ float silu_f(float x) {
  return x / __fadd_rn(1.0f, expf(-x));
}
// One SwiGLU value of the MoE experts: silu(min(g, c)) * clamp(u, -c, c) (ARCH.md; the CPU's
// order of operations), in every kernel that forms it.
__device__ __forceinline__ float swiglu_f(float g, float u, float clamp) {
  const float gv = fminf(g, clamp);
  const float uv = fminf(fmaxf(u, -clamp), clamp);
  return silu_f(gv) * uv;
}
__device__ __forceinline__ float softplus_f(float x) {
  return x > 20.0f ? x : log1pf(expf(x));
}

// ops::rope_apply on one pair k (x points at the rotated tail).
__device__ __forceinline__ void rope_pair(float* x, const float* freqs, int k, int64_t pos,
                                          bool inverse) {
  const float p = (float)pos;
  const float ang = p * freqs[k];
  const float c = (float)cos((double)ang);
  float s = (float)sin((double)ang);
  if (inverse) s = -s;
  const float a = x[2 * k], b = x[2 * k + 1];
  x[2 * k] = a * c - b * s;
  x[2 * k + 1] = a * s + b * c;
}

// The rotation of position pos for the pairs k = first, first + stride, ... < rd / 2 into cs[2k]
// (cos), cs[2k + 1] (sin), with rope_pair's operations (the caller synchronizes).
__device__ __forceinline__ void rope_cos_sin(float* cs, const float* freqs, int rd, int64_t pos,
                                             int first, int stride) {
  for (int k = first; k < rd / 2; k += stride) {
    const float ang = (float)pos * freqs[k];
    cs[2 * k] = (float)cos((double)ang);
    cs[2 * k + 1] = (float)sin((double)ang);
  }
}
// ... every pair, by the whole block.
__device__ __forceinline__ void rope_cos_sin(float* cs, const float* freqs, int rd, int64_t pos) {
  rope_cos_sin(cs, freqs, rd, pos, (int)threadIdx.x, (int)blockDim.x);
}
// rope_pair with the cos/sin of rope_cos_sin.
__device__ __forceinline__ void rope_pair_cs(float* x, const float* cs, int k, bool inverse) {
  const float c = cs[2 * k];
  const float s = inverse ? -cs[2 * k + 1] : cs[2 * k + 1];
  const float a = x[2 * k], b = x[2 * k + 1];
  x[2 * k] = a * c - b * s;
  x[2 * k + 1] = a * s + b * c;
}

// lowp.h ports.
__device__ __forceinline__ int32_t ceil_log2_bits_d(float x) {
  const uint32_t b = __float_as_uint(x);
  const int32_t e = (int32_t)((b >> 23) & 0xff);
  const uint32_t man = b & 0x7fffff;
  return e - 127 + (man != 0 ? 1 : 0);
}
__device__ __forceinline__ float pow2_bits_d(int32_t e) {
  return __uint_as_float((uint32_t)(e + 127) << 23);
}
__device__ __forceinline__ float round_e4m3_d(float v) {
  const float a = fabsf(v);
  if (a == 0.0f) return v;
  float quantum;
  if (a < 0.015625f) {
    quantum = 0.001953125f;
  } else {
    int e;
    frexpf(a, &e);
    quantum = ldexpf(1.0f, e - 4);
  }
  float r = rintf(a / quantum) * quantum;
  if (r > 448.0f) r = 448.0f;
  return copysignf(r, v);
}
__device__ __forceinline__ float round_e2m1_d(float v) {
  const float a = fabsf(v);
  const float quantum = a < 2.0f ? 0.5f : (a < 4.0f ? 1.0f : 2.0f);
  float r = rintf(a / quantum) * quantum;
  if (r > 6.0f) r = 6.0f;
  return copysignf(r, v);
}
// One thread rounds one block (sequential, exactly as fp8_sim_block / fp4_sim_block).
__device__ __forceinline__ void fp8_sim_block_d(float* v, int n) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = fmaxf(amax, fabsf(v[i]));
  amax = fmaxf(amax, 1e-4f);
  const float s = pow2_bits_d(ceil_log2_bits_d(amax * (float)(1.0 / 448.0)));
  for (int i = 0; i < n; ++i) {
    float x = v[i] / s;
    x = fminf(fmaxf(x, -448.0f), 448.0f);
    v[i] = round_e4m3_d(x) * s;
  }
}
__device__ __forceinline__ void fp4_sim_block_d(float* v, int n) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = fmaxf(amax, fabsf(v[i]));
  amax = fmaxf(amax, 6.0f * 1.1754943508222875e-38f);
  const float s = pow2_bits_d(ceil_log2_bits_d(amax * (float)(1.0 / 6.0)));
  for (int i = 0; i < n; ++i) {
    float x = v[i] / s;
    x = fminf(fmaxf(x, -6.0f), 6.0f);
    v[i] = round_e2m1_d(x) * s;
  }
}

// The same roundings with one warp per block (all 32 lanes call it): the maximum is exact in
// any order and every element is rounded on its own, so the results are identical.
__device__ __forceinline__ void fp8_sim_block_warp(float* v, int n) {
  const int lane = threadIdx.x & 31;
  float amax = 0.0f;
  for (int i = lane; i < n; i += 32) amax = fmaxf(amax, fabsf(v[i]));
  amax = fmaxf(warp_max(amax), 1e-4f);
  const float s = pow2_bits_d(ceil_log2_bits_d(amax * (float)(1.0 / 448.0)));
  for (int i = lane; i < n; i += 32) {
    float x = v[i] / s;
    x = fminf(fmaxf(x, -448.0f), 448.0f);
    v[i] = round_e4m3_d(x) * s;
  }
}
__device__ __forceinline__ void fp4_sim_block_warp(float* v, int n) {
  const int lane = threadIdx.x & 31;
  float amax = 0.0f;
  for (int i = lane; i < n; i += 32) amax = fmaxf(amax, fabsf(v[i]));
  amax = fmaxf(warp_max(amax), 6.0f * 1.1754943508222875e-38f);
  const float s = pow2_bits_d(ceil_log2_bits_d(amax * (float)(1.0 / 6.0)));
  for (int i = lane; i < n; i += 32) {
    float x = v[i] / s;
    x = fminf(fmaxf(x, -6.0f), 6.0f);
    v[i] = round_e2m1_d(x) * s;
  }
}

// hadamard_block by one warp (the same butterflies in the same order).
__device__ __forceinline__ void hadamard_warp(float* x, int n) {
  const int lane = threadIdx.x & 31;
  for (int h = 1; h < n; h *= 2) {
    __syncwarp();
    for (int t = lane; t < n / 2; t += 32) {
      const int i = (t / h) * 2 * h, j = i + (t % h);
      const float a = x[j], b = x[j + h];
      x[j] = a + b;
      x[j + h] = a - b;
    }
  }
  __syncwarp();
  const float s = 1.0f / sqrtf((float)n);
  for (int t = lane; t < n; t += 32) x[t] *= s;
  __syncwarp();
}

// ops::hadamard on a shared-memory vector of n (power of 2) by the whole block.
__device__ __forceinline__ void hadamard_block(float* x, int n) {
  for (int h = 1; h < n; h *= 2) {
    __syncthreads();
    for (int t = threadIdx.x; t < n / 2; t += blockDim.x) {
      const int i = (t / h) * 2 * h, j = i + (t % h);
      const float a = x[j], b = x[j + h];
      x[j] = a + b;
      x[j + h] = a - b;
    }
  }
  __syncthreads();
  const float s = 1.0f / sqrtf((float)n);
  for (int t = threadIdx.x; t < n; t += blockDim.x) x[t] *= s;
  __syncthreads();
}

}  // namespace dsv4::cuda::fwd
