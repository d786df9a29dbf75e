// Grouped routed-expert GEMMs with in-kernel weight decoding (gemm_experts.h).
//
// CTA tile: 128 weight rows x 128 pair rows, K in steps of 64; 8 warps as 2 (weight rows) x 4
// (pairs), each a 64 x 32 tile of m16n8k16 bf16 MMAs with f32 accumulators. Per K step every
// thread decodes 32 consecutive values of one weight row (one scale group of each format) into
// shared memory and copies 4 x 16 bytes of x with cp.async. Two buffers: the raw weight bytes and
// the x copies of step k + 1 are in flight while step k multiplies; one barrier per step.
// Warps whose 32 pairs lie past the tile's row count skip the MMAs (an expert's last tile).
//
// Gate/up mode: tile row i holds gate row f0 + 8 (i / 16) + i % 8 for i % 16 < 8, else the up
// row of that f, so an m16 fragment's c0/c1 (rows g) and c2/c3 (rows g + 8) are the gate and up
// values of one (pair, f): the SwiGLU runs in registers and h is written in bf16.
#include <cuda_bf16.h>

#include "cuda/block_decode.cuh"
#include "cuda/cuda_check.h"
#include "cuda/fwd_common.cuh"
#include "cuda/gemm_experts.h"
#include "cuda/pdl.cuh"

namespace dsv4::cuda::gemm {
namespace {

constexpr int BM = 128, BN = kExpertTileRows, BK = 64, LDS = BK + 8, kThreads = 256;

struct Smem {
  bf16 a[2][BM][LDS];  // decoded weights [row][k]; 144-byte rows: conflict-free ldmatrix
  bf16 b[2][BN][LDS];  // x [pair][k]
  uint64_t grid[256];  // IQ2_XXS grid
};

__device__ __forceinline__ void store8(bf16* out, const float (&v)[8]) {
  __nv_bfloat162 p[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) p[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  *reinterpret_cast<uint4*>(out) = *reinterpret_cast<const uint4*>(p);
}

__device__ __forceinline__ uint32_t ldg16(const uint8_t* p) {
  return __ldg(reinterpret_cast<const unsigned short*>(p));
}
__device__ __forceinline__ uint32_t ldg32(const uint8_t* p) {
  return __ldg(reinterpret_cast<const unsigned int*>(p));
}

// Decoders of 32 consecutive values (k % 32 == 0) of one row: load() issues the global reads,
// store() decodes into 32 bf16 (16-byte aligned) with the f32 operations of gemm.cu's
// dequantizers. `kAlign` (fast decoders): the byte alignment load() needs of the tensor, row and
// expert strides.
struct DecIq2xxs {
  static constexpr int kAlign = 2;
  uint32_t d, A, B;
  __device__ void load(const uint8_t* row, int k) {
    const uint8_t* b = row + 66 * (k >> 8);
    const uint8_t* q = b + 2 + 8 * ((k & 255) >> 5);
    d = ldg16(b);
    A = ldg16(q) | (ldg16(q + 2) << 16);
    B = ldg16(q + 4) | (ldg16(q + 6) << 16);
  }
  __device__ void store(bf16* dst, const uint64_t* grid) const {
    const float db = __fmul_rn(__fmul_rn(mv::f16f(d), __fadd_rn(0.5f, (float)(B >> 28))), 0.25f);
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const uint64_t g = grid[(A >> (8 * l)) & 0xFF];
      const uint32_t s7 = (B >> (7 * l)) & 127;
      const uint32_t signs = s7 | ((__popc(s7) & 1u) << 7);
      float v[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float w = __fmul_rn(db, (float)(uint32_t)((g >> (8 * j)) & 0xFF));
        v[j] = (signs >> j) & 1 ? -w : w;
      }
      store8(dst + 8 * l, v);
    }
  }
};

// Q2_K: values 32m .. 32m + 31 of a block are sub-blocks j = 2m, 2m + 1 (same 32 quant bytes,
// same shift; scales j and j + 1).
struct DecQ2K {
  static constexpr int kAlign = 4;
  uint32_t q[8], sc2, dm, shift;
  __device__ void load(const uint8_t* row, int k) {
    const uint8_t* b = row + 84 * (k >> 8);
    const int j = (k & 255) >> 4, h = j >> 3;
    shift = 2 * ((j % 8) / 2);
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = ldg32(b + 16 + 32 * h + 4 * i);
    sc2 = ldg16(b + j);
    dm = ldg32(b + 80);
  }
  __device__ void store(bf16* dst, const uint64_t*) const {
    const float d = mv::f16f(dm & 0xFFFF), dmin = mv::f16f(dm >> 16);
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const uint32_t sc = (sc2 >> (8 * s)) & 0xFF;
      const float dl = __fmul_rn(d, (float)(sc & 0xF)), ml = __fmul_rn(dmin, (float)(sc >> 4));
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float v[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const int byte = 16 * s + 8 * half + e;
          const uint32_t qv = ((q[byte / 4] >> (8 * (byte % 4))) >> shift) & 3;
          v[e] = __fsub_rn(__fmul_rn(dl, (float)qv), ml);
        }
        store8(dst + 16 * s + 8 * half, v);
      }
    }
  }
};

