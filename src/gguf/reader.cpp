// GGUF v3 reader. The input is untrusted: every read is bounds-checked, every count is checked
// against the bytes left (and a memory budget) before anything is allocated, and every failure
// is a dsv4::Error that starts with the file name and says what is wrong where.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <utility>

#include "core/error.h"
#include "gguf/gguf.h"

namespace dsv4::gguf {
namespace {

static_assert(std::endian::native == std::endian::little,
              "GGUF is little-endian; the reader copies values as they are");

constexpr uint32_t kMagic = 0x46554747;  // the bytes "GGUF" read as a little-endian u32
constexpr uint32_t kVersion = 3;
constexpr uint32_t kMaxValueType = 12;

bool is_unsigned(ValueType t) {
  return t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 ||
         t == ValueType::UINT64;
}
bool is_signed(ValueType t) {
  return t == ValueType::INT8 || t == ValueType::INT16 || t == ValueType::INT32 ||
         t == ValueType::INT64;
}
bool is_integer(ValueType t) {
  return is_unsigned(t) || is_signed(t);
}
bool is_float(ValueType t) {
  return t == ValueType::FLOAT32 || t == ValueType::FLOAT64;
}

// Smallest encoding of one array element: bounds a count by the bytes left before allocating.
uint64_t min_encoded_size(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::BOOL:
      return 1;
    case ValueType::UINT16:
    case ValueType::INT16:
      return 2;
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::FLOAT32:
      return 4;
    case ValueType::UINT64:
    case ValueType::INT64:
    case ValueType::FLOAT64:
    case ValueType::STRING:
      return 8;  // the u64 length
    case ValueType::ARRAY:
      return 12;  // u32 element type + u64 count
  }
  return 1;
}

// Everything parse() produces, moved into the File at the end (File's members are private).
struct Parsed {
  uint32_t version = 0;
  uint32_t alignment = kDefaultAlignment;
  uint64_t data_offset = 0;
  std::vector<std::pair<std::string, Value>> kv;
  std::map<std::string, size_t, std::less<>> kv_index;
  std::vector<TensorInfo> tensors;
  std::map<std::string, size_t, std::less<>> tensor_index;
};

class Parser {
 public:
  explicit Parser(const MappedFile& m) : p_(m.data()), size_(m.size()), name_(m.name()) {}

  Parsed run() {
    read_header();
    read_kvs();
    read_alignment();
    read_tensor_infos();
    place_tensors();
    return std::move(out_);
  }

 private:
  template <typename... Args>
  [[noreturn]] void error(fmt::format_string<Args...> f, Args&&... args) const {
    throw Error(fmt::format("{}: {}", name_, fmt::format(f, std::forward<Args>(args)...)));
  }

  uint64_t left() const { return size_ - pos_; }

  // `what` builds the description lazily so that hot loops (vocabulary arrays) format nothing.
  template <typename What>
  void need(uint64_t n, const What& what) const {
    if (n > left())
      error("truncated: {} needs {} bytes at offset {}, only {} left", what(), n, pos_, left());
  }

