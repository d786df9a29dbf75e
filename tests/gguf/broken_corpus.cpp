#include "broken_corpus.h"

#include <fmt/core.h>

#include <cstring>
#include <functional>
#include <limits>
#include <string_view>

#include "gguf/gguf.h"

namespace dsv4::gguf::corpus {
namespace {

constexpr uint32_t kMagic = 0x46554747;
constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

// Raw little-endian byte builder: unlike Writer it lets us write anything, wrong or not.
struct Raw {
  std::vector<uint8_t> b;

  template <typename T>
  Raw& put(T v) {
    // Byte by byte: resize + memcpy and range insert both trip GCC 12 -Wstringop-overflow false
    // positives (one with -fsanitize, the other without).
    uint8_t raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof(T));
    for (uint8_t c : raw) b.push_back(c);
    return *this;
  }
  Raw& u8(uint8_t v) { return put(v); }
  Raw& u32(uint32_t v) { return put(v); }
  Raw& u64(uint64_t v) { return put(v); }
  Raw& f32(float v) { return put(v); }
  Raw& chars(std::string_view s) {
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Raw& str(std::string_view s) { return u64(s.size()).chars(s); }
  Raw& key(std::string_view k, ValueType t) { return str(k).u32(uint32_t(t)); }
  Raw& key(std::string_view k, uint32_t t) { return str(k).u32(t); }
  Raw& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return u32(kMagic).u32(version).u64(n_tensors).u64(n_kv);
  }
  Raw& tensor(std::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name).u32(uint32_t(ne.size()));
    for (uint64_t d : ne) u64(d);
    return u32(type).u64(offset);
  }
  Raw& pad(size_t align = 32) {
    b.resize((b.size() + align - 1) / align * align, 0);
    return *this;
  }
  Raw& data(size_t n) {
    for (size_t i = 0; i < n; ++i) b.push_back(uint8_t(i * 7 + 1));
    return *this;
  }
  std::vector<uint8_t> cut(size_t n) const { return {b.begin(), b.begin() + long(n)}; }
};

constexpr uint32_t F32 = 0, Q8_0 = 8, F64 = 28;

// The standard three KVs and two tensors: a F32 [8] (32 bytes at 0), b Q8_0 [32, 2] (68 bytes
// at 32). Cases replace one piece.
void std_kvs(Raw& r) {
  r.key("general.architecture", ValueType::STRING).str("deepseek4");
  r.key("general.name", ValueType::STRING).str("broken corpus");
  r.key("deepseek4.block_count", ValueType::UINT32).u32(43);
}
void std_tensors(Raw& r) {
  r.tensor("a", {8}, F32, 0);
  r.tensor("b", {32, 2}, Q8_0, 32);
}

using Part = std::function<void(Raw&)>;

// header + kvs + tensor infos + padding + data + padding.
Raw make(uint64_t n_tensors, uint64_t n_kv, const Part& kvs, const Part& tensors, size_t data = 100,
         size_t align = 32) {
  Raw r;
  r.header(n_tensors, n_kv);
  kvs(r);
  tensors(r);
  r.pad(align).data(data).pad(align);
  return r;
}

Raw base() {
  return make(2, 3, std_kvs, std_tensors);
}

Part with_kv(Part extra) {
  return [extra](Raw& r) {
    std_kvs(r);
    extra(r);
  };
}

}  // namespace

