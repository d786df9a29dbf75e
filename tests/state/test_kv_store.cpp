// The disk KV store: save / longest-prefix lookup / restart / LRU eviction under a byte budget /
// corrupt, truncated, foreign and stray files.
#include <gtest/gtest.h>
#include <omp.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "../model/model_test_util.h"
#include "core/error.h"
#include "state/kv_store.h"
#include "state/session_file.h"

using namespace dsv4;
namespace fs = std::filesystem;

namespace {

struct Fixture {
  std::unique_ptr<Model> model;
  std::unique_ptr<CpuModel> cpu;
  uint64_t fp = 0;
  Fixture() {
    omp_set_num_threads(1);  // the machine may be shared: no spinning OpenMP workers
    TinySpec spec = tiny_preset("tiny");
    spec.mtp = false;
    auto files = test::tiny_files(spec);
    model = bind_model(std::move(files.main));
    cpu = std::make_unique<CpuModel>(*model, CpuOptions{});
    fp = model_fingerprint(*model);
  }
  // The session after feeding `toks`.
  CpuSession run(const std::vector<int32_t>& toks) const {
    CpuSession s = cpu->new_session();
    ForwardResult r;
    cpu->forward(s, toks.data(), (int64_t)toks.size(), false, false, r);
    return s;
  }
};

const Fixture& fx() {
  static Fixture f;
  return f;
}

std::vector<int32_t> seq(int n, int salt = 0) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back((i * 37 + 11 + salt) % 256);
  return t;
}

fs::path temp_dir(const std::string& name) {
  const fs::path p =
      fs::temp_directory_path() / ("dsv4_kv_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(p);
  return p;
}

size_t count_files(const fs::path& d) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(d)) n += e.is_regular_file() ? 1 : 0;
  return n;
}

}  // namespace

TEST(KvStore, SaveLookupLongestPrefixAndRestart) {
  const Fixture& f = fx();
  const fs::path dir = temp_dir("basic");
  const std::vector<int32_t> all = seq(20);
  const std::vector<int32_t> a(all.begin(), all.begin() + 6), b(all.begin(), all.begin() + 12);
  const std::vector<int32_t> other = seq(8, 5);
  {
    KvStore kv(dir.string(), 64ull << 20, f.fp, f.model->cfg);
    EXPECT_EQ(kv.files(), 0u);
    EXPECT_TRUE(kv.save(a, f.run(a)));
    EXPECT_TRUE(kv.save(b, f.run(b)));
    EXPECT_TRUE(kv.save(other, f.run(other)));
    EXPECT_TRUE(kv.save(b, f.run(b)));  // already there: no second file
    EXPECT_EQ(kv.files(), 3u);
    EXPECT_EQ(count_files(dir), 3u);
    EXPECT_TRUE(kv.contains(a));
    EXPECT_FALSE(kv.contains(seq(11)));
    EXPECT_EQ(kv.longest_prefix(all, all.size()), 12u);
    EXPECT_EQ(kv.longest_prefix(all, 11), 6u);  // the limit excludes the longer one
    EXPECT_EQ(kv.longest_prefix(seq(5), 100), 0u);
    EXPECT_EQ(kv.file_name(a).size(), 19u);
  }
  // Restart: the index comes back from the headers; loading gives the same state.
  KvStore kv(dir.string(), 64ull << 20, f.fp, f.model->cfg);
  EXPECT_EQ(kv.files(), 3u);
  EXPECT_GT(kv.bytes(), 0u);
  std::vector<int32_t> toks;
  CpuSession s = f.cpu->new_session();
  ASSERT_EQ(kv.load_longest(all, all.size(), toks, s), 12u);
  EXPECT_EQ(toks, b);
  CpuSession ref = f.run(b);
  ForwardResult r1, r2;
  const int32_t next = all[12];
  f.cpu->forward(s, &next, 1, false, false, r1);
  f.cpu->forward(ref, &next, 1, false, false, r2);
  EXPECT_EQ(r1.logits, r2.logits);
  // Nothing matches: untouched.
  std::vector<int32_t> t2;
  CpuSession s2 = f.cpu->new_session();
  EXPECT_EQ(kv.load_longest(seq(5, 99), 100, t2, s2), 0u);
  EXPECT_TRUE(t2.empty());
  fs::remove_all(dir);
}

TEST(KvStore, EvictsLeastRecentlyUsedOverBudget) {
  const Fixture& f = fx();
  const fs::path dir = temp_dir("evict");
  const std::vector<int32_t> a = seq(4, 1), b = seq(4, 2), c = seq(4, 3);
  uint64_t one = 0;
  {
    KvStore probe(dir.string(), 64ull << 20, f.fp, f.model->cfg);
    ASSERT_TRUE(probe.save(a, f.run(a)));
    one = probe.bytes();
  }
  fs::remove_all(dir);
  KvStore kv(dir.string(), one * 2 + one / 2, f.fp, f.model->cfg);  // room for two
  ASSERT_TRUE(kv.save(a, f.run(a)));
  ASSERT_TRUE(kv.save(b, f.run(b)));
  // Use `a`: now `b` is the least recently used.
  std::vector<int32_t> t;
  CpuSession s = f.cpu->new_session();
  ASSERT_EQ(kv.load_longest(a, 100, t, s), 4u);
  ASSERT_TRUE(kv.save(c, f.run(c)));
  EXPECT_EQ(kv.files(), 2u);
  EXPECT_TRUE(kv.contains(a));
  EXPECT_FALSE(kv.contains(b));
  EXPECT_TRUE(kv.contains(c));
  EXPECT_LE(kv.bytes(), one * 2 + one / 2);
  EXPECT_EQ(count_files(dir), 2u);
  // A snapshot larger than the whole budget is refused and leaves nothing behind.
  KvStore tiny((dir / "small").string(), one / 2, f.fp, f.model->cfg);
  EXPECT_FALSE(tiny.save(a, f.run(a)));
  EXPECT_EQ(tiny.files(), 0u);
  EXPECT_EQ(count_files(dir / "small"), 0u);
  fs::remove_all(dir);
}