  template <typename T, typename What>
  T read(const What& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  template <typename What>
  void charge(uint64_t bytes, const What& what) {
    if (bytes > kMaxMetadataBytes - budget_used_)
      error("{} would take the metadata over its {} byte memory limit", what(), kMaxMetadataBytes);
    budget_used_ += bytes;
  }

  template <typename What>
  std::string read_string(uint64_t max_len, const What& what) {
    const uint64_t at = pos_;
    const uint64_t len = read<uint64_t>([&] { return what() + " length"; });
    if (len > max_len)
      error("{} at offset {} has length {}, over the limit of {}", what(), at, len, max_len);
    need(len, what);
    charge(sizeof(std::string) + len, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return s;
  }

  // Copies n fixed-size items, widened to W; the caller has checked n * sizeof(T) <= left().
  template <typename T, typename W>
  void read_items(std::vector<W>& out, uint64_t n) {
    out.resize(n);
    for (uint64_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, p_ + pos_ + i * sizeof(T), sizeof(T));
      out[i] = static_cast<W>(v);
    }
    pos_ += n * sizeof(T);
  }

  void read_header() {
    auto hdr = [](const char* field) { return [field] { return std::string(field); }; };
    const uint32_t magic = read<uint32_t>(hdr("magic"));
    if (magic != kMagic)
      error("bad magic 0x{:08x} (expected 0x{:08x}, \"GGUF\"): not a GGUF file", magic, kMagic);
    out_.version = read<uint32_t>(hdr("version"));
    if (out_.version != kVersion)
      error("unsupported GGUF version {} (only version {} is supported)", out_.version, kVersion);
    n_tensors_ = read<uint64_t>(hdr("n_tensors"));
    n_kv_ = read<uint64_t>(hdr("n_kv"));
    // A KV record takes at least 14 bytes (key length, 1-byte key, type, 1-byte value) and a
    // tensor info at least 33, so larger counts cannot be real whatever the limits say.
    if (n_kv_ > kMaxKv) error("n_kv {} is over the limit of {}", n_kv_, kMaxKv);
    if (n_kv_ > left() / 14)
      error("n_kv {} cannot fit in the {} bytes left after the header", n_kv_, left());
    if (n_tensors_ > kMaxTensors)
      error("n_tensors {} is over the limit of {}", n_tensors_, kMaxTensors);
    if (n_tensors_ > (left() - n_kv_ * 14) / 33)
      error("n_tensors {} cannot fit in the {} bytes left after the header", n_tensors_, left());
  }

  void read_kvs() {
    out_.kv.reserve(n_kv_);
    for (uint64_t i = 0; i < n_kv_; ++i) {
      const uint64_t at = pos_;
      std::string key = read_string(kMaxKeyLength, [&] { return fmt::format("key #{}", i); });
      if (key.empty()) error("key #{} at offset {} is empty", i, at);
      if (out_.kv_index.count(key)) error("duplicate key '{}' at offset {}", key, at);
      const uint64_t type_at = pos_;
      const uint32_t type = read<uint32_t>([&] { return fmt::format("key '{}' value type", key); });
      if (type > kMaxValueType)
        error("key '{}' has unknown value type {} at offset {}", key, type, type_at);
      const std::string where = fmt::format("key '{}'", key);
      Value v = read_value(ValueType(type), where, 0);
      out_.kv_index.emplace(key, out_.kv.size());
      out_.kv.emplace_back(std::move(key), std::move(v));
    }
  }

  // `depth` is the number of arrays enclosing this value.
  Value read_value(ValueType t, const std::string& where, int depth) {
    Value v;
    v.type = t;
    auto what = [&] { return where + " value"; };
    switch (t) {
      case ValueType::UINT8:
        v.scalar = uint64_t{read<uint8_t>(what)};
        break;
      case ValueType::UINT16:
        v.scalar = uint64_t{read<uint16_t>(what)};
        break;
      case ValueType::UINT32:
        v.scalar = uint64_t{read<uint32_t>(what)};
        break;
      case ValueType::UINT64:
        v.scalar = uint64_t{read<uint64_t>(what)};
        break;
      case ValueType::INT8:
        v.scalar = int64_t{read<int8_t>(what)};
        break;
      case ValueType::INT16:
        v.scalar = int64_t{read<int16_t>(what)};
        break;
      case ValueType::INT32:
        v.scalar = int64_t{read<int32_t>(what)};
        break;
      case ValueType::INT64:
        v.scalar = int64_t{read<int64_t>(what)};
        break;
      case ValueType::FLOAT32:
        v.scalar = double{read<float>(what)};
        break;
      case ValueType::FLOAT64:
        v.scalar = read<double>(what);
        break;
      case ValueType::BOOL: {
        const uint8_t b = read<uint8_t>(what);
        if (b > 1)
          error("{} is a BOOL of value {} at offset {} (must be 0 or 1)", where, b, pos_ - 1);
        v.scalar = uint64_t{b};
        break;
      }
      case ValueType::STRING:
        v.scalar = read_string(std::numeric_limits<uint64_t>::max(), what);
        break;
      case ValueType::ARRAY:
        read_array(v, where, depth + 1);
        break;
    }
    return v;
  }

  // `depth` is this array's nesting level (1 for an array directly under a key).
  void read_array(Value& v, const std::string& where, int depth) {
    const uint64_t type_at = pos_;
    const uint32_t et = read<uint32_t>([&] { return where + " array element type"; });
    if (et > kMaxValueType)
      error("{} has unknown array element type {} at offset {}", where, et, type_at);
    const ValueType elem = ValueType(et);
    if (elem == ValueType::ARRAY && depth >= kMaxArrayNesting)
      error("{} nests arrays more than {} deep", where, kMaxArrayNesting);
    const uint64_t count_at = pos_;
    const uint64_t n = read<uint64_t>([&] { return where + " array count"; });
    if (n > left() / min_encoded_size(elem))
      error("{} has array count {} at offset {}, more than the {} bytes left can hold", where, n,
            count_at, left());
    v.type = ValueType::ARRAY;
    v.elem_type = elem;
    auto whole = [&] {
      return fmt::format("{} (array of {} {})", where, n, value_type_name(elem));
    };
    switch (elem) {
      case ValueType::UINT8:
        charge(n * 8, whole);
        read_items<uint8_t>(v.arr_u, n);
        break;
      case ValueType::UINT16:
        charge(n * 8, whole);
        read_items<uint16_t>(v.arr_u, n);
        break;
      case ValueType::UINT32:
        charge(n * 8, whole);
        read_items<uint32_t>(v.arr_u, n);
        break;
      case ValueType::UINT64:
        charge(n * 8, whole);
        read_items<uint64_t>(v.arr_u, n);
        break;
      case ValueType::INT8:
        charge(n * 8, whole);
        read_items<int8_t>(v.arr_i, n);
        break;
      case ValueType::INT16:
        charge(n * 8, whole);
        read_items<int16_t>(v.arr_i, n);
        break;
      case ValueType::INT32:
        charge(n * 8, whole);
        read_items<int32_t>(v.arr_i, n);
        break;
      case ValueType::INT64:
        charge(n * 8, whole);
        read_items<int64_t>(v.arr_i, n);
        break;
      case ValueType::FLOAT32:
        charge(n * 8, whole);
        read_items<float>(v.arr_f, n);
        break;
      case ValueType::FLOAT64:
        charge(n * 8, whole);
        read_items<double>(v.arr_f, n);
        break;
      case ValueType::BOOL:
        charge(n * 8, whole);
        for (uint64_t i = 0; i < n; ++i)
          if (p_[pos_ + i] > 1)
            error("{} element {} is a BOOL of value {} at offset {} (must be 0 or 1)", where, i,
                  p_[pos_ + i], pos_ + i);
        read_items<uint8_t>(v.arr_u, n);
        break;
      case ValueType::STRING:
        charge(n * sizeof(std::string), whole);
        v.arr_s.reserve(n);
        for (uint64_t i = 0; i < n; ++i)
          v.arr_s.push_back(read_string(std::numeric_limits<uint64_t>::max(),
                                        [&] { return fmt::format("{} element {}", where, i); }));
        break;
      case ValueType::ARRAY:
        charge(n * sizeof(Value), whole);
        v.arr_v.reserve(n);
        for (uint64_t i = 0; i < n; ++i)
          v.arr_v.push_back(
              read_value(ValueType::ARRAY, fmt::format("{} element {}", where, i), depth));
        break;
    }
  }

  void read_alignment() {
    auto it = out_.kv_index.find(std::string_view("general.alignment"));
    if (it == out_.kv_index.end()) return;
    const Value& v = out_.kv[it->second].second;
    if (v.type != ValueType::UINT32)
      error("key 'general.alignment' has type {}, must be UINT32", v.type_description());
    const uint64_t a = std::get<uint64_t>(v.scalar);
    if (a == 0 || !std::has_single_bit(a))
      error("key 'general.alignment' is {}, must be a nonzero power of two", a);
    if (a > kMaxAlignment)
      error("key 'general.alignment' is {}, above the limit {} (16 MiB)", a, kMaxAlignment);
    out_.alignment = uint32_t(a);
  }

  void read_tensor_infos() {
    out_.tensors.reserve(n_tensors_);
    for (uint64_t i = 0; i < n_tensors_; ++i) {
      const uint64_t at = pos_;
      TensorInfo t;
      t.name = read_string(kMaxTensorNameLength, [&] { return fmt::format("tensor #{} name", i); });
      if (t.name.empty()) error("tensor #{} at offset {} has an empty name", i, at);
      if (out_.tensor_index.count(t.name))
        error("duplicate tensor name '{}' (tensor #{} at offset {})", t.name, i, at);
      auto field = [&](const char* f) {
        return [&t, f] { return fmt::format("tensor '{}' {}", t.name, f); };
      };
      const uint32_t n_dims = read<uint32_t>(field("n_dims"));
      if (n_dims == 0 || n_dims > kMaxDims)
        error("tensor '{}' has n_dims {} (must be 1 to {})", t.name, n_dims, kMaxDims);
      // ggml counts elements in int64_t: keep every product within it.
      constexpr uint64_t kMaxCount = uint64_t(std::numeric_limits<int64_t>::max());
      uint64_t n_el = 1;
      for (uint32_t d = 0; d < n_dims; ++d) {
        const uint64_t ne = read<uint64_t>(field("dims"));
        if (ne == 0) error("tensor '{}' has dim {} equal to 0", t.name, d);
        if (ne > kMaxCount || n_el > kMaxCount / ne)
          error("tensor '{}' element count overflows int64 at dim {} ({})", t.name, d, ne);
        n_el *= ne;
        t.ne.push_back(ne);
      }
      const uint64_t type_at = pos_;
      const uint32_t type_id = read<uint32_t>(field("type"));
      const auto traits = ggml_type_traits(type_id);
      if (!traits)
        error("tensor '{}' has unknown ggml type id {} at offset {}", t.name, type_id, type_at);
      t.type = GgmlType(type_id);
      if (t.ne[0] % traits->block_elems != 0)
        error("tensor '{}' of type {} has first dim {}, not a multiple of the block size {}",
              t.name, traits->name, t.ne[0], traits->block_elems);
      // 8-byte types (F64, I64) make the byte size up to 8x the element count.
      uint64_t nbytes = 0;
      bool overflow = __builtin_mul_overflow(t.ne[0] / traits->block_elems,
                                             uint64_t{traits->block_bytes}, &nbytes);
      for (size_t d = 1; d < t.ne.size(); ++d)
        overflow = overflow || __builtin_mul_overflow(nbytes, t.ne[d], &nbytes);
      if (overflow) error("tensor '{}' byte size overflows 64 bits", t.name);
      t.nbytes = nbytes;
      t.offset = read<uint64_t>(field("offset"));
      if (t.offset % out_.alignment != 0)
        error("tensor '{}' offset {} is not a multiple of the alignment {}", t.name, t.offset,
              out_.alignment);
      out_.tensor_index.emplace(t.name, out_.tensors.size());
      out_.tensors.push_back(std::move(t));
    }
  }

  void place_tensors() {
    const uint64_t a = out_.alignment;
    const uint64_t header_end = pos_;
    out_.data_offset = (header_end + a - 1) / a * a;  // header_end < 2^63: cannot overflow
    // Without tensors the padding after the header carries nothing; tolerate writers that omit
    // it (as ggml's reader does) rather than reject a complete vocabulary-only file.
    if (out_.tensors.empty()) out_.data_offset = std::min<uint64_t>(out_.data_offset, size_);
    if (out_.data_offset > size_)
      error(
          "truncated: data section starts at offset {} (header ends at {}, alignment {}), "
          "past the end of the file at {}",
          out_.data_offset, header_end, a, size_);
    const uint64_t data_size = size_ - out_.data_offset;
    for (TensorInfo& t : out_.tensors) {
      if (t.offset > data_size || t.nbytes > data_size - t.offset)
        error(
            "tensor '{}' data ({} bytes at data offset {}; data starts at file offset {}) "
            "extends past the end of the file ({} bytes)",
            t.name, t.nbytes, t.offset, out_.data_offset, size_);
      t.data = p_ + out_.data_offset + t.offset;
    }
    std::vector<const TensorInfo*> by_offset;
    by_offset.reserve(out_.tensors.size());
    for (const TensorInfo& t : out_.tensors) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const TensorInfo* x, const TensorInfo* y) { return x->offset < y->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      const TensorInfo& x = *by_offset[i - 1];
      const TensorInfo& y = *by_offset[i];
      if (x.offset + x.nbytes > y.offset)
        error("tensors '{}' (data offsets {}..{}) and '{}' (from {}) overlap", x.name, x.offset,
              x.offset + x.nbytes, y.name, y.offset);
    }
  }

