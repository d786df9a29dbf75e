// Attention sublayer kernels: q/kv normalisation + RoPE (+FP8 sim), the compressors with their
// frontier state, sparse attention with sinks, and the raw-window ring update.
#include <algorithm>
#include <cstdlib>

#include "cuda/device.h"
#include "cuda/fwd_attention_keys.cuh"
#include "cuda/fwd_common.cuh"
#include "cuda/fwd_kernels.h"
#include "cuda/pdl.cuh"

namespace dsv4::cuda::fwd {

namespace {

constexpr int kThreads = 128;
constexpr int kMaxWidth = 1024;  // head dims handled by the emit kernel's shared buffer

// Block (token i, heads 8 y .. 8 y + 7), one warp per head. The rotation's cos/sin (double
// precision, as rope_pair) are computed once per block for the 8 heads: one block of 128 threads
// per (head, token), each evaluating them again, took 0.82 ms per layer of an 8K chunk.
// A ninth warp evaluates them while the eight normalize their heads, instead of warp 0 first.
constexpr int kQnrHeads = 8;
__global__ void __launch_bounds__(32 * (kQnrHeads + 1))
    q_norm_rope_kernel(float* q, int H, int hd, int rd, const float* freqs, const int32_t* p0,
                       float eps) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ float cs_sh[];  // [rd / 2][cos, sin]
  const int i = blockIdx.x, lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  const int h = blockIdx.y * kQnrHeads + wid;
  const int64_t pos = (int64_t)p0[0] + i;
  const bool norm = wid < kQnrHeads && h < H;
  float* qh = q + ((int64_t)i * H + h) * hd;
  if (norm) {
    float ss = 0.0f;
    for (int d = lane; d < hd; d += 32) ss += qh[d] * qh[d];
    ss = warp_sum(ss);
    const float r = 1.0f / sqrtf(ss / (float)hd + eps);
    for (int d = lane; d < hd; d += 32) qh[d] = qh[d] * r;
  } else if (wid == kQnrHeads) {
    rope_cos_sin(cs_sh, freqs, rd, pos, lane, 32);
  }
  __syncthreads();
  if (!norm) return;
  for (int k = lane; k < rd / 2; k += 32) rope_pair_cs(qh + (hd - rd), cs_sh, k, false);
}

__global__ void kv_norm_rope_kernel(const float* kv, const float* w, int hd, int rd,
                                    const float* freqs, const int32_t* p0, float eps, bool qat,
                                    float* kvn, float* ring, int W) {
  pdl_trigger();
  pdl_wait();
  __shared__ float red[33];
  const int i = blockIdx.x;
  const float* x = kv + (int64_t)i * hd;
  float* r = kvn + (int64_t)i * hd;
  float ss = 0.0f;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) ss += x[d] * x[d];
  ss = block_sum(ss, red);
  const float rs = 1.0f / sqrtf(ss / (float)hd + eps);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) r[d] = w[d] * (x[d] * rs);
  __syncthreads();
  const int64_t pos = (int64_t)p0[0] + i;
  for (int k = threadIdx.x; k < rd / 2; k += blockDim.x)
    rope_pair(r + (hd - rd), freqs, k, pos, false);
  __syncthreads();
  if (qat)
    for (int b = (threadIdx.x >> 5) * 64; b < hd - rd; b += (blockDim.x >> 5) * 64)
      fp8_sim_block_warp(r + b, 64);
  if (ring) {  // one token: its slot holds position pos - W, outside its own window
    __syncthreads();
    float* dst = ring + (pos % W) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) dst[d] = r[d];
  }
}

// The compressor frontier (§5.4) for a chunk of n tokens, in two parallel passes over the state
// S0 it had before the chunk; the result equals the token-by-token recurrence bit for bit.
// State layout: slot_w = lanes * width columns per slot; without overlap (ratio 128) slot j holds
// the open window's token j; with overlap (ratio 4, two lanes) slots ratio + j hold the open
// window and slots j the previous, closed one (moved there when it closed).
//
// Pass 1, thread (column d < width, token i): if token i closes a window, pool its candidates —
// (overlap) the previous window's tokens on lane 0, then the window's own tokens (lane 1 with
// overlap, else lane 0) — taking each from the chunk (position >= p0) or from S0, with the
// recurrence's operations in its order (max, then exp-sums in candidate order).
__global__ void compressor_pool_kernel(const float* kv, const float* score, const float* ape, int n,
                                       int ratio, int width, const int32_t* p0, const float* skv,
                                       const float* ssc, float* pooled) {
  pdl_trigger();
  pdl_wait();
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  const int i = blockIdx.y;
  if (d >= width) return;
  const int64_t base = p0[0], p = base + i;
  if (p % ratio != ratio - 1) return;
  const bool overlap = ratio == 4;
  const int slot_w = (overlap ? 2 : 1) * width;
  const int64_t w0 = base - base % ratio;  // the window open at the chunk start
  const int n_cand = overlap ? 2 * ratio : ratio;
  const int64_t first = p + 1 - (int64_t)n_cand;  // position of candidate 0
  auto fetch = [&](int c, float& sc, float& v) {
    const int64_t q = first + c;
    const int col = (overlap && c >= ratio ? width : 0) + d;
    const int j = (int)(q % ratio);
    if (q < 0) {  // before the first window: the initial state (-inf score)
      sc = -INFINITY;
      v = 0.0f;
    } else if (q >= base) {
      const int64_t off = (q - base) * slot_w + col;
      sc = score[off] + ape[(int64_t)j * slot_w + col];
      v = kv[off];
    } else {
      const int slot = overlap && q >= w0 ? ratio + j : j;
      sc = ssc[(int64_t)slot * slot_w + col];
      v = skv[(int64_t)slot * slot_w + col];
    }
  };
  float mx = -INFINITY;
  for (int c = 0; c < n_cand; ++c) {
    float sc, v;
    fetch(c, sc, v);
    mx = fmaxf(mx, sc);
  }
  float den = 0.0f, num = 0.0f;
  for (int c = 0; c < n_cand; ++c) {
    float sc, v;
    fetch(c, sc, v);
    const float e = expf(sc - mx);
    den += e;
    num += e * v;
  }
  pooled[(int64_t)i * width + d] = num / den;
}

