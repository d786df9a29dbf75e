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

// The wgmma kernel for weights of `type` over `cap` tiles (kExpertTileRows pairs each) and all
// weight rows; needs expert_wgmma_available().
void expert_gemm_wgmma(uint32_t type, const ExpertArgs& a, int cap, cudaStream_t s);

}  // namespace dsv4::cuda::gemm
