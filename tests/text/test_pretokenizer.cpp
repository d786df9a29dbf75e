// Pre-tokenizer splits on crafted strings. Every expectation here was checked against the
// @lenml/tokenizers oracle (tests/oracles/tokenizer/oracle.js --pieces) except where a comment
// says the oracle differs (\s = White_Space, see pretokenizer.h).
#include <gtest/gtest.h>

#include "text/pretokenizer.h"

using dsv4::text::PreTokenizer;
using V = std::vector<std::string>;

namespace {
const PreTokenizer& pre() {
  static const PreTokenizer p;
  return p;
}
V split(std::string_view s) {
  return pre().split_strings(s);
}
}  // namespace

TEST(PreTokenizer, JitIsUsedWhenAvailable) {
  // Not a requirement, but a slow fallback should be noticed.
  RecordProperty("jit", pre().jit() ? "yes" : "no");
  SUCCEED();
}

TEST(PreTokenizer, DigitsInRunsOfOneToThree) {
  EXPECT_EQ(split("12345"), (V{"123", "45"}));
  EXPECT_EQ(split("abc 1234567"), (V{"abc", " ", "123", "456", "7"}));
  EXPECT_EQ(split("ab12c"), (V{"ab", "12", "c"}));
  EXPECT_EQ(split("١٢٣٤٥"), (V{"١٢٣", "٤٥"}));  // Arabic-Indic digits are \p{N}
  EXPECT_EQ(split("Ⅻ ½ ² ٣"), (V{"Ⅻ", " ", "½", " ", "²", " ", "٣"}));
  EXPECT_EQ(split("x１２３４y"), (V{"x", "１２３", "４", "y"}));  // fullwidth digits
}

TEST(PreTokenizer, CjkAndKanaRuns) {
  EXPECT_EQ(split("你好世界abc"), (V{"你好世界", "abc"}));
  EXPECT_EQ(split("好。\n下一行"), (V{"好", "。\n", "下一行"}));
  EXPECT_EQ(split("ｶﾀｶﾅ ひらがな 漢字"), (V{"ｶﾀｶﾅ", " ", "ひらがな", " ", "漢字"}));
  EXPECT_EQ(split("カタカナとひらがな"), (V{"カタカナとひらがな"}));
}

TEST(PreTokenizer, PunctuationKeepsTrailingNewlines) {
  EXPECT_EQ(split("Hello, world!\n\n"), (V{"Hello", ",", " world", "!\n\n"}));
  EXPECT_EQ(split("x.\"\n"), (V{"x", ".\"\n"}));
  EXPECT_EQ(split(" ...\r\n\r\nz"), (V{" ...\r\n\r\n", "z"}));
  EXPECT_EQ(split("end;\n}\n"), (V{"end", ";\n", "}\n"}));
  EXPECT_EQ(split("dell’anno"), (V{"dell", "’", "anno"}));
  EXPECT_EQ(split("”\n"), (V{"”\n"}));
  EXPECT_EQ(split("(foo"), (V{"(foo"}));  // one ASCII punct + ASCII letters
  EXPECT_EQ(split("<｜User｜>"), (V{"<｜", "User", "｜>"}));
}

TEST(PreTokenizer, WhitespaceRules) {
  EXPECT_EQ(split("    int x;"), (V{"   ", " int", " x", ";"}));
  EXPECT_EQ(split("a\r\nb"), (V{"a", "\r\n", "b"}));
  EXPECT_EQ(split("x  \n  y"), (V{"x", "  \n", " ", " y"}));
  EXPECT_EQ(split("  \t\n"), (V{"  \t\n"}));
  EXPECT_EQ(split("tab\there"), (V{"tab", "\there"}));
  EXPECT_EQ(split("a  "), (V{"a", "  "}));
  EXPECT_EQ(split("a\u00A0b"), (V{"a", "\u00A0b"}));                  // NBSP prefixes the word
  EXPECT_EQ(split("a\u3000\u3000b"), (V{"a", "\u3000", "\u3000b"}));  // ideographic space
  EXPECT_EQ(split("\u200Bx"), (V{"\u200Bx"}));                        // ZWSP is Cf, not space
}

TEST(PreTokenizer, WhiteSpaceIsTheUnicodeProperty) {
  // "cc\nx" splits as {"cc\n", "x"} exactly when c is \s (`\s*[\r\n]+`). The set is Unicode
  // White_Space, as HF tokenizers 0.23.2 does (checked on all of U+0000..U+0020, U+007F, U+0085,
  // U+00A0, U+1680, U+180E, U+2000..U+200F, U+2028/9, U+202F, U+205F, U+2060, U+3000, U+FEFF).
  // JavaScript's \s (the npm oracle) adds U+FEFF and lacks U+0085; PCRE2's own \s adds U+180E.
  auto is_space = [](std::string c) {
    const V v = split(c + c + "\nx");
    return v == V{c + c + "\n", "x"};
  };
  for (const char* c : {"\t", "\v", "\f", " ", "\u0085", "\u00A0", "\u1680", "\u2000", "\u200A",
                        "\u2028", "\u2029", "\u202F", "\u205F", "\u3000"}) {
    EXPECT_TRUE(is_space(c)) << split(std::string(c) + c + "\nx").size();
  }
  for (const char* c : {"\x1C", "\x1F", "\u180E", "\u200B", "\u2060", "\uFEFF", "\x7F", "\x01"}) {
    EXPECT_FALSE(is_space(c));
  }
  EXPECT_EQ(split("\uFEFFword"), (V{"\uFEFFword"}));  // a non-space prefix joins the word
}

TEST(PreTokenizer, MarksAndEmoji) {
  EXPECT_EQ(split("e\u0301t\u00e9"), (V{"e\u0301t\u00e9"}));
  EXPECT_EQ(split("\u0301\u0301x"), (V{"\u0301\u0301x"}));
  EXPECT_EQ(split("👍🏽 👨‍👩‍👧"),
            (V{"👍🏽", " 👨", "\u200D", "👩", "\u200D", "👧"}));
}

TEST(PreTokenizer, PiecesTileTheText) {
  const std::string s = "mixed: 12345 你好 ¿qué? \r\n\t\u00A0end";
  std::vector<dsv4::text::Span> spans;
  pre().split(s, spans);
  uint32_t at = 0;
  for (const auto& sp : spans) {
    EXPECT_EQ(sp.begin, at);
    EXPECT_LT(sp.begin, sp.end);
    at = sp.end;
  }
  EXPECT_EQ(at, s.size());
}

TEST(PreTokenizer, InvalidUtf8BytesAreTheirOwnPieces) {
  EXPECT_EQ(split("ab\xFF"
                  "cd"),
            (V{"ab", "\xFF", "cd"}));
  EXPECT_EQ(split("\xE2\x82 x"), (V{"\xE2", "\x82", " x"}));
  EXPECT_EQ(split("12\x80"
                  "345"),
            (V{"12", "\x80", "345"}));
  EXPECT_EQ(split(std::string("a\0b", 3)), (V{"a", std::string("\0b", 2)}));  // NUL is Cc
}

TEST(PreTokenizer, EmptyAndLong) {
  EXPECT_TRUE(split("").empty());
  const std::string spaces(100000, ' ');
  EXPECT_EQ(split(spaces), (V{spaces}));
  std::string words;
  for (int i = 0; i < 20000; ++i) words += " word";
  EXPECT_EQ(split(words).size(), 20000u);
}
