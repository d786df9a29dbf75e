// The fast matrix-vector kernel skeleton (layout: mv_params.h). A format supplies a decoder
// struct F (mv_fmt_*.cuh) with
//   static constexpr FormatGeom kGeom;  // geometry, identical to the planner's
//   static constexpr bool kDenormal;    // codes decoded as denormals: x staged * 2^96, sums
//                                       // scaled back by 2^53 (kGeom.smem_x formats)
//   template <int NB, class X> static void dot(const uint32_t (&w)[kWords], const X& x,
//       const float* xsum, int xsum_vs, const uint32_t* tab, float (&acc)[NB]);
// where w is the lane's unit (kWords = unit_bytes / 4 little-endian words), x.ld(v, i) returns
// the 4 floats of vector v at values [i, i+4) of the unit (pre-scaled when kDenormal), xsum the
// unit's per-16 sums of vector 0 (xsum_vs floats between vectors, scaled by 2^-53), tab the shared
// lookup table and, when kGeom.table_bytes > 0, static uint32_t table_word(int i) its words.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cp_async.cuh"
#include "cuda/mv_intrin.cuh"
#include "cuda/mv_params.h"
#include "cuda/pdl.cuh"

namespace dsv4::cuda::mv {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// mbarrier + bulk-copy (TMA) helpers, sm_90.
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_wait_parity(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred P1;\n"
      "LAB_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
      "@P1 bra DONE;\n"
      "bra LAB_WAIT;\n"
      "DONE:\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// pol: an L2 policy (l2_stream_policy in cp_async.cuh).
__device__ __forceinline__ void bulk_copy_g2s(uint32_t dst, const void* src, uint32_t bytes,
                                              uint32_t bar, uint64_t pol) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], "
      "[%1], %2, [%3], %4;\n" ::"r"(dst),
      "l"(src), "r"(bytes), "r"(bar), "l"(pol)
      : "memory");
}
__device__ __forceinline__ void fence_proxy_async_smem() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void fence_mbar_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// x_unit_bytes (a host constexpr function) as a compile-time constant usable in device code.
template <class F>
struct XUnitBytes {
  static constexpr int value = x_unit_bytes(F::kGeom);
};

// int8-x staging pieces: the largest |value| of a float4, a poison term that is 0, or NaN when a
// value is NaN or infinite, and the four values' int8 codes for a group absmax as one word.
__device__ __forceinline__ float absmax4(float4 r) {
  return fmaxf(fmaxf(fabsf(r.x), fabsf(r.y)), fmaxf(fabsf(r.z), fabsf(r.w)));
}
__device__ __forceinline__ float poison4(float4 r) {
  return (r.x * 0.0f + r.y * 0.0f) + (r.z * 0.0f + r.w * 0.0f);
}
__device__ __forceinline__ uint32_t pack_x8(float4 r, float amax) {
  return ((uint32_t)x8_code(r.x, amax) & 0xFFu) | (((uint32_t)x8_code(r.y, amax) & 0xFFu) << 8) |
         (((uint32_t)x8_code(r.z, amax) & 0xFFu) << 16) | ((uint32_t)x8_code(r.w, amax) << 24);
}

