// Lightning indexer kernels (spec/ARCH.md §5.5): query preparation, scores over the visible
// indexer rows, and the top-k selection (score descending, exact ties to the lower index, output
// sorted by index) by radix select.
#include <algorithm>
#include <cstdlib>

#include "cuda/device.h"
#include "cuda/fwd_common.cuh"
#include "cuda/fwd_kernels.h"
#include "cuda/pdl.cuh"

namespace dsv4::cuda::fwd {

namespace {

constexpr int kMaxId = 1024;
constexpr int kScoreWarps = 8;
constexpr int kTopkThreads = 1024;

// Block (token i, heads 8 y .. 8 y + 7), one warp per head, the cos/sin computed once per block;
// the same operations as one 128-thread block per (head, token) (1.13 ms per layer of an 8K
// chunk, mostly block scheduling and the per-head double-precision cos/sin), so the same bits.
constexpr int kIdxQHeads = 8;
__global__ void __launch_bounds__(32 * kIdxQHeads)
    idx_q_kernel(float* iq, int IH, int ID, int rd, const float* freqs, const int32_t* p0,
                 bool qat) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ float iq_sh[];  // cos/sin [rd], then [kIdxQHeads][ID]
  const int i = blockIdx.x, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int h = blockIdx.y * kIdxQHeads + w;
  const int64_t pos = (int64_t)p0[0] + i;
  rope_cos_sin(iq_sh, freqs, rd, pos);
  __syncthreads();
  if (h >= IH) return;
  float* v = iq_sh + rd + w * ID;
  float* x = iq + ((int64_t)i * IH + h) * ID;
  for (int d = lane; d < ID; d += 32) v[d] = x[d];
  __syncwarp();
  for (int k = lane; k < rd / 2; k += 32) rope_pair_cs(v + (ID - rd), iq_sh, k, false);
  hadamard_warp(v, ID);
  if (qat)
    for (int b = 0; b < ID; b += 32) fp4_sim_block_warp(v + b, 32);
  __syncwarp();
  for (int d = lane; d < ID; d += 32) x[d] = v[d];
}

// One warp per (token, row).
__global__ void idx_scores_kernel(const float* iq, const float* iw, const float* krows, int IH,
                                  int ID, int topk, float wscale, const int32_t* p0,
                                  int score_stride, float* scores) {
  pdl_trigger();
  pdl_wait();
  const int i = blockIdx.y;
  const int64_t p = (int64_t)p0[0] + i;
  const int64_t visible = (p + 1) / 4;
  if (visible <= topk) return;
  const int lane = threadIdx.x & 31;
  const int64_t r = (int64_t)blockIdx.x * kScoreWarps + (threadIdx.x >> 5);
  if (r >= visible) return;
  const float* k = krows + r * ID;
  float s = 0.0f;
  for (int h = 0; h < IH; ++h) {
    const float* qh = iq + ((int64_t)i * IH + h) * ID;
    float dot = 0.0f;
    for (int d = lane; d < ID; d += 32) dot += qh[d] * k[d];
    dot = warp_sum(dot);
    const float w = iw[(int64_t)i * IH + h] * wscale;
    s += fmaxf(dot, 0.0f) * w;
  }
  if (lane == 0) scores[(int64_t)i * score_stride + r] = s;
}

// Tiled scores: a block takes 64 rows of one token and all (<= 64) heads, a 64 x 64 tile of
// row-head dot products computed like an SGEMM (K and q staged transposed in shared memory, 32
// dimensions at a time; each thread holds 4 rows x 4 heads), then the ReLU-weighted sum over
// heads: per thread over its 4 heads, then over the 16 head groups in a fixed order. Reads each
// indexer row once per token instead of once per head.
constexpr int kTileRows = 64, kTileHeads = 64, kTileDims = 32, kTilePad = 68;
__global__ void __launch_bounds__(256)
    idx_scores_tiled_kernel(const float* iq, const float* iw, const float* krows, int IH, int ID,
                            int topk, float wscale, const int32_t* p0, int grid_rows,
                            int score_stride, float* scores) {
  pdl_trigger();
  pdl_wait();
  __shared__ __align__(16) float kt[kTileDims][kTilePad];
  __shared__ __align__(16) float qt[kTileDims][kTilePad];
  __shared__ float red[16][kTileRows];
  __shared__ float wsh[kTileHeads];
  const int i = blockIdx.y;
  const int64_t p = (int64_t)p0[0] + i;
  const int64_t visible = (p + 1) / 4;
  const int64_t r0 = (int64_t)blockIdx.x * kTileRows;
  if (visible <= topk || r0 >= visible) return;
  const int tid = threadIdx.x, tr = tid % 16, th = tid / 16;
  if (tid < kTileHeads) wsh[tid] = tid < IH ? iw[(int64_t)i * IH + tid] * wscale : 0.0f;
  float acc[4][4];
#pragma unroll
  for (int a = 0; a < 4; ++a)
#pragma unroll
    for (int b = 0; b < 4; ++b) acc[a][b] = 0.0f;
  const float* q = iq + (int64_t)i * IH * ID;
  for (int d0 = 0; d0 < ID; d0 += kTileDims) {
    // 64 rows (heads) x 32 dims = 512 float4 each: two per thread, stored transposed.
#pragma unroll
    for (int m = 0; m < 2; ++m) {
      const int f = tid + 256 * m, row = f / 8, c4 = f % 8;
      const int64_t r = r0 + row;
      float4 kv = make_float4(0.0f, 0.0f, 0.0f, 0.0f), qv = kv;
      if (r < grid_rows) kv = *reinterpret_cast<const float4*>(krows + r * ID + d0 + 4 * c4);
      if (row < IH) qv = *reinterpret_cast<const float4*>(q + (int64_t)row * ID + d0 + 4 * c4);
      kt[4 * c4][row] = kv.x;
      kt[4 * c4 + 1][row] = kv.y;
      kt[4 * c4 + 2][row] = kv.z;
      kt[4 * c4 + 3][row] = kv.w;
      qt[4 * c4][row] = qv.x;
      qt[4 * c4 + 1][row] = qv.y;
      qt[4 * c4 + 2][row] = qv.z;
      qt[4 * c4 + 3][row] = qv.w;
    }
    __syncthreads();
#pragma unroll 8
    for (int dd = 0; dd < kTileDims; ++dd) {
      const float4 a = *reinterpret_cast<const float4*>(&kt[dd][4 * tr]);
      const float4 b = *reinterpret_cast<const float4*>(&qt[dd][4 * th]);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int x = 0; x < 4; ++x)
#pragma unroll
        for (int y = 0; y < 4; ++y) acc[x][y] = fmaf(av[x], bv[y], acc[x][y]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int x = 0; x < 4; ++x) {
    float part = 0.0f;
#pragma unroll
    for (int y = 0; y < 4; ++y) part += fmaxf(acc[x][y], 0.0f) * wsh[4 * th + y];
    red[th][4 * tr + x] = part;
  }
  __syncthreads();
  if (tid < kTileRows) {
    const int64_t r = r0 + tid;
    if (r < visible) {
      float sum = 0.0f;
      for (int g = 0; g < 16; ++g) sum += red[g][tid];
      scores[(int64_t)i * score_stride + r] = sum;
    }
  }
}

// One decode token (n == 1) at short context: the tiled kernel gives 1024 rows 16 blocks (half of
// them past the visible rows) that stage q and the rows 32 dimensions at a time, ~10 us per
// ratio-4 layer on the decode chain. Here each warp takes `rpw` rows and each block stages all
// of q once ([kDecHeads][ID + 4], heads past IH zero), so ~128 blocks share the rows and every
// load is issued up front. Lane l owns heads l and l + 32 and sums its two dot products over the
// dimensions in order; the warp then sums the lanes' ReLU-weighted terms.
constexpr int kDecWarps = 8, kDecHeads = 64, kDecMaxId = 128;
__host__ __device__ constexpr size_t idx_scores_decode_smem(int ID) {
  return sizeof(float) * ((size_t)kDecHeads * (ID + 4) + kDecHeads + (size_t)kDecWarps * 2 * ID);
}
__global__ void __launch_bounds__(32 * kDecWarps)
    idx_scores_decode_kernel(const float* iq, const float* iw, const float* krows, int IH, int ID,
                             int topk, float wscale, const int32_t* p0, int rpw, float* scores) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ __align__(16) float dsh[];
  const int qs = ID + 4, nd4 = ID / 4;
  float* qsh = dsh;                   // [kDecHeads][qs]
  float* wsh = qsh + kDecHeads * qs;  // [kDecHeads]
  float* ksh = wsh + kDecHeads;       // [kDecWarps][2][ID]
  const int64_t visible = ((int64_t)p0[0] + 1) / 4;
  const int64_t r0 = (int64_t)blockIdx.x * kDecWarps * rpw;
  if (visible <= topk || r0 >= visible) return;
  // The queries: kU float4 loads per thread in flight before any store (a load-then-store loop
  // waits on the L2 once per trip: the compiler cannot move a global load above a shared store
  // through generic pointers).
  {
    constexpr int kU = 8;
    const int nf = kDecHeads * nd4;
    for (int f0 = threadIdx.x; f0 < nf; f0 += kU * blockDim.x) {
      float4 v[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int f = f0 + u * (int)blockDim.x, h = f / nd4, d4 = f - h * nd4;
        v[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (f < nf && h < IH) v[u] = reinterpret_cast<const float4*>(iq + (int64_t)h * ID)[d4];
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int f = f0 + u * (int)blockDim.x, h = f / nd4, d4 = f - h * nd4;
        if (f < nf) reinterpret_cast<float4*>(qsh + h * qs)[d4] = v[u];
      }
    }
  }
  for (int h = threadIdx.x; h < kDecHeads; h += blockDim.x) wsh[h] = h < IH ? iw[h] * wscale : 0.0f;
  __syncthreads();
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  float* ka = ksh + w * 2 * ID;
  float* kb = ka + ID;
  const float* q0 = qsh + lane * qs;
  const float* q1 = qsh + (lane + 32) * qs;
  const float w0 = wsh[lane], w1 = wsh[lane + 32];
  const int64_t rw = r0 + (int64_t)w * rpw;
  for (int j = 0; j < rpw; j += 2) {
    const int64_t ra = rw + j, rb = ra + 1;
    if (ra >= visible) break;
    const bool has_b = j + 1 < rpw && rb < visible;
    for (int d4 = lane; d4 < nd4; d4 += 32) {
      reinterpret_cast<float4*>(ka)[d4] = reinterpret_cast<const float4*>(krows + ra * ID)[d4];
      reinterpret_cast<float4*>(kb)[d4] = has_b
                                              ? reinterpret_cast<const float4*>(krows + rb * ID)[d4]
                                              : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    __syncwarp();
    float a0 = 0.0f, a1 = 0.0f, b0 = 0.0f, b1 = 0.0f;
#pragma unroll 4
    for (int d = 0; d < ID; d += 4) {
      const float4 x = *reinterpret_cast<const float4*>(ka + d);
      const float4 y = *reinterpret_cast<const float4*>(kb + d);
      const float4 u = *reinterpret_cast<const float4*>(q0 + d);
      const float4 v = *reinterpret_cast<const float4*>(q1 + d);
      a0 = fmaf(u.w, x.w, fmaf(u.z, x.z, fmaf(u.y, x.y, fmaf(u.x, x.x, a0))));
      a1 = fmaf(v.w, x.w, fmaf(v.z, x.z, fmaf(v.y, x.y, fmaf(v.x, x.x, a1))));
      b0 = fmaf(u.w, y.w, fmaf(u.z, y.z, fmaf(u.y, y.y, fmaf(u.x, y.x, b0))));
      b1 = fmaf(v.w, y.w, fmaf(v.z, y.z, fmaf(v.y, y.y, fmaf(v.x, y.x, b1))));
    }
    const float sa = warp_sum(fmaxf(a0, 0.0f) * w0 + fmaxf(a1, 0.0f) * w1);
    const float sb = warp_sum(fmaxf(b0, 0.0f) * w0 + fmaxf(b1, 0.0f) * w1);
    if (lane == 0) {
      scores[ra] = sa;
      if (has_b) scores[rb] = sb;
    }
    __syncwarp();
  }
}

// Decode scores over many rows on TF32 tensor cores, one kernel: a block takes tiles of 128 rows
// and all (<= 64) heads; its 8 warps each compute a 16-row x 64-head tile of
// dot products by mma.sync m16n8k8 (K rows as A, the queries as B, both staged in shared memory
// with rows padded to ID + 8 floats, so that the 8-byte fragment loads are conflict-free), then the
// ReLU-weighted sum over heads (a lane's 16 heads, then the quad's 4 lanes). Within a k-step the
// lane's two k indices t and t + 4 are dimensions 8 s + 2 t and 8 s + 2 t + 1 of both operands (a
// permutation of the step's dimensions: the same dot product). TF32 with round-to-nearest inputs
// and f32 accumulation, as the cuBLAS GEMM + idx_reduce it replaces (two launches and a
// [64][rows] round trip: ~14 us per ratio-4 layer at 64K context). A block walks row tiles b,
// b + grid, ... with q staged once.
constexpr int kMmaRows = 128, kMmaHeads = 64, kMmaMaxId = 128, kMmaPad = 8, kMmaThreads = 256;
__host__ __device__ constexpr size_t idx_scores_tf32_smem(int ID) {
  return sizeof(float) * ((size_t)(kMmaRows + kMmaHeads) * (size_t)(ID + kMmaPad) + kMmaHeads);
}
__device__ __forceinline__ uint32_t to_tf32(float f) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(f));
  return r;
}
__global__ void __launch_bounds__(kMmaThreads)
    idx_scores_tf32_kernel(const float* iq, const float* iw, const float* krows, int IH, int ID,
                           int topk, float wscale, const int32_t* p0, int grid_rows,
                           float* scores) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ __align__(16) float mm_sh[];
  const int S = ID + kMmaPad;
  float* ks = mm_sh;                // [kMmaRows][S] K rows (f32)
  float* qs = ks + kMmaRows * S;    // [kMmaHeads][S] queries (TF32 bits)
  float* wsh = qs + kMmaHeads * S;  // [kMmaHeads] head weights * wscale
  const int tid = threadIdx.x;
  const int64_t visible = ((int64_t)p0[0] + 1) / 4;
  const int64_t rows = visible < grid_rows ? visible : grid_rows;
  if (visible <= topk || (int64_t)blockIdx.x * kMmaRows >= rows) return;
  const int nd4 = ID / 4;
  // The queries, rounded to TF32 once per block (heads past IH: zeros); the block then walks row
  // tiles b, b + grid, ... (about two blocks per SM: one stages its next tile while the other
  // computes, and q is staged ~2 x SMs times instead of once per 128 rows).
  for (int f = tid; f < kMmaHeads * nd4; f += kMmaThreads) {
    const int h = f / nd4, c4 = f - h * nd4;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (h < IH) v = *reinterpret_cast<const float4*>(iq + (int64_t)h * ID + 4 * c4);
    *reinterpret_cast<uint4*>(qs + h * S + 4 * c4) =
        make_uint4(to_tf32(v.x), to_tf32(v.y), to_tf32(v.z), to_tf32(v.w));
  }
  if (tid < kMmaHeads) wsh[tid] = tid < IH ? iw[tid] * wscale : 0.0f;
  const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const float* ka = ks + (warp * 16 + g) * S + 2 * t;
  const float* kb = ka + 8 * S;
  const float* qb = qs + g * S + 2 * t;
  for (int64_t r0 = (int64_t)blockIdx.x * kMmaRows; r0 < rows;
       r0 += (int64_t)gridDim.x * kMmaRows) {
    __syncthreads();  // the previous tile's fragments are read
    // The tile's rows, all copies in flight (rows past the visible ones: zeros).
    for (int f = tid; f < kMmaRows * nd4; f += kMmaThreads) {
      const int row = f / nd4, c4 = f - row * nd4;
      const int64_t r = r0 + row;
      float* dst = ks + row * S + 4 * c4;
      if (r < rows) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(
                         (uint32_t)__cvta_generic_to_shared(dst)),
                     "l"(krows + r * ID + 4 * c4)
                     : "memory");
      } else {
        *reinterpret_cast<float4*>(dst) = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
    }
    asm volatile("cp.async.commit_group;\ncp.async.wait_all;\n" ::: "memory");
    __syncthreads();
    float acc[kMmaHeads / 8][4];
#pragma unroll
    for (int nt = 0; nt < kMmaHeads / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[nt][e] = 0.0f;
    for (int s8 = 0; s8 < ID; s8 += 8) {
      const float2 lo = *reinterpret_cast<const float2*>(ka + s8);
      const float2 hi = *reinterpret_cast<const float2*>(kb + s8);
      const uint32_t a0 = to_tf32(lo.x), a1 = to_tf32(hi.x), a2 = to_tf32(lo.y),
                     a3 = to_tf32(hi.y);
#pragma unroll
      for (int nt = 0; nt < kMmaHeads / 8; ++nt) {
        const uint2 b = *reinterpret_cast<const uint2*>(qb + 8 * nt * S + s8);
        asm volatile(
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(acc[nt][0]), "+f"(acc[nt][1]), "+f"(acc[nt][2]), "+f"(acc[nt][3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b.x), "r"(b.y));
      }
    }
    // Row g (c0, c1) and g + 8 (c2, c3) of the warp's tile, heads 8 nt + 2 t and + 1.
    float s_lo = 0.0f, s_hi = 0.0f;
#pragma unroll
    for (int nt = 0; nt < kMmaHeads / 8; ++nt) {
      const float w0 = wsh[8 * nt + 2 * t], w1 = wsh[8 * nt + 2 * t + 1];
      s_lo += fmaxf(acc[nt][0], 0.0f) * w0 + fmaxf(acc[nt][1], 0.0f) * w1;
      s_hi += fmaxf(acc[nt][2], 0.0f) * w0 + fmaxf(acc[nt][3], 0.0f) * w1;
    }
    s_lo += __shfl_xor_sync(0xffffffffu, s_lo, 1);
    s_hi += __shfl_xor_sync(0xffffffffu, s_hi, 1);
    s_lo += __shfl_xor_sync(0xffffffffu, s_lo, 2);
    s_hi += __shfl_xor_sync(0xffffffffu, s_hi, 2);
    const int64_t r = r0 + warp * 16 + g;
    if (t == 0) {
      if (r < rows) scores[r] = s_lo;
      if (r + 8 < rows) scores[r + 8] = s_hi;
    }
  }
}

// scores[i][r] = sum_h max(dots[i][h][r], 0) * (iw[i][h] * wscale) for the rows a token sees,
// from the query-row dot products of a GEMM (dots [n][IH][rows]); token i is chunk token i0 + i.
__global__ void idx_reduce_kernel(const float* dots, const float* iw, int IH, int rows,
                                  float wscale, const int32_t* p0, int i0, int topk,
                                  int score_stride, float* scores) {
  pdl_trigger();
  pdl_wait();
  const int i = blockIdx.y;
  const int64_t p = (int64_t)p0[0] + i0 + i;
  const int64_t visible = (p + 1) / 4;
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (visible <= topk || r >= visible || r >= rows) return;
  const float* d = dots + (int64_t)i * IH * rows + r;
  float s = 0.0f;
  for (int h = 0; h < IH; ++h)
    s += fmaxf(d[(int64_t)h * rows], 0.0f) * (iw[(int64_t)i * IH + h] * wscale);
  scores[(int64_t)i * score_stride + r] = s;
}

// Exclusive prefix sum over the block of one int per thread; returns the total in *total.
__device__ int block_exclusive_scan(int v, int* sh, int* total) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  int x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  __syncthreads();
  if (lane == 31) sh[wid] = x;
  __syncthreads();
  if (threadIdx.x == 0) {
    int acc = 0;
    for (int w = 0; w < nw; ++w) {
      const int t = sh[w];
      sh[w] = acc;
      acc += t;
    }
    sh[32] = acc;
  }
  __syncthreads();
  *total = sh[32];
  return sh[wid] + x - v;
}

