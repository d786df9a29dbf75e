// Grouped routed-expert GEMMs with in-kernel weight decoding (gemm_experts.h): the tile list, the
// dispatch, and the mma.sync kernel (any GPU from sm_80; on sm_90a builds gemm_experts_wgmma.cu
// takes over unless DSV4_EXPERT_GEMM=mma).
//
// CTA tile: 128 weight rows x 128 pair rows (half of a list tile), K in steps of 64, m16n8k16 bf16
// MMAs with f32 accumulators, two layouts (ExpertGemmShape): 8 warps as 2 x 4 tiles of 64 x 32 (two
// threads decode 32 values each of a weight row per K step; 128 registers, 16 warps per SM) or 4
// warps as 2 x 2 tiles of 64 x 64 (one thread decodes all 64 values; fewer ldmatrix bytes per MMA,
// but 255 registers and 8 warps per SM). Every K step decodes its weights into shared memory and
// copies x with cp.async. Two buffers: the raw weight bytes and the x copies of step k + 1 are in
// flight while step k multiplies, and step k + 1's decoding sits in the MMA block (no branch) so
// the scheduler interleaves the two; one barrier per step. Two CTAs per SM. Warps whose pairs lie
// past the tile's row count skip the MMAs (an expert's last tile). Every output element sums its
// K products in the same order in both layouts: the results are bitwise equal.
//
// Gate/up mode: tile row i holds gate row f0 + 8 (i / 16) + i % 8 for i % 16 < 8, else the up
// row of that f, so an m16 fragment's c0/c1 (rows g) and c2/c3 (rows g + 8) are the gate and up
// values of one (pair, f): the SwiGLU runs in registers and h is written in bf16.
#include <cuda_bf16.h>

#include <cstdlib>
#include <string_view>

#include "cuda/cp_async.cuh"
#include "cuda/cuda_check.h"
#include "cuda/fwd_common.cuh"
#include "cuda/gemm_experts.h"
#include "cuda/gemm_experts_dec.cuh"
#include "cuda/gemm_experts_impl.h"
#include "cuda/mma_bf16.cuh"
#include "cuda/pdl.cuh"

namespace dsv4::cuda::gemm {
namespace {

// BN: pairs per CTA; a tile of the list (up to kExpertTileRows pairs) is split over
// kExpertTileRows / BN CTAs.
constexpr int BM = 128, BN = 128, BK = 64, LDS = BK + 8, kSplit = kExpertTileRows / BN;
using namespace xdec;

struct Smem {
  bf16 a[2][BM][LDS];  // decoded weights [row][k]; 144-byte rows: conflict-free ldmatrix
  bf16 b[2][BN][LDS];  // x [pair][k]
  uint64_t grid[256];  // IQ2_XXS grid
};

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  mma::ldsm_x4(mma::smem_u32(p), r);
}
using mma::mma_bf16;

using Args = ExpertArgs;

// R threads per decoded weight row (1 or 2): 128 R threads, 4 R warps as 2 (weight rows) x 2 R
// (pairs) of 64 x 64 / R tiles.
template <template <int> class DecT, bool kSwiglu, int R>
__global__ void __launch_bounds__(128 * R, 2) expert_gemm_kernel(Args p) {
  constexpr int kThreads = 128 * R, V = BK / R, WN = 64 / R, NJ = WN / 16;
  using Dec = DecT<V>;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_raw);
  const int tid = (int)threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int i = tid; i < 256; i += kThreads) sm.grid[i] = mv::g_grid64.v[i];  // constant data
  pdl_wait();
  // CTA y takes part y % kSplit of tile y / kSplit; the whole CTA returns before any barrier.
  if ((int)blockIdx.y / kSplit >= *p.n_tiles) return;
  const int4 tile = p.tiles[blockIdx.y / kSplit];
  const int part = (int)blockIdx.y % kSplit, e = tile.x, r0 = tile.y + BN * part;
  const int cnt = min(tile.z - BN * part, BN);
  if (cnt <= 0) return;

  // This thread decodes values (tid % R) V .. + V - 1 of tile row i = tid / R in each K step.
  // Rows past the matrix
  // decode its first row (valid memory) and store zeros: no branch, so the decoding of step k + 1
  // and the MMAs of step k share one basic block and interleave.
  const int i = tid / R, kofs = (tid % R) * V;
  bool valid;
  const uint8_t* wrow = expert_tile_row<kSwiglu, BM>(p, e, i, valid);
  const uint32_t mask = valid ? 0xFFFFFFFFu : 0u;
  Dec dec;
  auto load_x = [&](int kt, int buf) {
#pragma unroll
    for (int j = 0; j < BN * BK / 8 / kThreads; ++j) {
      const int c = tid + kThreads * j, row = c >> 3, col = (c & 7) * 8;
      const bf16* src = p.x + (int64_t)(r0 + (row < cnt ? row : 0)) * p.K + kt * BK + col;
      cp_async16_zfill(&sm.b[buf][row][col], src, row < cnt ? 16 : 0);
    }
    cp_async_commit();
  };
  auto decode = [&](int buf) {
    bf16* dst = &sm.a[buf][i][kofs];
    dec.store([&](int off, uint4 u) { *reinterpret_cast<uint4*>(dst + off) = u; }, sm.grid, mask);
  };

  const int nk = p.K / BK;
  dec.load(wrow, kofs);
  load_x(0, 0);
  __syncthreads();  // the grid table
  decode(0);
  cp_async_wait_all();
  __syncthreads();

  const int wm = warp & 1, wn = warp >> 1;
  const bool active = wn * WN < cnt;
  float acc[4][2 * NJ][4];
