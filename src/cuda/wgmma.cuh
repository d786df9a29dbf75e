// Hopper warpgroup MMA (wgmma, sm_90a only) as inline PTX: shared-memory matrix descriptors for
// the 128-byte swizzled K-major layout, the m64nNk16 bf16 products (wgmma_ops.inc), and the fence /
// commit / wait instructions around them. Include only from code compiled for sm_90a (the callers
// guard their device code with __CUDA_ARCH_FEAT_SM90_ALL); the host pass sees empty bodies.
//
// Layout (both operands K-major, one row = 64 bf16 = 128 bytes per K step of 64): row r of a
// tile starts at byte 128 r of a 1024-byte-aligned buffer, and its 16-byte chunk c (values
// 8c .. 8c + 7) sits at chunk position c ^ (r % 8). This is the hardware's 128B swizzle (address
// bits 4-6 XOR bits 7-9), so 8 consecutive rows form one 1024-byte atom; the descriptor names the
// atom stride (SBO, 1024 bytes) and the k16 slices of the 64-wide step start 32 bytes apart.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda::wgmma {

// Byte offset of value k (0..63) of row r in a swizzled tile; k a multiple of 8.
__host__ __device__ constexpr uint32_t swz_offset(uint32_t r, uint32_t k) {
  return 128u * r + ((((k >> 3) ^ r) & 7u) << 4);
}

// Descriptor of a K-major tile at shared address `addr` (1024-aligned atoms; `addr` may be offset
// by multiples of 32 bytes inside the 128-byte row for the k16 slices): start address >> 4 in bits
// 0-13, leading offset 1 (unused with this swizzle), stride offset 1024 >> 4 in bits 32-45,
// swizzle mode 1 (128B) in bits 62-63.
__device__ __forceinline__ uint64_t desc_k128(uint32_t addr) {
  return (uint64_t)((addr & 0x3FFFFu) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) |
         ((uint64_t)1 << 62);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Orders this thread's earlier register and shared-memory accesses before the next wgmma.
__device__ __forceinline__ void fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
// Waits until at most N committed groups of this warpgroup are still running.
template <int N>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Makes this thread's ordinary shared-memory writes (st.shared, cp.async) visible to the async
// proxy that wgmma reads through; needed before the barrier that publishes them.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
// Keeps the compiler from moving accumulator accesses across wgmma issue/wait points.
__device__ __forceinline__ void fence_operand(float& r) {
  asm volatile("" : "+f"(r)::"memory");
}

// d[0 .. N/2) += A (64 x 16, descriptor a) * B^T (N x 16, descriptor b), f32 accumulation. The
// accumulator of thread t (warp w = t / 32 of the warpgroup, lane l) holds rows 16 w + l / 4
// (+ 8 for d[4j + 2], d[4j + 3]) and columns 8 j + 2 (l % 4) (+ 1 for d[4j + 1], d[4j + 3]).
template <int N>
__device__ void mma_bf16(float (&d)[128], uint64_t a, uint64_t b);
#include "cuda/wgmma_ops.inc"
#endif

}  // namespace dsv4::cuda::wgmma
