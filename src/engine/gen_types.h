// What a generation request asks for and what it produces, independent of any HTTP dialect.
// The server's API layer (src/server/api_*) translates OpenAI / Anthropic requests into a
// GenerationRequest and turns the GenEvent stream back into each dialect's JSON or SSE; the
// Engine (src/engine/engine.h) renders, tokenizes, finds a reusable prefix, prefills, samples
// and parses the generated text into these events.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sample/sampler.h"
#include "text/chat.h"

namespace dsv4::engine {

// Which tool calls the model may make (OpenAI tool_choice / Anthropic tool_choice).
struct ToolChoice {
  enum class Kind : uint8_t { kAuto, kNone, kRequired, kFunction };
  Kind kind = Kind::kAuto;
  std::string function;  // kFunction: the one tool the model must call
};

struct GenerationRequest {
  // Chat-style requests: the conversation (request-level tools in conversation.tools) and how
  // to render it. Completions: `conversation` is empty and `raw_prompt` is the prompt text,
  // tokenized as plain text after BOS (no special tokens from client text).
  std::optional<text::Conversation> conversation;
  text::RenderOptions render;
  std::string raw_prompt;

  SamplerParams sampling;
  StopParams stop;  // stop_strings and max_tokens; EOS is added by the engine
  ToolChoice tool_choice;
  // Parse generated DSML into tool calls (chat dialects with tools); when false, DSML is content.
  bool parse_tool_calls = true;
  // Echo the prompt text in front of the completion (completions `echo`).
  bool echo = false;
  std::string request_id;  // for logs; never used to name files
};

enum class FinishReason : uint8_t {
  kStop,       // end of turn or a stop string
  kLength,     // max_tokens or the context limit
  kToolCalls,  // the turn ended with tool calls
  kCancelled,  // the client went away or the server is shutting down
  kError,
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens whose KV was reused (not recomputed)
  int64_t completion_tokens = 0;
  int64_t reasoning_tokens = 0;  // completion tokens spent in the reasoning part
  enum class CacheSource : uint8_t { kNone, kMemory, kDisk };
  CacheSource cache_source = CacheSource::kNone;
  double prefill_seconds = 0, decode_seconds = 0;
};

struct GenEvent {
  enum class Kind : uint8_t {
    kQueued,         // accepted, waiting for the engine (for keepalives); no payload
    kStarted,        // the engine took the job: usage.prompt_tokens / cached_tokens are known
    kReasoning,      // text: reasoning delta
    kContent,        // text: content delta
    kToolCallStart,  // index, id, name: a call's header was generated
    kToolCallArgs,   // index, text: an arguments delta (JSON text, concatenated = arguments)
    kToolCallEnd,    // index, id, name, arguments: the call is complete
    kDone,           // finish, usage: the last event of every job (also after kError)
    kError,          // text: what went wrong (engine-side); kDone(kError) follows
  };
  Kind kind = Kind::kContent;
  std::string text;
  size_t index = 0;
  std::string id;
  std::string name;
  std::string arguments;
  FinishReason finish = FinishReason::kStop;
  Usage usage;
};

}  // namespace dsv4::engine
