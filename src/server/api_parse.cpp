#include "server/api_parse.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <map>
#include <optional>

#include "core/error.h"
#include "core/json_text.h"
#include "sample/sampler.h"
#include "text/chat.h"

namespace dsv4::server {
namespace {

using text::Conversation;
using text::Message;
using text::Role;
using text::Tool;
using text::ToolCall;

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw ApiException(bad_request(path, path.empty() ? what : path + ": " + what));
}

std::string idx(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}
std::string key(const std::string& path, const char* k) {
  return path.empty() ? std::string(k) : path + "." + k;
}

const char* type_of(const Json& v) {
  return v.type_name();
}

// A member that is present and not null, or nullptr.
const Json* member(const Json& obj, const char* k) {
  const auto it = obj.find(k);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string as_string(const Json& v, const std::string& path) {
  if (!v.is_string()) bad(path, fmt::format("expected a string, got {}", type_of(v)));
  return v.get<std::string>();
}
bool as_bool(const Json& v, const std::string& path) {
  if (!v.is_boolean()) bad(path, fmt::format("expected a boolean, got {}", type_of(v)));
  return v.get<bool>();
}
double as_number(const Json& v, const std::string& path) {
  if (!v.is_number()) bad(path, fmt::format("expected a number, got {}", type_of(v)));
  return v.get<double>();
}
int64_t as_int(const Json& v, const std::string& path) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) {
      bad(path, "integer out of range");
    }
    return v.get<int64_t>();
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e18) return int64_t(d);
  }
  bad(path, fmt::format("expected an integer, got {}", v.is_number() ? v.dump() : type_of(v)));
}
const Json& as_object(const Json& v, const std::string& path) {
  if (!v.is_object()) bad(path, fmt::format("expected an object, got {}", type_of(v)));
  return v;
}
const Json& as_array(const Json& v, const std::string& path) {
  if (!v.is_array()) bad(path, fmt::format("expected an array, got {}", type_of(v)));
  return v;
}

std::optional<std::string> opt_string(const Json& obj, const char* k, const std::string& base) {
  if (const Json* v = member(obj, k)) return as_string(*v, key(base, k));
  return std::nullopt;
}
std::optional<bool> opt_bool(const Json& obj, const char* k, const std::string& base) {
  if (const Json* v = member(obj, k)) return as_bool(*v, key(base, k));
  return std::nullopt;
}

void check_body(const Json& body) {
  if (!body.is_object())
    bad("", fmt::format("the request body must be a JSON object, got {}", type_of(body)));
}

// Fields that would change the output and are not supported.
void reject_if_set(const Json& body, const char* k, const char* why) {
  if (member(body, k) != nullptr) bad(k, why);
}

// ---------------------------------------------------------------------------------------------
// Sampling, stop and max_tokens.

struct Fields {
  // sampler/stop field name -> the request's field name (for error messages).
  std::map<std::string, std::string> rename;
};

float to_float(double d) {
  // Out-of-float-range values become +-inf (explicitly: the conversion itself would be
  // undefined), which validate() rejects with the value.
  constexpr double kMax = std::numeric_limits<float>::max();
  if (d > kMax) return std::numeric_limits<float>::infinity();
  if (d < -kMax) return -std::numeric_limits<float>::infinity();
  return static_cast<float>(d);
}

void read_sampling(const Json& b, ParsedRequest& r, const ApiLimits& lim, bool extensions) {
  SamplerParams& s = r.gen.sampling;
  if (const Json* v = member(b, "temperature"))
    s.temperature = to_float(as_number(*v, "temperature"));
  if (const Json* v = member(b, "top_p")) s.top_p = to_float(as_number(*v, "top_p"));
  if (const Json* v = member(b, "top_k")) {
    const int64_t k = as_int(*v, "top_k");
    if (k < -1 || k > INT32_MAX) bad("top_k", fmt::format("must be an integer >= -1, got {}", k));
    s.top_k = int32_t(k);
  }
  if (extensions) {
    if (const Json* v = member(b, "min_p")) s.min_p = to_float(as_number(*v, "min_p"));
    if (const Json* v = member(b, "frequency_penalty")) {
      s.frequency_penalty = to_float(as_number(*v, "frequency_penalty"));
    }
    if (const Json* v = member(b, "presence_penalty")) {
      s.presence_penalty = to_float(as_number(*v, "presence_penalty"));
    }
    if (const Json* v = member(b, "repetition_penalty")) {
      s.repetition_penalty = to_float(as_number(*v, "repetition_penalty"));
    }
    if (const Json* v = member(b, "repeat_last_n")) {
      const int64_t n = as_int(*v, "repeat_last_n");
      if (n < -1 || n > kMaxRepeatLastN) {
        bad("repeat_last_n", fmt::format("must be in [-1, {}], got {}", kMaxRepeatLastN, n));
      }
      s.repeat_last_n = int32_t(n);
    }
    if (const Json* v = member(b, "logit_bias")) {
      as_object(*v, "logit_bias");
      for (const auto& [k, val] : v->items()) {
        const std::string p = "logit_bias." + k;
        int64_t id = -1;
        try {
          size_t used = 0;
          id = std::stoll(k, &used);
          if (used != k.size()) id = -1;
        } catch (const std::exception&) {
          id = -1;
        }
        if (id < 0 || id > INT32_MAX) bad(p, "keys must be token ids (non-negative integers)");
        s.logit_bias[int32_t(id)] = to_float(as_number(val, p));
      }
    }
  }
  if (const Json* v = member(b, "seed")) {
    s.seed = static_cast<uint64_t>(as_int(*v, "seed"));
  } else {
    s.seed = lim.default_seed != 0 ? lim.default_seed : random_seed();
  }
}

