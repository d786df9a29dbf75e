// Helpers shared by the GPU test binaries: skipping a test without a device, and copies between
// host vectors and device buffers (synchronous, so they never race with a test's own stream).
#pragma once
#include <gtest/gtest.h>

#include <vector>

#include "cuda/device.h"

// Skips the calling test when no CUDA device is present.
#define REQUIRE_GPU() \
  if (::dsv4::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device: GPU test skipped"

namespace dsv4::test {

template <class T>
cuda::DeviceBuffer upload(const std::vector<T>& v) {
  cuda::DeviceBuffer b(sizeof(T) * v.size());
  b.upload(v.data(), sizeof(T) * v.size());
  return b;
}

template <class T>
std::vector<T> download(const cuda::DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  b.download(v.data(), sizeof(T) * n);
  return v;
}

}  // namespace dsv4::test
