// The CPU reference forward pass of DeepSeek V4 Flash (spec/ARCH.md §3–§9): the oracle every
// other backend is tested against. One code path serves one-shot prefill, chunked prefill and
// one-token decode: every per-row result is computed by the same routine in the same order,
// so the three agree bit for bit.
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "model/weights.h"

namespace dsv4 {

struct CpuOptions {
  // FP8 rounding of stored KV rows and FP4 rounding of indexer vectors, as the real model
  // (and DeepSeek's official code) does. Off: plain f32, to compare with HF / llama.cpp.
  bool qat = true;
};

// Per-layer session state (spec/ARCH.md §9): raw window ring, compressed rows, indexer rows and
// the compressor frontiers.
struct LayerState {
  std::vector<float> raw;          // [window][head_dim], slot = pos % window
  std::vector<float> comp;         // [n_comp][head_dim]
  std::vector<float> idx;          // [n_comp][idx_head_dim] (ratio-4 layers)
  std::vector<float> ckv, cscore;  // compressor frontier [lanes*ratio][lanes*head_dim]
  std::vector<float> ikv, iscore;  // indexer-compressor frontier [8][2*idx_head_dim]
};

struct CpuSession {
  int64_t n_past = 0;
  std::vector<LayerState> layers;
  LayerState mtp;
  int64_t mtp_n_past = 0;
};

// A fresh session's state for a model of config `c` (what CpuModel::new_session returns): the
// shapes other backends convert to and the disk store checks against.
CpuSession empty_cpu_session(const ModelConfig& c);

// Named intermediate tensors, for per-stage comparisons with reference implementations.
// `pos` is the absolute position (or -1 for per-layer tensors such as all compressed rows).
using TraceFn = std::function<void(int layer, const std::string& name, int64_t pos,
                                   const float* data, int64_t n)>;

struct ForwardResult {
  std::vector<float> logits;    // [n_rows][vocab] for the requested rows
  std::vector<float> hc_final;  // [n][hc_mult * n_embd] final HC state (if requested)
  // Smallest gap of any discrete choice made for each token (expert top-k on biased scores,
  // indexer top-k), +inf when none: positions near a tie may legitimately differ between
  // implementations.
  std::vector<float> tie_margin;
};

class CpuModel {
 public:
  CpuModel(const Model& model, CpuOptions opt);
  ~CpuModel();

  CpuSession new_session() const;

  // Runs `n` tokens at positions sess.n_past.. and advances the session. Logits are computed for
  // every token when `all_logits`, else only for the last one.
  void forward(CpuSession& sess, const int32_t* tokens, int64_t n, bool all_logits,
               bool want_hc_final, ForwardResult& out, const TraceFn& trace = nullptr) const;

  // The MTP block (spec/ARCH.md §8) on main-model final HC states `hc` ([n][hc*D]) and token ids,
  // at positions sess.mtp_n_past..; writes [n][vocab] logits.
  void mtp_forward(CpuSession& sess, const float* hc, const int32_t* tokens, int64_t n,
                   std::vector<float>& logits) const;

  const ModelConfig& config() const { return cfg_; }
  bool has_mtp() const { return m_.w.mtp.has_value(); }

 private:
  struct LayerConsts;  // per-layer small tensors decoded to f32
  void run_block(const LayerWeights& L, const LayerConsts& K, int layer_index, float clamp,
                 LayerState& st, int64_t p0, const int32_t* tokens, int64_t n, float* X,
                 float* margin, const TraceFn& trace) const;
  void attention(const LayerWeights& L, const LayerConsts& K, LayerState& st, int64_t p0, int64_t n,
                 const float* x, float* out, float* margin, int layer_index,
                 const TraceFn& trace) const;
  void moe(const LayerWeights& L, const LayerConsts& K, float clamp, const int32_t* tokens,
           int64_t p0, int64_t n, const float* y, float* out, float* margin, int layer_index,
           const TraceFn& trace) const;
  void head(const float* X, int64_t n, const TensorRef& fn, const std::vector<float>& base,
            float scale, const std::vector<float>& norm, float* logits) const;

  const Model& m_;
  ModelConfig cfg_;
  CpuOptions opt_;
  std::vector<LayerConsts> consts_;
  std::vector<LayerConsts> mtp_consts_;  // 0 or 1 entries
  std::vector<float> out_norm_, out_hc_base_;
  float out_hc_scale_ = 0;
  std::vector<float> mtp_enorm_, mtp_hnorm_, mtp_norm_, mtp_hc_base_;
  float mtp_hc_scale_ = 0;
  std::vector<float> rope_plain_, rope_yarn_;
};

}  // namespace dsv4