void read_stop(const Json& b, const char* k, ParsedRequest& r, bool allow_string = true) {
  const Json* v = member(b, k);
  if (v == nullptr) return;
  if (v->is_string() && allow_string) {
    r.gen.stop.stop_strings.push_back(v->get<std::string>());
    return;
  }
  if (!v->is_array()) {
    bad(k, fmt::format("expected {}an array of strings, got {}", allow_string ? "a string or " : "",
                       type_of(*v)));
  }
  for (size_t i = 0; i < v->size(); ++i) {
    r.gen.stop.stop_strings.push_back(as_string((*v)[i], idx(k, i)));
  }
}

constexpr int64_t kMaxRequestedTokens = 2147483647;

// max_tokens from the first present key of `keys`; `dflt` when none (-1 = no limit).
void read_max_tokens(const Json& b, std::initializer_list<const char*> keys, int64_t dflt,
                     bool required, ParsedRequest& r, const ApiLimits& lim, Fields& f) {
  int64_t n = dflt;
  const char* used = nullptr;
  for (const char* k : keys) {
    if (const Json* v = member(b, k)) {
      n = as_int(*v, k);
      if (n < 1) bad(k, fmt::format("must be an integer >= 1, got {}", n));
      // Values up to 2^31 - 1 are clamped below; anything larger is not a request a client
      // means (and would overflow 32-bit peers), so it is refused.
      if (n > kMaxRequestedTokens)
        bad(k, fmt::format("must be at most {}, got {}", kMaxRequestedTokens, n));
      used = k;
      break;
    }
  }
  if (used == nullptr && required) bad(*keys.begin(), "missing (required)");
  if (used != nullptr) f.rename["max_tokens"] = used;
  // Clamped rather than rejected: clients often ask for more than a local context holds, and
  // the engine stops at the context limit anyway (finish "length").
  if (n > 0 && lim.max_tokens_cap > 0 && n > lim.max_tokens_cap) n = lim.max_tokens_cap;
  if (n > 0 && lim.context_limit > 0 && n > lim.context_limit) n = lim.context_limit;
  r.gen.stop.max_tokens = n;
}

// Runs the sampler's validation; a ParamError becomes a 400 naming the request's field.
void validate_params(ParsedRequest& r, const ApiLimits& lim, const Fields& f) {
  auto rethrow = [&](const ParamError& e) {
    const auto it = f.rename.find(e.field());
    const std::string field = it != f.rename.end() ? it->second : e.field();
    std::string msg = e.what();
    if (msg.rfind(e.field() + ":", 0) == 0) msg = field + msg.substr(e.field().size());
    throw ApiException(bad_request(field, msg));
  };
  try {
    validate(r.gen.sampling);
    validate(r.gen.stop);
  } catch (const ParamError& e) {
    rethrow(e);
  }
  if (r.thinking && lim.fixed_thinking_sampling) {
    SamplerParams& s = r.gen.sampling;
    const SamplerParams d;
    s.temperature = d.temperature;
    s.top_k = d.top_k;
    s.top_p = d.top_p;
    s.min_p = d.min_p;
  }
}

// ---------------------------------------------------------------------------------------------
// Thinking mode.

struct ThinkingControl {
  std::optional<bool> on;  // an explicit switch
  std::optional<std::string> effort;
  std::string effort_field;
};

// "max" / "xhigh" / ... / "none"; anything else is a 400 naming `field`.
void check_effort(const std::string& e, const std::string& field) {
  static const char* const kOk[] = {"max", "xhigh", "high", "medium", "low", "minimal", "none"};
  for (const char* k : kOk) {
    if (e == k) return;
  }
  bad(field, fmt::format("unknown reasoning effort \"{}\" (expected max, xhigh, high, medium, low, "
                         "minimal or none)",
                         e));
}

void read_effort(const Json& obj, const char* k, const std::string& base, ThinkingControl& t) {
  if (auto e = opt_string(obj, k, base)) {
    check_effort(*e, key(base, k));
    t.effort = *e;
    t.effort_field = key(base, k);
  }
}

// `thinking`: {"type":"enabled"|"disabled"|"adaptive", ...} or a boolean.
void read_thinking_switch(const Json& b, ThinkingControl& t) {
  if (const Json* v = member(b, "thinking")) {
    if (v->is_boolean()) {
      t.on = v->get<bool>();
    } else if (v->is_object()) {
      const auto type = opt_string(*v, "type", "thinking");
      if (!type) bad("thinking.type", "missing (expected \"enabled\" or \"disabled\")");
      if (*type == "enabled" || *type == "adaptive") {
        t.on = true;
      } else if (*type == "disabled") {
        t.on = false;
      } else {
        bad("thinking.type",
            fmt::format("unknown value \"{}\" (expected enabled, disabled or adaptive)", *type));
      }
      if (const Json* bt = member(*v, "budget_tokens")) {
        if (as_int(*bt, "thinking.budget_tokens") < 1) {
          bad("thinking.budget_tokens", "must be a positive integer");
        }
      }
    } else {
      bad("thinking", fmt::format("expected an object or a boolean, got {}", type_of(*v)));
    }
  }
}

