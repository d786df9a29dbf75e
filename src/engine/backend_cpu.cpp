// The CPU reference backend (engine/backend.h): CpuModel with its CpuSession as the state.
#include <memory>
#include <utility>

#include "core/error.h"
#include "engine/backend.h"

namespace dsv4::engine {
namespace {

uint64_t layer_bytes(const LayerState& l) {
  return 4 * (uint64_t)(l.raw.size() + l.comp.size() + l.idx.size() + l.ckv.size() +
                        l.cscore.size() + l.ikv.size() + l.iscore.size());
}

class CpuBackendSession final : public BackendSession {
 public:
  explicit CpuBackendSession(CpuSession s) : s_(std::move(s)) {}
  int64_t n_past() const override { return s_.n_past; }
  uint64_t bytes() const override {
    uint64_t n = layer_bytes(s_.mtp);
    for (const LayerState& l : s_.layers) n += layer_bytes(l);
    return n;
  }
  std::unique_ptr<BackendSession> clone() const override {
    return std::make_unique<CpuBackendSession>(s_);
  }
  const CpuSession& host_state(CpuSession&) const override { return s_; }
  CpuSession& state() { return s_; }

 private:
  CpuSession s_;
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(const Model& m, bool qat) : cpu_(m, CpuOptions{qat}) {}
  std::string describe() const override { return "cpu"; }
  bool is_gpu() const override { return false; }
  const ModelConfig& config() const override { return cpu_.config(); }
  int64_t capacity() const override { return 0; }
  int64_t default_prefill_chunk() const override { return 512; }
  std::unique_ptr<BackendSession> new_session() const override {
    return std::make_unique<CpuBackendSession>(cpu_.new_session());
  }
  std::unique_ptr<BackendSession> from_host(CpuSession&& s) const override {
    const CpuSession ref = cpu_.new_session();
    if (s.layers.size() != ref.layers.size())
      fail("session state: {} layers, the model has {}", s.layers.size(), ref.layers.size());
    for (size_t l = 0; l < ref.layers.size(); ++l) {
      const LayerState &a = s.layers[l], &b = ref.layers[l];
      if (a.raw.size() != b.raw.size() || a.ckv.size() != b.ckv.size() ||
          a.ikv.size() != b.ikv.size())
        fail("session state: layer {} has the shapes of another model", l);
    }
    return std::make_unique<CpuBackendSession>(std::move(s));
  }
  void forward(BackendSession& sess, const int32_t* tokens, int64_t n,
               std::vector<float>& logits) const override {
    auto* s = dynamic_cast<CpuBackendSession*>(&sess);
    if (!s) fail("cpu backend: the session belongs to another backend");
    // The caller's vector is the result buffer: no allocation per decode step.
    ForwardResult r;
    r.logits.swap(logits);
    cpu_.forward(s->state(), tokens, n, false, false, r);
    logits.swap(r.logits);
  }

 private:
  CpuModel cpu_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const Model& model, bool qat) {
  return std::make_unique<CpuBackend>(model, qat);
}

}  // namespace dsv4::engine
