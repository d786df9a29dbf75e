// Instantiation and launch of mv_fast_kernel<F, NB> for NB = 1..kMaxNb (included by mv_*.cu).
#pragma once
#include <algorithm>
#include <atomic>

#include "cuda/cuda_check.h"
#include "cuda/mv_kernel.cuh"
#include "cuda/mv_launch.h"
#include "cuda/pdl.cuh"

namespace dsv4::cuda::mv {

// Raises a kernel's dynamic shared-memory limit once per device (cudaFuncSetAttribute is a
// host call we keep off the per-token path).
template <auto Kernel>
void ensure_smem_limit(size_t bytes) {
  if (bytes <= 48 * 1024) return;
  static std::atomic<size_t> done[64];
  int dev = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev >= 0 && dev < 64 && done[dev].load(std::memory_order_relaxed) >= bytes) return;
  DSV4_CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(bytes)));
  if (dev >= 0 && dev < 64) {
    size_t cur = done[dev].load(std::memory_order_relaxed);
    while (cur < bytes && !done[dev].compare_exchange_weak(cur, bytes)) {
    }
  }
}

// Resident CTAs per SM of a kernel at (threads, smem), cached (the occupancy query is a host call
// we keep off the per-token path after the first use).
template <auto Kernel>
int resident_ctas_per_sm(int threads, size_t smem) {
  static std::atomic<uint64_t> cache[64];
  int dev = 0;
  DSV4_CUDA_CHECK(cudaGetDevice(&dev));
  const uint64_t key = ((uint64_t)(dev & 0xFF) << 40) | ((uint64_t)(threads & 0xFFF) << 28) |
                       (uint64_t)(smem & 0xFFFFFFF);
  for (auto& e : cache) {
    const uint64_t v = e.load(std::memory_order_relaxed);
    if (v == 0) break;
    if ((v >> 8) == key + 1) return (int)(v & 0xFF);
  }
  int n = 0;
  DSV4_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, Kernel, threads, smem));
  n = n < 1 ? 1 : (n > 255 ? 255 : n);
  const uint64_t entry = ((key + 1) << 8) | (uint64_t)n;
  for (auto& e : cache) {
    uint64_t z = 0;
    if (e.compare_exchange_strong(z, entry)) break;
    if ((z >> 8) == key + 1) break;
  }
  return n;
}

template <class F, int NB, bool kSmemX>
void launch_persist_v(const Launch& l, cudaStream_t s) {
  constexpr auto K = mv_persist_kernel<F, NB, kSmemX>;
  ensure_smem_limit<K>(l.smem);
  int occ = resident_ctas_per_sm<K>(l.threads, l.smem);
  if (l.max_ctas_per_sm > 0) occ = std::min(occ, l.max_ctas_per_sm);
  const int64_t wpc = l.threads / 32;
  int64_t grid = (int64_t)occ * (l.sm_count > 0 ? l.sm_count : 1);
  grid = std::min(grid, (l.ctas + wpc - 1) / wpc);
  if (grid < 1) grid = 1;
  launch_k(K, static_cast<unsigned>(grid), l.threads, l.smem, s, l.p);  // pdl.cuh
}

template <class F, int NB, bool kBulk, bool kSmemX>
void launch_fast_v(const Launch& l, cudaStream_t s) {
  if constexpr (kBulk) {
    if (l.p.persist) return launch_persist_v<F, NB, kSmemX>(l, s);
  }
  constexpr auto K = mv_fast_kernel<F, NB, kBulk, kSmemX>;
  ensure_smem_limit<K>(l.smem);
  launch_k(K, static_cast<unsigned>(l.ctas), l.threads, l.smem, s, l.p);
}

template <class F, int NB>
void launch_fast_nb(const Launch& l, cudaStream_t s, const char* name) {
  if constexpr (F::kGeom.smem_x) {
    if (l.p.bulk)
      launch_fast_v<F, NB, true, true>(l, s);
    else
      launch_fast_v<F, NB, false, true>(l, s);
  } else if constexpr (F::kOptionalSmemX) {
    if (l.p.bulk) {
      if (l.p.smem_x)
        launch_fast_v<F, NB, true, true>(l, s);
      else
        launch_fast_v<F, NB, true, false>(l, s);
    } else {
      if (l.p.smem_x)
        launch_fast_v<F, NB, false, true>(l, s);
      else
        launch_fast_v<F, NB, false, false>(l, s);
    }
  } else {
    if (l.p.bulk)
      launch_fast_v<F, NB, true, false>(l, s);
    else
      launch_fast_v<F, NB, false, false>(l, s);
  }
  DSV4_CUDA_CHECK_LAUNCH(name);
}

template <class F>
void launch_fast(const Launch& l, int nb, cudaStream_t s, const char* name) {
  switch (nb) {
    case 1:
      return launch_fast_nb<F, 1>(l, s, name);
    case 2:
      return launch_fast_nb<F, 2>(l, s, name);
    case 3:
      return launch_fast_nb<F, 3>(l, s, name);
    case 4:
      return launch_fast_nb<F, 4>(l, s, name);
    case 5:
      return launch_fast_nb<F, 5>(l, s, name);
    case 6:
      return launch_fast_nb<F, 6>(l, s, name);
    case 7:
      return launch_fast_nb<F, 7>(l, s, name);
    case 8:
      return launch_fast_nb<F, 8>(l, s, name);
    default:
      throw_invalid_argument("matvec: batch size outside 1..8");
  }
}

}  // namespace dsv4::cuda::mv