// Q4_K: values 32m .. 32m + 31 are sub-block j = m: the low (m even) or high nibbles of quant
// bytes 32 (m / 2) .. + 31.
struct DecQ4K {
  static constexpr int kAlign = 16;
  uint4 q0, q1;
  uint32_t s[3], dm;
  int j;
  __device__ void load(const uint8_t* row, int k) {
    const uint8_t* b = row + 144 * (k >> 8);
    j = (k & 255) >> 5;
    const uint4* qp = reinterpret_cast<const uint4*>(b + 16 + 32 * (j >> 1));
    q0 = __ldg(qp);
    q1 = __ldg(qp + 1);
    dm = ldg32(b);
#pragma unroll
    for (int i = 0; i < 3; ++i) s[i] = ldg32(b + 4 + 4 * i);
  }
  __device__ void store(bf16* dst, const uint64_t*) const {
    // Scale byte i (selects, not an indexed array: j is not a compile-time constant).
    auto sb = [&](int i) { return ((i < 4 ? s[0] : i < 8 ? s[1] : s[2]) >> (8 * (i & 3))) & 0xFF; };
    uint32_t sc, m;
    if (j < 4) {
      sc = sb(j) & 63;
      m = sb(j + 4) & 63;
    } else {
      sc = (sb(j + 4) & 0xF) | ((sb(j - 4) >> 6) << 4);
      m = (sb(j + 4) >> 4) | ((sb(j) >> 6) << 4);
    }
    const float d1 = __fmul_rn(mv::f16f(dm & 0xFFFF), (float)sc);
    const float m1 = __fmul_rn(mv::f16f(dm >> 16), (float)m);
    const uint32_t w[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
    const int sh = (j & 1) * 4;
#pragma unroll
    for (int o = 0; o < 4; ++o) {
      float v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int byte = 8 * o + e;
        const uint32_t qv = ((w[byte / 4] >> (8 * (byte % 4))) >> sh) & 0xF;
        v[e] = __fsub_rn(__fmul_rn(d1, (float)qv), m1);
      }
      store8(dst + 8 * o, v);
    }
  }
};

// Any format, value by value (mv::decode_value; byte loads): the tiny test models' plain types.
template <uint32_t T>
struct DecGeneric {
  const uint8_t* row;
  int k;
  __device__ void load(const uint8_t* r, int k0) {
    row = r;
    k = k0;
  }
  __device__ void store(bf16* dst, const uint64_t*) const {
#pragma unroll
    for (int o = 0; o < 4; ++o) {
      float v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = mv::decode_value(T, row, k + 8 * o + e);
      store8(dst + 8 * o, v);
    }
  }
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
  const uint32_t s = (uint32_t)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s)
               : "memory");
}
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

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

template <class Dec, bool kSwiglu>
__global__ void __launch_bounds__(kThreads, 2) expert_gemm_kernel(Args p) {
  extern __shared__ __align__(16) uint8_t smem_raw[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_raw);
  const int tid = (int)threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int i = tid; i < 256; i += kThreads) sm.grid[i] = mv::g_grid64.v[i];  // constant data
  pdl_wait();
  if ((int)blockIdx.y >= *p.n_tiles) return;  // the whole CTA: no barrier crossed yet
  const int4 tile = p.tiles[blockIdx.y];
  const int e = tile.x, r0 = tile.y, cnt = tile.z;

  // This thread's decode row (tile row i) and 32-value half of each K step.
  const int i = tid >> 1, half = tid & 1;
  bool valid;
  const uint8_t* wrow;
  if constexpr (kSwiglu) {
    const int f = (int)blockIdx.x * (BM / 2) + 8 * (i >> 4) + (i & 7);
    valid = f < p.rows;
    wrow = ((i >> 3) & 1 ? p.w1 : p.w0) + (int64_t)e * p.expert_bytes + (int64_t)f * p.row_bytes;
  } else {
    const int m = (int)blockIdx.x * BM + i;
    valid = m < p.rows;
    wrow = p.w0 + (int64_t)e * p.expert_bytes + (int64_t)m * p.row_bytes;
  }
  Dec dec;
  auto load_x = [&](int kt, int buf) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = tid + kThreads * j, row = c >> 3, col = (c & 7) * 8;
      const bf16* src = p.x + (int64_t)(r0 + (row < cnt ? row : 0)) * p.K + kt * BK + col;
      cp_async16(&sm.b[buf][row][col], src, row < cnt ? 16 : 0);
    }
    cp_async_commit();
  };
  auto decode = [&](int buf) {
    bf16* dst = &sm.a[buf][i][32 * half];
    if (valid) {
      dec.store(dst, sm.grid);
    } else {
#pragma unroll
      for (int o = 0; o < 4; ++o) reinterpret_cast<uint4*>(dst)[o] = make_uint4(0, 0, 0, 0);
    }
  };

  const int nk = p.K / BK;
  if (valid) dec.load(wrow, 32 * half);
  load_x(0, 0);
  __syncthreads();  // the grid table
  decode(0);
  cp_async_wait_all();
  __syncthreads();

  const int wm = warp & 1, wn = warp >> 1;
  const bool active = wn * 32 < cnt;
  float acc[4][4][4];
