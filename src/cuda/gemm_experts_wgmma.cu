// Grouped routed-expert GEMM on Hopper's warpgroup MMA (wgmma, sm_90a): the fast path of
// gemm::expert_gemm (gemm_experts.h); gemm_experts.cu keeps the mma.sync kernel for other GPUs.
//
// CTA tile: 128 weight rows x one whole tile of the list (up to kExpertTileRows = 256 pairs, so
// an expert's weights are decoded once per 128 rows, not once per 128 pairs), K in steps of 64.
// Two warpgroups; warpgroup w owns weight rows 64 w .. 64 w + 63 and all the tile's pairs:
// m64nNk16 wgmmas with N = 64, 128, 192 or 256 (the smallest that covers the tile's pairs), the
// f32 accumulators in registers (up to 128 per thread). Why this pays over mma.sync: the MMAs
// issue as 4 instructions per warpgroup and K step and run asynchronously, so the same threads
// decode the next step's weights (the in-kernel dequantization that dominated the mma.sync
// kernel's issue slots) while the tensor cores multiply this one.
//
// Pipeline, four shared-memory stages of (decoded weights [128][64], x [256][64]), both bf16 in
// the 128B-swizzled K-major layout of wgmma.cuh. Step k: issue the wgmmas of stage k % 4; start
// the cp.async copy of step k + 2's x (two steps of latency cover; a three-stage version that
// waited for x issued in the same step was 7 % slower); decode step k + 1's
// weights (raw bytes loaded one step earlier, their blocks prefetched into L2 a block earlier)
// into stage (k + 1) % 4 and load step k + 2's raw bytes; wait until only step k's wgmmas run
// (step k - 1's stage takes step k + 3's x next); one barrier. The tensor cores always have the
// next step queued behind the running one.
//
// Measured (H200, ncu, one layer of an 8K q2 prefill chunk): gate+up 5.76 ms (mma.sync kernel
// 8.81), down 2.57 ms (4.42); results bitwise equal to the mma.sync kernel's. Still far from the
// tensor cores' floor (~2 ms + 1 ms): each warp issues ~370 instructions per K step (decoding is
// now the smaller part: the x copies, descriptors, waits and the barrier make up the rest) at ~7
// cycles each with only 2 warps per scheduler (1 CTA of 8 warps per SM: 128 accumulators per
// thread). Producer warps that only decode, beside consumer warpgroups that only copy x and
// issue wgmmas, would be the next step.
//
// Gate/up mode: tile row i holds gate row f0 + 8 (i / 16) + i % 8 for i % 16 < 8, else the up row
// of that f (as in the mma.sync kernel), so a thread's accumulators d[4j], d[4j + 1] (row g) and
// d[4j + 2], d[4j + 3] (row g + 8) are the gate and up values of one (pair, f).
#include <cuda_bf16.h>

#include "cuda/cuda_check.h"
#include "cuda/fwd_common.cuh"
#include "cuda/gemm_experts.h"
#include "cuda/gemm_experts_dec.cuh"
#include "cuda/gemm_experts_impl.h"
#include "cuda/mma_bf16.cuh"
#include "cuda/pdl.cuh"
#include "cuda/wgmma.cuh"