// Pass 2, thread per state column: the state after the chunk. The open window at the end keeps
// its tokens so far (from the chunk, or unchanged from S0 when it was already open); with overlap
// slots j take the last closed window (chunk or S0). Slots of tokens not yet seen keep stale
// values, which the recurrence never reads either.
__global__ void compressor_state_kernel(const float* kv, const float* score, const float* ape,
                                        int n, int ratio, int width, const int32_t* p0, float* skv,
                                        float* ssc) {
  pdl_trigger();
  pdl_wait();
  const bool overlap = ratio == 4;
  const int slot_w = (overlap ? 2 : 1) * width;
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  const int j = blockIdx.y;  // slot pair (j, ratio + j) with overlap, slot j without
  if (col >= slot_w) return;
  const int64_t base = p0[0], e = base + n;
  const int64_t w0 = base - base % ratio, w_end = e - e % ratio;
  const int64_t q_open = w_end + j;          // the open window's token j
  const int64_t q_prev = w_end - ratio + j;  // overlap: the last closed window's token j
  const int64_t open_slot = (int64_t)(overlap ? ratio + j : j) * slot_w + col;
  const int64_t prev_slot = (int64_t)j * slot_w + col;
  const bool new_open = q_open < e && q_open >= base;
  const bool new_prev = overlap && q_prev >= 0 && w_end != w0;
  if (!new_open && !new_prev) return;
  float ok = skv[open_slot], os = ssc[open_slot];
  if (new_prev) {
    float pk, ps;
    if (q_prev >= base) {
      const int64_t off = (q_prev - base) * slot_w + col;
      pk = kv[off];
      ps = score[off] + ape[(int64_t)j * slot_w + col];
    } else {  // the window open at the chunk start, closed inside the chunk
      pk = ok;
      ps = os;
    }
    skv[prev_slot] = pk;
    ssc[prev_slot] = ps;
  }
  if (new_open) {
    const int64_t off = (q_open - base) * slot_w + col;
    ok = kv[off];
    os = score[off] + ape[(int64_t)j * slot_w + col];
  }
  skv[open_slot] = ok;
  ssc[open_slot] = os;
}

__global__ void compressor_emit_kernel(const float* pooled, const float* w, int ratio, int width,
                                       int rd, const float* freqs, const int32_t* p0, float eps,
                                       int mode, bool qat, float* rows) {
  pdl_trigger();
  pdl_wait();
  __shared__ float red[33];
  __shared__ float r[kMaxWidth];
  const int i = blockIdx.x;
  const int64_t pos = (int64_t)p0[0] + i;
  if ((pos + 1) % ratio != 0) return;
  const int64_t row = (pos + 1) / ratio - 1;
  const float* x = pooled + (int64_t)i * width;
  float ss = 0.0f;
  for (int d = threadIdx.x; d < width; d += blockDim.x) ss += x[d] * x[d];
  ss = block_sum(ss, red);
  const float rs = 1.0f / sqrtf(ss / (float)width + eps);
  for (int d = threadIdx.x; d < width; d += blockDim.x) r[d] = w[d] * (x[d] * rs);
  __syncthreads();
  for (int k = threadIdx.x; k < rd / 2; k += blockDim.x)
    rope_pair(r + (width - rd), freqs, k, pos + 1 - ratio, false);
  __syncthreads();
  if (mode == 0) {
    if (qat)
      for (int b = (threadIdx.x >> 5) * 64; b < width - rd; b += (blockDim.x >> 5) * 64)
        fp8_sim_block_warp(r + b, 64);
  } else {
    hadamard_block(r, width);
    if (qat)
      for (int b = (threadIdx.x >> 5) * 32; b < width; b += (blockDim.x >> 5) * 32)
        fp4_sim_block_warp(r + b, 32);
  }
  __syncthreads();
  float* out = rows + row * width;
  for (int d = threadIdx.x; d < width; d += blockDim.x) out[d] = r[d];
}

// One block per (head, token). Dynamic shared memory: hd floats (q, then the output) + max_keys
// floats (scores, then weights).
__global__ void attention_kernel(const float* q, const float* kvn, const float* ring,
                                 const float* comp, const int32_t* sel, const float* sinks, int H,
                                 int hd, int rd, int W, int ratio, int topk, const float* freqs,
                                 const int32_t* p0, float* o) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ float smem[];
  __shared__ float red[33];
  __shared__ float den_sh;
  float* qs = smem;
  float* sc = smem + hd;
  const int h = blockIdx.x, i = blockIdx.y;
  const int64_t base = p0[0];
  const int64_t p = base + i;
  const QueryKeys qk(base, p, ratio, topk, W);
  const int nk = qk.nk;
  const float* qh = q + ((int64_t)i * H + h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = qh[d];
  __syncthreads();
  auto key = [&](int j) { return qk.row(j, sel + (int64_t)i * topk, comp, kvn, ring, W, hd); };
  const float scale = 1.0f / sqrtf((float)hd);
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int j = wid; j < nk; j += nw) {
    const float* k = key(j);
    float acc = 0.0f;
    for (int d = lane; d < hd; d += 32) acc += qs[d] * k[d];
    acc = warp_sum(acc);
    if (lane == 0) sc[j] = acc * scale;
  }
  __syncthreads();
  const float sink = sinks[h];
  float mx = sink;
  for (int j = threadIdx.x; j < nk; j += blockDim.x) mx = fmaxf(mx, sc[j]);
  mx = block_max(mx, red);
  for (int j = threadIdx.x; j < nk; j += blockDim.x) sc[j] = expf(sc[j] - mx);
  __syncthreads();
  if (threadIdx.x == 0) {
    float den = expf(sink - mx);
    for (int j = 0; j < nk; ++j) den += sc[j];
    den_sh = den;
  }
  __syncthreads();
  const float den = den_sh;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j < nk; ++j) acc += sc[j] * key(j)[d];
    qs[d] = acc / den;
  }
  __syncthreads();
  for (int k = threadIdx.x; k < rd / 2; k += blockDim.x)
    rope_pair(qs + (hd - rd), freqs, k, p, true);
  __syncthreads();
  float* oh = o + ((int64_t)i * H + h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) oh[d] = qs[d];
}

