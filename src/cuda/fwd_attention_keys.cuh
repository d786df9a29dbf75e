// The key list of one sparse-attention query (§5.6), shared by the attention kernels of
// fwd_attention.cu and fwd_attention_mma.cu.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda::fwd {

// The keys one query at position p visits (§5.6), in canonical order: n_comp compressed rows
// (the indexer's selection when it applies, else every visible row), then the raw window
// [raw_start, p]; rows of the current chunk (positions >= base) are read from kvn, earlier ones
// from the ring.
struct QueryKeys {
  int64_t base, raw_start;
  int n_comp, nk;
  bool use_sel;
  __device__ QueryKeys(int64_t base_, int64_t p, int ratio, int topk, int W) : base(base_) {
    const int64_t visible = ratio ? (p + 1) / ratio : 0;
    use_sel = ratio == 4 && visible > topk;
    n_comp = (int)(use_sel ? topk : visible);
    raw_start = p - W + 1 > 0 ? p - W + 1 : 0;
    nk = n_comp + (int)(p - raw_start + 1);
  }
  // Key j; sel_i: this query's selected rows.
  __device__ const float* row(int j, const int32_t* sel_i, const float* comp, const float* kvn,
                              const float* ring, int W, int hd) const {
    if (j < n_comp) return comp + (int64_t)(use_sel ? sel_i[j] : j) * hd;
    const int64_t t = raw_start + (j - n_comp);
    return t >= base ? kvn + (t - base) * hd : ring + (t % W) * hd;
  }
};

}  // namespace dsv4::cuda::fwd