namespace dsv4::cuda::gemm {
namespace {

constexpr int BM = 128, BN = kExpertTileRows, BK = 64, kStages = 4, kThreads = 256;
constexpr int kBytesA = BM * BK * 2, kBytesB = BN * BK * 2;

struct WSmem {  // at a 1024-byte boundary (the swizzle atoms)
  uint8_t a[kStages][kBytesA];
  uint8_t b[kStages][kBytesB];
  uint64_t tab[512];  // the decoder's tables: the IQ2_XXS grid, or xdec::lut::Tables
};
constexpr size_t kSmemBytes = sizeof(WSmem) + 1024;  // + the alignment slack

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// No memory clobber: the copy lands asynchronously anyway; the wait_group and the barrier after
// it (both clobber memory) order it against the readers.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most one of this thread's cp.async groups is still in flight.
__device__ __forceinline__ void cp_async_wait_1() {
  asm volatile("cp.async.wait_group 1;\n" ::: "memory");
}
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// The four k16 slices of one K step: A rows of this warpgroup at `a`, the pairs at `b`.
template <int N>
// `a`, `b`: descriptors of the stage; a k16 slice is 32 bytes further, 2 in the address field
// (shared addresses < 256 KB: the 14-bit field never carries).
__device__ __forceinline__ void mma_step(float (&acc)[128], uint64_t a, uint64_t b) {
#pragma unroll
  for (int ks = 0; ks < BK / 16; ++ks) wgmma::mma_bf16<N>(acc, a + 2 * ks, b + 2 * ks);
}
#endif

template <template <int> class DecT, bool kSwiglu>
__global__ void __launch_bounds__(kThreads, 1) expert_wgmma_kernel(ExpertArgs p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Dec = DecT<BK / 2>;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  const uint32_t raw_s = mma::smem_u32(smem_raw);
  WSmem& sm = *reinterpret_cast<WSmem*>(smem_raw + ((1024 - (raw_s & 1023)) & 1023));
  const int tid = (int)threadIdx.x, wg = tid >> 7;
  if constexpr (Dec::kLut)  // constant data
    Dec::fill_tables(sm.tab, tid, kThreads);
  else
    for (int i = tid; i < 256; i += kThreads) sm.tab[i] = mv::g_grid64.v[i];
  pdl_wait();
  if ((int)blockIdx.y >= *p.n_tiles) return;  // the whole CTA: no barrier crossed yet
  const int4 tile = p.tiles[blockIdx.y];
  const int e = tile.x, r0 = tile.y, cnt = tile.z;
  const int nsel = cnt <= 64 ? 64 : cnt <= 128 ? 128 : cnt <= 192 ? 192 : 256;
  const int nk = p.K / BK;

  // This thread decodes values kofs .. kofs + 31 of tile row i in each K step (two threads per
  // row; rows 64 w .. 64 w + 63 by warpgroup w). Rows past the matrix decode its first row (valid
  // memory) and store zeros.
  const int i = tid >> 1, kofs = (tid & 1) * (BK / 2);
  bool valid;
  const uint8_t* wrow = expert_tile_row<kSwiglu, BM>(p, e, i, valid);
  const uint32_t mask = valid ? 0xFFFFFFFFu : 0u;
  Dec dec;
  auto decode = [&](int st) {
    uint8_t* a = sm.a[st];
    dec.store([&](int off,
                  uint4 u) { *reinterpret_cast<uint4*>(a + wgmma::swz_offset(i, kofs + off)) = u; },
              sm.tab, mask);
  };
  // x rows of step kt: the tile's pairs, zeros for pairs past cnt up to the wgmma's N. This
  // thread copies chunk tid % 8 of rows tid / 8 + 32 j: its swizzled position depends only on
  // the row % 8, so one shared offset and one source pointer serve every j and step.
  const int xrow = tid >> 3, xch = tid & 7;
  const uint32_t xdst = mma::smem_u32(sm.b[0]) + wgmma::swz_offset(xrow, 8 * xch);
  const bf16* xsrc = p.x + (int64_t)(r0 + xrow) * p.K + 8 * xch;
  const bf16* xzero = p.x + (int64_t)r0 * p.K + 8 * xch;  // a valid address for zero fills
  const int64_t xstride = (int64_t)32 * p.K;
  auto load_x = [&](int kt, int st) {  // one cp.async group
#pragma unroll
    for (int j = 0; j < BN / 32; ++j) {
      const int row = xrow + 32 * j;
      if (row < nsel) {
        const bool ok = row < cnt;
        cp_async16(xdst + st * kBytesB + 4096 * j, (ok ? xsrc + j * xstride : xzero) + kt * BK,
                   ok ? 16 : 0);
      }
    }
    cp_async_commit();
  };
  const uint32_t a_s = mma::smem_u32(sm.a[0]) + wg * (64 * 128), b_s = mma::smem_u32(sm.b[0]);
  const uint64_t da = wgmma::desc_k128(a_s), db = wgmma::desc_k128(b_s);
  float acc[128];
#pragma unroll
  for (int r = 0; r < 128; ++r) acc[r] = 0.0f;
  auto mma = [&](int st) {
#pragma unroll
    for (int r = 0; r < 128; ++r) wgmma::fence_operand(acc[r]);
    wgmma::fence();
    const uint64_t a = da + (st * kBytesA >> 4), b = db + (st * kBytesB >> 4);
    switch (nsel) {
      case 64:
        mma_step<64>(acc, a, b);
        break;
      case 128:
        mma_step<128>(acc, a, b);
        break;
      case 192:
        mma_step<192>(acc, a, b);
        break;
      default:
        mma_step<256>(acc, a, b);
    }
    wgmma::commit();
#pragma unroll
    for (int r = 0; r < 128; ++r) wgmma::fence_operand(acc[r]);
  };

  // Weight blocks (kBlock bytes per 256 values: four K steps) are prefetched into L2 a block
  // ahead; the two threads of a row take its first and last byte.
  auto prefetch_w = [&](int kt) {
    if constexpr (Dec::kBlock > 0)
      if ((kt & 3) == 0 && kt + 4 < nk)
        prefetch_l2(wrow + (int64_t)Dec::kBlock * ((kt >> 2) + 1) + (kofs ? Dec::kBlock - 1 : 0));
  };
  load_x(0, 0);
  dec.load(wrow, kofs);
  if (nk > 1)
    load_x(1, 1);
  else
    cp_async_commit();
  __syncthreads();  // the decoder's tables
  decode(0);
  if (nk > 1) dec.load(wrow, BK + kofs);
  cp_async_wait_1();
  wgmma::fence_proxy_async();
  __syncthreads();
  for (int kt = 0; kt < nk; ++kt) {
    const int st = kt & (kStages - 1);
    mma(st);
    if (kt + 2 < nk)
      load_x(kt + 2, (kt + 2) & (kStages - 1));  // its stage was read by step kt - 2: done
    else
      cp_async_commit();  // an empty group keeps the wait_group count
    prefetch_w(kt);
    if (kt + 1 < nk) {
      decode((kt + 1) & (kStages - 1));
      if (kt + 2 < nk) dec.load(wrow, (kt + 2) * BK + kofs);
      cp_async_wait_1();  // x of step kt + 1 has landed (step kt + 2's may still fly)
      wgmma::fence_proxy_async();
    }
    wgmma::wait<1>();  // step kt - 1 done: its stage takes step kt + 3's x next
    __syncthreads();
  }
  wgmma::wait<0>();
#pragma unroll
  for (int r = 0; r < 128; ++r) wgmma::fence_operand(acc[r]);

  const int warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t2 = (lane & 3) * 2;
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
    if (8 * j >= cnt) break;
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int tok = 8 * j + t2 + c;
      if (tok >= cnt) continue;
      const int64_t r = r0 + tok;
      if constexpr (kSwiglu) {
        const int f = (int)blockIdx.x * (BM / 2) + 8 * (4 * wg + warp) + g;
        if (f >= p.rows) continue;
        const float v = fwd::swiglu_f(acc[4 * j + c], acc[4 * j + 2 + c], p.clamp);
        p.h[r * p.rows + f] = __float2bfloat16_rn(p.row_w ? p.row_w[r] * v : v);
      } else {
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int m = (int)blockIdx.x * BM + 64 * wg + 16 * warp + g + 8 * hh;
          if (m < p.rows) p.y[r * p.rows + m] = acc[4 * j + 2 * hh + c];
        }
      }
    }
  }
