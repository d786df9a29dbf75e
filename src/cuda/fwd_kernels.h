// Host-callable launchers of the GPU forward-pass kernels (src/cuda/fwd_*.cu), one per step of
// spec/ARCH.md §3-§7. Each mirrors the matching routine of the CPU reference
// (src/model/cpu_forward.cpp, src/model/ops.cpp, src/core/lowp.h) element by element; only the
// order of long f32 sums may differ. Positions are read from device memory (`p0`: the absolute
// position of the chunk's first token), so the same launches replay inside a CUDA graph. All
// launches are asynchronous on `s`.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda::fwd {

// X[i][s*D + d] = embedding row tokens[i] (F32 = 0, F16 = 1, BF16 = 30 ggml type ids), s < hc.
void embed(const void* table, uint32_t type, int64_t row_bytes, const int32_t* tokens, int n, int D,
           int hc, float* X, cudaStream_t s);

// HCPre (§4.1) + RMSNorm: from the state X [n][hc*D] and its mixes [n][mix] (= fn · X), writes
// post [n][hc], comb [n][hc*hc] and xin = RMS(sum_s pre_s X_s, norm_w) [n][D].
// comb_s (one token, hc = 4): post and comb are formed by a launch of their own on comb_s (the
// caller orders comb_s after X's and the mixes' producers and joins it before post and comb are
// read), xin on s; same values.
void hc_pre(const float* X, const float* mixes, const float* base, const float* scale,
            const float* norm_w, int n, int D, int hc, int iters, float rms_eps, float hc_eps,
            float* post, float* comb, float* xin, cudaStream_t s, cudaStream_t comb_s = nullptr);

// The HC mixes of a chunk: mixes [n][rows] = X [n][cols] times the F16 matrix [rows][cols]
// transposed, f32 products and sums (the prefill's replacement for dequantize + SGEMM: 24 rows made
// cuBLAS slow). Supported: hc_mixes_supported (rows <= 24, cols % 128 == 0, 16-byte aligned
// matrix); X 16-byte aligned.
bool hc_mixes_supported(int64_t rows, int64_t cols, const void* w_f16);
void hc_mixes(const void* w_f16, const float* X, int n, int rows, int cols, float* mixes,
              cudaStream_t s);

// The mixes of one token in two steps that keep the GPU busy (decode): hc_mix_partials writes
// parts [G][rows] = slices of the F16 matrix [rows][cols] times x (G = hc_mix_slices(cols) CTAs),
// and hc_pre_parts is hc_pre (n = 1) summing them. Supported: hc_mix_partials_supported.
bool hc_mix_partials_supported(int64_t rows, int64_t cols, int hc, int D);
int hc_mix_slices(int64_t cols);
void hc_mix_partials(const void* w_f16, const float* x, int rows, int cols, float* parts,
                     cudaStream_t s);
void hc_pre_parts(const float* X, const float* parts, int G, const float* base, const float* scale,
                  const float* norm_w, int D, int hc, int iters, float rms_eps, float hc_eps,
                  float* post, float* comb, float* xin, cudaStream_t s,
                  cudaStream_t comb_s = nullptr);

// hc_post of one token (hc = 4) and then hc_mix_partials of the new X with the next sublayer's F16
// mix matrix [rows][4 D] in one launch: parts [hc_mix_slices(4 D)][rows], summed by hc_pre_parts
// (the slices group the columns differently, so the sums differ from hc_mix_partials' in rounding
// only). Needs hc_mix_partials_supported(rows, 4 D, 4, D) and a 16-byte aligned matrix.
void hc_post_mix(const float* f, const float* post, const float* comb, int D, float* X,
                 const void* w_f16, int rows, float* parts, cudaStream_t s);

// HCPost (§4.3), in place on X.
void hc_post(const float* f, const float* post, const float* comb, int n, int D, int hc, float* X,
             cudaStream_t s);

// HCHead (§4.4) + RMSNorm(output_norm): z [n][D].
void hc_head(const float* X, const float* mixes, const float* base, const float* scale,
             const float* norm_w, int n, int D, int hc, float rms_eps, float hc_eps, float* z,
             cudaStream_t s);

// out[i] = RMS(x[i], w) for n rows of `dim` (w may be null).
void rms_rows(const float* x, const float* w, int n, int dim, float eps, float* out,
              cudaStream_t s);

