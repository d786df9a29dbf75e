// Grouped routed-expert GEMMs with in-kernel weight decoding (gemm_experts.h).
//
// CTA tile: 128 weight rows x 128 pair rows, K in steps of 64, m16n8k16 bf16 MMAs with f32
// accumulators, two layouts (ExpertGemmShape): 8 warps as 2 x 4 tiles of 64 x 32 (two threads
// decode 32 values each of a weight row per K step; 128 registers, 16 warps per SM) or 4 warps as
// 2 x 2 tiles of 64 x 64 (one thread decodes all 64 values; fewer ldmatrix bytes per MMA, but
// 255 registers and 8 warps per SM). Every K step decodes its weights into shared memory and
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

#include "cuda/block_decode.cuh"
#include "cuda/cuda_check.h"
#include "cuda/fwd_common.cuh"
#include "cuda/gemm_experts.h"
#include "cuda/mma_bf16.cuh"
#include "cuda/pdl.cuh"

namespace dsv4::cuda::gemm {
namespace {

constexpr int BM = 128, BN = kExpertTileRows, BK = 64, LDS = BK + 8;

struct Smem {
  bf16 a[2][BM][LDS];  // decoded weights [row][k]; 144-byte rows: conflict-free ldmatrix
  bf16 b[2][BN][LDS];  // x [pair][k]
  uint64_t grid[256];  // IQ2_XXS grid
};

// Eight values to bf16, ANDed with `mask` (0: zeros for weight rows past the matrix).
__device__ __forceinline__ void store8(bf16* out, const float (&v)[8], uint32_t mask) {
  __nv_bfloat162 p[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) p[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  uint4 u = *reinterpret_cast<const uint4*>(p);
  u.x &= mask;
  u.y &= mask;
  u.z &= mask;
  u.w &= mask;
  *reinterpret_cast<uint4*>(out) = u;
}

__device__ __forceinline__ uint32_t ldg16(const uint8_t* p) {
  return __ldg(reinterpret_cast<const unsigned short*>(p));
}
__device__ __forceinline__ uint32_t ldg32(const uint8_t* p) {
  return __ldg(reinterpret_cast<const unsigned int*>(p));
}

// Exact float of a small unsigned integer (< 2^23) without the conversion unit (I2F issues at a
// quarter of the FP32 rate): 2^23 + b is a float with mantissa b, minus 2^23 is exact.
__device__ __forceinline__ float small_u2f(uint32_t b) {
  return __fsub_rn(__uint_as_float(0x4B000000u | b), 8388608.0f);
}
// The same for byte j (0..3) of x: one byte permute builds 2^23 + byte.
__device__ __forceinline__ float byte_u2f(uint32_t x, int j) {
  return __fsub_rn(__uint_as_float(__byte_perm(x, 0x4B000000u, 0x7440 | j)), 8388608.0f);
}

// Decoders of N = 32 or 64 consecutive values (k % N == 0, inside one 256-value block) of one
// row: load() issues the global reads, store() decodes into N bf16 (16-byte aligned) with the f32
// operations of gemm.cu's dequantizers (the same products and differences of exact integers, so
// the same bits). `kAlign` (fast decoders): the byte alignment load() needs of the tensor, row
// and expert strides.
template <int N>
struct DecIq2xxs {
  static constexpr int kAlign = 2, kG = N / 32;  // groups of 32 sharing a scale
  uint32_t d, A[kG], B[kG];
  __device__ void load(const uint8_t* row, int k) {
    const uint8_t* b = row + 66 * (k >> 8);
    const uint8_t* q = b + 2 + 8 * ((k & 255) >> 5);
    d = ldg16(b);
#pragma unroll
    for (int h = 0; h < kG; ++h) {
      A[h] = ldg16(q + 8 * h) | (ldg16(q + 8 * h + 2) << 16);
      B[h] = ldg16(q + 8 * h + 4) | (ldg16(q + 8 * h + 6) << 16);
    }
  }
  __device__ void store(bf16* dst, const uint64_t* grid, uint32_t mask) const {
    const float dd = mv::f16f(d);
#pragma unroll
    for (int h = 0; h < kG; ++h) {
      const float db = __fmul_rn(__fmul_rn(dd, __fadd_rn(0.5f, (float)(B[h] >> 28))), 0.25f);
#pragma unroll
      for (int l = 0; l < 4; ++l) {
        const uint64_t g = grid[(A[h] >> (8 * l)) & 0xFF];
        const uint32_t s7 = (B[h] >> (7 * l)) & 127;
        const uint32_t signs = s7 | ((__popc(s7) & 1u) << 7);
        const uint32_t gw[2] = {(uint32_t)g, (uint32_t)(g >> 32)};
        float v[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          // -(db * m) == db * (-m) exactly: the sign goes onto the grid value.
          const float m = byte_u2f(gw[j / 4], j % 4);
          const uint32_t sbit = (signs << (31 - j)) & 0x80000000u;
          v[j] = __fmul_rn(db, __uint_as_float(__float_as_uint(m) ^ sbit));
        }
        store8(dst + 32 * h + 8 * l, v, mask);
      }
    }
  }
};

// Q2_K: values 16j .. 16j + 15 of a block are sub-block j: quant bytes 32 (j / 8) + 16 (j % 2)
// .. + 15, shift 2 ((j % 8) / 2). For k = 32m the sub-blocks j = 2m + s (s < N / 16) share the
// 32 quant bytes; the shift grows by 2 every two sub-blocks.
template <int N>
struct DecQ2K {
  static constexpr int kAlign = 4, kS = N / 16;
  uint32_t q[8], scs, dm, shift;
  __device__ void load(const uint8_t* row, int k) {
    const uint8_t* b = row + 84 * (k >> 8);
    const int j = (k & 255) >> 4, h = j >> 3;
    shift = 2 * ((j % 8) / 2);
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = ldg32(b + 16 + 32 * h + 4 * i);
    scs = N == 64 ? ldg32(b + j) : ldg16(b + j);
    dm = ldg32(b + 80);
  }
  __device__ void store(bf16* dst, const uint64_t*, uint32_t mask) const {
    const float d = mv::f16f(dm & 0xFFFF), dmin = mv::f16f(dm >> 16);
#pragma unroll
    for (int s = 0; s < kS; ++s) {
      const uint32_t sc = (scs >> (8 * s)) & 0xFF;
      const uint32_t sh = shift + 2 * (s >> 1);
      const float dl = __fmul_rn(d, (float)(sc & 0xF)), ml = __fmul_rn(dmin, (float)(sc >> 4));
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float v[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const int byte = 16 * (s & 1) + 8 * half + e;
          const uint32_t qv = (q[byte / 4] >> (8 * (byte % 4) + sh)) & 3;
          v[e] = __fsub_rn(__fmul_rn(dl, small_u2f(qv)), ml);
        }
        store8(dst + 16 * s + 8 * half, v, mask);
      }
    }
  }
};

// Q4_K: values 32j .. 32j + 31 are sub-block j: the low (j even) or high nibbles of quant bytes
// 32 (j / 2) .. + 31.
template <int N>
struct DecQ4K {
  static constexpr int kAlign = 16;
  uint4 q0, q1;
  uint32_t s[3], dm;
  int j0;
  __device__ void load(const uint8_t* row, int k) {
    const uint8_t* b = row + 144 * (k >> 8);
    j0 = (k & 255) >> 5;
    const uint4* qp = reinterpret_cast<const uint4*>(b + 16 + 32 * (j0 >> 1));
    q0 = __ldg(qp);
    q1 = __ldg(qp + 1);
    dm = ldg32(b);
#pragma unroll
    for (int i = 0; i < 3; ++i) s[i] = ldg32(b + 4 + 4 * i);
  }
  __device__ void store(bf16* dst, const uint64_t*, uint32_t mask) const {
    // Scale byte i (selects, not an indexed array: j0 is not a compile-time constant).
    auto sb = [&](int i) { return ((i < 4 ? s[0] : i < 8 ? s[1] : s[2]) >> (8 * (i & 3))) & 0xFF; };
    const float d = mv::f16f(dm & 0xFFFF), dmin = mv::f16f(dm >> 16);
    const uint32_t w[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
#pragma unroll
    for (int u = 0; u < N / 32; ++u) {
      const int j = j0 + u;
      const int nib = N == 64 ? 4 * u : 4 * (j & 1);  // N = 64: j0 is even
      uint32_t sc, m;
      if (j < 4) {
        sc = sb(j) & 63;
        m = sb(j + 4) & 63;
      } else {
        sc = (sb(j + 4) & 0xF) | ((sb(j - 4) >> 6) << 4);
        m = (sb(j + 4) >> 4) | ((sb(j) >> 6) << 4);
      }
      const float d1 = __fmul_rn(d, (float)sc), m1 = __fmul_rn(dmin, (float)m);
#pragma unroll
      for (int o = 0; o < 4; ++o) {
        float v[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const int byte = 8 * o + e;
          const uint32_t qv = (w[byte / 4] >> (8 * (byte % 4) + nib)) & 0xF;
          v[e] = __fsub_rn(__fmul_rn(d1, small_u2f(qv)), m1);
        }
        store8(dst + 32 * u + 8 * o, v, mask);
      }
    }
  }
};

// Any format, value by value (mv::decode_value; byte loads): the tiny test models' plain types.
template <uint32_t T, int N>
struct DecGeneric {
  const uint8_t* row;
  int k;
  __device__ void load(const uint8_t* r, int k0) {
    row = r;
    k = k0;
  }
  __device__ void store(bf16* dst, const uint64_t*, uint32_t mask) const {
#pragma unroll 2
    for (int o = 0; o < N / 8; ++o) {
      float v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = mv::decode_value(T, row, k + 8 * o + e);
      store8(dst + 8 * o, v, mask);
    }
  }
};
template <uint32_t T>
struct Generic {
  template <int N>
  using Dec = DecGeneric<T, N>;
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  mma::ldsm_x4(mma::smem_u32(p), r);
}
using mma::mma_bf16;

struct Args {
  const uint8_t* w0;
  const uint8_t* w1;  // null: plain product into y; else gate (w0) / up (w1) with SwiGLU into h
  int64_t expert_bytes, row_bytes;
  int rows, K;
  const bf16* x;
  const int4* tiles;
  const int32_t* n_tiles;
  const float* row_w;
  float clamp;
  bf16* h;
  float* y;
};

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
  if ((int)blockIdx.y >= *p.n_tiles) return;  // the whole CTA: no barrier crossed yet
  const int4 tile = p.tiles[blockIdx.y];
  const int e = tile.x, r0 = tile.y, cnt = tile.z;

