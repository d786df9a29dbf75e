// Writes random blocks of every supported format, and our decoded values (scalar and SIMD levels),
// for tests/oracles/check_quants.py, which decodes the same bytes with gguf-py (llama.cpp's numpy
// reference) and compares bit for bit. Also writes Q8_0/F16/BF16 quantizer inputs and outputs.
//
//   quant_oracle_dump --out DIR                      only write the files (see manifest.txt)
//   quant_oracle_dump --check --cache C --script S   write into a temp dir, run S, return its code;
//                                                    exit 77 (skip) when C/gguf-py is absent
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/half.h"
#include "quant/quant.h"

using namespace dsv4;
using namespace dsv4::quant;
namespace fs = std::filesystem;

namespace {

void write_file(const fs::path& p, const void* data, size_t n) {
  std::ofstream f(p, std::ios::binary);
  f.write(static_cast<const char*>(data), (std::streamsize)n);
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", p.c_str());
    std::exit(2);
  }
}

std::vector<uint8_t> random_bytes(uint64_t seed, size_t n) {
  std::vector<uint8_t> v(n);
  uint64_t s = seed * 0x2545f4914f6cdd1dull + 11;
  for (auto& b : v) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    b = (uint8_t)(s >> 24);
  }
  return v;
}

struct Dumper {
  fs::path dir;
  std::ofstream manifest;

  // One dequantization case: raw bytes + our values at each available dispatch level.
  void dequant(const std::string& name, GgmlType t, const std::vector<uint8_t>& raw, int64_t n) {
    write_file(dir / (name + ".raw"), raw.data(), raw.size());
    std::string levels;
    for (Dispatch d : {Dispatch::kScalar, Dispatch::kAvx2}) {
      if (!dispatch_available(d)) continue;
      std::vector<float> out((size_t)n);
      dequantize_row(d, t, raw.data(), out.data(), n);
      write_file(dir / (name + "." + dispatch_name(d)), out.data(), out.size() * 4);
      levels += std::string(" ") + dispatch_name(d);
    }
    manifest << "dequant " << name << " " << ggml_type_name(t) << " " << (uint32_t)t << " " << n
             << levels << "\n";
  }

  // One quantizer case: f32 input + our encoded bytes.
  void quant(const std::string& name, GgmlType t, const std::vector<float>& x) {
    const int64_t n = (int64_t)x.size();
    std::vector<uint8_t> q(ggml_row_bytes(t, (uint64_t)n));
    if (!quantize_row(t, x.data(), q.data(), n)) std::exit(2);
    write_file(dir / (name + ".src"), x.data(), x.size() * 4);
    write_file(dir / (name + ".ours"), q.data(), q.size());
    manifest << "quant " << name << " " << ggml_type_name(t) << " " << (uint32_t)t << " " << n
             << "\n";
  }
};

