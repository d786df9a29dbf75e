// Per-format launchers of the matrix-vector kernels (implemented in mv_*.cu, called by
// matvec.cpp after planning). Host-only declarations.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/mv_params.h"

namespace dsv4::cuda::mv {

struct Launch {
  Params p;
  int64_t ctas = 0;  // persistent kernel: logical CTAs (the launch takes the resident count)
  int threads = 0;
  size_t smem = 0;
  int sm_count = 0;
  int max_ctas_per_sm = 0;  // persistent kernel: at most this many CTAs per SM (0: as resident)
};

// Fast path, nb in [1, kMaxNb].
void launch_q8_0(const Launch& l, int nb, cudaStream_t s);
void launch_q8_0_x8(const Launch& l, int nb, cudaStream_t s);  // x as int8 (FmtQ8_0_X8)
void launch_q4_k(const Launch& l, int nb, cudaStream_t s);
void launch_q2_k(const Launch& l, int nb, cudaStream_t s);
void launch_q2_k_x8(const Launch& l, int nb, cudaStream_t s);  // x as int8 (FmtQ2_K_X8)
void launch_iq2_xxs(const Launch& l, int nb, cudaStream_t s);
void launch_iq2_xxs_x8(const Launch& l, int nb, cudaStream_t s);  // x as int8 (FmtIQ2_XXS_X8)
// x as int8, selector tables replicated rep (16 or 32) times (FmtIQ2_XXS_X8R)
void launch_iq2_xxs_x8r(const Launch& l, int nb, int rep, cudaStream_t s);
void launch_f16(const Launch& l, int nb, cudaStream_t s);
void launch_bf16(const Launch& l, int nb, cudaStream_t s);
void launch_f32(const Launch& l, int nb, cudaStream_t s);

// Reference path for any shape and alignment: one warp per row, lane i%32 accumulates
// fma(w_i, x_i) with w_i decoded by the exact f32 operations of the CPU decoders, lanes summed
// in the CPU's fixed tree; the result equals quant::dot_row bit for bit. p.groups, lr_log2, ks,
// units, steps and the shared offsets are ignored. type is the GgmlType id.
void launch_generic(const Params& p, uint32_t type, int nb, cudaStream_t s);

}  // namespace dsv4::cuda::mv
