// Value helpers: type names, sizes and constructors.
#include <fmt/core.h>

#include "gguf/gguf.h"

namespace dsv4::gguf {

std::string_view value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
      return "UINT8";
    case ValueType::INT8:
      return "INT8";
    case ValueType::UINT16:
      return "UINT16";
    case ValueType::INT16:
      return "INT16";
    case ValueType::UINT32:
      return "UINT32";
    case ValueType::INT32:
      return "INT32";
    case ValueType::FLOAT32:
      return "FLOAT32";
    case ValueType::BOOL:
      return "BOOL";
    case ValueType::STRING:
      return "STRING";
    case ValueType::ARRAY:
      return "ARRAY";
    case ValueType::UINT64:
      return "UINT64";
    case ValueType::INT64:
      return "INT64";
    case ValueType::FLOAT64:
      return "FLOAT64";
  }
  return "unknown";
}

uint64_t Value::array_size() const {
  if (!is_array()) return 0;
  switch (elem_type) {
    case ValueType::UINT8:
    case ValueType::UINT16:
    case ValueType::UINT32:
    case ValueType::UINT64:
    case ValueType::BOOL:
      return arr_u.size();
    case ValueType::INT8:
    case ValueType::INT16:
    case ValueType::INT32:
    case ValueType::INT64:
      return arr_i.size();
    case ValueType::FLOAT32:
    case ValueType::FLOAT64:
      return arr_f.size();
    case ValueType::STRING:
      return arr_s.size();
    case ValueType::ARRAY:
      return arr_v.size();
  }
  return 0;
}

std::string Value::type_description() const {
  if (!is_array()) return std::string(value_type_name(type));
  return fmt::format("ARRAY of {}", value_type_name(elem_type));
}

namespace {

template <typename S>
Value make_scalar(ValueType t, S s) {
  Value v;
  v.type = t;
  v.scalar.emplace<S>(std::move(s));
  return v;
}

Value make_array(ValueType elem) {
  Value v;
  v.type = ValueType::ARRAY;
  v.elem_type = elem;
  return v;
}

}  // namespace

Value Value::u8(uint8_t v) {
  return make_scalar(ValueType::UINT8, uint64_t{v});
}
Value Value::i8(int8_t v) {
  return make_scalar(ValueType::INT8, int64_t{v});
}
Value Value::u16(uint16_t v) {
  return make_scalar(ValueType::UINT16, uint64_t{v});
}
Value Value::i16(int16_t v) {
  return make_scalar(ValueType::INT16, int64_t{v});
}
Value Value::u32(uint32_t v) {
  return make_scalar(ValueType::UINT32, uint64_t{v});
}
Value Value::i32(int32_t v) {
  return make_scalar(ValueType::INT32, int64_t{v});
}
Value Value::u64(uint64_t v) {
  return make_scalar(ValueType::UINT64, v);
}
Value Value::i64(int64_t v) {
  return make_scalar(ValueType::INT64, v);
}
Value Value::f32(float v) {
  return make_scalar(ValueType::FLOAT32, double{v});
}
Value Value::f64(double v) {
  return make_scalar(ValueType::FLOAT64, v);
}
Value Value::boolean(bool v) {
  return make_scalar(ValueType::BOOL, uint64_t{v ? 1u : 0u});
}
Value Value::str(std::string v) {
  return make_scalar(ValueType::STRING, std::move(v));
}

Value Value::array_u32(std::vector<uint32_t> v) {
  Value a = make_array(ValueType::UINT32);
  a.arr_u.assign(v.begin(), v.end());
  return a;
}

Value Value::array_i32(std::vector<int32_t> v) {
  Value a = make_array(ValueType::INT32);
  a.arr_i.assign(v.begin(), v.end());
  return a;
}

Value Value::array_f32(std::vector<float> v) {
  Value a = make_array(ValueType::FLOAT32);
  a.arr_f.assign(v.begin(), v.end());
  return a;
}

Value Value::array_str(std::vector<std::string> v) {
  Value a = make_array(ValueType::STRING);
  a.arr_s = std::move(v);
  return a;
}

Value Value::array_uint(ValueType elem, std::vector<uint64_t> v) {
  Value a = make_array(elem);
  a.arr_u = std::move(v);
  return a;
}

Value Value::array_int(ValueType elem, std::vector<int64_t> v) {
  Value a = make_array(elem);
  a.arr_i = std::move(v);
  return a;
}

Value Value::array_float(ValueType elem, std::vector<double> v) {
  Value a = make_array(elem);
  a.arr_f = std::move(v);
  return a;
}

Value Value::array_bool(std::vector<bool> v) {
  Value a = make_array(ValueType::BOOL);
  a.arr_u.assign(v.begin(), v.end());
  return a;
}

Value Value::array_of_arrays(std::vector<Value> v) {
  Value a = make_array(ValueType::ARRAY);
  a.arr_v = std::move(v);
  return a;
}

}  // namespace dsv4::gguf
