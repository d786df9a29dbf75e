// The seed of a GPU test binary's random data: DSV4_TEST_SEED=<n> when set (to reproduce a run),
// else taken from the clock; printed once.
#pragma once
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace dsv4::test {

inline uint64_t run_seed() {
  static const uint64_t seed = [] {
    uint64_t s = 0;
    if (const char* e = std::getenv("DSV4_TEST_SEED"))
      s = std::strtoull(e, nullptr, 10);
    else
      s = (uint64_t)std::chrono::steady_clock::now().time_since_epoch().count();
    std::printf("[   seed   ] DSV4_TEST_SEED=%" PRIu64 "\n", s);
    return s;
  }();
  return seed;
}

}  // namespace dsv4::test
