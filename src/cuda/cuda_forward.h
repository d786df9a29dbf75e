// The whole DeepSeek V4 Flash forward pass on one GPU (spec/ARCH.md §3-§9), the same contract as
// the CPU reference (src/model/cpu_forward.h), which is its correctness oracle. Session state
// (raw window, compressed rows, indexer rows, compressor frontiers) lives in device memory.
// Decode (n == 1) replays a captured CUDA graph; nothing is allocated per token and only the
// logits (or, with sample_greedy, one token id) cross to the host.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "cuda/device_model.h"
#include "model/cpu_forward.h"

namespace dsv4::cuda {

struct CudaOptions {
  bool qat = true;            // FP8 KV / FP4 indexer rounding, as CpuOptions::qat
  int64_t max_ctx = 1 << 16;  // session capacity in tokens (device state is sized for it)
  int64_t max_batch = 512;    // most tokens per forward() call (prefill chunk); scratch size
  bool use_graph = true;      // CUDA-graph replay of the decode step
  // Decode graphs are captured per context bound: the next power of two from graph_min_bound
  // up (at most max_ctx) of the tokens held after the step. The launches whose size grows with
  // the context (indexer rows, top-k, attention key ranges) are sized for the bound, not for
  // max_ctx. Env DSV4_GRAPH_BOUND=capacity: one graph sized for max_ctx.
  int64_t graph_min_bound = 4096;
  // Chunks of at least gemm_min_tokens tokens multiply with tensor-core GEMMs: weights
  // dequantized to bf16 scratch, activations rounded to bf16, f32 accumulation (the HC mixes and
  // the router stay f32). Off: every product runs the decode matvec kernels, which match the CPU
  // reference to f32 rounding.
  bool prefill_gemm = true;
  int64_t gemm_min_tokens = 32;
  // With prefill_gemm, a decode token's indexer scores over at least this many compressed rows
  // take the chunk's path (TF32 GEMM of the rows and the token's query heads, then the
  // ReLU-weighted head sum; the official scores are BF16 products) instead of the f32 kernel,
  // whose FMAs took ~18 us per ratio-4 layer at 64K context. 0: never. Env DSV4_IDX_GEMM_ROWS
  // overrides (A/B timing).
  int64_t idx_gemm_rows = 4096;
  // ... and, for one decode token, in one kernel on TF32 tensor cores (fwd::idx_scores_tf32)
  // instead of the cuBLAS GEMM and the head-sum kernel. Env DSV4_IDX_TF32_MMA=0 restores them.
  bool idx_scores_mma = true;
  // Matrix-vector products of the routed experts (decode, and chunks below gemm_min_tokens)
  // quantize x to int8 per 32 values and use integer dot products where the weight format has
  // that kernel (IQ2_XXS, Q2_K): those formats are instruction-bound with f32 x. The
  // rounding is finer than the official FP8 activation quantization; off: f32 x, equal to the
  // CPU reference to f32 rounding.
  bool decode_x8 = true;
  // The same for the Q8_0 projections of decode (q_a, q_b, kv, o_a, o_b, shared expert; not the
  // output head): with f32 x their decoder spends ~13 instructions per 4 weights and the mid-size
  // ones stall at ~45 % of the DRAM rate; with int8 x it is 8 dp4a per 32-value block. Official
  // DeepSeek V4 quantizes these activations to FP8 (e4m3, block 128), far coarser than int8 per 32.
  bool dense_x8 = true;
  // A decode token's attention on tensor cores (fwd::attention_decode_mma: key ranges with q
  // and the key rows rounded to bf16, as the prefill's attention_mma, then the f32 combine): the
  // f32 kernel's FMAs took ~14 us per layer at 640 keys. H200 q2 decode @2K 187.8-188.7 tok/s
  // against 184.2-184.4, @64K 178.8 against 172.6-173.2, @512K 132.0 against 121.1. Off: the f32
  // kernels, equal to the CPU reference to f32 rounding. Env DSV4_ATT_DECODE_MMA=0 turns it off
  // (A/B timing).
  bool decode_attention_mma = true;
};

class CudaSession;

class CudaModel {
 public:
  CudaModel(const DeviceModel& dm, CudaOptions opt);
  ~CudaModel();
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  std::unique_ptr<CudaSession> new_session() const;

  // A device-to-device copy of `sess` (an independent session at the same position): what the
  // engine keeps as a prefix snapshot. Copies only the rows written so far.
  std::unique_ptr<CudaSession> clone_session(const CudaSession& sess) const;

  // The session state in the CPU reference's host layout (CpuSession, which the disk KV store
  // serializes): the same f32 values, raw ring slot = pos % window, compressed and indexer rows
  // in order, compressor frontiers [lanes*ratio][lanes*width] with the ape already in the
  // scores. Ring slots not yet written are zero, as in a fresh CpuSession; the MTP state is
  // empty (MTP does not run on the GPU).
  void download_session(const CudaSession& sess, CpuSession& out) const;
  // A new session holding `in` (from download_session, CpuModel or a disk snapshot). Throws
  // naming the limit when `in` holds more tokens than max_ctx, or the layer whose shapes do not
  // match this model. The MTP part of `in` is ignored.
  std::unique_ptr<CudaSession> upload_session(const CpuSession& in) const;

  // Runs `n` tokens (host ids) at positions sess.n_past().. and advances the session; longer
  // inputs than max_batch are processed in chunks. Writes logits of every token
  // ([n][vocab]) when all_logits, else of the last one ([vocab]), to host `logits` (resized).
  void forward(CudaSession& sess, const int32_t* tokens, int64_t n, bool all_logits,
               std::vector<float>& logits) const;

  // One decode step that returns the argmax token (lowest id among equal maxima) without
  // copying logits to the host: what benchmarks and greedy decoding use.
  int32_t decode_greedy(CudaSession& sess, int32_t token) const;

  // Benchmarks at long context without the prefill: makes a fresh session look as if `n` tokens
  // (a multiple of 128, so that no compressor window is open) had been processed. The raw window
  // and every compressed and indexer row get random values of unit RMS; the compressor frontiers
  // stay empty. Later steps then cost what they cost in a real session of that length (the same
  // rows are visited and ranked), but their logits are meaningless.
  void fill_synthetic_context(CudaSession& sess, int64_t n, uint64_t seed) const;

  // Device bytes the model allocates for its scratch with options `opt` (per-chunk buffers for
  // max_batch tokens, the prefill GEMM buffers): an estimate from the config alone, within a few
  // MiB of the allocation, for sizing device memory before the weights are placed. The
  // constructor fails naming max_batch when this does not fit in the free device memory.
  static uint64_t scratch_bytes(const ModelConfig& c, const CudaOptions& opt);

  // Device bytes of one session's state per token of context, and in total for max_ctx.
  uint64_t session_bytes() const;

  const ModelConfig& config() const;
  const CudaOptions& options() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

class CudaSession {
 public:
  virtual ~CudaSession() = default;
  virtual int64_t n_past() const = 0;
};

}  // namespace dsv4::cuda