#pragma unroll
  for (int a = 0; a < 4; ++a)
#pragma unroll
    for (int b = 0; b < 2 * NJ; ++b)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[a][b][c] = 0.0f;

  auto mma_step = [&](int cur) {
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) {
      uint32_t af[4][4];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
        ldsm_x4(af[mi], &sm.a[cur][wm * 64 + mi * 16 + (lane & 7) + ((lane >> 3) & 1) * 8]
                             [ks * 16 + (lane >> 4) * 8]);
#pragma unroll
      for (int nj = 0; nj < NJ; ++nj) {
        uint32_t r[4];
        ldsm_x4(r, &sm.b[cur][wn * WN + nj * 16 + (lane & 7) + (lane >> 4) * 8]
                        [ks * 16 + ((lane >> 3) & 1) * 8]);
#pragma unroll
        for (int mi = 0; mi < 4; ++mi) {
          mma_bf16(acc[mi][2 * nj], af[mi], r[0], r[1]);
          mma_bf16(acc[mi][2 * nj + 1], af[mi], r[2], r[3]);
        }
      }
    }
  };

  for (int kt = 0; kt < nk; ++kt) {
    const int cur = kt & 1;
    if (kt + 1 < nk) {
      load_x(kt + 1, cur ^ 1);
      dec.load(wrow, (kt + 1) * BK + kofs);
      if (active) mma_step(cur);
      decode(cur ^ 1);
      cp_async_wait_all();
    } else if (active) {
      mma_step(cur);
    }
    __syncthreads();
  }
  if (!active) return;

  const int g = lane >> 2, t2 = (lane & 3) * 2;
#pragma unroll
  for (int mi = 0; mi < 4; ++mi)
#pragma unroll
    for (int ni = 0; ni < 2 * NJ; ++ni)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int tok = wn * WN + ni * 8 + t2 + c;
        if (tok >= cnt) continue;
        const int64_t r = r0 + tok;
        if constexpr (kSwiglu) {
          const int f = (int)blockIdx.x * (BM / 2) + (wm * 4 + mi) * 8 + g;
          if (f >= p.rows) continue;
          const float v = fwd::swiglu_f(acc[mi][ni][c], acc[mi][ni][2 + c], p.clamp);
          p.h[r * p.rows + f] = __float2bfloat16_rn(p.row_w ? p.row_w[r] * v : v);
        } else {
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            const int m = (int)blockIdx.x * BM + wm * 64 + mi * 16 + g + 8 * hh;
            if (m < p.rows) p.y[r * p.rows + m] = acc[mi][ni][2 * hh + c];
          }
        }
      }
}