// Per-head RMS (no weight) + RoPE of the tail, in place on q [n][H][hd].
void q_norm_rope(float* q, int n, int H, int hd, int rd, const float* freqs, const int32_t* p0,
                 float eps, cudaStream_t s);

// kvn[i] = FP8sim(RoPE(RMS(kv[i], w))) (§5.2; FP8 only when qat). ring (one token only, else
// null): the row is also stored in the raw ring (what ring_store does), which is safe before the
// attention for a single token since its slot holds a position outside the token's window.
void kv_norm_rope(const float* kv, const float* w, int n, int hd, int rd, const float* freqs,
                  const int32_t* p0, float eps, bool qat, float* kvn, float* ring, int W,
                  cudaStream_t s);

// Compressor frontier steps (§5.4) for n consecutive tokens. kv/score [n][lanes*width] (score
// without ape), ape [ratio][lanes*width]; state skv/ssc [lanes*ratio][lanes*width]. For a token
// that closes a window, the pooled row goes to pooled[i][width].
void compressor(const float* kv, const float* score, const float* ape, int n, int ratio, int width,
                const int32_t* p0, float* skv, float* ssc, float* pooled, cudaStream_t s);

// For each token that closed a window: row = RMS(pooled, w), RoPE at position p+1-ratio, then
// mode 0 (attention rows): FP8sim of the nope part; mode 1 (indexer rows): Hadamard + FP4sim.
// Written to rows[(p+1)/ratio - 1].
void compressor_emit(const float* pooled, const float* w, int n, int ratio, int width, int rd,
                     const float* freqs, const int32_t* p0, float eps, int mode, bool qat,
                     float* rows, cudaStream_t s);

// Indexer queries in place (§5.5): RoPE of the tail, Hadamard, FP4sim (qat). iq [n][IH][ID].
void idx_q(float* iq, int n, int IH, int ID, int rd, const float* freqs, const int32_t* p0,
           bool qat, cudaStream_t s);

// Indexer scores of every visible row for tokens whose visible count exceeds topk:
// scores[i][r] = sum_h max(q_ih · K_r, 0) * (iw[i][h] * wscale). Rows r < grid_rows are visited.
void idx_scores(const float* iq, const float* iw, const float* krows, int n, int IH, int ID,
                int topk, float wscale, const int32_t* p0, int grid_rows, int score_stride,
                float* scores, cudaStream_t s);

// idx_scores of one decode token with the dot products on TF32 tensor cores (the precision of the
// chunk's GEMM path), one kernel whose blocks walk 128-row tiles. Requires idx_scores_tf32_ok.
bool idx_scores_tf32_ok(const float* iq, const float* krows, int IH, int ID);
void idx_scores_tf32(const float* iq, const float* iw, const float* krows, int IH, int ID, int topk,
                     float wscale, const int32_t* p0, int grid_rows, float* scores,
                     cudaStream_t s);

// idx_scores from precomputed query-row dot products dots [n][IH][rows] (a GEMM of the chunk's
// queries with the indexer rows): for chunk tokens i0 .. i0 + n - 1 whose visible count exceeds
// topk, scores[i][r] = sum_h max(dots[i][h][r], 0) * (iw[i][h] * wscale), r < visible.
void idx_reduce(const float* dots, const float* iw, int n, int IH, int rows, float wscale,
                const int32_t* p0, int i0, int topk, int score_stride, float* scores,
                cudaStream_t s);

// Top-k (score descending, ties to the lower index) of each such token, sorted by index:
// sel[i][0..topk). max_rows: a bound on the visible rows (0: none known); at most
// idx_topk_small_rows() of them take blocks of 256 threads instead of 1024.
void idx_topk(const float* scores, int n, int score_stride, int topk, const int32_t* p0,
              int32_t* sel, cudaStream_t s, int64_t max_rows = 0);
int64_t idx_topk_small_rows();

