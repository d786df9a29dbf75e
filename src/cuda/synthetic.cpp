#include "cuda/synthetic.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <map>

#include "core/error.h"
#include "cuda/device_storage.h"
#include "cuda/synth_fill.h"

namespace dsv4::cuda {
namespace {

constexpr uint64_t kAlign = 256;

uint64_t align_up(uint64_t x) {
  return (x + kAlign - 1) / kAlign * kAlign;
}

uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t tensor_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  return mix64(seed ^ h);
}

bool contains(const std::string& s, const char* part) {
  return s.find(part) != std::string::npos;
}

// Main layer of a routed-expert tensor ("blk.N.ffn_*_exps.weight"), else -1.
int routed_layer(const std::string& name) {
  if (name.rfind("blk.", 0) != 0 || !contains(name, "_exps.weight")) return -1;
  return std::atoi(name.c_str() + 4);
}

// How each tensor's values are drawn (as the tiny-model generator's inits, spec-free).
synth::FillArgs fill_for(const gguf::TensorInfo& t, const ModelConfig& c) {
  using synth::Fill;
  synth::FillArgs a;
  a.type = (int)t.type;
  a.nbytes = t.nbytes;
  a.n_elements = t.n_elements();
  const std::string& n = t.name;
  const float inv_sqrt_fan_in = (float)(1.0 / std::sqrt((double)t.ne[0]));
  if (t.type == GgmlType::I32) {
    a.fill = Fill::kExpertIds;
    a.row_len = (int64_t)t.ne[0];
    a.n_expert = c.n_expert;
    if (a.row_len > a.n_expert)
      fail("synthetic model: tensor '{}' wants {} distinct experts per token but there are {}", n,
           a.row_len, a.n_expert);
    return a;
  }
  if (t.type == GgmlType::F32 || t.type == GgmlType::F16 || t.type == GgmlType::BF16) {
    a.fill = Fill::kUniform;
    a.scale = inv_sqrt_fan_in;
    if (contains(n, "norm.weight")) {
      a.fill = Fill::kAround, a.offset = 1.0f, a.scale = 0.1f;
    } else if (contains(n, "hc_") && contains(n, "_base.weight")) {
      a.scale = 0.5f;
    } else if (contains(n, "hc_") && contains(n, "_scale.weight")) {
      a.fill = Fill::kPositive, a.offset = 0.3f, a.scale = 0.7f;
    } else if (contains(n, "attn_sinks")) {
      a.scale = 1.0f;
    } else if (contains(n, "exp_probs_b")) {
      a.scale = 0.1f;
    } else if (n == "token_embd.weight") {
      a.scale = 1.0f;
    } else if (contains(n, "compressor_ape")) {
      a.scale = 0.5f;
    } else if (t.ne.size() < 2) {
      a.scale = 0.1f;  // any other vector
    }
    return a;
  }
  a.fill = Fill::kBlocks;
  a.scale = n == "output.weight" ? 2.0f * inv_sqrt_fan_in : inv_sqrt_fan_in;
  return a;
}

void layer_refs(LayerWeights& L, const std::function<void(TensorRef&)>& fn) {
  for (TensorRef* t :
       {&L.hc_attn_fn,   &L.hc_attn_base, &L.hc_attn_scale, &L.hc_ffn_fn, &L.hc_ffn_base,
        &L.hc_ffn_scale, &L.attn_norm,    &L.ffn_norm,      &L.q_a,       &L.q_a_norm,
        &L.q_b,          &L.kv,           &L.kv_norm,       &L.sinks,     &L.o_a,
        &L.o_b,          &L.comp_ape,     &L.comp_kv,       &L.comp_gate, &L.comp_norm,
        &L.idx_q_b,      &L.idx_proj,     &L.idx_ape,       &L.idx_kv,    &L.idx_gate,
        &L.idx_norm,     &L.gate_inp,     &L.exp_probs_b,   &L.tid2eid,   &L.gate_exps,
        &L.up_exps,      &L.down_exps,    &L.gate_shexp,    &L.up_shexp,  &L.down_shexp})
    fn(*t);
}

}  // namespace

void for_each_layer_ref(const LayerWeights& L, const std::function<void(const TensorRef&)>& fn) {
  layer_refs(const_cast<LayerWeights&>(L), [&](TensorRef& t) { fn(t); });
}

void for_each_tensor(ModelWeights& w, const std::function<void(TensorRef&)>& fn) {
  for (TensorRef* t : {&w.tok_embd, &w.output, &w.output_norm, &w.output_hc_fn, &w.output_hc_base,
                       &w.output_hc_scale})
    fn(*t);
  for (auto& L : w.layers) layer_refs(L, fn);
  if (w.mtp) {
    layer_refs(w.mtp->block, fn);
    for (TensorRef* t :
         {&w.mtp->hc_head_fn, &w.mtp->hc_head_base, &w.mtp->hc_head_scale, &w.mtp->e_proj,
          &w.mtp->h_proj, &w.mtp->enorm, &w.mtp->hnorm, &w.mtp->norm})
      fn(*t);
  }
}

void for_each_tensor(const ModelWeights& w, const std::function<void(const TensorRef&)>& fn) {
  for_each_tensor(const_cast<ModelWeights&>(w), [&](TensorRef& t) { fn(t); });
}