// The same attention, faster: key row pointers resolved once into shared memory, float4 loads,
// 4 keys in flight per warp for the scores, a parallel softmax denominator, and the weighted sum
// split over kAttGroups key groups per output element (combined in a fixed order).
// Needs hd % 4 == 0 and hd / 4 <= blockDim.x. Dynamic shared memory (attention_v4_smem):
// pointers [round_up(max_keys, 2)], q/out [hd], partial sums [G * hd], scores [max_keys].
constexpr int kAttThreads = 512;

size_t attention_v4_smem(int hd, int max_keys) {
  const int G = kAttThreads / (hd / 4);
  return sizeof(const float*) * (size_t)((max_keys + 1) & ~1) + sizeof(float) * (size_t)hd +
         sizeof(float) * (size_t)G * (size_t)hd + sizeof(float) * (size_t)max_keys;
}

__global__ void __launch_bounds__(kAttThreads)
    attention_v4_kernel(const float* q, const float* kvn, const float* ring, const float* comp,
                        const int32_t* sel, const float* sinks, int H, int hd, int rd, int W,
                        int ratio, int topk, const float* freqs, const int32_t* p0, int max_keys,
                        float* o) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ float red[33];
  const float** kp = reinterpret_cast<const float**>(smem_raw);
  float* qs = reinterpret_cast<float*>(kp + ((max_keys + 1) & ~1));
  const int nd4 = hd / 4;
  const int G = (int)blockDim.x / nd4;
  float* part = qs + hd;
  float* sc = part + (size_t)G * hd;
  const int h = blockIdx.x, i = blockIdx.y;
  const int64_t base = p0[0];
  const int64_t p = base + i;
  const QueryKeys qk(base, p, ratio, topk, W);
  const int nk = qk.nk;
  const float* qh = q + ((int64_t)i * H + h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = qh[d];
  for (int j = threadIdx.x; j < nk; j += blockDim.x)
    kp[j] = qk.row(j, sel + (int64_t)i * topk, comp, kvn, ring, W, hd);
  __syncthreads();
  const float scale = 1.0f / sqrtf((float)hd);
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const float4* q4 = reinterpret_cast<const float4*>(qs);
  for (int j0 = wid * 4; j0 < nk; j0 += nw * 4) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const float4* k4[4];
#pragma unroll
    for (int u = 0; u < 4; ++u)
      k4[u] = reinterpret_cast<const float4*>(kp[j0 + u < nk ? j0 + u : j0]);
    for (int d = lane; d < nd4; d += 32) {
      const float4 qv = q4[d];
      float4 kv[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) kv[u] = __ldg(k4[u] + d);
#pragma unroll
      for (int u = 0; u < 4; ++u)
        acc[u] += qv.x * kv[u].x + qv.y * kv[u].y + qv.z * kv[u].z + qv.w * kv[u].w;
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const float a = warp_sum(acc[u]);
      if (lane == 0 && j0 + u < nk) sc[j0 + u] = a * scale;
    }
  }
  __syncthreads();
  const float sink = sinks[h];
  float mx = sink;
  for (int j = threadIdx.x; j < nk; j += blockDim.x) mx = fmaxf(mx, sc[j]);
  mx = block_max(mx, red);
  float part_den = 0.0f;
  for (int j = threadIdx.x; j < nk; j += blockDim.x) {
    const float e = expf(sc[j] - mx);
    sc[j] = e;
    part_den += e;
  }
  const float den = block_sum(part_den, red) + expf(sink - mx);  // syncs: sc complete
  const int g = (int)threadIdx.x / nd4, d4 = (int)threadIdx.x % nd4;
  if (g < G) {
    float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    int j = g;
    for (; j + 3 * G < nk; j += 4 * G) {
      float4 kv[4];
      float w[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        kv[u] = __ldg(reinterpret_cast<const float4*>(kp[j + u * G]) + d4);
        w[u] = sc[j + u * G];
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        a.x += w[u] * kv[u].x;
        a.y += w[u] * kv[u].y;
        a.z += w[u] * kv[u].z;
        a.w += w[u] * kv[u].w;
      }
    }
    for (; j < nk; j += G) {
      const float4 kv = __ldg(reinterpret_cast<const float4*>(kp[j]) + d4);
      const float w = sc[j];
      a.x += w * kv.x;
      a.y += w * kv.y;
      a.z += w * kv.z;
      a.w += w * kv.w;
    }
    reinterpret_cast<float4*>(part + (size_t)g * hd)[d4] = a;
  }
  __syncthreads();
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int gg = 0; gg < G; ++gg) acc += part[(size_t)gg * hd + d];
    qs[d] = acc / den;
  }
  __syncthreads();
  for (int k = threadIdx.x; k < rd / 2; k += blockDim.x)
    rope_pair(qs + (hd - rd), freqs, k, p, true);
  __syncthreads();
  float* oh = o + ((int64_t)i * H + h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) oh[d] = qs[d];
}

// Multi-token (prefill) attention: block (g, i) takes the kMhHeads heads g*kMhHeads.. of token
// i, so each key row (shared by every head: the KV row is key and value) is read once per
// kMhHeads heads instead of once per head, and keys stream in chunks of 32 with an online
// softmax (the sink starts the running max and denominator). Per chunk: each warp scores four
// keys against all the block's heads (q in shared memory), warp h turns head h's 32 scores into
// weights, then thread (group, d4) accumulates float4 d4 of its heads' outputs. Needs
// 256 % (hd / 4) == 0 (hd = 4 * 2^k <= 1024) and H % kMhHeads == 0.
constexpr int kMhHeads = 8;
constexpr int kMhThreads = 256;
constexpr int kMhChunk = 32;
constexpr int kMhMaxHd = 1024;

