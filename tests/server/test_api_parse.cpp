// Request parsers of the four API dialects: valid requests field by field, and every class of
// bad input (status 400 and the JSON path of the bad field).
#include <gtest/gtest.h>

#include <string>

#include "server/api_parse.h"

namespace dsv4::server {
namespace {

using engine::ToolChoice;
using text::ReasoningEffort;
using text::Role;
using text::ThinkingMode;

ApiLimits limits() {
  ApiLimits l;
  l.default_seed = 42;
  l.context_limit = 1 << 20;
  return l;
}

ParsedRequest parse(Dialect d, const std::string& body, const ApiLimits& l = limits()) {
  return parse_request(d, body, l);
}

// Parses `body` expecting a 400 whose param is `param` and whose message contains `what`.
void expect_bad(Dialect d, const std::string& body, const std::string& param,
                const std::string& what = "", const ApiLimits& l = limits()) {
  try {
    (void)parse(d, body, l);
    ADD_FAILURE() << "no error for " << body;
  } catch (const ApiException& e) {
    EXPECT_EQ(e.error().status, 400);
    EXPECT_EQ(e.error().type, "invalid_request_error");
    EXPECT_EQ(e.error().param, param) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    if (!param.empty()) {
      EXPECT_EQ(std::string(e.what()).rfind(param + ":", 0), 0u) << e.what();
    }
  }
}

constexpr const char* kUser = R"("messages":[{"role":"user","content":"hi"}])";

std::string chat_body(const std::string& extra) {
  return std::string("{") + kUser + (extra.empty() ? "" : "," + extra) + "}";
}

// ---------------------------------------------------------------------------------------------
// Chat completions.

TEST(ApiParseChat, Minimal) {
  const ParsedRequest r = parse(Dialect::kChat, chat_body(R"("model":"deepseek-v4-flash")"));
  EXPECT_EQ(r.dialect, Dialect::kChat);
  EXPECT_EQ(r.model, "deepseek-v4-flash");
  ASSERT_TRUE(r.gen.conversation);
  ASSERT_EQ(r.gen.conversation->messages.size(), 1u);
  EXPECT_EQ(r.gen.conversation->messages[0].role, Role::kUser);
  EXPECT_EQ(r.gen.conversation->messages[0].content, "hi");
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.include_usage);
  EXPECT_TRUE(r.thinking);
  EXPECT_EQ(r.gen.render.mode, ThinkingMode::kThinking);
  EXPECT_EQ(r.gen.render.effort, ReasoningEffort::kNone);
  EXPECT_EQ(r.gen.stop.max_tokens, -1);
  EXPECT_EQ(r.gen.sampling.seed, 42u);
  EXPECT_FALSE(r.has_tools);
  EXPECT_FALSE(r.gen.parse_tool_calls);
  EXPECT_TRUE(r.gen.raw_prompt.empty());
}

TEST(ApiParseChat, SamplingFieldsInChatMode) {
  const ParsedRequest r =
      parse(Dialect::kChat,
            chat_body(R"("thinking":{"type":"disabled"},"temperature":0.5,"top_p":0.9,"top_k":40,)"
                      R"("min_p":0.1,"seed":7,"frequency_penalty":0.5,"presence_penalty":-0.5,)"
                      R"("repetition_penalty":1.1,"logit_bias":{"15":-100,"7":2.5})"));
  const SamplerParams& s = r.gen.sampling;
  EXPECT_FALSE(r.thinking);
  EXPECT_FLOAT_EQ(s.temperature, 0.5f);
  EXPECT_FLOAT_EQ(s.top_p, 0.9f);
  EXPECT_EQ(s.top_k, 40);
  EXPECT_FLOAT_EQ(s.min_p, 0.1f);
  EXPECT_EQ(s.seed, 7u);
  EXPECT_FLOAT_EQ(s.frequency_penalty, 0.5f);
  EXPECT_FLOAT_EQ(s.presence_penalty, -0.5f);
  EXPECT_FLOAT_EQ(s.repetition_penalty, 1.1f);
  ASSERT_EQ(s.logit_bias.size(), 2u);
  EXPECT_FLOAT_EQ(s.logit_bias.at(15), -100.0f);
  EXPECT_FLOAT_EQ(s.logit_bias.at(7), 2.5f);
}

TEST(ApiParseChat, ThinkingModeUsesFixedSampling) {
  const std::string body = chat_body(R"("temperature":0.2,"top_p":0.5,"top_k":3,"seed":9)");
  const ParsedRequest r = parse(Dialect::kChat, body);
  EXPECT_TRUE(r.thinking);
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 1.0f);
  EXPECT_FLOAT_EQ(r.gen.sampling.top_p, 1.0f);
  EXPECT_EQ(r.gen.sampling.top_k, 0);
  EXPECT_FLOAT_EQ(r.gen.sampling.min_p, 0.05f);
  EXPECT_EQ(r.gen.sampling.seed, 9u);  // the seed is kept
  ApiLimits l = limits();
  l.fixed_thinking_sampling = false;
  const ParsedRequest r2 = parse(Dialect::kChat, body, l);
  EXPECT_FLOAT_EQ(r2.gen.sampling.temperature, 0.2f);
  EXPECT_EQ(r2.gen.sampling.top_k, 3);
  // Out-of-range values are rejected even when they would be replaced.
  expect_bad(Dialect::kChat, chat_body(R"("temperature":500)"), "temperature", "must be");
}

