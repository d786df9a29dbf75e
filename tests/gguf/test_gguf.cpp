// Reader/writer round trips, layout, sparse writing and typed getters.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "gguf/gguf.h"

using namespace dsv4;
using namespace dsv4::gguf;
namespace fs = std::filesystem;

namespace {

File parse(const Writer& w, const std::string& name = "mem.gguf") {
  return File::parse(MappedFile::from_bytes(w.to_bytes(), name));
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed = 1) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = uint8_t(i * 31 + seed);
  return b;
}

// Runs `f`, expecting a dsv4::Error whose message contains every substring.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string_view> parts) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << *parts.begin() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (std::string_view p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

// A fresh directory under TMPDIR, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "dsv4_gguf_XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() { fs::remove_all(path); }
};

std::vector<std::pair<std::string, Value>> every_value_type() {
  Value nested = Value::array_int(ValueType::INT64, {-1, 0, std::numeric_limits<int64_t>::max()});
  for (int i = 1; i < kMaxArrayNesting; ++i)
    nested = Value::array_of_arrays({nested, Value::array_str({"x"})});
  return {
      {"t.u8", Value::u8(255)},
      {"t.i8", Value::i8(-128)},
      {"t.u16", Value::u16(65535)},
      {"t.i16", Value::i16(-32768)},
      {"t.u32", Value::u32(4294967295u)},
      {"t.i32", Value::i32(std::numeric_limits<int32_t>::min())},
      {"t.u64", Value::u64(std::numeric_limits<uint64_t>::max())},
      {"t.i64", Value::i64(std::numeric_limits<int64_t>::min())},
      {"t.f32", Value::f32(0.1f)},
      {"t.f64", Value::f64(0.1)},
      {"t.f32_inf", Value::f32(std::numeric_limits<float>::infinity())},
      {"t.bool_true", Value::boolean(true)},
      {"t.bool_false", Value::boolean(false)},
      {"t.str", Value::str("héllo\n")},
      {"t.str_empty", Value::str("")},
      {"t.str_nul", Value::str(std::string("a\0b", 3))},
      {"t.a_u8", Value::array_uint(ValueType::UINT8, {0, 255})},
      {"t.a_u16", Value::array_uint(ValueType::UINT16, {65535})},
      {"t.a_u32", Value::array_u32({1, 2, 3})},
      {"t.a_u64", Value::array_uint(ValueType::UINT64, {std::numeric_limits<uint64_t>::max()})},
      {"t.a_i8", Value::array_int(ValueType::INT8, {-128, 127})},
      {"t.a_i16", Value::array_int(ValueType::INT16, {-32768})},
      {"t.a_i32", Value::array_i32({-1, 0, 1})},
      {"t.a_i64", Value::array_int(ValueType::INT64, {std::numeric_limits<int64_t>::min()})},
      {"t.a_f32", Value::array_f32({10.0f, -0.5f})},
      {"t.a_f64", Value::array_float(ValueType::FLOAT64, {1e-300, 2.5})},
      {"t.a_bool", Value::array_bool({true, false, true})},
      {"t.a_str", Value::array_str({"<s>", "", "tok"})},
      {"t.a_empty", Value::array_u32({})},
      {"t.a_nested", nested},
      {"t.a_mixed", Value::array_of_arrays({Value::array_f32({1}), Value::array_bool({false})})},
  };
}

}  // namespace

TEST(GgufValue, TypeNamesAndDescriptions) {
  EXPECT_EQ(value_type_name(ValueType::UINT32), "UINT32");
  EXPECT_EQ(value_type_name(ValueType::FLOAT64), "FLOAT64");
  EXPECT_EQ(value_type_name(ValueType(99)), "unknown");
  EXPECT_EQ(Value::array_str({"a"}).type_description(), "ARRAY of STRING");
  EXPECT_EQ(Value::u8(1).type_description(), "UINT8");
  EXPECT_EQ(Value::array_bool({true, false}).array_size(), 2u);
  EXPECT_EQ(Value::u32(3).array_size(), 0u);
}