void apply_thinking(ParsedRequest& r, const ThinkingControl& t, bool default_on,
                    const ApiLimits& lim) {
  bool on = default_on;
  if (r.model == "deepseek-chat") on = false;
  if (r.model == "deepseek-reasoner") on = true;
  if (t.effort) on = *t.effort != "none";
  if (t.on) on = *t.on;
  r.thinking = on;
  r.gen.render.mode = on ? text::ThinkingMode::kThinking : text::ThinkingMode::kChat;
  r.gen.render.effort = text::ReasoningEffort::kNone;
  if (on && t.effort) {
    const bool max_ok = lim.context_limit <= 0 || lim.context_limit >= kThinkMaxMinContext;
    r.gen.render.effort =
        (*t.effort == "max" && max_ok) ? text::ReasoningEffort::kMax : text::ReasoningEffort::kHigh;
  }
}

// ---------------------------------------------------------------------------------------------
// Common request fields.

void read_model_stream(const Json& b, ParsedRequest& r) {
  if (auto m = opt_string(b, "model", "")) r.model = *m;
  if (auto s = opt_bool(b, "stream", "")) r.stream = *s;
  if (const Json* so = member(b, "stream_options")) {
    as_object(*so, "stream_options");
    if (auto u = opt_bool(*so, "include_usage", "stream_options")) r.include_usage = *u;
  }
  if (auto u = opt_string(b, "user", "")) r.user = *u;
  if (auto p = opt_bool(b, "parallel_tool_calls", "")) r.parallel_tool_calls = *p;
}

void check_n(const Json& b, const char* k) {
  if (const Json* v = member(b, k)) {
    const int64_t n = as_int(*v, k);
    if (n != 1) bad(k, fmt::format("only 1 is supported, got {}", n));
  }
}

void reject_logprobs(const Json& b) {
  if (const Json* v = member(b, "logprobs")) {
    const bool on = v->is_boolean() ? v->get<bool>() : !(v->is_number() && v->get<double>() == 0);
    if (on) bad("logprobs", "logprobs are not supported");
  }
  if (const Json* v = member(b, "top_logprobs")) {
    if (as_int(*v, "top_logprobs") != 0) bad("top_logprobs", "logprobs are not supported");
  }
}

void check_messages_count(size_t n, const char* field, const ApiLimits& lim) {
  if (n > lim.max_messages) {
    bad(field, fmt::format("too many messages: {} (the limit is {})", n, lim.max_messages));
  }
}

// An OpenAI tool_choice: "auto" | "none" | "required" | {"type":"function","function":{"name"}}
// (Responses: {"type":"function","name"}).
engine::ToolChoice read_openai_tool_choice(const Json& b, const std::vector<Tool>& tools) {
  engine::ToolChoice tc;
  const Json* v = member(b, "tool_choice");
  if (v == nullptr) return tc;
  if (v->is_string()) {
    const std::string s = v->get<std::string>();
    if (s == "auto") {
      tc.kind = engine::ToolChoice::Kind::kAuto;
    } else if (s == "none") {
      tc.kind = engine::ToolChoice::Kind::kNone;
    } else if (s == "required") {
      tc.kind = engine::ToolChoice::Kind::kRequired;
    } else {
      bad("tool_choice", fmt::format("unknown value \"{}\" (expected auto, none or required)", s));
    }
  } else if (v->is_object()) {
    const auto type = opt_string(*v, "type", "tool_choice");
    if (type != "function") {
      bad("tool_choice.type", fmt::format("unsupported tool_choice type \"{}\" (only \"function\")",
                                          type.value_or("")));
    }
    std::optional<std::string> name;
    if (const Json* f = member(*v, "function")) {
      as_object(*f, "tool_choice.function");
      name = opt_string(*f, "name", "tool_choice.function");
      if (!name) bad("tool_choice.function.name", "missing");
    } else {
      name = opt_string(*v, "name", "tool_choice");
      if (!name) bad("tool_choice.function", "missing");
    }
    tc.kind = engine::ToolChoice::Kind::kFunction;
    tc.function = *name;
  } else {
    bad("tool_choice", fmt::format("expected a string or an object, got {}", type_of(*v)));
  }
  if (tc.kind == engine::ToolChoice::Kind::kFunction) {
    bool found = false;
    for (const Tool& t : tools) found = found || t.name == tc.function;
    if (!found) bad("tool_choice", fmt::format("no tool named \"{}\" in tools", tc.function));
  }
  if (tc.kind == engine::ToolChoice::Kind::kRequired && tools.empty()) {
    bad("tool_choice", "\"required\" needs tools");
  }
  return tc;
}

// A dsv4::Error from text::parse_conversation ("messages[2].content[0].type: ...") -> 400 with
// the path as param.
[[noreturn]] void rethrow_text_error(const Error& e) {
  const std::string msg = e.what();
  const size_t colon = msg.find(": ");
  std::string param;
  if (colon != std::string::npos && msg.find(' ') >= colon) param = msg.substr(0, colon);
  throw ApiException(bad_request(param, msg));
}

// response_format {"type":"text"|"json_object"|"json_schema", ...} -> the JSON text the
// renderer puts in the system prompt ("" for text).
std::string read_response_format(const Json& rf, const std::string& path) {
  as_object(rf, path);
  const auto type = opt_string(rf, "type", path);
  if (!type) bad(key(path, "type"), "missing");
  if (*type == "text") return {};
  if (*type == "json_object") return rf.dump();
  if (*type == "json_schema") {
    const Json* s = member(rf, "json_schema");
    if (s == nullptr) bad(key(path, "json_schema"), "missing");
    as_object(*s, key(path, "json_schema"));
    return rf.dump();
  }
  bad(key(path, "type"),
      fmt::format("unknown value \"{}\" (expected text, json_object or json_schema)", *type));
}

