// DSML, DeepSeek V4's tool-call syntax: canonical rendering of JSON tool calls, and a streaming
// parser of generated text into reasoning, content and tool calls.
//
// The format (DeepSeek's encoding/README.md and encoding_dsv4.py, spec/SERVER.md §2.4, §2.9):
//
//   \n\n<｜DSML｜tool_calls>\n
//   <｜DSML｜invoke name="NAME">\n
//   <｜DSML｜parameter name="KEY" string="true">RAW TEXT</｜DSML｜parameter>\n
//   <｜DSML｜parameter name="KEY2" string="false">JSON</｜DSML｜parameter>\n
//   </｜DSML｜invoke>\n
//   </｜DSML｜tool_calls>
//
// String values are raw text: no escaping and no entity decoding in either direction (ds4's
// decoding of `&amp;` etc. corrupts files, SERVER.md §9.1.3). Non-string values are JSON.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4::text {

// A tool call as the OpenAI API carries it.
struct ToolCall {
  std::string id;  // may be empty
  std::string name;
  std::string arguments;  // JSON text, normally an object
};

// A rendered prompt in pieces. Template pieces (`data` false) are text the engine wrote: the
// special-token strings in them become special-token ids. Data pieces (`data` true) come from
// the client (message text, tool arguments, schemas) and are always tokenized as plain text, so
// a message that spells `<｜User｜>` cannot inject the token.
struct TextPiece {
  std::string text;
  bool data = false;
};
using TextPieces = std::vector<TextPiece>;

namespace dsml {
inline constexpr std::string_view kBlockOpen = "<｜DSML｜tool_calls>";
inline constexpr std::string_view kBlockClose = "</｜DSML｜tool_calls>";
inline constexpr std::string_view kInvokeOpen = "<｜DSML｜invoke";
inline constexpr std::string_view kInvokeClose = "</｜DSML｜invoke>";
inline constexpr std::string_view kParamOpen = "<｜DSML｜parameter";
inline constexpr std::string_view kParamClose = "</｜DSML｜parameter>";
}  // namespace dsml

// JSON text -> the exact bytes of Python's json.dumps(json.loads(text), ensure_ascii=False):
// ", " and ": " separators, key order kept, non-ASCII verbatim, floats in Python's repr form
// (1e16 -> 1e+16, 1e15 -> 1000000000000000.0). Throws dsv4::Error when `text` is not JSON.
std::string python_json(std::string_view json_text);
// A string as Python's json.dumps(s, ensure_ascii=False) writes it (with the quotes).
std::string python_json_string(std::string_view s);

// The canonical DSML block of `calls`, byte-identical to the official encoder: leading "\n\n",
// invokes joined by "\n", parameters joined by "\n" (a call without parameters renders
// `<｜DSML｜invoke name="x">\n\n</｜DSML｜invoke>`). Arguments that are a JSON object give one
// parameter per key in the client's order: a JSON string -> string="true" and the raw string,
// anything else -> string="false" and python_json(value). Arguments that are not a JSON object
// render as one string parameter `arguments` holding the raw text (the official fallback);
// empty or all-whitespace arguments mean no parameters (officially they would hit that
// fallback). Names, keys and values are written verbatim, as the official encoder does. Empty
// `calls` -> nothing.
void append_tool_calls_dsml(std::span<const ToolCall> calls, TextPieces& out);
std::string render_tool_calls(std::span<const ToolCall> calls);

// ---------------------------------------------------------------------------------------------
// Parsing generated text.

struct DsmlEvent {
  enum class Kind : uint8_t {
    kReasoning,      // `text`: a reasoning delta
    kContent,        // `text`: a content delta
    kToolCallStart,  // an invoke header was read: `index`, `name`
    kToolCall,       // an invoke closed: `index`, `name`, `arguments` (JSON object text)
    kToolBlockEnd,   // a tool_calls block closed (or generation ended in it): `text` = its bytes
    kIssue,          // `text`: what was malformed and how it was handled (for logs)
  };
  Kind kind = Kind::kContent;
  std::string text;
  size_t index = 0;
  std::string name;
  std::string arguments;
};

