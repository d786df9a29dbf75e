// DsmlGreedyTracker: greedy inside DSML markup, normal sampling inside argument payloads, on
// realistic model output split at every byte.
#include <gtest/gtest.h>

#include <random>

#include "sample/dsml_greedy.h"

namespace dsv4 {
namespace {

using R = DsmlRegion;

// A realistic turn: reasoning that quotes DSML, content, then a block with a string value that
// holds HTML (including "</" that is not the closing tag), and a JSON value with escapes and a
// "<" inside a string literal.
const std::string kReasoning =
    "The user wants a file. I could write <｜DSML｜tool_calls> but first think.</think>";
const std::string kContent = "I'll create the page.";
const std::string kBlock =
    "\n\n<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"Write\">\n"
    "<｜DSML｜parameter name=\"file_path\" string=\"true\">/tmp/a.html</｜DSML｜parameter>\n"
    "<｜DSML｜parameter name=\"content\" string=\"true\"><div>a</div> x </ y</｜DSML｜parameter>\n"
    "<｜DSML｜parameter name=\"options\" string=\"false\">{\"n\": 10, \"s\": \"q\\\"<x>\\\\\", "
    "\"l\": [1, 2.5, true]}</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"Bash\">\n"
    "<｜DSML｜parameter name=\"command\">ls -la</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>";

// Region after each prefix, fed one byte at a time.
std::vector<R> regions_by_byte(const std::string& text, bool thinking) {
  DsmlGreedyTracker t(thinking);
  std::vector<R> out{t.region()};
  for (char c : text) {
    t.on_text(std::string_view(&c, 1));
    out.push_back(t.region());
  }
  return out;
}

R region_after(const std::string& text, bool thinking) {
  DsmlGreedyTracker t(thinking);
  t.on_text(text);
  return t.region();
}

// The region right after the first occurrence of `marker` (searched from `from`).
R region_at(const std::vector<R>& r, const std::string& text, const std::string& marker,
            size_t from = 0) {
  const size_t p = text.find(marker, from);
  EXPECT_NE(p, std::string::npos) << marker;
  return r[p + marker.size()];
}

TEST(DsmlGreedy, RegionsOfARealisticTurn) {
  const std::string text = kReasoning + kContent + kBlock;
  const auto r = regions_by_byte(text, true);
  // Reasoning: even a quoted DSML tag is reasoning (ds4 went greedy here).
  EXPECT_EQ(region_at(r, text, "I could write <｜DSML｜"), R::kReasoning);
  EXPECT_EQ(region_at(r, text, "<｜DSML｜tool_calls>"), R::kReasoning);
  EXPECT_EQ(region_at(r, text, "</think>"), R::kContent);
  EXPECT_EQ(region_at(r, text, "I'll create"), R::kContent);
  const size_t block = text.find("\n\n<｜DSML｜tool_calls>\n");
  EXPECT_EQ(r[block + 2], R::kContent);  // "<" alone: could be anything
  EXPECT_EQ(region_at(r, text, "<｜DSML", block), R::kContent);
  EXPECT_EQ(region_at(r, text, "<｜DSML｜", block), R::kStructural);  // only the tag can follow
  EXPECT_EQ(region_at(r, text, "<｜DSML｜tool", block), R::kStructural);
  EXPECT_EQ(region_at(r, text, "<｜DSML｜tool_calls>", block), R::kStructural);
  EXPECT_EQ(region_at(r, text, "invoke name=\"Wr"), R::kStructural);
  EXPECT_EQ(region_at(r, text, "name=\"file_"), R::kStructural);
  EXPECT_EQ(region_at(r, text, "string=\"true\">"), R::kStringBody);
  EXPECT_EQ(region_at(r, text, "/tmp/a.ht"), R::kStringBody);
  EXPECT_EQ(region_at(r, text, "/tmp/a.html<"), R::kStringBody);
  EXPECT_EQ(region_at(r, text, "/tmp/a.html</"), R::kStructural);  // the close tag is greedy
  EXPECT_EQ(region_at(r, text, "/tmp/a.html</｜DSML｜param"), R::kStructural);
  EXPECT_EQ(region_at(r, text, "/tmp/a.html</｜DSML｜parameter>"), R::kStructural);
  EXPECT_EQ(region_at(r, text, "<div>"), R::kStringBody);
  EXPECT_EQ(region_at(r, text, "<div>a</"), R::kStructural);   // might be the close tag...
  EXPECT_EQ(region_at(r, text, "<div>a</d"), R::kStringBody);  // ...it was not
  EXPECT_EQ(region_at(r, text, "</div> x </ y"), R::kStringBody);
  EXPECT_EQ(region_at(r, text, "string=\"false\">"), R::kJson);
  EXPECT_EQ(region_at(r, text, "{\"n"), R::kJsonString);  // a key is a string literal
  EXPECT_EQ(region_at(r, text, "{\"n\""), R::kJson);
  EXPECT_EQ(region_at(r, text, "{\"n\": 1"), R::kJson);
  EXPECT_EQ(region_at(r, text, "\"s\": \"q"), R::kJsonString);
  EXPECT_EQ(region_at(r, text, "\"s\": \"q\\\""), R::kJsonString);  // \" does not end it
  EXPECT_EQ(region_at(r, text, "\"s\": \"q\\\"<x>"), R::kJsonString);
  EXPECT_EQ(region_at(r, text, "<x>\\\\"), R::kJsonString);
  EXPECT_EQ(region_at(r, text, "<x>\\\\\""), R::kJson);  // \\ then the closing quote
  EXPECT_EQ(region_at(r, text, "[1, 2."), R::kJson);
  EXPECT_EQ(region_at(r, text, "true]}</"), R::kJson);
  EXPECT_EQ(region_at(r, text, "true]}</｜DSML｜parameter>"), R::kStructural);
  EXPECT_EQ(region_at(r, text, "</｜DSML｜invoke>\n"), R::kStructural);
  EXPECT_EQ(region_at(r, text, "name=\"command\">"), R::kStringBody);  // no string attribute
  EXPECT_EQ(region_at(r, text, "ls -"), R::kStringBody);
  EXPECT_EQ(r.back(), R::kContent);  // the block closed
  // force_greedy() follows the region.
  DsmlGreedyTracker t(false);
  t.on_text("\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"");
  EXPECT_TRUE(t.force_greedy());
  t.on_text("x\">\n<｜DSML｜parameter name=\"a\" string=\"true\">hello");
  EXPECT_FALSE(t.force_greedy());
  t.on_text("</｜DSML｜parameter>\n<｜DSML｜parameter name=\"b\" string=\"false\">[");
  EXPECT_TRUE(t.force_greedy());
  t.on_text("\"s");
  EXPECT_FALSE(t.force_greedy());
  t.on_text("\"]</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>");
  EXPECT_FALSE(t.force_greedy());
  EXPECT_EQ(t.blocks_closed(), 1);
}

TEST(DsmlGreedy, SplitAtEveryByteGivesTheSameRegions) {
  for (bool thinking : {true, false}) {
    const std::string text = (thinking ? kReasoning : std::string()) + kContent + kBlock;
    const auto ref = regions_by_byte(text, thinking);
    for (size_t cut = 0; cut <= text.size(); ++cut) {
      DsmlGreedyTracker t(thinking);
      t.on_text(std::string_view(text).substr(0, cut));
      ASSERT_EQ(t.region(), ref[cut]) << cut;
      ASSERT_EQ(t.region(), region_after(text.substr(0, cut), thinking)) << cut;
      t.on_text(std::string_view(text).substr(cut));
      ASSERT_EQ(t.region(), ref.back()) << cut;
    }
    // Token-like chunks of 1 to 8 bytes.
    std::mt19937 g(thinking);
    for (int it = 0; it < 200; ++it) {
      DsmlGreedyTracker t(thinking);
      size_t at = 0;
      while (at < text.size()) {
        const size_t len = std::min<size_t>(1 + g() % 8, text.size() - at);
        t.on_text(std::string_view(text).substr(at, len));
        at += len;
        ASSERT_EQ(t.region(), ref[at]) << at;
        ASSERT_EQ(t.force_greedy(), ref[at] == R::kStructural || ref[at] == R::kJson);
      }
    }
  }
}

TEST(DsmlGreedy, ChatModeAndEdgeCases) {
  // No thinking: DSML is live from the start; </think> means nothing special.
  EXPECT_EQ(region_after("<｜DSML｜tool_calls>", false), R::kStructural);
  EXPECT_EQ(region_after("<｜DSML｜tool_calls>", true), R::kReasoning);
  EXPECT_EQ(region_after("a < b and <｜DS", false), R::kContent);
  // A `>` inside an attribute value does not end the tag.
  EXPECT_EQ(region_after("<｜DSML｜tool_calls><｜DSML｜invoke name=\"a>b\"><｜DSML｜parameter "
                         "name=\"x>\" string=\"true\">v",
                         false),
            R::kStringBody);
  // string="false" with other attributes around it.
  EXPECT_EQ(region_after("<｜DSML｜tool_calls><｜DSML｜invoke name=\"f\"><｜DSML｜parameter "
                         "string=\"false\" name=\"n\">4",
                         false),
            R::kJson);
  // An unknown string attribute value means a string.
  EXPECT_EQ(region_after("<｜DSML｜tool_calls><｜DSML｜invoke name=\"f\"><｜DSML｜parameter "
                         "name=\"n\" string=\"yes\">4",
                         false),
            R::kStringBody);
  // The close tag ends a value even inside an unterminated JSON string.
  EXPECT_EQ(region_after("<｜DSML｜tool_calls><｜DSML｜invoke name=\"f\"><｜DSML｜parameter "
                         "name=\"n\" string=\"false\">\"abc</｜DSML｜parameter>",
                         false),
            R::kStructural);
  // A second block after the first.
  DsmlGreedyTracker t(false);
  t.on_text("<｜DSML｜tool_calls></｜DSML｜tool_calls> and <｜DSML｜tool_calls>\n");
  EXPECT_EQ(t.region(), R::kStructural);
  EXPECT_EQ(t.blocks_closed(), 1);
  EXPECT_STREQ(to_string(R::kJsonString), "json_string");
}

}  // namespace
}  // namespace dsv4