__global__ void __launch_bounds__(kMhThreads)
    attention_mh_kernel(const float* q, const float* kvn, const float* ring, const float* comp,
                        const int32_t* sel, const float* sinks, int H, int hd, int rd, int W,
                        int ratio, int topk, const float* freqs, const int32_t* p0, float* o) {
  pdl_trigger();
  pdl_wait();
  __shared__ __align__(16) float qs[kMhHeads * kMhMaxHd];
  __shared__ float pw[kMhHeads][kMhChunk];
  __shared__ const float* kp[kMhChunk];
  __shared__ float m_run[kMhHeads], den[kMhHeads], alpha[kMhHeads];
  const int h0 = blockIdx.x * kMhHeads, i = blockIdx.y;
  const int64_t base = p0[0];
  const int64_t p = base + i;
  const QueryKeys qk(base, p, ratio, topk, W);
  const int nk = qk.nk;
  const int nd4 = hd / 4, groups = kMhThreads / nd4;
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  for (int t = threadIdx.x; t < kMhHeads * nd4; t += blockDim.x) {
    const int h = t / nd4, d4 = t % nd4;
    reinterpret_cast<float4*>(qs)[t] =
        reinterpret_cast<const float4*>(q + ((int64_t)i * H + h0 + h) * hd)[d4];
  }
  if (threadIdx.x < kMhHeads) {
    m_run[threadIdx.x] = sinks[h0 + threadIdx.x];
    den[threadIdx.x] = 1.0f;  // exp(sink - sink)
  }
  const float scale = 1.0f / sqrtf((float)hd);
  const int g = (int)threadIdx.x / nd4, d4 = (int)threadIdx.x % nd4;
  float4 acc[kMhHeads];
#pragma unroll
  for (int h = 0; h < kMhHeads; ++h) acc[h] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  const float4* q4 = reinterpret_cast<const float4*>(qs);
  for (int j0 = 0; j0 < nk; j0 += kMhChunk) {
    const int kc = min(kMhChunk, nk - j0);
    if (threadIdx.x < kc)
      kp[threadIdx.x] = qk.row(j0 + threadIdx.x, sel + (int64_t)i * topk, comp, kvn, ring, W, hd);
    __syncthreads();
    // Scores: warp wid takes keys wid, wid + 8, ... of the chunk.
    for (int jj = wid; jj < kc; jj += kMhThreads / 32) {
      const float4* k4 = reinterpret_cast<const float4*>(kp[jj]);
      float sc[kMhHeads];
#pragma unroll
      for (int h = 0; h < kMhHeads; ++h) sc[h] = 0.0f;
      for (int d = lane; d < nd4; d += 32) {
        const float4 kv = __ldg(k4 + d);
#pragma unroll
        for (int h = 0; h < kMhHeads; ++h) {
          const float4 qv = q4[h * nd4 + d];
          sc[h] += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
        }
      }
#pragma unroll
      for (int h = 0; h < kMhHeads; ++h) {
        const float v = warp_sum(sc[h]);
        if (lane == 0) pw[h][jj] = v * scale;
      }
    }
    __syncthreads();
    // Online softmax: warp h updates head h's running max and denominator.
    if (wid < kMhHeads) {
      const int h = wid;
      const float v = lane < kc ? pw[h][lane] : -INFINITY;
      const float m_new = fmaxf(m_run[h], warp_max(v));
      const float e = lane < kc ? expf(v - m_new) : 0.0f;
      const float sum = warp_sum(e);
      if (lane < kc) pw[h][lane] = e;
      __syncwarp();
      if (lane == 0) {
        const float a = expf(m_run[h] - m_new);
        alpha[h] = a;
        den[h] = den[h] * a + sum;
        m_run[h] = m_new;
      }
    }
    __syncthreads();
    if (g < groups) {
#pragma unroll
      for (int h = 0; h < kMhHeads; ++h) {
        if (h % groups != g) continue;
        const float a = alpha[h];
        acc[h].x *= a;
        acc[h].y *= a;
        acc[h].z *= a;
        acc[h].w *= a;
      }
      for (int jj = 0; jj < kc; ++jj) {
        const float4 kv = __ldg(reinterpret_cast<const float4*>(kp[jj]) + d4);
#pragma unroll
        for (int h = 0; h < kMhHeads; ++h) {
          if (h % groups != g) continue;
          const float w = pw[h][jj];
          acc[h].x += w * kv.x;
          acc[h].y += w * kv.y;
          acc[h].z += w * kv.z;
          acc[h].w += w * kv.w;
        }
      }
    }
    __syncthreads();  // kp and pw are rewritten by the next chunk
  }
  // Normalise into qs (q is no longer needed), inverse RoPE of each head's tail, store.
#pragma unroll
  for (int h = 0; h < kMhHeads; ++h) {
    if (h % groups != g) continue;
    const float inv = 1.0f / den[h];
    reinterpret_cast<float4*>(qs)[h * nd4 + d4] =
        make_float4(acc[h].x * inv, acc[h].y * inv, acc[h].z * inv, acc[h].w * inv);
  }
  __syncthreads();
  const int half = rd / 2;
  for (int t = threadIdx.x; t < kMhHeads * half; t += blockDim.x)
    rope_pair(qs + (t / half) * hd + (hd - rd), freqs, t % half, p, true);
  __syncthreads();
  for (int t = threadIdx.x; t < kMhHeads * nd4; t += blockDim.x) {
    const int h = t / nd4, dd = t % nd4;
    reinterpret_cast<float4*>(o + ((int64_t)i * H + h0 + h) * hd)[dd] =
        reinterpret_cast<const float4*>(qs)[t];
  }
}

// Decode (n == 1) attention: block (g, z) takes the kAttHeads heads g*kAttHeads.. and the z-th of
// kAttSplit key ranges (flash-decoding), so each key row is read once per kAttHeads heads and the
// H / kAttHeads * kAttSplit blocks fill the SMs. Each writes its range's unnormalised output,
// score max and softmax denominator per head to part [H][kAttSplit][hd + 4];
// attention_combine_kernel merges them with the sink. Dynamic shared memory
// (attention_split_smem): pointers [round_up(chunk_max, 2)], q [kAttHeads * hd], scores
// [kAttHeads * chunk_max].
constexpr int kAttSplit = 16;      // fewest key ranges per head group
constexpr int kAttSplitMax = 128;  // most (long contexts: about 64 keys per range)
constexpr int kAttKeysPerSplit = 40;