  const uint8_t* p_;
  uint64_t size_;
  const std::string& name_;
  uint64_t pos_ = 0;
  uint64_t n_tensors_ = 0;
  uint64_t n_kv_ = 0;
  uint64_t budget_used_ = 0;
  Parsed out_;
};

}  // namespace

uint64_t TensorInfo::n_elements() const {
  uint64_t n = 1;
  for (uint64_t d : ne) n *= d;
  return n;
}

File File::open(const std::string& path) {
  return parse(MappedFile::open(path));
}

File File::parse(MappedFile mapping) {
  Parsed p = Parser(mapping).run();
  File f;
  f.map_ = std::move(mapping);  // moving keeps the bytes where they are: data pointers stay valid
  f.version_ = p.version;
  f.alignment_ = p.alignment;
  f.data_offset_ = p.data_offset;
  f.kv_ = std::move(p.kv);
  f.kv_index_ = std::move(p.kv_index);
  f.tensors_ = std::move(p.tensors);
  f.tensor_index_ = std::move(p.tensor_index);
  return f;
}

const Value* File::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

// ---- typed getters ----

namespace {

[[noreturn]] void missing(const std::string& file, std::string_view key, std::string_view want) {
  fail("{}: metadata key '{}' is missing (expected {})", file, key, want);
}

[[noreturn]] void wrong_type(const std::string& file, std::string_view key, const Value& v,
                             std::string_view want) {
  fail("{}: metadata key '{}' has type {}, expected {}", file, key, v.type_description(), want);
}

}  // namespace