#else
  (void)p;
#endif
}

template <template <int> class Dec, bool kSwiglu>
void launch(const ExpertArgs& a, int cap, cudaStream_t s) {
  auto* k = expert_wgmma_kernel<Dec, kSwiglu>;
  static const bool attr = [&] {
    DSV4_CUDA_CHECK(
        cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kSmemBytes));
    return true;
  }();
  (void)attr;
  const int per_tile = a.w1 ? BM / 2 : BM;
  const unsigned mtiles = (unsigned)((a.rows + per_tile - 1) / per_tile);
  launch_k(k, dim3(mtiles, (unsigned)cap), dim3(kThreads), kSmemBytes, s, a);
  DSV4_CUDA_CHECK_LAUNCH("expert_wgmma_kernel");
}

template <template <int> class Dec>
void launch_mode(const ExpertArgs& a, int cap, cudaStream_t s) {
  if (a.w1)
    launch<Dec, true>(a, cap, s);
  else
    launch<Dec, false>(a, cap, s);
}

// The format's fast decoder when the tensor and its strides are aligned for its loads, else the
// value-by-value one.
template <template <int> class Fast, uint32_t T>
void launch_type(const ExpertArgs& a, int cap, cudaStream_t s) {
  const uint64_t bits = (uint64_t)(uintptr_t)a.w0 | (uint64_t)(uintptr_t)a.w1 |
                        (uint64_t)a.expert_bytes | (uint64_t)a.row_bytes;
  if (bits % Fast<BK / 2>::kAlign == 0)
    launch_mode<Fast>(a, cap, s);
  else
    launch_mode<xdec::Generic<T>::template Dec>(a, cap, s);
}

}  // namespace

bool expert_wgmma_available() {
#if defined(DSV4_CUDA_SM90A)
  static const bool ok = [] {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
      return false;
    return major == 9 && minor == 0;
  }();
  return ok;
#else
  return false;
#endif
}

void expert_gemm_wgmma(uint32_t type, const ExpertArgs& a, int cap, cudaStream_t s) {
  using namespace xdec;
  switch ((GgmlType)type) {
    case GgmlType::IQ2_XXS:
      return launch_type<DecIq2xxsLut, mv::T_IQ2_XXS>(a, cap, s);
    case GgmlType::Q2_K:
      return launch_type<DecQ2KLut, mv::T_Q2_K>(a, cap, s);
    case GgmlType::Q4_K:
      return launch_type<DecQ4K, mv::T_Q4_K>(a, cap, s);
    case GgmlType::F32:
      return launch_mode<Generic<mv::T_F32>::template Dec>(a, cap, s);
    case GgmlType::F16:
      return launch_mode<Generic<mv::T_F16>::template Dec>(a, cap, s);
    case GgmlType::BF16:
      return launch_mode<Generic<mv::T_BF16>::template Dec>(a, cap, s);
    case GgmlType::Q8_0:
      return launch_mode<Generic<mv::T_Q8_0>::template Dec>(a, cap, s);
    default:
      throw_invalid_argument("expert_gemm: unsupported weight type");
  }
}

}  // namespace dsv4::cuda::gemm