// kBulk: the ring is filled with cp.async.bulk (one copy per row segment of a step, or per lane
// when slots are padded) completing on one mbarrier per (warp, stage); p.stages is the planner's.
// Otherwise cp.async granules (FormatGeom::copy_bytes) with commit groups; p.stages == g.stages.
// x (scaled for the denormal formats) with its per-16 sums, staged in shared memory by all threads
// of the CTA (the caller synchronizes).
template <class F, int NB, bool kSmemX>
__device__ __forceinline__ void stage_x(const Params& p, const float* xg, unsigned char* smem) {
  constexpr FormatGeom g = F::kGeom;
  if constexpr (kSmemX && g.x8) {
    // int8 per 32 values (X8 layout). A NaN or infinity in a group makes its scale NaN, so that it
    // reaches y as in the f32 path.
    constexpr int kXU = XUnitBytes<F>::value;
    constexpr int kG32 = g.unit_values / 32;
    const int n32 = p.cols >> 5;
    auto dst_of = [&](int v, int gi, int& k) {
      const int uu = gi / kG32;
      k = gi - uu * kG32;
      return smem + (int64_t)(v * p.units + uu) * kXU;
    };
    if (blockDim.x >= 4u * NB * (unsigned)n32) {
      // Four threads per group, 8 values (two float4 loads) each, the group's absmax and poison
      // combined by two xor shuffles: every thread takes part and the staging costs one L2 round
      // trip plus a few operations. Threads past the groups run the shuffles with zeros.
      const int j = (int)threadIdx.x;
      const bool act = j < 4 * NB * n32;
      const int gg = act ? j >> 2 : 0, part = j & 3;
      const int v = gg / n32, gi = gg - v * n32;
      float4 r0 = make_float4(0.f, 0.f, 0.f, 0.f), r1 = r0;
      if (act) {
        const float4* q =
            reinterpret_cast<const float4*>(xg + v * p.x_vec_stride + 32 * gi + 8 * part);
        r0 = __ldg(q);
        r1 = __ldg(q + 1);
      }
      float amax = fmaxf(absmax4(r0), absmax4(r1));
      float poison = poison4(r0) + poison4(r1);
      amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
      amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
      poison += __shfl_xor_sync(0xffffffffu, poison, 1);
      poison += __shfl_xor_sync(0xffffffffu, poison, 2);
      const uint32_t pk0 = pack_x8(r0, amax), pk1 = pack_x8(r1, amax);
      const float sc = x8_scale(amax) + poison;
      int s8 = 0;
      if constexpr (g.xsum_group == 16) {  // sums of the quantized values (exact integers) * sc
        s8 = dp4a_s8(pk1, 0x01010101u, dp4a_s8(pk0, 0x01010101u, 0));
        s8 += __shfl_xor_sync(0xffffffffu, s8, 1);  // parts {0,1} and {2,3}: values 0-15, 16-31
      }
      if (act) {
        int k;
        unsigned char* dst = dst_of(v, gi, k);
        reinterpret_cast<uint2*>(dst + 32 * k)[part] = make_uint2(pk0, pk1);
        if (part == 0) reinterpret_cast<float*>(dst + g.unit_values)[k] = sc;
        if constexpr (g.xsum_group == 16) {
          float* sums = reinterpret_cast<float*>(dst + g.unit_values + 4 * kG32);
          if ((part & 1) == 0) sums[2 * k + (part >> 1)] = sc * (float)s8;
        }
      }
    } else {
      // Fewer threads than 4 per group: one thread per group, its 8 loads in flight at once
      // (a loop of 8-value pieces would serialize L2 round trips in small CTAs).
      for (int j = threadIdx.x; j < NB * n32; j += blockDim.x) {
        const int v = j / n32, gi = j - v * n32;
        const float4* q = reinterpret_cast<const float4*>(xg + v * p.x_vec_stride + 32 * gi);
        float4 r[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) r[e] = __ldg(q + e);
        float amax = 0.0f, poison = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          amax = fmaxf(amax, absmax4(r[e]));
          poison += poison4(r[e]);
        }
        uint32_t pk[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) pk[e] = pack_x8(r[e], amax);
        int k;
        unsigned char* dst = dst_of(v, gi, k);
        reinterpret_cast<uint4*>(dst + 32 * k)[0] = make_uint4(pk[0], pk[1], pk[2], pk[3]);
        reinterpret_cast<uint4*>(dst + 32 * k)[1] = make_uint4(pk[4], pk[5], pk[6], pk[7]);
        const float sc = x8_scale(amax) + poison;
        reinterpret_cast<float*>(dst + g.unit_values)[k] = sc;
        if constexpr (g.xsum_group == 16) {  // sums of the quantized values (exact integers) * sc
          int s0 = 0, s1 = 0;
#pragma unroll
          for (int e = 0; e < 4; ++e) s0 = dp4a_s8(pk[e], 0x01010101u, s0);
#pragma unroll
          for (int e = 4; e < 8; ++e) s1 = dp4a_s8(pk[e], 0x01010101u, s1);
          float* sums = reinterpret_cast<float*>(dst + g.unit_values + 4 * kG32);
          sums[2 * k] = sc * (float)s0;
          sums[2 * k + 1] = sc * (float)s1;
        }
      }
    }
  } else if constexpr (kSmemX) {
    constexpr float kSc = F::kDenormal ? kXScale : 1.0f;
    // 16-value groups j of [NB][cols]: 4 float4 loads each, up to 4 groups per thread in flight
    // (a strided loop with one load per trip would serialize L2 latencies).
    // Padded layout: unit u of vector v at v * XV + u * (unit_values + 4) floats,
    // its per-16 sums at v * SV + u * (unit_values / 16 + 1), so that the LR lanes of a row (other
    // units, same offsets) hit different banks.
    constexpr int kG = g.unit_values / 16;  // 16-value groups per unit
    float4* xw = reinterpret_cast<float4*>(smem);
    float* sw = reinterpret_cast<float*>(smem + p.off_xsum);
    const int n16 = p.cols >> 4;
    const int ngroups = NB * n16;
    const int xv4 = (p.units * (g.unit_values + 4)) >> 2;  // float4s per vector
    const int sv = p.units * (kG + 1);
    for (int base = threadIdx.x; base < ngroups; base += 4 * blockDim.x) {
      float4 r[4][4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int j = base + k * blockDim.x;
        if (j < ngroups) {
          const int v = j / n16;
          const float4* q =
              reinterpret_cast<const float4*>(xg + v * p.x_vec_stride + 16 * (j - v * n16));
#pragma unroll
          for (int e = 0; e < 4; ++e) r[k][e] = __ldg(q + e);
        }
      }
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int j = base + k * blockDim.x;
        if (j < ngroups) {
          const int v = j / n16;
          const int lg = j - v * n16;
          const int uu = lg / kG, gi = lg - uu * kG;
          const int o4 = v * xv4 + uu * ((g.unit_values + 4) >> 2) + 4 * gi;
#pragma unroll
          for (int e = 0; e < 4; ++e)
            xw[o4 + e] =
                make_float4(r[k][e].x * kSc, r[k][e].y * kSc, r[k][e].z * kSc, r[k][e].w * kSc);
          if constexpr (g.xsum_group == 16) {
            const float4 a = r[k][0], c = r[k][1], d = r[k][2], f = r[k][3];
            const float sum = (((a.x + a.y) + (a.z + a.w)) + ((c.x + c.y) + (c.z + c.w))) +
                              (((d.x + d.y) + (d.z + d.w)) + ((f.x + f.y) + (f.z + f.w)));
            sw[v * sv + uu * (kG + 1) + gi] =
                sum * kXsumScale;  // the scale of code * 2^-149 * x * 2^96
          }
        }
      }
    }
  }
}