constexpr int kTopkUnroll = 4;
// Up to `staged` rows the keys are converted once into shared memory (dynamic, staged * 4 bytes),
// so the four passes and the output phase read shared memory instead of waiting on the L2 five
// times: the whole selection is latency (~8.6 us per ratio-4 layer at 2K context; at 64K, 16K
// rows read from L2 five times took ~15 us). A decode token (one block) stages up to
// kTopkSmemKeysDecode keys (192 KiB); a chunk's blocks share SMs and stage up to kTopkSmemKeys.
constexpr int kTopkSmemKeys = 4096;
constexpr int kTopkSmemKeysDecode = 49152;
constexpr int kTopkStageUnroll = 8;

// The output phase: prefix T = the topk-th largest key; every larger key is taken and the first
// `need` equal ones. Warp w owns rows [w per, (w + 1) per), whose counts above and equal to T are
// wgt[w], weq[w]: the warps' offsets follow from them, then each warp writes its rows in order.
// Row: int64_t, or int where the rows fit (the staged keys).
template <class Row, class Key>
__device__ void topk_write(Key key, Row visible, int topk, uint32_t T, int need, Row per,
                           const int* wgt, const int* weq, int32_t* out) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  const Row lo = (Row)wid * per, hi = lo + per < visible ? lo + per : visible;
  int eq_before = 0, out_before = 0;
  for (int w = 0; w < wid; ++w) {
    const int e = weq[w];
    out_before += wgt[w] + max(0, min(e, need - eq_before));
    eq_before += e;
  }
  const uint32_t lt = (1u << lane) - 1u;
  for (Row c0 = lo; c0 < hi; c0 += 32 * kTopkUnroll) {
    uint32_t ks[kTopkUnroll];
#pragma unroll
    for (int u = 0; u < kTopkUnroll; ++u) {
      const Row r = c0 + 32 * u + lane;
      ks[u] = r < hi ? key(r) : 0u;
    }
#pragma unroll
    for (int u = 0; u < kTopkUnroll; ++u) {
      const Row r = c0 + 32 * u + lane;
      const bool is_eq = r < hi && ks[u] == T, is_gt = r < hi && ks[u] > T;
      const uint32_t eqm = __ballot_sync(0xffffffffu, is_eq);
      const bool take = is_gt || (is_eq && eq_before + __popc(eqm & lt) < need);
      const uint32_t tm = __ballot_sync(0xffffffffu, take);
      const int pos = out_before + __popc(tm & lt);
      if (take && pos < topk) out[pos] = (int32_t)r;
      eq_before += __popc(eqm);
      out_before += __popc(tm);
    }
  }
}