// Streaming parser of one assistant turn as the model generates it: feed() any split of the
// text (a token, a byte, a whole string) and get the same events (deltas may be cut
// differently). Text deltas never end inside a UTF-8 character or inside something that may
// still become a tag; they are withheld until decided.
//
// Grammar and recovery rules:
//  * Thinking mode starts in reasoning (the prompt ended with `<think>`; one leading `<think>`
//    is skipped). Reasoning ends only at `</think>`: DSML inside reasoning is reasoning text.
//    If generation ends first, everything is reasoning and reasoning_closed() stays false
//    (ds4 returned it as content, SERVER.md §9.1.2). Chat mode starts in content.
//  * Content ends at `<｜DSML｜tool_calls>`; an exact "\n\n" right before it belongs to the
//    block (the official separator), any other whitespace stays in the content.
//  * `<｜end▁of▁sentence｜>` ends the turn outside parameter values; later text is ignored. Inside
//    a value only `</｜DSML｜parameter>` ends it (as in the official parser).
//  * Ill-formed UTF-8 in names and values becomes U+FFFD: arguments are always valid JSON.
//  * Between tags whitespace is free. Attribute values are taken verbatim up to the next `"`.
//  * string="true" values are the raw bytes up to the first `</｜DSML｜parameter>`. No entity
//    decoding of any kind.
//  * string="false" values are trimmed; a value that is not valid JSON (or is empty) is passed
//    as a JSON string instead, with an issue. A missing or unknown `string` attribute means a
//    string value (issue if unknown). A parameter without a name is dropped; a repeated name
//    keeps the first value (issues).
//  * arguments are built like the official decode_dsml_to_arguments: `{"k": v, "k2": v2}`
//    (", " and ": "), string values JSON-escaped, JSON values verbatim. Always valid JSON.
//  * An invoke without a name is parsed and dropped (issue). `<｜DSML｜invoke` or
//    `</｜DSML｜tool_calls>` where `</｜DSML｜invoke>` was due closes the open invoke (issue).
//  * Unknown text or tags inside the block are skipped up to the next `<｜DSML｜` / `</｜DSML｜`
//    tag (issue).
//  * Text after `</｜DSML｜tool_calls>`: whitespace is dropped, anything else is content again
//    (issue), and another block may follow.
//  * At the end of generation inside the block, calls already closed stand; an invoke that was
//    not closed is NOT returned (its arguments may be cut short): incomplete_call() is true and
//    an issue names it. No partial DSML ever reaches the content.
class DsmlParser {
 public:
  explicit DsmlParser(bool thinking);

  void feed(std::string_view text, std::vector<DsmlEvent>& out);
  // End of generation: flushes withheld text and applies the end-of-input rules. Idempotent;
  // feed() after finish() is ignored.
  void finish(std::vector<DsmlEvent>& out);

  bool reasoning_closed() const { return reasoning_closed_; }
  bool in_tool_block() const;
  bool saw_eos() const { return saw_eos_; }
  bool incomplete_call() const { return incomplete_call_; }
  size_t tool_calls() const { return n_calls_; }

 private:
  enum class State : uint8_t { kReasoning, kContent, kBlock, kInvoke, kValue, kAfterBlock, kDone };
  struct Param {
    std::string name;
    std::string json;  // the JSON text of the value
  };
  bool step(bool final, std::vector<DsmlEvent>& out);
  bool step_reasoning(bool final, std::vector<DsmlEvent>& out);
  bool step_content(bool final, std::vector<DsmlEvent>& out);
  bool step_block(bool final, std::vector<DsmlEvent>& out);
  bool step_invoke(bool final, std::vector<DsmlEvent>& out);
  bool step_value(bool final, std::vector<DsmlEvent>& out);
  bool step_after_block(bool final, std::vector<DsmlEvent>& out);
  bool skip_junk(bool final, std::vector<DsmlEvent>& out);
  void consume(size_t n);
  void end_param(std::vector<DsmlEvent>& out);
  void end_invoke(std::vector<DsmlEvent>& out);
  void end_block(std::vector<DsmlEvent>& out);
  void end_of_input(std::vector<DsmlEvent>& out);
  void issue(std::vector<DsmlEvent>& out, std::string text);

  State state_;
  std::string buf_;  // undecided input
  bool finished_ = false;
  bool at_start_ = true;  // no reasoning byte seen yet (a leading <think> is skipped)
  bool reasoning_closed_ = false;
  bool incomplete_call_ = false;
  bool saw_eos_ = false;
  bool junk_reported_ = false;
  bool tail_reported_ = false;
  std::string raw_;  // bytes of the current tool_calls block
  // The open invoke.
  bool call_valid_ = false;
  std::string call_name_;
  std::vector<Param> params_;
  size_t n_calls_ = 0;  // calls returned so far
  // The open parameter.
  bool param_valid_ = false;
  bool param_string_ = true;
  std::string param_name_;
  std::string value_;
};

// The whole turn at once (a DsmlParser fed `text`, then finished).
struct ParsedMessage {
  std::string reasoning_content;
  std::string content;
  std::vector<ToolCall> tool_calls;  // ids empty
  std::vector<std::string> issues;
  std::string raw_dsml;  // exact bytes of the tool_calls block(s), leading "\n\n" included
  bool reasoning_closed = false;
  bool incomplete_call = false;
  bool saw_eos = false;
};
ParsedMessage parse_generated(std::string_view text, bool thinking);
// Folds one parser event into `m` as parse_generated does (text appended, calls and issues
// pushed; kToolCallStart carries nothing the whole message keeps).
void add_event(ParsedMessage& m, DsmlEvent e);

}  // namespace dsv4::text