// Sparse attention with sinks (§5.6) + inverse RoPE of the output (§5.7): o [n][H][hd].
// Keys: compressed rows (selected or all visible), then the raw window (positions before the
// chunk from the ring, the chunk's own rows from kvn). part: scratch of attention_part_floats(H,
// hd, max_keys) floats (may be null); with it a single-token call splits each head's keys over
// several blocks (flash-decoding) and merges them in a second launch. tensor_cores: a chunk of
// n > 1 tokens of a supported shape (attention_mma_supported) runs attention_mma instead, for
// the bf16-tolerance regime of the GEMM prefill, and a single token with part runs
// attention_decode_mma; otherwise (and always without it) f32 kernels.
void attention(const float* q, const float* kvn, const float* ring, const float* comp,
               const int32_t* sel, const float* sinks, int n, int H, int hd, int rd, int W,
               int ratio, int topk, const float* freqs, const int32_t* p0, int max_keys, float* o,
               float* part, bool tensor_cores, cudaStream_t s);

// The same attention on tensor cores (fwd_attention_mma.cu): q and the key rows rounded to bf16,
// products with f32 accumulation, f32 softmax and output. Shapes: hd == 512, H <= 64, even
// rd <= 256 (attention_mma_supported; others throw).
bool attention_mma_supported(int H, int hd, int rd);
// One decode token's keys in S ranges on tensor cores (the inputs rounded to bf16 as in
// attention_mma), 16 heads per block: unnormalised partial sums, maxima and denominators in
// part [H][S][hd + 4] for the decode attention's combine (attention_decode_mma).
void attention_mma_split(const float* q, const float* kvn, const float* ring, const float* comp,
                         const int32_t* sel, int H, int hd, int rd, int W, int ratio, int topk,
                         const int32_t* p0, int S, float* part, cudaStream_t s);
// One decode token's attention by attention_mma_split + the combine (sink, merge, inverse RoPE),
// with max_keys and part as fwd::attention's; false (nothing launched) where the shape or the
// part buffer does not fit.
bool attention_decode_mma(const float* q, const float* kvn, const float* ring, const float* comp,
                          const int32_t* sel, const float* sinks, int H, int hd, int rd, int W,
                          int ratio, int topk, const float* freqs, const int32_t* p0, int max_keys,
                          float* o, float* part, cudaStream_t s);
void attention_mma(const float* q, const float* kvn, const float* ring, const float* comp,
                   const int32_t* sel, const float* sinks, int n, int H, int hd, int rd, int W,
                   int ratio, int topk, const float* freqs, const int32_t* p0, float* o,
                   cudaStream_t s);
int64_t attention_part_floats(int H, int hd, int max_keys);

// Appends the chunk's last min(n, W) rows of kvn to the raw ring.
void ring_store(const float* kvn, int n, int hd, int W, const int32_t* p0, float* ring,
                cudaStream_t s);

// Router (§6.1): scores sqrt(softplus(logits)); hash table or biased top-k; weights.
// ids are written [k][n] (slot-major), weights [n][k].
// sort_by_id: each token's k places are stored by ascending expert id (ties by place) instead of
// by score, with their weights: the order in which the MoE combine sums them.
void router(const float* logits, const float* bias, const int32_t* tid2eid, const int32_t* tokens,
            int n, int E, int k, float scale, int32_t* ids, float* wts, cudaStream_t s,
            bool sort_by_id = false);

// h[s][f] = w_s * silu(min(g, c)) * clamp(u, -c, c) for `rows` rows. wts null: weight 1 (shared
// expert, rows = tokens); else routed rows s = j * n_tok + i (slot-major) with w = wts[i][j].
void swiglu(const float* g, const float* u, const float* wts, int n_tok, int k, int rows, int F,
            float clamp, float* h, cudaStream_t s);

// out[c][t] = x[t] for c < copies, t < count.
void replicate(const float* x, int64_t count, int copies, float* out, cudaStream_t s);

// The MoE output combined and applied to the residual state in one kernel: f[i][d] = sum over
// slots in ascending expert id of the routed contributions (pos null: contrib[j * n + i], the
// per-pair layout; else contrib[pos[j * n + i]], the grouped one) + shared[i][d], then HCPost
// (§4.3) with f on X. f is not written.
void moe_combine_post(const float* contrib, const float* shared, const int32_t* ids,
                      const int32_t* pos, int n, int k, int D, const float* post, const float* comb,
                      int hc, float* X, cudaStream_t s);

