// Prefill attention on tensor cores (the GEMM prefill's bf16 regime): the math of
// attention_mh_kernel (fwd_attention.cu), with q and the key rows rounded to bf16 and the
// products on mma.sync m16n8k16 (bf16 in, f32 accumulation).
//
// One block of 16 warps per query token. All heads of the token share its key list (§5.6), so
// the heads are the M dimension: Q [HP][512] (H padded to HP = 16 * MT rows of zeros) stays in
// shared memory as bf16, the keys stream in tiles of 32 rows (f32 loads, converted to bf16 when
// stored; the next tile's loads are issued before the current tile's math, so they are in flight
// during it), and per tile:
//   S = Q K^T   warp w < 4 MT: rows 16 (w / 4).., keys 8 (w % 4).. -> f32 scores in smem;
//   softmax     online, per head (warp per row, lane per key), the sink starting the running max
//               and denominator; P rounded to bf16 and the denominator summing the rounded P;
//   O += P V    V = the same key tile; warp w owns output columns 32 w.. of every head, so the
//               64 x 512 f32 accumulator lives in registers (64 per thread at H = 64).
// The output is normalised in registers; the RoPE tail goes through shared memory for the
// inverse RoPE (§5.7), with rope_pair's angles computed once for all heads.
#include <cuda_bf16.h>

#include <cstring>

#include "cuda/fwd_attention_keys.cuh"
#include "cuda/fwd_common.cuh"
#include "cuda/fwd_kernels.h"
#include "cuda/mma_bf16.cuh"
#include "cuda/pdl.cuh"

