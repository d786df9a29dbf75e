// MoE sublayer kernels (spec/ARCH.md §6): router (hash or biased top-k), clamped SwiGLU, and the
// per-token sum of expert contributions in ascending expert id plus the shared expert.
#include <cub/device/device_radix_sort.cuh>

#include "cuda/fwd_common.cuh"
#include "cuda/fwd_hc_mix.cuh"
#include "cuda/fwd_kernels.h"
#include "cuda/pdl.cuh"

namespace dsv4::cuda::fwd {

namespace {

constexpr int kMaxK = 16;
constexpr int kMaxE = 4096;

// One warp per token (the selection is k rounds of a warp argmax, no block barriers: the old
// 128-thread version spent its time in 2k __syncthreads). Dynamic shared memory: 2 * E floats and
// E taken flags.
// One block of kRouterThreads per token. The selection is the CPU's partial_sort order
// (descending biased score, ties to the lower index) computed as ranks: expert e is chosen in
// place r when exactly r experts precede it in that strict order, so every thread ranks its own
// experts against the shared scores and no serial passes remain (one warp doing k arg-max passes
// took ~12 us per layer, on the decode critical path). NaN scores precede nothing and follow
// nothing: places they leave empty get id -1 and weight NaN (the expert matvecs turn bad ids
// into NaN rows).
constexpr int kRouterThreads = 256;
__global__ void __launch_bounds__(kRouterThreads)
    router_kernel(const float* logits, const float* bias, const int32_t* tid2eid,
                  const int32_t* tokens, int n, int E, int k, float scale, int32_t* ids, float* wts,
                  int sort_by_id) {
  const int i = blockIdx.x, t = threadIdx.x;
  const float bias0 = bias && t < E ? bias[t] : 0.0f;  // constant: read before the PDL wait
  pdl_trigger();
  pdl_wait();
  extern __shared__ float sm[];
  float* s = sm;
  float* biased = sm + E;
  __shared__ int sel[kMaxK];
  for (int e = t; e < E; e += blockDim.x) {
    const float v = sqrtf(softplus_f(logits[(int64_t)i * E + e]));
    s[e] = v;
    biased[e] = bias ? v + (e == t ? bias0 : bias[e]) : v;
  }
  if (t < k) sel[t] = tid2eid ? tid2eid[(int64_t)tokens[i] * k + t] : -1;
  __syncthreads();
  if (!tid2eid) {
    // Eight independent shared loads per step (broadcasts): a loop of one dependent load and
    // compare per expert was latency-bound at ~17 us.
    for (int e = t; e < E; e += blockDim.x) {
      const float v = biased[e];
      int r = 0, j = 0;
      for (; j + 8 <= E; j += 8) {
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const float o = biased[j + u];
          r += (o > v || (o == v && j + u < e)) ? 1 : 0;
        }
      }
      for (; j < E; ++j) {
        const float o = biased[j];
        r += (o > v || (o == v && j < e)) ? 1 : 0;
      }
      if (r < k && v == v) sel[r] = e;
    }
    __syncthreads();
  }
  // Warp 0: lane j < k gathers place j's expert and score (the k lookups at once, not a chain of
  // dependent loads in one thread), every lane sums the k scores in place order through shuffles
  // (the serial order of the CPU), and lane j writes place j.
  if (t >= 32) return;
  const int e = t < k ? sel[t] : -1;
  const float v = e >= 0 ? s[e] : __int_as_float(0x7fc00000);
  float sum = 0.0f;
  for (int j = 0; j < k; ++j) sum += __shfl_sync(0xffffffffu, v, j);
  // sort_by_id: place t goes to slot r, its rank by ascending id (ties, the empty places' -1, by
  // place), so that the slots are in the MoE combine's summation order.
  int r = t;
  if (sort_by_id) {
    r = 0;
    for (int j = 0; j < k; ++j) {
      const int o = __shfl_sync(0xffffffffu, e, j);
      r += (o < e || (o == e && j < t)) ? 1 : 0;
    }
  }
  if (t < k) {
    ids[(int64_t)r * n + i] = e;
    wts[(int64_t)i * k + r] = e >= 0 ? v / sum * scale : __int_as_float(0x7fc00000);
  }
}

// Row s of `rows`; routed rows are slot-major (s = j * n_tok + i) and take weight wts[i][j].
__global__ void swiglu_kernel(const float* g, const float* u, const float* wts, int n_tok, int k,
                              int F, float clamp, float* h) {
  pdl_trigger();
  pdl_wait();
  const int s = blockIdx.y;
  const int f = blockIdx.x * blockDim.x + threadIdx.x;
  if (f >= F) return;
  const int64_t t = (int64_t)s * F + f;
  const float v = swiglu_f(g[t], u[t], clamp);
  h[t] = wts ? wts[(int64_t)(s % n_tok) * k + s / n_tok] * v : v;
}

__global__ void replicate_kernel(const float* x, int64_t count, int copies, float* out) {
  pdl_trigger();
  pdl_wait();
  const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= count) return;
  const float v = x[t];
  for (int c = 0; c < copies; ++c) out[(int64_t)c * count + t] = v;
}

