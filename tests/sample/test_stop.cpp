// StopChecker: stop tokens, max tokens, and stop strings across token boundaries with the
// streaming hold-back.
#include <gtest/gtest.h>

#include <random>

#include "sample/stop.h"

namespace dsv4 {
namespace {

StopParams strings(std::vector<std::string> s) {
  StopParams p;
  p.stop_strings = std::move(s);
  return p;
}

// The reference: the first byte where a stop string completes; the longest among those.
std::string reference(const std::string& text, const std::vector<std::string>& stops, bool* hit) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t best = 0;
    for (const auto& s : stops)
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0)
        best = std::max(best, s.size());
    if (best) {
      *hit = true;
      return text.substr(0, end - best);
    }
  }
  *hit = false;
  return text;
}

// Feeds `text` cut at `cuts` as a generation loop does; checks that streamed output is never
// retracted and returns everything output.
std::string stream(const std::string& text, const std::vector<size_t>& cuts, StopParams p,
                   Finish* fin) {
  StopChecker st(std::move(p));
  std::string out;
  size_t at = 0;
  *fin = Finish::kNone;
  for (size_t i = 0; i <= cuts.size(); ++i) {
    const size_t end = i < cuts.size() ? cuts[i] : text.size();
    const Finish f = st.on_text(std::string_view(text).substr(at, end - at));
    at = end;
    if (f == Finish::kStopString) {
      *fin = f;
      out += st.take_all();
      return out;
    }
    const size_t safe = st.safe_len();
    EXPECT_LE(safe, st.pending().size());
    out += st.take_safe();
  }
  out += st.take_all();
  return out;
}

TEST(StopStrings, OverlappingPrefixAtEverySplit) {
  const std::string text = "aababc";
  // Every way to cut the text into tokens.
  for (uint32_t mask = 0; mask < (1u << (text.size() - 1)); ++mask) {
    std::vector<size_t> cuts;
    for (size_t i = 1; i < text.size(); ++i)
      if (mask & (1u << (i - 1))) cuts.push_back(i);
    Finish f;
    EXPECT_EQ(stream(text, cuts, strings({"abc"}), &f), "aab") << mask;
    EXPECT_EQ(f, Finish::kStopString);
  }
}

TEST(StopStrings, HoldBackOnlyWhatCouldStillMatch) {
  StopChecker st(strings({"abc"}));
  st.on_text("xxa");
  EXPECT_EQ(st.safe_len(), 2u);
  EXPECT_EQ(st.take_safe(), "xx");
  st.on_text("b");
  EXPECT_EQ(st.safe_len(), 0u);  // "ab" may become "abc"
  st.on_text("a");               // "aba": only the last "a" is still a prefix
  EXPECT_EQ(st.take_safe(), "ab");
  EXPECT_EQ(st.on_text("bd"), Finish::kNone);
  EXPECT_EQ(st.take_safe(), "abd");
  EXPECT_EQ(st.on_text("zab"), Finish::kNone);
  EXPECT_EQ(st.take_safe(), "z");
  EXPECT_EQ(st.on_text("cTAIL"), Finish::kStopString);  // text after the match is dropped
  EXPECT_EQ(st.take_all(), "");
  EXPECT_EQ(st.matched(), "abc");
  EXPECT_EQ(st.on_text("more"), Finish::kNone);  // ignored after a stop
  EXPECT_EQ(st.take_all(), "");
}

TEST(StopStrings, FirstCompletionWinsLongestOnTies) {
  Finish f;
  // "bc" completes before "abcd" could: cut at "a".
  EXPECT_EQ(stream("xabcd", {}, strings({"abcd", "bc"}), &f), "xa");
  // Both end on the same byte: the longer (earlier start) wins.
  StopChecker st(strings({"bc", "abc"}));
  EXPECT_EQ(st.on_text("xabcy"), Finish::kStopString);
  EXPECT_EQ(st.take_all(), "x");
  EXPECT_EQ(st.matched(), "abc");
  // The match at the very start of the output.
  EXPECT_EQ(stream("STOP", {1, 2, 3}, strings({"STOP"}), &f), "");
  EXPECT_EQ(f, Finish::kStopString);
}

TEST(StopStrings, MultiByteUtf8SplitInsideACharacter) {
  const std::string stop = "｜end";  // U+FF5C is 3 bytes
  const std::string text = "ok ｜en ｜end after";
  for (size_t a = 1; a < text.size(); ++a) {
    for (size_t b = a + 1; b < text.size(); ++b) {
      Finish f;
      ASSERT_EQ(stream(text, {a, b}, strings({stop}), &f), "ok ｜en ") << a << " " << b;
    }
  }
}

TEST(StopStrings, RandomTextsMatchTheReferenceUnderRandomSplits) {
  std::mt19937 g(3);
  auto rnd = [&](size_t n) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s.push_back("abc"[g() % 3]);
    return s;
  };
  for (int it = 0; it < 3000; ++it) {
    std::vector<std::string> stops;
    const int ns = 1 + (int)(g() % 3);
    for (int i = 0; i < ns; ++i) stops.push_back(rnd(1 + g() % 4));
    const std::string text = rnd(g() % 30);
    std::vector<size_t> cuts;
    for (size_t i = 1; i < text.size(); ++i)
      if (g() % 3 == 0) cuts.push_back(i);
    bool hit;
    const std::string want = reference(text, stops, &hit);
    Finish f;
    ASSERT_EQ(stream(text, cuts, strings(stops), &f), want) << text;
    ASSERT_EQ(f == Finish::kStopString, hit) << text;
  }
}

TEST(StopStrings, NoStopsMeansNoHoldBack) {
  StopChecker st(StopParams{});
  st.on_text("abc");
  EXPECT_EQ(st.take_safe(), "abc");
}

TEST(StopTokens, StopTokenAndMaxTokens) {
  StopParams p;
  p.stop_tokens = {1, 7};
  p.max_tokens = 3;
  StopChecker st(p);
  EXPECT_EQ(st.on_token(5), Finish::kNone);
  EXPECT_EQ(st.on_token(7), Finish::kStopToken);
  EXPECT_EQ(st.finish(), Finish::kStopToken);

  StopChecker len(p);
  EXPECT_EQ(len.on_token(5), Finish::kNone);
  EXPECT_EQ(len.on_token(6), Finish::kNone);
  EXPECT_EQ(len.on_token(8), Finish::kLength);
  EXPECT_EQ(len.n_tokens(), 3);
  // The last token's text still counts, and a stop string in it takes precedence.
  StopParams q = p;
  q.stop_strings = {"END"};
  StopChecker both(q);
  both.on_token(2);
  both.on_token(3);
  EXPECT_EQ(both.on_token(4), Finish::kLength);
  EXPECT_EQ(both.on_text("xEND"), Finish::kStopString);
  EXPECT_EQ(both.finish(), Finish::kStopString);
  EXPECT_EQ(both.take_all(), "x");

  StopParams unlimited;
  StopChecker u(unlimited);
  for (int i = 0; i < 100000; ++i) ASSERT_EQ(u.on_token(3), Finish::kNone);
}

TEST(StopTokens, ConstructorValidates) {
  StopParams p;
  p.max_tokens = 0;
  EXPECT_THROW(StopChecker{p}, ParamError);
}

}  // namespace
}  // namespace dsv4
