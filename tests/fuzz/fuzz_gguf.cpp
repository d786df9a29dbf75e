// libFuzzer target for the GGUF reader (built by scripts/fuzz.sh). Any input must either parse
// or throw dsv4::Error; everything parsed is read back so that the sanitizers see any pointer
// or size the reader got wrong.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <vector>

#include "core/error.h"
#include "gguf/gguf.h"

using namespace dsv4;
using namespace dsv4::gguf;

static uint64_t touch(const Value& v) {
  uint64_t h = uint64_t(v.type) + uint64_t(v.elem_type) + v.array_size();
  h += v.type_description().size();
  if (auto* s = std::get_if<std::string>(&v.scalar)) h += s->size() ? uint8_t((*s)[0]) : 0;
  if (auto* u = std::get_if<uint64_t>(&v.scalar)) h += *u;
  if (auto* i = std::get_if<int64_t>(&v.scalar)) h += uint64_t(*i);
  if (auto* d = std::get_if<double>(&v.scalar)) h += *d == *d;
  for (uint64_t x : v.arr_u) h += x;
  for (int64_t x : v.arr_i) h += uint64_t(x);
  for (double x : v.arr_f) h += x == x;
  for (const std::string& s : v.arr_s) h += s.size() ? uint8_t(s.back()) : 0;
  for (const Value& x : v.arr_v) h += touch(x);
  return h;
}

// Exercises the typed getters on every key; type mismatches throw dsv4::Error by design.
static uint64_t get_all(const File& f, const std::string& key) {
  uint64_t h = 0;
  const std::function<void()> getters[] = {
      [&] { h += f.get_u32(key); },
      [&] { h += f.get_u32_opt(key).value_or(0); },
      [&] { h += f.get_uint(key); },
      [&] { h += f.get_float(key) == 0; },
      [&] { h += f.get_bool(key); },
      [&] { h += f.get_string(key).size(); },
      [&] { h += f.get_int_array(key).size(); },
      [&] { h += f.get_float_array(key).size(); },
      [&] { h += f.get_string_array(key).size(); },
  };
  for (const auto& g : getters) {
    try {
      g();
    } catch (const Error&) {
    }
  }
  return h;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::optional<File> parsed;
  try {
    parsed.emplace(
        File::parse(MappedFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.gguf")));
  } catch (const Error&) {
    return 0;  // rejected cleanly
  }
  const File& f = *parsed;
  volatile uint64_t h = f.version() + f.alignment() + f.data_offset() + f.file_size();
  for (const auto& [key, v] : f.metadata())
    h = h + touch(v) + (f.find(key) == &v) + get_all(f, key);
  for (const TensorInfo& t : f.tensors()) {
    h = h + t.n_elements() + (f.find_tensor(t.name) == &t);
    for (uint64_t i = 0; i < t.nbytes; ++i) h = h + t.data[i];
  }
  // Whatever the reader accepts, the writer must write back and the result must read back the
  // same. An Error escaping from here aborts, which libFuzzer reports as a crash.
  Writer w(f.alignment());
  for (const auto& [key, v] : f.metadata()) w.set(key, v);
  for (const TensorInfo& t : f.tensors())
    w.add_tensor(t.name, t.ne, t.type, std::vector<uint8_t>(t.data, t.data + t.nbytes));
  const File g = File::parse(MappedFile::from_bytes(w.to_bytes(), "rewritten.gguf"));
  if (g.metadata().size() != f.metadata().size() || g.tensors().size() != f.tensors().size() ||
      g.alignment() != f.alignment())
    __builtin_trap();
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const TensorInfo& a = f.tensors()[i];
    const TensorInfo& b = g.tensors()[i];
    if (a.name != b.name || a.ne != b.ne || a.type != b.type || a.nbytes != b.nbytes ||
        std::memcmp(a.data, b.data, a.nbytes) != 0)
      __builtin_trap();
  }
  return 0;
}
