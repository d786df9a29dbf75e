// Response writers: event sequences -> exact JSON fields and SSE framing for each dialect, error
// bodies, and a chat / Anthropic response -> follow-up request round trip.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "server/api_parse.h"
#include "server/api_write.h"

namespace dsv4::server {
namespace {

using engine::FinishReason;
using engine::GenEvent;
using Kind = GenEvent::Kind;
using J = nlohmann::json;

GenEvent ev(Kind k, std::string text = {}) {
  GenEvent e;
  e.kind = k;
  e.text = std::move(text);
  return e;
}
GenEvent started(int64_t prompt = 120, int64_t cached = 100) {
  GenEvent e = ev(Kind::kStarted);
  e.usage.prompt_tokens = prompt;
  e.usage.cached_tokens = cached;
  return e;
}
GenEvent call_start(size_t i, std::string id, std::string name) {
  GenEvent e = ev(Kind::kToolCallStart);
  e.index = i;
  e.id = std::move(id);
  e.name = std::move(name);
  return e;
}
GenEvent call_args(size_t i, std::string text) {
  GenEvent e = ev(Kind::kToolCallArgs, std::move(text));
  e.index = i;
  return e;
}
GenEvent call_end(size_t i, std::string id, std::string name, std::string args) {
  GenEvent e = ev(Kind::kToolCallEnd);
  e.index = i;
  e.id = std::move(id);
  e.name = std::move(name);
  e.arguments = std::move(args);
  return e;
}
GenEvent done(FinishReason f, int64_t completion = 30, std::string text = {}) {
  GenEvent e = ev(Kind::kDone, std::move(text));
  e.finish = f;
  e.usage.prompt_tokens = 120;
  e.usage.cached_tokens = 100;
  e.usage.completion_tokens = completion;
  e.usage.reasoning_tokens = 10;
  return e;
}

ParsedRequest req(Dialect d, bool stream, bool include_usage = false) {
  ParsedRequest r;
  r.dialect = d;
  r.stream = stream;
  r.include_usage = include_usage;
  return r;
}
WriterMeta meta(std::string id) {
  return WriterMeta{std::move(id), "deepseek-v4-flash", 1795362307};
}

// Feeds events; returns the concatenated bytes.
std::string feed(ResponseWriter& w, const std::vector<GenEvent>& evs) {
  std::string out;
  for (const GenEvent& e : evs) out += w.on_event(e);
  return out;
}

struct Sse {
  std::string event;  // "" when the frame has no event line
  std::string data;
  J json() const { return J::parse(data); }
};

// Splits an SSE byte stream into frames; every frame must end with a blank line and have one
// data line.
std::vector<Sse> frames(const std::string& s) {
  std::vector<Sse> out;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t end = s.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated frame: " << s.substr(pos);
    if (end == std::string::npos) break;
    const std::string f = s.substr(pos, end - pos);
    Sse e;
    size_t lp = 0;
    int data_lines = 0;
    while (lp <= f.size()) {
      size_t le = f.find('\n', lp);
      if (le == std::string::npos) le = f.size();
      const std::string line = f.substr(lp, le - lp);
      if (line.rfind("event: ", 0) == 0) {
        e.event = line.substr(7);
      } else if (line.rfind("data: ", 0) == 0) {
        e.data = line.substr(6);
        ++data_lines;
      } else {
        ADD_FAILURE() << "unexpected line: " << line;
      }
      lp = le + 1;
    }
    EXPECT_EQ(data_lines, 1) << f;
    out.push_back(e);
    pos = end + 2;
  }
  return out;
}

std::vector<std::string> types(const std::vector<Sse>& fs) {
  std::vector<std::string> t;
  for (const Sse& f : fs) t.push_back(f.event.empty() ? f.json().value("type", "") : f.event);
  return t;
}

// ---------------------------------------------------------------------------------------------
// Chat completions.

TEST(ApiWriteChat, NonStreamReasoningContent) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, false), meta("chatcmpl-1"));
  const std::string bytes =
      feed(*w, {ev(Kind::kQueued), started(), ev(Kind::kReasoning, "I need "),
                ev(Kind::kReasoning, "to think."), ev(Kind::kContent, "Hello"),
                ev(Kind::kContent, " there"), done(FinishReason::kStop)});
  EXPECT_EQ(bytes, "");
  EXPECT_TRUE(w->done());
  EXPECT_EQ(w->final_status(), 200);
  EXPECT_EQ(
      w->final_body(),
      R"({"id":"chatcmpl-1","object":"chat.completion","created":1795362307,"model":"deepseek-v4-flash",)"
      R"("choices":[{"index":0,"message":{"role":"assistant","content":"Hello there",)"
      R"("reasoning_content":"I need to think."},"logprobs":null,"finish_reason":"stop"}],)"
      R"("usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,)"
      R"("prompt_tokens_details":{"cached_tokens":100,"cache_write_tokens":20},)"
      R"("completion_tokens_details":{"reasoning_tokens":10}}})");
}

