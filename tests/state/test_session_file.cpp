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
  load_session(path.string(), fp, loaded_toks, loaded);
  EXPECT_EQ(loaded_toks, toks);
  const int32_t next = 42;
  ForwardResult a, b;
  cpu.forward(s, &next, 1, false, false, a);
  cpu.forward(loaded, &next, 1, false, false, b);
  EXPECT_EQ(a.logits, b.logits);

  // Foreign model.
  CpuSession untouched = cpu.new_session();
  std::vector<int32_t> t2;
  EXPECT_THROW(load_session(path.string(), fp ^ 1, t2, untouched), Error);
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
    load_session(path.string(), fp, t2, untouched);
    FAIL() << "corrupt file accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
  }
  EXPECT_EQ(untouched.n_past, 0);
  fs::remove(path);
  EXPECT_THROW(load_session(path.string(), fp, t2, untouched), Error);
}
