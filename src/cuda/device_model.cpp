// upload_model / describe_placement (cuda/device_model.h): copies a loaded model's tensors to the
// GPU, optionally keeping the routed experts of the last layers in pinned, mapped host memory.
#include "cuda/device_model.h"

#include <fmt/core.h>

#include <cstring>
#include <functional>

#include "core/error.h"
#include "cuda/device.h"
#include "cuda/device_storage.h"

namespace dsv4::cuda {

namespace {

// Every tensor of a layer; `expert` marks the routed-expert stacks.
void for_each_layer_tensor(LayerWeights& L, const std::function<void(TensorRef&, bool)>& fn) {
  for (TensorRef* t :
       {&L.hc_attn_fn,   &L.hc_attn_base, &L.hc_attn_scale, &L.hc_ffn_fn, &L.hc_ffn_base,
        &L.hc_ffn_scale, &L.attn_norm,    &L.ffn_norm,      &L.q_a,       &L.q_a_norm,
        &L.q_b,          &L.kv,           &L.kv_norm,       &L.sinks,     &L.o_a,
        &L.o_b,          &L.comp_ape,     &L.comp_kv,       &L.comp_gate, &L.comp_norm,
        &L.idx_q_b,      &L.idx_proj,     &L.idx_ape,       &L.idx_kv,    &L.idx_gate,
        &L.idx_norm,     &L.gate_inp,     &L.exp_probs_b,   &L.tid2eid,   &L.gate_shexp,
        &L.up_shexp,     &L.down_shexp})
    fn(*t, false);
  for (TensorRef* t : {&L.gate_exps, &L.up_exps, &L.down_exps}) fn(*t, true);
}

uint64_t expert_bytes(const LayerWeights& L) {
  return L.gate_exps.nbytes + L.up_exps.nbytes + L.down_exps.nbytes;
}

std::string gib(uint64_t b) {
  if (b == 0) return "0 B";
  return fmt::format("{:.2f} GiB", (double)b / (double)(1ull << 30));
}

}  // namespace

std::unique_ptr<DeviceModel> upload_model(const Model& m, const PlacementOptions& opt) {
  if (device_count() == 0) fail("upload_model: no CUDA device");
  auto dm = std::make_unique<DeviceModel>();
  dm->cfg = m.cfg;
  dm->w = m.w;  // host pointers, replaced below
  dm->storage = std::make_shared<DeviceModel::Storage>();
  DeviceModel::Storage& st = *dm->storage;
  const size_t n_layer = dm->w.layers.size();
  dm->host_resident.assign(n_layer, false);

  // Sizes, to decide the placement of routed experts.
  uint64_t total = 0, experts = 0;
  auto count = [&](TensorRef& t, bool expert) {
    if (!t.present()) return;
    total += t.nbytes;
    if (expert) experts += t.nbytes;
  };
  for (auto& L : dm->w.layers) for_each_layer_tensor(L, count);
  for (TensorRef* t : {&dm->w.tok_embd, &dm->w.output, &dm->w.output_norm, &dm->w.output_hc_fn,
                       &dm->w.output_hc_base, &dm->w.output_hc_scale})
    count(*t, false);
  if (dm->w.mtp) {
    MtpWeights& t = *dm->w.mtp;
    for_each_layer_tensor(t.block, [&](TensorRef& r, bool) { count(r, false); });
    for (TensorRef* r : {&t.hc_head_fn, &t.hc_head_base, &t.hc_head_scale, &t.e_proj, &t.h_proj,
                         &t.enorm, &t.hnorm, &t.norm})
      count(*r, false);
  }
  uint64_t want_host = 0;
  if (opt.expert_host_fraction < 0) {
    size_t free_b = 0, total_b = 0;
    DSV4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const uint64_t budget = free_b > opt.reserve_bytes ? free_b - opt.reserve_bytes : 0;
    if (total > budget) want_host = total - budget;
  } else if (opt.expert_host_fraction == 0) {
    size_t free_b = 0, total_b = 0;
    DSV4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    if (total > free_b)
      fail(
          "upload_model: {} of weights do not fit in the {} of free device memory (allow "
          "host-resident experts with expert_host_fraction < 0 or > 0)",
          gib(total), gib(free_b));
  } else {
    if (opt.expert_host_fraction > 1) fail("expert_host_fraction {} > 1", opt.expert_host_fraction);
    want_host = (uint64_t)(opt.expert_host_fraction * (double)experts);
  }
  if (want_host > experts)
    fail(
        "upload_model: {} of weights do not fit in device memory even with every routed expert "
        "on the host",
        gib(total));
  // Host-resident experts: the last layers first.
  uint64_t host = 0;
  for (size_t l = n_layer; l-- > 0 && host < want_host;) {
    dm->host_resident[l] = true;
    host += expert_bytes(dm->w.layers[l]);
  }

  auto to_device = [&](TensorRef& t) {
    if (!t.present()) return;
    void* d = st.alloc_device(t.nbytes);
    DSV4_CUDA_CHECK(cudaMemcpy(d, t.data, t.nbytes, cudaMemcpyHostToDevice));
    t.data = static_cast<const uint8_t*>(d);
    dm->device_bytes += t.nbytes;
  };
  auto to_host = [&](TensorRef& t) {
    if (!t.present()) return;
    void* h = st.alloc_pinned(t.nbytes);
    std::memcpy(h, t.data, t.nbytes);
    t.data = static_cast<const uint8_t*>(DeviceModel::Storage::device_alias(h));
    dm->host_bytes += t.nbytes;
  };
  for (size_t l = 0; l < n_layer; ++l) {
    const bool on_host = dm->host_resident[l];
    for_each_layer_tensor(dm->w.layers[l], [&](TensorRef& t, bool expert) {
      if (expert && on_host)
        to_host(t);
      else
        to_device(t);
    });
  }
  for (TensorRef* t : {&dm->w.tok_embd, &dm->w.output, &dm->w.output_norm, &dm->w.output_hc_fn,
                       &dm->w.output_hc_base, &dm->w.output_hc_scale})
    to_device(*t);
  if (dm->w.mtp) {
    MtpWeights& t = *dm->w.mtp;
    for_each_layer_tensor(t.block, [&](TensorRef& r, bool) { to_device(r); });
    for (TensorRef* r : {&t.hc_head_fn, &t.hc_head_base, &t.hc_head_scale, &t.e_proj, &t.h_proj,
                         &t.enorm, &t.hnorm, &t.norm})
      to_device(*r);
  }
  return dm;
}

std::string describe_placement(const DeviceModel& dm) {
  size_t host_layers = 0;
  for (bool b : dm.host_resident) host_layers += b ? 1 : 0;
  const std::string name = dm.cfg.name.empty() ? std::string("model") : dm.cfg.name;
  return fmt::format("{}: {} weights, {} on device, {} host ({}/{} layers' experts)", name,
                     gib(dm.device_bytes + dm.host_bytes), gib(dm.device_bytes), gib(dm.host_bytes),
                     host_layers, dm.host_resident.size());
}

}  // namespace dsv4::cuda