// The contribution rows of token i's k experts in ascending expert id (stable insertion sort):
// the order in which the combine sums them. pos null: the per-pair layout (row = slot j * n + i),
// else the grouped one (row = pos[slot]). One thread.
__device__ void combine_rows(const int32_t* ids, const int32_t* pos, int n, int i, int k,
                             int64_t* rows) {
  int order[kMaxK], id[kMaxK];
  for (int j = 0; j < k; ++j) {
    order[j] = j;
    id[j] = ids[(int64_t)j * n + i];
  }
  for (int a = 1; a < k; ++a)
    for (int b = a; b > 0 && id[order[b]] < id[order[b - 1]]; --b) {
      const int t = order[b];
      order[b] = order[b - 1];
      order[b - 1] = t;
    }
  for (int j = 0; j < k; ++j) {
    const int64_t sidx = (int64_t)order[j] * n + i;
    rows[j] = pos ? (int64_t)pos[sidx] : sidx;
  }
}

// out f[i][d] = sum over slots in ascending expert id of contrib, + shared (as the CPU sums), then
// hc_post for the same (token, d): X[c] = post[c] * f + sum_j comb[j][c] X[j], without a round trip
// of f through memory.
constexpr int kMaxHcPost = 16;
// The token's slot order (ascending expert id, stable) and rows are resolved once per block in
// shared memory, and HC = 4 keeps the streams in registers: with a per-thread sort and
// dynamically indexed arrays (local memory) the kernel took 1.38 ms per layer of an 8K chunk.
// HC = 0: any hc (runtime loops).
template <int HC>
__global__ void moe_combine_post_kernel(const float* contrib, const float* shared,
                                        const int32_t* ids, const int32_t* pos, int n, int k, int D,
                                        const float* post, const float* comb, int hc_rt, float* X) {
  pdl_trigger();
  pdl_wait();
  __shared__ int64_t rows_sh[kMaxK];
  const int i = blockIdx.y;
  const int hc = HC > 0 ? HC : hc_rt;
  if (threadIdx.x == 0) combine_rows(ids, pos, n, i, k, rows_sh);
  __syncthreads();
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= D) return;
  float fv = 0.0f;
  for (int j = 0; j < k; ++j) {
    const int64_t row = rows_sh[j];
    fv += row >= 0 ? contrib[row * D + d] : __int_as_float(0x7fc00000);
  }
  fv += shared[(int64_t)i * D + d];
  float* x = X + (int64_t)i * hc * D;
  const float* cm = comb + (int64_t)i * hc * hc;
  constexpr int kN = HC > 0 ? HC : kMaxHcPost;
  float xs[kN], y[kN];
#pragma unroll
  for (int j = 0; j < kN; ++j)
    if (HC > 0 || j < hc) xs[j] = x[j * D + d];
