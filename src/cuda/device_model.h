// A model whose weights live where the GPU can read them: device memory, or (for routed experts
// that do not fit, e.g. the q2 model on an 80 GB H100) pinned, mapped host memory that kernels
// read over PCIe through the same pointers. Built either by uploading a loaded GGUF model
// (upload_model) or by synthesizing the published full-size layout with random valid blocks
// directly in device memory (synthesize_model, for benchmarks without the real weights).
//
// `w` mirrors dsv4::ModelWeights: every TensorRef has the GGUF name, type and shape, and its
// `data` is a device pointer (or a mapped host pointer, see `host_resident`). Never dereference
// it on the host.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/weights.h"

namespace dsv4::cuda {

struct PlacementOptions {
  // Fraction of the routed-expert bytes to keep in pinned host memory: < 0 = automatic (the
  // least that lets weights + `reserve_bytes` fit in free device memory), 0 = all on device
  // (throws when they do not fit), 1 = all routed experts on the host.
  double expert_host_fraction = -1;
  uint64_t reserve_bytes = 6ull << 30;  // device memory left for sessions and scratch
};

struct DeviceModel {
  ModelConfig cfg;
  ModelWeights w;  // data pointers: device or mapped pinned host memory
  uint64_t device_bytes = 0;  // weight bytes in device memory
  uint64_t host_bytes = 0;    // routed-expert bytes in pinned host memory
  // Per main layer: true when that layer's routed experts are host-resident.
  std::vector<bool> host_resident;

  struct Storage;  // owns the allocations: defined in cuda/device_storage.h (use that; do not redefine)
  std::shared_ptr<Storage> storage;
};

// Copies every tensor of `m` (main layers, head, MTP block when present) to the GPU.
std::unique_ptr<DeviceModel> upload_model(const Model& m, const PlacementOptions& opt = {});

// The published layout ("q2" or "q4", spec/ARCH.md §11.4), built in device memory with random
// valid blocks (finite scales, every code in range) from `seed`. No file; seconds.
std::unique_ptr<DeviceModel> synthesize_model(const std::string& recipe, uint64_t seed,
                                              const PlacementOptions& opt = {});

// "q2 synthetic: 80.76 GiB weights, 80.76 GiB on device, 0 B host (0/43 layers' experts)".
std::string describe_placement(const DeviceModel& dm);

}  // namespace dsv4::cuda
