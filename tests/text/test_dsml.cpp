// DSML: canonical rendering, the streaming parser (split at every byte), recovery from malformed
// and unclosed output, and round trips through the official goldens.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "corpus.h"
#include "text/chat.h"
#include "text/dsml.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

using namespace dsv4::text;

namespace {

const std::string kEos(special::kEos);
const std::string kOpen = "\n\n<｜DSML｜tool_calls>\n";
const std::string kClose = "</｜DSML｜tool_calls>";

std::string invoke(const std::string& name, const std::string& params) {
  return "<｜DSML｜invoke name=\"" + name + "\">\n" + params + "</｜DSML｜invoke>\n";
}
std::string param(const std::string& name, const std::string& is_str, const std::string& v) {
  return "<｜DSML｜parameter name=\"" + name + "\" string=\"" + is_str + "\">" + v +
         "</｜DSML｜parameter>\n";
}

// Feeds `text` in chunks whose boundaries are `cuts` (sorted offsets), collecting the events.
ParsedMessage stream(std::string_view text, bool thinking, const std::vector<size_t>& cuts,
                     std::vector<DsmlEvent>* all = nullptr) {
  DsmlParser p(thinking);
  std::vector<DsmlEvent> ev;
  const bool valid_input = utf8::is_valid(text);
  size_t at = 0;
  for (size_t c : cuts) {
    std::vector<DsmlEvent> step;
    p.feed(text.substr(at, c - at), step);
    for (const DsmlEvent& e : step) {
      if (e.kind == DsmlEvent::Kind::kReasoning || e.kind == DsmlEvent::Kind::kContent) {
        EXPECT_FALSE(e.text.empty());
        if (valid_input) {
          EXPECT_TRUE(utf8::is_valid(e.text)) << "delta cut inside a character at " << c;
        }
      }
    }
    ev.insert(ev.end(), step.begin(), step.end());
    at = c;
  }
  p.feed(text.substr(at), ev);
  p.finish(ev);
  ParsedMessage m;
  std::vector<size_t> started;
  for (const DsmlEvent& e : ev) {
    if (e.kind == DsmlEvent::Kind::kToolCallStart) {
      EXPECT_EQ(e.index, started.size());
      started.push_back(e.index);
    }
    if (e.kind == DsmlEvent::Kind::kToolCall) {
      EXPECT_EQ(e.index, m.tool_calls.size());
      EXPECT_EQ(started.size(), m.tool_calls.size() + 1) << "call without a start event";
    }
    add_event(m, e);
  }
  m.reasoning_closed = p.reasoning_closed();
  m.incomplete_call = p.incomplete_call();
  m.saw_eos = p.saw_eos();
  if (all != nullptr) *all = std::move(ev);
  return m;
}

void expect_same(const ParsedMessage& a, const ParsedMessage& b, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(a.reasoning_content, b.reasoning_content);
  EXPECT_EQ(a.content, b.content);
  ASSERT_EQ(a.tool_calls.size(), b.tool_calls.size());
  for (size_t i = 0; i < a.tool_calls.size(); ++i) {
    EXPECT_EQ(a.tool_calls[i].name, b.tool_calls[i].name);
    EXPECT_EQ(a.tool_calls[i].arguments, b.tool_calls[i].arguments);
  }
  EXPECT_EQ(a.raw_dsml, b.raw_dsml);
  EXPECT_EQ(a.issues.size(), b.issues.size());
  EXPECT_EQ(a.reasoning_closed, b.reasoning_closed);
  EXPECT_EQ(a.incomplete_call, b.incomplete_call);
  EXPECT_EQ(a.saw_eos, b.saw_eos);
}

// Whole, byte by byte, and every two-chunk split give the same result; returns the whole parse.
ParsedMessage check_splits(std::string_view text, bool thinking) {
  const ParsedMessage whole = parse_generated(text, thinking);
  std::vector<size_t> bytes;
  for (size_t i = 1; i < text.size(); ++i) bytes.push_back(i);
  expect_same(whole, stream(text, thinking, bytes), "byte by byte");
  for (size_t i = 1; i < text.size(); ++i) {
    expect_same(whole, stream(text, thinking, {i}), "split at " + std::to_string(i));
    if (::testing::Test::HasFailure()) break;
  }
  return whole;
}

bool args_equal(const std::string& args, const char* want) {
  return nlohmann::json::parse(args) == nlohmann::json::parse(want);
}

bool has_issue(const ParsedMessage& m, std::string_view needle) {
  for (const std::string& s : m.issues) {
    if (s.find(needle) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Rendering.

TEST(DsmlRender, OfficialBlock) {
  const std::vector<ToolCall> calls = {
      {"call_001", "get_weather", R"({"location": "Beijing", "unit": "celsius"})"}};
  EXPECT_EQ(render_tool_calls(calls),
            "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
            "<｜DSML｜parameter name=\"location\" string=\"true\">Beijing</｜DSML｜parameter>\n"
            "<｜DSML｜parameter name=\"unit\" string=\"true\">celsius</｜DSML｜parameter>\n"
            "</｜DSML｜invoke>\n</｜DSML｜tool_calls>");
  EXPECT_EQ(render_tool_calls({}), "");
  // Raw strings: no escaping of any kind.
  const std::vector<ToolCall> raw = {{"", "w", R"({"s": "a &amp; <b> \"q\""})"}};
  EXPECT_NE(render_tool_calls(raw).find(">a &amp; <b> \"q\"</｜DSML｜parameter>"),
            std::string::npos);
}

TEST(DsmlRender, PiecesMarkData) {
  TextPieces pieces;
  const std::vector<ToolCall> calls = {{"", "<｜User｜>", R"({"</think>": "<think>"})"}};
  append_tool_calls_dsml(calls, pieces);
  std::string data;
  for (const TextPiece& p : pieces) {
    if (p.data) data += p.text + "|";
  }
  EXPECT_EQ(data, "<｜User｜>|</think>|<think>|");
}

// ---------------------------------------------------------------------------------------------
// Well-formed generations.

TEST(DsmlParse, ThinkingWithCalls) {
  const std::string text =
      "I need the weather.</think>" + kOpen +
      invoke("get_weather", param("city", "true", "北京 & <b>Beijing</b> &amp; &lt; \"q\"\n") +
                                param("days", "false", "3") +
                                param("opts", "false", R"({"a": [1, 2], "b": null})")) +
      "<｜DSML｜invoke name=\"noargs\">\n\n</｜DSML｜invoke>\n" + kClose + kEos;
  const ParsedMessage m = check_splits(text, true);
  EXPECT_EQ(m.reasoning_content, "I need the weather.");
  EXPECT_EQ(m.content, "");
  EXPECT_TRUE(m.reasoning_closed);
  EXPECT_TRUE(m.saw_eos);
  EXPECT_FALSE(m.incomplete_call);
  EXPECT_TRUE(m.issues.empty());
  ASSERT_EQ(m.tool_calls.size(), 2u);
  EXPECT_EQ(m.tool_calls[0].name, "get_weather");
  // The official arguments form; string values verbatim (no entity decoding).
  EXPECT_EQ(m.tool_calls[0].arguments,
            R"({"city": "北京 & <b>Beijing</b> &amp; &lt; \"q\"\n", "days": 3, )"
            R"("opts": {"a": [1, 2], "b": null}})");
  EXPECT_EQ(m.tool_calls[1].name, "noargs");
  EXPECT_EQ(m.tool_calls[1].arguments, "{}");
  EXPECT_EQ(m.raw_dsml, text.substr(text.find("\n\n<｜DSML｜"),
                                    text.size() - kEos.size() - text.find("\n\n<｜DSML｜")));
}

TEST(DsmlParse, ChatContentThenCall) {
  const std::string text =
      "Let me check 🙂." + kOpen + invoke("f", param("x", "false", "1.5")) + kClose;
  const ParsedMessage m = check_splits(text, false);
  EXPECT_EQ(m.reasoning_content, "");
  EXPECT_EQ(m.content, "Let me check 🙂.");
  ASSERT_EQ(m.tool_calls.size(), 1u);
  EXPECT_EQ(m.tool_calls[0].arguments, R"({"x": 1.5})");
  EXPECT_FALSE(m.saw_eos);
  // render(parse(x)) == x for the canonical block.
  EXPECT_EQ(render_tool_calls(m.tool_calls), m.raw_dsml);
}

TEST(DsmlParse, PlainAnswer) {
  const std::string text = "思考🙂 <b>done</b></think>The answer is 42 🎉.\n\nBye\n\n" + kEos;
  const ParsedMessage m = check_splits(text, true);
  EXPECT_EQ(m.reasoning_content, "思考🙂 <b>done</b>");
  EXPECT_EQ(m.content, "The answer is 42 🎉.\n\nBye\n\n");
  EXPECT_TRUE(m.tool_calls.empty());
  EXPECT_TRUE(m.raw_dsml.empty());
  // Chat mode: `</think>` is just text, a leading `<think>` too.
  const ParsedMessage c = check_splits("<think>a</think>b", false);
  EXPECT_EQ(c.content, "<think>a</think>b");
}

TEST(DsmlParse, NewlinesBeforeTheBlock) {
  // Exactly "\n\n" belongs to the block; other whitespace stays in the content.
  const std::string block = "<｜DSML｜tool_calls>\n" + invoke("f", "") + kClose;
  EXPECT_EQ(check_splits("a\n\n\n" + block, false).content, "a\n");
  EXPECT_EQ(check_splits("a\n" + block, false).content, "a\n");
  EXPECT_EQ(check_splits("a" + block, false).content, "a");
  EXPECT_EQ(check_splits("a \n\n" + block, false).content, "a ");
  const ParsedMessage m = check_splits("\n\n" + block, false);
  EXPECT_EQ(m.content, "");
  EXPECT_EQ(m.raw_dsml, "\n\n" + block);
  EXPECT_EQ(check_splits("a" + block, false).raw_dsml, block);
}

TEST(DsmlParse, DsmlTextInsideValuesAndReasoning) {
  // A string value may hold DSML text (an agent editing this file); only the closing parameter
  // tag ends it. EOS text inside a value is value text too.
  const std::string v =
      "x <｜DSML｜invoke name=\"y\">\n</｜DSML｜invoke> </｜DSML｜tool_calls> " + kEos;
  const std::string text = kOpen + invoke("edit", param("new", "true", v)) + kClose;
  const ParsedMessage m = check_splits(text, false);
  ASSERT_EQ(m.tool_calls.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(m.tool_calls[0].arguments)["new"], v);
  EXPECT_TRUE(m.issues.empty());
  // DSML inside reasoning is reasoning.
  const std::string r = "I will write" + kOpen + invoke("f", "") + kClose + " next.";
  const ParsedMessage t = check_splits(r + "</think>ok", true);
  EXPECT_EQ(t.reasoning_content, r);
  EXPECT_EQ(t.content, "ok");
  EXPECT_TRUE(t.tool_calls.empty());
}

TEST(DsmlParse, LeadingThinkSkipped) {
  EXPECT_EQ(check_splits("<think>r</think>c", true).reasoning_content, "r");
  EXPECT_EQ(check_splits("<thinkr</think>c", true).reasoning_content, "<thinkr");
  EXPECT_EQ(check_splits("<thi", true).reasoning_content, "<thi");
}

// ---------------------------------------------------------------------------------------------
// Malformed and unclosed output.

TEST(DsmlRecovery, TruncatedReasoningIsReasoning) {
  const ParsedMessage m = check_splits("still thinking about it", true);
  EXPECT_EQ(m.reasoning_content, "still thinking about it");
  EXPECT_EQ(m.content, "");
  EXPECT_FALSE(m.reasoning_closed);
  const ParsedMessage e = check_splits("thinking</thi", true);
  EXPECT_EQ(e.reasoning_content, "thinking</thi");
}

TEST(DsmlRecovery, UnclosedCallAtEndIsDropped) {
  const std::string text = "ok</think>" + kOpen + invoke("a", param("x", "true", "1")) +
                           "<｜DSML｜invoke name=\"write\">\n" +
                           "<｜DSML｜parameter name=\"path\" string=\"true\">/tmp/fi";
  const ParsedMessage m = check_splits(text, true);
  EXPECT_EQ(m.content, "");
  ASSERT_EQ(m.tool_calls.size(), 1u);
  EXPECT_EQ(m.tool_calls[0].name, "a");
  EXPECT_TRUE(m.incomplete_call);
  EXPECT_TRUE(has_issue(m, "\"write\"")) << ::testing::PrintToString(m.issues);
  EXPECT_EQ(m.raw_dsml, text.substr(text.find("\n\n")));
  // The start event of the dropped call was sent; its end never is.
  std::vector<DsmlEvent> ev;
  stream(text, true, {}, &ev);
  size_t starts = 0, calls = 0;
  for (const DsmlEvent& e : ev) {
    starts += e.kind == DsmlEvent::Kind::kToolCallStart;
    calls += e.kind == DsmlEvent::Kind::kToolCall;
  }
  EXPECT_EQ(starts, 2u);
  EXPECT_EQ(calls, 1u);
  // Cut inside a tag, and inside the invoke header.
  for (const std::string& cut : {kOpen + invoke("a", "") + "<｜DSML｜invoke na",
                                 kOpen + invoke("a", "") + "</｜DSML｜tool_c",
                                 kOpen + "<｜DSML｜invoke name=\"b\">\n</｜DSML｜inv"}) {
    const ParsedMessage c = check_splits(cut, false);
    EXPECT_EQ(c.content, "");
    EXPECT_EQ(c.raw_dsml, cut);
    EXPECT_FALSE(c.issues.empty());
  }
  EXPECT_TRUE(
      check_splits(kOpen + "<｜DSML｜invoke name=\"b\">\n</｜DSML｜inv", false).incomplete_call);
}

TEST(DsmlRecovery, EosBeforeBlockClose) {
  const std::string text = kOpen + invoke("a", "") + kEos + "junk";
  const ParsedMessage m = check_splits(text, false);
  ASSERT_EQ(m.tool_calls.size(), 1u);
  EXPECT_FALSE(m.incomplete_call);
  EXPECT_TRUE(m.saw_eos);
  EXPECT_TRUE(has_issue(m, "before </｜DSML｜tool_calls>"));
  EXPECT_TRUE(has_issue(m, "ignored"));  // the text after EOS
  // EOS inside an open invoke: the call is dropped.
  const ParsedMessage d =
      check_splits(kOpen + "<｜DSML｜invoke name=\"b\">\n" + param("x", "true", "1") + kEos, false);
  EXPECT_TRUE(d.tool_calls.empty());
  EXPECT_TRUE(d.incomplete_call);
}

TEST(DsmlRecovery, BadJsonInNonStringParameter) {
  const std::string text =
      kOpen +
      invoke("f", param("a", "false", "oops") + param("b", "true", "<div> &amp;") +
                      param("c", "false", " [1, 2] ") + param("d", "false", "")) +
      kClose;
  const ParsedMessage m = check_splits(text, false);
  ASSERT_EQ(m.tool_calls.size(), 1u);
  // Other keys survive (ds4 turned the whole call into {}).
  EXPECT_EQ(m.tool_calls[0].arguments,
            R"({"a": "oops", "b": "<div> &amp;", "c": [1, 2], "d": ""})");
  EXPECT_TRUE(has_issue(m, "\"a\""));
  EXPECT_TRUE(has_issue(m, "\"d\""));
  EXPECT_EQ(m.issues.size(), 2u);
}

// Found by fuzz_dsml: nlohmann's accept() stops at a NUL byte, so this value counted as the JSON
// number 0 and went verbatim into arguments, which were then not valid JSON.
TEST(DsmlRecovery, NulByteInNonStringParameter) {
  const std::string value = std::string("0\n\n") + '\0' + "junk";
  const std::string text = kOpen + invoke("f", param("a", "false", value)) + kClose;
  const ParsedMessage m = check_splits(text, false);
  ASSERT_EQ(m.tool_calls.size(), 1u);
  EXPECT_EQ(m.tool_calls[0].arguments, R"({"a": "0\n\n\u0000junk"})");
  EXPECT_TRUE(nlohmann::json::parse(m.tool_calls[0].arguments).is_object());
  EXPECT_TRUE(has_issue(m, "not JSON"));
  // Client-side JSON text with a NUL is refused by name, not cut short.
  try {
    python_json(std::string(R"({"a": 1})") + '\0' + "x");
    FAIL() << "no error";
  } catch (const dsv4::Error& e) {
    EXPECT_NE(std::string(e.what()).find("NUL byte at offset 8"), std::string::npos) << e.what();
  }
}

TEST(DsmlRecovery, AttributesAndNames) {
  const std::string text =
      kOpen +
      invoke("f", "<｜DSML｜parameter name=\"nostr\">v</｜DSML｜parameter>\n" +
                      param("odd", "maybe", "w") + param("dup", "true", "first") +
                      param("dup", "true", "second") +
                      "<｜DSML｜parameter string=\"true\">anon</｜DSML｜parameter>\n") +
      "<｜DSML｜invoke>\n" + param("x", "true", "1") + "</｜DSML｜invoke>\n" +
      invoke("g", param("k", "false", "true")) + kClose;
  const ParsedMessage m = check_splits(text, false);
  ASSERT_EQ(m.tool_calls.size(), 2u);
  EXPECT_EQ(m.tool_calls[0].arguments, R"({"nostr": "v", "odd": "w", "dup": "first"})");
  EXPECT_EQ(m.tool_calls[1].name, "g");
  EXPECT_EQ(m.tool_calls[1].arguments, R"({"k": true})");
  EXPECT_TRUE(has_issue(m, "maybe"));
  EXPECT_TRUE(has_issue(m, "repeated"));
  EXPECT_TRUE(has_issue(m, "without a name"));
  EXPECT_TRUE(has_issue(m, "invoke without a name"));
  EXPECT_EQ(m.issues.size(), 4u);
}

TEST(DsmlRecovery, MissingInvokeClose) {
  const std::string text = kOpen + "<｜DSML｜invoke name=\"a\">\n" + param("x", "true", "1") +
                           invoke("b", "") + "<｜DSML｜invoke name=\"c\">\n" + kClose + "\n" + kEos;
  const ParsedMessage m = check_splits(text, false);
  ASSERT_EQ(m.tool_calls.size(), 3u);
  EXPECT_EQ(m.tool_calls[0].arguments, R"({"x": "1"})");
  EXPECT_EQ(m.tool_calls[2].name, "c");
  EXPECT_EQ(m.issues.size(), 2u);
  EXPECT_FALSE(m.incomplete_call);
  EXPECT_TRUE(m.saw_eos);
}

TEST(DsmlRecovery, UnknownTagsAndJunk) {
  const std::string text =
      kOpen + "garbage <b>\n" + invoke("a", "") + "<｜DSML｜thinking>hm</｜DSML｜thinking>\n" +
      invoke("b", "junk " + param("x", "true", "1")) + "<｜DSML｜invoke name=broken>\n" +
      param("y", "true", "2") + "</｜DSML｜invoke>\n" + kClose;
  const ParsedMessage m = check_splits(text, false);
  ASSERT_EQ(m.tool_calls.size(), 2u);
  EXPECT_EQ(m.tool_calls[0].name, "a");
  EXPECT_EQ(m.tool_calls[1].arguments, R"({"x": "1"})");
  EXPECT_TRUE(has_issue(m, "garbage"));
  EXPECT_TRUE(has_issue(m, "malformed invoke"));
  EXPECT_EQ(m.raw_dsml, text);
}

TEST(DsmlRecovery, TextAfterTheBlock) {
  const std::string block = kOpen + invoke("a", "") + kClose;
  const ParsedMessage m = check_splits("c" + block + "\n\nmore text" + block + "\n" + kEos, false);
  EXPECT_EQ(m.content, "cmore text");
  EXPECT_EQ(m.tool_calls.size(), 2u);
  EXPECT_TRUE(has_issue(m, "more text"));
  EXPECT_EQ(m.issues.size(), 1u);
  // Whitespace only: nothing.
  const ParsedMessage w = check_splits(block + " \n", false);
  EXPECT_TRUE(w.issues.empty());
  EXPECT_EQ(w.content, "");
}

TEST(DsmlRecovery, FeedAfterFinishIgnored) {
  DsmlParser p(false);
  std::vector<DsmlEvent> ev;
  p.feed("abc", ev);
  p.finish(ev);
  p.feed("def", ev);
  p.finish(ev);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].text, "abc");
}

// Random damage to valid generations: any split gives the same result, arguments are always a
// JSON object, and no partial DSML ever reaches the content when the block opened cleanly.
TEST(DsmlRecovery, RandomDamage) {
  const std::vector<std::string> seeds = {
      "r</think>c" + kOpen +
          invoke("f", param("a", "true", "x<y>&amp;") + param("b", "false", "[1,{\"c\":2}]")) +
          invoke("g", "") + kClose + kEos,
      "reason 思考</think>" + kOpen + invoke("h", param("n", "false", "-1.5e3")) + kClose,
  };
  const std::vector<std::string> inserts = {"<｜DSML｜",
                                            "</｜DSML｜",
                                            "\n",
                                            "\"",
                                            ">",
                                            "<｜DSML｜invoke name=\"z\">",
                                            "</｜DSML｜parameter>",
                                            "</｜DSML｜invoke>",
                                            "</｜DSML｜tool_calls>",
                                            kEos,
                                            "</think>",
                                            "é"};
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 1500; ++iter) {
    std::string t = seeds[iter % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % (t.size() + 1);
      switch (rng() % 3) {
        case 0:
          t.insert(pos, inserts[rng() % inserts.size()]);
          break;
        case 1:
          t.erase(pos, rng() % 12);
          break;
        default:
          t = t.substr(0, pos);
          break;
      }
    }
    const bool thinking = rng() % 4 != 0;
    const ParsedMessage whole = parse_generated(t, thinking);
    std::vector<size_t> cuts;
    for (size_t at = 0;;) {
      at += 1 + rng() % 7;
      if (at >= t.size()) break;
      cuts.push_back(at);
    }
    expect_same(whole, stream(t, thinking, cuts), "random chunks of case " + std::to_string(iter));
    for (const ToolCall& c : whole.tool_calls) {
      const auto j = nlohmann::json::parse(c.arguments, nullptr, false);
      ASSERT_TRUE(j.is_object()) << c.arguments;
    }
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "input: " << ::testing::PrintToString(t);
      break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The official goldens.

namespace {

#define REQUIRE_CONFORMANCE()                                                  \
  if (testdata::conformance_dir().empty()) {                                   \
    GTEST_SKIP() << "shared/conformance not found (set DSV4_CONFORMANCE_DIR)"; \
  }

std::string golden(int i, bool input) {
  return testdata::read_file(testdata::conformance_dir() + "/encoding/tests/test_" +
                             (input ? "input_" : "output_") + std::to_string(i) +
                             (input ? ".json" : ".txt"));
}

struct Turn {
  std::string text;  // what the model generated after the prompt (opener and task token cut)
  bool thinking = false;
};

// The assistant turns of a rendered prompt, each up to and including its EOS.
std::vector<Turn> assistant_turns(const std::string& prompt) {
  std::vector<Turn> turns;
  const std::string asst(special::kAssistant);
  for (size_t at = prompt.find(asst); at != std::string::npos; at = prompt.find(asst, at + 1)) {
    size_t s = at + asst.size();
    Turn t;
    if (prompt.compare(s, special::kThinkStart.size(), special::kThinkStart) == 0) {
      t.thinking = true;
      s += special::kThinkStart.size();
    } else if (prompt.compare(s, special::kThinkEnd.size(), special::kThinkEnd) == 0) {
      s += special::kThinkEnd.size();
    }
    for (std::string_view task : {special::kAction}) {
      if (prompt.compare(s, task.size(), task) == 0) s += task.size();
    }
    const size_t e = prompt.find(kEos, s);
    t.text = prompt.substr(s, e + kEos.size() - s);
    turns.push_back(std::move(t));
  }
  return turns;
}

}  // namespace

TEST(DsmlGolden, AssistantTurnsParse) {
  REQUIRE_CONFORMANCE();
  {
    const auto turns = assistant_turns(golden(1, false));
    ASSERT_EQ(turns.size(), 2u);
    const ParsedMessage a = check_splits(turns[0].text, true);
    EXPECT_EQ(a.reasoning_content,
              "The user wants to know the weather in Beijing. I should use the get_weather tool.");
    EXPECT_EQ(a.content, "");
    ASSERT_EQ(a.tool_calls.size(), 1u);
    EXPECT_EQ(a.tool_calls[0].name, "get_weather");
    EXPECT_TRUE(
        args_equal(a.tool_calls[0].arguments, R"({"location": "Beijing", "unit": "celsius"})"));
    // Byte-identical to the input's arguments string (the official decode form).
    EXPECT_EQ(a.tool_calls[0].arguments, R"({"location": "Beijing", "unit": "celsius"})");
    EXPECT_TRUE(a.issues.empty());
    const ParsedMessage b = check_splits(turns[1].text, true);
    EXPECT_EQ(b.reasoning_content, "Got the weather data. Let me format a nice response.");
    EXPECT_NE(b.content.find("22°C"), std::string::npos);
    EXPECT_TRUE(b.tool_calls.empty());
    EXPECT_TRUE(b.saw_eos);
  }
  {
    const auto turns = assistant_turns(golden(2, false));
    ASSERT_EQ(turns.size(), 2u);
    const ParsedMessage m = check_splits(turns[1].text, true);
    EXPECT_EQ(m.reasoning_content, "The user asks about the capital of France. It is Paris.");
    EXPECT_EQ(m.content, "The capital of France is Paris.");
    EXPECT_TRUE(m.tool_calls.empty());
  }
}

// Every DSML block of an assistant turn in the goldens: render(parse(x)) == x.
TEST(DsmlGolden, BlocksRoundTrip) {
  REQUIRE_CONFORMANCE();
  size_t blocks = 0;
  for (int i = 1; i <= 4; ++i) {
    const std::string g = golden(i, false);
    const size_t first_turn = g.find(special::kAssistant);
    for (size_t s = g.find("\n\n<｜DSML｜tool_calls>", first_turn); s != std::string::npos;
         s = g.find("\n\n<｜DSML｜tool_calls>", s + 1)) {
      const size_t e = g.find(kClose, s) + kClose.size();
      const std::string block = g.substr(s, e - s);
      const ParsedMessage m = check_splits(block, false);
      EXPECT_EQ(m.content, "");
      EXPECT_TRUE(m.issues.empty());
      EXPECT_EQ(m.raw_dsml, block);
      EXPECT_EQ(render_tool_calls(m.tool_calls), block) << "case " << i;
      ++blocks;
    }
  }
  EXPECT_EQ(blocks, 2u);  // case 1 and case 3
}

// Parse every assistant turn of a golden back into messages and render the conversation again.
TEST(DsmlGolden, ConversationRoundTrip) {
  REQUIRE_CONFORMANCE();
  for (int i = 1; i <= 4; ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    const std::string gold = golden(i, false);
    Conversation conv = parse_conversation(golden(i, true));
    const auto turns = assistant_turns(gold);
    size_t k = 0;
    for (Message& msg : conv.messages) {
      if (msg.role != Role::kAssistant) continue;
      ASSERT_LT(k, turns.size());
      const ParsedMessage p = parse_generated(turns[k].text, turns[k].thinking);
      ++k;
      EXPECT_TRUE(p.saw_eos);
      msg.reasoning_content = p.reasoning_content;
      msg.content = p.content;
      ASSERT_EQ(p.tool_calls.size(), msg.tool_calls.size());
      for (size_t c = 0; c < p.tool_calls.size(); ++c) {
        msg.tool_calls[c].name = p.tool_calls[c].name;
        msg.tool_calls[c].arguments = p.tool_calls[c].arguments;
      }
    }
    EXPECT_EQ(k, turns.size());
    RenderOptions opt;
    opt.mode = i == 4 ? ThinkingMode::kChat : ThinkingMode::kThinking;
    EXPECT_EQ(render_text(conv, opt), gold);
  }
}
