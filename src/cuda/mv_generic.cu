// Reference matrix-vector kernel for any shape and alignment (see mv_launch.h). Slow (byte loads,
// per-value decode) but simple, and bit-identical to the CPU: element i of a row is decoded with
// the CPU decoder's f32 operations (no contraction), lane i % 32 accumulates fmaf(w_i, x_i) in
// increasing i, and the 32 lanes are summed in quant's reduce_lanes tree.
#include "cuda/block_decode.cuh"
#include "cuda/cuda_check.h"
#include "cuda/mv_launch.h"

namespace dsv4::cuda::mv {
namespace {

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
