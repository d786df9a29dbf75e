// Grouped routed-expert GEMMs for prefill chunks: one launch multiplies every expert's rows by
// that expert's quantized weights. Tiles are (expert, up to 256 rows) x 128 weight rows; each CTA
// decodes its weight tile block by block straight from the quantized tensor into bf16 shared
// memory (the same f32 operations and one round-to-nearest as gemm::dequant_bf16, so the weights
// are bit-equal to the dequantize-to-scratch path) and multiplies on the tensor cores (bf16
// inputs, f32 accumulation). No bf16 weight scratch, no host round trip for the expert ids.
//
// Rows are the (token, slot) pairs sorted by expert (fwd::moe_group_sorted); x holds them as bf16
// [pairs][K]. The weights may live in mapped pinned host memory (kernels read them in place).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/gemm.h"

namespace dsv4::cuda::gemm {

// Rows (pairs) per tile: one tile covers an expert's pairs at the average load of an 8K prefill
// chunk (~192), so the wgmma kernel decodes each weight row once per chunk.
constexpr int kExpertTileRows = 256;

// Capacity of the tile list for `pairs` rows over E experts: sum ceil(rows_e / 256).
inline int64_t expert_tile_capacity(int64_t pairs, int64_t E) {
  return pairs / kExpertTileRows + (E < pairs ? E : pairs);
}

// Tile list (device memory): tiles[i] = (expert, first row, rows, 0), count = number of tiles.
struct ExpertTiles {
  int4* tiles = nullptr;
  int32_t* count = nullptr;
  int capacity = 0;
};

// Builds the tile list from the sorted expert id of each row (ascending; ids outside [0, E) own
// no tile). E <= 8192.
void expert_tiles(const int32_t* sorted_expert, int pairs, int E, const ExpertTiles& t,
                  cudaStream_t s);

// True when expert_gemm handles weights of `type` with K columns (K a multiple of 64).
bool expert_gemm_supported(uint32_t type, int64_t K);

// For every tile (e, r0, cnt) and weight matrix rows of expert e (experts `expert_bytes` apart,
// rows `row_bytes` apart, K columns):
//  * w1 null: y[r][m] = sum_k x[r][k] w0[e][m][k] for r in the tile, m < rows (y: [pairs][rows]);
//  * w1 set (gate w0, up w1, rows = F): h[r][f] = bf16(w_r * silu(min(g, c)) * clamp(u, -c, c))
//    with g = x[r] . w0[e][f], u = x[r] . w1[e][f], w_r = row_w[r] (null: 1): gemm::swiglu_bf16
//    fused into the epilogue (h: [pairs][F]).
// `shape`: the kernel. kWgmma (sm_90a builds on sm_90 devices): warpgroup MMAs over 128 weight
// rows x a whole tile (gemm_experts_wgmma.cu). The mma.sync kernel (any GPU; 128 weight rows x
// 128 pairs): 8 warps of 64 x 32 (two threads decode each weight row) or 4 warps of 64 x 64 (one
// thread per row, more registers, half the occupancy); the two give bitwise equal results. kAuto:
// kWgmma where available unless DSV4_EXPERT_GEMM=mma, then 8 warps unless DSV4_EXPERT_WARPS=4.
enum class ExpertGemmShape { kAuto, kWarps8, kWarps4, kWgmma };
// True when this build has the wgmma kernel (device code for sm_90a) and the current device is an
// sm_90 part that runs it.
bool expert_wgmma_available();
void expert_gemm(uint32_t type, const void* w0, const void* w1, int64_t expert_bytes,
                 int64_t row_bytes, int64_t rows, int64_t K, const bf16* x, const ExpertTiles& t,
                 const float* row_w, float clamp, bf16* h, float* y, cudaStream_t s,
                 ExpertGemmShape shape = ExpertGemmShape::kAuto);

}  // namespace dsv4::cuda::gemm
