// cp.async (sm_80+) global -> shared copies with commit groups: the one set of wrappers for the
// kernels that stage through shared memory with it (the matvec ring, the mma.sync expert GEMM, the
// chunk HC mixes). The wgmma expert GEMM keeps its own copy without the memory clobber (see there).
#pragma once
#include <cstdint>

namespace dsv4::cuda {

// cp.async of G bytes global -> shared (16: L1 bypass, 4: through L1); dst a shared address.
template <int G>
__device__ __forceinline__ void cp_async(uint32_t dst, const void* src) {
  static_assert(G == 4 || G == 16, "cp.async granule");
  if constexpr (G == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
  }
}
// L2 policy for data read once (the weights: ~9.6 GB per token through a ~50 MB L2): evict_first,
// so that their lines go before the activations, the KV rows and the other kernels' outputs that
// the next kernels read; evict_normal otherwise (the same instructions either way).
__device__ __forceinline__ uint64_t l2_stream_policy(int evict_first) {
  uint64_t pol;
  if (evict_first)
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
  else
    asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;\n" : "=l"(pol));
  return pol;
}
// cp_async with an L2 cache policy (l2_stream_policy).
template <int G>
__device__ __forceinline__ void cp_async_hint(uint32_t dst, const void* src, uint64_t pol) {
  static_assert(G == 4 || G == 16, "cp.async granule");
  if constexpr (G == 16) {
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(dst),
                 "l"(src), "l"(pol)
                 : "memory");
  } else {
    asm volatile("cp.async.ca.shared.global.L2::cache_hint [%0], [%1], 4, %2;\n" ::"r"(dst),
                 "l"(src), "l"(pol)
                 : "memory");
  }
}
// 16 bytes to `dst` (a shared-memory pointer), of which the first src_bytes (0 or 16) are read
// from `src` and the rest are zeros: src_bytes 0 zero-fills (rows past the end; `src` must still
// be a valid address).
__device__ __forceinline__ void cp_async16_zfill(void* dst, const void* src, int src_bytes) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most N of this thread's commit groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

}  // namespace dsv4::cuda
