// Chat prompt rendering for DeepSeek V4: the message model, its parsing from OpenAI-style JSON,
// and the official prompt format (DeepSeek's encoding/encoding_dsv4.py, byte for byte; see
// spec/SERVER.md §2 for where ds4 differs and why we do not).
//
// Rendering, per the official encoder:
//  * BOS, then each message in order (system messages stay in place; nothing is hoisted).
//  * Tool results are folded into user turns: a `tool` message becomes a `<tool_result>…
//    </tool_result>` block of the user turn before it (started if needed), and a user message
//    right after tool results (or after another user message) joins that turn; the blocks are
//    joined by "\n\n". Within a turn, tool results are put in the order of the calls of the
//    latest assistant message with tool calls (by tool_call_id).
//  * system: content, then "\n\n" + the tools block when it has tools, then "\n\n" + the
//    response-format block when it has one. developer: the same inside a `<｜User｜>` turn.
//    latest_reminder: `<｜latest_reminder｜>` + content.
//  * assistant: [reasoning `</think>`] content [DSML tool calls] `<｜end▁of▁sentence｜>`.
//  * After a user/developer turn that is followed by an assistant or latest_reminder message,
//    or ends the conversation: `<｜Assistant｜>` and `<think>` (thinking) or `</think>` (chat).
//  * Thinking mode with drop_thinking (the default) and no tools anywhere: reasoning of
//    assistant turns before the last user turn is dropped (those turns open with `</think>`),
//    and developer messages before it are removed. Any tools keep everything.
//  * Reasoning effort max (thinking mode only): the Think-Max text right after BOS.
//  * Quick-instruction tasks (`task` on a message): `action` puts `<｜Assistant｜>`, the thinking
//    token and `<｜action｜>` after the message; the others append their token (e.g.
//    `<｜query｜>`); the assistant message after a task message has no reasoning part.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/dsml.h"

namespace dsv4::text {

class Tokenizer;

enum class Role : uint8_t { kSystem, kUser, kAssistant, kTool, kDeveloper, kLatestReminder };
std::string_view role_name(Role r);

// Quick-instruction tasks (encoding/README.md).
enum class Task : uint8_t { kNone, kAction, kQuery, kAuthority, kDomain, kTitle, kReadUrl };
std::string_view task_name(Task t);

// An OpenAI-style function tool: `function_json` is the JSON text of the "function" object
// ({"name", "description", "parameters", ...}); it is rendered as Python's json.dumps of it.
struct Tool {
  std::string name;
  std::string function_json;
};

struct Message {
  Role role = Role::kUser;
  std::string content;
  std::string reasoning_content;     // assistant
  std::vector<ToolCall> tool_calls;  // assistant
  std::string tool_call_id;          // tool
  std::vector<Tool> tools;           // system, developer
  std::string response_format;       // system, developer: JSON text; empty when none
  Task task = Task::kNone;
  bool wo_eos = false;  // assistant: no `<｜end▁of▁sentence｜>` (the turn stays open: prefill)
};

struct Conversation {
  std::vector<Message> messages;
  // Request-level tools (OpenAI `tools`). Rendering puts them on the first message when it is a
  // system message (as the official tests do), else on a new empty system message in front (as
  // vLLM does); either way after that message's own tools.
  std::vector<Tool> tools;
};

enum class ThinkingMode : uint8_t { kChat, kThinking };
// kNone and kHigh render the same (no prefix); kMax adds the Think-Max text in thinking mode.
// (The official encoder's reasoning_effort None / "high" / "max".)
enum class ReasoningEffort : uint8_t { kNone, kHigh, kMax };

// Exact replay of generated tool calls: given an assistant message's tool calls, the exact text
// that stood for them when the model generated them (the whole tool_calls block, leading "\n\n"
// included), or nullopt to render them canonically (append_tool_calls_dsml). The text is
// template text: its special-token strings become special tokens, as when it was generated.
using ToolCallReplay = std::function<std::optional<std::string>(std::span<const ToolCall>)>;

struct RenderOptions {
  ThinkingMode mode = ThinkingMode::kThinking;
  ReasoningEffort effort = ReasoningEffort::kNone;
  bool drop_thinking = true;
  ToolCallReplay replay_tool_calls;  // empty: always canonical
};

// The Think-Max text (ends with "\n\n").
extern const std::string_view kReasoningEffortMaxPrefix;

struct Prompt {
  TextPieces pieces;

  std::string text() const;
  // Token ids: special-token strings in template pieces become their ids, data pieces are plain
  // text (Tokenizer::encode_text), and adjacent text of both kinds is encoded as one run, so
  // the result equals tokenizer.encode_with_specials(text()) whenever the data holds no
  // special-token string. Throws when the vocabulary lacks a special token the prompt uses.
  std::vector<int32_t> tokens(const Tokenizer& tok) const;
};

// Throws dsv4::Error on what the format cannot express: an unknown task on a message that needs
// a transition, a developer message with empty content.
Prompt render(const Conversation& conv, const RenderOptions& opt);
std::string render_text(const Conversation& conv, const RenderOptions& opt);

// OpenAI-style JSON: either an array of messages, or an object with "messages" and optional
// "tools" (other keys ignored). Messages: "role" (system, user, assistant, tool, developer,
// latest_reminder), "content" (string, null, or an array of {"type":"text","text":...} parts,
// concatenated; for tool messages joined by "\n\n" as the official encoder joins tool-result
// blocks), "reasoning_content", "tool_calls" ([{"id", "type":"function", "function":{"name",
// "arguments" (JSON text, or a JSON object/array which is serialized)}}]), "tool_call_id",
// "tools" (on system/developer messages), "response_format", "task", "wo_eos"; other keys are
// ignored. Errors are dsv4::Error naming the field, e.g.
// `messages[2].tool_calls[0].function.name: expected a string`.
Conversation parse_conversation(std::string_view json_text);
// A JSON array of {"type":"function","function":{...}} (or an object with a "tools" array).
std::vector<Tool> parse_tools(std::string_view json_text);

// "chat" | "thinking"; "max" | "high" | "none". Throw on anything else.
ThinkingMode parse_thinking_mode(std::string_view s);
ReasoningEffort parse_reasoning_effort(std::string_view s);

}  // namespace dsv4::text