// moe_combine_post of one token (hc = 4, per-pair contrib) and then hc_mix_partials of the new X
// with the next layer's F16 attention mix matrix [rows][4 D] in one launch, as hc_post_mix.
// ids null: the k slots are already in ascending expert id (router with sort_by_id).
void moe_combine_post_mix(const float* contrib, const float* shared, const int32_t* ids, int k,
                          int D, const float* post, const float* comb, float* X, const void* w_f16,
                          int rows, float* parts, cudaStream_t s);

// Expert-grouped layout of a chunk's k * n (slot, token) pairs (ids [k][n] slot-major, wts
// [n][k]) for prefill: experts in ascending id, each expert's pairs (slot-major order) packed in
// groups of gn (1..8) rows, so one gn-vector matvec slot reads an expert's weights once per gn
// pairs, and consecutive slots share experts (L2 reuse). slot_ids [S] (the group's expert, -1
// for unused groups; S >= k*n/gn + min(E, k*n)), pos [k*n] (row of each pair), row_w [S*gn] (the
// pair's router weight, 0 for padding rows), row_tok [S*gn] (the pair's token, -1 for padding).
void moe_group(const int32_t* ids, const float* wts, int n, int k, int E, int S, int gn,
               int32_t* slot_ids, int32_t* pos, float* row_w, int32_t* row_tok, cudaStream_t s);

// moe_group with groups of one row (gn = 1), by a stable radix sort of the pairs on the expert
// id (many blocks; moe_group is one block): the same slot_ids [k*n], pos, row_w and row_tok.
// temp: moe_sort_temp_bytes(k * n, E) bytes of device memory.
size_t moe_sort_temp_bytes(int max_pairs, int E);
void moe_group_sorted(const int32_t* ids, const float* wts, int n, int k, int E, void* temp,
                      size_t temp_bytes, int32_t* slot_ids, int32_t* pos, float* row_w,
                      int32_t* row_tok, cudaStream_t s);

// gx[r] = x[row_tok[r]] for the rows of used groups (zeros for padding rows).
void moe_gather(const float* x, const int32_t* slot_ids, const int32_t* row_tok, int gn, int rows,
                int D, float* gx, cudaStream_t s);

// h[r][f] = row_w[r] * silu(min(g, c)) * clamp(u, -c, c) for the rows of used groups.
void swiglu_rows(const float* g, const float* u, const float* row_w, const int32_t* slot_ids,
                 int gn, int rows, int F, float clamp, float* h, cudaStream_t s);

// idx_topk for one token (n == 1) with many blocks, for long contexts: a 16-bit histogram of the
// score keys, the bin holding the topk-th largest, the keys above it and the candidates in it
// (at most 8192; more falls back to the one-block selection), then one block sorts. Same output
// as idx_topk. workspace: topk_large_workspace_bytes(topk) bytes of device memory.
int64_t topk_large_workspace_bytes(int topk);
void idx_topk_large(const float* scores, int topk, const int32_t* p0, int grid_rows,
                    void* workspace, int32_t* sel, cudaStream_t s);

// DSV4_CUDA_TRACE: a one-thread stamp that waits for everything queued before it on `s` (PDL),
// then adds the time since stamp i-1 (ts[i-1]) to acc[i-1] and stores its own time in ts[i];
// stamp 0 counts its passes in acc[n_slots]. Not repeated or knocked out by DSV4_CUDA_REPEAT.
// DSV4_CUDA_TRACE=2: the time from main-stream stamp `ref` to this point of stream `s`.
void trace_probe(const unsigned long long* ts, unsigned long long* acc, int ref, int slot,
                 cudaStream_t s);
void trace_stamp(unsigned long long* ts, unsigned long long* acc, int i, int n_slots,
                 cudaStream_t s);

// out[0] = argmax of x[0..n) (lowest index among equal maxima; NaN skipped; 0 when none).
// ws: argmax_workspace_bytes() of zeroed device memory, left zeroed (calls on one ws must not
// overlap).
int64_t argmax_workspace_bytes();
void argmax(const float* x, int n, int32_t* out, void* ws, cudaStream_t s);

// Fills n floats with v.
void fill(float* p, int64_t n, float v, cudaStream_t s);

// Fills n floats with values uniform in [-a, a], a pure function of (seed, index).
void fill_random(float* p, int64_t n, uint64_t seed, float a, cudaStream_t s);

}  // namespace dsv4::cuda::fwd
