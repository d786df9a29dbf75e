// Response writers of the four dialects (spec/SERVER.md §4.5-4.8): the engine's GenEvent stream
// -> SSE bytes (streaming) or one JSON body (non-streaming).
//
// Use: for each event of the job, in order, send on_event(ev) (empty when nothing is due; always
// empty for non-stream requests). After kDone, a non-stream request answers final_status() with
// final_body(). A streaming request has sent everything by then (its final bytes come from the
// kDone event).
//
// Framing:
//  * OpenAI chat / completions: `data: {json}\n\n`, ending with `data: [DONE]\n\n`.
//  * Responses: `event: TYPE\ndata: {"type":TYPE,"sequence_number":N,...}\n\n`, no [DONE].
//  * Anthropic: `event: TYPE\ndata: {"type":TYPE,...}\n\n`.
//
// Streams open at kStarted (chat: the role chunk; Responses: response.created and
// response.in_progress; Anthropic: message_start with the prompt usage), or at the first other
// event when kStarted did not come. kQueued writes nothing (the HTTP layer sends keepalive
// comments).
//
// Finish: a turn with tool calls that ended normally reports tool_calls / tool_use. A kDone whose
// `text` is non-empty with finish kStop is taken as the stop sequence that ended generation
// (Anthropic stop_reason "stop_sequence" and stop_sequence). kCancelled reports as a normal
// stop (nobody is usually listening). kError: streams send the dialect's error event (chat /
// completions `data: {"error":{...}}` then `data: [DONE]`; Responses `error` then
// `response.failed`; Anthropic `event: error`); non-stream bodies become the error body with
// status 500.
//
// Usage: chat / completions {prompt_tokens, completion_tokens, total_tokens,
// prompt_tokens_details:{cached_tokens, cache_write_tokens}, completion_tokens_details:
// {reasoning_tokens}}; Responses {input_tokens, input_tokens_details:{cached_tokens},
// output_tokens, output_tokens_details:{reasoning_tokens}, total_tokens}; Anthropic
// {input_tokens (= prompt - cached), cache_creation_input_tokens: 0, cache_read_input_tokens
// (= cached), output_tokens}.
//
// Ids: the response id is WriterMeta::id; tool-call ids come from the engine (GenEvent::id);
// Responses item ids are derived from the response id (rs_/msg_/fc_ + its suffix).
#pragma once
#include <memory>
#include <string>

#include "server/api_types.h"

namespace dsv4::server {

class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  virtual std::string on_event(const engine::GenEvent& ev) = 0;
  // The complete non-stream body (valid after kDone; before it, what is known so far).
  virtual std::string final_body() const = 0;
  // 200, or 500 after a kError.
  virtual int final_status() const = 0;
  virtual bool done() const = 0;
};

std::unique_ptr<ResponseWriter> make_writer(Dialect d, const ParsedRequest& req,
                                            const WriterMeta& meta);

// The OpenAI finish_reason / Anthropic stop_reason strings.
std::string openai_finish_reason(engine::FinishReason f);
std::string anthropic_stop_reason(engine::FinishReason f);

// Anthropic count_tokens body: {"input_tokens":N}.
std::string count_tokens_body(int64_t input_tokens);

}  // namespace dsv4::server