TEST(ApiParseChat, MaxTokens) {
  EXPECT_EQ(parse(Dialect::kChat, chat_body(R"("max_tokens":100)")).gen.stop.max_tokens, 100);
  EXPECT_EQ(parse(Dialect::kChat, chat_body(R"("max_tokens":100,"max_completion_tokens":50)"))
                .gen.stop.max_tokens,
            50);
  EXPECT_EQ(parse(Dialect::kChat, chat_body(R"("max_tokens":null)")).gen.stop.max_tokens, -1);
  ApiLimits l = limits();
  l.max_tokens_cap = 64;
  EXPECT_EQ(parse(Dialect::kChat, chat_body(R"("max_tokens":1000)"), l).gen.stop.max_tokens, 64);
  l = limits();
  l.context_limit = 500;
  EXPECT_EQ(parse(Dialect::kChat, chat_body(R"("max_tokens":1000)"), l).gen.stop.max_tokens, 500);
}

TEST(ApiParseChat, Stop) {
  EXPECT_EQ(parse(Dialect::kChat, chat_body(R"("stop":"END")")).gen.stop.stop_strings,
            std::vector<std::string>{"END"});
  EXPECT_EQ(parse(Dialect::kChat, chat_body(R"("stop":["a","bc"])")).gen.stop.stop_strings,
            (std::vector<std::string>{"a", "bc"}));
  EXPECT_TRUE(parse(Dialect::kChat, chat_body(R"("stop":null)")).gen.stop.stop_strings.empty());
}

TEST(ApiParseChat, StreamAndUsage) {
  const ParsedRequest r =
      parse(Dialect::kChat, chat_body(R"("stream":true,"stream_options":{"include_usage":true})"));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_FALSE(parse(Dialect::kChat, chat_body(R"("stream":true)")).include_usage);
}

TEST(ApiParseChat, IgnoredFields) {
  const ParsedRequest r = parse(
      Dialect::kChat,
      chat_body(R"("user":"u1","metadata":{"a":"b"},"store":false,"parallel_tool_calls":false,)"
                R"("n":1,"logprobs":false,"service_tier":"auto","modalities":["text"])"));
  EXPECT_EQ(r.user, "u1");
  EXPECT_FALSE(r.parallel_tool_calls);
}

constexpr const char* kTools =
    R"("tools":[{"type":"function","function":{"name":"get_weather","description":"d",)"
    R"("parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}])";

TEST(ApiParseChat, ToolsAndToolChoice) {
  ParsedRequest r = parse(Dialect::kChat, chat_body(kTools));
  EXPECT_TRUE(r.has_tools);
  EXPECT_TRUE(r.gen.parse_tool_calls);
  ASSERT_EQ(r.gen.conversation->tools.size(), 1u);
  EXPECT_EQ(r.gen.conversation->tools[0].name, "get_weather");
  // Key order of the schema is kept (it is rendered into the prompt).
  EXPECT_EQ(r.gen.conversation->tools[0].function_json,
            R"({"name":"get_weather","description":"d","parameters":{"type":"object",)"
            R"("properties":{"city":{"type":"string"}}}})");
  EXPECT_EQ(r.gen.tool_choice.kind, ToolChoice::Kind::kAuto);
  r = parse(Dialect::kChat, chat_body(std::string(kTools) + R"(,"tool_choice":"none")"));
  EXPECT_EQ(r.gen.tool_choice.kind, ToolChoice::Kind::kNone);
  r = parse(Dialect::kChat, chat_body(std::string(kTools) + R"(,"tool_choice":"required")"));
  EXPECT_EQ(r.gen.tool_choice.kind, ToolChoice::Kind::kRequired);
  r = parse(Dialect::kChat,
            chat_body(std::string(kTools) +
                      R"(,"tool_choice":{"type":"function","function":{"name":"get_weather"}})"));
  EXPECT_EQ(r.gen.tool_choice.kind, ToolChoice::Kind::kFunction);
  EXPECT_EQ(r.gen.tool_choice.function, "get_weather");
}

TEST(ApiParseChat, BadToolChoice) {
  expect_bad(Dialect::kChat, chat_body(std::string(kTools) + R"(,"tool_choice":"sometimes")"),
             "tool_choice", "unknown value");
  expect_bad(Dialect::kChat,
             chat_body(std::string(kTools) +
                       R"(,"tool_choice":{"type":"function","function":{"name":"nope"}})"),
             "tool_choice", "no tool named");
  expect_bad(Dialect::kChat, chat_body(R"("tool_choice":"required")"), "tool_choice", "needs");
  expect_bad(Dialect::kChat, chat_body(std::string(kTools) + R"(,"tool_choice":5)"), "tool_choice",
             "expected a string or an object");
  expect_bad(Dialect::kChat, chat_body(R"("tools":[{"type":"retrieval"}])"), "tools[0].type",
             "unsupported tool type");
  expect_bad(Dialect::kChat, chat_body(R"("tools":{"a":1})"), "tools", "expected an array");
}

TEST(ApiParseChat, ResponseFormat) {
  ParsedRequest r = parse(
      Dialect::kChat,
      chat_body(
          R"("response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}})"));
  ASSERT_EQ(r.gen.conversation->messages.size(), 2u);
  EXPECT_EQ(r.gen.conversation->messages[0].role, Role::kSystem);
  EXPECT_EQ(r.gen.conversation->messages[0].response_format,
            R"({"type":"json_schema","json_schema":{"name":"x","schema":{}}})");
  r = parse(Dialect::kChat,
            R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}],)"
            R"("response_format":{"type":"json_object"}})");
  ASSERT_EQ(r.gen.conversation->messages.size(), 2u);
  EXPECT_EQ(r.gen.conversation->messages[0].content, "s");
  EXPECT_EQ(r.gen.conversation->messages[0].response_format, R"({"type":"json_object"})");
  r = parse(Dialect::kChat, chat_body(R"("response_format":{"type":"text"})"));
  EXPECT_EQ(r.gen.conversation->messages.size(), 1u);
  expect_bad(Dialect::kChat, chat_body(R"("response_format":{"type":"xml"})"),
             "response_format.type", "unknown value");
  expect_bad(Dialect::kChat, chat_body(R"("response_format":{"type":"json_schema"})"),
             "response_format.json_schema", "missing");
}