namespace dsv4::cuda::fwd {

namespace {

using bf16 = __nv_bfloat16;

constexpr int kHd = 512;  // head dim: 16 warps x 32 output columns
constexpr int kWarps = 16;
constexpr int kThr = 32 * kWarps;
constexpr int kKt = 32;      // keys per tile: one per lane in the softmax
constexpr int kMaxMt = 4;    // up to 64 heads
constexpr int kMaxRd = 256;  // the RoPE tail buffer aliases q's (HP x (kHd + 8) bf16)
// Row strides (elements): 16 bytes of padding put 8 consecutive rows of a ldmatrix on distinct
// 16-byte bank groups.
constexpr int kQStride = kHd + 8;  // bf16, q and key tiles
constexpr int kPStride = kKt + 8;  // bf16, probabilities
constexpr int kSStride = kKt + 8;  // f32, scores

size_t mma_smem(int mt) {
  const size_t hp = 16 * (size_t)mt;
  return hp * kQStride * sizeof(bf16) + kKt * kQStride * sizeof(bf16) +
         hp * kSStride * sizeof(float) + hp * kPStride * sizeof(bf16) + 3 * hp * sizeof(float) +
         kMaxRd * sizeof(float);
}

using mma::ldsm_x4;
using mma::ldsm_x4_trans;
using mma::mma_bf16;
using mma::smem_u32;

__device__ __forceinline__ uint2 pack_bf16x4(float4 v) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  uint2 r;
  memcpy(&r.x, &lo, 4);
  memcpy(&r.y, &hi, 4);
  return r;
}

// kSplit (one decode token, flash-decoding): block (z, y) takes key range z of S = gridDim.x and
// heads 16 MT y .. (H of them at most), starts without the sink (running max -inf, denominator
// 0) and writes its unnormalised sums, maximum and denominator to part [head][z][hd + 4] as
// attention_split_kernel does, for attention_combine_kernel (the sink, the merge, the inverse
// RoPE).
template <int MT, bool kSplit = false>
__global__ void __launch_bounds__(kThr, 1)
    attention_mma_kernel(const float* q, const float* kvn, const float* ring, const float* comp,
                         const int32_t* sel, const float* sinks, int H, int rd, int W, int ratio,
                         int topk, const float* freqs, const int32_t* p0, float* o, float* part) {
  constexpr int HP = 16 * MT;
  pdl_trigger();
  pdl_wait();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* qs = reinterpret_cast<bf16*>(smem_raw);                 // [HP][kQStride]
  bf16* ks = qs + HP * kQStride;                                // [kKt][kQStride]
  float* ss = reinterpret_cast<float*>(ks + kKt * kQStride);    // [HP][kSStride]
  bf16* ps = reinterpret_cast<bf16*>(ss + HP * kSStride);       // [HP][kPStride]
  float* m_run = reinterpret_cast<float*>(ps + HP * kPStride);  // [HP]
  float* den = m_run + HP;                                      // [HP]
  float* alpha = den + HP;                                      // [HP]
  float* rope_cs = alpha + HP;  // [kMaxRd]: cos, then -sin, of the tail's angles at p

  const int i = kSplit ? 0 : blockIdx.x;
  const int64_t base = p0[0], p = base + i;
  const QueryKeys qk(base, p, ratio, topk, W);
  const int32_t* sel_i = sel + (int64_t)i * topk;
  // The block's keys [j_lo, nk) and heads [h0, h0 + H).
  int j_lo = 0, nk = qk.nk, h0 = 0;
  if constexpr (kSplit) {
    // Ranges of whole 32-key tiles (a partial tile costs a full one); trailing blocks may be
    // empty.
    const int S = (int)gridDim.x, chunk = ((nk + S - 1) / S + kKt - 1) / kKt * kKt;
    j_lo = min(nk, (int)blockIdx.x * chunk);
    nk = min(nk, j_lo + chunk);
    h0 = (int)blockIdx.y * HP;
    H = min(HP, H - h0);
    q += (int64_t)h0 * kHd;
  }
  const int tid = (int)threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, c = lane & 3;  // accumulator fragment: rows g, g + 8; columns 2c, 2c+1

  // Key tile staging: thread (key kr, part kp) holds float4s kp, kp + 16, .. of key kr's row;
  // keys past nk are zeros (their weights are zero, and 0 * garbage could be NaN).
  const int kr = tid >> 4, kp = tid & 15;
  float4 stg[kHd / 64];
  auto load_tile = [&](int j0) {
    const int j = j0 + kr;
    if (j < nk) {
      const float4* src =
          reinterpret_cast<const float4*>(qk.row(j, sel_i, comp, kvn, ring, W, kHd));
#pragma unroll
      for (int u = 0; u < kHd / 64; ++u) stg[u] = __ldg(src + kp + 16 * u);
    } else {
#pragma unroll
      for (int u = 0; u < kHd / 64; ++u) stg[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
  };
  auto store_tile = [&]() {
#pragma unroll
    for (int u = 0; u < kHd / 64; ++u)
      *reinterpret_cast<uint2*>(ks + kr * kQStride + (kp + 16 * u) * 4) = pack_bf16x4(stg[u]);
  };

  float acc[MT][4][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;

  // Prologue: the first key tile's loads and all of q's in flight together (one block per SM:
  // nothing else hides this latency), then both converted into shared memory.
  load_tile(j_lo);
  constexpr int kQv = HP * (kHd / 4) / kThr;  // q float4s per thread
  float4 qv[kQv];
#pragma unroll
  for (int u = 0; u < kQv; ++u) {
    const int t = tid + u * kThr, h = t / (kHd / 4), d4 = t % (kHd / 4);
    qv[u] = h < H ? __ldg(reinterpret_cast<const float4*>(q + ((int64_t)i * H + h) * kHd) + d4)
                  : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
#pragma unroll
  for (int u = 0; u < kQv; ++u) {
    const int t = tid + u * kThr, h = t / (kHd / 4), d4 = t % (kHd / 4);
    *reinterpret_cast<uint2*>(qs + h * kQStride + d4 * 4) = pack_bf16x4(qv[u]);
  }
  store_tile();
  if (tid < HP) {
    if constexpr (kSplit) {
      m_run[tid] = -INFINITY;
      den[tid] = 0.0f;
    } else {
      m_run[tid] = tid < H ? sinks[tid] : 0.0f;
      den[tid] = 1.0f;  // exp(sink - sink)
    }
  }
  if (!kSplit && tid < rd / 2) {  // the angles of rope_pair(.., inverse), shared by every head
    const float ang = (float)p * freqs[tid];
    rope_cs[tid] = (float)cos((double)ang);
    rope_cs[kMaxRd / 2 + tid] = -(float)sin((double)ang);
  }
  const float scale = 1.0f / sqrtf((float)kHd);
  __syncthreads();
  for (int j0 = j_lo; j0 < nk; j0 += kKt) {
    const int kc = min(kKt, nk - j0);
    const bool more = j0 + kKt < nk;
    if (more) load_tile(j0 + kKt);
    // S = Q K^T (scaled) into ss.
    if (warp < 4 * MT) {
      const int mt = warp >> 2, nt = warp & 3;
      float s[4] = {0.0f, 0.0f, 0.0f, 0.0f}, s2[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // two mma chains
      const uint32_t a_addr = smem_u32(qs + (mt * 16 + (lane & 15)) * kQStride + (lane >> 4) * 8);
      const uint32_t b_addr = smem_u32(ks + (nt * 8 + (lane & 7)) * kQStride + (lane >> 3) * 8);
#pragma unroll 4
      for (int k0 = 0; k0 < kHd; k0 += 32) {
        uint32_t a0[4], a1[4], b[4];
        ldsm_x4(a_addr + k0 * 2, a0);
        ldsm_x4(a_addr + (k0 + 16) * 2, a1);
        ldsm_x4(b_addr + k0 * 2, b);
        mma_bf16(s, a0, b[0], b[1]);
        mma_bf16(s2, a1, b[2], b[3]);
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) s[e] += s2[e];
      float* sr = ss + (mt * 16 + g) * kSStride + nt * 8 + 2 * c;
      sr[0] = s[0] * scale;
      sr[1] = s[1] * scale;
      sr[8 * kSStride] = s[2] * scale;
      sr[8 * kSStride + 1] = s[3] * scale;
    }
    __syncthreads();
    // Online softmax: warp w takes rows w + 16 m (m < MT) together; lane = key of the tile.
    {
      float v[MT], mx[MT], sum[MT];
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        v[m] = lane < kc ? ss[(warp + 16 * m) * kSStride + lane] : -INFINITY;
        mx[m] = v[m];
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1)
#pragma unroll
        for (int m = 0; m < MT; ++m) mx[m] = fmaxf(mx[m], __shfl_xor_sync(0xffffffffu, mx[m], off));
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        const int r = warp + 16 * m;
        mx[m] = fmaxf(m_run[r], mx[m]);
        const bf16 e = __float2bfloat16(lane < kc ? expf(v[m] - mx[m]) : 0.0f);
        ps[r * kPStride + lane] = e;
        sum[m] = __bfloat162float(e);
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1)
#pragma unroll
        for (int m = 0; m < MT; ++m) sum[m] += __shfl_xor_sync(0xffffffffu, sum[m], off);
      if (lane == 0)
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          const int r = warp + 16 * m;
          const float a = expf(m_run[r] - mx[m]);
          alpha[r] = a;
          den[r] = den[r] * a + sum[m];
          m_run[r] = mx[m];
        }
    }
    __syncthreads();
    // O = alpha O + P V over this warp's 32 columns.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const float a_lo = alpha[mt * 16 + g], a_hi = alpha[mt * 16 + g + 8];
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        acc[mt][nt][0] *= a_lo;
        acc[mt][nt][1] *= a_lo;
        acc[mt][nt][2] *= a_hi;
        acc[mt][nt][3] *= a_hi;
      }
    }
#pragma unroll
    for (int k0 = 0; k0 < kKt; k0 += 16) {
      uint32_t b[2][4];
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        const int key = k0 + (lane & 7) + ((lane >> 3) & 1) * 8;
        const int col = warp * 32 + np * 16 + (lane >> 4) * 8;
        ldsm_x4_trans(smem_u32(ks + key * kQStride + col), b[np]);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        uint32_t a[4];
        ldsm_x4(smem_u32(ps + (mt * 16 + (lane & 15)) * kPStride + k0 + (lane >> 4) * 8), a);
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          mma_bf16(acc[mt][2 * np], a, b[np][0], b[np][1]);
          mma_bf16(acc[mt][2 * np + 1], a, b[np][2], b[np][3]);
        }
      }
    }
    __syncthreads();  // ks, ps and alpha are rewritten next
    if (more) {
      store_tile();
      __syncthreads();
    }
  }

  if constexpr (kSplit) {
    // The unnormalised sums (zeros for a block without keys: acc never moved), then the range's
    // maximum and denominator (-inf and 0 without keys: weight 0 in the combine).
    const int S = (int)gridDim.x, z = (int)blockIdx.x;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const int row = mt * 16 + g + 8 * hi;
        if (row >= H) continue;
        float* out = part + ((int64_t)(h0 + row) * S + z) * (kHd + 4);
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const int col = warp * 32 + nt * 8 + 2 * c;
          *reinterpret_cast<float2*>(out + col) =
              make_float2(acc[mt][nt][2 * hi], acc[mt][nt][2 * hi + 1]);
        }
      }
    if (tid < H) {
      float* out = part + ((int64_t)(h0 + tid) * S + z) * (kHd + 4);
      out[kHd] = m_run[tid];
      out[kHd + 1] = den[tid];
    }
    return;
  }
  // Normalise. Columns before the RoPE tail go straight to o; the tail goes through shared
  // memory (q's buffer, free now) for the inverse RoPE.
  float* tail = reinterpret_cast<float*>(smem_raw);  // [H][rd]
  const int t0 = kHd - rd;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int row = mt * 16 + g + 8 * hi;
      if (row >= H) continue;
      const float inv = 1.0f / den[row];
      float* orow = o + ((int64_t)i * H + row) * kHd;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int col = warp * 32 + nt * 8 + 2 * c;
        const float v0 = acc[mt][nt][2 * hi] * inv, v1 = acc[mt][nt][2 * hi + 1] * inv;
        if (col >= t0) {
          tail[row * rd + col - t0] = v0;
          tail[row * rd + col - t0 + 1] = v1;
        } else {
          *reinterpret_cast<float2*>(orow + col) = make_float2(v0, v1);
        }
      }
    }
  __syncthreads();
  const int half = rd / 2;
  for (int t = tid; t < H * half; t += kThr) {
    float* x = tail + (t / half) * rd + 2 * (t % half);
    const float cs = rope_cs[t % half], sn = rope_cs[kMaxRd / 2 + t % half];
    const float a = x[0], b = x[1];
    x[0] = a * cs - b * sn;
    x[1] = a * sn + b * cs;
  }
  __syncthreads();
  for (int t = tid; t < H * rd; t += kThr)
    o[((int64_t)i * H + t / rd) * kHd + t0 + t % rd] = tail[t];
}

