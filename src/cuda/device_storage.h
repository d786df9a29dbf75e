// Definition of DeviceModel::Storage (declared in cuda/device_model.h): the allocations behind a
// DeviceModel's TensorRef pointers. Shared by upload_model (device_model.cpp) and
// synthesize_model (synthetic.cpp). Host-only header (no kernels).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

#include "cuda/device.h"
#include "cuda/device_model.h"

namespace dsv4::cuda {

struct DeviceModel::Storage {
  // Device allocations (cudaMalloc), freed by DeviceBuffer's destructor.
  std::vector<DeviceBuffer> device;
  // Pinned, mapped host allocations (cudaHostAlloc(cudaHostAllocMapped | cudaHostAllocPortable));
  // tensors point at their device aliases (cudaHostGetDevicePointer).
  std::vector<void*> pinned_host;

  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage() {
    for (void* p : pinned_host)
      if (p) cudaFreeHost(p);  // never throws from a destructor
  }

  // cudaHostAlloc(bytes, Mapped | Portable), remembered here; returns the host pointer.
  void* alloc_pinned(size_t bytes) {
    void* p = nullptr;
    DSV4_CUDA_CHECK(cudaHostAlloc(&p, bytes, cudaHostAllocMapped | cudaHostAllocPortable));
    pinned_host.push_back(p);
    return p;
  }
  // Device alias of a mapped pinned host pointer.
  static void* device_alias(void* host) {
    void* d = nullptr;
    DSV4_CUDA_CHECK(cudaHostGetDevicePointer(&d, host, 0));
    return d;
  }
  // cudaMalloc(bytes), remembered here; returns the device pointer.
  void* alloc_device(size_t bytes) {
    device.emplace_back(bytes);
    return device.back().data();
  }
};

}  // namespace dsv4::cuda