// Puts `rf` on the first system message, or on a new one in front.
void attach_response_format(Conversation& conv, const std::string& rf) {
  if (rf.empty()) return;
  if (!conv.messages.empty() && conv.messages[0].role == Role::kSystem &&
      conv.messages[0].response_format.empty()) {
    conv.messages[0].response_format = rf;
    return;
  }
  Message m;
  m.role = Role::kSystem;
  m.response_format = rf;
  conv.messages.insert(conv.messages.begin(), std::move(m));
}

// A function tool from its parts, as the OpenAI "function" object (key order: name,
// description, parameters, strict).
Tool make_tool(const std::string& name, const Json* description, const Json* parameters,
               const Json* strict) {
  Json f = Json::object();
  f["name"] = name;
  if (description != nullptr) f["description"] = *description;
  if (parameters != nullptr) f["parameters"] = *parameters;
  if (strict != nullptr) f["strict"] = *strict;
  return Tool{name, f.dump()};
}

void finish_common(ParsedRequest& r) {
  r.has_tools = r.gen.conversation && !r.gen.conversation->tools.empty();
  r.gen.parse_tool_calls = r.has_tools;
}

// Text of a content-part array whose parts must have one of `types`.
std::string parts_text(const Json& v, const std::string& path,
                       std::initializer_list<const char*> types, const char* sep = "") {
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) {
    bad(path, fmt::format("expected a string or an array of content parts, got {}", type_of(v)));
  }
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string p = idx(path, i);
    const Json& part = as_object(v[i], p);
    const auto type = opt_string(part, "type", p);
    if (!type) bad(key(p, "type"), "missing");
    bool ok = false;
    for (const char* t : types) ok = ok || *type == t;
    if (!ok) {
      std::string list;
      for (const char* t : types) list += std::string(list.empty() ? "\"" : ", \"") + t + "\"";
      bad(key(p, "type"),
          fmt::format("unsupported content type \"{}\" (supported: {})", *type, list));
    }
    const Json* t = member(part, "text");
    if (t == nullptr) bad(key(p, "text"), "missing");
    if (i > 0) out += sep;
    out += as_string(*t, key(p, "text"));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// OpenAI chat.

// Keys of a chat request that the parser reads or knowingly ignores are documented in
// api_parse.h; unknown others are ignored.
ParsedRequest chat_impl(const Json& b, const ApiLimits& lim) {
  check_body(b);
  ParsedRequest r;
  r.dialect = Dialect::kChat;
  read_model_stream(b, r);
  check_n(b, "n");
  reject_logprobs(b);
  reject_if_set(b, "audio", "audio output is not supported");
  reject_if_set(b, "prediction", "predicted outputs are not supported");
  reject_if_set(b, "web_search_options", "web search is not supported");
  reject_if_set(b, "functions", "the legacy functions field is not supported; use tools");
  reject_if_set(b, "function_call",
                "the legacy function_call field is not supported; use "
                "tool_choice");
  if (const Json* m = member(b, "modalities")) {
    as_array(*m, "modalities");
    for (size_t i = 0; i < m->size(); ++i) {
      if (as_string((*m)[i], idx("modalities", i)) != "text") {
        bad(idx("modalities", i), "only \"text\" output is supported");
      }
    }
  }

  const Json* msgs = member(b, "messages");
  if (msgs == nullptr) bad("messages", "missing (required)");
  as_array(*msgs, "messages");
  if (msgs->empty()) bad("messages", "must contain at least one message");
  check_messages_count(msgs->size(), "messages", lim);
  Json conv_json = Json::object();
  conv_json["messages"] = *msgs;
  if (const Json* t = member(b, "tools")) {
    as_array(*t, "tools");
    conv_json["tools"] = *t;
  }
  try {
    r.gen.conversation =
        text::parse_conversation(conv_json.dump(-1, ' ', false, Json::error_handler_t::replace));
  } catch (const Error& e) {
    rethrow_text_error(e);
  }
  if (const Json* rf = member(b, "response_format")) {
    attach_response_format(*r.gen.conversation, read_response_format(*rf, "response_format"));
  }
  r.gen.tool_choice = read_openai_tool_choice(b, r.gen.conversation->tools);

  ThinkingControl tc;
  read_thinking_switch(b, tc);
  if (auto t = opt_bool(b, "think", "")) tc.on = *t;
  if (const Json* k = member(b, "chat_template_kwargs")) {
    as_object(*k, "chat_template_kwargs");
    if (auto t = opt_bool(*k, "thinking", "chat_template_kwargs")) tc.on = *t;
    if (auto t = opt_bool(*k, "enable_thinking", "chat_template_kwargs")) tc.on = *t;
  }
  read_effort(b, "reasoning_effort", "", tc);
  apply_thinking(r, tc, true, lim);

  Fields f;
  read_sampling(b, r, lim, true);
  read_stop(b, "stop", r);
  read_max_tokens(b, {"max_completion_tokens", "max_tokens"}, -1, false, r, lim, f);
  validate_params(r, lim, f);
  finish_common(r);
  return r;
}

// ---------------------------------------------------------------------------------------------
// OpenAI completions. The prompt is raw text (GenerationRequest::raw_prompt): tokenized as
// plain text after BOS, no chat template, no reasoning split (chat mode), no tool parsing.

