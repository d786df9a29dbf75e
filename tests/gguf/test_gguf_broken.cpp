// Hostile input: the committed broken-file corpus, every truncation of a valid file, and random
// byte corruption. Every failure must be a dsv4::Error that starts with the file name.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <sstream>

#include "broken_corpus.h"
#include "core/error.h"
#include "gguf/gguf.h"

using namespace dsv4;
using namespace dsv4::gguf;
namespace fs = std::filesystem;

namespace {

const fs::path kBrokenDir = fs::path(DSV4_TEST_DATA_DIR) / "gguf_broken";
const fs::path kSeedDir = fs::path(DSV4_SOURCE_DIR) / "tests" / "fuzz" / "seeds";

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

struct Expected {
  std::string file;
  std::vector<std::string> parts;
};

std::vector<Expected> read_expected() {
  std::ifstream f(kBrokenDir / "EXPECTED.txt");
  std::vector<Expected> out;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    Expected e;
    std::getline(ss, e.file, '\t');
    for (std::string part; std::getline(ss, part, '\t');) e.parts.push_back(part);
    out.push_back(std::move(e));
  }
  return out;
}

// Reads every value and tensor byte, as a loader would (the sanitizers catch stray reads).
uint64_t touch_everything(const File& f) {
  uint64_t h = f.version() + f.alignment() + f.data_offset();
  std::function<void(const Value&)> visit = [&](const Value& v) {
    h += v.array_size() + uint64_t(v.type);
    if (auto* s = std::get_if<std::string>(&v.scalar)) h += s->size();
    for (uint64_t x : v.arr_u) h += x;
    for (int64_t x : v.arr_i) h += uint64_t(x);
    for (double x : v.arr_f) h += uint64_t(x == x);
    for (const std::string& s : v.arr_s) h += s.size();
    for (const Value& x : v.arr_v) visit(x);
  };
  for (const auto& [k, v] : f.metadata()) {
    h += k.size();
    visit(v);
  }
  for (const TensorInfo& t : f.tensors()) {
    h += t.n_elements() + t.offset;
    for (uint64_t i = 0; i < t.nbytes; ++i) h += t.data[i];
  }
  return h;
}

}  // namespace

TEST(GgufBrokenCorpus, CommittedFilesMatchTheGenerator) {
  std::set<std::string> committed;
  for (const auto& e : fs::directory_iterator(kBrokenDir))
    if (e.path().extension() == ".gguf") committed.insert(e.path().filename().string());
  std::set<std::string> generated;
  for (const auto& c : corpus::broken_corpus()) {
    generated.insert(c.name);
    EXPECT_EQ(read_bytes(kBrokenDir / c.name), c.bytes)
        << c.name << " is stale: run `ninja regenerate_gguf_corpus`";
  }
  EXPECT_EQ(committed, generated) << "run `ninja regenerate_gguf_corpus`";
  std::set<std::string> listed;
  for (const Expected& e : read_expected()) listed.insert(e.file);
  EXPECT_EQ(listed, generated) << "EXPECTED.txt is stale";
  for (const auto& c : corpus::valid_seeds())
    EXPECT_EQ(read_bytes(kSeedDir / c.name), c.bytes) << c.name << " is stale";
}

TEST(GgufBrokenCorpus, EveryFileFailsWithTheExpectedMessage) {
  const std::vector<Expected> expected = read_expected();
  EXPECT_GE(expected.size(), 25u);
  for (const Expected& e : expected) {
    const std::string path = (kBrokenDir / e.file).string();
    try {
      const File f = File::open(path);
      ADD_FAILURE() << e.file << " parsed without error";
    } catch (const Error& err) {
      const std::string msg = err.what();
      EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "message does not start with the path: " << msg;
      for (const std::string& part : e.parts)
        EXPECT_NE(msg.find(part), std::string::npos)
            << e.file << ": '" << part << "' not in: " << msg;
    }
  }
}

TEST(GgufBrokenCorpus, ValidSeedsParse) {
  for (const auto& c : corpus::valid_seeds()) {
    const File f = File::open((kSeedDir / c.name).string());
    touch_everything(f);
  }
}

TEST(GgufHostile, EveryTruncationThrows) {
  const std::vector<uint8_t> full = corpus::small_valid_file();
  const File f = File::parse(MappedFile::from_bytes(full, "full.gguf"));
  ASSERT_GE(f.tensors().size(), 5u);
  uint64_t data_end = 0;  // trailing padding after the last tensor may go without harm
  for (const TensorInfo& t : f.tensors())
    data_end = std::max(data_end, f.data_offset() + t.offset + t.nbytes);
  for (size_t n = 0; n < full.size(); ++n) {
    std::vector<uint8_t> prefix(full.begin(), full.begin() + long(n));
    if (n < data_end) {
      try {
        File::parse(MappedFile::from_bytes(std::move(prefix), "prefix.gguf"));
        ADD_FAILURE() << "prefix of " << n << " bytes parsed";
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).rfind("prefix.gguf: ", 0), 0u) << e.what();
      }
    } else {
      EXPECT_NO_THROW(File::parse(MappedFile::from_bytes(std::move(prefix), "prefix.gguf")));
    }
  }
}

TEST(GgufHostile, RandomByteCorruptionNeverCrashes) {
  const std::vector<uint8_t> full = corpus::small_valid_file();
  const size_t header = File::parse(MappedFile::from_bytes(full, "x")).data_offset();
  std::mt19937_64 rng(20240601);
  size_t parsed = 0, rejected = 0;
  for (int it = 0; it < 20000; ++it) {
    std::vector<uint8_t> b = full;
    const int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      // Mostly the header: corrupting tensor data is always harmless.
      const size_t at = rng() % 8 ? rng() % header : rng() % b.size();
      b[at] = rng() % 2 ? uint8_t(rng()) : uint8_t(b[at] ^ (1u << (rng() % 8)));
    }
    try {
      const File f = File::parse(MappedFile::from_bytes(std::move(b), "flip.gguf"));
      touch_everything(f);
      ++parsed;
    } catch (const Error& e) {
      ASSERT_EQ(std::string(e.what()).rfind("flip.gguf: ", 0), 0u) << e.what();
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 1000u);
  EXPECT_GT(parsed, 100u);
}