#pragma unroll
  for (int c = 0; c < kN; ++c) {
    if (HC == 0 && c >= hc) break;
    float acc = 0.0f;
#pragma unroll
    for (int j = 0; j < kN; ++j)
      if (HC > 0 || j < hc) acc += cm[j * hc + c] * xs[j];
    y[c] = post[i * hc + c] * fv + acc;
  }
#pragma unroll
  for (int c = 0; c < kN; ++c)
    if (HC > 0 || c < hc) x[c * D + d] = y[c];
}

// HC = 4 with D % 4 == 0 (the model's shape): the same operations per element as
// moe_combine_post_kernel<4>, four consecutive d per thread as float4 and kVecD of them per block,
// so the per-block row lookup and the comb/post loads are shared by 4x the elements (the scalar
// kernel's 256-element blocks took ~0.95 ms per layer of an 8K chunk against ~0.47 ms of bytes).
constexpr int kVecThreads = 256, kVecD = 4 * kVecThreads;
__global__ void __launch_bounds__(kVecThreads)
    moe_combine_post_vec_kernel(const float* contrib, const float* shared, const int32_t* ids,
                                const int32_t* pos, int n, int k, int D, const float* post,
                                const float* comb, float* X) {
  pdl_trigger();
  pdl_wait();
  __shared__ int64_t rows_sh[kMaxK];
  const int i = blockIdx.y;
  if (threadIdx.x == 0) combine_rows(ids, pos, n, i, k, rows_sh);
  __syncthreads();
  const int d = blockIdx.x * kVecD + 4 * threadIdx.x;
  if (d >= D) return;
  float4 fv = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int j = 0; j < k; ++j) {
    const int64_t row = rows_sh[j];
    const float4 c = row >= 0 ? *reinterpret_cast<const float4*>(contrib + row * D + d)
                              : make_float4(__int_as_float(0x7fc00000), __int_as_float(0x7fc00000),
                                            __int_as_float(0x7fc00000), __int_as_float(0x7fc00000));
    fv.x += c.x;
    fv.y += c.y;
    fv.z += c.z;
    fv.w += c.w;
  }
  const float4 sh = *reinterpret_cast<const float4*>(shared + (int64_t)i * D + d);
  fv.x += sh.x;
  fv.y += sh.y;
  fv.z += sh.z;
  fv.w += sh.w;
  hc_post4(fv, post + i * 4, comb + (int64_t)i * 16, D, X + (int64_t)i * 4 * D + d);
}

// moe_combine_post of one decode token (HC = 4, per-pair contrib) fused with the next layer's
// attention HC mix partials (fwd_hc_mix.cuh): one dependent launch fewer between layers. Element
// y[c][d] is computed as in moe_combine_post_kernel.
__global__ void __launch_bounds__(kMixThreads)
    moe_combine_post_mix_kernel(const float* contrib, const float* shared, const int32_t* ids,
                                int k, int D, const float* post, const float* comb, float* X,
                                const __half* W, int rows, float* parts) {
  const int g = blockIdx.x;
  uint4 wv[kMixRowsPerWarp];
  hc_mix_slice_begin(W, D, rows, wv);
  // The HCPost inputs and the shared expert's row do not depend on the expert ids: requested
  // before the ids' round trip and the barrier that publishes the rows.
  const HcPostIn in = hc_post_load(post, comb, D, X, g);
  const int d = g * kPmD + threadIdx.x % kPmD;
  const float sh = shared[d];
  float fv = 0.0f;
  if (ids) {
    __shared__ int64_t rows_sh[kMaxK];
    if (threadIdx.x == 0) combine_rows(ids, nullptr, 1, 0, k, rows_sh);
    __syncthreads();
    for (int j = 0; j < k; ++j) fv += contrib[rows_sh[j] * D + d];
  } else {  // the slots are in ascending expert id (router sort_by_id): no round trip for the ids
    for (int j = 0; j < k; ++j) fv += contrib[(int64_t)j * D + d];
  }
  fv += sh;
  hc_post_mix_tail(fv, in, D, X, wv, rows, g, parts);
}