ParsedRequest completions_impl(const Json& b, const ApiLimits& lim) {
  check_body(b);
  ParsedRequest r;
  r.dialect = Dialect::kCompletions;
  read_model_stream(b, r);
  check_n(b, "n");
  check_n(b, "best_of");
  reject_logprobs(b);
  if (const Json* s = member(b, "suffix")) {
    if (!(s->is_string() && s->get<std::string>().empty())) {
      bad("suffix", "suffix (fill-in-the-middle) is not supported");
    }
  }
  const Json* p = member(b, "prompt");
  if (p == nullptr) bad("prompt", "missing (required)");
  if (p->is_string()) {
    r.prompt = p->get<std::string>();
  } else if (p->is_array()) {
    if (p->size() != 1) {
      bad("prompt",
          fmt::format("only one prompt per request is supported, got an array of {}", p->size()));
    }
    if (!(*p)[0].is_string()) {
      bad("prompt[0]", "token-id prompts are not supported; send the prompt as a string");
    }
    r.prompt = (*p)[0].get<std::string>();
  } else {
    bad("prompt", fmt::format("expected a string or an array of one string, got {}", type_of(*p)));
  }
  if (auto e = opt_bool(b, "echo", "")) r.gen.echo = *e;
  r.gen.raw_prompt = r.prompt;
  r.thinking = false;
  r.gen.render.mode = text::ThinkingMode::kChat;
  r.gen.parse_tool_calls = false;

  Fields f;
  read_sampling(b, r, lim, true);
  read_stop(b, "stop", r);
  read_max_tokens(b, {"max_tokens"}, 16, false, r, lim, f);
  validate_params(r, lim, f);
  return r;
}

// ---------------------------------------------------------------------------------------------
// OpenAI Responses.

// Hosted (server-side) tool types of the Responses API: the server cannot run them, so they are
// dropped with a warning (agents such as Codex send them by default); any other non-function
// type is a 400.
bool hosted_responses_tool(const std::string& type) {
  static const char* const kHosted[] = {
      "web_search",       "web_search_preview",   "file_search", "code_interpreter",
      "image_generation", "computer_use_preview", "mcp",         "local_shell"};
  for (const char* h : kHosted) {
    if (type == h || type.rfind(std::string(h) + "_", 0) == 0) return true;
  }
  return false;
}

std::vector<Tool> responses_tools(const Json& b, ParsedRequest& r) {
  std::vector<Tool> tools;
  const Json* t = member(b, "tools");
  if (t == nullptr) return tools;
  as_array(*t, "tools");
  for (size_t i = 0; i < t->size(); ++i) {
    const std::string p = idx("tools", i);
    const Json& tool = as_object((*t)[i], p);
    const auto type = opt_string(tool, "type", p);
    if (type && hosted_responses_tool(*type)) {
      r.warnings.push_back(
          fmt::format("{}: hosted tool type \"{}\" is not available; dropped", p, *type));
      continue;
    }
    if (type != "function") {
      bad(key(p, "type"),
          fmt::format("unsupported tool type \"{}\" (only \"function\")", type.value_or("")));
    }
    const auto name = opt_string(tool, "name", p);
    if (!name || name->empty()) bad(key(p, "name"), "missing");
    tools.push_back(make_tool(*name, member(tool, "description"), member(tool, "parameters"),
                              member(tool, "strict")));
  }
  return tools;
}

// Responses text.format -> response_format JSON text (chat shape).
std::string responses_format(const Json& b) {
  const Json* t = member(b, "text");
  if (t == nullptr) return {};
  as_object(*t, "text");
  const Json* f = member(*t, "format");
  if (f == nullptr) return {};
  as_object(*f, "text.format");
  const auto type = opt_string(*f, "type", "text.format");
  if (!type) bad("text.format.type", "missing");
  if (*type == "text") return {};
  if (*type == "json_object") return Json{{"type", "json_object"}}.dump();
  if (*type == "json_schema") {
    Json s = Json::object();
    for (const auto& [k, v] : f->items()) {
      if (k != "type") s[k] = v;
    }
    if (member(s, "schema") == nullptr) bad("text.format.schema", "missing");
    Json rf = Json::object();
    rf["type"] = "json_schema";
    rf["json_schema"] = s;
    return rf.dump();
  }
  bad("text.format.type",
      fmt::format("unknown value \"{}\" (expected text, json_object or json_schema)", *type));
}

Role responses_role(const std::string& s, const std::string& path) {
  if (s == "user") return Role::kUser;
  if (s == "assistant") return Role::kAssistant;
  if (s == "system") return Role::kSystem;
  if (s == "developer") return Role::kDeveloper;
  bad(path, fmt::format("unknown role \"{}\" (expected user, assistant, system or developer)", s));
}