TEST(ApiWriteChat, NonStreamNoReasoningField) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, false), meta("c"));
  feed(*w, {started(), done(FinishReason::kLength, 0)});
  const J j = J::parse(w->final_body());
  EXPECT_EQ(j["choices"][0]["message"]["content"], "");
  EXPECT_FALSE(j["choices"][0]["message"].contains("reasoning_content"));
  EXPECT_FALSE(j["choices"][0]["message"].contains("tool_calls"));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
}

TEST(ApiWriteChat, StreamReasoningContent) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, true, true), meta("chatcmpl-2"));
  EXPECT_EQ(w->on_event(ev(Kind::kQueued)), "");
  const std::string open = w->on_event(started());
  EXPECT_EQ(open,
            "data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"created\":"
            "1795362307,\"model\":\"deepseek-v4-flash\",\"choices\":[{\"index\":0,\"delta\":"
            "{\"role\":\"assistant\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
  EXPECT_EQ(w->on_event(ev(Kind::kContent, "")), "");  // empty deltas are not sent
  const std::string rest = feed(*w, {ev(Kind::kReasoning, "hmm"), ev(Kind::kContent, "A"),
                                     ev(Kind::kContent, "B"), done(FinishReason::kStop)});
  const auto fs = frames(rest);
  ASSERT_EQ(fs.size(), 6u);
  EXPECT_EQ(fs[0].json()["choices"][0]["delta"], (J{{"reasoning_content", "hmm"}}));
  EXPECT_EQ(fs[1].json()["choices"][0]["delta"], (J{{"content", "A"}}));
  EXPECT_EQ(fs[2].json()["choices"][0]["delta"], (J{{"content", "B"}}));
  EXPECT_TRUE(fs[2].json()["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(fs[3].json()["choices"][0]["delta"], J::object());
  EXPECT_EQ(fs[3].json()["choices"][0]["finish_reason"], "stop");
  const J usage = fs[4].json();
  EXPECT_EQ(usage["choices"], J::array());
  EXPECT_EQ(usage["usage"]["prompt_tokens"], 120);
  EXPECT_EQ(usage["usage"]["total_tokens"], 150);
  EXPECT_EQ(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
  EXPECT_EQ(usage["usage"]["completion_tokens_details"]["reasoning_tokens"], 10);
  EXPECT_EQ(fs[5].data, "[DONE]");
  // Nothing after kDone.
  EXPECT_EQ(w->on_event(ev(Kind::kContent, "late")), "");
}

TEST(ApiWriteChat, StreamWithoutUsageEndsWithDone) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, true, false), meta("c"));
  const std::string s = feed(*w, {started(), ev(Kind::kContent, "x"), done(FinishReason::kStop)});
  const auto fs = frames(s);
  ASSERT_EQ(fs.size(), 4u);
  EXPECT_EQ(fs[2].json()["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(fs[3].data, "[DONE]");
  EXPECT_EQ(s.substr(s.size() - 14), "data: [DONE]\n\n");
}

TEST(ApiWriteChat, StreamToolCalls) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, true), meta("c"));
  const std::string s =
      feed(*w, {started(), ev(Kind::kContent, "Let me check."), call_start(0, "call_abc", "bash"),
                call_args(0, "{\"command\": "), call_args(0, "\"ls\"}"),
                call_end(0, "call_abc", "bash", "{\"command\": \"ls\"}"),
                call_start(1, "call_def", "pwd"), call_end(1, "call_def", "pwd", "{}"),
                done(FinishReason::kToolCalls)});
  const auto fs = frames(s);
  ASSERT_EQ(fs.size(), 9u);
  const J h0 = fs[2].json()["choices"][0]["delta"]["tool_calls"][0];
  EXPECT_EQ(h0, J::parse(R"({"index":0,"id":"call_abc","type":"function",)"
                         R"("function":{"name":"bash","arguments":""}})"));
  EXPECT_EQ(fs[3].json()["choices"][0]["delta"]["tool_calls"][0],
            J::parse(R"({"index":0,"function":{"arguments":"{\"command\": "}})"));
  EXPECT_EQ(fs[4].json()["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "\"ls\"}");
  // The second call had no argument deltas: its arguments come whole at its end.
  EXPECT_EQ(fs[5].json()["choices"][0]["delta"]["tool_calls"][0]["id"], "call_def");
  EXPECT_EQ(fs[5].json()["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
  EXPECT_EQ(fs[6].json()["choices"][0]["delta"]["tool_calls"][0],
            J::parse(R"({"index":1,"function":{"arguments":"{}"}})"));
  EXPECT_EQ(fs[7].json()["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(fs[8].data, "[DONE]");
}

TEST(ApiWriteChat, ArgsRemainderAtEnd) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, true), meta("c"));
  const auto fs =
      frames(feed(*w, {started(), call_start(0, "call_1", "f"), call_args(0, "{\"a\""),
                       call_end(0, "call_1", "f", "{\"a\": 1}"), done(FinishReason::kToolCalls)}));
  ASSERT_EQ(fs.size(), 6u);
  EXPECT_EQ(fs[2].json()["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\"");
  EXPECT_EQ(fs[3].json()["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], ": 1}");
}

TEST(ApiWriteChat, MissingCallIdGetsFallback) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, false), meta("chatcmpl-7"));
  feed(*w, {started(), call_end(0, "", "f", "{}"), done(FinishReason::kToolCalls)});
  const J j = J::parse(w->final_body());
  EXPECT_EQ(j["choices"][0]["message"]["tool_calls"][0]["id"], "chatcmpl-7_call_0");
  EXPECT_EQ(j["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "f");
}

TEST(ApiWriteChat, ToolCallsForceFinishReason) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, false), meta("c"));
  feed(*w, {started(), call_start(0, "call_1", "f"), call_end(0, "call_1", "f", "{\"a\":1}"),
            done(FinishReason::kStop)});
  const J j = J::parse(w->final_body());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(
      j["choices"][0]["message"]["tool_calls"],
      J::parse(
          R"([{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}])"));
}

