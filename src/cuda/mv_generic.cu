// Reference matrix-vector kernel for any shape and alignment (see mv_launch.h). Slow (byte loads,
// per-value decode) but simple, and bit-identical to the CPU: element i of a row is decoded with
// the CPU decoder's f32 operations (no contraction), lane i % 32 accumulates fmaf(w_i, x_i) in
// increasing i, and the 32 lanes are summed in quant's reduce_lanes tree.
#include <cuda_fp16.h>

#include "core/ggml_type.h"
#include "cuda/cuda_check.h"
#include "cuda/mv_launch.h"
#include "quant/iq2_tables.h"

namespace dsv4::cuda::mv {
namespace {

struct Grid64 {
  uint64_t v[256];
};
constexpr Grid64 make_grid64() {
  Grid64 g{};
  for (int i = 0; i < 256; ++i) g.v[i] = quant::detail::kIq2xxsGrid[i];
  return g;
}
__device__ const Grid64 g_grid64 = make_grid64();

__device__ __forceinline__ uint32_t ld_u16(const uint8_t* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}
__device__ __forceinline__ uint32_t ld_u32(const uint8_t* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
__device__ __forceinline__ float f16f(uint32_t h) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
}

constexpr uint32_t T_F32 = (uint32_t)GgmlType::F32;
constexpr uint32_t T_F16 = (uint32_t)GgmlType::F16;
constexpr uint32_t T_BF16 = (uint32_t)GgmlType::BF16;
constexpr uint32_t T_Q8_0 = (uint32_t)GgmlType::Q8_0;
constexpr uint32_t T_Q2_K = (uint32_t)GgmlType::Q2_K;
constexpr uint32_t T_Q4_K = (uint32_t)GgmlType::Q4_K;
constexpr uint32_t T_IQ2_XXS = (uint32_t)GgmlType::IQ2_XXS;

// Value i of a row, with the f32 operations of quant's scalar decoders.
__device__ float decode_value(uint32_t type, const uint8_t* row, int i) {
  switch (type) {
    case T_F32: return __uint_as_float(ld_u32(row + 4 * (int64_t)i));
    case T_F16: return f16f(ld_u16(row + 2 * (int64_t)i));
    case T_BF16: return __uint_as_float(ld_u16(row + 2 * (int64_t)i) << 16);
    case T_Q8_0: {
      const uint8_t* b = row + 34 * (int64_t)(i / 32);
      const float d = f16f(ld_u16(b));
      return __fmul_rn((float)(int8_t)b[2 + i % 32], d);
    }
    case T_Q2_K: {
      const uint8_t* b = row + 84 * (int64_t)(i / 256);
      const int k = i % 256, h = k / 128, kk = k % 128, shift = 2 * (kk / 32), l = kk % 32;
      const uint32_t s = b[k / 16];
      const float d = f16f(ld_u16(b + 80)), dmin = f16f(ld_u16(b + 82));
      const float dl = __fmul_rn(d, (float)(s & 0xF));
      const float ml = __fmul_rn(dmin, (float)(s >> 4));
      const uint32_t q = (b[16 + 32 * h + l] >> shift) & 3;
      return __fsub_rn(__fmul_rn(dl, (float)q), ml);
    }
    case T_Q4_K: {
      const uint8_t* b = row + 144 * (int64_t)(i / 256);
      const int k = i % 256, c = k / 64, l = k % 64, j = 2 * c + (l >= 32 ? 1 : 0);
      const uint8_t* s = b + 4;
      uint32_t sc, m;
      if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
      } else {
        sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
      }
      const float d = f16f(ld_u16(b)), dmin = f16f(ld_u16(b + 2));
      const float d1 = __fmul_rn(d, (float)sc), m1 = __fmul_rn(dmin, (float)m);
      const uint32_t q = l < 32 ? (b[16 + 32 * c + l] & 0xF) : (b[16 + 32 * c + l - 32] >> 4);
      return __fsub_rn(__fmul_rn(d1, (float)q), m1);
    }
    case T_IQ2_XXS: {
      const uint8_t* b = row + 66 * (int64_t)(i / 256);
      const int k = i % 256, g = k / 32, l = (k % 32) / 8, j = k % 8;
      const float d = f16f(ld_u16(b));
      const uint32_t A = ld_u32(b + 2 + 8 * g), B = ld_u32(b + 6 + 8 * g);
      const float db = __fmul_rn(__fmul_rn(d, __fadd_rn(0.5f, (float)(B >> 28))), 0.25f);
      const uint64_t grid = g_grid64.v[(A >> (8 * l)) & 0xFF];
      const uint32_t s7 = (B >> (7 * l)) & 127;
      const uint32_t signs = s7 | ((__popc(s7) & 1u) << 7);
      const float mag = (float)(uint32_t)((grid >> (8 * j)) & 0xFF);
      const float w = __fmul_rn(db, mag);
      return (signs >> j) & 1 ? -w : w;
    }
    default: return __int_as_float(0x7fc00000);
  }
}

__global__ void mv_generic_kernel(const Params p, uint32_t type, int nb) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t gr = (int64_t)blockIdx.x * (blockDim.x >> 5) + warp;
  const int64_t total = (int64_t)p.n_mats * p.n_slots * p.rows;
  if (gr >= total) return;
  const int row = (int)(gr % p.rows);
  const int64_t ms = gr / p.rows;
  const int slot = (int)(ms % p.n_slots);
  const int mat = (int)(ms / p.n_slots);
  float* y = p.y + mat * p.y_mat_stride + slot * p.y_slot_stride + row;
  int64_t expert = slot;
  if (p.ids) expert = p.ids[slot];
  if (p.n_expert > 0 && (expert < 0 || expert >= p.n_expert)) {
    if (lane == 0)
      for (int v = 0; v < nb; ++v) y[v * p.y_vec_stride] = __int_as_float(0x7fc00000);
    return;
  }
  if (p.expert_bytes == 0) expert = 0;
  const uint8_t* rp = p.w[mat] + expert * p.expert_bytes + (int64_t)row * p.row_bytes;
  const float* x = p.x + slot * p.x_slot_stride;
  for (int v = 0; v < nb; ++v) {
    const float* xv = x + v * p.x_vec_stride;
    float a = 0.0f;
    for (int i = lane; i < p.cols; i += 32) a = fmaf(decode_value(type, rp, i), xv[i], a);
    // quant::detail::reduce_lanes: ((l, l+8), (l+16, l+24)), then 4, 2, 1.
    a += __shfl_down_sync(0xffffffffu, a, 8);
    a += __shfl_down_sync(0xffffffffu, a, 16);
    a += __shfl_down_sync(0xffffffffu, a, 4);
    a += __shfl_down_sync(0xffffffffu, a, 2);
    a += __shfl_down_sync(0xffffffffu, a, 1);
    if (lane == 0) y[v * p.y_vec_stride] = a;
  }
}

}  // namespace

void launch_generic(const Params& p, uint32_t type, int nb, cudaStream_t s) {
  const int64_t total = (int64_t)p.n_mats * p.n_slots * p.rows;
  constexpr int kWarps = 4;
  const int64_t blocks = (total + kWarps - 1) / kWarps;
  if (blocks <= 0) return;
  if (blocks > 0x7fffffff) throw_invalid_argument("matvec: too many rows for the generic kernel");
  mv_generic_kernel<<<static_cast<unsigned>(blocks), 32 * kWarps, 0, s>>>(p, type, nb);
  DSV4_CUDA_CHECK_LAUNCH("mv_generic_kernel");
}

}  // namespace dsv4::cuda::mv