#pragma unroll
  for (int a = 0; a < 4; ++a)
#pragma unroll
    for (int b = 0; b < 4; ++b)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[a][b][c] = 0.0f;

  for (int kt = 0; kt < nk; ++kt) {
    const int cur = kt & 1;
    const bool more = kt + 1 < nk;
    if (more) {
      load_x(kt + 1, cur ^ 1);
      if (valid) dec.load(wrow, (kt + 1) * BK + 32 * half);
    }
    if (active) {
#pragma unroll
      for (int ks = 0; ks < BK / 16; ++ks) {
        uint32_t af[4][4], bfr[4][2];
#pragma unroll
        for (int mi = 0; mi < 4; ++mi)
          ldsm_x4(af[mi], &sm.a[cur][wm * 64 + mi * 16 + (lane & 7) + ((lane >> 3) & 1) * 8]
                               [ks * 16 + (lane >> 4) * 8]);
#pragma unroll
        for (int nj = 0; nj < 2; ++nj) {
          uint32_t r[4];
          ldsm_x4(r, &sm.b[cur][wn * 32 + nj * 16 + (lane & 7) + (lane >> 4) * 8]
                          [ks * 16 + ((lane >> 3) & 1) * 8]);
          bfr[2 * nj][0] = r[0];
          bfr[2 * nj][1] = r[1];
          bfr[2 * nj + 1][0] = r[2];
          bfr[2 * nj + 1][1] = r[3];
        }
#pragma unroll
        for (int mi = 0; mi < 4; ++mi)
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) mma_bf16(acc[mi][ni], af[mi], bfr[ni][0], bfr[ni][1]);
      }
    }
    if (more) {
      decode(cur ^ 1);
      cp_async_wait_all();
    }
    __syncthreads();
  }
  if (!active) return;

  const int g = lane >> 2, t2 = (lane & 3) * 2;
#pragma unroll
  for (int mi = 0; mi < 4; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int tok = wn * 32 + ni * 8 + t2 + c;
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

template <class Dec, bool kSwiglu>
void launch(const Args& a, unsigned mtiles, int cap, cudaStream_t s) {
  auto* k = expert_gemm_kernel<Dec, kSwiglu>;
  static const bool attr = [&] {
    DSV4_CUDA_CHECK(
        cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, sizeof(Smem)));
    return true;
  }();
  (void)attr;
  launch_k(k, dim3(mtiles, (unsigned)cap), dim3(kThreads), sizeof(Smem), s, a);
  DSV4_CUDA_CHECK_LAUNCH("expert_gemm_kernel");
}

template <class Dec>
void launch_mode(const Args& a, unsigned mtiles, int cap, cudaStream_t s) {
  if (a.w1)
    launch<Dec, true>(a, mtiles, cap, s);
  else
    launch<Dec, false>(a, mtiles, cap, s);
}

// The format's fast decoder when the tensor and its strides are aligned for its loads, else the
// value-by-value one.
template <class Fast, uint32_t T>
void launch_type(const Args& a, unsigned mtiles, int cap, cudaStream_t s) {
  const uint64_t bits = (uint64_t)(uintptr_t)a.w0 | (uint64_t)(uintptr_t)a.w1 |
                        (uint64_t)a.expert_bytes | (uint64_t)a.row_bytes;
  if (bits % Fast::kAlign == 0)
    launch_mode<Fast>(a, mtiles, cap, s);
  else
    launch_mode<DecGeneric<T>>(a, mtiles, cap, s);
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
                 const float* row_w, float clamp, bf16* h, float* y, cudaStream_t s) {
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
  switch ((GgmlType)type) {
    case GgmlType::IQ2_XXS:
      return launch_type<DecIq2xxs, mv::T_IQ2_XXS>(a, mtiles, cap, s);
    case GgmlType::Q2_K:
      return launch_type<DecQ2K, mv::T_Q2_K>(a, mtiles, cap, s);
    case GgmlType::Q4_K:
      return launch_type<DecQ4K, mv::T_Q4_K>(a, mtiles, cap, s);
    case GgmlType::F32:
      return launch_mode<DecGeneric<mv::T_F32>>(a, mtiles, cap, s);
    case GgmlType::F16:
      return launch_mode<DecGeneric<mv::T_F16>>(a, mtiles, cap, s);
    case GgmlType::BF16:
      return launch_mode<DecGeneric<mv::T_BF16>>(a, mtiles, cap, s);
    case GgmlType::Q8_0:
      return launch_mode<DecGeneric<mv::T_Q8_0>>(a, mtiles, cap, s);
    default:
      throw_invalid_argument("expert_gemm: unsupported weight type");
  }
}

}  // namespace dsv4::cuda::gemm
