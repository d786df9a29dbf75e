// GGUF v3 container: a validating reader over a mapped file, and a writer for tools and tests.
// Every malformed input ends in dsv4::Error naming the file and the problem; the reader never
// reads out of bounds.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/ggml_type.h"
#include "core/mapped_file.h"

namespace dsv4::gguf {

enum class ValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
std::string_view value_type_name(ValueType t);

// Reader limits. They bound what a hostile header can make the reader allocate or recurse into;
// real files (ds4: ~1.3k tensors, ~50 keys, 129k-entry vocab arrays) are far below them.
inline constexpr uint64_t kMaxTensors = uint64_t{1} << 20;
inline constexpr uint64_t kMaxKv = uint64_t{1} << 20;
inline constexpr uint64_t kMaxKeyLength = 65535;
inline constexpr uint64_t kMaxTensorNameLength = 63;  // ggml's GGML_MAX_NAME (64) incl. NUL
inline constexpr uint32_t kMaxDims = 4;               // GGML_MAX_DIMS
inline constexpr int kMaxArrayNesting = 8;            // a top-level array is depth 1
// Memory the parsed metadata may take (keys, strings, widened array elements). Counts alone
// are bounded by the bytes left in the file, but in an 80 GiB file that is no bound at all.
inline constexpr uint64_t kMaxMetadataBytes = uint64_t{1} << 30;
inline constexpr uint32_t kDefaultAlignment = 32;
// Largest accepted general.alignment (16 MiB, beyond any page or huge-page size). ggml sets no
// bound, but a file without tensors may declare any alignment, and writing it back pads the
// header to that size: 2^31 would mean a 2 GiB buffer for a few bytes of vocabulary.
inline constexpr uint32_t kMaxAlignment = 1u << 24;

// One metadata value. Scalars keep their exact GGUF type; arrays keep their element type.
struct Value {
  ValueType type = ValueType::UINT32;
  ValueType elem_type = ValueType::UINT32;  // only for ARRAY
  // Scalar storage (integers widened, floats widened to double, bool as 0/1).
  std::variant<uint64_t, int64_t, double, std::string> scalar;
  // Array storage: numeric arrays as the widened scalar vectors, string arrays as strings.
  std::vector<uint64_t> arr_u;
  std::vector<int64_t> arr_i;
  std::vector<double> arr_f;
  std::vector<std::string> arr_s;
  std::vector<Value> arr_v;  // arrays of arrays (nesting depth is limited by the reader)

  bool is_array() const { return type == ValueType::ARRAY; }
  uint64_t array_size() const;
  // "UINT32", "ARRAY of STRING", ... for error messages.
  std::string type_description() const;
  friend bool operator==(const Value&, const Value&) = default;

  // Constructors for writers/tests.
  static Value u32(uint32_t v);
  static Value i32(int32_t v);
  static Value u64(uint64_t v);
  static Value f32(float v);
  static Value f64(double v);
  static Value boolean(bool v);
  static Value str(std::string v);
  static Value array_u32(std::vector<uint32_t> v);
  static Value array_i32(std::vector<int32_t> v);
  static Value array_f32(std::vector<float> v);
  static Value array_str(std::vector<std::string> v);
  // The remaining GGUF types, for tools and round-trip tests.
  static Value u8(uint8_t v);
  static Value i8(int8_t v);
  static Value u16(uint16_t v);
  static Value i16(int16_t v);
  static Value i64(int64_t v);
  // Arrays of an explicit element type; the writer checks every element fits that type.
  static Value array_uint(ValueType elem, std::vector<uint64_t> v);  // UINT8..UINT64
  static Value array_int(ValueType elem, std::vector<int64_t> v);    // INT8..INT64
  static Value array_float(ValueType elem, std::vector<double> v);   // FLOAT32/FLOAT64
  static Value array_bool(std::vector<bool> v);
  static Value array_of_arrays(std::vector<Value> v);  // every element must be an ARRAY
};

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // dims, innermost first (GGUF order)
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;            // relative to the data section
  uint64_t nbytes = 0;            // computed from type and dims
  const uint8_t* data = nullptr;  // points into the mapping
  uint64_t n_elements() const;
};

class File {
 public:
  static File open(const std::string& path);
  static File parse(MappedFile mapping);  // validates everything; throws dsv4::Error

  const std::string& path() const { return map_.name(); }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  // Start of the data section: the header end aligned up (for a file without tensors, clamped
  // to the file size since writers may omit the padding there).
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return map_.size(); }

  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const Value* find(std::string_view key) const;
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;

  // Typed metadata getters: throw naming the key when missing or of an incompatible type.
  // get_u32 accepts only UINT32 (ds4 requires typed UINT32 keys); get_uint widens any integer.
  uint32_t get_u32(std::string_view key) const;
  std::optional<uint32_t> get_u32_opt(std::string_view key) const;
  uint64_t get_uint(std::string_view key) const;  // any unsigned/signed non-negative integer type
  double get_float(std::string_view key) const;   // f32/f64 or any integer type
  bool get_bool(std::string_view key) const;
  std::string get_string(std::string_view key) const;
  std::vector<int64_t> get_int_array(std::string_view key) const;   // integer arrays
  std::vector<double> get_float_array(std::string_view key) const;  // float arrays
  const std::vector<std::string>& get_string_array(std::string_view key) const;

 private:
  MappedFile map_;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Builds a GGUF v3 file in memory or on disk. Tensor data is appended in insertion order,
// each tensor aligned to `alignment`.
class Writer {
 public:
  // `alignment` must be a nonzero power of two. A value other than the GGUF default (32) is
  // recorded as `general.alignment` (readers would otherwise assume 32); with the default no
  // key is written unless the caller sets one.
  explicit Writer(uint32_t alignment = 32);
  // Replaces an existing key. Validates the value (types, element ranges, nesting) and throws
  // naming the key. Setting `general.alignment` (UINT32 power of two) changes the layout.
  void set(std::string key, Value v);
  // Adds a tensor; `bytes` must be exactly the size implied by type and dims.
  void add_tensor(std::string name, std::vector<uint64_t> ne, GgmlType type,
                  std::vector<uint8_t> bytes);
  // Adds a tensor whose data is all zero bytes without holding them in memory: write_file
  // leaves a hole (sparse file), so full-size layouts can be written at no disk cost.
  void add_tensor_zeros(std::string name, std::vector<uint64_t> ne, GgmlType type);
  std::vector<uint8_t> to_bytes() const;
  // Writes atomically (temp file + rename); throws naming the path on failure.
  void write_file(const std::string& path) const;

  uint32_t alignment() const { return alignment_; }

 private:
  struct Layout;
  Layout layout() const;

  uint32_t alignment_;
  std::vector<std::pair<std::string, Value>> kv_;
  struct PendingTensor {
    std::string name;
    std::vector<uint64_t> ne;
    GgmlType type;
    std::vector<uint8_t> bytes;  // empty with `zeros` set
    bool zeros = false;
    uint64_t nbytes = 0;
  };
  std::vector<PendingTensor> tensors_;
};

}  // namespace dsv4::gguf