TEST(GgufRoundTrip, EveryValueType) {
  Writer w;
  const auto kvs = every_value_type();
  for (const auto& [k, v] : kvs) w.set(k, v);
  const File f = parse(w);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.find("general.alignment"), nullptr);  // default alignment: no key written
  ASSERT_EQ(f.metadata().size(), kvs.size());
  for (size_t i = 0; i < kvs.size(); ++i) {
    EXPECT_EQ(f.metadata()[i].first, kvs[i].first);  // insertion order kept
    EXPECT_EQ(f.metadata()[i].second, kvs[i].second) << kvs[i].first;
    ASSERT_NE(f.find(kvs[i].first), nullptr);
  }
  EXPECT_EQ(f.find("t.str_nul")->scalar, Value::str(std::string("a\0b", 3)).scalar);
  EXPECT_EQ(f.find("t.a_nested")->array_size(), 2u);
  // The parsed file re-serialises to the same bytes.
  Writer w2;
  for (const auto& [k, v] : f.metadata()) w2.set(k, v);
  EXPECT_EQ(w2.to_bytes(), w.to_bytes());
}

TEST(GgufRoundTrip, SetReplacesExistingKey) {
  Writer w;
  w.set("a", Value::u32(1));
  w.set("b", Value::u32(2));
  w.set("a", Value::str("x"));
  const File f = parse(w);
  ASSERT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata()[0].first, "a");
  EXPECT_EQ(f.get_string("a"), "x");
}

TEST(GgufLayout, ExactBytesOfATinyFile) {
  // What llama.cpp's gguf writer produces for one u32 key and one F32 [2] tensor.
  Writer w;
  w.set("k", Value::u32(7));
  w.add_tensor("t", {2}, GgmlType::F32, {1, 2, 3, 4, 5, 6, 7, 8});
  const std::vector<uint8_t> b = w.to_bytes();
  std::vector<uint8_t> want = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
  auto u64 = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) want.push_back(uint8_t(v >> (8 * i)));
  };
  auto u32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) want.push_back(uint8_t(v >> (8 * i)));
  };
  u64(1);  // n_tensors
  u64(1);  // n_kv
  u64(1);
  want.push_back('k');
  u32(4);  // UINT32
  u32(7);
  u64(1);
  want.push_back('t');
  u32(1);  // n_dims
  u64(2);
  u32(0);  // F32
  u64(0);  // offset
  ASSERT_EQ(want.size(), 74u);
  want.resize(96, 0);  // data starts aligned
  for (uint8_t i = 1; i <= 8; ++i) want.push_back(i);
  want.resize(128, 0);  // the last tensor is padded too
  EXPECT_EQ(b, want);
}

