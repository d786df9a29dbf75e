// GGUF v3 writer with the layout llama.cpp's gguf writer produces: header, KVs, tensor infos,
// zero padding to the alignment, then tensor data in insertion order, each tensor (the last one
// included) padded to the alignment, so the file reads back with llama.cpp's contiguity checks.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "core/error.h"
#include "gguf/gguf.h"

namespace dsv4::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;
constexpr uint32_t kVersion = 3;

class Buf {
 public:
  std::vector<uint8_t> bytes;
  template <typename T>
  void put(T v) {
    // Byte by byte: resize + memcpy and range insert both trip GCC 12 -Wstringop-overflow false
    // positives (one with -fsanitize, the other without).
    uint8_t raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof(T));
    for (uint8_t c : raw) bytes.push_back(c);
  }
  void put_string(std::string_view s) {
    put<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
};

uint64_t align_up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;
}

// Range-checks an element against its GGUF type so that nothing is silently truncated.
template <typename T, typename S>
T narrow(S v, std::string_view key, ValueType t) {
  if (!std::in_range<T>(v))
    fail("gguf writer: key '{}': value {} does not fit {}", key, v, value_type_name(t));
  return T(v);
}

float to_f32(double d, std::string_view key) {
  // Out-of-range double -> float conversion is undefined behaviour; infinities and NaN are fine.
  if (std::isfinite(d) && std::fabs(d) > double(std::numeric_limits<float>::max()))
    fail("gguf writer: key '{}': value {} does not fit FLOAT32", key, d);
  return float(d);
}

void put_scalar_u(Buf& b, ValueType t, uint64_t v, std::string_view key) {
  switch (t) {
    case ValueType::UINT8:
      b.put(narrow<uint8_t>(v, key, t));
      break;
    case ValueType::UINT16:
      b.put(narrow<uint16_t>(v, key, t));
      break;
    case ValueType::UINT32:
      b.put(narrow<uint32_t>(v, key, t));
      break;
    case ValueType::UINT64:
      b.put(v);
      break;
    case ValueType::BOOL:
      if (v > 1) fail("gguf writer: key '{}': BOOL value {} (must be 0 or 1)", key, v);
      b.put(uint8_t(v));
      break;
    default:
      fail("gguf writer: key '{}': {} is not an unsigned type", key, value_type_name(t));
  }
}

void put_scalar_i(Buf& b, ValueType t, int64_t v, std::string_view key) {
  switch (t) {
    case ValueType::INT8:
      b.put(narrow<int8_t>(v, key, t));
      break;
    case ValueType::INT16:
      b.put(narrow<int16_t>(v, key, t));
      break;
    case ValueType::INT32:
      b.put(narrow<int32_t>(v, key, t));
      break;
    case ValueType::INT64:
      b.put(v);
      break;
    default:
      fail("gguf writer: key '{}': {} is not a signed type", key, value_type_name(t));
  }
}

void put_scalar_f(Buf& b, ValueType t, double v, std::string_view key) {
  if (t == ValueType::FLOAT32)
    b.put(to_f32(v, key));
  else
    b.put(v);
}

bool is_unsigned_or_bool(ValueType t) {
  return t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 ||
         t == ValueType::UINT64 || t == ValueType::BOOL;
}
bool is_signed(ValueType t) {
  return t == ValueType::INT8 || t == ValueType::INT16 || t == ValueType::INT32 ||
         t == ValueType::INT64;
}
bool is_float(ValueType t) {
  return t == ValueType::FLOAT32 || t == ValueType::FLOAT64;
}

