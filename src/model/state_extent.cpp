#include "model/state_extent.h"

#include "core/error.h"

namespace dsv4 {

LayerStateExtent layer_state_extent(const ModelConfig& c, uint32_t ratio, int64_t n_past) {
  if (n_past < 0) fail("layer state extent: negative token count {}", n_past);
  const size_t n = (size_t)n_past, hd = c.head_dim, ID = c.idx_head_dim;
  LayerStateExtent e;
  e.raw = (size_t)c.window * hd;
  if (ratio > 0) {
    // A row is emitted by the token that closes a window of `ratio` positions (compressor_step
    // in cpu_forward.cpp), so a partial window has none yet.
    const size_t lanes = ModelConfig::compressor_lanes(ratio);
    e.comp = n / ratio * hd;
    e.ckv = e.cscore = lanes * ratio * lanes * hd;
  }
  if (ratio == 4) {
    // The indexer has its own ratio-4 compressor: two overlapping lanes, 4 slots each.
    e.idx = n / 4 * ID;
    e.ikv = e.iscore = (size_t)8 * 2 * ID;
  }
  return e;
}

}  // namespace dsv4