// The one-block selection over keys staged in shared memory with a 4096-bin histogram (decode at
// long context, 1024 threads): the keys' range [min, max] (found while staging) gives a 12-bit
// digit over their differing bits, one pass counts the digits, a scan over the bins finds the bin
// holding the topk-th largest key, and one pass in the output's row layout counts each warp's
// keys above that bin and collects the bin's keys (few: the tail of the distribution) as
// candidates, among which a rank count finds the exact threshold key. Two passes over the keys
// instead of the radix select's five (four digits and the count), one scan instead of four.
// Dynamic shared memory after the keys (kTopkHistBytes): the histogram, then the candidates.
constexpr int kTopkHistBins = 4096;
constexpr int kTopkCandMax = 1024;   // more keys in the threshold bin: the radix select instead
constexpr int kTopkHistRows = 4096;  // fewest rows for the histogram path (DSV4_TOPK_HIST_ROWS)
constexpr size_t kTopkHistBytes =
    sizeof(int) * kTopkHistBins + sizeof(uint2) * 2 * kTopkCandMax;  // bins, candidates, sub-bin

// What the output phase (topk_write) needs besides the warps' counts: the threshold key T and how
// many keys equal to T to take (the lowest rows first).
struct TopkCut {
  uint32_t T;
  int need;
};