std::vector<CorpusFile> broken_corpus() {
  std::vector<CorpusFile> c;
  auto add = [&](std::string name, std::vector<uint8_t> bytes, std::vector<std::string> expect) {
    c.push_back({std::move(name), std::move(bytes), std::move(expect)});
  };
  auto none = [](Raw&) {};

  // --- header ---
  add("empty.gguf", {}, {"truncated: magic needs 4 bytes at offset 0"});
  {
    Raw r = base();
    std::memcpy(r.b.data(), "GGML", 4);
    add("bad_magic.gguf", r.b, {"bad magic 0x4c4d4747", "not a GGUF file"});
  }
  for (uint32_t v : {1u, 2u, 4u}) {
    Raw r;
    r.header(0, 0, v).pad();
    add(fmt::format("version_{}.gguf", v), r.b, {fmt::format("unsupported GGUF version {}", v)});
  }
  {
    Raw r;
    r.u32(kMagic).u32(0x03000000).u64(0).u64(0).pad();
    add("version_big_endian.gguf", r.b, {"unsupported GGUF version 50331648"});
  }
  add("truncated_in_header.gguf", base().cut(20), {"truncated: n_kv needs 8 bytes at offset 16"});
  add("huge_n_kv.gguf", Raw().header(0, uint64_t{1} << 60).pad().b,
      {"n_kv 1152921504606846976 is over the limit of 1048576"});
  add("n_kv_exceeds_file.gguf", make(0, 1000, std_kvs, none, 0).b,
      {"n_kv 1000 cannot fit in the", "bytes left after the header"});
  add("huge_n_tensors.gguf", Raw().header(kU64Max, 0).pad().b,
      {"n_tensors 18446744073709551615 is over the limit of 1048576"});
  add("n_tensors_exceeds_file.gguf", make(100000, 3, std_kvs, std_tensors).b,
      {"n_tensors 100000 cannot fit"});

  // --- metadata ---
  {
    // The counts in the header are kept small: a count the bytes left cannot possibly hold is
    // reported as such before the records are read.
    const std::string key = "deepseek4.attention.indexer.key_length.x";  // 40 bytes
    Raw r;
    r.header(0, 1).key(key, ValueType::UINT32);
    add("truncated_in_kv_key.gguf", r.cut(24 + 8 + 10),
        {"truncated: key #0 needs 40 bytes at offset 32, only 10 left"});
  }
  {
    Raw r;
    r.header(0, 2).key("general.architecture", ValueType::STRING).str("deepseek4");
    r.key("general.name", ValueType::STRING).u64(13).chars("brok");
    add("truncated_in_kv_string.gguf", r.b,
        {"truncated: key 'general.name' value needs 13 bytes", "only 4 left"});
  }
  {
    Raw r;
    r.header(0, 1).key("tokenizer.ggml.tokens", ValueType::ARRAY).u32(uint32_t(ValueType::STRING));
    r.u64(3).str("a").str("b").u64(10).chars("xy");
    add("truncated_in_array.gguf", r.b,
        {"truncated: key 'tokenizer.ggml.tokens' element 2 needs 10 bytes"});
  }
  {
    Raw r;
    r.header(0, 1).u64(uint64_t{1} << 40).chars("abcdefghij");
    add("huge_key_length.gguf", r.b,
        {"key #0 at offset 24 has length 1099511627776, over the limit of 65535"});
  }
  {
    Raw r;
    r.header(0, 1).key("general.name", ValueType::STRING).u64(kU64Max).chars("abc");
    add("huge_string_length.gguf", r.b,
        {"key 'general.name' value needs 18446744073709551615 bytes"});
  }
  {
    Raw r;
    r.header(0, 1).key("tokenizer.ggml.scores", ValueType::ARRAY);
    r.u32(uint32_t(ValueType::FLOAT32)).u64(uint64_t{1} << 62).f32(1.0f).f32(2.0f);
    add("huge_array_count.gguf", r.b,
        {"key 'tokenizer.ggml.scores' has array count 4611686018427387904 at offset 61"});
  }
  {
    Raw r;
    r.header(0, 1).key("tokenizer.ggml.tokens", ValueType::ARRAY);
    r.u32(uint32_t(ValueType::STRING)).u64(uint64_t{1} << 40).str("a");
    add("huge_string_array_count.gguf", r.b,
        {"key 'tokenizer.ggml.tokens' has array count 1099511627776"});
  }
  {
    Raw r;
    r.header(0, 1).key("x.nested", ValueType::ARRAY).u32(uint32_t(ValueType::ARRAY)).u64(1);
    r.u32(uint32_t(ValueType::UINT8)).u64(uint64_t{1} << 50).u64(0);
    add("huge_nested_array_count.gguf", r.b,
        {"key 'x.nested' element 0 has array count 1125899906842624"});
  }
  add("empty_key.gguf",
      make(0, 4, with_kv([](Raw& r) { r.key("", ValueType::UINT32).u32(1); }), none, 0).b,
      {"key #3 at offset", "is empty"});
  add("unknown_value_type.gguf",
      make(0, 4, with_kv([](Raw& r) { r.key("x.weird", 13).u32(1); }), none, 0).b,
      {"key 'x.weird' has unknown value type 13"});
  add("unknown_array_element_type.gguf",
      make(0, 4, with_kv([](Raw& r) { r.key("x.list", ValueType::ARRAY).u32(99).u64(1).u32(0); }),
           none, 0)
          .b,
      {"key 'x.list' has unknown array element type 99"});
  add("bad_bool.gguf",
      make(0, 4, with_kv([](Raw& r) { r.key("x.flag", ValueType::BOOL).u8(2); }), none, 0).b,
      {"key 'x.flag' is a BOOL of value 2"});
  add("bad_bool_in_array.gguf",
      make(0, 4, with_kv([](Raw& r) {
             r.key("x.flags", ValueType::ARRAY)
                 .u32(uint32_t(ValueType::BOOL))
                 .u64(3)
                 .u8(1)
                 .u8(7)
                 .u8(0);
           }),
           none, 0)
          .b,
      {"key 'x.flags' element 1 is a BOOL of value 7"});
  add("nesting_too_deep.gguf",
      make(0, 4, with_kv([](Raw& r) {
             r.key("x.deep", ValueType::ARRAY);
             for (int i = 0; i < 8; ++i) r.u32(uint32_t(ValueType::ARRAY)).u64(1);
             r.u32(uint32_t(ValueType::UINT8)).u64(0);
           }),
           none, 0)
          .b,
      {"key 'x.deep' element 0", "nests arrays more than 8 deep"});
  add("duplicate_key.gguf",
      make(0, 4, with_kv([](Raw& r) { r.key("general.name", ValueType::STRING).str("again"); }),
           none, 0)
          .b,
      {"duplicate key 'general.name'"});
  add("alignment_wrong_type.gguf",
      make(2, 4, with_kv([](Raw& r) { r.key("general.alignment", ValueType::UINT64).u64(32); }),
           std_tensors)
          .b,
      {"key 'general.alignment' has type UINT64, must be UINT32"});
  add("alignment_not_power_of_two.gguf",
      make(2, 4, with_kv([](Raw& r) { r.key("general.alignment", ValueType::UINT32).u32(48); }),
           std_tensors, 100, 48)
          .b,
      {"key 'general.alignment' is 48, must be a nonzero power of two"});
  add("alignment_zero.gguf",
      make(2, 4, with_kv([](Raw& r) { r.key("general.alignment", ValueType::UINT32).u32(0); }),
           std_tensors)
          .b,
      {"key 'general.alignment' is 0, must be a nonzero power of two"});
  // Found by fuzz_gguf: a file without tensors and a 1 GiB alignment was accepted, and writing
  // it back padded the header to 1 GiB.
  add("alignment_above_limit_no_tensors.gguf",
      make(0, 4,
           with_kv([](Raw& r) { r.key("general.alignment", ValueType::UINT32).u32(1u << 30); }),
           none, 0)
          .b,
      {"key 'general.alignment' is 1073741824, above the limit 16777216"});

  // --- tensor infos ---
  {
    Raw r;
    r.header(2, 3);
    std_kvs(r);
    r.tensor("a", {8}, F32, 0).str("b").u32(2).u64(32);
    add("truncated_in_tensor_info.gguf", r.b,
        {"truncated: tensor 'b' dims needs 8 bytes", "only 0 left"});
  }
  add("duplicate_tensor_name.gguf",
      make(2, 3, std_kvs,
           [](Raw& r) {
             r.tensor("a", {8}, F32, 0);
             r.tensor("a", {32, 2}, Q8_0, 32);
           })
          .b,
      {"duplicate tensor name 'a' (tensor #1"});
  add("empty_tensor_name.gguf",
      make(2, 3, std_kvs,
           [](Raw& r) {
             r.tensor("a", {8}, F32, 0);
             r.tensor("", {32, 2}, Q8_0, 32);
           })
          .b,
      {"tensor #1 at offset", "has an empty name"});
  add("tensor_name_too_long.gguf",
      make(1, 3, std_kvs, [](Raw& r) { r.tensor(std::string(64, 'n'), {8}, F32, 0); }).b,
      {"tensor #0 name at offset", "has length 64, over the limit of 63"});
  add("zero_n_dims.gguf",
      make(2, 3, std_kvs,
           [](Raw& r) {
             r.tensor("a", {}, F32, 0);
             r.tensor("b", {32, 2}, Q8_0, 32);
           })
          .b,
      {"tensor 'a' has n_dims 0 (must be 1 to 4)"});
  add("too_many_dims.gguf",
      make(2, 3, std_kvs,
           [](Raw& r) {
             r.tensor("a", {2, 2, 2, 1, 1}, F32, 0);
             r.tensor("b", {32, 2}, Q8_0, 32);
           })
          .b,
      {"tensor 'a' has n_dims 5 (must be 1 to 4)"});
  add("huge_n_dims.gguf", make(1, 3, std_kvs, [](Raw& r) { r.str("a").u32(0xffffffff); }).b,
      {"tensor 'a' has n_dims 4294967295"});
  add("zero_dim.gguf",
      make(2, 3, std_kvs,
           [](Raw& r) {
             r.tensor("a", {8}, F32, 0);
             r.tensor("b", {32, 0}, Q8_0, 32);
           })
          .b,
      {"tensor 'b' has dim 1 equal to 0"});
  add("dim_product_overflow.gguf",
      make(1, 3, std_kvs,
           [](Raw& r) {
             r.tensor("a", {uint64_t{1} << 32, uint64_t{1} << 32}, F32, 0);
           })
          .b,
      {"tensor 'a' element count overflows int64 at dim 1"});
  add("byte_size_overflow.gguf",
      make(1, 3, std_kvs, [](Raw& r) { r.tensor("a", {uint64_t{1} << 62}, F64, 0); }).b,
      {"tensor 'a' byte size overflows 64 bits"});
  add("unknown_ggml_type.gguf",
      make(2, 3, std_kvs,
           [](Raw& r) {
             r.tensor("a", {8}, F32, 0);
             r.tensor("b", {32, 2}, 4, 32);  // Q4_2, removed from ggml
           })
          .b,
      {"tensor 'b' has unknown ggml type id 4"});
  add("bad_block_multiple.gguf",
      make(2, 3, std_kvs,
           [](Raw& r) {
             r.tensor("a", {8}, F32, 0);
             r.tensor("b", {33, 2}, Q8_0, 32);
           })
          .b,
      {"tensor 'b' of type Q8_0 has first dim 33, not a multiple of the block size 32"});
  add("misaligned_tensor_offset.gguf",
      make(2, 3, std_kvs,
           [](Raw& r) {
             r.tensor("a", {8}, F32, 0);
             r.tensor("b", {32, 2}, Q8_0, 36);
           })
          .b,
      {"tensor 'b' offset 36 is not a multiple of the alignment 32"});
  add("misaligned_custom_alignment.gguf",
      make(2, 4, with_kv([](Raw& r) { r.key("general.alignment", ValueType::UINT32).u32(64); }),
           std_tensors, 100, 64)
          .b,
      {"tensor 'b' offset 32 is not a multiple of the alignment 64"});

  // --- data section ---
  add("truncated_in_tensor_data.gguf", base().cut(base().b.size() - 40),
      {"tensor 'b' data (68 bytes at data offset 32", "extends past the end of the file"});
  add("tensor_past_eof.gguf",
      make(2, 3, std_kvs,
           [](Raw& r) {
             r.tensor("a", {8}, F32, 0);
             r.tensor("b", {32, 2}, Q8_0, 1 << 20);
           })
          .b,
      {"tensor 'b' data (68 bytes at data offset 1048576", "extends past the end of the file"});
  add("tensor_offset_overflow.gguf",
      make(2, 3, std_kvs,
           [](Raw& r) {
             r.tensor("a", {8}, F32, 0);
             r.tensor("b", {32, 2}, Q8_0, kU64Max - 31);
           })
          .b,
      {"tensor 'b' data", "extends past the end of the file"});
  add("overlapping_tensors.gguf",
      make(2, 3, std_kvs,
           [](Raw& r) {
             r.tensor("a", {16}, F32, 0);
             r.tensor("b", {32, 2}, Q8_0, 32);
           })
          .b,
      {"tensors 'a' (data offsets 0..64) and 'b' (from 32) overlap"});
  {
    Raw r;
    r.header(1, 3);
    std_kvs(r);
    r.tensor("a", {8}, F32, 0);
    add("data_start_past_eof.gguf", r.b, {"truncated: data section starts at offset"});
  }
  return c;
}

