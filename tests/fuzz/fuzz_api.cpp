// libFuzzer target for the HTTP API request parsers (server/api_parse.h), the server's network
// input. Byte 0 picks the dialect (chat, completions, Responses, Messages, count_tokens), the
// rest is the request body. Any input must be accepted or rejected the way http_server.cpp turns
// into a 400: an ApiException (status 400, a message that starts with ApiError::param when there
// is one) or a dsv4::Error (ParamError included). An accepted chat-style request is rendered
// (text::render_text) as the engine would; the renderer may refuse it only with a dsv4::Error
// (the server's 400 from submit). Any other exception escaping (a JSON type error, out_of_range,
// ...) would be a 500 or a crash: libFuzzer reports it.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "server/api_parse.h"
#include "text/chat.h"

using namespace dsv4;
using namespace dsv4::server;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int which = data[0] % 5;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  ApiLimits lim;
  lim.default_seed = 1;         // no random_seed() (deterministic runs)
  lim.context_limit = 1 << 20;  // exercises the max_tokens clamp and the Think-Max gate
  lim.max_tokens_cap = 1 << 16;
  ParsedRequest r;
  try {
    if (which == 4) {
      r = parse_count_tokens(parse_body(body), lim);
    } else {
      r = parse_request(static_cast<Dialect>(which), body, lim);
    }
  } catch (const ApiException& e) {
    const ApiError& err = e.error();
    if (err.status != 400 || err.message.empty()) __builtin_trap();
    if (!err.param.empty() && err.message.rfind(err.param, 0) != 0) __builtin_trap();
    return 0;
  } catch (const Error& e) {
    if (std::string_view(e.what()).empty()) __builtin_trap();
    return 0;
  }
  if (r.gen.conversation) {
    try {
      if (text::render_text(*r.gen.conversation, r.gen.render).empty()) __builtin_trap();
    } catch (const Error& e) {
      if (std::string_view(e.what()).empty()) __builtin_trap();
    }
  }
  return 0;
}