// The bin holding the need-th largest key of a kTopkHistBins histogram (the descending bin order;
// every thread of the kTopkThreads block calls it): *bin and *need_in (how many of that bin's keys
// are still to be taken). Thread j holds bins 4095 - 4j - {0..3}; the exclusive prefix of their
// sums comes from warp shuffles and one warp's scan of the 32 warp totals (two barriers; no
// serial loop over the warps).
__device__ void topk_find_bin(const int* hist, int need, int* bin, int* need_in) {
  __shared__ int warp_tot[32];
  __shared__ int bin_sh, need_sh;
  constexpr int kPer = kTopkHistBins / kTopkThreads;
  static_assert(kPer == 4, "four bins per thread");
  const int t = threadIdx.x, lane = t & 31, wid = t >> 5;
  int c[kPer], sum = 0;
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    c[j] = hist[kTopkHistBins - 1 - kPer * t - j];
    sum += c[j];
  }
  int incl = sum;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  if (lane == 31) warp_tot[wid] = incl;
  __syncthreads();
  if (wid == 0) {
    const int v = warp_tot[lane];
    int x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, x, o);
      if (lane >= o) x += y;
    }
    warp_tot[lane] = x - v;  // exclusive
  }
  __syncthreads();
  int higher = warp_tot[wid] + incl - sum;
  if (higher < need && higher + sum >= need) {
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      if (higher < need && higher + c[j] >= need) {
        bin_sh = kTopkHistBins - 1 - kPer * t - j;
        need_sh = need - higher;
      }
      higher += c[j];
    }
  }
  __syncthreads();
  *bin = bin_sh;
  *need_in = need_sh;
}

// Returns false (nothing decided; the block must select otherwise) when more than kTopkCandMax
// keys share the threshold bin. Otherwise fills *cut, wgt and weq. Call with every thread.
__device__ bool topk_hist_cut(const uint32_t* keys, int nv, int topk, int per, int* hist,
                              uint2* cand, uint32_t kmin, uint32_t kmax, int* wgt, int* weq,
                              TopkCut* cut) {
  __shared__ int ncand_sh, nsub_sh, eqneed_sh;
  __shared__ uint32_t tkey_sh;
  const int t = threadIdx.x, bd = blockDim.x, lane = t & 31, wid = t >> 5;
  const uint32_t range = kmax - kmin;
  const int shift = range < (uint32_t)kTopkHistBins ? 0 : 32 - __clz(range) - 12;
  auto digit = [&](uint32_t k) { return (int)((k - kmin) >> shift); };
  const int lo = wid * per, hi = min(lo + per, nv);  // per % 128 == 0: quads stay in the range
  const uint4* k4 = reinterpret_cast<const uint4*>(keys);
  // Pass 1: the digits' histogram (hist zeroed by the caller before its barrier).
  for (int r = lo + 4 * lane; r < hi; r += 128) {
    const uint4 q = k4[r >> 2];
    atomicAdd(&hist[digit(q.x)], 1);
    if (r + 1 < hi) atomicAdd(&hist[digit(q.y)], 1);
    if (r + 2 < hi) atomicAdd(&hist[digit(q.z)], 1);
    if (r + 3 < hi) atomicAdd(&hist[digit(q.w)], 1);
  }
  if (t == 0) {
    ncand_sh = 0;
    nsub_sh = 0;
  }
  __syncthreads();
  // The threshold bin T and how many of its keys are taken.
  int T, need;
  topk_find_bin(hist, topk, &T, &need);
  if (hist[T] > kTopkCandMax) return false;  // uniform: every thread reads the same count
  // Pass 2, in the output's row layout: each warp's keys above the bin, and the bin's keys.
  int gt = 0;
  for (int r = lo + 4 * lane; r < hi; r += 128) {
    const uint4 q = k4[r >> 2];
    const uint32_t kk[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (r + e < hi) {
        const int d = digit(kk[e]);
        gt += d > T;
        if (d == T) cand[atomicAdd(&ncand_sh, 1)] = make_uint2(kk[e], (uint32_t)(r + e));
      }
    }
  }
  gt = __reduce_add_sync(0xffffffffu, gt);
  if (lane == 0) {
    wgt[wid] = gt;
    weq[wid] = 0;
  }
  // The bin's candidates by the next 12 bits of their offset from kmin (a second histogram, over
  // the candidates only): the sub-bin T2 that holds the need-th largest, then the exact key among
  // the few keys of T2 by a rank count. (One rank count over all the bin's candidates was a
  // quarter of the block's instructions at 16K rows: ~350 candidates, each compared with all.)
  // The histogram's bins are free once every thread has read hist[T] (T and need are in
  // registers).
  __syncthreads();
  for (int b = t; b < kTopkHistBins; b += bd) hist[b] = 0;
  __syncthreads();
  const int nc = ncand_sh;
  const int shift2 = shift >= 12 ? shift - 12 : 0;
  auto sub = [&](uint32_t k) { return (int)(((k - kmin) >> shift2) & (kTopkHistBins - 1)); };
  for (int i = t; i < nc; i += bd) atomicAdd(&hist[sub(cand[i].x)], 1);
  __syncthreads();
  int T2, need2;
  topk_find_bin(hist, need, &T2, &need2);
  // The sub-bin's keys, gathered after the bin's candidates (room: kTopkCandMax entries after
  // the first nc, as many as the candidates).
  uint2* sub_c = cand + nc;
  for (int i = t; i < nc; i += bd) {
    const uint2 cv = cand[i];
    if (sub(cv.x) == T2) sub_c[atomicAdd(&nsub_sh, 1)] = cv;
  }
  __syncthreads();
  // The need2-th largest key of the sub-bin: the one with fewer than need2 keys above it and at
  // least need2 at or above it (every thread holding that key writes the same values).
  const int ns = nsub_sh;
  for (int i = t; i < ns; i += bd) {
    const uint32_t ki = sub_c[i].x;
    int above = 0, at_or_above = 0;
    for (int j = 0; j < ns; ++j) {
      const uint32_t kj = sub_c[j].x;
      above += kj > ki;
      at_or_above += kj >= ki;
    }
    if (above < need2 && at_or_above >= need2) {
      tkey_sh = ki;
      eqneed_sh = need2 - above;
    }
  }
  __syncthreads();
  const uint32_t Tk = tkey_sh;
  for (int i = t; i < nc; i += bd) {
    const uint2 cv = cand[i];
    const int w = (int)cv.y / per;
    if (cv.x > Tk)
      atomicAdd(&wgt[w], 1);
    else if (cv.x == Tk)
      atomicAdd(&weq[w], 1);
  }
  cut->T = Tk;
  cut->need = eqneed_sh;
  __syncthreads();
  return true;
}