namespace {

Writer all_types_writer() {
  Writer w;
  w.set("general.architecture", Value::str("deepseek4"));
  w.set("x.u8", Value::u8(200));
  w.set("x.i8", Value::i8(-100));
  w.set("x.u16", Value::u16(60000));
  w.set("x.i16", Value::i16(-30000));
  w.set("x.u32", Value::u32(4000000000u));
  w.set("x.i32", Value::i32(-2000000000));
  w.set("x.u64", Value::u64(uint64_t{1} << 63));
  w.set("x.i64", Value::i64(-(int64_t{1} << 62)));
  w.set("x.f32", Value::f32(1.5f));
  w.set("x.f64", Value::f64(1e-6));
  w.set("x.bool", Value::boolean(true));
  w.set("x.str", Value::str("hello"));
  w.set("x.arr_u8", Value::array_uint(ValueType::UINT8, {0, 1, 255}));
  w.set("x.arr_i16", Value::array_int(ValueType::INT16, {-1, 2}));
  w.set("x.arr_u32", Value::array_u32({0, 0, 4, 128}));
  w.set("x.arr_f32", Value::array_f32({10.0f, 10.0f}));
  w.set("x.arr_f64", Value::array_float(ValueType::FLOAT64, {0.25}));
  w.set("x.arr_bool", Value::array_bool({true, false}));
  w.set("x.arr_str", Value::array_str({"a", "", "<|end|>"}));
  Value nested = Value::array_uint(ValueType::UINT8, {1, 2});
  for (int i = 1; i < kMaxArrayNesting; ++i) nested = Value::array_of_arrays({nested});
  w.set("x.nested8", nested);
  auto bytes = [](size_t n) {
    std::vector<uint8_t> b(n);
    for (size_t i = 0; i < n; ++i) b[i] = uint8_t(i * 13 + 5);
    return b;
  };
  w.add_tensor("f32", {8}, GgmlType::F32, bytes(32));
  w.add_tensor("f16", {4, 3}, GgmlType::F16, bytes(24));
  w.add_tensor("bf16", {5}, GgmlType::BF16, bytes(10));
  w.add_tensor("q8_0", {32, 2}, GgmlType::Q8_0, bytes(68));
  w.add_tensor("q4_k", {256}, GgmlType::Q4_K, bytes(144));
  w.add_tensor("i32", {3, 1, 1, 2}, GgmlType::I32, bytes(24));
  w.add_tensor("mxfp4", {64}, GgmlType::MXFP4, bytes(34));
  w.add_tensor_zeros("zeros", {32, 4}, GgmlType::Q8_0);
  return w;
}

}  // namespace

std::vector<uint8_t> small_valid_file() {
  return all_types_writer().to_bytes();
}

std::vector<CorpusFile> valid_seeds() {
  std::vector<CorpusFile> c;
  c.push_back({"valid_all_types.gguf", small_valid_file(), {}});
  {
    Writer w(64);
    w.set("general.architecture", Value::str("deepseek4"));
    w.set("deepseek4.block_count", Value::u32(43));
    w.add_tensor("a", {8}, GgmlType::F32, std::vector<uint8_t>(32, 1));
    w.add_tensor("b", {32, 2}, GgmlType::Q8_0, std::vector<uint8_t>(68, 2));
    c.push_back({"valid_alignment_64.gguf", w.to_bytes(), {}});
  }
  {
    Writer w;
    w.set("general.name", Value::str("no tensors"));
    c.push_back({"valid_no_tensors.gguf", w.to_bytes(), {}});
  }
  return c;
}

}  // namespace dsv4::gguf::corpus