TEST(GgufLayout, TensorsOfSeveralTypesAreAlignedAndIntact) {
  for (uint32_t align : {1u, 8u, 32u, 64u, 4096u}) {
    Writer w(align);
    struct T {
      std::string name;
      std::vector<uint64_t> ne;
      GgmlType type;
      size_t bytes;
    };
    const std::vector<T> ts = {
        {"f32", {3}, GgmlType::F32, 12},           {"f16", {5, 3}, GgmlType::F16, 30},
        {"bf16", {7}, GgmlType::BF16, 14},         {"q8_0", {64, 3}, GgmlType::Q8_0, 204},
        {"q2_k", {256, 2}, GgmlType::Q2_K, 168},   {"q4_k", {512}, GgmlType::Q4_K, 288},
        {"iq2_xxs", {256}, GgmlType::IQ2_XXS, 66}, {"mxfp4", {32, 1, 2}, GgmlType::MXFP4, 34},
        {"i8", {1, 1, 1, 3}, GgmlType::I8, 3},     {"f64", {2}, GgmlType::F64, 16},
    };
    for (size_t i = 0; i < ts.size(); ++i)
      w.add_tensor(ts[i].name, ts[i].ne, ts[i].type, pattern(ts[i].bytes, uint8_t(i)));
    const File f = parse(w);
    EXPECT_EQ(f.alignment(), align);
    EXPECT_EQ(f.find("general.alignment") != nullptr, align != 32);
    EXPECT_EQ(f.data_offset() % align, 0u);
    ASSERT_EQ(f.tensors().size(), ts.size());
    uint64_t expect_off = 0;
    for (size_t i = 0; i < ts.size(); ++i) {
      const TensorInfo& t = f.tensors()[i];
      EXPECT_EQ(t.name, ts[i].name);
      EXPECT_EQ(t.ne, ts[i].ne);
      EXPECT_EQ(t.type, ts[i].type);
      EXPECT_EQ(t.offset, expect_off) << t.name;  // contiguous, as llama.cpp requires
      EXPECT_EQ(t.offset % align, 0u);
      EXPECT_EQ(t.nbytes, ts[i].bytes);
      EXPECT_EQ(t.data, f.tensors()[0].data + t.offset);
      EXPECT_EQ(std::vector<uint8_t>(t.data, t.data + t.nbytes), pattern(ts[i].bytes, uint8_t(i)));
      EXPECT_EQ(f.find_tensor(ts[i].name), &t);
      expect_off = (expect_off + t.nbytes + align - 1) / align * align;
    }
    EXPECT_EQ(f.file_size(), f.data_offset() + expect_off);
    EXPECT_EQ(f.find_tensor("missing"), nullptr);
    EXPECT_EQ(f.tensors()[3].n_elements(), 192u);
  }
}

TEST(GgufLayout, SettingAlignmentKeyChangesLayout) {
  Writer w;
  w.set("general.alignment", Value::u32(128));
  w.add_tensor("a", {1}, GgmlType::F32, {1, 2, 3, 4});
  w.add_tensor("b", {1}, GgmlType::F32, {5, 6, 7, 8});
  const File f = parse(w);
  EXPECT_EQ(f.alignment(), 128u);
  EXPECT_EQ(f.get_u32("general.alignment"), 128u);
  EXPECT_EQ(f.data_offset(), 128u);
  EXPECT_EQ(f.tensors()[1].offset, 128u);
  EXPECT_EQ(f.file_size(), 384u);
}

TEST(GgufWriter, RejectsBadInput) {
  Writer w;
  expect_error([&] { w.add_tensor("t", {8}, GgmlType::F32, std::vector<uint8_t>(31)); },
               {"tensor 't' has 31 bytes of data", "imply 32"});
  w.add_tensor("t", {8}, GgmlType::F32, std::vector<uint8_t>(32));
  expect_error([&] { w.add_tensor("t", {8}, GgmlType::F32, std::vector<uint8_t>(32)); },
               {"duplicate tensor name 't'"});
  expect_error([&] { w.add_tensor_zeros("t", {8}, GgmlType::F32); }, {"duplicate tensor name 't'"});
  expect_error([&] { w.add_tensor_zeros("q", {33}, GgmlType::Q8_0); },
               {"tensor 'q'", "not a multiple of the block size 32"});
  expect_error([&] { w.add_tensor_zeros("z", {4, 0}, GgmlType::F32); }, {"tensor 'z'", "zero dim"});
  expect_error(
      [&] {
        w.add_tensor_zeros("d", {1, 1, 1, 1, 1}, GgmlType::F32);
      },
      {"tensor 'd' has 5 dims"});
  expect_error([&] { w.add_tensor_zeros("u", {4}, GgmlType(5)); },
               {"tensor 'u' has unknown ggml type id 5"});
  expect_error([&] { w.add_tensor_zeros("", {4}, GgmlType::F32); }, {"tensor name is empty"});
  expect_error([&] { w.add_tensor_zeros(std::string(64, 'x'), {4}, GgmlType::F32); },
               {"over the ggml limit of 63"});
  expect_error(
      [&] {
        w.set("x", Value::array_uint(ValueType::UINT8, {1, 256}));
      },
      {"key 'x'", "256 does not fit UINT8"});
  expect_error([&] { w.set("x", Value::array_int(ValueType::INT8, {-129})); },
               {"key 'x'", "-129 does not fit INT8"});
  expect_error([&] { w.set("x", Value::array_float(ValueType::FLOAT32, {1e300})); },
               {"key 'x'", "does not fit FLOAT32"});
  Value bad_bool = Value::boolean(true);
  bad_bool.scalar = uint64_t{2};
  expect_error([&] { w.set("b", bad_bool); }, {"key 'b'", "BOOL value 2"});
  Value wrong_storage = Value::u32(1);
  wrong_storage.scalar = std::string("x");
  expect_error([&] { w.set("s", wrong_storage); }, {"key 's'", "wrong kind of scalar"});
  Value deep = Value::array_u32({1});
  for (int i = 0; i < kMaxArrayNesting; ++i) deep = Value::array_of_arrays({deep});
  expect_error([&] { w.set("deep", deep); }, {"key 'deep'", "nested more than 8 deep"});
  expect_error([&] { w.set("general.alignment", Value::u64(32)); }, {"must be UINT32"});
  expect_error([&] { w.set("general.alignment", Value::u32(48)); }, {"48", "power of two"});
  expect_error([&] { w.set("", Value::u32(1)); }, {"empty metadata key"});
  expect_error([] { Writer bad(48); }, {"alignment 48 is not a nonzero power of two"});
  expect_error([&] { w.set("general.alignment", Value::u32(1u << 25)); },
               {"33554432", "above the limit 16777216"});
  expect_error([] { Writer bad(1u << 25); }, {"alignment 33554432 is above the limit"});
  // Nothing invalid was stored.
  const File f = parse(w);
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(f.tensors().size(), 1u);
}

