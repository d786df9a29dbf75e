// Request parsers of the four dialects (spec/SERVER.md §2.3, §2.6, §2.7, §4.4).
//
// Each takes the request body, either as text (parsed here as an order-preserving JSON
// document; invalid JSON -> 400 "invalid JSON request: …") or as an already parsed
// nlohmann::ordered_json. Ordered because key order is data: tool schemas and tool-call
// arguments are rendered into the prompt in the client's key order (a sorted nlohmann::json
// would change the prompt and lose KV-cache hits).
//
// Every problem is an ApiException with status 400 whose ApiError::param is the JSON path of the
// bad field and whose message starts with it, e.g.
//   messages[2].content[0].type: unsupported content part type "image_url" (only "text")
//   temperature: must be in [0, 100], got 150
//
// Common rules:
//  * Sampling and stop fields go through dsv4::validate (sample/sampler.h); a ParamError
//    becomes a 400 naming the field. A missing seed gets ApiLimits::default_seed or
//    random_seed().
//  * Thinking mode (spec/SERVER.md §2.3). OpenAI chat / completions / Responses: thinking by
//    default; `model` "deepseek-chat" means chat mode, "deepseek-reasoner" thinking, unless the
//    request says otherwise with `thinking` ({"type":"enabled"|"disabled"|"adaptive"} or a
//    boolean), `think` (boolean), `chat_template_kwargs.thinking` / `.enable_thinking`
//    (boolean), or `reasoning_effort` / Responses `reasoning.effort`: "none" = chat mode,
//    "max" = thinking with the Think-Max prefix (downgraded to high below a 393 216-token
//    context), "xhigh" / "high" / "medium" / "low" / "minimal" = thinking; an explicit thinking
//    switch wins over the effort's "none". Anthropic Messages: thinking only when
//    `thinking.type` is "enabled" or "adaptive" (Anthropic semantics; budget_tokens is
//    accepted and ignored), or the model is "deepseek-reasoner" with no `thinking` field;
//    `output_config.effort` / `reasoning_effort` set the effort.
//  * In thinking mode temperature / top_p / top_k / min_p are validated, then replaced by
//    DeepSeek's fixed values when ApiLimits::fixed_thinking_sampling (the default).
//  * max_tokens must be >= 1; above ApiLimits::max_tokens_cap or context_limit it is clamped
//    (the engine stops at the context anyway). Absent: no limit (the context decides), except
//    completions (16, as OpenAI); Anthropic requires it (not count_tokens).
//  * Fields accepted and ignored because they cannot change the output: store, metadata, user,
//    service_tier, prompt_cache_key, safety_identifier, stream_options.include_obfuscation,
//    parallel_tool_calls (the model may always make several calls), truncation ("disabled"),
//    include (Responses), cache_control (Anthropic), modalities ["text"], verbosity.
//  * Fields that would change the output and are not supported are a 400: n != 1, best_of != 1,
//    logprobs / top_logprobs, audio, prediction, suffix, previous_response_id, conversation,
//    background, web_search_options, image / audio / file content.
//  * Responses hosted tools (web_search*, file_search, code_interpreter, image_generation,
//    computer_use_preview, mcp, local_shell) cannot run here: they are dropped with an entry in
//    ParsedRequest::warnings. Other non-function tool types are a 400.
//  * Unknown keys are ignored (clients send many vendor extensions); only the ones above are
//    known to be harmless or rejected.
#pragma once
#include <nlohmann/json.hpp>
#include <string_view>

#include "server/api_types.h"

namespace dsv4::server {

using Json = nlohmann::ordered_json;

// Parses `body` as JSON (400 on syntax errors, or when it is not an object).
Json parse_body(std::string_view body);

ParsedRequest parse_chat_completions(const Json& body, const ApiLimits& lim);
ParsedRequest parse_completions(const Json& body, const ApiLimits& lim);
ParsedRequest parse_responses(const Json& body, const ApiLimits& lim);
ParsedRequest parse_messages(const Json& body, const ApiLimits& lim);
// Anthropic /v1/messages/count_tokens: as parse_messages without the max_tokens requirement;
// count_only is set.
ParsedRequest parse_count_tokens(const Json& body, const ApiLimits& lim);

// The same from body text.
ParsedRequest parse_request(Dialect d, std::string_view body, const ApiLimits& lim);

}  // namespace dsv4::server
