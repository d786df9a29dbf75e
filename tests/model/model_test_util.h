// Helpers for model tests: tiny models in memory, and rewriting a GGUF with one change.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "model/tiny_model.h"
#include "model/weights.h"

namespace dsv4::test {

inline std::unique_ptr<gguf::File> to_file(const gguf::Writer& w, const std::string& name) {
  return std::make_unique<gguf::File>(
      gguf::File::parse(MappedFile::from_bytes(w.to_bytes(), name)));
}

struct TinyPair {
  std::unique_ptr<gguf::File> main, mtp;
};
inline TinyPair tiny_files(const TinySpec& s) {
  TinyFiles f = build_tiny_model(s);
  TinyPair p;
  p.main = to_file(f.main, "tiny.gguf");
  if (s.mtp) p.mtp = to_file(f.mtp, "tiny-mtp.gguf");
  return p;
}

// A copy of `f` where `edit_kv` may change metadata and `edit_tensor` may change or drop tensors
// (return false to drop).
struct TensorEdit {
  std::string name;
  std::vector<uint64_t> ne;
  GgmlType type;
  std::vector<uint8_t> bytes;
};
inline std::unique_ptr<gguf::File> rewrite(
    const gguf::File& f, const std::function<void(gguf::Writer&)>& edit_kv,
    const std::function<bool(TensorEdit&)>& edit_tensor = nullptr) {
  gguf::Writer w;
  for (const auto& [k, v] : f.metadata()) w.set(k, v);
  if (edit_kv) edit_kv(w);
  for (const auto& t : f.tensors()) {
    TensorEdit e{t.name, t.ne, t.type, std::vector<uint8_t>(t.data, t.data + t.nbytes)};
    if (edit_tensor && !edit_tensor(e)) continue;
    w.add_tensor(e.name, e.ne, e.type, std::move(e.bytes));
  }
  return to_file(w, f.path());
}

}  // namespace dsv4::test