TEST(ApiWriteChat, IncompleteCallNotReported) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, false), meta("c"));
  feed(*w, {started(), call_start(0, "call_1", "f"), call_args(0, "{\"a\""),
            done(FinishReason::kLength)});
  const J j = J::parse(w->final_body());
  EXPECT_FALSE(j["choices"][0]["message"].contains("tool_calls"));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
}

TEST(ApiWriteChat, ErrorStreamAndBody) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, true), meta("c"));
  const std::string s = feed(*w, {started(), ev(Kind::kContent, "x"), ev(Kind::kError, "boom"),
                                  done(FinishReason::kError)});
  const auto fs = frames(s);
  ASSERT_EQ(fs.size(), 4u);
  EXPECT_EQ(fs[2].json(), J::parse(R"({"error":{"message":"boom","type":"server_error",)"
                                   R"("param":null,"code":null}})"));
  EXPECT_EQ(fs[3].data, "[DONE]");
  auto n = make_writer(Dialect::kChat, req(Dialect::kChat, false), meta("c"));
  feed(*n, {started(), ev(Kind::kError, "boom"), done(FinishReason::kError)});
  EXPECT_EQ(n->final_status(), 500);
  EXPECT_EQ(J::parse(n->final_body())["error"]["message"], "boom");
}

TEST(ApiWriteChat, CancelledReportsStop) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, false), meta("c"));
  feed(*w, {started(), ev(Kind::kContent, "x"), done(FinishReason::kCancelled)});
  EXPECT_EQ(J::parse(w->final_body())["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(w->final_status(), 200);
}

TEST(ApiWriteChat, OpensWithoutStarted) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, true), meta("c"));
  const auto fs = frames(w->on_event(ev(Kind::kContent, "x")));
  ASSERT_EQ(fs.size(), 2u);
  EXPECT_EQ(fs[0].json()["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(fs[1].json()["choices"][0]["delta"]["content"], "x");
}

TEST(ApiWriteChat, InvalidUtf8IsReplaced) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, false), meta("c"));
  feed(*w, {started(), ev(Kind::kContent, "a\xff"), done(FinishReason::kStop)});
  EXPECT_EQ(J::parse(w->final_body())["choices"][0]["message"]["content"], "a\xEF\xBF\xBD");
}

// A chat answer with tool calls, fed back in a follow-up request, yields the same calls.
TEST(ApiWriteChat, RoundTripToolCalls) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, false), meta("c"));
  const std::string args = "{\"path\": \"a&b <c>.txt\", \"n\": 2}";
  feed(*w, {started(), ev(Kind::kReasoning, "r"), ev(Kind::kContent, "ok"),
            call_start(0, "call_XYZ123", "read"), call_args(0, args),
            call_end(0, "call_XYZ123", "read", args), done(FinishReason::kToolCalls)});
  const Json body = Json::parse(w->final_body());
  Json follow = Json::object();
  follow["messages"] = Json::array();
  follow["messages"].push_back({{"role", "user"}, {"content", "read it"}});
  follow["messages"].push_back(body["choices"][0]["message"]);
  follow["messages"].push_back(
      {{"role", "tool"}, {"tool_call_id", "call_XYZ123"}, {"content", "data"}});
  ApiLimits l;
  l.default_seed = 1;
  const ParsedRequest r = parse_chat_completions(follow, l);
  const auto& m = r.gen.conversation->messages;
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[1].content, "ok");
  EXPECT_EQ(m[1].reasoning_content, "r");
  ASSERT_EQ(m[1].tool_calls.size(), 1u);
  EXPECT_EQ(m[1].tool_calls[0].id, "call_XYZ123");
  EXPECT_EQ(m[1].tool_calls[0].name, "read");
  EXPECT_EQ(m[1].tool_calls[0].arguments, args);
  EXPECT_EQ(m[2].tool_call_id, "call_XYZ123");
}

