#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "../model/model_test_util.h"
#include "core/error.h"
#include "state/session_file.h"

using namespace dsv4;
namespace fs = std::filesystem;

// snapshot -> restore -> the same next logits, bit for bit; corrupt or foreign files are refused
// and leave the caller's session untouched.
TEST(SessionFile, RoundTripGivesSameNextLogits) {
  TinySpec spec = tiny_preset("tiny");
  spec.mtp = false;
  auto files = test::tiny_files(spec);
  auto model = bind_model(std::move(files.main));
  CpuModel cpu(*model, CpuOptions{});
  std::vector<int32_t> toks;
  for (int i = 0; i < 150; ++i) toks.push_back((i * 37 + 11) % 256);
  CpuSession s = cpu.new_session();
  ForwardResult r;
  cpu.forward(s, toks.data(), (int64_t)toks.size(), false, false, r);
  const fs::path path = fs::temp_directory_path() / ("dsv4_sess_" + std::to_string(getpid()));
  const uint64_t fp = model_fingerprint(*model);
  save_session(path.string(), fp, toks, s);

  std::vector<int32_t> loaded_toks;
  CpuSession loaded = cpu.new_session();
  load_session(path.string(), fp, model->cfg, loaded_toks, loaded);
  EXPECT_EQ(loaded_toks, toks);
  const int32_t next = 42;
  ForwardResult a, b;
  cpu.forward(s, &next, 1, false, false, a);
  cpu.forward(loaded, &next, 1, false, false, b);
  EXPECT_EQ(a.logits, b.logits);

  // Foreign model.
  CpuSession untouched = cpu.new_session();
  std::vector<int32_t> t2;
  EXPECT_THROW(load_session(path.string(), fp ^ 1, model->cfg, t2, untouched), Error);
  EXPECT_EQ(untouched.n_past, 0);
  // One flipped byte.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x40;
    f.seekp(100);
    f.write(&c, 1);
  }
  try {
    load_session(path.string(), fp, model->cfg, t2, untouched);
    FAIL() << "corrupt file accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
  }
  EXPECT_EQ(untouched.n_past, 0);
  fs::remove(path);
  EXPECT_THROW(load_session(path.string(), fp, model->cfg, t2, untouched), Error);
}

namespace {

// A tiny model with an MTP block (layers of ratio 0, 0, 4, 128, 4) and the session after 150
// tokens: 150 is a multiple of neither ratio, and closes 37 ratio-4 and one ratio-128 window.
struct Fixture {
  std::unique_ptr<Model> model;
  std::unique_ptr<CpuModel> cpu;
  uint64_t fp = 0;
  std::vector<int32_t> toks;
  CpuSession sess;
  Fixture() {
    auto files = test::tiny_files(tiny_preset("tiny"));
    model = bind_model(std::move(files.main), std::move(files.mtp));
    cpu = std::make_unique<CpuModel>(*model, CpuOptions{});
    fp = model_fingerprint(*model);
    for (int i = 0; i < 151; ++i) toks.push_back((i * 37 + 11) % 256);
    sess = cpu->new_session();
    ForwardResult r;
    cpu->forward(sess, toks.data(), 150, false, true, r);
    std::vector<float> logits;
    cpu->mtp_forward(sess, r.hc_final.data(), &toks[1], 150, logits);
    toks.pop_back();
  }
  const ModelConfig& cfg() const { return model->cfg; }
};

const Fixture& fx() {
  static Fixture f;
  return f;
}

fs::path temp_file(const std::string& name) {
  return fs::temp_directory_path() / ("dsv4_sess_" + name + "_" + std::to_string(getpid()));
}

// Loads `path` into outputs holding sentinels; expects an Error naming every piece of `want`
// and the sentinels intact.
void expect_refused(const fs::path& path, const std::vector<std::string>& want) {
  std::vector<int32_t> toks{7, 8};
  CpuSession s;
  s.n_past = 99;
  s.mtp_n_past = 98;
  try {
    load_session(path.string(), fx().fp, fx().cfg(), toks, s);
    ADD_FAILURE() << "malformed session accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
    for (const std::string& w : want) EXPECT_NE(msg.find(w), std::string::npos) << w << ": " << msg;
  }
  EXPECT_EQ(toks, (std::vector<int32_t>{7, 8}));
  EXPECT_EQ(s.n_past, 99);
  EXPECT_EQ(s.mtp_n_past, 98);
  EXPECT_TRUE(s.layers.empty());
  EXPECT_TRUE(s.mtp.raw.empty());
}

struct BadBuffer {
  const char* label;
  int layer;  // -1: the MTP block
  const char* buffer;
  int64_t delta;  // floats added (> 0) or removed (< 0)
};
void PrintTo(const BadBuffer& b, std::ostream* os) {
  *os << b.label;
}

std::vector<float>& buffer(LayerState& st, const std::string& name) {
  if (name == "raw") return st.raw;
  if (name == "comp") return st.comp;
  if (name == "idx") return st.idx;
  if (name == "ckv") return st.ckv;
  if (name == "cscore") return st.cscore;
  if (name == "ikv") return st.ikv;
  return st.iscore;
}

class SessionFileBadBuffer : public ::testing::TestWithParam<BadBuffer> {};

}  // namespace