// Radix select by one block of kTopkThreads threads over sc[0..visible): the topk largest keys
// (ties to the lower index), written to out sorted by index. Four 8-bit passes; each pass's digit
// is found by a parallel suffix count over the 256 bins, and the output is written by warps that
// own contiguous row ranges (counts per warp, one scan, then ballots), so the block crosses a
// handful of barriers instead of two block scans per 1024 rows (49 us per layer at 64K context).
// From hist_rows staged rows on (1024 threads; dynamic shared memory for kTopkHistBytes after the
// keys) the histogram path (topk_hist_cut) decides first and the radix select is its fallback.
__device__ void topk_one_block(const float* sc, int64_t visible, int topk, int32_t* out,
                               uint32_t* keys_sh, int staged_cap, int hist_rows = 0) {
  __shared__ int hist[256];
  __shared__ uint32_t prefix_sh;
  __shared__ int need_sh;
  __shared__ int scan_sh[33];
  __shared__ int wgt[32], weq[32];
  const int t = threadIdx.x, bd = blockDim.x;
  const int lane = t & 31, wid = t >> 5, nw = bd >> 5;

  const bool staged = visible <= staged_cap;
  // The histogram path (topk_hist_cut): its bins and candidates follow the staged keys.
  const bool use_hist = staged && hist_rows > 0 && visible >= hist_rows && bd == kTopkThreads;
  __shared__ uint32_t kmin_sh, kmax_sh;
  int* hist4k = reinterpret_cast<int*>(keys_sh + ((staged_cap + 3) & ~3));
  if (use_hist) {
    for (int b = t; b < kTopkHistBins; b += bd) hist4k[b] = 0;
    if (t == 0) {
      kmin_sh = 0xffffffffu;
      kmax_sh = 0u;
    }
    __syncthreads();
  }
  uint32_t kmin = 0xffffffffu, kmax = 0u;
  if (use_hist) {
    // 32-bit rows, four keys per 16-byte load (all of a thread's loads in flight at 16K rows), the
    // keys' min and max on the way. A partial last quad is read key by key.
    const int nv = (int)visible, nfull = nv >> 2;
    const bool a16 = (reinterpret_cast<uintptr_t>(sc) & 15) == 0;
    constexpr int kU = 4;
    for (int q0 = t; q0 < (nv + 3) >> 2; q0 += kU * bd) {
      float4 v[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int q = q0 + u * bd, r = 4 * q;
        if (q < nfull && a16) {
          v[u] = reinterpret_cast<const float4*>(sc)[q];
        } else {
          v[u].x = r < nv ? sc[r] : 0.0f;
          v[u].y = r + 1 < nv ? sc[r + 1] : 0.0f;
          v[u].z = r + 2 < nv ? sc[r + 2] : 0.0f;
          v[u].w = r + 3 < nv ? sc[r + 3] : 0.0f;
        }
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int q = q0 + u * bd, r = 4 * q;
        if (r < nv) {
          const uint32_t k[4] = {order_key(v[u].x), order_key(v[u].y), order_key(v[u].z),
                                 order_key(v[u].w)};
          reinterpret_cast<uint4*>(keys_sh)[q] = make_uint4(k[0], k[1], k[2], k[3]);
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (r + e < nv) {
              kmin = min(kmin, k[e]);
              kmax = max(kmax, k[e]);
            }
        }
      }
    }
  } else if (staged) {  // kTopkStageUnroll loads in flight per thread
    for (int64_t r0 = t; r0 < visible; r0 += (int64_t)kTopkStageUnroll * bd) {
      float v[kTopkStageUnroll];
#pragma unroll
      for (int u = 0; u < kTopkStageUnroll; ++u) {
        const int64_t r = r0 + (int64_t)u * bd;
        v[u] = r < visible ? sc[r] : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < kTopkStageUnroll; ++u) {
        const int64_t r = r0 + (int64_t)u * bd;
        if (r < visible) keys_sh[r] = order_key(v[u]);
      }
    }
  }
  if (use_hist) {
    kmin = __reduce_min_sync(0xffffffffu, kmin);
    kmax = __reduce_max_sync(0xffffffffu, kmax);
    if (lane == 0) {
      atomicMin(&kmin_sh, kmin);
      atomicMax(&kmax_sh, kmax);
    }
    __syncthreads();  // also: every key staged
    const int per = (int)(((visible + nw - 1) / nw + 127) / 128 * 128);
    TopkCut cut;
    if (topk_hist_cut(keys_sh, (int)visible, topk, per, hist4k,
                      reinterpret_cast<uint2*>(hist4k + kTopkHistBins), kmin_sh, kmax_sh, wgt, weq,
                      &cut)) {
      topk_write<int>([&](int r) { return keys_sh[r]; }, (int)visible, topk, cut.T, cut.need, per,
                      wgt, weq, out);
      return;
    }
  }
  // No barrier needed here: the first pass's histogram reset is followed by one.
  auto key = [&](int64_t r) { return staged ? keys_sh[r] : order_key(sc[r]); };
  uint32_t prefix = 0, mask = 0;
  int need = topk;  // how many of the keys matching `prefix` are still to be taken
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = t; b < 256; b += bd) hist[b] = 0;
    __syncthreads();
    auto count = [&](uint32_t k, bool in) {
      if (in && (k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255], 1);
    };
    if (staged) {
      // Four keys per 16-byte load and 32-bit row arithmetic (the keys fit in shared memory): the
      // passes are bound by instructions on the block's one SM (~20 us at 16K rows before).
      const int nv = (int)visible, nq = (nv + 3) >> 2;
      const uint4* k4 = reinterpret_cast<const uint4*>(keys_sh);
      for (int q0 = t; q0 < nq; q0 += 2 * bd) {
        const int q1 = q0 + bd;
        const uint4 a = k4[q0];
        const uint4 b = q1 < nq ? k4[q1] : make_uint4(0u, 0u, 0u, 0u);
        const int r0 = q0 << 2, r1 = q1 << 2;
        count(a.x, true);
        count(a.y, r0 + 1 < nv);
        count(a.z, r0 + 2 < nv);
        count(a.w, r0 + 3 < nv);
        count(b.x, r1 < nv);
        count(b.y, r1 + 1 < nv);
        count(b.z, r1 + 2 < nv);
        count(b.w, r1 + 3 < nv);
      }
    } else {
      for (int64_t r0 = t; r0 < visible; r0 += (int64_t)kTopkUnroll * bd) {
        uint32_t k[kTopkUnroll];
#pragma unroll
        for (int u = 0; u < kTopkUnroll; ++u) {
          const int64_t r = r0 + (int64_t)u * bd;
          k[u] = r < visible ? key(r) : 0u;
        }
#pragma unroll
        for (int u = 0; u < kTopkUnroll; ++u) count(k[u], r0 + (int64_t)u * bd < visible);
      }
    }
    __syncthreads();
    // Thread j looks at bin 255 - j: `higher` keys lie in larger bins. The digit is the bin
    // where the count crosses `need` (bin 0 when no bin does, as the serial search did).
    const int b = 255 - t;
    const int c = t < 256 ? hist[b] : 0;
    int total = 0;
    const int higher = block_exclusive_scan(c, scan_sh, &total);
    if (t < 256 && higher < need && (higher + c >= need || b == 0)) {
      need_sh = need - higher;
      prefix_sh = prefix | ((uint32_t)b << shift);
    }
    __syncthreads();
    need = need_sh;
    prefix = prefix_sh;
    mask |= 0xffu << shift;
    __syncthreads();
  }
  // prefix = the k-th largest key; take every larger key and the first `need` equal ones. Warp w
  // owns rows [w per, (w + 1) per): counts, then a scan over the warps, then the writes in order.
  const uint32_t T = prefix;
  const int64_t per = ((visible + nw - 1) / nw + 31) / 32 * 32;
  const int64_t lo = (int64_t)wid * per, hi = lo + per < visible ? lo + per : visible;
  int gt = 0, eq = 0;
  for (int64_t r = lo + lane; r < hi; r += 32) {
    const uint32_t k = key(r);
    gt += k > T;
    eq += k == T;
  }
  gt = __reduce_add_sync(0xffffffffu, gt);
  eq = __reduce_add_sync(0xffffffffu, eq);
  if (lane == 0) {
    wgt[wid] = gt;
    weq[wid] = eq;
  }
  __syncthreads();
  topk_write<int64_t>(key, visible, topk, T, need, per, wgt, weq, out);
}