TEST(GgufWriter, ZerosAreMaterialisedInMemory) {
  Writer w;
  w.add_tensor("a", {4}, GgmlType::F32, pattern(16));
  w.add_tensor_zeros("z", {32, 3}, GgmlType::Q8_0);
  w.add_tensor("b", {2}, GgmlType::F16, pattern(4, 9));
  const File f = parse(w);
  const TensorInfo* z = f.find_tensor("z");
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(z->nbytes, 102u);
  EXPECT_EQ(std::vector<uint8_t>(z->data, z->data + z->nbytes), std::vector<uint8_t>(102, 0));
  const TensorInfo* b = f.find_tensor("b");
  EXPECT_EQ(std::vector<uint8_t>(b->data, b->data + 4), pattern(4, 9));
}

TEST(GgufWriter, WriteFileMatchesToBytesAndReplacesAtomically) {
  TempDir dir;
  const std::string path = (dir.path / "m.gguf").string();
  Writer w;
  w.set("general.name", Value::str("first"));
  w.add_tensor("a", {4}, GgmlType::F32, pattern(16));
  w.add_tensor_zeros("z", {32}, GgmlType::Q8_0);
  w.write_file(path);
  {
    const File f = File::open(path);
    EXPECT_EQ(f.path(), path);
    EXPECT_EQ(f.get_string("general.name"), "first");
    const MappedFile m = MappedFile::open(path);
    EXPECT_EQ(std::vector<uint8_t>(m.data(), m.data() + m.size()), w.to_bytes());
  }
  w.set("general.name", Value::str("second"));
  w.write_file(path);
  EXPECT_EQ(File::open(path).get_string("general.name"), "second");
  // Only the target remains: no temporary file is left behind.
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) {
    EXPECT_EQ(e.path().filename(), "m.gguf");
    ++n;
  }
  EXPECT_EQ(n, 1u);
}

TEST(GgufWriter, WriteFileFailureNamesThePath) {
  TempDir dir;
  const std::string path = (dir.path / "no_such_dir" / "m.gguf").string();
  Writer w;
  expect_error([&] { w.write_file(path); }, {path, "cannot create temporary file"});
  EXPECT_FALSE(fs::exists(dir.path / "no_such_dir"));
}