// One block. Experts in ascending id, each expert's pairs in slot-major order (s = j * n + i),
// in groups of gn rows. Dynamic shared memory: 3 * E ints + kGroupTile ints.
constexpr int kGroupTile = 1024;
__global__ void moe_group_kernel(const int32_t* ids, const float* wts, int n, int k, int E, int S,
                                 int gn, int32_t* slot_ids, int32_t* pos, float* row_w,
                                 int32_t* row_tok) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ int gsm[];
  int* cnt = gsm;
  int* gbase = gsm + E;
  int* fill = gsm + 2 * E;
  int* tile = gsm + 3 * E;
  const int pairs = k * n;
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    cnt[e] = 0;
    fill[e] = 0;
  }
  for (int r = threadIdx.x; r < S * gn; r += blockDim.x) {
    row_w[r] = 0.0f;
    row_tok[r] = -1;
  }
  __syncthreads();
  for (int q = threadIdx.x; q < pairs; q += blockDim.x) {
    const int e = ids[q];
    if (e >= 0 && e < E) atomicAdd(&cnt[e], 1);
    pos[q] = -1;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int acc = 0;
    for (int e = 0; e < E; ++e) {
      gbase[e] = acc;
      acc += (cnt[e] + gn - 1) / gn;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    const int g = (cnt[e] + gn - 1) / gn;
    for (int q = 0; q < g; ++q) slot_ids[gbase[e] + q] = e;
  }
  {
    // Unused groups: the matvec writes NaN for them (never read).
    const int used = gbase[E - 1] + (cnt[E - 1] + gn - 1) / gn;
    for (int g = used + (int)threadIdx.x; g < S; g += blockDim.x) slot_ids[g] = -1;
  }
  for (int t0 = 0; t0 < pairs; t0 += kGroupTile) {
    const int m = min(kGroupTile, pairs - t0);
    __syncthreads();
    for (int q = threadIdx.x; q < m; q += blockDim.x) tile[q] = ids[t0 + q];
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      if (cnt[e] == 0) continue;
      int f = fill[e];
      for (int q = 0; q < m; ++q) {
        if (tile[q] != e) continue;
        const int sidx = t0 + q;
        const int j = sidx / n, i = sidx % n;
        const int r = gbase[e] * gn + f++;
        pos[sidx] = r;
        row_w[r] = wts[(int64_t)i * k + j];
        row_tok[r] = i;
      }
      fill[e] = f;
    }
  }
}

// gx[r] = x[row_tok[r]] (zeros for padding rows); rows of unused groups are skipped.
__global__ void moe_gather_kernel(const float* x, const int32_t* slot_ids, const int32_t* row_tok,
                                  int gn, int D, float* gx) {
  pdl_trigger();
  pdl_wait();
  const int r = blockIdx.y;
  if (slot_ids[r / gn] < 0) return;
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= D) return;
  const int t = row_tok[r];
  gx[(int64_t)r * D + d] = t >= 0 ? x[(int64_t)t * D + d] : 0.0f;
}

__global__ void swiglu_rows_kernel(const float* g, const float* u, const float* row_w,
                                   const int32_t* slot_ids, int gn, int F, float clamp, float* h) {
  pdl_trigger();
  pdl_wait();
  const int r = blockIdx.y;
  if (slot_ids[r / gn] < 0) return;
  const int f = blockIdx.x * blockDim.x + threadIdx.x;
  if (f >= F) return;
  const int64_t t = (int64_t)r * F + f;
  h[t] = row_w[r] * swiglu_f(g[t], u[t], clamp);
}

__global__ void iota_kernel(int32_t* v, int n) {
  pdl_trigger();
  pdl_wait();
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < n) v[t] = t;
}