// Keys per range: about 40, so that the q2 model's 640 keys take the 16 ranges (the fewest) of
// 40 keys staged in shared memory: 133.6 tok/s at 2K vs 128.1 with 32 ranges of 20 (more
// partial results to merge) and 128.9 with the keys read from global memory (H200);
// DSV4_ATT_KEYS_PER_SPLIT to experiment.
int attention_keys_per_split() {
  static const int v = [] {
    const char* e = std::getenv("DSV4_ATT_KEYS_PER_SPLIT");
    const int x = e ? std::atoi(e) : 0;
    return x >= 4 && x <= 4096 ? x : kAttKeysPerSplit;
  }();
  return v;
}

int attention_splits(int max_keys) {
  const int kps = attention_keys_per_split();
  const int s = (max_keys + kps - 1) / kps;
  return s < kAttSplit ? kAttSplit : (s > kAttSplitMax ? kAttSplitMax : s);
}
constexpr int kAttHeads = 8;
constexpr int kAttSplitThreads = 256;

__host__ __device__ size_t attention_split_smem(int hd, int chunk_max) {
  return sizeof(const float*) * (size_t)((chunk_max + 1) & ~1) +
         sizeof(float) * (size_t)kAttHeads * (size_t)hd +
         sizeof(float) * (size_t)kAttHeads * (size_t)chunk_max;
}
// With the range's keys staged in shared memory (kSmemKeys): [chunk_max][hd] floats after the
// above, 16-byte aligned.
__host__ __device__ size_t attention_split_keys_offset(int hd, int chunk_max) {
  return (attention_split_smem(hd, chunk_max) + 15) & ~size_t{15};
}
size_t attention_split_smem_keys(int hd, int chunk_max) {
  return attention_split_keys_offset(hd, chunk_max) +
         sizeof(float) * (size_t)chunk_max * (size_t)hd;
}
constexpr size_t kAttSplitSmemKeysMax = 160 * 1024;

// kSmemKeys: every key of the range is copied to shared memory at once (cp.async, all in flight)
// before the two passes over the keys; reading them from global memory in each pass cost one L2
// round trip per key step (~14 us per layer at 2K context).
template <bool kSmemKeys>
__global__ void __launch_bounds__(kAttSplitThreads)
    attention_split_kernel(const float* q, const float* kvn, const float* ring, const float* comp,
                           const int32_t* sel, int hd, int W, int ratio, int topk,
                           const int32_t* p0, int chunk_max, float* part) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const float** kp = reinterpret_cast<const float**>(smem_raw);
  float* qs = reinterpret_cast<float*>(kp + ((chunk_max + 1) & ~1));
  float* sc = qs + (size_t)kAttHeads * hd;  // [kAttHeads][chunk_max]
  float* kbuf = reinterpret_cast<float*>(smem_raw + attention_split_keys_offset(hd, chunk_max));
  const int nd4 = hd / 4;
  const int h0 = blockIdx.x * kAttHeads, z = blockIdx.y, S = (int)gridDim.y;
  const int64_t base = p0[0];
  const int64_t p = base;
  const QueryKeys qk(base, p, ratio, topk, W);
  const int nk_all = qk.nk;
  const int chunk = (nk_all + S - 1) / S;
  const int j_lo = z * chunk;
  const int j_hi = j_lo + chunk < nk_all ? j_lo + chunk : nk_all;
  const int nk = j_hi > j_lo ? j_hi - j_lo : 0;
  // The heads' queries (16-byte aligned: hd % 4 == 0, qs follows an even number of pointers):
  // four float4 loads per thread in flight before any store. A load-then-store loop over floats
  // waited on the L2 once per trip (the compiler cannot move a global load above a shared store
  // through generic pointers): ~30 % of the kernel's stall samples at the q2 shape.
  {
    constexpr int kU = 4;
    const int n4 = kAttHeads * nd4;
    const float4* qh4 = reinterpret_cast<const float4*>(q + (int64_t)h0 * hd);
    float4* qs4 = reinterpret_cast<float4*>(qs);
    for (int b = threadIdx.x; b < n4; b += kU * blockDim.x) {
      float4 r[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u)
        if (b + u * (int)blockDim.x < n4) r[u] = qh4[b + u * blockDim.x];
#pragma unroll
      for (int u = 0; u < kU; ++u)
        if (b + u * (int)blockDim.x < n4) qs4[b + u * blockDim.x] = r[u];
    }
  }
  for (int jj = threadIdx.x; jj < nk; jj += blockDim.x)
    kp[jj] = qk.row(j_lo + jj, sel, comp, kvn, ring, W, hd);
  __syncthreads();
  if constexpr (kSmemKeys) {
    // Warp w copies keys w, w + 8, ...; lane l their float4s l, l + 32, ... (a flat index
    // divided by hd / 4 per copy cost ~11 % of the kernel's stall samples).
    const int cw = (int)(threadIdx.x >> 5), cl = (int)(threadIdx.x & 31);
    for (int jj = cw; jj < nk; jj += (int)(blockDim.x >> 5)) {
      const float* src = kp[jj];
      const uint32_t dst = (uint32_t)__cvta_generic_to_shared(kbuf + (size_t)jj * hd);
      for (int d4 = cl; d4 < nd4; d4 += 32)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst + 16u * d4),
                     "l"(src + 4 * d4)
                     : "memory");
    }
    asm volatile("cp.async.commit_group;\ncp.async.wait_all;\n" ::: "memory");
    __syncthreads();
  }
  // Key j's float4 d: from shared memory or through the read-only path.
  auto key4 = [&](int j, int d) {
    if constexpr (kSmemKeys)
      return reinterpret_cast<const float4*>(kbuf + (size_t)j * hd)[d];
    else
      return __ldg(reinterpret_cast<const float4*>(kp[j]) + d);
  };
  const float scale = 1.0f / sqrtf((float)hd);
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const float4* q4 = reinterpret_cast<const float4*>(qs);
  // Two keys per warp at a time (the second may be past the range: it repeats the first and is
  // not stored), so that twice as many key loads are in flight: at short contexts each warp has a
  // handful of keys and the L2 latency of each, not bandwidth, set the time.
  for (int j = wid; j < nk; j += 2 * nw) {
    const int j2 = j + nw < nk ? j + nw : j;
    float acc[2][kAttHeads];
#pragma unroll
    for (int g = 0; g < kAttHeads; ++g) acc[0][g] = acc[1][g] = 0.0f;
#pragma unroll 4
    for (int d = lane; d < nd4; d += 32) {
      const float4 ka = key4(j, d), kb = key4(j2, d);
#pragma unroll
      for (int g = 0; g < kAttHeads; ++g) {
        const float4 qv = q4[g * nd4 + d];
        acc[0][g] += qv.x * ka.x + qv.y * ka.y + qv.z * ka.z + qv.w * ka.w;
        acc[1][g] += qv.x * kb.x + qv.y * kb.y + qv.z * kb.z + qv.w * kb.w;
      }
    }
    // The 16 sums (two keys x eight heads) by one butterfly that halves the values each lane
    // carries at every step: 16 shuffles instead of 80. Each addition pairs the same lanes'
    // partial sums as warp_sum's (offsets 16, 8, 4, 2, 1), so every sum is the same float.
    // Lane l ends with value (l >> 1) & 15: key (l >> 4) & 1, head (l >> 1) & 7.
    static_assert(kAttHeads == 8, "16 values per lane pair");
    float v[16];
#pragma unroll
    for (int g = 0; g < kAttHeads; ++g) {
      v[g] = acc[0][g];
      v[kAttHeads + g] = acc[1][g];
    }
#pragma unroll
    for (int half = 8, o = 16; half >= 1; half >>= 1, o >>= 1) {
      const bool up = (lane & o) != 0;
#pragma unroll
      for (int e = 0; e < half; ++e) {
        const float send = up ? v[e] : v[e + half];
        const float keep = up ? v[e + half] : v[e];
        v[e] = keep + __shfl_xor_sync(0xffffffffu, send, o);
      }
    }
    const float sum = v[0] + __shfl_xor_sync(0xffffffffu, v[0], 1);
    if ((lane & 1) == 0) {
      const int e = lane >> 1, g = e & 7;
      if (e < 8)
        sc[g * chunk_max + j] = sum * scale;
      else if (j2 != j)
        sc[g * chunk_max + j2] = sum * scale;
    }
  }
  __syncthreads();
  // Per-head softmax statistics of the range: warp g takes head g.
  for (int g = wid; g < kAttHeads; g += nw) {
    float* sg = sc + g * chunk_max;
    float mx = -INFINITY;
    for (int j = lane; j < nk; j += 32) mx = fmaxf(mx, sg[j]);
    mx = warp_max(mx);
    float den = 0.0f;
    for (int j = lane; j < nk; j += 32) {
      const float e = expf(sg[j] - mx);
      sg[j] = e;
      den += e;
    }
    den = warp_sum(den);
    if (lane == 0) {
      float* out = part + ((int64_t)(h0 + g) * S + z) * (hd + 4);
      out[hd] = mx;
      out[hd + 1] = den;
    }
  }
  __syncthreads();
  // Weighted sums: item (head quad, d4); the kAttHeads / 4 quads read the same key float4.
  constexpr int kQuads = kAttHeads / 4;
  for (int it = threadIdx.x; it < kQuads * nd4; it += blockDim.x) {
    const int qd = it / nd4, d4 = it % nd4;
    float4 a[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) a[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float* s0 = sc + (qd * 4) * chunk_max;
#pragma unroll 8
    for (int j = 0; j < nk; ++j) {
      const float4 kv = key4(j, d4);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const float w = s0[u * chunk_max + j];
        a[u].x += w * kv.x;
        a[u].y += w * kv.y;
        a[u].z += w * kv.z;
        a[u].w += w * kv.w;
      }
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      float* out = part + ((int64_t)(h0 + qd * 4 + u) * S + z) * (hd + 4);
      reinterpret_cast<float4*>(out)[d4] = a[u];
    }
  }
}