TEST(ApiParseChat, ReasoningEffort) {
  ParsedRequest r = parse(Dialect::kChat, chat_body(R"("reasoning_effort":"max")"));
  EXPECT_TRUE(r.thinking);
  EXPECT_EQ(r.gen.render.effort, ReasoningEffort::kMax);
  ApiLimits small = limits();
  small.context_limit = 100000;  // below the Think-Max gate
  r = parse(Dialect::kChat, chat_body(R"("reasoning_effort":"max")"), small);
  EXPECT_EQ(r.gen.render.effort, ReasoningEffort::kHigh);
  for (const char* e : {"xhigh", "high", "medium", "low", "minimal"}) {
    r = parse(Dialect::kChat, chat_body(std::string(R"("reasoning_effort":")") + e + "\""));
    EXPECT_TRUE(r.thinking) << e;
    EXPECT_EQ(r.gen.render.effort, ReasoningEffort::kHigh) << e;
  }
  r = parse(Dialect::kChat, chat_body(R"("reasoning_effort":"none")"));
  EXPECT_FALSE(r.thinking);
  EXPECT_EQ(r.gen.render.mode, ThinkingMode::kChat);
  r = parse(Dialect::kChat, chat_body(R"("reasoning_effort":null)"));
  EXPECT_TRUE(r.thinking);
  expect_bad(Dialect::kChat, chat_body(R"("reasoning_effort":"extreme")"), "reasoning_effort",
             "unknown reasoning effort");
  expect_bad(Dialect::kChat, chat_body(R"("reasoning_effort":3)"), "reasoning_effort",
             "expected a string");
}

TEST(ApiParseChat, ThinkingSwitches) {
  EXPECT_FALSE(parse(Dialect::kChat, chat_body(R"("thinking":{"type":"disabled"})")).thinking);
  EXPECT_TRUE(parse(Dialect::kChat, chat_body(R"("thinking":{"type":"enabled"})")).thinking);
  EXPECT_FALSE(parse(Dialect::kChat, chat_body(R"("thinking":false)")).thinking);
  EXPECT_FALSE(parse(Dialect::kChat, chat_body(R"("think":false)")).thinking);
  EXPECT_FALSE(
      parse(Dialect::kChat, chat_body(R"("chat_template_kwargs":{"thinking":false})")).thinking);
  EXPECT_FALSE(
      parse(Dialect::kChat, chat_body(R"("chat_template_kwargs":{"enable_thinking":false})"))
          .thinking);
  EXPECT_FALSE(parse(Dialect::kChat, chat_body(R"("model":"deepseek-chat")")).thinking);
  EXPECT_TRUE(parse(Dialect::kChat, chat_body(R"("model":"deepseek-reasoner")")).thinking);
  EXPECT_TRUE(
      parse(Dialect::kChat, chat_body(R"("model":"deepseek-chat","thinking":{"type":"enabled"})"))
          .thinking);
  // An explicit switch wins over the effort.
  EXPECT_TRUE(
      parse(Dialect::kChat, chat_body(R"("reasoning_effort":"none","thinking":{"type":"enabled"})"))
          .thinking);
  expect_bad(Dialect::kChat, chat_body(R"("thinking":{"type":"sometimes"})"), "thinking.type",
             "unknown value");
  expect_bad(Dialect::kChat, chat_body(R"("thinking":"yes")"), "thinking",
             "expected an object or a boolean");
  expect_bad(Dialect::kChat, chat_body(R"("chat_template_kwargs":{"thinking":"no"})"),
             "chat_template_kwargs.thinking", "expected a boolean");
}

TEST(ApiParseChat, ConversationWithToolCalls) {
  const ParsedRequest r = parse(
      Dialect::kChat,
      R"({"messages":[{"role":"system","content":"sys"},)"
      R"({"role":"developer","content":"dev"},)"
      R"({"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},)"
      R"({"role":"assistant","content":null,"reasoning_content":"think",)"
      R"("tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},)"
      R"({"role":"tool","tool_call_id":"call_1","content":"42"}]})");
  const auto& m = r.gen.conversation->messages;
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[1].role, Role::kDeveloper);
  EXPECT_EQ(m[2].content, "ab");
  EXPECT_EQ(m[3].reasoning_content, "think");
  ASSERT_EQ(m[3].tool_calls.size(), 1u);
  EXPECT_EQ(m[3].tool_calls[0].id, "call_1");
  EXPECT_EQ(m[3].tool_calls[0].arguments, R"({"x":1})");
  EXPECT_EQ(m[4].role, Role::kTool);
  EXPECT_EQ(m[4].tool_call_id, "call_1");
  EXPECT_EQ(m[4].content, "42");
}

TEST(ApiParseChat, ToolMessagePartsJoined) {
  const ParsedRequest r = parse(
      Dialect::kChat,
      R"({"messages":[{"role":"tool","tool_call_id":"c","content":[{"type":"text","text":"a"},)"
      R"({"type":"text","text":"b"}]}]})");
  EXPECT_EQ(r.gen.conversation->messages[0].content, "a\n\nb");
}

TEST(ApiParseChat, BadMessages) {
  expect_bad(Dialect::kChat, R"({"model":"x"})", "messages", "missing");
  expect_bad(Dialect::kChat, R"({"messages":"hi"})", "messages", "expected an array");
  expect_bad(Dialect::kChat, R"({"messages":[]})", "messages", "at least one");
  expect_bad(Dialect::kChat,
             R"({"messages":[{"role":"user","content":[{"type":"text","text":"a"},)"
             R"({"type":"image_url","image_url":{"url":"x"}}]}]})",
             "messages[0].content[1].type", "image_url");
  expect_bad(Dialect::kChat, R"({"messages":[{"role":"user","content":[{"type":"input_audio"}]}]})",
             "messages[0].content[0].type", "input_audio");
  expect_bad(Dialect::kChat, R"({"messages":[{"role":"wizard","content":"x"}]})",
             "messages[0].role", "unknown role");
  expect_bad(Dialect::kChat, R"({"messages":[{"content":"x"}]})", "messages[0].role", "missing");
  expect_bad(Dialect::kChat, R"({"messages":[{"role":"user","content":5}]})", "messages[0].content",
             "expected");
  expect_bad(Dialect::kChat, R"({"messages":[1]})", "messages[0]", "expected a message object");
  expect_bad(
      Dialect::kChat,
      R"({"messages":[{"role":"assistant","tool_calls":[{"type":"function","function":{}}]}]})",
      "messages[0].tool_calls[0].function.name", "missing");
}