// Row r of the sorted layout holds pair vals[r] (slot-major s = j * n + i) of expert keys[r].
__global__ void moe_scatter_kernel(const int32_t* keys, const int32_t* vals, const float* wts,
                                   int n, int k, int pairs, int32_t* slot_ids, int32_t* pos,
                                   float* row_w, int32_t* row_tok) {
  pdl_trigger();
  pdl_wait();
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= pairs) return;
  const int q = vals[r], j = q / n, i = q % n;
  slot_ids[r] = keys[r];
  pos[q] = r;
  row_w[r] = wts[(int64_t)i * k + j];
  row_tok[r] = i;
}

int end_bit_for(int E) {
  int b = 1;
  while ((1 << b) < E) ++b;
  return b;
}

}  // namespace

size_t moe_sort_temp_bytes(int max_pairs, int E) {
  size_t bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, bytes, (const int32_t*)nullptr, (int32_t*)nullptr,
                                  (const int32_t*)nullptr, (int32_t*)nullptr, max_pairs, 0,
                                  end_bit_for(E));
  // + keys_out, vals_in, vals_out
  return bytes + 3 * sizeof(int32_t) * (size_t)max_pairs + 256;
}

void moe_group_sorted(const int32_t* ids, const float* wts, int n, int k, int E, void* temp,
                      size_t temp_bytes, int32_t* slot_ids, int32_t* pos, float* row_w,
                      int32_t* row_tok, cudaStream_t s) {
  const int pairs = n * k;
  if (pairs <= 0) return;
  auto* keys_out = static_cast<int32_t*>(temp);
  int32_t* vals_in = keys_out + pairs;
  int32_t* vals_out = vals_in + pairs;
  const uintptr_t a = reinterpret_cast<uintptr_t>(vals_out + pairs);
  void* cub_tmp = reinterpret_cast<void*>((a + 255) & ~uintptr_t{255});
  const size_t used = (size_t)(static_cast<char*>(cub_tmp) - static_cast<char*>(temp));
  if (used > temp_bytes) throw_invalid_argument("moe_group_sorted: temp buffer too small");
  size_t cub_bytes = temp_bytes - used;
  launch_k(iota_kernel, (unsigned)((pairs + 255) / 256), 256, 0, s, vals_in, pairs);
  FWD_LAUNCH_CHECK("iota_kernel");
  // Stable radix sort by expert id: each expert's pairs stay in slot-major order.
  DSV4_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(cub_tmp, cub_bytes, ids, keys_out, vals_in,
                                                  vals_out, pairs, 0, end_bit_for(E), s));
  launch_k(moe_scatter_kernel, (unsigned)((pairs + 255) / 256), 256, 0, s, keys_out, vals_out, wts,
           n, k, pairs, slot_ids, pos, row_w, row_tok);
  FWD_LAUNCH_CHECK("moe_scatter_kernel");
}

void router(const float* logits, const float* bias, const int32_t* tid2eid, const int32_t* tokens,
            int n, int E, int k, float scale, int32_t* ids, float* wts, cudaStream_t s,
            bool sort_by_id) {
  if (k > kMaxK || k > E || E > kMaxE)
    throw_invalid_argument("cuda forward: expert counts unsupported (k <= 16, E <= 4096)");
  launch_k(router_kernel, n, kRouterThreads, sizeof(float) * 2 * (size_t)E, s, logits, bias,
           tid2eid, tokens, n, E, k, scale, ids, wts, sort_by_id ? 1 : 0);
  FWD_LAUNCH_CHECK("router_kernel");
}

void swiglu(const float* g, const float* u, const float* wts, int n_tok, int k, int rows, int F,
            float clamp, float* h, cudaStream_t s) {
  launch_k(swiglu_kernel, dim3((unsigned)((F + 255) / 256), (unsigned)rows), 256, 0, s, g, u, wts,
           n_tok, k, F, clamp, h);
  FWD_LAUNCH_CHECK("swiglu_kernel");
}

void replicate(const float* x, int64_t count, int copies, float* out, cudaStream_t s) {
  launch_k(replicate_kernel, (unsigned)((count + 255) / 256), 256, 0, s, x, count, copies, out);
  FWD_LAUNCH_CHECK("replicate_kernel");
}