// The lookup table (constant data): staged by all threads of the CTA before the kernel waits for
// its predecessors, or while its first weight copies are in flight (the caller synchronizes).
template <class F>
__device__ __forceinline__ void stage_table(const Params& p, unsigned char* smem) {
  constexpr FormatGeom g = F::kGeom;
  if constexpr (g.table_bytes > 0) {
    uint32_t* tw = reinterpret_cast<uint32_t*>(smem + p.off_tab);
    constexpr int kTabWords = g.table_bytes / 4;
    for (int base = threadIdx.x; base < kTabWords; base += 8 * blockDim.x) {
      uint32_t r[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const int i = base + k * blockDim.x;
        r[k] = i < kTabWords ? F::table_word(i) : 0u;
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const int i = base + k * blockDim.x;
        if (i < kTabWords) tw[i] = r[k];
      }
    }
  }
}

// kSmemX: x staged in shared memory (always for the denormal formats; a planner choice for Q8_0,
// unscaled there).
template <class F, int NB, bool kBulk, bool kSmemX = F::kGeom.smem_x>
__global__ void __launch_bounds__(max_threads_for_nb(NB))
    mv_fast_kernel(const __grid_constant__ Params p) {
  constexpr FormatGeom g = F::kGeom;
  constexpr int kWords = g.unit_bytes / 4;
  constexpr int kPer = g.unit_bytes / g.copy_bytes;  // granules per unit
  constexpr int kStageBytes = 32 * g.slot_bytes;
  constexpr bool kContig = g.slot_bytes == g.unit_bytes;  // slots of a row's lanes are adjacent
  static_assert(g.unit_bytes % g.copy_bytes == 0 && g.slot_bytes >= g.unit_bytes);
  static_assert((g.stages & (g.stages - 1)) == 0, "stages must be a power of two");
  static_assert(F::kDenormal == (g.smem_x && !g.x8) && (kSmemX || !g.smem_x));

  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const uint64_t pol = l2_stream_policy(p.l2_evict_first);
  pdl_trigger();
  // Expert ids come from a predecessor: wait before reading them; otherwise the weight copies
  // below start before the wait (they read only constant data).
  if (p.ids) {
    stage_table<F>(p, smem);
    pdl_wait();
  }

  int b = blockIdx.x;
  const int group = b % p.groups;
  b /= p.groups;
  const int slot = b % p.n_slots;
  const int mat = b / p.n_slots;
  const int lr = 1 << p.lr_log2;
  const int rpc = 32 >> p.lr_log2;  // rows per CTA
  const int row0 = group * rpc;
  const int rows_here = min(rpc, p.rows - row0);
  float* y = p.y + mat * p.y_mat_stride + slot * p.y_slot_stride + row0;

  int64_t expert = slot;
  if (p.ids) expert = p.ids[slot];
  if (p.n_expert > 0 && (expert < 0 || expert >= p.n_expert)) {  // CTA-uniform
    for (int i = threadIdx.x; i < rpc * NB; i += blockDim.x) {
      const int r = i % rpc, v = i / rpc;
      if (r < rows_here) y[v * p.y_vec_stride + r] = __int_as_float(0x7fc00000);
    }
    return;
  }
  if (p.expert_bytes == 0) expert = 0;
  const uint8_t* W = p.w[mat] + expert * p.expert_bytes + (int64_t)row0 * p.row_bytes;
  const float* xg = p.x + slot * p.x_slot_stride;

  const int stages = kBulk ? p.stages : g.stages;
  unsigned char* ring = smem + p.off_ring + warp * (stages * kStageBytes);
  const uint32_t ring_s = smem_addr(ring);
  const int my_k = lane & (lr - 1);
  const int my_r = lane >> p.lr_log2;

  // Stage s of this warp: slot sl = rr*LR + kk holds unit (s*KS + warp)*LR + kk of row rr. The LR
  // units of a row are adjacent in memory, so granule i = lane + 32*it of a stage lies at a
  // step-invariant 32-bit offset from the step's base and consecutive lanes copy consecutive
  // bytes. Rows past the matrix end re-read its last row (never written back); the planner makes
  // KS*LR divide the unit count, so every unit index is valid. No per-granule predicates: they
  // would be hoisted out of the step loop and cost registers.
  const int last_row = rows_here - 1;
  const int row_bytes = (int)p.row_bytes;  // 32 rows fit in 31 bits (planner)
  // Bulk mode: this lane copies (kContig: the LR units of its row, if it is the row's first lane;
  // else its own unit) into its slot; one mbarrier per stage counts the stage's bytes.
  const uint32_t bar0 = smem_addr(smem + p.off_bar + warp * kBarBytesPerWarp);
  const bool copier = !kContig || my_k == 0;
  const uint32_t copy_bytes = kContig ? (uint32_t)(lr * g.unit_bytes) : (uint32_t)g.unit_bytes;
  const uint8_t* my_src =
      W + (int64_t)min(my_r, last_row) * row_bytes + (kContig ? 0 : my_k) * g.unit_bytes;
  auto issue = [&](int s) {
    if constexpr (kBulk) {
      if (s < p.steps) {
        const int j = s & (stages - 1);
        const uint32_t bar = bar0 + 8 * j;
        if (lane == 0) mbar_arrive_expect_tx(bar, (uint32_t)(32 * g.unit_bytes));
        if (copier)
          bulk_copy_g2s(ring_s + j * kStageBytes + lane * g.slot_bytes,
                        my_src + (int64_t)unit_of(s, p.ks, warp, p.lr_log2, 0) * g.unit_bytes,
                        copy_bytes, bar, pol);
      }
    } else {
      if (s < p.steps) {
        const uint8_t* ws = W + (int64_t)unit_of(s, p.ks, warp, p.lr_log2, 0) * g.unit_bytes;
        const uint32_t dst0 = ring_s + (s & (g.stages - 1)) * kStageBytes;
#pragma unroll
        for (int it = 0; it < kPer; ++it) {
          const int i = lane + 32 * it;
          const int src =
              granule_src<kPer, g.unit_bytes, g.copy_bytes>(i, p.lr_log2, last_row, row_bytes);
          cp_async_hint<g.copy_bytes>(
              dst0 + granule_dst<kPer, g.unit_bytes, g.slot_bytes, g.copy_bytes>(i), ws + src, pol);
        }
      }
      cp_async_commit();  // always, so that group counting stays uniform
    }
  };

  if constexpr (kBulk) {
    if (lane == 0) {
      for (int j = 0; j < stages; ++j) mbar_init(bar0 + 8 * j, 1);
      fence_mbar_init();
    }
    __syncwarp();
    for (int s = 0; s < stages; ++s) issue(s);
  } else {
#pragma unroll
    for (int s = 0; s < g.stages; ++s) issue(s);
  }
  if (!p.ids) stage_table<F>(p, smem);
  pdl_wait();  // x and y belong to the predecessors from here on
  // x (scaled) and its per-16 sums: once per CTA, while the ring fills.
  const float* xs = reinterpret_cast<const float*>(smem);
  const float* xsum = reinterpret_cast<const float*>(smem + p.off_xsum);
  const uint32_t* tab = reinterpret_cast<const uint32_t*>(smem + p.off_tab);
  stage_x<F, NB, kSmemX>(p, xg, smem);
  if constexpr (kSmemX || g.table_bytes > 0) __syncthreads();

  float acc[NB];
#pragma unroll
  for (int v = 0; v < NB; ++v) acc[v] = 0.0f;

  for (int s = 0; s < p.steps; ++s) {
    if constexpr (kBulk) {
      mbar_wait_parity(bar0 + 8 * (s & (stages - 1)), (uint32_t)(s >> p.stages_log2) & 1u);
    } else {
      cp_async_wait<g.stages - 1>();  // this lane's copies of stage s have landed
      __syncwarp();                   // ... and every lane's are visible
    }
    uint32_t w[kWords];
    {
      const unsigned char* sp = ring + (s & (stages - 1)) * kStageBytes + lane * g.slot_bytes;
      if constexpr (g.copy_bytes == 16) {
#pragma unroll
        for (int j = 0; j < kWords / 4; ++j) {
          const uint4 q = reinterpret_cast<const uint4*>(sp)[j];
          w[4 * j] = q.x;
          w[4 * j + 1] = q.y;
          w[4 * j + 2] = q.z;
          w[4 * j + 3] = q.w;
        }
      } else {
#pragma unroll
        for (int j = 0; j < kWords; ++j) w[j] = reinterpret_cast<const uint32_t*>(sp)[j];
      }
    }
    if constexpr (kBulk) {
      // Order this lane's generic reads of the slot before the async-proxy refill of the stage,
      // and wait for every lane of the warp (a copy may fill other lanes' slots).
      fence_proxy_async_smem();
      __syncwarp();
      issue(s + stages);
    } else {
      __syncwarp();         // every lane has its unit in registers
      issue(s + g.stages);  // refill the stage just read
    }
    const int u = unit_of(s, p.ks, warp, p.lr_log2, my_k);
    if constexpr (g.x8) {
      constexpr int kXU = XUnitBytes<F>::value;
      const X8 xa{smem + u * kXU, (int64_t)p.units * kXU, g.unit_values};
      F::template dot<NB>(w, xa, tab, acc);
    } else if constexpr (kSmemX) {
      const XPlain xa{xs + u * (g.unit_values + 4), p.units * (g.unit_values + 4)};
      F::template dot<NB>(w, xa, xsum + u * (g.unit_values / 16 + 1),
                          p.units * (g.unit_values / 16 + 1), tab, acc);
    } else {
      const XGlobal xa{xg + (int64_t)u * g.unit_values, p.x_vec_stride};
      F::template dot<NB>(w, xa, nullptr, 0, tab, acc);
    }
  }
  if constexpr (!kBulk) cp_async_wait<0>();

    // Reduce over the LR lanes of a row (xor butterfly), then over the KS warps (warp order).
#pragma unroll
  for (int v = 0; v < NB; ++v)
    for (int off = lr >> 1; off > 0; off >>= 1) acc[v] += __shfl_xor_sync(0xffffffffu, acc[v], off);
  if (p.ks > 1) {
    // This warp's ring is idle now (all its copies were waited for and read).
    float* red = reinterpret_cast<float*>(ring);
#pragma unroll
    for (int v = 0; v < NB; ++v) red[v * 32 + lane] = acc[v];
    __syncthreads();
    if (warp != 0) return;
#pragma unroll
    for (int v = 0; v < NB; ++v) {
      float t = acc[v];
      for (int w2 = 1; w2 < p.ks; ++w2)
        t += reinterpret_cast<const float*>(smem + p.off_ring +
                                            w2 * (stages * kStageBytes))[v * 32 + lane];
      acc[v] = t;
    }
  }
  if (my_k == 0 && my_r < rows_here) {
#pragma unroll
    for (int v = 0; v < NB; ++v)
      y[v * p.y_vec_stride + my_r] = F::kDenormal ? acc[v] * kDenormOutScale : acc[v];
  }
}