TEST(ApiParseChat, TooManyMessages) {
  ApiLimits l = limits();
  l.max_messages = 2;
  expect_bad(Dialect::kChat,
             R"({"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},)"
             R"({"role":"user","content":"c"}]})",
             "messages", "too many messages", l);
}

TEST(ApiParseChat, WrongTypes) {
  expect_bad(Dialect::kChat, chat_body(R"("temperature":"hot")"), "temperature",
             "expected a number");
  expect_bad(Dialect::kChat, chat_body(R"("top_k":2.5)"), "top_k", "expected an integer");
  expect_bad(Dialect::kChat, chat_body(R"("seed":"x")"), "seed", "expected an integer");
  expect_bad(Dialect::kChat, chat_body(R"("stream":"yes")"), "stream", "expected a boolean");
  expect_bad(Dialect::kChat, chat_body(R"("stream_options":{"include_usage":1})"),
             "stream_options.include_usage", "expected a boolean");
  expect_bad(Dialect::kChat, chat_body(R"("stop":5)"), "stop", "expected a string or an array");
  expect_bad(Dialect::kChat, chat_body(R"("stop":["a",3])"), "stop[1]", "expected a string");
  expect_bad(Dialect::kChat, chat_body(R"("model":5)"), "model", "expected a string");
  expect_bad(Dialect::kChat, chat_body(R"("logit_bias":[1])"), "logit_bias", "expected an object");
  expect_bad(Dialect::kChat, chat_body(R"("logit_bias":{"abc":1})"), "logit_bias.abc", "token ids");
}

TEST(ApiParseChat, OutOfRangeSampling) {
  expect_bad(Dialect::kChat, chat_body(R"("temperature":-1)"), "temperature", "must be");
  expect_bad(Dialect::kChat, chat_body(R"("top_p":0)"), "top_p", "must be in (0, 1]");
  expect_bad(Dialect::kChat, chat_body(R"("top_p":1.5)"), "top_p", "must be");
  expect_bad(Dialect::kChat, chat_body(R"("temperature":1e300)"), "temperature", "must be");
  expect_bad(Dialect::kChat, chat_body(R"("top_k":1e12)"), "top_k", ">= -1");
  expect_bad(Dialect::kChat, chat_body(R"("seed":1.5)"), "seed", "expected an integer");
  expect_bad(Dialect::kChat, chat_body(R"("top_k":-5)"), "top_k", ">= -1");
  expect_bad(Dialect::kChat, chat_body(R"("min_p":2)"), "min_p", "must be");
  expect_bad(Dialect::kChat, chat_body(R"("frequency_penalty":3)"), "frequency_penalty", "must be");
  expect_bad(Dialect::kChat, chat_body(R"("presence_penalty":-2.5)"), "presence_penalty",
             "must be");
  expect_bad(Dialect::kChat, chat_body(R"("repetition_penalty":0)"), "repetition_penalty",
             "must be");
  expect_bad(Dialect::kChat, chat_body(R"("logit_bias":{"5":150})"), "logit_bias", "");
  expect_bad(Dialect::kChat, chat_body(R"("max_tokens":0)"), "max_tokens", ">= 1");
  expect_bad(Dialect::kChat, chat_body(R"("max_tokens":1000000000000000)"), "max_tokens",
             "at most 2147483647");
  expect_bad(Dialect::kChat, chat_body(R"("max_completion_tokens":-3)"), "max_completion_tokens",
             ">= 1");
  std::string many = R"("stop":[)";
  for (int i = 0; i < 65; ++i) many += (i ? ",\"s" : "\"s") + std::to_string(i) + "\"";
  expect_bad(Dialect::kChat, chat_body(many + "]"), "stop", "");
  expect_bad(Dialect::kChat, chat_body(R"("stop":[""])"), "stop", "bytes");
}

TEST(ApiParseChat, UnsupportedFeatures) {
  expect_bad(Dialect::kChat, chat_body(R"("n":2)"), "n", "only 1");
  expect_bad(Dialect::kChat, chat_body(R"("logprobs":true)"), "logprobs", "not supported");
  expect_bad(Dialect::kChat, chat_body(R"("top_logprobs":3)"), "top_logprobs", "not supported");
  expect_bad(Dialect::kChat, chat_body(R"("audio":{"voice":"x"})"), "audio", "not supported");
  expect_bad(Dialect::kChat, chat_body(R"("functions":[{"name":"f"}])"), "functions", "tools");
  expect_bad(Dialect::kChat, chat_body(R"("modalities":["text","audio"])"), "modalities[1]",
             "text");
  expect_bad(Dialect::kChat, chat_body(R"("prediction":{"type":"content"})"), "prediction", "");
}

TEST(ApiParseChat, BadJson) {
  expect_bad(Dialect::kChat, "{\"messages\": [", "", "invalid JSON request");
  expect_bad(Dialect::kChat, "[1,2]", "", "must be a JSON object");
  expect_bad(Dialect::kChat, "", "", "invalid JSON request");
  // nlohmann stops at a NUL byte: without the check this body parsed as {"messages":[...]}.
  const std::string body = chat_body("\"max_tokens\":5");
  expect_bad(Dialect::kChat, body + std::string("\0{", 2), "",
             "invalid JSON request: NUL byte at offset " + std::to_string(body.size()));
}