__global__ void idx_topk_kernel(const float* scores, int score_stride, int topk, const int32_t* p0,
                                int32_t* sel, int staged_cap, int hist_rows) {
  extern __shared__ uint32_t topk_keys_dyn[];
  pdl_trigger();
  pdl_wait();
  const int i = blockIdx.x;
  const int64_t p = (int64_t)p0[0] + i;
  const int64_t visible = (p + 1) / 4;
  if (visible <= topk) return;
  topk_one_block(scores + (int64_t)i * score_stride, visible, topk, sel + (int64_t)i * topk,
                 topk_keys_dyn, staged_cap, hist_rows);
}

// Multi-block top-k of one token (decode at long context). Workspace: hist [65536] | ctl [8]
// (0: threshold bin, 1: keys above it, 2/3: fill counters of the two lists) | above [topk] |
// cand [kCand] (u64 = ~key << 32 | index: ascending order = key descending, index ascending).
constexpr int kHistBins = 65536;
constexpr int kCand = 8192;
constexpr int kLargeThreads = 256;

__device__ int64_t visible_rows(const int32_t* p0) {
  return ((int64_t)p0[0] + 1) / 4;
}

// Keys per thread and trip of the histogram and collect kernels: their loads are issued before
// any atomic (one key per trip waited on the L2 once per key: 21 us for 128K rows at 512K).
constexpr int kLargeKeys = 4;

// f(order key, row) for each visible row of sc, grid-strided, the loads of a trip issued first.
template <class F>
__device__ __forceinline__ void for_each_key_grid(const float* sc, int64_t visible, F f) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t r0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r0 < visible;
       r0 += kLargeKeys * stride) {
    float v[kLargeKeys];
#pragma unroll
    for (int u = 0; u < kLargeKeys; ++u) v[u] = r0 + u * stride < visible ? sc[r0 + u * stride] : 0;
#pragma unroll
    for (int u = 0; u < kLargeKeys; ++u)
      if (r0 + u * stride < visible) f(order_key(v[u]), r0 + u * stride);
  }
}

__global__ void topk_hist_kernel(const float* sc, int topk, const int32_t* p0, int* hist) {
  pdl_trigger();
  pdl_wait();
  const int64_t visible = visible_rows(p0);
  if (visible <= topk) return;
  for_each_key_grid(sc, visible, [&](uint32_t k, int64_t) { atomicAdd(&hist[k >> 16], 1); });
}

// One block of kTopkThreads: the bin holding the topk-th largest key, by suffix sums over groups
// of 64 bins.
__global__ void topk_thresh_kernel(int topk, const int32_t* p0, const int* hist, int* ctl) {
  pdl_trigger();
  pdl_wait();
  __shared__ int scan_sh[33];
  const int64_t visible = visible_rows(p0);
  if (visible <= topk) return;
  constexpr int kPer = kHistBins / kTopkThreads;
  const int g = kTopkThreads - 1 - (int)threadIdx.x;  // thread 0 takes the highest group
  // The group's 64 bins as 16-byte loads, eight in flight (a serial loop of 4-byte loads took
  // ~38 us for the 256 KiB).
  static_assert(kPer % 32 == 0);
  const int4* h4 = reinterpret_cast<const int4*>(hist + g * kPer);
  int sum = 0;
#pragma unroll
  for (int b0 = 0; b0 < kPer / 4; b0 += 8) {
    int4 v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) v[u] = h4[b0 + u];
#pragma unroll
    for (int u = 0; u < 8; ++u) sum += (v[u].x + v[u].y) + (v[u].z + v[u].w);
  }
  int total = 0;
  const int higher = block_exclusive_scan(sum, scan_sh, &total);
  __shared__ int gsel, gcum;
  if (higher < topk && higher + sum >= topk) {
    gsel = g;
    gcum = higher;
  }
  __syncthreads();
  // Warp 0 walks the crossing group's bins from the top, two per lane, by one scan (one thread
  // walking them waited on the L2 once per bin: ~12 us at 512K).
  if (threadIdx.x < 32) {
    static_assert(kPer == 64, "two bins per lane");
    const int lane = (int)threadIdx.x, gg = gsel;
    const int b0 = gg * kPer + kPer - 1 - 2 * lane;  // this lane's higher bin; b0 - 1 the other
    const int h0 = hist[b0], h1 = hist[b0 - 1];
    int incl = h0 + h1;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    const int before = gcum + incl - (h0 + h1);  // keys in the bins above this lane's two
    if (before < topk && before + h0 >= topk) {
      ctl[0] = b0;
      ctl[1] = before;
    } else if (before + h0 < topk && before + h0 + h1 >= topk) {
      ctl[0] = b0 - 1;
      ctl[1] = before + h0;
    }
    if (lane == 0) {
      ctl[2] = 0;
      ctl[3] = 0;
    }
  }
}

