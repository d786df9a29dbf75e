#include "model/memory_plan.h"

#include <fmt/format.h>

#include <cmath>
#include <initializer_list>

#include "core/error.h"

namespace dsv4 {

KvPlan kv_memory_plan(const ModelConfig& c, int64_t ctx, StateStorage storage) {
  if (ctx < 0) fail("kv_memory_plan: context of {} tokens", ctx);
  KvPlan p;
  p.ctx_tokens = ctx;
  p.storage = storage;
  const uint64_t hd = c.head_dim, rd = c.rope_dim, id = c.idx_head_dim;
  if (storage == StateStorage::kF32) {
    p.attn_row_bytes = 4 * hd;
    p.indexer_row_bytes = 4 * id;
  } else {
    // FP8 (E4M3) nope dims with one UE8M0 scale byte per 64, BF16 rope dims.
    const uint64_t nope = hd - rd;
    p.attn_row_bytes = nope + (nope + 63) / 64 + 2 * rd;
    // FP4 (E2M1) values, two per byte, one scale byte per 32.
    p.indexer_row_bytes = (id + 1) / 2 + (id + 31) / 32;
  }
  const uint64_t rows = (uint64_t)ctx;
  double per_token = 0;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const uint32_t r = c.ratio(l);
    p.raw_bytes += (uint64_t)c.window * p.attn_row_bytes;
    if (r == 0) {
      ++p.n_window_layers;
      continue;
    }
    if (r != 4 && r != 128) fail("kv_memory_plan: layer {} has compress ratio {}", l, r);
    const uint64_t lanes = ModelConfig::compressor_lanes(r);
    // kv + score, [lanes * r][lanes * head_dim] FP32 each.
    p.frontier_bytes += 2 * (lanes * r) * (lanes * hd) * 4;
    const uint64_t n = rows / r;
    if (r == 4) {
      ++p.n_ratio4_layers;
      p.comp4_bytes += n * p.attn_row_bytes;
      p.indexer_bytes += n * p.indexer_row_bytes;
      p.frontier_bytes += 2 * (lanes * r) * (lanes * id) * 4;
      per_token += (double)(p.attn_row_bytes + p.indexer_row_bytes) / r;
    } else {
      ++p.n_ratio128_layers;
      p.comp128_bytes += n * p.attn_row_bytes;
      per_token += (double)p.attn_row_bytes / r;
    }
  }
  p.bytes_per_token = per_token;
  return p;
}

std::string kv_plan_text(const KvPlan& p) {
  auto mib = [](uint64_t b) { return (double)b / (1 << 20); };
  return fmt::format(
      "KV plan at {} tokens ({} storage: {} B per KV row, {} B per indexer row):\n"
      "  raw windows      {:10.2f} MiB ({} layers, fixed)\n"
      "  frontiers        {:10.2f} MiB (FP32, fixed)\n"
      "  ratio-4 rows     {:10.2f} MiB ({} layers)\n"
      "  indexer rows     {:10.2f} MiB\n"
      "  ratio-128 rows   {:10.2f} MiB ({} layers)\n"
      "  total            {:10.2f} MiB ({:.1f} B per token of context)\n",
      p.ctx_tokens, p.storage == StateStorage::kF32 ? "f32" : "spec", p.attn_row_bytes,
      p.indexer_row_bytes, mib(p.raw_bytes),
      p.n_window_layers + p.n_ratio4_layers + p.n_ratio128_layers, mib(p.frontier_bytes),
      mib(p.comp4_bytes), p.n_ratio4_layers, mib(p.indexer_bytes), mib(p.comp128_bytes),
      p.n_ratio128_layers, mib(p.total_bytes()), p.bytes_per_token);
}

WeightTraffic weight_traffic(const ModelConfig& c, const ModelWeights& w,
                             const std::vector<bool>& host_resident) {
  const double frac = c.n_expert ? (double)c.n_expert_used / c.n_expert : 0;
  WeightTraffic r;
  auto elems = [](const TensorRef& t) { return (uint64_t)(t.ne[0] * t.ne[1] * t.ne[2]); };
  auto row = [](const TensorRef& t) { return t.ne[1] > 0 ? t.nbytes / (uint64_t)t.ne[1] : 0; };
  auto dense = [&](const TensorRef& t) {
    if (t.name.empty()) return;
    r.bytes_per_token += t.nbytes;
    r.active_params += elems(t);
  };
  r.bytes_per_token += row(w.tok_embd);
  for (const TensorRef* t :
       {&w.output, &w.output_norm, &w.output_hc_fn, &w.output_hc_base, &w.output_hc_scale})
    dense(*t);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    for (const TensorRef* t :
         {&L.hc_attn_fn,   &L.hc_attn_base, &L.hc_attn_scale, &L.hc_ffn_fn,  &L.hc_ffn_base,
          &L.hc_ffn_scale, &L.attn_norm,    &L.ffn_norm,      &L.q_a,        &L.q_a_norm,
          &L.q_b,          &L.kv,           &L.kv_norm,       &L.sinks,      &L.o_a,
          &L.o_b,          &L.comp_ape,     &L.comp_kv,       &L.comp_gate,  &L.comp_norm,
          &L.idx_q_b,      &L.idx_proj,     &L.idx_ape,       &L.idx_kv,     &L.idx_gate,
          &L.idx_norm,     &L.gate_inp,     &L.exp_probs_b,   &L.gate_shexp, &L.up_shexp,
          &L.down_shexp})
      dense(*t);
    if (!L.tid2eid.name.empty()) r.bytes_per_token += row(L.tid2eid);
    const bool on_host = l < host_resident.size() && host_resident[l];
    for (const TensorRef* t : {&L.gate_exps, &L.up_exps, &L.down_exps}) {
      const uint64_t b = (uint64_t)std::llround((double)t->nbytes * frac);
      r.bytes_per_token += b;
      if (on_host) r.host_bytes_per_token += b;
      r.active_params += (uint64_t)std::llround((double)elems(*t) * frac);
    }
  }
  return r;
}

}  // namespace dsv4
