// The exact sizes of a session's per-layer state (LayerState, spec/ARCH.md §9) after a number of
// tokens: one definition shared by the CPU forward (which creates the state), the session file
// loader (which checks it) and the GPU backend (which copies it), so that none of them can
// disagree about a shape.
#pragma once
#include <cstddef>
#include <cstdint>

#include "model/config.h"

namespace dsv4 {

// Element (float) counts of the seven LayerState buffers. The raw ring and the frontiers have a
// fixed size; the compressed and indexer rows grow by one row per closed window.
struct LayerStateExtent {
  size_t raw = 0;     // window * head_dim: the whole ring, whatever n_past
  size_t comp = 0;    // (n_past / ratio) * head_dim; 0 for ratio 0
  size_t idx = 0;     // (n_past / 4) * idx_head_dim on ratio-4 layers, else 0
  size_t ckv = 0;     // lanes*ratio * lanes*head_dim when ratio > 0, else 0
  size_t cscore = 0;  // == ckv
  size_t ikv = 0;     // 8 * 2*idx_head_dim on ratio-4 layers, else 0
  size_t iscore = 0;  // == ikv
};

// The extent of a layer of compression `ratio` (0, 4 or 128; the MTP block is ratio 0) after
// `n_past` tokens. Throws dsv4::Error when n_past is negative. Callers bound n_past (a session
// file's token count, a backend's capacity), so the products cannot overflow.
LayerStateExtent layer_state_extent(const ModelConfig& c, uint32_t ratio, int64_t n_past);

}  // namespace dsv4