TEST(ApiParseChat, ParsedJsonOverload) {
  const Json j = Json::parse(chat_body(R"("max_tokens":5)"));
  const ParsedRequest r = parse_chat_completions(j, limits());
  EXPECT_EQ(r.gen.stop.max_tokens, 5);
}

TEST(ApiParseChat, RandomSeedWhenUnset) {
  ApiLimits l = limits();
  l.default_seed = 0;
  // Two draws: equal only with negligible probability; mostly checks that something is drawn.
  const uint64_t a = parse(Dialect::kChat, chat_body(""), l).gen.sampling.seed;
  const uint64_t b = parse(Dialect::kChat, chat_body(""), l).gen.sampling.seed;
  EXPECT_NE(a, b);
}

// ---------------------------------------------------------------------------------------------
// Completions.

TEST(ApiParseCompletions, Basic) {
  const ParsedRequest r = parse(Dialect::kCompletions, R"({"model":"m","prompt":"Once upon"})");
  EXPECT_EQ(r.dialect, Dialect::kCompletions);
  EXPECT_FALSE(r.gen.conversation);
  EXPECT_EQ(r.gen.raw_prompt, "Once upon");
  EXPECT_EQ(r.prompt, "Once upon");
  EXPECT_EQ(r.gen.stop.max_tokens, 16);  // OpenAI's default
  EXPECT_FALSE(r.thinking);
  EXPECT_FALSE(r.gen.parse_tool_calls);
  EXPECT_FALSE(r.gen.echo);
}

TEST(ApiParseCompletions, Fields) {
  const ParsedRequest r =
      parse(Dialect::kCompletions,
            R"({"prompt":["p"],"max_tokens":99,"echo":true,"stop":["\n"],"temperature":0,)"
            R"("top_k":5,"seed":3,"stream":true,"stream_options":{"include_usage":true},"n":1,)"
            R"("best_of":1,"suffix":""})");
  EXPECT_EQ(r.gen.raw_prompt, "p");
  EXPECT_EQ(r.gen.stop.max_tokens, 99);
  EXPECT_TRUE(r.gen.echo);
  EXPECT_EQ(r.gen.stop.stop_strings, std::vector<std::string>{"\n"});
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 0.0f);  // not thinking: kept
  EXPECT_EQ(r.gen.sampling.top_k, 5);
  EXPECT_EQ(r.gen.sampling.seed, 3u);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(ApiParseCompletions, Bad) {
  expect_bad(Dialect::kCompletions, R"({"model":"m"})", "prompt", "missing");
  expect_bad(Dialect::kCompletions, R"({"prompt":[1,2,3]})", "prompt", "only one prompt");
  expect_bad(Dialect::kCompletions, R"({"prompt":[[1,2,3]]})", "prompt[0]", "token-id");
  expect_bad(Dialect::kCompletions, R"({"prompt":[5]})", "prompt[0]", "token-id");
  expect_bad(Dialect::kCompletions, R"({"prompt":["a","b"]})", "prompt", "only one prompt");
  expect_bad(Dialect::kCompletions, R"({"prompt":5})", "prompt", "expected a string");
  expect_bad(Dialect::kCompletions, R"({"prompt":"a","suffix":"b"})", "suffix", "not supported");
  expect_bad(Dialect::kCompletions, R"({"prompt":"a","best_of":3})", "best_of", "only 1");
  expect_bad(Dialect::kCompletions, R"({"prompt":"a","logprobs":5})", "logprobs", "not supported");
  expect_bad(Dialect::kCompletions, R"({"prompt":"a","echo":"yes"})", "echo", "boolean");
  expect_bad(Dialect::kCompletions, R"({"prompt":"a","max_tokens":0})", "max_tokens", ">= 1");
  expect_bad(Dialect::kCompletions, R"({"prompt":"a","temperature":101})", "temperature",
             "must be");
}

// ---------------------------------------------------------------------------------------------
// Responses.

TEST(ApiParseResponses, StringInputAndInstructions) {
  const ParsedRequest r = parse(
      Dialect::kResponses,
      R"({"model":"m","input":"hello","instructions":"be brief","max_output_tokens":64,)"
      R"("temperature":0.3,"top_p":0.8,"store":false,"stream":true,"reasoning":{"effort":"none"}})");
  EXPECT_EQ(r.dialect, Dialect::kResponses);
  const auto& m = r.gen.conversation->messages;
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].role, Role::kSystem);
  EXPECT_EQ(m[0].content, "be brief");
  EXPECT_EQ(m[1].role, Role::kUser);
  EXPECT_EQ(m[1].content, "hello");
  EXPECT_EQ(r.gen.stop.max_tokens, 64);
  EXPECT_FALSE(r.thinking);
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 0.3f);
  EXPECT_FLOAT_EQ(r.gen.sampling.top_p, 0.8f);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(ApiParseResponses, Items) {
  const ParsedRequest r = parse(
      Dialect::kResponses,
      R"({"input":[{"role":"user","content":[{"type":"input_text","text":"list"},)"
      R"({"type":"input_text","text":" files"}]},)"
      R"({"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"sum"}],)"
      R"("content":[{"type":"reasoning_text","text":"full"}]},)"
      R"({"type":"function_call","call_id":"call_a","name":"ls","arguments":"{}"},)"
      R"({"type":"function_call","call_id":"call_b","name":"pwd","arguments":"{\"x\":1}"},)"
      R"({"type":"function_call_output","call_id":"call_a","output":"a.txt"},)"
      R"({"type":"function_call_output","call_id":"call_b","output":[{"type":"input_text","text":"/"}]},)"
      R"({"type":"message","role":"assistant","content":[{"type":"output_text","text":"done"}]}]})");
  const auto& m = r.gen.conversation->messages;
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[0].content, "list files");
  EXPECT_EQ(m[1].role, Role::kAssistant);
  EXPECT_EQ(m[1].reasoning_content, "full");
  ASSERT_EQ(m[1].tool_calls.size(), 2u);  // the second call merges into the same message
  EXPECT_EQ(m[1].tool_calls[0].id, "call_a");
  EXPECT_EQ(m[1].tool_calls[1].name, "pwd");
  EXPECT_EQ(m[1].tool_calls[1].arguments, R"({"x":1})");
  EXPECT_EQ(m[2].role, Role::kTool);
  EXPECT_EQ(m[2].tool_call_id, "call_a");
  EXPECT_EQ(m[2].content, "a.txt");
  EXPECT_EQ(m[3].content, "/");
  EXPECT_EQ(m[4].role, Role::kAssistant);
  EXPECT_EQ(m[4].content, "done");
}