// Encodes a value (without its type tag). `depth` is the number of arrays enclosing it.
void put_value(Buf& b, const Value& v, std::string_view key, int depth) {
  const ValueType t = v.type;
  if (uint32_t(t) > uint32_t(ValueType::FLOAT64))
    fail("gguf writer: key '{}': unknown value type {}", key, uint32_t(t));
  auto wrong_storage = [&] {
    fail("gguf writer: key '{}': {} value holds the wrong kind of scalar", key, value_type_name(t));
  };
  if (t == ValueType::ARRAY) {
    const ValueType e = v.elem_type;
    if (uint32_t(e) > uint32_t(ValueType::FLOAT64))
      fail("gguf writer: key '{}': unknown array element type {}", key, uint32_t(e));
    if (e == ValueType::ARRAY && depth + 1 >= kMaxArrayNesting)
      fail("gguf writer: key '{}': arrays nested more than {} deep", key, kMaxArrayNesting);
    b.put(uint32_t(e));
    b.put<uint64_t>(v.array_size());
    if (is_unsigned_or_bool(e)) {
      for (uint64_t x : v.arr_u) put_scalar_u(b, e, x, key);
    } else if (is_signed(e)) {
      for (int64_t x : v.arr_i) put_scalar_i(b, e, x, key);
    } else if (is_float(e)) {
      for (double x : v.arr_f) put_scalar_f(b, e, x, key);
    } else if (e == ValueType::STRING) {
      for (const std::string& s : v.arr_s) b.put_string(s);
    } else {
      for (const Value& x : v.arr_v) {
        if (x.type != ValueType::ARRAY)
          fail("gguf writer: key '{}': element of an ARRAY of ARRAY is {}", key,
               value_type_name(x.type));
        put_value(b, x, key, depth + 1);
      }
    }
    return;
  }
  if (is_unsigned_or_bool(t)) {
    if (!std::holds_alternative<uint64_t>(v.scalar)) wrong_storage();
    put_scalar_u(b, t, std::get<uint64_t>(v.scalar), key);
  } else if (is_signed(t)) {
    if (!std::holds_alternative<int64_t>(v.scalar)) wrong_storage();
    put_scalar_i(b, t, std::get<int64_t>(v.scalar), key);
  } else if (is_float(t)) {
    if (!std::holds_alternative<double>(v.scalar)) wrong_storage();
    put_scalar_f(b, t, std::get<double>(v.scalar), key);
  } else {
    if (!std::holds_alternative<std::string>(v.scalar)) wrong_storage();
    b.put_string(std::get<std::string>(v.scalar));
  }
}

// Checks name, dims and type and returns the data size in bytes.
uint64_t tensor_nbytes(const std::string& name, const std::vector<uint64_t>& ne, GgmlType type) {
  if (name.empty()) fail("gguf writer: tensor name is empty");
  if (name.size() > kMaxTensorNameLength)
    fail("gguf writer: tensor '{}' name is {} bytes, over the ggml limit of {}", name, name.size(),
         kMaxTensorNameLength);
  if (ne.empty() || ne.size() > kMaxDims)
    fail("gguf writer: tensor '{}' has {} dims (must be 1 to {})", name, ne.size(), kMaxDims);
  const auto traits = ggml_type_traits(uint32_t(type));
  if (!traits) fail("gguf writer: tensor '{}' has unknown ggml type id {}", name, uint32_t(type));
  constexpr uint64_t kMaxCount = uint64_t(std::numeric_limits<int64_t>::max());
  uint64_t n_el = 1;
  for (uint64_t d : ne) {
    if (d == 0) fail("gguf writer: tensor '{}' has a zero dim", name);
    if (d > kMaxCount || n_el > kMaxCount / d)
      fail("gguf writer: tensor '{}' element count overflows int64", name);
    n_el *= d;
  }
  if (ne[0] % traits->block_elems != 0)
    fail(
        "gguf writer: tensor '{}' of type {} has first dim {}, not a multiple of the block size {}",
        name, traits->name, ne[0], traits->block_elems);
  uint64_t nbytes = 0;
  bool overflow =
      __builtin_mul_overflow(ne[0] / traits->block_elems, uint64_t{traits->block_bytes}, &nbytes);
  for (size_t d = 1; d < ne.size(); ++d)
    overflow = overflow || __builtin_mul_overflow(nbytes, ne[d], &nbytes);
  if (overflow) fail("gguf writer: tensor '{}' byte size overflows 64 bits", name);
  return nbytes;
}

uint32_t check_alignment(const Value& v) {
  if (v.type != ValueType::UINT32 || !std::holds_alternative<uint64_t>(v.scalar))
    fail("gguf writer: key 'general.alignment' must be UINT32, got {}", v.type_description());
  const uint64_t a = std::get<uint64_t>(v.scalar);
  if (a == 0 || a > std::numeric_limits<uint32_t>::max() || !std::has_single_bit(a))
    fail("gguf writer: key 'general.alignment' is {}, must be a nonzero power of two", a);
  if (a > kMaxAlignment)
    fail("gguf writer: key 'general.alignment' is {}, above the limit {}", a, kMaxAlignment);
  return uint32_t(a);
}

}  // namespace

struct Writer::Layout {
  std::vector<uint8_t> header;    // everything before the data section, padding included
  std::vector<uint64_t> offsets;  // per tensor, relative to the data section
  uint64_t total = 0;             // file size
};

Writer::Writer(uint32_t alignment) : alignment_(alignment) {
  if (alignment == 0 || !std::has_single_bit(alignment))
    fail("gguf writer: alignment {} is not a nonzero power of two", alignment);
  if (alignment > kMaxAlignment)
    fail("gguf writer: alignment {} is above the limit {}", alignment, kMaxAlignment);
  if (alignment != kDefaultAlignment) kv_.emplace_back("general.alignment", Value::u32(alignment));
}

