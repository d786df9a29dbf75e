// Lightning indexer kernels (spec/ARCH.md §5.5): query preparation, scores over the visible
// indexer rows, and the top-k selection (score descending, exact ties to the lower index, output
// sorted by index) by radix select.
#include "cuda/fwd_common.cuh"
#include "cuda/fwd_kernels.h"

namespace dsv4::cuda::fwd {

namespace {

constexpr int kMaxId = 1024;
constexpr int kScoreWarps = 8;
constexpr int kTopkThreads = 1024;

__global__ void idx_q_kernel(float* iq, int IH, int ID, int rd, const float* freqs,
                             const int32_t* p0, bool qat) {
  __shared__ float v[kMaxId];
  const int h = blockIdx.x, i = blockIdx.y;
  float* x = iq + ((int64_t)i * IH + h) * ID;
  for (int d = threadIdx.x; d < ID; d += blockDim.x) v[d] = x[d];
  __syncthreads();
  const int64_t pos = (int64_t)p0[0] + i;
  for (int k = threadIdx.x; k < rd / 2; k += blockDim.x)
    rope_pair(v + (ID - rd), freqs, k, pos, false);
  hadamard_block(v, ID);
  if (qat)
    for (int b = (threadIdx.x >> 5) * 32; b < ID; b += (blockDim.x >> 5) * 32)
      fp4_sim_block_warp(v + b, 32);
  __syncthreads();
  for (int d = threadIdx.x; d < ID; d += blockDim.x) x[d] = v[d];
}

// One warp per (token, row).
__global__ void idx_scores_kernel(const float* iq, const float* iw, const float* krows, int IH,
                                  int ID, int topk, float wscale, const int32_t* p0,
                                  int score_stride, float* scores) {
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

// scores[i][r] = sum_h max(dots[i][h][r], 0) * (iw[i][h] * wscale) for the rows a token sees,
// from the query-row dot products of a GEMM (dots [n][IH][rows]); token i is chunk token i0 + i.
__global__ void idx_reduce_kernel(const float* dots, const float* iw, int IH, int rows,
                                  float wscale, const int32_t* p0, int i0, int topk,
                                  int score_stride, float* scores) {
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

__device__ __forceinline__ uint32_t order_key(float v) {
  if (v == 0.0f) return 0x80000000u;  // -0 and +0 compare equal, as on the CPU
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
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

__global__ void idx_topk_kernel(const float* scores, int score_stride, int topk, const int32_t* p0,
                                int32_t* sel) {
  __shared__ int hist[256];
  __shared__ uint32_t prefix_sh;
  __shared__ int need_sh;
  __shared__ int scan_sh[33];
  const int i = blockIdx.x;
  const int64_t p = (int64_t)p0[0] + i;
  const int64_t visible = (p + 1) / 4;
  if (visible <= topk) return;
  const float* sc = scores + (int64_t)i * score_stride;
  uint32_t prefix = 0, mask = 0;
  int need = topk;  // how many of the keys matching `prefix` are still to be taken
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    for (int64_t r = threadIdx.x; r < visible; r += blockDim.x) {
      const uint32_t k = order_key(sc[r]);
      if ((k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int cum = 0, dg = 255;
      for (; dg > 0; --dg) {
        if (cum + hist[dg] >= need) break;
        cum += hist[dg];
      }
      need_sh = need - cum;
      prefix_sh = prefix | ((uint32_t)dg << shift);
    }
    __syncthreads();
    need = need_sh;
    prefix = prefix_sh;
    mask |= 0xffu << shift;
    __syncthreads();
  }
  // prefix = the k-th largest key; take every larger key and the first `need` equal ones.
  const uint32_t T = prefix;
  int eq_base = 0, out_base = 0;
  int32_t* out = sel + (int64_t)i * topk;
  for (int64_t c0 = 0; c0 < visible; c0 += blockDim.x) {
    const int64_t r = c0 + threadIdx.x;
    uint32_t k = 0;
    if (r < visible) k = order_key(sc[r]);
    const int is_eq = r < visible && k == T;
    const int is_gt = r < visible && k > T;
    int eq_total = 0;
    const int eq_rank = eq_base + block_exclusive_scan(is_eq, scan_sh, &eq_total);
    const int take = is_gt || (is_eq && eq_rank < need);
    int take_total = 0;
    const int pos = out_base + block_exclusive_scan(take, scan_sh, &take_total);
    if (take && pos < topk) out[pos] = (int32_t)r;
    eq_base += eq_total;
    out_base += take_total;
  }
}

}  // namespace

void idx_q(float* iq, int n, int IH, int ID, int rd, const float* freqs, const int32_t* p0,
           bool qat, cudaStream_t s) {
  if (ID > kMaxId || (ID & (ID - 1)) != 0)
    throw_invalid_argument("cuda forward: indexer head dim must be a power of 2 <= 1024");
  idx_q_kernel<<<dim3((unsigned)IH, (unsigned)n), 128, 0, s>>>(iq, IH, ID, rd, freqs, p0, qat);
  FWD_LAUNCH_CHECK("idx_q_kernel");
}

void idx_scores(const float* iq, const float* iw, const float* krows, int n, int IH, int ID,
                int topk, float wscale, const int32_t* p0, int grid_rows, int score_stride,
                float* scores, cudaStream_t s) {
  if (grid_rows <= 0) return;
  const unsigned bx = (unsigned)((grid_rows + kScoreWarps - 1) / kScoreWarps);
  idx_scores_kernel<<<dim3(bx, (unsigned)n), kScoreWarps * 32, 0, s>>>(
      iq, iw, krows, IH, ID, topk, wscale, p0, score_stride, scores);
  FWD_LAUNCH_CHECK("idx_scores_kernel");
}

void idx_reduce(const float* dots, const float* iw, int n, int IH, int rows, float wscale,
                const int32_t* p0, int i0, int topk, int score_stride, float* scores,
                cudaStream_t s) {
  if (rows <= 0 || n <= 0) return;
  idx_reduce_kernel<<<dim3((unsigned)((rows + 255) / 256), (unsigned)n), 256, 0, s>>>(
      dots, iw, IH, rows, wscale, p0, i0, topk, score_stride, scores);
  FWD_LAUNCH_CHECK("idx_reduce_kernel");
}

void idx_topk(const float* scores, int n, int score_stride, int topk, const int32_t* p0,
              int32_t* sel, cudaStream_t s) {
  idx_topk_kernel<<<n, kTopkThreads, 0, s>>>(scores, score_stride, topk, p0, sel);
  FWD_LAUNCH_CHECK("idx_topk_kernel");
}

}  // namespace dsv4::cuda::fwd
