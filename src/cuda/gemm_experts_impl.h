// Internal to the grouped expert GEMMs (gemm_experts.cu: tile list, dispatch and the mma.sync
// kernel; gemm_experts_wgmma.cu: the Hopper wgmma kernel): the kernel arguments and the wgmma
// launcher.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/gemm.h"

namespace dsv4::cuda::gemm {

struct ExpertArgs {
  const uint8_t* w0;
  const uint8_t* w1;  // null: plain product into y; else gate (w0) / up (w1) with SwiGLU into h
  int64_t expert_bytes, row_bytes;
  int rows, K;
  const bf16* x;
  const int4* tiles;
  const int32_t* n_tiles;
  const float* row_w;
  float clamp;
  bf16* h;
  float* y;
};

// The weight row that row i (0 .. BM-1) of a CTA's BM-row weight tile decodes, for expert e and
// CTA column blockIdx.x. With SwiGLU the tile interleaves gate and up in groups of 8 rows (rows
// 16 j .. 16 j + 7 are gate rows f = blockIdx.x * BM / 2 + 8 j .. + 7, the next 8 the same up
// rows), so that one accumulator fragment holds both halves of a SwiGLU. A row past the matrix
// points at the expert's first row (valid memory) with valid = false: the caller stores zeros.
template <bool kSwiglu, int BM>
__device__ __forceinline__ const uint8_t* expert_tile_row(const ExpertArgs& p, int e, int i,
                                                          bool& valid) {
  const uint8_t* base;
  int r;
  if constexpr (kSwiglu) {
    r = (int)blockIdx.x * (BM / 2) + 8 * (i >> 4) + (i & 7);
    base = (i >> 3) & 1 ? p.w1 : p.w0;
  } else {
    r = (int)blockIdx.x * BM + i;
    base = p.w0;
  }
  valid = r < p.rows;
  return base + (int64_t)e * p.expert_bytes + (valid ? (int64_t)r * p.row_bytes : 0);
}

// The wgmma kernel for weights of `type` over `cap` tiles (kExpertTileRows pairs each) and all
// weight rows; needs expert_wgmma_available().
void expert_gemm_wgmma(uint32_t type, const ExpertArgs& a, int cap, cudaStream_t s);

}  // namespace dsv4::cuda::gemm
