// The four HTTP API dialects of the server (spec/SERVER.md §2.6-2.7, §4.3-4.9): shared types.
//
//  * api_parse.h: request bodies (JSON) -> ParsedRequest (an engine::GenerationRequest plus what
//    the response writer needs), or an ApiException carrying a 400 that names the bad field.
//  * api_write.h: the engine's GenEvent stream -> each dialect's SSE bytes or final JSON body.
//
// Everything here is pure: no sockets, no model, no clocks (the caller passes ids and times).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/gen_types.h"

namespace dsv4::server {

enum class Dialect : uint8_t {
  kChat,         // POST /v1/chat/completions (OpenAI)
  kCompletions,  // POST /v1/completions (OpenAI legacy)
  kResponses,    // POST /v1/responses (OpenAI Responses)
  kMessages,     // POST /v1/messages and /v1/messages/count_tokens (Anthropic)
};

// An error answer. `type` is the OpenAI-style type (invalid_request_error, authentication_error,
// not_found_error, rate_limit_error, overloaded_error, api_error, server_error, ...); `param`
// is the request field at fault (a JSON path such as "messages[2].content[0].type"), or empty.
// `code` is OpenAI's optional machine code (e.g. "context_length_exceeded"), or empty.
struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;
  std::string code;
};

// What the parsers throw: a 400 naming the field (what() is the message).
class ApiException : public std::runtime_error {
 public:
  explicit ApiException(ApiError e) : std::runtime_error(e.message), error_(std::move(e)) {}
  const ApiError& error() const { return error_; }

 private:
  ApiError error_;
};

// Convenience constructors.
ApiError bad_request(std::string param, std::string message);

// The error body of a dialect. OpenAI dialects:
//   {"error":{"message":M,"type":T,"param":P|null,"code":C|null}}
// Anthropic (kMessages):
//   {"type":"error","error":{"type":T,"message":M}}
// with the type mapped to Anthropic's names by status: 400 invalid_request_error,
// 401 authentication_error, 403 permission_error, 404 not_found_error, 413 request_too_large,
// 429 rate_limit_error, 503/529 overloaded_error, other 5xx api_error.
std::string error_body(Dialect d, const ApiError& e);
// The Anthropic error type for an HTTP status (as above).
std::string anthropic_error_type(int status);

struct ApiLimits {
  size_t max_messages = 4096;  // messages (or Responses input items) per request
  int64_t max_tokens_cap = 0;  // > 0: larger max_tokens requests are clamped to this
  int64_t context_limit = 0;   // > 0: the engine's context; max_tokens is clamped to it, and
                               // reasoning effort "max" needs >= 393216 (else it is "high")
  // DeepSeek's hosted API and ds4 ignore temperature / top_p / top_k / min_p in thinking mode
  // (T=1, top_k=0, top_p=1, min_p=0.05; spec/SERVER.md §2.3). They are still validated.
  bool fixed_thinking_sampling = true;
  // The seed a request gets when it names none (0: draw one with random_seed()). Tests set it.
  uint64_t default_seed = 0;
};

// The Think-Max context gate (spec/SERVER.md §2.3).
inline constexpr int64_t kThinkMaxMinContext = 393216;

struct ParsedRequest {
  Dialect dialect = Dialect::kChat;
  engine::GenerationRequest gen;
  std::string model;  // echoed back verbatim ("" when the request named none)
  bool stream = false;
  bool include_usage = false;  // chat / completions stream_options.include_usage
  bool has_tools = false;      // the request declared tools
  bool thinking = true;        // gen.render.mode == kThinking
  // Responses: reasoning.summary was requested (auto / concise / detailed): the reasoning item
  // carries a summary (reasoning_summary_* events); otherwise reasoning_text content.
  bool reasoning_summary = false;
  bool parallel_tool_calls = true;
  std::string user;  // OpenAI `user` / Anthropic metadata.user_id (logs only)
  // Completions: the prompt text (for echo in non-stream bodies the engine emits it as content).
  std::string prompt;
  // Anthropic count_tokens: no generation is wanted.
  bool count_only = false;
  // What was accepted but dropped (e.g. a hosted tool the server cannot offer), for the log.
  std::vector<std::string> warnings;
};

struct WriterMeta {
  std::string id;       // chatcmpl-… / cmpl-… / resp_… / msg_…
  std::string model;    // what to report (normally ParsedRequest::model, else the server's id)
  int64_t created = 0;  // unix seconds
};

}  // namespace dsv4::server