TEST(ApiParseResponses, PendingReasoningFlushed) {
  const ParsedRequest r =
      parse(Dialect::kResponses,
            R"({"input":[{"type":"reasoning","summary":[{"type":"summary_text","text":"s"}]},)"
            R"({"role":"user","content":"next"}]})");
  const auto& m = r.gen.conversation->messages;
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].role, Role::kAssistant);
  EXPECT_EQ(m[0].reasoning_content, "s");
  EXPECT_EQ(m[1].content, "next");
}

TEST(ApiParseResponses, ToolsAndChoiceAndFormat) {
  const ParsedRequest r = parse(
      Dialect::kResponses,
      R"({"input":"x","tools":[{"type":"function","name":"f","description":"d",)"
      R"("parameters":{"type":"object"},"strict":true}],"tool_choice":{"type":"function","name":"f"},)"
      R"("text":{"format":{"type":"json_schema","name":"out","schema":{"type":"object"}}},)"
      R"("reasoning":{"effort":"high","summary":"auto"}})");
  ASSERT_EQ(r.gen.conversation->tools.size(), 1u);
  EXPECT_EQ(r.gen.conversation->tools[0].function_json,
            R"({"name":"f","description":"d","parameters":{"type":"object"},"strict":true})");
  EXPECT_EQ(r.gen.tool_choice.kind, ToolChoice::Kind::kFunction);
  EXPECT_EQ(r.gen.tool_choice.function, "f");
  EXPECT_TRUE(r.has_tools);
  EXPECT_TRUE(r.thinking);
  EXPECT_TRUE(r.reasoning_summary);
  EXPECT_EQ(r.gen.render.effort, ReasoningEffort::kHigh);
  ASSERT_EQ(r.gen.conversation->messages.size(), 2u);
  EXPECT_EQ(r.gen.conversation->messages[0].response_format,
            R"({"type":"json_schema","json_schema":{"name":"out","schema":{"type":"object"}}})");
}

TEST(ApiParseResponses, Bad) {
  expect_bad(Dialect::kResponses, R"({"model":"m"})", "input", "missing");
  expect_bad(Dialect::kResponses, R"({"input":"x","previous_response_id":"resp_1"})",
             "previous_response_id", "replay the full input");
  expect_bad(Dialect::kResponses, R"({"input":"x","conversation":"c"})", "conversation",
             "not supported");
  expect_bad(Dialect::kResponses,
             R"({"input":[{"role":"user","content":[{"type":"input_text","text":"a"},)"
             R"({"type":"input_image","image_url":"u"}]}]})",
             "input[0].content[1].type", "input_image");
  expect_bad(Dialect::kResponses, R"({"input":[{"type":"web_search_call"}]})", "input[0].type",
             "unsupported input item type");
  expect_bad(Dialect::kResponses, R"({"input":[{"type":"function_call_output","output":"x"}]})",
             "input[0].call_id", "missing");
  expect_bad(Dialect::kResponses, R"({"input":[{"type":"function_call","call_id":"c"}]})",
             "input[0].name", "missing");
  expect_bad(Dialect::kResponses, R"({"input":[{"role":"robot","content":"x"}]})", "input[0].role",
             "unknown role");
  expect_bad(Dialect::kResponses, R"({"input":5})", "input", "expected an array");
  expect_bad(Dialect::kResponses, R"({"input":"x","tools":[{"type":"custom","name":"p"}]})",
             "tools[0].type", "unsupported tool type");
  expect_bad(Dialect::kResponses, R"({"input":"x","tools":[{"type":"function"}]})", "tools[0].name",
             "missing");
  expect_bad(Dialect::kResponses, R"({"input":"x","reasoning":{"effort":"huge"}})",
             "reasoning.effort", "unknown reasoning effort");
  expect_bad(Dialect::kResponses, R"({"input":"x","reasoning":{"summary":"long"}})",
             "reasoning.summary", "unknown value");
  expect_bad(Dialect::kResponses, R"({"input":"x","max_output_tokens":0})", "max_output_tokens",
             ">= 1");
  expect_bad(Dialect::kResponses, R"({"input":"x","top_p":2})", "top_p", "must be");
  expect_bad(Dialect::kResponses, R"({"input":"x","text":{"format":{"type":"yaml"}}})",
             "text.format.type", "unknown value");
  expect_bad(Dialect::kResponses, R"({"input":"x","background":true})", "background", "");
}

TEST(ApiParseResponses, HostedToolsDropped) {
  const ParsedRequest r = parse(
      Dialect::kResponses,
      R"({"input":"x","tools":[{"type":"web_search_preview"},{"type":"function","name":"f"}]})");
  ASSERT_EQ(r.gen.conversation->tools.size(), 1u);
  EXPECT_EQ(r.gen.conversation->tools[0].name, "f");
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("web_search_preview"), std::string::npos);
}