__device__ int lower_bound_i32(const int32_t* v, int n, int key) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (v[mid] < key)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// One block: each expert's row range by binary search over the sorted ids, tile offsets by a
// serial prefix sum over the experts (E is small), then the tiles.
__global__ void expert_tiles_kernel(const int32_t* se, int pairs, int E, int4* tiles,
                                    int32_t* count, int cap) {
  extern __shared__ int off[];  // [E + 1]
  pdl_wait();
  for (int e = (int)threadIdx.x; e < E; e += (int)blockDim.x) {
    const int lo = lower_bound_i32(se, pairs, e), hi = lower_bound_i32(se, pairs, e + 1);
    off[e] = (hi - lo + kExpertTileRows - 1) / kExpertTileRows;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int acc = 0;
    for (int e = 0; e < E; ++e) {
      const int t = off[e];
      off[e] = acc;
      acc += t;
    }
    *count = acc < cap ? acc : cap;
  }
  __syncthreads();
  for (int e = (int)threadIdx.x; e < E; e += (int)blockDim.x) {
    const int lo = lower_bound_i32(se, pairs, e), hi = lower_bound_i32(se, pairs, e + 1);
    for (int r = lo, ti = off[e]; r < hi && ti < cap; r += kExpertTileRows, ++ti)
      tiles[ti] = make_int4(e, r, hi - r < kExpertTileRows ? hi - r : kExpertTileRows, 0);
  }
}

template <template <int> class Dec, bool kSwiglu, int R>
void launch(const Args& a, unsigned mtiles, int cap, cudaStream_t s) {
  auto* k = expert_gemm_kernel<Dec, kSwiglu, R>;
  static const bool attr = [&] {
    DSV4_CUDA_CHECK(
        cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, sizeof(Smem)));
    return true;
  }();
  (void)attr;
  launch_k(k, dim3(mtiles, (unsigned)(cap * kSplit)), dim3(128 * R), sizeof(Smem), s, a);
  DSV4_CUDA_CHECK_LAUNCH("expert_gemm_kernel");
}

template <template <int> class Dec>
void launch_mode(const Args& a, unsigned mtiles, int cap, int R, cudaStream_t s) {
  if (a.w1) {
    if (R == 2)
      launch<Dec, true, 2>(a, mtiles, cap, s);
    else
      launch<Dec, true, 1>(a, mtiles, cap, s);
  } else {
    if (R == 2)
      launch<Dec, false, 2>(a, mtiles, cap, s);
    else
      launch<Dec, false, 1>(a, mtiles, cap, s);
  }
}

// The format's fast decoder when the tensor and its strides are aligned for its loads, else the
// value-by-value one.
template <template <int> class Fast, uint32_t T>
void launch_type(const Args& a, unsigned mtiles, int cap, int R, cudaStream_t s) {
  const uint64_t bits = (uint64_t)(uintptr_t)a.w0 | (uint64_t)(uintptr_t)a.w1 |
                        (uint64_t)a.expert_bytes | (uint64_t)a.row_bytes;
  if (bits % Fast<32>::kAlign == 0 && bits % Fast<64>::kAlign == 0)
    launch_mode<Fast>(a, mtiles, cap, R, s);
  else
    launch_mode<Generic<T>::template Dec>(a, mtiles, cap, R, s);
}

}  // namespace

void expert_tiles(const int32_t* sorted_expert, int pairs, int E, const ExpertTiles& t,
                  cudaStream_t s) {
  if (E <= 0 || E > 8192) throw_invalid_argument("expert_tiles: E must be 1..8192");
  if (pairs < 0 || t.capacity < expert_tile_capacity(pairs, E))
    throw_invalid_argument("expert_tiles: tile list too small");
  launch_k(expert_tiles_kernel, dim3(1), dim3(1024), sizeof(int) * (size_t)(E + 1), s,
           sorted_expert, pairs, E, t.tiles, t.count, t.capacity);
  DSV4_CUDA_CHECK_LAUNCH("expert_tiles_kernel");
}