// The snapshot of a real session stays loadable and equal, MTP state included.
TEST(SessionFileShapes, RealSessionWithMtpRoundTrips) {
  const Fixture& f = fx();
  ASSERT_EQ(f.sess.mtp_n_past, 150);
  const fs::path path = temp_file("ok");
  save_session(path.string(), f.fp, f.toks, f.sess);
  std::vector<int32_t> toks;
  CpuSession s;
  load_session(path.string(), f.fp, f.cfg(), toks, s);
  EXPECT_EQ(toks, f.toks);
  EXPECT_EQ(s.n_past, 150);
  EXPECT_EQ(s.mtp_n_past, 150);
  ASSERT_EQ(s.layers.size(), f.sess.layers.size());
  for (size_t l = 0; l < s.layers.size(); ++l) {
    EXPECT_EQ(s.layers[l].comp, f.sess.layers[l].comp) << l;
    EXPECT_EQ(s.layers[l].idx, f.sess.layers[l].idx) << l;
    EXPECT_EQ(s.layers[l].cscore, f.sess.layers[l].cscore) << l;
  }
  EXPECT_EQ(s.mtp.raw, f.sess.mtp.raw);
  fs::remove(path);
}

// One buffer one row (or one float) off, under a valid checksum: refused, naming the layer,
// buffer and both sizes.
TEST_P(SessionFileBadBuffer, IsRefusedByName) {
  const BadBuffer& b = GetParam();
  const Fixture& f = fx();
  CpuSession bad = f.sess;
  LayerState& st = b.layer < 0 ? bad.mtp : bad.layers[(size_t)b.layer];
  std::vector<float>& v = buffer(st, b.buffer);
  const size_t expected = v.size();
  ASSERT_TRUE(b.delta > 0 || (size_t)-b.delta <= expected) << "the fixture has too few rows";
  v.resize((size_t)((int64_t)expected + b.delta), 0.0f);
  const fs::path path = temp_file(b.label);
  save_session(path.string(), f.fp, f.toks, bad);
  const std::string where = b.layer < 0 ? "MTP" : "layer " + std::to_string(b.layer);
  expect_refused(path, {where + " buffer " + b.buffer + " ", std::to_string(v.size()),
                        std::to_string(expected)});
  fs::remove(path);
}

INSTANTIATE_TEST_SUITE_P(
    Each, SessionFileBadBuffer,
    ::testing::Values(BadBuffer{"comp_r4_short", 2, "comp", -512},
                      BadBuffer{"comp_r128_long", 3, "comp", 512},
                      BadBuffer{"comp_r0_long", 0, "comp", 512},
                      BadBuffer{"idx_short", 4, "idx", -128}, BadBuffer{"idx_r128", 3, "idx", 128},
                      BadBuffer{"cscore", 3, "cscore", -1}, BadBuffer{"iscore", 2, "iscore", 1},
                      BadBuffer{"raw", 0, "raw", -1}, BadBuffer{"ckv", 4, "ckv", -1},
                      BadBuffer{"ikv", 4, "ikv", -2048}, BadBuffer{"mtp_raw", -1, "raw", -512},
                      BadBuffer{"mtp_comp", -1, "comp", 512}, BadBuffer{"mtp_ckv", -1, "ckv", 1}),
    [](const ::testing::TestParamInfo<BadBuffer>& i) { return std::string(i.param.label); });

// Counts in the header that contradict each other or the model.
TEST(SessionFileShapes, BadCountsAreRefused) {
  const Fixture& f = fx();
  const fs::path path = temp_file("counts");
  auto refused = [&](const CpuSession& s, const std::vector<int32_t>& toks,
                     const std::vector<std::string>& want) {
    save_session(path.string(), f.fp, toks, s);
    expect_refused(path, want);
  };
  CpuSession s = f.sess;
  s.mtp_n_past = 151;  // ahead of the main model
  refused(s, f.toks, {"mtp_n_past 151", "n_past = 150"});
  s.mtp_n_past = -1;
  refused(s, f.toks, {"mtp_n_past -1"});
  s = f.sess;
  s.n_past = -5;
  refused(s, {}, {"negative n_past -5"});
  s.n_past = 151;  // more than the tokens
  refused(s, f.toks, {"150 tokens but n_past is 151"});
  s = f.sess;
  s.layers.pop_back();
  refused(s, f.toks, {"4 layers, model has 5"});
  std::vector<int32_t> toks = f.toks;
  toks[3] = (int32_t)f.cfg().n_vocab;
  refused(f.sess, toks, {"token 3", "vocabulary"});
  fs::remove(path);
}

// Bytes after the MTP state, with the checksum recomputed over them: refused.
TEST(SessionFileShapes, TrailingBytesAreRefused) {
  const Fixture& f = fx();
  const fs::path path = temp_file("trailing");
  save_session(path.string(), f.fp, f.toks, f.sess);
  std::vector<uint8_t> b;
  {
    std::ifstream in(path, std::ios::binary);
    b.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  b.resize(b.size() - 8);  // drop the checksum, add 4 bytes, checksum again (FNV-1a 64)
  b.insert(b.end(), {1, 2, 3, 4});
  uint64_t h = 1469598103934665603ull;
  for (uint8_t c : b) h = (h ^ c) * 1099511628211ull;
  const auto* hb = (const uint8_t*)&h;
  b.insert(b.end(), hb, hb + 8);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write((const char*)b.data(), (std::streamsize)b.size());
  }
  expect_refused(path, {fmt::format("the state ends at byte {} but the checksum starts at byte {}",
                                    b.size() - 12, b.size() - 8)});
  fs::remove(path);
}