void responses_input(const Json& input, Conversation& conv, const ApiLimits& lim) {
  if (input.is_string()) {
    Message m;
    m.role = Role::kUser;
    m.content = input.get<std::string>();
    conv.messages.push_back(std::move(m));
    return;
  }
  as_array(input, "input");
  check_messages_count(input.size(), "input", lim);
  std::string pending;  // reasoning waiting for its assistant message
  bool has_pending = false;
  auto flush_pending = [&] {
    if (!has_pending) return;
    Message m;
    m.role = Role::kAssistant;
    m.reasoning_content = std::move(pending);
    conv.messages.push_back(std::move(m));
    pending.clear();
    has_pending = false;
  };
  auto take_pending = [&](Message& m) {
    if (has_pending) {
      m.reasoning_content += pending;
      pending.clear();
      has_pending = false;
    }
  };
  for (size_t i = 0; i < input.size(); ++i) {
    const std::string p = idx("input", i);
    const Json& it = as_object(input[i], p);
    const std::string type = opt_string(it, "type", p).value_or("message");
    if (type == "message") {
      Message m;
      m.role = responses_role(opt_string(it, "role", p).value_or("user"), key(p, "role"));
      if (const Json* c = member(it, "content")) {
        m.content =
            parts_text(*c, key(p, "content"),
                       {"input_text", "output_text", "text", "summary_text", "reasoning_text"});
      }
      if (m.role == Role::kDeveloper && m.content.empty()) {
        bad(key(p, "content"), "a developer message needs non-empty content");
      }
      if (m.role == Role::kAssistant) {
        take_pending(m);
      } else {
        flush_pending();
      }
      conv.messages.push_back(std::move(m));
    } else if (type == "reasoning") {
      std::string text;
      auto add = [&](const Json* arr, const std::string& path) {
        if (arr == nullptr) return;
        as_array(*arr, path);
        for (size_t j = 0; j < arr->size(); ++j) {
          const std::string q = idx(path, j);
          const Json& part = as_object((*arr)[j], q);
          const Json* t = member(part, "text");
          if (t == nullptr) bad(key(q, "text"), "missing");
          if (!text.empty()) text += "\n";
          text += as_string(*t, key(q, "text"));
        }
      };
      // The full reasoning is in content (reasoning_text); the summary only when it is absent.
      const Json* content = member(it, "content");
      if (content != nullptr && !content->empty()) {
        add(content, key(p, "content"));
      } else {
        add(member(it, "summary"), key(p, "summary"));
      }
      // An item with only encrypted_content (which cannot be read here) adds nothing.
      if (!text.empty()) {
        if (has_pending) pending += "\n";
        pending += text;
        has_pending = true;
      }
    } else if (type == "function_call") {
      ToolCall call;
      auto cid = opt_string(it, "call_id", p);
      if (!cid) cid = opt_string(it, "id", p);
      if (!cid) bad(key(p, "call_id"), "missing");
      call.id = *cid;
      const auto name = opt_string(it, "name", p);
      if (!name || name->empty()) bad(key(p, "name"), "missing");
      call.name = *name;
      if (const Json* a = member(it, "arguments")) {
        if (a->is_string()) {
          call.arguments = a->get<std::string>();
        } else if (a->is_object()) {
          call.arguments = a->dump();
        } else {
          bad(key(p, "arguments"), fmt::format("expected a JSON string, got {}", type_of(*a)));
        }
      } else {
        call.arguments = "{}";
      }
      const bool merge =
          !conv.messages.empty() && conv.messages.back().role == Role::kAssistant && !has_pending;
      if (merge) {
        conv.messages.back().tool_calls.push_back(std::move(call));
      } else {
        Message m;
        m.role = Role::kAssistant;
        take_pending(m);
        m.tool_calls.push_back(std::move(call));
        conv.messages.push_back(std::move(m));
      }
    } else if (type == "function_call_output") {
      flush_pending();
      Message m;
      m.role = Role::kTool;
      const auto cid = opt_string(it, "call_id", p);
      if (!cid) bad(key(p, "call_id"), "missing");
      m.tool_call_id = *cid;
      const Json* out = member(it, "output");
      if (out == nullptr) bad(key(p, "output"), "missing");
      m.content = parts_text(*out, key(p, "output"), {"input_text", "output_text", "text"});
      conv.messages.push_back(std::move(m));
    } else if (type == "item_reference") {
      bad(key(p, "type"),
          "item references need stored responses, which are not supported; "
          "replay the full input instead");
    } else {
      bad(key(p, "type"),
          fmt::format("unsupported input item type \"{}\" (supported: message, reasoning, "
                      "function_call, function_call_output)",
                      type));
    }
  }
  flush_pending();
}

ParsedRequest responses_impl(const Json& b, const ApiLimits& lim) {
  check_body(b);
  ParsedRequest r;
  r.dialect = Dialect::kResponses;
  read_model_stream(b, r);
  r.include_usage = true;
  reject_if_set(b, "previous_response_id",
                "previous_response_id is not supported (the server is stateless); replay the "
                "full input instead");
  reject_if_set(b, "conversation",
                "conversation is not supported (the server is stateless); replay the full input "
                "instead");
  if (auto bg = opt_bool(b, "background", ""); bg && *bg) {
    bad("background", "background responses are not supported");
  }
  reject_logprobs(b);

  Conversation conv;
  if (auto ins = opt_string(b, "instructions", "")) {
    Message m;
    m.role = Role::kSystem;
    m.content = *ins;
    conv.messages.push_back(std::move(m));
  }
  const Json* input = member(b, "input");
  if (input == nullptr) bad("input", "missing (required)");
  responses_input(*input, conv, lim);
  check_messages_count(conv.messages.size(), "input", lim);
  conv.tools = responses_tools(b, r);
  attach_response_format(conv, responses_format(b));
  r.gen.tool_choice = read_openai_tool_choice(b, conv.tools);
  r.gen.conversation = std::move(conv);

  ThinkingControl tc;
  if (const Json* rs = member(b, "reasoning")) {
    as_object(*rs, "reasoning");
    read_effort(*rs, "effort", "reasoning", tc);
    if (auto s = opt_string(*rs, "summary", "reasoning")) {
      if (*s == "auto" || *s == "concise" || *s == "detailed") {
        r.reasoning_summary = true;
      } else if (*s != "none") {
        bad("reasoning.summary",
            fmt::format("unknown value \"{}\" (expected auto, concise, detailed or none)", *s));
      }
    }
  }
  apply_thinking(r, tc, true, lim);

  Fields f;
  read_sampling(b, r, lim, true);
  read_max_tokens(b, {"max_output_tokens", "max_tokens"}, -1, false, r, lim, f);
  validate_params(r, lim, f);
  finish_common(r);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages.

std::string anthropic_system(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  as_array(v, "system");
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string p = idx("system", i);
    const Json& blk = as_object(v[i], p);
    const auto type = opt_string(blk, "type", p);
    if (type != "text") {
      bad(key(p, "type"),
          fmt::format("unsupported system block type \"{}\" (only \"text\")", type.value_or("")));
    }
    const Json* t = member(blk, "text");
    if (t == nullptr) bad(key(p, "text"), "missing");
    std::string s = as_string(*t, key(p, "text"));
    // Claude Code's per-request billing header would defeat prefix caching (SERVER.md §2.6).
    if (s.rfind("x-anthropic-", 0) == 0) continue;
    if (!out.empty() && out.back() != '\n') out += "\n";
    out += s;
  }
  return out;
}