bool expert_gemm_supported(uint32_t type, int64_t K) {
  if (K <= 0 || K % BK != 0 || K > (1 << 20)) return false;
  switch ((GgmlType)type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
      return true;
    case GgmlType::Q2_K:
    case GgmlType::Q4_K:
    case GgmlType::IQ2_XXS:
      return K % 256 == 0;
    default:
      return false;
  }
}

void expert_gemm(uint32_t type, const void* w0, const void* w1, int64_t expert_bytes,
                 int64_t row_bytes, int64_t rows, int64_t K, const bf16* x, const ExpertTiles& t,
                 const float* row_w, float clamp, bf16* h, float* y, cudaStream_t s,
                 ExpertGemmShape shape) {
  if (!expert_gemm_supported(type, K))
    throw_invalid_argument("expert_gemm: unsupported weight type or column count");
  if (rows <= 0 || rows > (1 << 24) || (w1 ? h == nullptr : y == nullptr))
    throw_invalid_argument("expert_gemm: bad rows or missing output");
  if (t.capacity <= 0) return;
  if (t.capacity > 65535 / kSplit) throw_invalid_argument("expert_gemm: more than 32767 tiles");
  Args a{static_cast<const uint8_t*>(w0),
         static_cast<const uint8_t*>(w1),
         expert_bytes,
         row_bytes,
         (int)rows,
         (int)K,
         x,
         t.tiles,
         t.count,
         row_w,
         clamp,
         h,
         y};
  const int per_tile = w1 ? BM / 2 : BM;
  const unsigned mtiles = (unsigned)((rows + per_tile - 1) / per_tile);
  const int cap = t.capacity;
  if (shape == ExpertGemmShape::kAuto) {
    // wgmma where the build and the device have it, unless DSV4_EXPERT_GEMM=mma; then the
    // mma.sync layout of DSV4_EXPERT_WARPS (4 or 8).
    static const ExpertGemmShape env = [] {
      const char* g = std::getenv("DSV4_EXPERT_GEMM");
      if (!(g && std::string_view(g) == "mma") && expert_wgmma_available())
        return ExpertGemmShape::kWgmma;
      const char* e = std::getenv("DSV4_EXPERT_WARPS");
      return e && std::atoi(e) == 4 ? ExpertGemmShape::kWarps4 : ExpertGemmShape::kWarps8;
    }();
    shape = env;
  }
  if (shape == ExpertGemmShape::kWgmma) {
    if (!expert_wgmma_available())
      throw_invalid_argument("expert_gemm: no wgmma kernels in this build or on this device");
    return expert_gemm_wgmma(type, a, cap, s);
  }
  const int R = shape == ExpertGemmShape::kWarps4 ? 1 : 2;
  switch ((GgmlType)type) {
    case GgmlType::IQ2_XXS:
      return launch_type<DecIq2xxs, mv::T_IQ2_XXS>(a, mtiles, cap, R, s);
    case GgmlType::Q2_K:
      return launch_type<DecQ2K, mv::T_Q2_K>(a, mtiles, cap, R, s);
    case GgmlType::Q4_K:
      return launch_type<DecQ4K, mv::T_Q4_K>(a, mtiles, cap, R, s);
    case GgmlType::F32:
      return launch_mode<Generic<mv::T_F32>::template Dec>(a, mtiles, cap, R, s);
    case GgmlType::F16:
      return launch_mode<Generic<mv::T_F16>::template Dec>(a, mtiles, cap, R, s);
    case GgmlType::BF16:
      return launch_mode<Generic<mv::T_BF16>::template Dec>(a, mtiles, cap, R, s);
    case GgmlType::Q8_0:
      return launch_mode<Generic<mv::T_Q8_0>::template Dec>(a, mtiles, cap, R, s);
    default:
      throw_invalid_argument("expert_gemm: unsupported weight type");
  }
}

}  // namespace dsv4::cuda::gemm