int host_expert_layers(double f, uint64_t reserve, uint64_t free_bytes, uint64_t other,
                       const std::vector<uint64_t>& per_layer) {
  const int L = (int)per_layer.size();
  if (std::isnan(f) || f > 1) fail("expert host fraction {} must be in [0, 1] (or < 0: auto)", f);
  const uint64_t budget = free_bytes > reserve ? free_bytes - reserve : 0;
  auto gib = [](uint64_t b) { return (double)b / (1ull << 30); };
  if (other > budget)
    fail(
        "the non-expert weights ({:.2f} GiB) do not fit in free device memory ({:.2f} GiB) minus "
        "the reserve ({:.2f} GiB)",
        gib(other), gib(free_bytes), gib(reserve));
  int n_host;
  if (f < 0) {  // automatic: as many leading layers on the device as fit
    uint64_t used = other;
    int k = 0;
    while (k < L && used + per_layer[k] <= budget) used += per_layer[k++];
    n_host = L - k;
  } else {
    n_host = (int)std::lround(f * L);
  }
  uint64_t dev = other;
  for (int l = 0; l < L - n_host; ++l) dev += per_layer[l];
  if (dev > budget)
    fail(
        "weights on the device ({:.2f} GiB with {}/{} layers' routed experts on the host) exceed "
        "free device memory ({:.2f} GiB) minus the reserve ({:.2f} GiB): raise the expert host "
        "fraction",
        gib(dev), n_host, L, gib(free_bytes), gib(reserve));
  return n_host;
}

std::unique_ptr<DeviceModel> synthesize_layout(const LayoutModel& layout, const std::string& name,
                                               uint64_t seed, const PlacementOptions& opt) {
  auto dm = std::make_unique<DeviceModel>();
  dm->cfg = layout_config(layout);
  dm->w = bind_layout(dm->cfg, layout.tensors, nullptr, name);
  const ModelConfig& c = dm->cfg;

  // Sizes: routed experts per main layer, everything else.
  std::vector<uint64_t> per_layer(c.n_layer, 0);
  uint64_t other = 0;
  for (const auto& t : layout.tensors) {
    const int l = routed_layer(t.name);
    if (l >= 0 && l < (int)c.n_layer)
      per_layer[l] += align_up(t.nbytes);
    else
      other += align_up(t.nbytes);
  }
  size_t free_b = 0, total_b = 0;
  DSV4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const int n_host =
      host_expert_layers(opt.expert_host_fraction, opt.reserve_bytes, free_b, other, per_layer);
  const uint32_t first_host = c.n_layer - (uint32_t)n_host;
  dm->host_resident.assign(c.n_layer, false);
  for (uint32_t l = first_host; l < c.n_layer; ++l) dm->host_resident[l] = true;

  // One device arena and one pinned host arena.
  uint64_t dev_size = other, host_size = 0;
  for (uint32_t l = 0; l < c.n_layer; ++l) (l < first_host ? dev_size : host_size) += per_layer[l];
  auto st = std::make_shared<DeviceModel::Storage>();
  uint8_t* dev = static_cast<uint8_t*>(st->alloc_device(dev_size));
  uint8_t* host_dev = nullptr;
  if (host_size) host_dev = static_cast<uint8_t*>(st->device_alias(st->alloc_pinned(host_size)));

  std::map<std::string, uint8_t*> where;
  uint64_t dev_off = 0, host_off = 0;
  Stream stream;
  for (const auto& t : layout.tensors) {
    const int l = routed_layer(t.name);
    const bool on_host = l >= 0 && (uint32_t)l >= first_host && (uint32_t)l < c.n_layer;
    uint8_t* p = on_host ? host_dev + host_off : dev + dev_off;
    (on_host ? host_off : dev_off) += align_up(t.nbytes);
    (on_host ? dm->host_bytes : dm->device_bytes) += t.nbytes;
    where[t.name] = p;
    synth::FillArgs a = fill_for(t, c);
    a.dst = p;
    a.seed = tensor_seed(seed, t.name);
    if (!synth::launch_fill(a, stream.get()))
      fail("synthetic model: cannot generate tensor '{}' of type {}", t.name,
           ggml_type_name(t.type));
  }
  stream.sync();
  DSV4_CUDA_CHECK(cudaGetLastError());
  for_each_tensor(dm->w, [&](TensorRef& r) {
    if (r.name.empty()) return;
    auto it = where.find(r.name);
    if (it == where.end()) fail("synthetic model: tensor '{}' has no storage", r.name);
    r.data = it->second;
  });
  dm->storage = std::move(st);
  return dm;
}

std::vector<uint8_t> synthesize_tensor_host(const gguf::TensorInfo& t, const ModelConfig& c,
                                            uint64_t seed) {
  std::vector<uint8_t> out(t.nbytes);
  synth::FillArgs a = fill_for(t, c);
  a.dst = out.data();
  a.seed = tensor_seed(seed, t.name);
  if (!synth::fill_host(a))
    fail("synthetic model: cannot generate tensor '{}' of type {}", t.name, ggml_type_name(t.type));
  return out;
}

std::unique_ptr<DeviceModel> synthesize_model(const std::string& recipe, uint64_t seed,
                                              const PlacementOptions& opt) {
  if (recipe != "q2" && recipe != "q4")
    fail("unknown synthetic recipe '{}' (known: q2, q4)", recipe);
  const LayoutModel lm = build_layout_model(recipe);
  auto dm = synthesize_layout(lm, recipe + " synthetic", seed, opt);
  dm->cfg.name = recipe + " synthetic";
  return dm;
}

}  // namespace dsv4::cuda