uint32_t File::get_u32(std::string_view key) const {
  const Value* v = find(key);
  if (!v) missing(path(), key, "UINT32");
  if (v->type != ValueType::UINT32) wrong_type(path(), key, *v, "UINT32");
  return uint32_t(std::get<uint64_t>(v->scalar));
}

std::optional<uint32_t> File::get_u32_opt(std::string_view key) const {
  if (!find(key)) return std::nullopt;
  return get_u32(key);
}

uint64_t File::get_uint(std::string_view key) const {
  constexpr std::string_view want = "a non-negative integer";
  const Value* v = find(key);
  if (!v) missing(path(), key, want);
  if (is_unsigned(v->type)) return std::get<uint64_t>(v->scalar);
  if (is_signed(v->type)) {
    const int64_t i = std::get<int64_t>(v->scalar);
    if (i < 0)
      fail("{}: metadata key '{}' is {} ({}), expected {}", path(), key, i, v->type_description(),
           want);
    return uint64_t(i);
  }
  wrong_type(path(), key, *v, want);
}

double File::get_float(std::string_view key) const {
  constexpr std::string_view want = "FLOAT32, FLOAT64 or an integer";
  const Value* v = find(key);
  if (!v) missing(path(), key, want);
  if (is_float(v->type)) return std::get<double>(v->scalar);
  if (is_unsigned(v->type)) return double(std::get<uint64_t>(v->scalar));
  if (is_signed(v->type)) return double(std::get<int64_t>(v->scalar));
  wrong_type(path(), key, *v, want);
}