  // This thread decodes values (tid % R) V .. + V - 1 of tile row i = tid / R in each K step.
  // Rows past the matrix
  // decode its first row (valid memory) and store zeros: no branch, so the decoding of step k + 1
  // and the MMAs of step k share one basic block and interleave.
  const int i = tid / R, kofs = (tid % R) * V;
  bool valid;
  const uint8_t* wrow;
  if constexpr (kSwiglu) {
    const int f = (int)blockIdx.x * (BM / 2) + 8 * (i >> 4) + (i & 7);
    valid = f < p.rows;
    wrow = ((i >> 3) & 1 ? p.w1 : p.w0) + (int64_t)e * p.expert_bytes +
           (valid ? (int64_t)f * p.row_bytes : 0);
  } else {
    const int m = (int)blockIdx.x * BM + i;
    valid = m < p.rows;
    wrow = p.w0 + (int64_t)e * p.expert_bytes + (valid ? (int64_t)m * p.row_bytes : 0);
  }
  const uint32_t mask = valid ? 0xFFFFFFFFu : 0u;
  Dec dec;
  auto load_x = [&](int kt, int buf) {
#pragma unroll
    for (int j = 0; j < BN * BK / 8 / kThreads; ++j) {
      const int c = tid + kThreads * j, row = c >> 3, col = (c & 7) * 8;
      const bf16* src = p.x + (int64_t)(r0 + (row < cnt ? row : 0)) * p.K + kt * BK + col;
      cp_async16(&sm.b[buf][row][col], src, row < cnt ? 16 : 0);
    }
    cp_async_commit();
  };
  auto decode = [&](int buf) { dec.store(&sm.a[buf][i][kofs], sm.grid, mask); };

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
          const float gv = fminf(acc[mi][ni][c], p.clamp);
          const float uv = fminf(fmaxf(acc[mi][ni][2 + c], -p.clamp), p.clamp);
          const float v = fwd::silu_f(gv) * uv;
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
    off[e] = (hi - lo + BN - 1) / BN;
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
    for (int r = lo, ti = off[e]; r < hi && ti < cap; r += BN, ++ti)
      tiles[ti] = make_int4(e, r, hi - r < BN ? hi - r : BN, 0);
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
  launch_k(k, dim3(mtiles, (unsigned)cap), dim3(128 * R), sizeof(Smem), s, a);
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
  if (t.capacity > 65535) throw_invalid_argument("expert_gemm: more than 65535 tiles");
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
    static const ExpertGemmShape env = [] {
      const char* e = std::getenv("DSV4_EXPERT_WARPS");
      return e && std::atoi(e) == 4 ? ExpertGemmShape::kWarps4 : ExpertGemmShape::kWarps8;
    }();
    shape = env;
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