TEST(GgufWriter, ZeroTensorsAreSparseOnDisk) {
  TempDir dir;
  const std::string path = (dir.path / "sparse.gguf").string();
  constexpr uint64_t kGiB = uint64_t{1} << 30;
  Writer w;
  w.set("general.name", Value::str("sparse"));
  w.add_tensor("head", {8}, GgmlType::F32, pattern(32));
  w.add_tensor_zeros("big", {kGiB / 4}, GgmlType::F32);  // 1 GiB of zeros
  w.add_tensor("tail", {8}, GgmlType::F32, pattern(32, 3));
  w.write_file(path);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_GT(uint64_t(st.st_size), kGiB);
  EXPECT_LT(uint64_t(st.st_blocks) * 512, uint64_t{1} << 20) << "not sparse";
  const File f = File::open(path);
  const TensorInfo* big = f.find_tensor("big");
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(big->nbytes, kGiB);
  for (uint64_t at : {uint64_t{0}, kGiB / 2 + 12345, kGiB - 1}) EXPECT_EQ(big->data[at], 0);
  const TensorInfo* tail = f.find_tensor("tail");
  EXPECT_EQ(std::vector<uint8_t>(tail->data, tail->data + 32), pattern(32, 3));
  EXPECT_EQ(tail->offset, 32 + kGiB);
  EXPECT_EQ(f.file_size(), uint64_t(st.st_size));
}