__global__ void topk_collect_kernel(const float* sc, int topk, const int32_t* p0, int* ctl,
                                    int32_t* above, uint64_t* cand) {
  pdl_trigger();
  pdl_wait();
  const int64_t visible = visible_rows(p0);
  if (visible <= topk) return;
  const uint32_t bstar = (uint32_t)ctl[0];
  for_each_key_grid(sc, visible, [&](uint32_t k, int64_t r) {
    const uint32_t bin = k >> 16;
    if (bin > bstar) {
      const int pos = atomicAdd(&ctl[2], 1);
      if (pos < topk) above[pos] = (int32_t)r;
    } else if (bin == bstar) {
      const int pos = atomicAdd(&ctl[3], 1);
      if (pos < kCand) cand[pos] = ((uint64_t)~k << 32) | (uint64_t)r;
    }
  });
}

// Ascending bitonic sort of a[0..n) (n a power of two) by the whole block.
__device__ void bitonic_sort(uint64_t* a, int n) {
  for (int k = 2; k <= n; k <<= 1)
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int ixj = i ^ j;
        if (ixj > i) {
          const bool up = (i & k) == 0;
          const uint64_t x = a[i], y = a[ixj];
          if ((x > y) == up) {
            a[i] = y;
            a[ixj] = x;
          }
        }
      }
      __syncthreads();
    }
}

__device__ int pow2_at_least(int n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

// One block of kTopkThreads. Dynamic shared memory: (kCand + pow2(topk)) u64 (>= kFinalRankMax u64
// and as many int32 for the rank path).
constexpr int kFinalRankMax = 1024;
__global__ void topk_final_kernel(const float* sc, int topk, const int32_t* p0, const int* ctl,
                                  const int32_t* above, const uint64_t* cand, int32_t* sel) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ uint64_t tk_sh[];
  const int64_t visible = visible_rows(p0);
  if (visible <= topk) return;
  const int n_above = ctl[1], n_cand = ctl[3];
  if (n_cand > kCand || ctl[2] != n_above) {  // a huge tie bin: the exact one-block selection
    topk_one_block(sc, visible, topk, sel, nullptr, 0);  // visible >= kLargeTopkRows: unstaged
    return;
  }
  if (n_cand <= kFinalRankMax && topk <= kFinalRankMax) {
    // Few candidates: the need best of them by rank counts (their u64 values are distinct: the
    // rows differ), then the topk rows ordered by rank counts too. Two bitonic sorts crossed ~90
    // barriers (~13 us at 512K context).
    uint64_t* a = tk_sh;
    int32_t* rows = reinterpret_cast<int32_t*>(tk_sh + kFinalRankMax);
    for (int i = threadIdx.x; i < n_cand; i += blockDim.x) a[i] = cand[i];
    for (int i = threadIdx.x; i < n_above; i += blockDim.x) rows[i] = above[i];
    __syncthreads();
    const int need = topk - n_above;
    for (int i = threadIdx.x; i < n_cand; i += blockDim.x) {
      const uint64_t v = a[i];
      int rank = 0;
      for (int j = 0; j < n_cand; ++j) rank += a[j] < v;
      if (rank < need) rows[n_above + rank] = (int32_t)(v & 0xffffffffull);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < topk; i += blockDim.x) {
      const int32_t v = rows[i];
      int pos = 0;
      for (int j = 0; j < topk; ++j) pos += rows[j] < v;
      sel[pos] = v;
    }
    return;
  }
  uint64_t* a = tk_sh;
  const int n = pow2_at_least(n_cand);
  for (int i = threadIdx.x; i < n; i += blockDim.x) a[i] = i < n_cand ? cand[i] : ~0ull;
  __syncthreads();
  bitonic_sort(a, n);
  uint64_t* f = tk_sh + kCand;
  const int m = pow2_at_least(topk);
  for (int i = threadIdx.x; i < m; i += blockDim.x) {
    uint64_t v = ~0ull;
    if (i < n_above)
      v = (uint64_t)(uint32_t)above[i];
    else if (i < topk)
      v = a[i - n_above] & 0xffffffffull;
    f[i] = v;
  }
  __syncthreads();
  bitonic_sort(f, m);
  for (int i = threadIdx.x; i < topk; i += blockDim.x) sel[i] = (int32_t)f[i];
}

}  // namespace

int64_t topk_large_workspace_bytes(int topk) {
  return (int64_t)sizeof(int) * (kHistBins + 8 + topk) + 8 + (int64_t)sizeof(uint64_t) * kCand;
}