// The same through a stream: the client accumulates the deltas as the openai SDK does.
TEST(ApiWriteChat, RoundTripStreamAccumulated) {
  auto w = make_writer(Dialect::kChat, req(Dialect::kChat, true), meta("c"));
  const std::string s =
      feed(*w, {started(), call_start(0, "call_Q", "f"), call_args(0, "{\"x\""),
                call_args(0, ": [1, 2]}"), call_end(0, "call_Q", "f", "{\"x\": [1, 2]}"),
                done(FinishReason::kToolCalls)});
  std::string id, name, arguments;
  for (const Sse& f : frames(s)) {
    if (f.data == "[DONE]") continue;
    const J d = f.json()["choices"][0]["delta"];
    if (!d.contains("tool_calls")) continue;
    const J tc = d["tool_calls"][0];
    if (tc.contains("id")) id = tc["id"];
    if (tc["function"].contains("name")) name = tc["function"]["name"];
    arguments += tc["function"]["arguments"].get<std::string>();
  }
  EXPECT_EQ(id, "call_Q");
  EXPECT_EQ(name, "f");
  EXPECT_EQ(arguments, "{\"x\": [1, 2]}");
}

// ---------------------------------------------------------------------------------------------
// Completions.

TEST(ApiWriteCompletions, NonStream) {
  auto w = make_writer(Dialect::kCompletions, req(Dialect::kCompletions, false), meta("cmpl-1"));
  feed(*w, {started(5, 0), ev(Kind::kContent, "Hello"), ev(Kind::kContent, " world"),
            done(FinishReason::kLength, 16)});
  EXPECT_EQ(
      w->final_body(),
      R"({"id":"cmpl-1","object":"text_completion","created":1795362307,"model":"deepseek-v4-flash",)"
      R"("choices":[{"text":"Hello world","index":0,"logprobs":null,"finish_reason":"length"}],)"
      R"("usage":{"prompt_tokens":120,"completion_tokens":16,"total_tokens":136,)"
      R"("prompt_tokens_details":{"cached_tokens":100,"cache_write_tokens":20},)"
      R"("completion_tokens_details":{"reasoning_tokens":10}}})");
}