// tool_result content: a string or text blocks (concatenated).
std::string tool_result_text(const Json& v, const std::string& path) {
  if (v.is_string()) return v.get<std::string>();
  return parts_text(v, path, {"text"});
}

void anthropic_message(const Json& m, const std::string& p, Conversation& conv) {
  as_object(m, p);
  const auto role_s = opt_string(m, "role", p);
  if (!role_s) bad(key(p, "role"), "missing");
  Role role;
  if (*role_s == "user") {
    role = Role::kUser;
  } else if (*role_s == "assistant") {
    role = Role::kAssistant;
  } else {
    bad(key(p, "role"), fmt::format("unknown role \"{}\" (expected user or assistant)", *role_s));
  }
  const Json* c = member(m, "content");
  if (c == nullptr) bad(key(p, "content"), "missing");
  Message cur;
  cur.role = role;
  if (c->is_string()) {
    cur.content = c->get<std::string>();
    conv.messages.push_back(std::move(cur));
    return;
  }
  as_array(*c, key(p, "content"));
  bool cur_used = false;  // a user message with text in progress
  for (size_t i = 0; i < c->size(); ++i) {
    const std::string q = idx(key(p, "content"), i);
    const Json& blk = as_object((*c)[i], q);
    const auto type = opt_string(blk, "type", q);
    if (!type) bad(key(q, "type"), "missing");
    if (*type == "text") {
      const Json* t = member(blk, "text");
      if (t == nullptr) bad(key(q, "text"), "missing");
      cur.content += as_string(*t, key(q, "text"));
      cur_used = true;
    } else if (*type == "thinking" && role == Role::kAssistant) {
      const Json* t = member(blk, "thinking");
      if (t == nullptr) bad(key(q, "thinking"), "missing");
      cur.reasoning_content += as_string(*t, key(q, "thinking"));
    } else if (*type == "redacted_thinking" && role == Role::kAssistant) {
      // Opaque; cannot be rendered.
    } else if (*type == "tool_use" && role == Role::kAssistant) {
      ToolCall call;
      const auto id = opt_string(blk, "id", q);
      if (!id) bad(key(q, "id"), "missing");
      const auto name = opt_string(blk, "name", q);
      if (!name || name->empty()) bad(key(q, "name"), "missing");
      call.id = *id;
      call.name = *name;
      const Json* in = member(blk, "input");
      if (in == nullptr) {
        call.arguments = "{}";
      } else {
        as_object(*in, key(q, "input"));
        call.arguments = in->dump();
      }
      cur.tool_calls.push_back(std::move(call));
    } else if (*type == "tool_result" && role == Role::kUser) {
      if (cur_used) {
        conv.messages.push_back(std::move(cur));
        cur = Message{};
        cur.role = Role::kUser;
        cur_used = false;
      }
      Message t;
      t.role = Role::kTool;
      const auto id = opt_string(blk, "tool_use_id", q);
      if (!id) bad(key(q, "tool_use_id"), "missing");
      t.tool_call_id = *id;
      if (const Json* tc = member(blk, "content"))
        t.content = tool_result_text(*tc, key(q, "content"));
      if (auto e = opt_bool(blk, "is_error", q); e && *e) t.content = "Error: " + t.content;
      conv.messages.push_back(std::move(t));
    } else {
      bad(key(q, "type"), fmt::format("unsupported content type \"{}\" in a{} {} message", *type,
                                      role == Role::kAssistant ? "n" : "", *role_s));
    }
  }
  if (role == Role::kAssistant || cur_used || c->empty()) conv.messages.push_back(std::move(cur));
}

std::vector<Tool> anthropic_tools(const Json& b) {
  std::vector<Tool> tools;
  const Json* t = member(b, "tools");
  if (t == nullptr) return tools;
  as_array(*t, "tools");
  for (size_t i = 0; i < t->size(); ++i) {
    const std::string p = idx("tools", i);
    const Json& tool = as_object((*t)[i], p);
    if (auto type = opt_string(tool, "type", p); type && *type != "custom") {
      bad(key(p, "type"),
          fmt::format("unsupported tool type \"{}\" (only client tools with input_schema)", *type));
    }
    const auto name = opt_string(tool, "name", p);
    if (!name || name->empty()) bad(key(p, "name"), "missing");
    const Json* schema = member(tool, "input_schema");
    if (schema == nullptr) bad(key(p, "input_schema"), "missing");
    as_object(*schema, key(p, "input_schema"));
    tools.push_back(make_tool(*name, member(tool, "description"), schema, nullptr));
  }
  return tools;
}

