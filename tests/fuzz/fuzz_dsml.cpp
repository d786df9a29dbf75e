// libFuzzer target for the streaming DSML parser (text/dsml.h), which turns the model's output
// into reasoning, content and tool calls. Byte 0: bit 0 picks thinking or chat mode, the rest
// seeds where the text is cut; the remaining bytes are the generated text. The parser's contract,
// checked on every input:
//  * fed in random pieces it gives what parse_generated (the whole text at once) gives: the same
//    reasoning, content, tool calls, raw DSML, issue count and end state;
//  * text deltas are never empty, and never cut a character when the input is valid UTF-8;
//  * tool-call arguments are always a valid JSON object, and calls are numbered 0, 1, 2, ...
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "text/dsml.h"
#include "text/utf8.h"

using namespace dsv4::text;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

ParsedMessage stream(std::string_view text, bool thinking, uint32_t seed) {
  DsmlParser p(thinking);
  std::vector<DsmlEvent> ev;
  const bool valid = utf8::is_valid(text);
  uint32_t x = seed * 2654435761u + 1u;
  size_t at = 0;
  while (at < text.size()) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    const size_t n = 1 + x % 24;  // pieces of 1-24 bytes: inside tags and characters too
    std::vector<DsmlEvent> step;
    p.feed(text.substr(at, n), step);
    for (const DsmlEvent& e : step)
      if (e.kind == DsmlEvent::Kind::kReasoning || e.kind == DsmlEvent::Kind::kContent)
        check(!e.text.empty() && (!valid || utf8::is_valid(e.text)));
    ev.insert(ev.end(), step.begin(), step.end());
    at += n;
  }
  p.finish(ev);
  ParsedMessage m;
  size_t started = 0;
  for (DsmlEvent& e : ev) {
    if (e.kind == DsmlEvent::Kind::kToolCallStart) check(e.index == started++);
    if (e.kind == DsmlEvent::Kind::kToolCall)
      check(e.index == m.tool_calls.size() && started == m.tool_calls.size() + 1);
    add_event(m, std::move(e));
  }
  m.reasoning_closed = p.reasoning_closed();
  m.incomplete_call = p.incomplete_call();
  m.saw_eos = p.saw_eos();
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool thinking = data[0] & 1;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const ParsedMessage whole = parse_generated(text, thinking);
  for (const ToolCall& c : whole.tool_calls) {
    const auto j = nlohmann::json::parse(c.arguments, nullptr, /*allow_exceptions=*/false);
    check(j.is_object());
  }
  const ParsedMessage s = stream(text, thinking, data[0] >> 1);
  check(s.reasoning_content == whole.reasoning_content);
  check(s.content == whole.content);
  check(s.tool_calls.size() == whole.tool_calls.size());
  for (size_t i = 0; i < s.tool_calls.size(); ++i)
    check(s.tool_calls[i].name == whole.tool_calls[i].name &&
          s.tool_calls[i].arguments == whole.tool_calls[i].arguments);
  check(s.raw_dsml == whole.raw_dsml);
  check(s.issues.size() == whole.issues.size());
  check(s.reasoning_closed == whole.reasoning_closed &&
        s.incomplete_call == whole.incomplete_call && s.saw_eos == whole.saw_eos);
  return 0;
}
