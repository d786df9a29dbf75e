// The greedy-for-DSML-syntax rule (spec/SERVER.md §3.3): while the generated text is inside
// DSML markup (tags, attributes, whitespace between elements, JSON punctuation of string="false"
// values) the next token is chosen greedily; inside argument payloads (string="true" values and
// JSON string literals) the request's sampling applies.
//
// A byte-level state machine fed with the decoded text of each generated token, in any split
// (a byte, a token, a whole string: the state after a given prefix is the same). Use it for chat
// requests with tools; the generation loop passes force_greedy() to Sampler::sample().
//
// Differences from ds4 (dsml_decode_tracker_update):
//  * Thinking mode starts in reasoning and nothing is DSML until `</think>` (ds4 switched a
//    quoted DSML tag inside reasoning to greedy, §9.1.9); text/dsml.h parses the same way.
//  * Only the canonical `<｜DSML｜tool_calls>` opens a block (as text/dsml.h); it is greedy
//    from `<｜DSML｜` on, once nothing but the block tag can follow.
// As in ds4: a value body that ends with at least `</` of `</｜DSML｜parameter>` is greedy (the
// closing tag is completed greedily); a missing or unknown `string` attribute means a string.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace dsv4 {

enum class DsmlRegion : uint8_t {
  kReasoning,   // thinking, before `</think>`: normal sampling
  kContent,     // outside a tool_calls block: normal
  kStructural,  // inside the block, outside values: tags, attributes, whitespace: greedy
  kStringBody,  // a string="true" value: normal
  kJson,        // a string="false" value outside JSON string literals: greedy
  kJsonString,  // a JSON string literal in a string="false" value: normal
};
const char* to_string(DsmlRegion r);

class DsmlGreedyTracker {
 public:
  explicit DsmlGreedyTracker(bool thinking);

  void on_text(std::string_view text);
  // Whether the next token must be greedy.
  bool force_greedy() const;
  DsmlRegion region() const;
  // Tool blocks closed so far.
  int blocks_closed() const { return blocks_closed_; }

 private:
  enum class State : uint8_t { kReasoning, kContent, kBlock, kTag, kString, kJson, kJsonString };
  void byte(char c);

  State state_;
  uint32_t match_ = 0;  // progress on the tag this state watches for
  bool tag_quote_ = false;
  bool json_escape_ = false;
  std::string tag_;  // the tag being read (kTag), capped
  int blocks_closed_ = 0;
};

}  // namespace dsv4