// Persistent variant (bulk copies, one warp per row group, no k-split): the grid holds as many CTAs
// as are resident; warp gw of nw owns the logical CTAs [gw*L/nw, (gw+1)*L/nw) (L = groups * slots
// * mats, the non-persistent kernel's grid) and streams their steps through one continuous ring,
// so the copies of the next row group are in flight while this one is decoded. Each row group's
// sum is formed in the same order as by mv_fast_kernel with ks = 1: the results are identical.
// x in shared memory requires x shared by all slots (planner).
template <class F, int NB, bool kSmemX = F::kGeom.smem_x>
__global__ void __launch_bounds__(max_threads_for_nb(NB))
    mv_persist_kernel(const __grid_constant__ Params p) {
  constexpr FormatGeom g = F::kGeom;
  constexpr int kWords = g.unit_bytes / 4;
  constexpr int kStageBytes = 32 * g.slot_bytes;
  constexpr bool kContig = g.slot_bytes == g.unit_bytes;
  static_assert(F::kDenormal == (g.smem_x && !g.x8) && (kSmemX || !g.smem_x));

  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const uint64_t pol = l2_stream_policy(p.l2_evict_first);
  const int wpc = blockDim.x >> 5;
  pdl_trigger();
  if (p.ids) {
    stage_table<F>(p, smem);
    pdl_wait();  // item() reads the expert ids
  }
  const int lr = 1 << p.lr_log2;
  const int rpc = 32 >> p.lr_log2;
  const int my_k = lane & (lr - 1);
  const int my_r = lane >> p.lr_log2;
  const int stages = p.stages;
  const int row_bytes = (int)p.row_bytes;

  const int64_t L = (int64_t)p.groups * p.n_slots * p.n_mats;
  const int64_t nw = (int64_t)gridDim.x * wpc, gw = (int64_t)blockIdx.x * wpc + warp;
  const int it0 = (int)(gw * L / nw), it1 = (int)((gw + 1) * L / nw);
  const int total = (it1 - it0) * p.steps;

  unsigned char* ring = smem + p.off_ring + warp * (stages * kStageBytes);
  const uint32_t ring_s = smem_addr(ring);
  const uint32_t bar0 = smem_addr(smem + p.off_bar + warp * kBarBytesPerWarp);
  const bool copier = !kContig || my_k == 0;
  const uint32_t copy_bytes = kContig ? (uint32_t)(lr * g.unit_bytes) : (uint32_t)g.unit_bytes;

  struct Item {
    const uint8_t* w;
    float* y;
    const float* x;
    int rows_here;
    bool bad;
  };
  auto item = [&](int lc) {
    int b = lc;
    const int group = b % p.groups;
    b /= p.groups;
    const int slot = b % p.n_slots;
    const int mat = b / p.n_slots;
    const int row0 = group * rpc;
    Item it;
    it.rows_here = min(rpc, p.rows - row0);
    int64_t e = slot;
    if (p.ids) e = p.ids[slot];
    it.bad = p.n_expert > 0 && (e < 0 || e >= p.n_expert);
    if (it.bad || p.expert_bytes == 0) e = 0;  // bad ids: read expert 0, write NaN
    it.w = p.w[mat] + e * p.expert_bytes + (int64_t)row0 * p.row_bytes;
    it.y = p.y + mat * p.y_mat_stride + slot * p.y_slot_stride + row0;
    it.x = p.x + slot * p.x_slot_stride;
    return it;
  };

  int pq = 0, p_item = it0, p_step = 0;
  const uint8_t* p_src = nullptr;
  auto issue_next = [&]() {
    if (pq < total) {
      if (p_step == 0) {
        const Item it = item(p_item);
        p_src = it.w + (int64_t)min(my_r, it.rows_here - 1) * row_bytes +
                (kContig ? 0 : my_k) * g.unit_bytes;
      }
      const int j = pq & (stages - 1);
      const uint32_t bar = bar0 + 8 * j;
      if (lane == 0) mbar_arrive_expect_tx(bar, (uint32_t)(32 * g.unit_bytes));
      if (copier)
        bulk_copy_g2s(ring_s + j * kStageBytes + lane * g.slot_bytes,
                      p_src + (int64_t)unit_of(p_step, 1, 0, p.lr_log2, 0) * g.unit_bytes,
                      copy_bytes, bar, pol);
      if (++p_step == p.steps) {
        p_step = 0;
        ++p_item;
      }
    }
    ++pq;
  };

  if (lane == 0) {
    for (int j = 0; j < stages; ++j) mbar_init(bar0 + 8 * j, 1);
    fence_mbar_init();
  }
  __syncwarp();
  for (int s = 0; s < stages; ++s) issue_next();

  if (!p.ids) stage_table<F>(p, smem);
  pdl_wait();  // x and y belong to the predecessors from here on
  stage_x<F, NB, kSmemX>(p, p.x, smem);
  if constexpr (kSmemX || g.table_bytes > 0) __syncthreads();
  const float* xs = reinterpret_cast<const float*>(smem);
  const float* xsum = reinterpret_cast<const float*>(smem + p.off_xsum);
  const uint32_t* tab = reinterpret_cast<const uint32_t*>(smem + p.off_tab);

  float acc[NB];
#pragma unroll
  for (int v = 0; v < NB; ++v) acc[v] = 0.0f;
  int c_item = it0, c_step = 0;
  Item ci{};
  if (total > 0) ci = item(it0);

  for (int q = 0; q < total; ++q) {
    mbar_wait_parity(bar0 + 8 * (q & (stages - 1)), (uint32_t)(q >> p.stages_log2) & 1u);
    uint32_t w[kWords];
    {
      const unsigned char* sp = ring + (q & (stages - 1)) * kStageBytes + lane * g.slot_bytes;
      if constexpr (g.copy_bytes == 16) {
#pragma unroll
        for (int j = 0; j < kWords / 4; ++j) {
          const uint4 v4 = reinterpret_cast<const uint4*>(sp)[j];
          w[4 * j] = v4.x;
          w[4 * j + 1] = v4.y;
          w[4 * j + 2] = v4.z;
          w[4 * j + 3] = v4.w;
        }
      } else {
#pragma unroll
        for (int j = 0; j < kWords; ++j) w[j] = reinterpret_cast<const uint32_t*>(sp)[j];
      }
    }
    fence_proxy_async_smem();
    __syncwarp();
    issue_next();
    const int u = unit_of(c_step, 1, 0, p.lr_log2, my_k);
    if constexpr (g.x8) {
      constexpr int kXU = XUnitBytes<F>::value;
      const X8 xa{smem + u * kXU, (int64_t)p.units * kXU, g.unit_values};
      F::template dot<NB>(w, xa, tab, acc);
    } else if constexpr (kSmemX) {
      const XPlain xa{xs + u * (g.unit_values + 4), p.units * (g.unit_values + 4)};
      F::template dot<NB>(w, xa, xsum + u * (g.unit_values / 16 + 1),
                          p.units * (g.unit_values / 16 + 1), tab, acc);
    } else {
      const XGlobal xa{ci.x + (int64_t)u * g.unit_values, p.x_vec_stride};
      F::template dot<NB>(w, xa, nullptr, 0, tab, acc);
    }
    if (++c_step == p.steps) {
#pragma unroll
      for (int v = 0; v < NB; ++v)
        for (int off = lr >> 1; off > 0; off >>= 1)
          acc[v] += __shfl_xor_sync(0xffffffffu, acc[v], off);
      if (my_k == 0 && my_r < ci.rows_here) {
#pragma unroll
        for (int v = 0; v < NB; ++v)
          ci.y[v * p.y_vec_stride + my_r] =
              ci.bad ? __int_as_float(0x7fc00000)
                     : (F::kDenormal ? acc[v] * kDenormOutScale : acc[v]);
      }
#pragma unroll
      for (int v = 0; v < NB; ++v) acc[v] = 0.0f;
      c_step = 0;
      if (++c_item < it1) ci = item(c_item);
    }
  }
}

}  // namespace dsv4::cuda::mv