bool File::get_bool(std::string_view key) const {
  const Value* v = find(key);
  if (!v) missing(path(), key, "BOOL");
  if (v->type != ValueType::BOOL) wrong_type(path(), key, *v, "BOOL");
  return std::get<uint64_t>(v->scalar) != 0;
}

std::string File::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v) missing(path(), key, "STRING");
  if (v->type != ValueType::STRING) wrong_type(path(), key, *v, "STRING");
  return std::get<std::string>(v->scalar);
}

std::vector<int64_t> File::get_int_array(std::string_view key) const {
  constexpr std::string_view want = "ARRAY of an integer type";
  const Value* v = find(key);
  if (!v) missing(path(), key, want);
  if (!v->is_array() || !is_integer(v->elem_type)) wrong_type(path(), key, *v, want);
  if (is_signed(v->elem_type)) return v->arr_i;
  std::vector<int64_t> out;
  out.reserve(v->arr_u.size());
  for (size_t i = 0; i < v->arr_u.size(); ++i) {
    if (v->arr_u[i] > uint64_t(std::numeric_limits<int64_t>::max()))
      fail("{}: metadata key '{}' element {} is {}, too large for int64", path(), key, i,
           v->arr_u[i]);
    out.push_back(int64_t(v->arr_u[i]));
  }
  return out;
}

std::vector<double> File::get_float_array(std::string_view key) const {
  constexpr std::string_view want = "ARRAY of FLOAT32 or FLOAT64";
  const Value* v = find(key);
  if (!v) missing(path(), key, want);
  if (!v->is_array() || !is_float(v->elem_type)) wrong_type(path(), key, *v, want);
  return v->arr_f;
}

const std::vector<std::string>& File::get_string_array(std::string_view key) const {
  constexpr std::string_view want = "ARRAY of STRING";
  const Value* v = find(key);
  if (!v) missing(path(), key, want);
  if (!v->is_array() || v->elem_type != ValueType::STRING) wrong_type(path(), key, *v, want);
  return v->arr_s;
}

}  // namespace dsv4::gguf
