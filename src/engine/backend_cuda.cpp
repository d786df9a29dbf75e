// The GPU backend (engine/backend.h): the weights uploaded once (DeviceModel), CudaModel's
// whole-model forward, sessions in device memory. Compiled only in CUDA builds.
#include <fmt/core.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <utility>

#include "core/error.h"
#include "cuda/cuda_forward.h"
#include "cuda/device.h"
#include "cuda/device_model.h"
#include "engine/backend.h"
#include "model/memory_plan.h"

namespace dsv4::engine {

std::unique_ptr<Backend> make_cuda_backend(const Model& model, const BackendOptions& opt,
                                           const std::string& flag);

namespace {

class CudaBackendSession final : public BackendSession {
 public:
  CudaBackendSession(const cuda::CudaModel& m, std::unique_ptr<cuda::CudaSession> s)
      : m_(m), s_(std::move(s)) {}
  int64_t n_past() const override { return s_->n_past(); }
  uint64_t bytes() const override { return m_.session_bytes(); }
  std::unique_ptr<BackendSession> clone() const override {
    return std::make_unique<CudaBackendSession>(m_, m_.clone_session(*s_));
  }
  const CpuSession& host_state(CpuSession& scratch) const override {
    m_.download_session(*s_, scratch);
    return scratch;
  }
  cuda::CudaSession& device() { return *s_; }
  const cuda::CudaModel& model() const { return m_; }

 private:
  const cuda::CudaModel& m_;
  std::unique_ptr<cuda::CudaSession> s_;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(const Model& model, const BackendOptions& opt, const std::string& flag) {
    if (cuda::device_count() == 0)
      fail("{}: no CUDA device found (run without {} to use the CPU)", flag, flag);
    if (opt.max_ctx < 2) fail("{}: the GPU session capacity must be >= 2 tokens", flag);
    if (opt.gpu_batch < 1 || opt.gpu_batch > 8192)
      fail("{}: the GPU prefill chunk must be in [1, 8192], got {}", flag, opt.gpu_batch);
    co_.qat = opt.qat;
    co_.max_ctx = opt.max_ctx;
    co_.max_batch = std::min(opt.gpu_batch, opt.max_ctx);
    co_.prefill_gemm = !opt.gpu_exact;
    co_.decode_x8 = !opt.gpu_exact;
    co_.dense_x8 = !opt.gpu_exact;
    co_.decode_attention_mma = !opt.gpu_exact;
    // Device memory the weights must leave free: the scratch, two sessions (the running one and
    // a snapshot copy) beyond the engine's session budget, and room for the CUDA context and
    // cuBLAS; routed experts that do not fit go to pinned host memory (automatic placement).
    const uint64_t sess = kv_memory_plan(model.cfg, co_.max_ctx, StateStorage::kF32).total_bytes();
    cuda::PlacementOptions po;
    po.expert_host_fraction = opt.expert_host_fraction;
    po.reserve_bytes = cuda::CudaModel::scratch_bytes(model.cfg, co_) + 2 * sess +
                       opt.session_reserve_bytes + (1ull << 30);
    dm_ = cuda::upload_model(model, po);
    cm_ = std::make_unique<cuda::CudaModel>(*dm_, co_);
    const cuda::DeviceInfo& dev = cuda::current_device_info();
    desc_ = fmt::format("cuda ({}, {}; session {:.1f} MiB for {} tokens; chunk {})", dev.name,
                        cuda::describe_placement(*dm_), cm_->session_bytes() / 1048576.0,
                        co_.max_ctx, co_.max_batch);
  }
  std::string describe() const override { return desc_; }
  bool is_gpu() const override { return true; }
  const ModelConfig& config() const override { return cm_->config(); }
  int64_t capacity() const override { return co_.max_ctx; }
  int64_t default_prefill_chunk() const override { return co_.max_batch; }
  std::unique_ptr<BackendSession> new_session() const override {
    return std::make_unique<CudaBackendSession>(*cm_, cm_->new_session());
  }
  std::unique_ptr<BackendSession> from_host(CpuSession&& s) const override {
    return std::make_unique<CudaBackendSession>(*cm_, cm_->upload_session(s));
  }
  void forward(BackendSession& sess, const int32_t* tokens, int64_t n,
               std::vector<float>& logits) const override {
    auto* s = dynamic_cast<CudaBackendSession*>(&sess);
    if (!s || &s->model() != cm_.get())
      fail("cuda backend: the session belongs to another backend");
    cm_->forward(s->device(), tokens, n, false, logits);
  }

 private:
  cuda::CudaOptions co_;
  std::unique_ptr<cuda::DeviceModel> dm_;  // before cm_: it must outlive the model
  std::unique_ptr<cuda::CudaModel> cm_;
  std::string desc_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const Model& model, const BackendOptions& opt,
                                           const std::string& flag) {
  return std::make_unique<CudaBackend>(model, opt, flag);
}

}  // namespace dsv4::engine