// One block per head: merges the S partial results with the sink, then the inverse RoPE. Warp 0
// forms the statistics (lane-parallel over the ranges), then each thread sums its dimension over
// the S ranges with 8 loads in flight (a serial loop per dimension waited on the L2 S times per
// dimension: ~11 us per layer). Dynamic shared memory: hd + S + rd floats.
constexpr int kCombineThreads = 512;
__global__ void __launch_bounds__(kCombineThreads)
    attention_combine_kernel(const float* part, const float* sinks, int hd, int rd, int S,
                             const float* freqs, const int32_t* p0, float* o) {
  extern __shared__ float cs_sh[];
  float* wz = cs_sh + hd;
  float* rot = wz + S;  // the inverse rotation's cos/sin [rd] (rope_cos_sin)
  __shared__ float den_sh;
  const int h = blockIdx.x, lane = threadIdx.x & 31;
  const float sink = threadIdx.x < 32 ? sinks[h] : 0.0f;  // constant: read before the wait
  pdl_trigger();
  pdl_wait();
  const int64_t p = p0[0];
  const int64_t stride = hd + 4;
  const float* ph = part + (int64_t)h * S * stride;
  // Warps 1.. evaluate the rotation (double-precision cos/sin) while warp 0 forms the statistics,
  // instead of after the sums.
  if (threadIdx.x >= 32)
    rope_cos_sin(rot, freqs, rd, p, (int)threadIdx.x - 32, (int)blockDim.x - 32);
  if (threadIdx.x < 32) {
    // Each lane's ranges (S <= kAttSplitMax = 4 * 32): maxima and denominators loaded together,
    // then the same operations in the same order as one pass per quantity.
    constexpr int kPer = kAttSplitMax / 32;
    float mv[kPer], dv[kPer];
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int z = lane + 32 * u;
      mv[u] = z < S ? ph[z * stride + hd] : 0.0f;
      dv[u] = z < S ? ph[z * stride + hd + 1] : 0.0f;
    }
    float M = sink;
#pragma unroll
    for (int u = 0; u < kPer; ++u)
      if (lane + 32 * u < S) M = fmaxf(M, mv[u]);
    M = warp_max(M);
    float den = 0.0f;
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int z = lane + 32 * u;
      if (z < S) {
        const float w = expf(mv[u] - M);
        wz[z] = w;
        den += dv[u] * w;
      }
    }
    den = warp_sum(den);
    if (lane == 0) den_sh = expf(sink - M) + den;
  }
  __syncthreads();
  const float den = den_sh;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float a[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) a[u] = 0.0f;
    int z = 0;
    // Sixteen loads in flight, added in the order of two eight-range steps.
    for (; z + 16 <= S; z += 16) {
      float r[16];
#pragma unroll
      for (int u = 0; u < 16; ++u) r[u] = ph[(z + u) * stride + d];
#pragma unroll
      for (int u = 0; u < 8; ++u) a[u] += wz[z + u] * r[u];
#pragma unroll
      for (int u = 0; u < 8; ++u) a[u] += wz[z + 8 + u] * r[8 + u];
    }
    for (; z + 8 <= S; z += 8) {
#pragma unroll
      for (int u = 0; u < 8; ++u) a[u] += wz[z + u] * ph[(z + u) * stride + d];
    }
    for (; z < S; ++z) a[0] += wz[z] * ph[z * stride + d];
    cs_sh[d] = (((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))) / den;
  }
  __syncthreads();
  for (int k = threadIdx.x; k < rd / 2; k += blockDim.x)
    rope_pair_cs(cs_sh + (hd - rd), rot, k, true);
  __syncthreads();
  float* oh = o + (int64_t)h * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) oh[d] = cs_sh[d];
}

