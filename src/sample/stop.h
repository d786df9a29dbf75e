// Stop conditions of a generation (spec/SERVER.md §3.5): stop tokens, max tokens and stop
// strings matched on the detokenized stream across token boundaries.
//
// Stop strings: generation stops at the first byte where any stop string completes (ties: the
// longest, i.e. the earliest start); the output is cut where that string began, and the string
// and everything after it are withheld. The result does not depend on how the text is split
// into tokens. While a suffix of the text could still become a stop string it is held back:
// take_safe() only returns bytes in which no stop string can begin (the streaming hold-back).
// Each string is tracked by a KMP automaton, so a token costs O(bytes * strings).
//
// A generation loop:
//   StopChecker stop(params);             // validated
//   for (;;) {
//     int32_t id = sampler.sample(logits, n, dsml.force_greedy());
//     Finish f = stop.on_token(id);
//     if (f == Finish::kStopToken) break;           // EOS etc.: its text is not output
//     std::string text = detokenize(id);
//     dsml.on_text(text);
//     if (stop.on_text(text) == Finish::kStopString) f = Finish::kStopString;
//     emit(f == Finish::kNone ? stop.take_safe() : stop.take_all());
//     if (f != Finish::kNone) break;                // kLength or kStopString
//     ... evaluate id ...
//   }
//   emit(stop.take_all());                          // end for any other reason (context full)
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sample/sampler.h"

namespace dsv4 {

enum class Finish : uint8_t {
  kNone,
  kStopToken,   // a stop token was sampled (finish_reason "stop")
  kStopString,  // a stop string completed (finish_reason "stop")
  kLength,      // max_tokens reached (finish_reason "length")
};

class StopChecker {
 public:
  explicit StopChecker(StopParams p);  // validates (ids checked against no vocabulary)

  // Each generated token, before its text. kStopToken: `id` is a stop token (its text must not
  // be output). kLength: this token is the max_tokens-th; its text is still output, and
  // generation ends after it. A stop string in that text takes precedence (on_text).
  Finish on_token(int32_t id);
  // The token's decoded text. kStopString when a stop string completed in it: pending() is then
  // cut where the string began, and later text is ignored.
  Finish on_text(std::string_view text);

  // Text received and not yet taken.
  std::string_view pending() const { return pending_; }
  // How many leading bytes of pending() are safe to output (no stop string can begin there).
  size_t safe_len() const;
  // Removes and returns the safe prefix of pending().
  std::string take_safe();
  // Removes and returns all of pending(): at the end of generation nothing more can match.
  std::string take_all();

  Finish finish() const { return finish_; }
  // The stop string that matched (empty otherwise), e.g. for Anthropic's stop_sequence.
  const std::string& matched() const { return matched_; }
  int64_t n_tokens() const { return n_tokens_; }
  const StopParams& params() const { return p_; }

 private:
  StopParams p_;
  std::vector<std::vector<uint32_t>> fail_;  // KMP failure function of each stop string
  std::vector<uint32_t> state_;              // matched prefix length of each stop string
  std::string pending_;
  Finish finish_ = Finish::kNone;
  std::string matched_;
  int64_t n_tokens_ = 0;
};

}  // namespace dsv4