TEST(ApiParseResponses, EncryptedOnlyReasoningAddsNothing) {
  const ParsedRequest r =
      parse(Dialect::kResponses,
            R"({"input":[{"role":"user","content":"a"},{"type":"reasoning","summary":[],)"
            R"("encrypted_content":"gAAA"},{"role":"user","content":"b"}]})");
  const auto& m = r.gen.conversation->messages;
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].content, "a");
  EXPECT_EQ(m[1].content, "b");
}

TEST(ApiParseResponses, TooManyItems) {
  ApiLimits l = limits();
  l.max_messages = 1;
  expect_bad(Dialect::kResponses,
             R"({"input":[{"role":"user","content":"a"},{"role":"user","content":"b"}]})", "input",
             "too many", l);
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages.

TEST(ApiParseMessages, Basic) {
  const ParsedRequest r = parse(
      Dialect::kMessages,
      R"({"model":"claude","max_tokens":256,"system":"be nice","messages":[{"role":"user","content":"hi"}],)"
      R"("stop_sequences":["###"],"temperature":0.7,"top_p":0.9,"top_k":20,"stream":true,)"
      R"("metadata":{"user_id":"u7"}})");
  EXPECT_EQ(r.dialect, Dialect::kMessages);
  const auto& m = r.gen.conversation->messages;
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].role, Role::kSystem);
  EXPECT_EQ(m[0].content, "be nice");
  EXPECT_EQ(m[1].content, "hi");
  EXPECT_EQ(r.gen.stop.max_tokens, 256);
  EXPECT_EQ(r.gen.stop.stop_strings, std::vector<std::string>{"###"});
  EXPECT_FALSE(r.thinking);  // Anthropic: off unless enabled
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 0.7f);
  EXPECT_EQ(r.gen.sampling.top_k, 20);
  EXPECT_TRUE(r.stream);
  EXPECT_EQ(r.user, "u7");
  EXPECT_FALSE(r.count_only);
}

TEST(ApiParseMessages, Thinking) {
  const std::string base = R"({"max_tokens":10,"messages":[{"role":"user","content":"hi"}])";
  EXPECT_TRUE(
      parse(Dialect::kMessages, base + R"(,"thinking":{"type":"enabled","budget_tokens":2048}})")
          .thinking);
  EXPECT_FALSE(parse(Dialect::kMessages, base + R"(,"thinking":{"type":"disabled"}})").thinking);
  EXPECT_FALSE(parse(Dialect::kMessages, base + "}").thinking);
  EXPECT_TRUE(parse(Dialect::kMessages, base + R"(,"model":"deepseek-reasoner"})").thinking);
  const ParsedRequest r =
      parse(Dialect::kMessages,
            base + R"(,"thinking":{"type":"enabled"},"output_config":{"effort":"max"}})");
  EXPECT_EQ(r.gen.render.effort, ReasoningEffort::kMax);
  expect_bad(Dialect::kMessages, base + R"(,"thinking":{"type":"maybe"}})", "thinking.type",
             "unknown value");
  expect_bad(Dialect::kMessages, base + R"(,"thinking":{"type":"enabled","budget_tokens":"x"}})",
             "thinking.budget_tokens", "integer");
}

TEST(ApiParseMessages, SystemBlocks) {
  const ParsedRequest r = parse(
      Dialect::kMessages,
      R"({"max_tokens":10,"system":[{"type":"text","text":"x-anthropic-billing-header: abc"},)"
      R"({"type":"text","text":"one","cache_control":{"type":"ephemeral"}},{"type":"text","text":"two"}],)"
      R"("messages":[{"role":"user","content":"hi"}]})");
  EXPECT_EQ(r.gen.conversation->messages[0].content, "one\ntwo");
}

TEST(ApiParseMessages, ToolUseAndResults) {
  const ParsedRequest r = parse(
      Dialect::kMessages,
      R"({"max_tokens":100,"tools":[{"name":"bash","description":"run",)"
      R"("input_schema":{"type":"object","properties":{"cmd":{"type":"string"}}}}],)"
      R"("tool_choice":{"type":"any"},"messages":[)"
      R"({"role":"user","content":"go"},)"
      R"({"role":"assistant","content":[{"type":"thinking","thinking":"plan","signature":"s"},)"
      R"({"type":"redacted_thinking","data":"zzz"},)"
      R"({"type":"text","text":"ok"},{"type":"tool_use","id":"toolu_1","name":"bash","input":{"cmd":"ls","n":2}},)"
      R"({"type":"tool_use","id":"toolu_2","name":"bash","input":{}}]},)"
      R"({"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"a b"},)"
      R"({"type":"tool_result","tool_use_id":"toolu_2","is_error":true,)"
      R"("content":[{"type":"text","text":"no"},{"type":"text","text":"pe"}]},)"
      R"({"type":"text","text":"continue"}]}]})");
  const auto& m = r.gen.conversation->messages;
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[1].role, Role::kAssistant);
  EXPECT_EQ(m[1].reasoning_content, "plan");
  EXPECT_EQ(m[1].content, "ok");
  ASSERT_EQ(m[1].tool_calls.size(), 2u);
  EXPECT_EQ(m[1].tool_calls[0].id, "toolu_1");
  EXPECT_EQ(m[1].tool_calls[0].arguments, R"({"cmd":"ls","n":2})");
  EXPECT_EQ(m[1].tool_calls[1].arguments, "{}");
  EXPECT_EQ(m[2].role, Role::kTool);
  EXPECT_EQ(m[2].tool_call_id, "toolu_1");
  EXPECT_EQ(m[2].content, "a b");
  EXPECT_EQ(m[3].tool_call_id, "toolu_2");
  EXPECT_EQ(m[3].content, "Error: nope");
  EXPECT_EQ(m[4].role, Role::kUser);
  EXPECT_EQ(m[4].content, "continue");
  ASSERT_EQ(r.gen.conversation->tools.size(), 1u);
  EXPECT_EQ(r.gen.conversation->tools[0].function_json,
            R"({"name":"bash","description":"run","parameters":{"type":"object",)"
            R"("properties":{"cmd":{"type":"string"}}}})");
  EXPECT_EQ(r.gen.tool_choice.kind, ToolChoice::Kind::kRequired);
  EXPECT_TRUE(r.gen.parse_tool_calls);
}