void moe_combine_post(const float* contrib, const float* shared, const int32_t* ids,
                      const int32_t* pos, int n, int k, int D, const float* post, const float* comb,
                      int hc, float* X, cudaStream_t s) {
  if (hc > kMaxHcPost) throw_invalid_argument("cuda forward: hc_mult > 16");
  const bool vec = hc == 4 && D % 4 == 0 && (reinterpret_cast<uintptr_t>(contrib) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(shared) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(X) & 15) == 0;
  if (vec) {
    launch_k(moe_combine_post_vec_kernel, dim3((unsigned)((D + kVecD - 1) / kVecD), (unsigned)n),
             kVecThreads, 0, s, contrib, shared, ids, pos, n, k, D, post, comb, X);
    FWD_LAUNCH_CHECK("moe_combine_post_vec_kernel");
    return;
  }
  const dim3 grid((unsigned)((D + 255) / 256), (unsigned)n);
  if (hc == 4)
    launch_k(moe_combine_post_kernel<4>, grid, 256, 0, s, contrib, shared, ids, pos, n, k, D, post,
             comb, hc, X);
  else
    launch_k(moe_combine_post_kernel<0>, grid, 256, 0, s, contrib, shared, ids, pos, n, k, D, post,
             comb, hc, X);
  FWD_LAUNCH_CHECK("moe_combine_post_kernel");
}

void moe_combine_post_mix(const float* contrib, const float* shared, const int32_t* ids, int k,
                          int D, const float* post, const float* comb, float* X, const void* w_f16,
                          int rows, float* parts, cudaStream_t s) {
  if (k < 1 || k > kMaxK || !hc_mix_partials_supported(rows, 4 * (int64_t)D, 4, D) ||
      (reinterpret_cast<uintptr_t>(w_f16) & 15) != 0)
    throw_invalid_argument("moe_combine_post_mix: unsupported shape or alignment");
  launch_k(moe_combine_post_mix_kernel, (unsigned)(D / kPmD), kMixThreads, 0, s, contrib, shared,
           ids, k, D, post, comb, X, static_cast<const __half*>(w_f16), rows, parts);
  FWD_LAUNCH_CHECK("moe_combine_post_mix_kernel");
}

void moe_group(const int32_t* ids, const float* wts, int n, int k, int E, int S, int gn,
               int32_t* slot_ids, int32_t* pos, float* row_w, int32_t* row_tok, cudaStream_t s) {
  if (gn < 1 || gn > 8) throw_invalid_argument("cuda forward: expert group size must be 1..8");
  if (k > kMaxK || k > E || E > kMaxE)
    throw_invalid_argument("cuda forward: expert counts unsupported (k <= 16, E <= 4096)");
  const size_t smem = sizeof(int) * (3 * (size_t)E + kGroupTile);
  if (smem > 48 * 1024)
    DSV4_CUDA_CHECK(cudaFuncSetAttribute(moe_group_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  launch_k(moe_group_kernel, 1, 1024, smem, s, ids, wts, n, k, E, S, gn, slot_ids, pos, row_w,
           row_tok);
  FWD_LAUNCH_CHECK("moe_group_kernel");
}

void moe_gather(const float* x, const int32_t* slot_ids, const int32_t* row_tok, int gn, int rows,
                int D, float* gx, cudaStream_t s) {
  launch_k(moe_gather_kernel, dim3((unsigned)((D + 255) / 256), (unsigned)rows), 256, 0, s, x,
           slot_ids, row_tok, gn, D, gx);
  FWD_LAUNCH_CHECK("moe_gather_kernel");
}

void swiglu_rows(const float* g, const float* u, const float* row_w, const int32_t* slot_ids,
                 int gn, int rows, int F, float clamp, float* h, cudaStream_t s) {
  launch_k(swiglu_rows_kernel, dim3((unsigned)((F + 255) / 256), (unsigned)rows), 256, 0, s, g, u,
           row_w, slot_ids, gn, F, clamp, h);
  FWD_LAUNCH_CHECK("swiglu_rows_kernel");
}

}  // namespace dsv4::cuda::fwd