TEST(KvStore, CorruptTruncatedForeignAndStrayFiles) {
  const Fixture& f = fx();
  const fs::path dir = temp_dir("corrupt");
  const std::vector<int32_t> all = seq(20);
  const std::vector<int32_t> a(all.begin(), all.begin() + 4), b(all.begin(), all.begin() + 8),
      c(all.begin(), all.begin() + 12);
  std::string name_a, name_b, name_c;
  {
    KvStore kv(dir.string(), 64ull << 20, f.fp, f.model->cfg);
    ASSERT_TRUE(kv.save(a, f.run(a)));
    ASSERT_TRUE(kv.save(b, f.run(b)));
    ASSERT_TRUE(kv.save(c, f.run(c)));
    name_a = kv.file_name(a);
    name_b = kv.file_name(b);
    name_c = kv.file_name(c);
  }
  // c: one flipped byte in the body (the header still reads fine).
  {
    const fs::path p = dir / name_c;
    const auto mid = (std::streamoff)(fs::file_size(p) / 2);
    std::fstream io(p, std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(mid);
    char ch = 0;
    io.read(&ch, 1);
    ch ^= 0x5a;
    io.seekp(mid);
    io.write(&ch, 1);
  }
  // b: truncated inside its tokens.
  fs::resize_file(dir / name_b, 50);
  // Stray files: a temp file from a crash, a file named like a snapshot holding garbage, an
  // unrelated file (left alone), a renamed snapshot (its name does not match its tokens).
  { std::ofstream(dir / (name_c + ".tmp.999999999")) << "partial"; }  // no such process
  { std::ofstream(dir / (name_c + ".tmp.1")) << "in progress"; }      // a live process
  { std::ofstream(dir / "0123456789abcdef.kv") << "garbage garbage garbage garbage garbage"; }
  { std::ofstream(dir / "notes.txt") << "keep me"; }
  fs::copy_file(dir / name_a, dir / "fedcba9876543210.kv");

  KvStore kv(dir.string(), 64ull << 20, f.fp, f.model->cfg);
  // The scan removed the truncated, garbage, renamed and temporary files.
  EXPECT_EQ(kv.files(), 2u);
  EXPECT_FALSE(fs::exists(dir / name_b));
  EXPECT_FALSE(fs::exists(dir / (name_c + ".tmp.999999999")));
  EXPECT_TRUE(fs::exists(dir / (name_c + ".tmp.1")));
  EXPECT_FALSE(fs::exists(dir / "0123456789abcdef.kv"));
  EXPECT_FALSE(fs::exists(dir / "fedcba9876543210.kv"));
  EXPECT_TRUE(fs::exists(dir / "notes.txt"));
  // The corrupt body is found at load time: removed, and the next-longest prefix is used.
  std::vector<int32_t> t;
  CpuSession s = f.cpu->new_session();
  EXPECT_EQ(kv.load_longest(all, all.size(), t, s), 4u);
  EXPECT_EQ(t, a);
  EXPECT_FALSE(fs::exists(dir / name_c));
  EXPECT_EQ(kv.files(), 1u);

  // Another model's fingerprint: its files are foreign and removed.
  KvStore foreign(dir.string(), 64ull << 20, f.fp ^ 1, f.model->cfg);
  EXPECT_EQ(foreign.files(), 0u);
  EXPECT_FALSE(fs::exists(dir / name_a));
  EXPECT_TRUE(fs::exists(dir / "notes.txt"));
  fs::remove_all(dir);
}

// A snapshot whose checksum is valid but whose state has the wrong shape (a compressed row
// missing) is removed at load time, and the next-longest prefix is used.
TEST(KvStore, WrongShapeIsRemovedAndNextPrefixUsed) {
  const Fixture& f = fx();
  const fs::path dir = temp_dir("shape");
  const std::vector<int32_t> all = seq(20);
  const std::vector<int32_t> a(all.begin(), all.begin() + 5), b(all.begin(), all.begin() + 10);
  KvStore kv(dir.string(), 64ull << 20, f.fp, f.model->cfg);
  ASSERT_TRUE(kv.save(a, f.run(a)));
  CpuSession bad = f.run(b);
  for (LayerState& l : bad.layers)
    if (!l.comp.empty()) l.comp.resize(l.comp.size() - f.model->cfg.head_dim);
  ASSERT_TRUE(kv.save(b, bad));
  std::vector<int32_t> t;
  CpuSession s;
  EXPECT_EQ(kv.load_longest(all, all.size(), t, s), 5u);
  EXPECT_EQ(t, a);
  EXPECT_EQ(s.n_past, 5);
  EXPECT_FALSE(fs::exists(dir / kv.file_name(b)));
  EXPECT_EQ(kv.files(), 1u);
  fs::remove_all(dir);
}