void Writer::set(std::string key, Value v) {
  if (key.empty()) fail("gguf writer: empty metadata key");
  if (key.size() > kMaxKeyLength)
    fail("gguf writer: key '{}...' is {} bytes, over the limit of {}", key.substr(0, 64),
         key.size(), kMaxKeyLength);
  Buf scratch;  // validates now, so the error points at the caller that set the bad value
  put_value(scratch, v, key, 0);
  if (key == "general.alignment") alignment_ = check_alignment(v);
  for (auto& [k, old] : kv_)
    if (k == key) {
      old = std::move(v);
      return;
    }
  kv_.emplace_back(std::move(key), std::move(v));
}

void Writer::add_tensor(std::string name, std::vector<uint64_t> ne, GgmlType type,
                        std::vector<uint8_t> bytes) {
  const uint64_t nbytes = tensor_nbytes(name, ne, type);
  if (bytes.size() != nbytes)
    fail("gguf writer: tensor '{}' has {} bytes of data, its type {} and dims imply {}", name,
         bytes.size(), ggml_type_name(type), nbytes);
  for (const PendingTensor& t : tensors_)
    if (t.name == name) fail("gguf writer: duplicate tensor name '{}'", name);
  tensors_.push_back(
      PendingTensor{std::move(name), std::move(ne), type, std::move(bytes), false, nbytes});
}

void Writer::add_tensor_zeros(std::string name, std::vector<uint64_t> ne, GgmlType type) {
  const uint64_t nbytes = tensor_nbytes(name, ne, type);
  for (const PendingTensor& t : tensors_)
    if (t.name == name) fail("gguf writer: duplicate tensor name '{}'", name);
  tensors_.push_back(PendingTensor{std::move(name), std::move(ne), type, {}, true, nbytes});
}

Writer::Layout Writer::layout() const {
  Layout l;
  Buf b;
  b.put(kMagic);
  b.put(kVersion);
  b.put<uint64_t>(tensors_.size());
  b.put<uint64_t>(kv_.size());
  for (const auto& [key, v] : kv_) {
    b.put_string(key);
    b.put(uint32_t(v.type));
    put_value(b, v, key, 0);
  }
  uint64_t off = 0;
  for (const PendingTensor& t : tensors_) {
    b.put_string(t.name);
    b.put(uint32_t(t.ne.size()));
    for (uint64_t d : t.ne) b.put(d);
    b.put(uint32_t(t.type));
    b.put(off);
    l.offsets.push_back(off);
    off = align_up(off + t.nbytes, alignment_);
  }
  b.bytes.resize(align_up(b.bytes.size(), alignment_), 0);
  l.header = std::move(b.bytes);
  l.total = l.header.size() + off;
  return l;
}

std::vector<uint8_t> Writer::to_bytes() const {
  Layout l = layout();
  std::vector<uint8_t> out(l.total, 0);
  std::memcpy(out.data(), l.header.data(), l.header.size());
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (!tensors_[i].zeros && !tensors_[i].bytes.empty())
      std::memcpy(out.data() + l.header.size() + l.offsets[i], tensors_[i].bytes.data(),
                  tensors_[i].bytes.size());
  return out;
}

namespace {

void write_all(int fd, const uint8_t* p, uint64_t n, uint64_t at, const std::string& tmp) {
  while (n > 0) {
    const size_t chunk = size_t(std::min<uint64_t>(n, uint64_t{1} << 30));
    const ssize_t w = ::pwrite(fd, p, chunk, off_t(at));
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("cannot write {} bytes at offset {} of {}: {}", chunk, at, tmp, std::strerror(errno));
    }
    p += w;
    n -= uint64_t(w);
    at += uint64_t(w);
  }
}

}  // namespace

void Writer::write_file(const std::string& path) const {
  const Layout l = layout();
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("{}: cannot create temporary file {}: {}", path, tmp, std::strerror(errno));
  try {
    write_all(fd, l.header.data(), l.header.size(), 0, tmp);
    // Zero tensors and padding are never written: the final ftruncate leaves them as holes.
    for (size_t i = 0; i < tensors_.size(); ++i)
      if (!tensors_[i].zeros)
        write_all(fd, tensors_[i].bytes.data(), tensors_[i].bytes.size(),
                  l.header.size() + l.offsets[i], tmp);
    if (::ftruncate(fd, off_t(l.total)) != 0)
      fail("cannot extend {} to {} bytes: {}", tmp, l.total, std::strerror(errno));
    if (::fsync(fd) != 0) fail("cannot sync {}: {}", tmp, std::strerror(errno));
    const int rc = ::close(fd);
    fd = -1;  // closed even when close() reports an error
    if (rc != 0) fail("cannot close {}: {}", tmp, std::strerror(errno));
  } catch (const Error& e) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    fail("{}: {}", path, e.what());
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    fail("{}: cannot rename {} into place: {}", path, tmp, std::strerror(e));
  }
}

}  // namespace dsv4::gguf