__global__ void ring_store_kernel(const float* kvn, int n, int hd, int W, const int32_t* p0,
                                  float* ring) {
  pdl_trigger();
  pdl_wait();
  const int i = blockIdx.x;
  if (i < n - W) return;
  const int64_t pos = (int64_t)p0[0] + i;
  float* dst = ring + (pos % W) * hd;
  const float* src = kvn + (int64_t)i * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) dst[d] = src[d];
}

}  // namespace

void q_norm_rope(float* q, int n, int H, int hd, int rd, const float* freqs, const int32_t* p0,
                 float eps, cudaStream_t s) {
  launch_k(q_norm_rope_kernel, dim3((unsigned)n, (unsigned)((H + kQnrHeads - 1) / kQnrHeads)),
           32 * (kQnrHeads + 1), sizeof(float) * (size_t)rd, s, q, H, hd, rd, freqs, p0, eps);
  FWD_LAUNCH_CHECK("q_norm_rope_kernel");
}

void kv_norm_rope(const float* kv, const float* w, int n, int hd, int rd, const float* freqs,
                  const int32_t* p0, float eps, bool qat, float* kvn, float* ring, int W,
                  cudaStream_t s) {
  if (ring && n != 1) throw_invalid_argument("kv_norm_rope: the ring store is for one token");
  launch_k(kv_norm_rope_kernel, n, kThreads, 0, s, kv, w, hd, rd, freqs, p0, eps, qat, kvn, ring,
           W);
  FWD_LAUNCH_CHECK("kv_norm_rope_kernel");
}

void compressor(const float* kv, const float* score, const float* ape, int n, int ratio, int width,
                const int32_t* p0, float* skv, float* ssc, float* pooled, cudaStream_t s) {
  launch_k(compressor_pool_kernel, dim3((unsigned)((width + kThreads - 1) / kThreads), (unsigned)n),
           kThreads, 0, s, kv, score, ape, n, ratio, width, p0, skv, ssc, pooled);
  FWD_LAUNCH_CHECK("compressor_pool_kernel");
  const int slot_w = (ratio == 4 ? 2 : 1) * width;
  launch_k(compressor_state_kernel,
           dim3((unsigned)((slot_w + kThreads - 1) / kThreads), (unsigned)ratio), kThreads, 0, s,
           kv, score, ape, n, ratio, width, p0, skv, ssc);
  FWD_LAUNCH_CHECK("compressor_state_kernel");
}

void compressor_emit(const float* pooled, const float* w, int n, int ratio, int width, int rd,
                     const float* freqs, const int32_t* p0, float eps, int mode, bool qat,
                     float* rows, cudaStream_t s) {
  if (width > kMaxWidth || (mode == 1 && (width & (width - 1)) != 0))
    throw_invalid_argument("cuda forward: compressor row width unsupported");
  launch_k(compressor_emit_kernel, n, kThreads, 0, s, pooled, w, ratio, width, rd, freqs, p0, eps,
           mode, qat, rows);
  FWD_LAUNCH_CHECK("compressor_emit_kernel");
}

// DSV4_ATT_SMEM_KEYS=0: decode attention reads its keys from global memory in both passes.
static bool attention_smem_keys_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("DSV4_ATT_SMEM_KEYS");
    return !(e && e[0] == '0');
  }();
  return on;
}

// DSV4_ATTN_MMA=0: the f32 kernels even where the tensor-core path applies (A/B timings).
static bool attention_mma_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("DSV4_ATTN_MMA");
    return !(e && e[0] == '0');
  }();
  return on;
}

// DSV4_ATT_DECODE_MMA=0: a decode token's attention by the f32 kernels even where tensor cores
// are asked for (CudaOptions::decode_attention_mma), for A/B timing.
static bool attention_decode_mma_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("DSV4_ATT_DECODE_MMA");
    return !(e && e[0] == '0');
  }();
  return on;
}

// Key ranges of the tensor-core decode attention: at least 64 keys (two tiles) each, and at most
// one wave of blocks (16 heads per block) beside that: H200 q2 decode, ranges of 32 / 64 / 128
// keys (two rounds): @2K (640 keys) 187.4-188.5 / 189.1-189.5 / 186.6-186.8 tok/s, @64K
// 178.1-178.8 / 179.4-179.5 / 174.9-175.7, @512K (4 224 keys on the ratio-128 layers)
// 130.8-131.0 / 139.0-139.4 / 143.4-143.8 (132 blocks). DSV4_ATT_MMA_KEYS=n: ranges of about n
// keys instead (A/B). At most kAttSplitMax ranges (the combine's limit).
static int attention_mma_splits(int H, int max_keys) {
  static const int per = [] {
    const char* e = std::getenv("DSV4_ATT_MMA_KEYS");
    const int v = e ? std::atoi(e) : 0;
    return v >= 1 && v <= 4096 ? v : 0;
  }();
  if (per > 0) return std::clamp((max_keys + per - 1) / per, 1, kAttSplitMax);
  const int tiles = std::max(1, (H + 15) / 16);
  const int wave = std::max(1, current_device_info().sm_count / tiles);
  return std::clamp(std::min((max_keys + 63) / 64, wave), 1, kAttSplitMax);
}

