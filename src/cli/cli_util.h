// Small pieces shared by the dsv4 subcommands.
#pragma once
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>

#include "sample/sampler.h"
#include "text/utf8.h"

namespace dsv4::cli {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The CLI samples greedily unless asked otherwise.
inline SamplerParams greedy_params() {
  SamplerParams p;
  p.temperature = 0.0f;
  return p;
}

// The sampling flags of `run` and `chat`.
inline void add_sampling_options(CLI::App* sub, SamplerParams& sp) {
  sub->add_option("--temp", sp.temperature, "temperature (0 = greedy, the default)");
  sub->add_option("--top-k", sp.top_k, "top-k (0 = off)");
  sub->add_option("--top-p", sp.top_p, "top-p (1 = off)");
  sub->add_option("--min-p", sp.min_p, "min-p (0 = off)");
  sub->add_option("--seed", sp.seed, "sampling seed");
  sub->add_option("--repeat-penalty", sp.repetition_penalty, "repetition penalty (1 = off)");
  sub->add_option("--repeat-last-n", sp.repeat_last_n, "repetition penalty window (-1 = all)");
  sub->add_option("--frequency-penalty", sp.frequency_penalty, "frequency penalty [-2, 2]");
  sub->add_option("--presence-penalty", sp.presence_penalty, "presence penalty [-2, 2]");
}

// Writes generated text to stdout and flushes. On a terminal, control characters are shown
// as symbols (utf8::append_terminal_safe): a raw escape sequence from the model must not
// take over the user's terminal. Piped output stays byte-exact.
inline void write_model_text(std::string_view text, bool tty) {
  if (tty) {
    std::string safe;
    text::utf8::append_terminal_safe(text, safe);
    std::fwrite(safe.data(), 1, safe.size(), stdout);
  } else {
    std::fwrite(text.data(), 1, text.size(), stdout);
  }
  std::fflush(stdout);
}

}  // namespace dsv4::cli
