#include "cuda/device.h"

#include <mutex>
#include <vector>

#include "core/error.h"

namespace dsv4::cuda {

void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line) {
  // Clear a non-sticky error so the next call does not report it again.
  (void)cudaGetLastError();
  fail("CUDA error {} ({}: {}) in {} at {}:{}", static_cast<int>(e), cudaGetErrorName(e),
       cudaGetErrorString(e), call, file, line);
}

void throw_invalid_argument(const char* msg) { throw Error(msg); }

void check_launch(const char* kernel, const char* file, int line) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    fail("CUDA kernel launch failed: {} ({}: {}) at {}:{}", kernel, cudaGetErrorName(e),
         cudaGetErrorString(e), file, line);
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

const DeviceInfo& current_device_info() {
  static std::mutex mu;
  static std::vector<DeviceInfo*> cache;  // leaked on purpose: references stay valid
  int dev = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  if ((size_t)dev >= cache.size()) cache.resize((size_t)dev + 1, nullptr);
  if (!cache[(size_t)dev]) {
    cudaDeviceProp p{};
    DSV4_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
    auto* d = new DeviceInfo;
    d->id = dev;
    d->name = p.name;
    d->cc_major = p.major;
    d->cc_minor = p.minor;
    d->sm_count = p.multiProcessorCount;
    d->smem_per_block_optin = p.sharedMemPerBlockOptin;
    d->smem_per_sm = p.sharedMemPerMultiprocessor;
    d->l2_bytes = (size_t)p.l2CacheSize;
    d->global_mem = p.totalGlobalMem;
    d->max_threads_per_sm = p.maxThreadsPerMultiProcessor;
    cache[(size_t)dev] = d;
  }
  return *cache[(size_t)dev];
}

DeviceBuffer::DeviceBuffer(size_t bytes) {
  if (bytes == 0) return;
  DSV4_CUDA_CHECK(cudaMalloc(&p_, bytes));
  n_ = bytes;
}

DeviceBuffer::~DeviceBuffer() { reset(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) {
  o.p_ = nullptr;
  o.n_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    reset();
    p_ = o.p_;
    n_ = o.n_;
    o.p_ = nullptr;
    o.n_ = 0;
  }
  return *this;
}

void DeviceBuffer::reset() {
  if (p_) (void)cudaFree(p_);  // no throw from destructors
  p_ = nullptr;
  n_ = 0;
}

void DeviceBuffer::upload(const void* src, size_t bytes, size_t offset) {
  if (offset > n_ || bytes > n_ - offset)
    fail("DeviceBuffer::upload: {} bytes at offset {} exceed the buffer of {} bytes", bytes, offset,
         n_);
  if (bytes == 0) return;
  DSV4_CUDA_CHECK(cudaMemcpy(static_cast<char*>(p_) + offset, src, bytes, cudaMemcpyHostToDevice));
}

void DeviceBuffer::download(void* dst, size_t bytes, size_t offset) const {
  if (offset > n_ || bytes > n_ - offset)
    fail("DeviceBuffer::download: {} bytes at offset {} exceed the buffer of {} bytes", bytes,
         offset, n_);
  if (bytes == 0) return;
  DSV4_CUDA_CHECK(cudaMemcpy(dst, static_cast<const char*>(p_) + offset, bytes, cudaMemcpyDeviceToHost));
}

void DeviceBuffer::fill_bytes(int value) {
  if (n_ == 0) return;
  DSV4_CUDA_CHECK(cudaMemset(p_, value, n_));
}

Stream::Stream() { DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
Stream::~Stream() {
  if (s_) (void)cudaStreamDestroy(s_);
}
void Stream::sync() const { DSV4_CUDA_CHECK(cudaStreamSynchronize(s_)); }

Event::Event() { DSV4_CUDA_CHECK(cudaEventCreate(&e_)); }
Event::~Event() {
  if (e_) (void)cudaEventDestroy(e_);
}
void Event::record(cudaStream_t s) const { DSV4_CUDA_CHECK(cudaEventRecord(e_, s)); }
void Event::sync() const { DSV4_CUDA_CHECK(cudaEventSynchronize(e_)); }
float Event::elapsed_ms(const Event& start, const Event& stop) {
  float ms = 0;
  DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, stop.e_));
  return ms;
}

}  // namespace dsv4::cuda
