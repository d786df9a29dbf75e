#include <gtest/gtest.h>

#include "text/utf8.h"

namespace u = dsv4::text::utf8;

namespace {
std::string lossy(std::string_view in, bool final, size_t* used = nullptr) {
  std::string out;
  const size_t n = u::append_lossy(in, out, final);
  if (used) *used = n;
  return out;
}
const std::string R(u::kReplacement);
}  // namespace

TEST(Utf8, Validity) {
  EXPECT_TRUE(u::is_valid(""));
  EXPECT_TRUE(u::is_valid("plain ascii"));
  EXPECT_TRUE(u::is_valid("è 好 😀"));
  EXPECT_FALSE(u::is_valid("\x80"));
  EXPECT_FALSE(u::is_valid("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(u::is_valid("\xE0\x80\xAF"));      // overlong
  EXPECT_FALSE(u::is_valid("\xED\xA0\x80"));      // surrogate D800
  EXPECT_FALSE(u::is_valid("\xF4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(u::is_valid("\xF5\x80\x80\x80"));
  EXPECT_FALSE(u::is_valid("\xE2\x82"));  // truncated
  EXPECT_EQ(u::valid_sequence_length("\xF0\x9F\x98\x80"), 4u);
  EXPECT_EQ(u::valid_sequence_length("\xF0\x9F\x98"), 0u);
}

TEST(Utf8, EncodeDecodeRoundTrip) {
  for (char32_t cp :
       {0x0u, 0x7Fu, 0x80u, 0x7FFu, 0x800u, 0xD7FFu, 0xE000u, 0xFFFDu, 0x10000u, 0x10FFFFu}) {
    std::string s;
    u::append(s, cp);
    ASSERT_EQ(u::valid_sequence_length(s), s.size());
    size_t len = 0;
    EXPECT_EQ(u::decode(s, &len), cp);
    EXPECT_EQ(len, s.size());
  }
}

TEST(Utf8, LossyMaximalSubparts) {
  EXPECT_EQ(lossy("ok", true), "ok");
  EXPECT_EQ(lossy("a\x80z", true), "a" + R + "z");
  // A truncated 3-byte sequence followed by ASCII is one maximal subpart.
  EXPECT_EQ(lossy("\xE2\x82z", true), R + "z");
  // Bad second byte: the lead alone is replaced, the next byte is looked at again.
  EXPECT_EQ(lossy("\xE0\x80\xAF", true), R + R + R);
  EXPECT_EQ(lossy("\xF0\x9F\x98", true), R);
  EXPECT_EQ(lossy("\xFF\xFE", true), R + R);
}

TEST(Utf8, LossyStreamingHoldsIncompleteTail) {
  size_t used = 0;
  EXPECT_EQ(lossy("ab\xF0\x9F", false, &used), "ab");
  EXPECT_EQ(used, 2u);  // "\xF0\x9F" may still complete
  EXPECT_EQ(lossy("ab\xF0\x9F", true, &used), "ab" + R);
  EXPECT_EQ(used, 4u);
  // Can no longer complete (ASCII follows): replaced even when not final.
  EXPECT_EQ(lossy("\xF0\x9Fx", false, &used), R + "x");
  EXPECT_EQ(used, 3u);
  // A lone continuation byte can never complete.
  EXPECT_EQ(lossy("\x80", false, &used), R);
  EXPECT_EQ(used, 1u);
}

TEST(Utf8, TerminalSafeNeutralisesControls) {
  auto safe = [](std::string_view in) {
    std::string out;
    u::append_terminal_safe(in, out);
    return out;
  };
  EXPECT_EQ(safe("plain text\n\ttab, caf\xC3\xA9 \xE2\x82\xAC"), "plain text\n\ttab, caf\xC3\xA9 \xE2\x82\xAC");
  EXPECT_EQ(safe("\x1b[2J"), "\xE2\x90\x9B[2J");       // ESC -> U+241B
  EXPECT_EQ(safe("a\x0e" "b"), "a\xE2\x90\x8E" "b");    // SO (charset switch) -> U+240E
  EXPECT_EQ(safe("\r"), "\xE2\x90\x8D");                // CR -> U+240D
  EXPECT_EQ(safe(std::string_view("\0", 1)), "\xE2\x90\x80");
  EXPECT_EQ(safe("\x7f"), "\xE2\x90\xA1");              // DEL -> U+2421
  EXPECT_EQ(safe("\xC2\x9B" "31m"), R + "31m");         // C1 CSI -> U+FFFD
  EXPECT_EQ(safe("\xC2\xA0"), "\xC2\xA0");              // U+00A0 is not a control
  // Nothing written contains a control byte other than \n and \t.
  std::string all;
  for (int c = 0; c < 0x80; ++c) all.push_back((char)c);
  for (unsigned char c : safe(all)) EXPECT_TRUE(c >= 0x20 || c == '\n' || c == '\t') << (int)c;
}