TEST(ApiWriteCompletions, Stream) {
  auto w =
      make_writer(Dialect::kCompletions, req(Dialect::kCompletions, true, true), meta("cmpl-2"));
  const std::string s = feed(
      *w, {started(), ev(Kind::kContent, "a"), ev(Kind::kContent, "b"), done(FinishReason::kStop)});
  const auto fs = frames(s);
  ASSERT_EQ(fs.size(), 5u);
  EXPECT_EQ(fs[0].json()["object"], "text_completion");
  EXPECT_EQ(fs[0].json()["choices"][0]["text"], "a");
  EXPECT_TRUE(fs[0].json()["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(fs[1].json()["choices"][0]["text"], "b");
  EXPECT_EQ(fs[2].json()["choices"][0]["text"], "");
  EXPECT_EQ(fs[2].json()["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(fs[3].json()["choices"], J::array());
  EXPECT_EQ(fs[3].json()["usage"]["completion_tokens"], 30);
  EXPECT_EQ(fs[4].data, "[DONE]");
}

TEST(ApiWriteCompletions, Error) {
  auto w = make_writer(Dialect::kCompletions, req(Dialect::kCompletions, true), meta("c"));
  const auto fs =
      frames(feed(*w, {started(), ev(Kind::kError, "oom"), done(FinishReason::kError)}));
  ASSERT_EQ(fs.size(), 2u);
  EXPECT_EQ(fs[0].json()["error"]["message"], "oom");
  EXPECT_EQ(fs[1].data, "[DONE]");
}

// ---------------------------------------------------------------------------------------------
// Responses.

TEST(ApiWriteResponses, StreamFull) {
  auto w = make_writer(Dialect::kResponses, req(Dialect::kResponses, true), meta("resp_abc"));
  const std::string s =
      feed(*w, {ev(Kind::kQueued), started(), ev(Kind::kReasoning, "think"),
                ev(Kind::kContent, "Hi"), ev(Kind::kContent, "!"), call_start(0, "call_1", "bash"),
                call_args(0, "{\"c\":"), call_args(0, "1}"),
                call_end(0, "call_1", "bash", "{\"c\":1}"), done(FinishReason::kToolCalls)});
  const auto fs = frames(s);
  const std::vector<std::string> expect = {
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
      "response.reasoning_text.delta",
      "response.reasoning_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.output_item.added",
      "response.content_part.added",
      "response.output_text.delta",
      "response.output_text.delta",
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.output_item.added",
      "response.function_call_arguments.delta",
      "response.function_call_arguments.delta",
      "response.function_call_arguments.done",
      "response.output_item.done",
      "response.completed",
  };
  EXPECT_EQ(types(fs), expect);
  for (size_t i = 0; i < fs.size(); ++i) {
    const J j = fs[i].json();
    EXPECT_EQ(j["type"], fs[i].event);  // event line = type
    EXPECT_EQ(j["sequence_number"], i);
    // "type" first, "sequence_number" second.
    EXPECT_EQ(fs[i].data.find("{\"type\":"), 0u);
    EXPECT_NE(fs[i].data.find("\",\"sequence_number\":"), std::string::npos);
  }
  const J created = fs[0].json()["response"];
  EXPECT_EQ(created["id"], "resp_abc");
  EXPECT_EQ(created["status"], "in_progress");
  EXPECT_EQ(created["output"], J::array());
  const J radded = fs[2].json();
  EXPECT_EQ(radded["output_index"], 0);
  EXPECT_EQ(radded["item"]["type"], "reasoning");
  EXPECT_EQ(radded["item"]["id"], "rs_abc_0");
  EXPECT_EQ(fs[4].json()["delta"], "think");
  EXPECT_EQ(fs[4].json()["item_id"], "rs_abc_0");
  EXPECT_EQ(fs[10].json()["delta"], "Hi");
  EXPECT_EQ(fs[10].json()["output_index"], 1);
  EXPECT_EQ(fs[10].json()["content_index"], 0);
  EXPECT_EQ(fs[12].json()["text"], "Hi!");
  const J fadded = fs[15].json()["item"];
  EXPECT_EQ(fadded["type"], "function_call");
  EXPECT_EQ(fadded["call_id"], "call_1");
  EXPECT_EQ(fadded["name"], "bash");
  EXPECT_EQ(fadded["arguments"], "");
  EXPECT_EQ(fs[18].json()["arguments"], "{\"c\":1}");
  const J fdone = fs[19].json()["item"];
  EXPECT_EQ(fdone["status"], "completed");
  EXPECT_EQ(fdone["arguments"], "{\"c\":1}");
  const J fin = fs[20].json()["response"];
  EXPECT_EQ(fin["status"], "completed");
  ASSERT_EQ(fin["output"].size(), 3u);
  EXPECT_EQ(fin["output"][0]["content"][0]["text"], "think");
  EXPECT_EQ(fin["output"][1]["content"][0],
            J::parse(R"({"type":"output_text","text":"Hi!","annotations":[]})"));
  EXPECT_EQ(fin["output"][2]["arguments"], "{\"c\":1}");
  EXPECT_EQ(fin["usage"],
            J::parse(R"({"input_tokens":120,"input_tokens_details":{"cached_tokens":100},)"
                     R"("output_tokens":30,"output_tokens_details":{"reasoning_tokens":10},)"
                     R"("total_tokens":150})"));
}

TEST(ApiWriteResponses, SummaryEvents) {
  ParsedRequest r = req(Dialect::kResponses, true);
  r.reasoning_summary = true;
  auto w = make_writer(Dialect::kResponses, r, meta("resp_x"));
  const auto fs = frames(feed(*w, {started(), ev(Kind::kReasoning, "a"), ev(Kind::kReasoning, "b"),
                                   ev(Kind::kContent, "c"), done(FinishReason::kStop)}));
  const auto t = types(fs);
  ASSERT_GE(t.size(), 9u);
  EXPECT_EQ(t[3], "response.reasoning_summary_part.added");
  EXPECT_EQ(t[4], "response.reasoning_summary_text.delta");
  EXPECT_EQ(t[5], "response.reasoning_summary_text.delta");
  EXPECT_EQ(t[6], "response.reasoning_summary_text.done");
  EXPECT_EQ(t[7], "response.reasoning_summary_part.done");
  EXPECT_EQ(fs[6].json()["text"], "ab");
  EXPECT_EQ(fs[4].json()["summary_index"], 0);
  const J fin = fs.back().json()["response"];
  EXPECT_EQ(fin["output"][0]["summary"], J::parse(R"([{"type":"summary_text","text":"ab"}])"));
}

TEST(ApiWriteResponses, IncompleteOnLength) {
  auto w = make_writer(Dialect::kResponses, req(Dialect::kResponses, true), meta("resp_l"));
  const auto fs =
      frames(feed(*w, {started(), ev(Kind::kContent, "cut"), done(FinishReason::kLength)}));
  EXPECT_EQ(fs.back().event, "response.incomplete");
  const J resp = fs.back().json()["response"];
  EXPECT_EQ(resp["status"], "incomplete");
  EXPECT_EQ(resp["incomplete_details"]["reason"], "max_output_tokens");
  EXPECT_EQ(resp["output"][0]["status"], "incomplete");
  auto n = make_writer(Dialect::kResponses, req(Dialect::kResponses, false), meta("resp_l"));
  feed(*n, {started(), ev(Kind::kContent, "cut"), done(FinishReason::kLength)});
  const J body = J::parse(n->final_body());
  EXPECT_EQ(body["status"], "incomplete");
  EXPECT_EQ(body["object"], "response");
}

TEST(ApiWriteResponses, NonStream) {
  auto w = make_writer(Dialect::kResponses, req(Dialect::kResponses, false), meta("resp_n"));
  EXPECT_EQ(feed(*w, {started(), ev(Kind::kContent, "Hi"), call_start(0, "call_9", "f"),
                      call_end(0, "call_9", "f", "{}"), done(FinishReason::kToolCalls)}),
            "");
  const J j = J::parse(w->final_body());
  EXPECT_EQ(j["id"], "resp_n");
  EXPECT_EQ(j["created_at"], 1795362307);
  EXPECT_EQ(j["status"], "completed");
  EXPECT_TRUE(j["error"].is_null());
  ASSERT_EQ(j["output"].size(), 2u);
  EXPECT_EQ(j["output"][0]["type"], "message");
  EXPECT_EQ(j["output"][0]["role"], "assistant");
  EXPECT_EQ(j["output"][1],
            J::parse(R"({"id":"fc_n_1","type":"function_call","status":"completed",)"
                     R"("arguments":"{}","call_id":"call_9","name":"f"})"));
  EXPECT_EQ(j["usage"]["input_tokens_details"]["cached_tokens"], 100);
}

TEST(ApiWriteResponses, Error) {
  auto w = make_writer(Dialect::kResponses, req(Dialect::kResponses, true), meta("resp_e"));
  const auto fs = frames(feed(*w, {started(), ev(Kind::kContent, "x"), ev(Kind::kError, "bad"),
                                   done(FinishReason::kError)}));
  ASSERT_GE(fs.size(), 2u);
  EXPECT_EQ(fs[fs.size() - 2].event, "error");
  EXPECT_EQ(fs[fs.size() - 2].json()["message"], "bad");
  EXPECT_EQ(fs.back().event, "response.failed");
  EXPECT_EQ(fs.back().json()["response"]["status"], "failed");
  EXPECT_EQ(fs.back().json()["response"]["error"]["code"], "server_error");
  auto n = make_writer(Dialect::kResponses, req(Dialect::kResponses, false), meta("resp_e"));
  feed(*n, {started(), ev(Kind::kError, "bad"), done(FinishReason::kError)});
  EXPECT_EQ(n->final_status(), 500);
  EXPECT_EQ(J::parse(n->final_body())["error"]["message"], "bad");
}

// Responses output fed back as input reproduces the calls.
TEST(ApiWriteResponses, RoundTrip) {
  auto w = make_writer(Dialect::kResponses, req(Dialect::kResponses, false), meta("resp_r"));
  feed(*w, {started(), ev(Kind::kReasoning, "why"), call_start(0, "call_R", "g"),
            call_end(0, "call_R", "g", "{\"k\": \"v\"}"), done(FinishReason::kToolCalls)});
  const Json out = Json::parse(w->final_body());
  Json body = Json::object();
  body["input"] = Json::array();
  body["input"].push_back({{"role", "user"}, {"content", "q"}});
  for (const auto& item : out["output"]) body["input"].push_back(item);
  body["input"].push_back(
      {{"type", "function_call_output"}, {"call_id", "call_R"}, {"output", "r"}});
  ApiLimits l;
  l.default_seed = 1;
  const ParsedRequest r = parse_responses(body, l);
  const auto& m = r.gen.conversation->messages;
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[1].reasoning_content, "why");
  ASSERT_EQ(m[1].tool_calls.size(), 1u);
  EXPECT_EQ(m[1].tool_calls[0].id, "call_R");
  EXPECT_EQ(m[1].tool_calls[0].arguments, "{\"k\": \"v\"}");
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages.

TEST(ApiWriteMessages, StreamFull) {
  auto w = make_writer(Dialect::kMessages, req(Dialect::kMessages, true), meta("msg_1"));
  const std::string s = feed(
      *w, {ev(Kind::kQueued), started(), ev(Kind::kReasoning, "plan"), ev(Kind::kContent, "Ok"),
           call_start(0, "toolu_1", "bash"), call_args(0, "{\"cmd\":"), call_args(0, "\"ls\"}"),
           call_end(0, "toolu_1", "bash", "{\"cmd\":\"ls\"}"), done(FinishReason::kToolCalls)});
  const auto fs = frames(s);
  const std::vector<std::string> expect = {
      "message_start",       "content_block_start", "content_block_delta", "content_block_delta",
      "content_block_stop",  "content_block_start", "content_block_delta", "content_block_stop",
      "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
      "message_delta",       "message_stop"};
  EXPECT_EQ(types(fs), expect);
  for (const Sse& f : fs) EXPECT_EQ(f.json()["type"], f.event);
  const J start = fs[0].json()["message"];
  EXPECT_EQ(start["id"], "msg_1");
  EXPECT_EQ(start["role"], "assistant");
  EXPECT_EQ(start["content"], J::array());
  EXPECT_TRUE(start["stop_reason"].is_null());
  EXPECT_EQ(start["usage"]["input_tokens"], 20);
  EXPECT_EQ(start["usage"]["cache_read_input_tokens"], 100);
  EXPECT_EQ(start["usage"]["output_tokens"], 0);
  EXPECT_EQ(fs[1].json()["index"], 0);
  EXPECT_EQ(fs[1].json()["content_block"],
            J::parse(R"({"type":"thinking","thinking":"","signature":""})"));
  EXPECT_EQ(fs[2].json()["delta"], J::parse(R"({"type":"thinking_delta","thinking":"plan"})"));
  EXPECT_EQ(fs[3].json()["delta"]["type"], "signature_delta");
  EXPECT_EQ(fs[4].json()["index"], 0);
  EXPECT_EQ(fs[5].json()["index"], 1);
  EXPECT_EQ(fs[5].json()["content_block"], J::parse(R"({"type":"text","text":""})"));
  EXPECT_EQ(fs[6].json()["delta"], J::parse(R"({"type":"text_delta","text":"Ok"})"));
  EXPECT_EQ(fs[8].json()["index"], 2);
  EXPECT_EQ(fs[8].json()["content_block"],
            J::parse(R"({"type":"tool_use","id":"toolu_1","name":"bash","input":{}})"));
  EXPECT_EQ(fs[9].json()["delta"],
            J::parse(R"({"type":"input_json_delta","partial_json":"{\"cmd\":"})"));
  EXPECT_EQ(fs[11].json()["index"], 2);
  const J md = fs[12].json();
  EXPECT_EQ(md["delta"]["stop_reason"], "tool_use");
  EXPECT_TRUE(md["delta"]["stop_sequence"].is_null());
  EXPECT_EQ(md["usage"]["output_tokens"], 30);
}

TEST(ApiWriteMessages, TextAfterToolUseIsANewBlock) {
  auto w = make_writer(Dialect::kMessages, req(Dialect::kMessages, true), meta("m"));
  const auto fs =
      frames(feed(*w, {started(), call_start(0, "toolu_1", "f"), call_end(0, "toolu_1", "f", "{}"),
                       ev(Kind::kContent, "after"), done(FinishReason::kToolCalls)}));
  const std::vector<std::string> expect = {
      "message_start",      "content_block_start", "content_block_delta",
      "content_block_stop", "content_block_start", "content_block_delta",
      "content_block_stop", "message_delta",       "message_stop"};
  EXPECT_EQ(types(fs), expect);
  EXPECT_EQ(fs[2].json()["delta"]["partial_json"], "{}");
  EXPECT_EQ(fs[3].json()["index"], 0);
  EXPECT_EQ(fs[4].json()["index"], 1);
  EXPECT_EQ(fs[4].json()["content_block"]["type"], "text");
  EXPECT_EQ(fs[6].json()["index"], 1);
}

TEST(ApiWriteMessages, ThinkingOnlyGetsEmptyText) {
  auto w = make_writer(Dialect::kMessages, req(Dialect::kMessages, true), meta("msg_2"));
  const auto fs =
      frames(feed(*w, {started(), ev(Kind::kReasoning, "hmm"), done(FinishReason::kLength)}));
  const auto t = types(fs);
  ASSERT_EQ(t.size(), 9u);
  EXPECT_EQ(t[5], "content_block_start");
  EXPECT_EQ(fs[5].json()["index"], 1);
  EXPECT_EQ(fs[5].json()["content_block"]["type"], "text");
  EXPECT_EQ(t[6], "content_block_stop");
  EXPECT_EQ(fs[7].json()["delta"]["stop_reason"], "max_tokens");
  auto n = make_writer(Dialect::kMessages, req(Dialect::kMessages, false), meta("msg_2"));
  feed(*n, {started(), ev(Kind::kReasoning, "hmm"), done(FinishReason::kLength)});
  const J j = J::parse(n->final_body());
  ASSERT_EQ(j["content"].size(), 2u);
  EXPECT_EQ(j["content"][0]["type"], "thinking");
  EXPECT_EQ(j["content"][1], J::parse(R"({"type":"text","text":""})"));
}

TEST(ApiWriteMessages, NonStream) {
  auto w = make_writer(Dialect::kMessages, req(Dialect::kMessages, false), meta("msg_3"));
  feed(*w, {started(), ev(Kind::kReasoning, "r"), ev(Kind::kContent, "t"),
            call_start(0, "toolu_9", "f"), call_end(0, "toolu_9", "f", "{\"a\": [1]}"),
            done(FinishReason::kStop)});
  EXPECT_EQ(
      w->final_body(),
      R"({"id":"msg_3","type":"message","role":"assistant","model":"deepseek-v4-flash",)"
      R"("content":[{"type":"thinking","thinking":"r","signature":"dsv4"},{"type":"text","text":"t"},)"
      R"({"type":"tool_use","id":"toolu_9","name":"f","input":{"a":[1]}}],)"
      R"("stop_reason":"tool_use","stop_sequence":null,)"
      R"("usage":{"input_tokens":20,"cache_creation_input_tokens":0,"cache_read_input_tokens":100,)"
      R"("output_tokens":30}})");
}

TEST(ApiWriteMessages, StopSequence) {
  auto w = make_writer(Dialect::kMessages, req(Dialect::kMessages, false), meta("m"));
  feed(*w, {started(), ev(Kind::kContent, "a"), done(FinishReason::kStop, 3, "###")});
  const J j = J::parse(w->final_body());
  EXPECT_EQ(j["stop_reason"], "stop_sequence");
  EXPECT_EQ(j["stop_sequence"], "###");
  auto e = make_writer(Dialect::kMessages, req(Dialect::kMessages, false), meta("m"));
  feed(*e, {started(), ev(Kind::kContent, "a"), done(FinishReason::kStop)});
  EXPECT_EQ(J::parse(e->final_body())["stop_reason"], "end_turn");
}

TEST(ApiWriteMessages, Error) {
  auto w = make_writer(Dialect::kMessages, req(Dialect::kMessages, true), meta("m"));
  const auto fs = frames(feed(*w, {started(), ev(Kind::kContent, "a"), ev(Kind::kError, "gpu"),
                                   done(FinishReason::kError)}));
  ASSERT_EQ(fs.size(), 4u);
  EXPECT_EQ(fs[3].event, "error");
  EXPECT_EQ(fs[3].json(),
            J::parse(R"({"type":"error","error":{"type":"api_error","message":"gpu"}})"));
  auto n = make_writer(Dialect::kMessages, req(Dialect::kMessages, false), meta("m"));
  feed(*n, {started(), ev(Kind::kError, "gpu"), done(FinishReason::kError)});
  EXPECT_EQ(n->final_status(), 500);
  EXPECT_EQ(J::parse(n->final_body()),
            J::parse(R"({"type":"error","error":{"type":"api_error","message":"gpu"}})"));
}

TEST(ApiWriteMessages, RoundTrip) {
  auto w = make_writer(Dialect::kMessages, req(Dialect::kMessages, false), meta("m"));
  feed(*w, {started(), ev(Kind::kReasoning, "r"), ev(Kind::kContent, "t"),
            call_start(0, "toolu_A", "f"), call_end(0, "toolu_A", "f", "{\"a\":\"b\"}"),
            done(FinishReason::kToolCalls)});
  const Json out = Json::parse(w->final_body());
  Json body = Json::object();
  body["max_tokens"] = 10;
  body["messages"] = Json::array();
  body["messages"].push_back({{"role", "user"}, {"content", "q"}});
  body["messages"].push_back({{"role", "assistant"}, {"content", out["content"]}});
  body["messages"].push_back(
      {{"role", "user"},
       {"content",
        Json::array({{{"type", "tool_result"}, {"tool_use_id", "toolu_A"}, {"content", "ok"}}})}});
  ApiLimits l;
  l.default_seed = 1;
  const ParsedRequest r = parse_messages(body, l);
  const auto& m = r.gen.conversation->messages;
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[1].reasoning_content, "r");
  EXPECT_EQ(m[1].content, "t");
  ASSERT_EQ(m[1].tool_calls.size(), 1u);
  EXPECT_EQ(m[1].tool_calls[0].id, "toolu_A");
  EXPECT_EQ(m[1].tool_calls[0].arguments, "{\"a\":\"b\"}");
  EXPECT_EQ(m[2].role, text::Role::kTool);
  EXPECT_EQ(m[2].tool_call_id, "toolu_A");
}

// ---------------------------------------------------------------------------------------------
// Error bodies and helpers.

TEST(ApiErrorBody, OpenAIShape) {
  ApiError e = bad_request("messages[0].role", "messages[0].role: missing");
  EXPECT_EQ(error_body(Dialect::kChat, e),
            R"({"error":{"message":"messages[0].role: missing","type":"invalid_request_error",)"
            R"("param":"messages[0].role","code":null}})");
  ApiError n;
  n.status = 404;
  n.type = "not_found_error";
  n.message = "unknown endpoint";
  EXPECT_EQ(error_body(Dialect::kResponses, n),
            R"({"error":{"message":"unknown endpoint","type":"not_found_error","param":null,)"
            R"("code":null}})");
  ApiError c;
  c.message = "too long";
  c.code = "context_length_exceeded";
  EXPECT_EQ(J::parse(error_body(Dialect::kCompletions, c))["error"]["code"],
            "context_length_exceeded");
}

TEST(ApiErrorBody, AnthropicShape) {
  ApiError e = bad_request("max_tokens", "max_tokens: missing (required)");
  EXPECT_EQ(error_body(Dialect::kMessages, e),
            R"({"type":"error","error":{"type":"invalid_request_error",)"
            R"j("message":"max_tokens: missing (required)"}})j");
  const std::pair<int, const char*> cases[] = {{400, "invalid_request_error"},
                                               {401, "authentication_error"},
                                               {403, "permission_error"},
                                               {404, "not_found_error"},
                                               {413, "request_too_large"},
                                               {429, "rate_limit_error"},
                                               {500, "api_error"},
                                               {503, "overloaded_error"},
                                               {529, "overloaded_error"}};
  for (const auto& [status, type] : cases) {
    ApiError x;
    x.status = status;
    x.message = "m";
    EXPECT_EQ(J::parse(error_body(Dialect::kMessages, x))["error"]["type"], type) << status;
  }
}

TEST(ApiErrorBody, FinishReasonStrings) {
  EXPECT_EQ(openai_finish_reason(FinishReason::kStop), "stop");
  EXPECT_EQ(openai_finish_reason(FinishReason::kLength), "length");
  EXPECT_EQ(openai_finish_reason(FinishReason::kToolCalls), "tool_calls");
  EXPECT_EQ(openai_finish_reason(FinishReason::kCancelled), "stop");
  EXPECT_EQ(anthropic_stop_reason(FinishReason::kStop), "end_turn");
  EXPECT_EQ(anthropic_stop_reason(FinishReason::kLength), "max_tokens");
  EXPECT_EQ(anthropic_stop_reason(FinishReason::kToolCalls), "tool_use");
  EXPECT_EQ(count_tokens_body(42), R"({"input_tokens":42})");
}

}  // namespace
}  // namespace dsv4::server
