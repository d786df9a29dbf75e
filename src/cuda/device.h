// Device memory, streams and events (RAII), and the properties of the current device.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "cuda/cuda_check.h"

namespace dsv4::cuda {

// Number of usable CUDA devices; 0 when there is no device or no driver (never throws).
int device_count();

struct DeviceInfo {
  int id = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  size_t smem_per_block_optin = 0;  // largest dynamic shared memory a block may ask for
  size_t smem_per_sm = 0;
  size_t l2_bytes = 0;
  size_t global_mem = 0;
  int max_threads_per_sm = 0;
};

// Properties of the current device (cached per device id).
const DeviceInfo& current_device_info();

// Owning device allocation (cudaMalloc); move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return p_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  void reset();

  // Synchronous copies (cudaMemcpy); offsets and sizes in bytes, checked against size().
  void upload(const void* src, size_t bytes, size_t offset = 0);
  void download(void* dst, size_t bytes, size_t offset = 0) const;
  // cudaMemset of every byte (0xFF gives a NaN in every f32).
  void fill_bytes(int value);

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

// Non-blocking stream; move-only.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(Stream&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  Stream& operator=(Stream&&) = delete;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  void sync() const;

 private:
  cudaStream_t s_ = nullptr;
};

// Timing event; move-only.
class Event {
 public:
  Event();
  ~Event();
  Event(Event&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
  Event& operator=(Event&&) = delete;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }
  void record(cudaStream_t s = nullptr) const;
  void sync() const;
  // Milliseconds between two recorded (and completed) events.
  static float elapsed_ms(const Event& start, const Event& stop);

 private:
  cudaEvent_t e_ = nullptr;
};

}  // namespace dsv4::cuda