engine::ToolChoice anthropic_tool_choice(const Json& b, const std::vector<Tool>& tools,
                                         ParsedRequest& r) {
  engine::ToolChoice tc;
  const Json* v = member(b, "tool_choice");
  if (v == nullptr) return tc;
  as_object(*v, "tool_choice");
  const auto type = opt_string(*v, "type", "tool_choice");
  if (!type) bad("tool_choice.type", "missing");
  if (*type == "auto") {
    tc.kind = engine::ToolChoice::Kind::kAuto;
  } else if (*type == "any") {
    tc.kind = engine::ToolChoice::Kind::kRequired;
    if (tools.empty()) bad("tool_choice", "\"any\" needs tools");
  } else if (*type == "none") {
    tc.kind = engine::ToolChoice::Kind::kNone;
  } else if (*type == "tool") {
    const auto name = opt_string(*v, "name", "tool_choice");
    if (!name) bad("tool_choice.name", "missing");
    bool found = false;
    for (const Tool& t : tools) found = found || t.name == *name;
    if (!found) bad("tool_choice.name", fmt::format("no tool named \"{}\" in tools", *name));
    tc.kind = engine::ToolChoice::Kind::kFunction;
    tc.function = *name;
  } else {
    bad("tool_choice.type",
        fmt::format("unknown value \"{}\" (expected auto, any, tool or none)", *type));
  }
  if (auto d = opt_bool(*v, "disable_parallel_tool_use", "tool_choice"); d && *d) {
    r.parallel_tool_calls = false;
  }
  return tc;
}

ParsedRequest messages_impl(const Json& b, const ApiLimits& lim, bool count_only) {
  check_body(b);
  ParsedRequest r;
  r.dialect = Dialect::kMessages;
  r.count_only = count_only;
  read_model_stream(b, r);
  if (const Json* md = member(b, "metadata")) {
    as_object(*md, "metadata");
    if (auto u = opt_string(*md, "user_id", "metadata")) r.user = *u;
  }
  if (const Json* mcp = member(b, "mcp_servers"); mcp != nullptr && !mcp->empty()) {
    bad("mcp_servers", "MCP servers are not supported");
  }

  Conversation conv;
  if (const Json* s = member(b, "system")) {
    std::string sys = anthropic_system(*s);
    if (!sys.empty()) {
      Message m;
      m.role = Role::kSystem;
      m.content = std::move(sys);
      conv.messages.push_back(std::move(m));
    }
  }
  const Json* msgs = member(b, "messages");
  if (msgs == nullptr) bad("messages", "missing (required)");
  as_array(*msgs, "messages");
  if (msgs->empty()) bad("messages", "must contain at least one message");
  check_messages_count(msgs->size(), "messages", lim);
  for (size_t i = 0; i < msgs->size(); ++i) {
    anthropic_message((*msgs)[i], idx("messages", i), conv);
  }
  conv.tools = anthropic_tools(b);
  r.gen.tool_choice = anthropic_tool_choice(b, conv.tools, r);
  r.gen.conversation = std::move(conv);

  ThinkingControl tc;
  read_thinking_switch(b, tc);
  if (const Json* oc = member(b, "output_config")) {
    as_object(*oc, "output_config");
    read_effort(*oc, "effort", "output_config", tc);
  }
  read_effort(b, "reasoning_effort", "", tc);
  // Anthropic semantics: no thinking unless asked for (an effort alone does not switch it on).
  if (!tc.on && r.model != "deepseek-reasoner") tc.on = false;
  apply_thinking(r, tc, false, lim);

  Fields f;
  f.rename["stop"] = "stop_sequences";
  read_sampling(b, r, lim, false);
  read_stop(b, "stop_sequences", r, false);
  read_max_tokens(b, {"max_tokens"}, -1, !count_only, r, lim, f);
  validate_params(r, lim, f);
  finish_common(r);
  return r;
}

}  // namespace

ApiError bad_request(std::string param, std::string message) {
  ApiError e;
  e.status = 400;
  e.type = "invalid_request_error";
  e.param = std::move(param);
  e.message = std::move(message);
  return e;
}

Json parse_body(std::string_view body) {
  if (has_nul_byte(body))
    bad("", fmt::format("invalid JSON request: NUL byte at offset {}", nul_byte_offset(body)));
  Json j;
  try {
    j = Json::parse(body);
  } catch (const Json::exception& e) {
    bad("", fmt::format("invalid JSON request: {}", e.what()));
  }
  check_body(j);
  return j;
}

ParsedRequest parse_chat_completions(const Json& body, const ApiLimits& lim) {
  return chat_impl(body, lim);
}
ParsedRequest parse_completions(const Json& body, const ApiLimits& lim) {
  return completions_impl(body, lim);
}
ParsedRequest parse_responses(const Json& body, const ApiLimits& lim) {
  return responses_impl(body, lim);
}
ParsedRequest parse_messages(const Json& body, const ApiLimits& lim) {
  return messages_impl(body, lim, false);
}
ParsedRequest parse_count_tokens(const Json& body, const ApiLimits& lim) {
  return messages_impl(body, lim, true);
}

ParsedRequest parse_request(Dialect d, std::string_view body, const ApiLimits& lim) {
  const Json j = parse_body(body);
  switch (d) {
    case Dialect::kChat:
      return parse_chat_completions(j, lim);
    case Dialect::kCompletions:
      return parse_completions(j, lim);
    case Dialect::kResponses:
      return parse_responses(j, lim);
    case Dialect::kMessages:
      return parse_messages(j, lim);
  }
  bad("", "unknown dialect");
}

}  // namespace dsv4::server