template <int MT>
void launch_mma(const float* q, const float* kvn, const float* ring, const float* comp,
                const int32_t* sel, const float* sinks, int n, int H, int rd, int W, int ratio,
                int topk, const float* freqs, const int32_t* p0, float* o, cudaStream_t s) {
  const size_t smem = mma_smem(MT);
  DSV4_CUDA_CHECK(cudaFuncSetAttribute(attention_mma_kernel<MT>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  launch_k(attention_mma_kernel<MT>, dim3((unsigned)n), kThr, smem, s, q, kvn, ring, comp, sel,
           sinks, H, rd, W, ratio, topk, freqs, p0, o, nullptr);
  FWD_LAUNCH_CHECK("attention_mma_kernel");
}

}  // namespace

void attention_mma_split(const float* q, const float* kvn, const float* ring, const float* comp,
                         const int32_t* sel, int H, int hd, int rd, int W, int ratio, int topk,
                         const int32_t* p0, int S, float* part, cudaStream_t s) {
  if (!attention_mma_supported(H, hd, rd) || S < 1)
    throw_invalid_argument("attention_mma_split: shape unsupported (hd 512, H <= 64, S >= 1)");
  const size_t smem = mma_smem(1);
  static const bool attr = [smem] {
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(attention_mma_kernel<1, true>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    return true;
  }();
  (void)attr;
  launch_k(attention_mma_kernel<1, true>, dim3((unsigned)S, (unsigned)((H + 15) / 16)), kThr, smem,
           s, q, kvn, ring, comp, sel, nullptr, H, rd, W, ratio, topk, nullptr, p0, nullptr, part);
  FWD_LAUNCH_CHECK("attention_mma_kernel<split>");
}

bool attention_mma_supported(int H, int hd, int rd) {
  return hd == kHd && H >= 1 && H <= 16 * kMaxMt && rd >= 0 && rd % 2 == 0 && rd <= kMaxRd;
}

void attention_mma(const float* q, const float* kvn, const float* ring, const float* comp,
                   const int32_t* sel, const float* sinks, int n, int H, int hd, int rd, int W,
                   int ratio, int topk, const float* freqs, const int32_t* p0, float* o,
                   cudaStream_t s) {
  if (!attention_mma_supported(H, hd, rd))
    throw_invalid_argument("attention_mma: shape unsupported (hd 512, H <= 64, rd <= 256)");
  if (n <= 0) return;
  switch ((H + 15) / 16) {
    case 1:
      return launch_mma<1>(q, kvn, ring, comp, sel, sinks, n, H, rd, W, ratio, topk, freqs, p0, o,
                           s);
    case 2:
      return launch_mma<2>(q, kvn, ring, comp, sel, sinks, n, H, rd, W, ratio, topk, freqs, p0, o,
                           s);
    case 3:
      return launch_mma<3>(q, kvn, ring, comp, sel, sinks, n, H, rd, W, ratio, topk, freqs, p0, o,
                           s);
    default:
      return launch_mma<4>(q, kvn, ring, comp, sel, sinks, n, H, rd, W, ratio, topk, freqs, p0, o,
                           s);
  }
}

}  // namespace dsv4::cuda::fwd