TEST(GgufGetters, ReturnTypedValues) {
  Writer w;
  w.set("u32", Value::u32(43));
  w.set("u64", Value::u64(65536));
  w.set("u8", Value::u8(7));
  w.set("i32", Value::i32(5));
  w.set("i32neg", Value::i32(-5));
  w.set("f32", Value::f32(1.5f));
  w.set("f64", Value::f64(1e-6));
  w.set("b", Value::boolean(true));
  w.set("s", Value::str("deepseek4"));
  w.set("ai", Value::array_i32({0, -4, 128}));
  w.set("au", Value::array_uint(ValueType::UINT64, {1, 2}));
  w.set("au8", Value::array_uint(ValueType::UINT8, {3}));
  w.set("ahuge", Value::array_uint(ValueType::UINT64, {uint64_t{1} << 63}));
  w.set("af", Value::array_f32({10.0f, 10.0f}));
  w.set("ad", Value::array_float(ValueType::FLOAT64, {0.5}));
  w.set("as", Value::array_str({"a", "b"}));
  const File f = parse(w, "getters.gguf");
  EXPECT_EQ(f.get_u32("u32"), 43u);
  EXPECT_EQ(f.get_u32_opt("u32"), 43u);
  EXPECT_EQ(f.get_u32_opt("absent"), std::nullopt);
  EXPECT_EQ(f.get_uint("u64"), 65536u);
  EXPECT_EQ(f.get_uint("u32"), 43u);
  EXPECT_EQ(f.get_uint("u8"), 7u);
  EXPECT_EQ(f.get_uint("i32"), 5u);
  EXPECT_EQ(f.get_float("f32"), 1.5);
  EXPECT_EQ(f.get_float("f64"), 1e-6);
  EXPECT_EQ(f.get_float("u32"), 43.0);
  EXPECT_EQ(f.get_float("i32neg"), -5.0);
  EXPECT_TRUE(f.get_bool("b"));
  EXPECT_EQ(f.get_string("s"), "deepseek4");
  EXPECT_EQ(f.get_int_array("ai"), (std::vector<int64_t>{0, -4, 128}));
  EXPECT_EQ(f.get_int_array("au"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(f.get_int_array("au8"), (std::vector<int64_t>{3}));
  EXPECT_EQ(f.get_float_array("af"), (std::vector<double>{10.0, 10.0}));
  EXPECT_EQ(f.get_float_array("ad"), (std::vector<double>{0.5}));
  EXPECT_EQ(f.get_string_array("as"), (std::vector<std::string>{"a", "b"}));
}

TEST(GgufGetters, ErrorsNameFileKeyAndTypes) {
  Writer w;
  w.set("i32", Value::i32(5));
  w.set("i32neg", Value::i32(-5));
  w.set("u64", Value::u64(5));
  w.set("s", Value::str("x"));
  w.set("b", Value::boolean(false));
  w.set("af", Value::array_f32({1.0f}));
  w.set("ai", Value::array_i32({1}));
  w.set("as", Value::array_str({"a"}));
  w.set("ahuge", Value::array_uint(ValueType::UINT64, {uint64_t{1} << 63}));
  const File f = parse(w, "getters.gguf");
  auto err = [&](auto&& fn, std::initializer_list<std::string_view> parts) {
    try {
      fn();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind("getters.gguf: ", 0), 0u) << msg;
      for (std::string_view p : parts)
        EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    }
  };
  err([&] { f.get_u32("missing"); }, {"key 'missing' is missing", "expected UINT32"});
  err([&] { f.get_u32("i32"); }, {"key 'i32' has type INT32, expected UINT32"});
  err([&] { f.get_u32("u64"); }, {"key 'u64' has type UINT64, expected UINT32"});
  err([&] { f.get_u32_opt("s"); }, {"key 's' has type STRING, expected UINT32"});
  err([&] { f.get_uint("missing"); }, {"key 'missing' is missing", "non-negative integer"});
  err([&] { f.get_uint("i32neg"); }, {"key 'i32neg' is -5 (INT32)", "non-negative integer"});
  err([&] { f.get_uint("s"); }, {"key 's' has type STRING, expected a non-negative integer"});
  err([&] { f.get_float("b"); }, {"key 'b' has type BOOL, expected FLOAT32, FLOAT64"});
  err([&] { f.get_float("missing"); }, {"key 'missing' is missing"});
  err([&] { f.get_bool("i32"); }, {"key 'i32' has type INT32, expected BOOL"});
  err([&] { f.get_bool("missing"); }, {"key 'missing' is missing (expected BOOL)"});
  err([&] { f.get_string("i32"); }, {"key 'i32' has type INT32, expected STRING"});
  err([&] { f.get_string("missing"); }, {"key 'missing' is missing (expected STRING)"});
  err([&] { f.get_int_array("af"); },
      {"key 'af' has type ARRAY of FLOAT32, expected ARRAY of an integer type"});
  err([&] { f.get_int_array("i32"); }, {"key 'i32' has type INT32, expected ARRAY"});
  err([&] { f.get_int_array("ahuge"); }, {"key 'ahuge' element 0", "too large for int64"});
  err([&] { f.get_int_array("missing"); }, {"key 'missing' is missing"});
  err([&] { f.get_float_array("ai"); },
      {"key 'ai' has type ARRAY of INT32, expected ARRAY of FLOAT32 or FLOAT64"});
  err([&] { f.get_float_array("missing"); }, {"key 'missing' is missing"});
  err([&] { f.get_string_array("ai"); },
      {"key 'ai' has type ARRAY of INT32, expected ARRAY of STRING"});
  err([&] { f.get_string_array("s"); }, {"key 's' has type STRING, expected ARRAY of STRING"});
  err([&] { f.get_string_array("missing"); }, {"key 'missing' is missing"});
}

TEST(GgufReader, NoTensorsWithoutTrailingPadding) {
  // Vocabulary-only files carry no data; some writers leave out the padding after the header.
  Writer w;
  w.set("general.name", Value::str("vocab"));
  std::vector<uint8_t> b = w.to_bytes();
  const size_t header_end = 24 + 8 + 12 + 4 + 8 + 5;
  ASSERT_GT(b.size(), header_end);
  b.resize(header_end);
  const File f = File::parse(MappedFile::from_bytes(b, "vocab.gguf"));
  EXPECT_EQ(f.get_string("general.name"), "vocab");
  EXPECT_EQ(f.data_offset(), header_end);
  b.pop_back();
  expect_error([&] { File::parse(MappedFile::from_bytes(b, "vocab.gguf")); },
               {"vocab.gguf: truncated: key 'general.name' value needs 5 bytes"});
}

TEST(GgufReader, OpenMissingFileNamesIt) {
  expect_error([] { File::open("/nonexistent/dir/x.gguf"); }, {"/nonexistent/dir/x.gguf"});
}
