// Shared by the engine tests: a per-process temporary folder (removed when the test program
// ends) holding the generated tiny model ("tiny" preset, no MTP), written at first use.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "model/tiny_model.h"

namespace dsv4::engine_test {

inline const std::filesystem::path& temp_root() {
  static const std::filesystem::path p = [] {
    std::filesystem::path d =
        std::filesystem::temp_directory_path() / ("dsv4_engine_test_" + std::to_string(getpid()));
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d;
  }();
  return p;
}

inline const std::string& model_path() {
  static const std::string path = [] {
    TinySpec spec = tiny_preset("tiny");
    spec.mtp = false;
    const std::string p = (temp_root() / "tiny.gguf").string();
    write_tiny_model(spec, p, "");
    return p;
  }();
  return path;
}

struct TempRootCleanup : ::testing::Environment {
  void TearDown() override { std::filesystem::remove_all(temp_root()); }
};
// One registration per test program (an inline variable is initialised once across its files).
inline const auto* const kTempRootCleanup =
    ::testing::AddGlobalTestEnvironment(new TempRootCleanup);

}  // namespace dsv4::engine_test
