// Synthetic device models beyond the published recipes (synthesize_model in device_model.h):
// any data-less layout (e.g. a tiny spec's) filled with random valid blocks in device memory.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cuda/device_model.h"
#include "model/tiny_model.h"

namespace dsv4::cuda {

// Builds `layout` in device memory (routed experts of some layers in pinned mapped host memory,
// per `opt`) with random valid data from `seed`: quantized blocks with random codes and finite
// f16 scales (decoded RMS about 1/sqrt(row length)), F32 norms about 1, the hash routing table
// with distinct expert ids < n_expert per token. `name` is used in messages. Deterministic.
std::unique_ptr<DeviceModel> synthesize_layout(const LayoutModel& layout, const std::string& name,
                                               uint64_t seed, const PlacementOptions& opt = {});

// The bytes synthesize_layout writes for tensor `t` of a model with config `cfg`, computed on
// the CPU (no device needed; slow for big tensors): the reference the device output is checked
// against.
std::vector<uint8_t> synthesize_tensor_host(const gguf::TensorInfo& t, const ModelConfig& cfg,
                                            uint64_t seed);

// How many main layers' routed experts go to pinned host memory (the last ones), given the
// per-layer routed bytes, the other weights' bytes and the free device memory. Throws naming the
// shortfall when even the non-expert weights (or, with fraction 0, everything) do not fit.
int host_expert_layers(double expert_host_fraction, uint64_t reserve_bytes, uint64_t free_bytes,
                       uint64_t other_bytes, const std::vector<uint64_t>& expert_bytes_per_layer);

// Calls fn on every TensorRef of one block (absent optional ones have an empty name).
void for_each_layer_ref(const LayerWeights& L, const std::function<void(const TensorRef&)>& fn);
// Calls fn on every TensorRef of `w` (main layers, head, MTP block when present).
void for_each_tensor(ModelWeights& w, const std::function<void(TensorRef&)>& fn);
void for_each_tensor(const ModelWeights& w, const std::function<void(const TensorRef&)>& fn);

}  // namespace dsv4::cuda