void idx_topk_large(const float* scores, int topk, const int32_t* p0, int grid_rows,
                    void* workspace, int32_t* sel, cudaStream_t s) {
  if (topk > kCand) throw_invalid_argument("idx_topk_large: topk > 8192");
  auto* hist = static_cast<int*>(workspace);
  int* ctl = hist + kHistBins;
  int32_t* above = ctl + 8;
  auto addr = reinterpret_cast<uintptr_t>(above + topk);
  auto* cand = reinterpret_cast<uint64_t*>((addr + 7) & ~uintptr_t{7});
  DSV4_CUDA_CHECK(cudaMemsetAsync(hist, 0, sizeof(int) * kHistBins, s));
  // kLargeKeys keys per thread and trip, one trip at most rows (the grid fills the GPU).
  const int64_t want =
      ((int64_t)grid_rows + kLargeThreads * kLargeKeys - 1) / (kLargeThreads * kLargeKeys);
  const unsigned blocks = (unsigned)std::max<int64_t>(1, std::min<int64_t>(want, 2048));
  launch_k(topk_hist_kernel, blocks, kLargeThreads, 0, s, scores, topk, p0, hist);
  FWD_LAUNCH_CHECK("topk_hist_kernel");
  launch_k(topk_thresh_kernel, 1, kTopkThreads, 0, s, topk, p0, hist, ctl);
  FWD_LAUNCH_CHECK("topk_thresh_kernel");
  launch_k(topk_collect_kernel, blocks, kLargeThreads, 0, s, scores, topk, p0, ctl, above, cand);
  FWD_LAUNCH_CHECK("topk_collect_kernel");
  int m = 1;
  while (m < topk) m <<= 1;
  const size_t smem = sizeof(uint64_t) * (size_t)(kCand + m);
  DSV4_CUDA_CHECK(cudaFuncSetAttribute(topk_final_kernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  launch_k(topk_final_kernel, 1, kTopkThreads, smem, s, scores, topk, p0, ctl, above, cand, sel);
  FWD_LAUNCH_CHECK("topk_final_kernel");
}

void idx_q(float* iq, int n, int IH, int ID, int rd, const float* freqs, const int32_t* p0,
           bool qat, cudaStream_t s) {
  if (ID > kMaxId || (ID & (ID - 1)) != 0)
    throw_invalid_argument("cuda forward: indexer head dim must be a power of 2 <= 1024");
  launch_k(idx_q_kernel, dim3((unsigned)n, (unsigned)((IH + kIdxQHeads - 1) / kIdxQHeads)),
           32 * kIdxQHeads, sizeof(float) * (size_t)(rd + kIdxQHeads * ID), s, iq, IH, ID, rd,
           freqs, p0, qat);
  FWD_LAUNCH_CHECK("idx_q_kernel");
}

// Most indexer rows for which a decode token takes idx_scores_decode_kernel (its LDS-bound inner
// loop loses to the tiled kernel once the tiled grid fills the GPU); DSV4_IDX_DECODE_ROWS for
// A/B timing (0: never).
int idx_scores_decode_max_rows() {
  static const int v = [] {
    const char* e = std::getenv("DSV4_IDX_DECODE_ROWS");
    return e ? std::max(0, std::atoi(e)) : 4096;
  }();
  return v;
}

void idx_scores(const float* iq, const float* iw, const float* krows, int n, int IH, int ID,
                int topk, float wscale, const int32_t* p0, int grid_rows, int score_stride,
                float* scores, cudaStream_t s) {
  if (grid_rows <= 0) return;
  const bool aligned =
      (reinterpret_cast<uintptr_t>(iq) & 15) == 0 && (reinterpret_cast<uintptr_t>(krows) & 15) == 0;
  if (n == 1 && IH <= kDecHeads && ID % 4 == 0 && ID <= kDecMaxId && aligned &&
      grid_rows <= idx_scores_decode_max_rows()) {
    // About two blocks per SM: rows per warp grow with the grid so q is staged ~256 times.
    const int rpw = std::max(1, (grid_rows + kDecWarps * 256 - 1) / (kDecWarps * 256));
    const int blocks = (grid_rows + kDecWarps * rpw - 1) / (kDecWarps * rpw);
    launch_k(idx_scores_decode_kernel, blocks, 32 * kDecWarps, idx_scores_decode_smem(ID), s, iq,
             iw, krows, IH, ID, topk, wscale, p0, rpw, scores);
    FWD_LAUNCH_CHECK("idx_scores_decode_kernel");
    return;
  }
  if (IH <= kTileHeads && ID % kTileDims == 0 && aligned) {
    launch_k(idx_scores_tiled_kernel,
             dim3((unsigned)((grid_rows + kTileRows - 1) / kTileRows), (unsigned)n), 256, 0, s, iq,
             iw, krows, IH, ID, topk, wscale, p0, grid_rows, score_stride, scores);
    FWD_LAUNCH_CHECK("idx_scores_tiled_kernel");
    return;
  }
  const unsigned bx = (unsigned)((grid_rows + kScoreWarps - 1) / kScoreWarps);
  launch_k(idx_scores_kernel, dim3(bx, (unsigned)n), kScoreWarps * 32, 0, s, iq, iw, krows, IH, ID,
           topk, wscale, p0, score_stride, scores);
  FWD_LAUNCH_CHECK("idx_scores_kernel");
}

bool idx_scores_tf32_ok(const float* iq, const float* krows, int IH, int ID) {
  return IH >= 1 && IH <= kMmaHeads && ID >= 8 && ID <= kMmaMaxId && ID % 8 == 0 &&
         (reinterpret_cast<uintptr_t>(iq) & 15) == 0 &&
         (reinterpret_cast<uintptr_t>(krows) & 15) == 0;
}

void idx_scores_tf32(const float* iq, const float* iw, const float* krows, int IH, int ID, int topk,
                     float wscale, const int32_t* p0, int grid_rows, float* scores,
                     cudaStream_t s) {
  if (grid_rows <= 0) return;
  if (!idx_scores_tf32_ok(iq, krows, IH, ID))
    throw_invalid_argument("idx_scores_tf32: needs <= 64 heads, head dim a multiple of 8 <= 128");
  static const bool attr_set = [] {
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(idx_scores_tf32_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)idx_scores_tf32_smem(kMmaMaxId)));
    return true;
  }();
  (void)attr_set;
  // About two resident blocks per SM walk the row tiles (DSV4_IDX_TF32_BLOCKS_PER_SM for A/B).
  static const int per_sm = [] {
    const char* e = std::getenv("DSV4_IDX_TF32_BLOCKS_PER_SM");
    return e ? std::max(1, std::atoi(e)) : 2;
  }();
  const int tiles = (grid_rows + kMmaRows - 1) / kMmaRows;
  const int blocks = std::min(tiles, per_sm * current_device_info().sm_count);
  launch_k(idx_scores_tf32_kernel, blocks, kMmaThreads, idx_scores_tf32_smem(ID), s, iq, iw,
           krows, IH, ID, topk, wscale, p0, grid_rows, scores);
  FWD_LAUNCH_CHECK("idx_scores_tf32_kernel");
}

void idx_reduce(const float* dots, const float* iw, int n, int IH, int rows, float wscale,
                const int32_t* p0, int i0, int topk, int score_stride, float* scores,
                cudaStream_t s) {
  if (rows <= 0 || n <= 0) return;
  launch_k(idx_reduce_kernel, dim3((unsigned)((rows + 255) / 256), (unsigned)n), 256, 0, s, dots,
           iw, IH, rows, wscale, p0, i0, topk, score_stride, scores);
  FWD_LAUNCH_CHECK("idx_reduce_kernel");
}

// Rows up to which a block of kTopkSmallThreads does the selection: its barriers and the serial
// warp loop of block_exclusive_scan cost a quarter of a 1024-thread block's, and a few hundred or
// thousand rows leave most of 1024 threads idle. DSV4_TOPK_SMALL_ROWS for A/B timing (0: never).
constexpr int kTopkSmallThreads = 256;  // >= 256: thread j scans bin 255 - j
int64_t idx_topk_small_rows() {
  static const int64_t v = [] {
    const char* e = std::getenv("DSV4_TOPK_SMALL_ROWS");
    return e ? std::max<int64_t>(0, std::atoll(e)) : int64_t{4096};
  }();
  return v;
}

void idx_topk(const float* scores, int n, int score_stride, int topk, const int32_t* p0,
              int32_t* sel, cudaStream_t s, int64_t max_rows) {
  // DSV4_TOPK_DECODE_KEYS: the decode staging limit, for A/B timing (4096: as a chunk's blocks).
  static const int decode_keys = [] {
    const char* e = std::getenv("DSV4_TOPK_DECODE_KEYS");
    return e ? std::clamp(std::atoi(e), 0, kTopkSmemKeysDecode) : kTopkSmemKeysDecode;
  }();
  // DSV4_TOPK_HIST_ROWS: the fewest rows for the decode histogram path (0: never), for A/B timing.
  static const int hist_rows_env = [] {
    const char* e = std::getenv("DSV4_TOPK_HIST_ROWS");
    return e ? std::max(0, std::atoi(e)) : kTopkHistRows;
  }();
  const int cap = std::min(score_stride, n == 1 ? decode_keys : kTopkSmemKeys);
  const int threads =
      max_rows > 0 && max_rows <= idx_topk_small_rows() ? kTopkSmallThreads : kTopkThreads;
  // One decode block of kTopkThreads: the histogram and its candidates after the keys.
  const int hist_rows = n == 1 && threads == kTopkThreads ? hist_rows_env : 0;
  const size_t smem = (size_t)((std::max(cap, 1) + 3) & ~3) * sizeof(uint32_t) +
                      (hist_rows > 0 ? kTopkHistBytes : 0);
  static const bool attr_set = [] {
    DSV4_CUDA_CHECK(
        cudaFuncSetAttribute(idx_topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)(kTopkSmemKeysDecode * sizeof(uint32_t) + kTopkHistBytes)));
    return true;
  }();
  (void)attr_set;
  launch_k(idx_topk_kernel, n, threads, smem, s, scores, score_stride, topk, p0, sel, cap,
           hist_rows);
  FWD_LAUNCH_CHECK("idx_topk_kernel");
}

}  // namespace dsv4::cuda::fwd