TEST(ApiParseMessages, ToolChoice) {
  const std::string base =
      R"({"max_tokens":10,"messages":[{"role":"user","content":"hi"}],)"
      R"("tools":[{"name":"t","input_schema":{"type":"object"}}],"tool_choice":)";
  ParsedRequest r = parse(Dialect::kMessages, base + R"({"type":"tool","name":"t"}})");
  EXPECT_EQ(r.gen.tool_choice.kind, ToolChoice::Kind::kFunction);
  EXPECT_EQ(r.gen.tool_choice.function, "t");
  r = parse(Dialect::kMessages, base + R"({"type":"none"}})");
  EXPECT_EQ(r.gen.tool_choice.kind, ToolChoice::Kind::kNone);
  r = parse(Dialect::kMessages, base + R"({"type":"auto","disable_parallel_tool_use":true}})");
  EXPECT_EQ(r.gen.tool_choice.kind, ToolChoice::Kind::kAuto);
  EXPECT_FALSE(r.parallel_tool_calls);
  expect_bad(Dialect::kMessages, base + R"({"type":"tool","name":"u"}})", "tool_choice.name",
             "no tool named");
  expect_bad(Dialect::kMessages, base + R"({"type":"all"}})", "tool_choice.type", "unknown value");
  expect_bad(Dialect::kMessages, base + R"("auto"})", "tool_choice", "expected an object");
}

TEST(ApiParseMessages, Bad) {
  const std::string msgs = R"("messages":[{"role":"user","content":"hi"}])";
  expect_bad(Dialect::kMessages, "{" + msgs + "}", "max_tokens", "required");
  expect_bad(Dialect::kMessages, R"({"max_tokens":5})", "messages", "missing");
  expect_bad(Dialect::kMessages, R"({"max_tokens":0,)" + msgs + "}", "max_tokens", ">= 1");
  expect_bad(Dialect::kMessages, R"({"max_tokens":"5",)" + msgs + "}", "max_tokens",
             "expected an integer");
  expect_bad(Dialect::kMessages,
             R"({"max_tokens":5,"messages":[{"role":"user","content":[{"type":"image",)"
             R"("source":{"type":"base64","data":"x"}}]}]})",
             "messages[0].content[0].type", "unsupported content type \"image\"");
  expect_bad(Dialect::kMessages, R"({"max_tokens":5,"messages":[{"role":"system","content":"x"}]})",
             "messages[0].role", "unknown role");
  expect_bad(Dialect::kMessages,
             R"({"max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_use",)"
             R"("id":"a","name":"b","input":{}}]}]})",
             "messages[0].content[0].type", "tool_use");
  expect_bad(Dialect::kMessages,
             R"({"max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result",)"
             R"("tool_use_id":"a","content":[{"type":"image"}]}]}]})",
             "messages[0].content[0].content[0].type", "image");
  expect_bad(Dialect::kMessages,
             R"({"max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result"}]}]})",
             "messages[0].content[0].tool_use_id", "missing");
  expect_bad(Dialect::kMessages, R"({"max_tokens":5,"messages":[{"role":"user"}]})",
             "messages[0].content", "missing");
  expect_bad(Dialect::kMessages, R"({"max_tokens":5,"stop_sequences":"x",)" + msgs + "}",
             "stop_sequences", "");
  expect_bad(Dialect::kMessages, R"({"max_tokens":5,"stop_sequences":[""],)" + msgs + "}",
             "stop_sequences", "bytes");
  expect_bad(Dialect::kMessages, R"({"max_tokens":5,"temperature":-0.5,)" + msgs + "}",
             "temperature", "must be");
  expect_bad(Dialect::kMessages, R"({"max_tokens":5,"system":[{"type":"image"}],)" + msgs + "}",
             "system[0].type", "unsupported system block type");
  expect_bad(Dialect::kMessages,
             R"({"max_tokens":5,"tools":[{"type":"web_search_20250305","name":"web_search"}],)" +
                 msgs + "}",
             "tools[0].type", "unsupported tool type");
  expect_bad(Dialect::kMessages, R"({"max_tokens":5,"tools":[{"name":"x"}],)" + msgs + "}",
             "tools[0].input_schema", "missing");
}

TEST(ApiParseMessages, ContentForms) {
  const ParsedRequest r =
      parse(Dialect::kMessages,
            R"({"max_tokens":5,"messages":[{"role":"user","content":[]},)"
            R"({"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},)"
            R"({"role":"assistant","content":""}]})");
  const auto& m = r.gen.conversation->messages;
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].content, "");
  EXPECT_EQ(m[1].content, "ab");
  EXPECT_EQ(m[2].role, Role::kAssistant);
}

TEST(ApiParseMessages, CountTokens) {
  const ParsedRequest r = parse_count_tokens(
      Json::parse(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})"), limits());
  EXPECT_TRUE(r.count_only);
  EXPECT_EQ(r.gen.stop.max_tokens, -1);
  EXPECT_EQ(r.gen.conversation->messages.size(), 1u);
  EXPECT_THROW(parse_count_tokens(Json::parse(R"({"model":"m"})"), limits()), ApiException);
}

TEST(ApiParseMessages, TooManyMessages) {
  ApiLimits l = limits();
  l.max_messages = 1;
  expect_bad(
      Dialect::kMessages,
      R"({"max_tokens":5,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]})",
      "messages", "too many", l);
}

}  // namespace
}  // namespace dsv4::server
