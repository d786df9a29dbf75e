// The forward-pass backend behind the Engine and the CLI: the CPU reference (CpuModel) or the
// whole-model GPU path (CudaModel, CUDA builds only). Callers see opaque sessions; sampling stays
// on the host, so forward() returns the last token's full logits. The disk KV store and session
// files serialize the CPU reference's layout (CpuSession), and every backend converts its state
// to and from it, so a snapshot written from a GPU session loads into a CPU one and vice versa.
// No CUDA header is included here: the CPU-only build compiles the same engine.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/cpu_forward.h"
#include "model/weights.h"

namespace dsv4::engine {

class BackendSession {
 public:
  virtual ~BackendSession() = default;
  virtual int64_t n_past() const = 0;
  // Memory the session's state holds: host bytes (grows with the rows) for the CPU, device
  // bytes (fixed by the capacity) for the GPU. What the engine's session budget counts.
  virtual uint64_t bytes() const = 0;
  // An independent copy at the same position (the engine's prefix snapshots).
  virtual std::unique_ptr<BackendSession> clone() const = 0;
  // The state in the host layout: the session's own (CPU), or `scratch` filled from the device.
  virtual const CpuSession& host_state(CpuSession& scratch) const = 0;
};

struct BackendOptions {
  bool gpu = false;
  bool qat = true;  // FP8 KV / FP4 indexer rounding (CpuOptions::qat)
  // GPU: tokens one session holds at most (device state is sized for it); must be > 0.
  int64_t max_ctx = 0;
  // GPU: most tokens per forward chunk (scratch sizing). The GPU's prefill is fastest with
  // chunks of >= 2048 tokens.
  int64_t gpu_batch = 2048;
  // GPU: f32 matvec products everywhere (no bf16 prefill GEMMs, no int8 x in any matvec):
  // equal to the CPU reference to f32 rounding; slower. For tests and comparisons.
  bool gpu_exact = false;
  // GPU: routed-expert bytes kept in pinned host memory (PlacementOptions::expert_host_fraction;
  // < 0: automatic, only what does not fit).
  double expert_host_fraction = -1;
  // GPU: device bytes to leave free for sessions beyond the first two (the engine passes its
  // session budget); the weights' placement keeps this, the scratch and two sessions free.
  uint64_t session_reserve_bytes = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // "cpu", or "cuda (NVIDIA H200, ...)" for messages and logs.
  virtual std::string describe() const = 0;
  virtual bool is_gpu() const = 0;
  virtual const ModelConfig& config() const = 0;
  // Most tokens one session may hold (0: no limit but the memory).
  virtual int64_t capacity() const = 0;
  // Prefill chunk that suits the backend when the caller has no preference.
  virtual int64_t default_prefill_chunk() const = 0;

  virtual std::unique_ptr<BackendSession> new_session() const = 0;
  // A session holding `state` (taken); throws naming the problem when it does not fit (more
  // tokens than capacity(), shapes of another model).
  virtual std::unique_ptr<BackendSession> from_host(CpuSession&& state) const = 0;
  // Runs `n` tokens at positions sess.n_past().. and advances the session; `logits` receives
  // the last token's n_vocab logits.
  virtual void forward(BackendSession& sess, const int32_t* tokens, int64_t n,
                       std::vector<float>& logits) const = 0;

  // A fresh session's host-layout state (the shapes from_host expects).
  CpuSession new_host_session() const { return empty_cpu_session(config()); }
};

// The CPU reference on `model` (which must outlive the backend).
std::unique_ptr<Backend> make_cpu_backend(const Model& model, bool qat);

// opt.gpu: the CUDA backend (uploads the weights); else the CPU one. Throws when the GPU is
// asked for and this build has no CUDA backend or no CUDA device is present; `flag` names the
// option in those messages (e.g. "--gpu").
std::unique_ptr<Backend> make_backend(const Model& model, const BackendOptions& opt,
                                      const std::string& flag = "--gpu");

}  // namespace dsv4::engine