void dump_all(const fs::path& dir) {
  fs::create_directories(dir);
  Dumper d{dir, std::ofstream(dir / "manifest.txt")};
  const float scales[] = {1.f, 1e-2f, 1e-4f, 1e3f};  // 1e-4 gives subnormal f16 scale fields
  const GgmlType blocked[] = {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS};
  for (GgmlType t : blocked) {
    const auto tr = *ggml_type_traits((uint32_t)t);
    const std::string tn(tr.name);
    // 10 000 valid random blocks (2 500 per scale) ...
    const int64_t per = 2500 * (int64_t)tr.block_elems;
    std::vector<uint8_t> raw;
    for (size_t k = 0; k < std::size(scales); ++k) {
      std::vector<uint8_t> part(ggml_row_bytes(t, (uint64_t)per));
      random_blocks(t, 1000 + k, scales[k], part.data(), per);
      raw.insert(raw.end(), part.begin(), part.end());
    }
    d.dequant(tn + "_valid", t, raw, per * 4);
    // ... and 2 000 blocks of arbitrary bytes (any f16 scale incl. subnormal, inf and NaN).
    const int64_t nr = 2000 * (int64_t)tr.block_elems;
    d.dequant(tn + "_anybytes", t, random_bytes((uint64_t)t, ggml_row_bytes(t, (uint64_t)nr)), nr);
  }
  // F16 / BF16: every bit pattern (subnormals, inf, NaN), then 10 000 random values.
  for (GgmlType t : {GgmlType::F16, GgmlType::BF16}) {
    const std::string tn(ggml_type_name(t));
    std::vector<uint8_t> raw(2 * 65536);
    for (uint32_t i = 0; i < 65536; ++i)
      raw[2 * i] = (uint8_t)i, raw[2 * i + 1] = (uint8_t)(i >> 8);
    d.dequant(tn + "_allbits", t, raw, 65536);
    std::vector<uint8_t> r(2 * 10000);
    random_blocks(t, 5, 1.f, r.data(), 10000);
    d.dequant(tn + "_random", t, r, 10000);
  }
  d.dequant("F32_anybytes", GgmlType::F32, random_bytes(3, 4 * 10000), 10000);

  // Quantizers: 10 000 blocks of 32 values over many magnitudes, with exact .5 ties and zeros.
  std::vector<float> x(32 * 10000);
  const auto bits = random_bytes(17, x.size() * 4);
  for (size_t i = 0; i < x.size(); ++i) {
    uint32_t u;
    std::memcpy(&u, &bits[4 * i], 4);
    const int e = (int)((i / 32) % 40) - 20;  // block magnitude 2^-20 .. 2^19
    x[i] = std::ldexp((float)((int32_t)u >> 8) * 0x1.0p-23f, e);
  }
  for (size_t blk = 0; blk < 100; ++blk)  // blocks of small integers: ties in x / d
    for (int j = 0; j < 32; ++j) x[blk * 32 * 7 + j] = (float)(j % 2 ? -j : j) * 0.5f;
  for (int j = 0; j < 32; ++j) x[32 + j] = 0.f;  // a zero block
  d.quant("Q8_0_quant", GgmlType::Q8_0, x);
  std::vector<float> xp(x.size());
  const auto pbits = random_bytes(19, xp.size() * 4);
  std::memcpy(xp.data(), pbits.data(), xp.size() * 4);  // any f32 incl. NaN/inf/subnormal
  d.quant("BF16_quant", GgmlType::BF16, xp);
  for (auto& f : xp)  // F16: keep to values where numpy's float->half is the reference
    if (std::isnan(f)) f = 0.f;
  d.quant("F16_quant", GgmlType::F16, xp);
}

}  // namespace

int main(int argc, char** argv) {
  std::string out, cache, script, python = "/usr/bin/python3";
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--out")
      out = next();
    else if (a == "--check")
      check = true;
    else if (a == "--cache")
      cache = next();
    else if (a == "--script")
      script = next();
    else if (a == "--python")
      python = next();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (!check) {
    if (out.empty()) {
      std::fprintf(stderr, "usage: %s --out DIR | --check --cache DIR --script PATH\n", argv[0]);
      return 2;
    }
    dump_all(out);
    return 0;
  }
  if (const char* env = std::getenv("DSV4_ORACLE_CACHE")) cache = env;
  const fs::path gguf_py = fs::path(cache) / "gguf-py";
  if (!fs::exists(gguf_py / "gguf" / "quants.py")) {
    std::printf("SKIP: oracle cache %s absent (run scripts/fetch_oracles.sh)\n", gguf_py.c_str());
    return 77;
  }
  if (!fs::exists(python)) {
    std::printf("SKIP: %s not found\n", python.c_str());
    return 77;
  }
  std::string tmpl = (fs::temp_directory_path() / "dsv4_quant_oracle_XXXXXX").string();
  if (!mkdtemp(tmpl.data())) {
    std::perror("mkdtemp");
    return 2;
  }
  const fs::path dir = tmpl;
  dump_all(dir);
  const std::string cmd = "'" + python + "' '" + script + "' --gguf-py '" + gguf_py.string() +
                          "' '" + dir.string() + "'";
  std::fflush(stdout);
  const int rc = std::system(cmd.c_str());
  fs::remove_all(dir);
  if (rc == -1 || !WIFEXITED(rc)) return 2;
  return WEXITSTATUS(rc);
}