bool attention_decode_mma(const float* q, const float* kvn, const float* ring, const float* comp,
                          const int32_t* sel, const float* sinks, int H, int hd, int rd, int W,
                          int ratio, int topk, const float* freqs, const int32_t* p0, int max_keys,
                          float* o, float* part, cudaStream_t s) {
  const int splits = attention_mma_splits(H, max_keys);
  if (!part || !attention_mma_supported(H, hd, rd) ||
      (size_t)(hd + splits + rd) * sizeof(float) > 48 * 1024)
    return false;
  attention_mma_split(q, kvn, ring, comp, sel, H, hd, rd, W, ratio, topk, p0, splits, part, s);
  launch_k(attention_combine_kernel, (unsigned)H, kCombineThreads,
           sizeof(float) * (size_t)(hd + splits + rd), s, part, sinks, hd, rd, splits, freqs, p0,
           o);
  FWD_LAUNCH_CHECK("attention_combine_kernel");
  return true;
}

void attention(const float* q, const float* kvn, const float* ring, const float* comp,
               const int32_t* sel, const float* sinks, int n, int H, int hd, int rd, int W,
               int ratio, int topk, const float* freqs, const int32_t* p0, int max_keys, float* o,
               float* part, bool tensor_cores, cudaStream_t s) {
  if (tensor_cores && n > 1 && attention_mma_enabled() && attention_mma_supported(H, hd, rd)) {
    attention_mma(q, kvn, ring, comp, sel, sinks, n, H, hd, rd, W, ratio, topk, freqs, p0, o, s);
    return;
  }
  if (tensor_cores && n == 1 && attention_decode_mma_enabled() &&
      attention_decode_mma(q, kvn, ring, comp, sel, sinks, H, hd, rd, W, ratio, topk, freqs, p0,
                           max_keys, o, part, s))
    return;
  const size_t smem4 = attention_v4_smem(hd, max_keys);
  if (hd % 4 == 0 && hd / 4 <= kAttThreads && smem4 <= 200 * 1024) {
    const int splits = attention_splits(max_keys);
    const int chunk_max = (max_keys + splits - 1) / splits;
    const size_t smem_s = attention_split_smem(hd, chunk_max);
    if (n == 1 && part != nullptr && H % kAttHeads == 0 && smem_s <= 48 * 1024 &&
        (size_t)(hd + splits + rd) * sizeof(float) <= 48 * 1024) {
      const size_t smem_k = attention_split_smem_keys(hd, chunk_max);
      const uintptr_t bases = reinterpret_cast<uintptr_t>(kvn) | reinterpret_cast<uintptr_t>(ring) |
                              reinterpret_cast<uintptr_t>(comp);
      const dim3 grid((unsigned)(H / kAttHeads), (unsigned)splits);
      if (smem_k <= kAttSplitSmemKeysMax && bases % 16 == 0 && attention_smem_keys_enabled()) {
        static const bool attr = [] {
          DSV4_CUDA_CHECK(cudaFuncSetAttribute(attention_split_kernel<true>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               (int)kAttSplitSmemKeysMax));
          return true;
        }();
        (void)attr;
        launch_k(attention_split_kernel<true>, grid, kAttSplitThreads, smem_k, s, q, kvn, ring,
                 comp, sel, hd, W, ratio, topk, p0, chunk_max, part);
      } else {
        launch_k(attention_split_kernel<false>, grid, kAttSplitThreads, smem_s, s, q, kvn, ring,
                 comp, sel, hd, W, ratio, topk, p0, chunk_max, part);
      }
      FWD_LAUNCH_CHECK("attention_split_kernel");
      launch_k(attention_combine_kernel, (unsigned)H, kCombineThreads,
               sizeof(float) * (size_t)(hd + splits + rd), s, part, sinks, hd, rd, splits, freqs,
               p0, o);
      FWD_LAUNCH_CHECK("attention_combine_kernel");
      return;
    }
    const int nd4 = hd / 4;
    if (n > 1 && H % kMhHeads == 0 && hd <= kMhMaxHd && kMhThreads % nd4 == 0 &&
        nd4 <= kMhThreads) {
      launch_k(attention_mh_kernel, dim3((unsigned)(H / kMhHeads), (unsigned)n), kMhThreads, 0, s,
               q, kvn, ring, comp, sel, sinks, H, hd, rd, W, ratio, topk, freqs, p0, o);
      FWD_LAUNCH_CHECK("attention_mh_kernel");
      return;
    }
    if (smem4 > 48 * 1024) {
      DSV4_CUDA_CHECK(cudaFuncSetAttribute(
          attention_v4_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem4));
    }
    launch_k(attention_v4_kernel, dim3((unsigned)H, (unsigned)n), kAttThreads, smem4, s, q, kvn,
             ring, comp, sel, sinks, H, hd, rd, W, ratio, topk, freqs, p0, max_keys, o);
    FWD_LAUNCH_CHECK("attention_v4_kernel");
    return;
  }
  const size_t smem = sizeof(float) * ((size_t)hd + (size_t)max_keys);
  if (smem > 48 * 1024) {
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  }
  launch_k(attention_kernel, dim3((unsigned)H, (unsigned)n), kThreads, smem, s, q, kvn, ring, comp,
           sel, sinks, H, hd, rd, W, ratio, topk, freqs, p0, o);
  FWD_LAUNCH_CHECK("attention_kernel");
}

int64_t attention_part_floats(int H, int hd, int max_keys) {
  return (int64_t)H * std::max(attention_splits(max_keys), attention_mma_splits(H, max_keys)) *
         (hd + 4);
}

void ring_store(const float* kvn, int n, int hd, int W, const int32_t* p0, float* ring,
                cudaStream_t s) {
  launch_k(ring_store_kernel, n, kThreads, 0, s, kvn, n, hd, W, p0, ring);
  FWD_LAUNCH_CHECK("ring_store_kernel");
}

}  // namespace dsv4::cuda::fwd
