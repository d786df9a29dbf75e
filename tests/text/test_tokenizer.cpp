// Tokenizer unit tests on a small hand-made vocabulary (no oracle needed).
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>

#include "core/error.h"
#include "gguf/gguf.h"
#include "small_vocab.h"
#include "text/tokenizer.h"
#include "text/vocab_convert.h"

using namespace dsv4::text;
using dsv4::text::testdata::byte_symbol;
using dsv4::text::testdata::small_vocab;
using Ids = std::vector<int32_t>;

namespace {

const Tokenizer& tok() {
  static const Tokenizer t = Tokenizer::from_vocab(small_vocab(true));
  return t;
}
int32_t id(std::string_view s) {
  auto v = tok().find_token(s);
  EXPECT_TRUE(v.has_value()) << s;
  return v.value_or(-1);
}
int32_t byte_id(uint8_t b) {
  return id(byte_symbol(b));
}

}  // namespace

TEST(ByteLevel, Gpt2Table) {
  // Printable bytes map to themselves, the other 68 to U+0100.. in byte order.
  EXPECT_EQ(byte_to_codepoint('!'), U'!');
  EXPECT_EQ(byte_to_codepoint('~'), U'~');
  EXPECT_EQ(byte_to_codepoint(0xA1), U'\u00A1');
  EXPECT_EQ(byte_to_codepoint(0xAC), U'\u00AC');
  EXPECT_EQ(byte_to_codepoint(0xAE), U'\u00AE');
  EXPECT_EQ(byte_to_codepoint(0xFF), U'\u00FF');
  EXPECT_EQ(byte_to_codepoint(0x00), U'\u0100');
  EXPECT_EQ(byte_to_codepoint(' '), U'\u0120');   // "Ġ"
  EXPECT_EQ(byte_to_codepoint('\n'), U'\u010A');  // "Ċ"
  EXPECT_EQ(byte_to_codepoint(0x7F), U'\u0121');
  EXPECT_EQ(byte_to_codepoint(0xAD), U'\u0143');  // the last of the 68
  std::set<char32_t> seen;
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = byte_to_codepoint(uint8_t(b));
    EXPECT_TRUE(seen.insert(cp).second);
    EXPECT_EQ(byte_from_codepoint(cp), b);
  }
  EXPECT_EQ(byte_from_codepoint(U'\u0144'), -1);
  EXPECT_EQ(byte_from_codepoint(U'好'), -1);
}

TEST(Bpe, MergesByLowestRank) {
  EXPECT_EQ(tok().encode_text("hello"), (Ids{id("hello")}));
  EXPECT_EQ(tok().encode_text("hello world"),
            (Ids{id("hello"), id("Ġwor"), byte_id('l'), byte_id('d')}));
  EXPECT_EQ(tok().encode_text("hell"), (Ids{id("hell")}));
  EXPECT_EQ(tok().encode_text("helo"), (Ids{id("he"), byte_id('l'), byte_id('o')}));
  EXPECT_EQ(tok().encode_text("xyz"), (Ids{byte_id('x'), byte_id('y'), byte_id('z')}));
}

TEST(Bpe, TiesGoLeftmost) {
  EXPECT_EQ(tok().encode_text("aaa"), (Ids{id("aa"), byte_id('a')}));
  EXPECT_EQ(tok().encode_text("aaaa"), (Ids{id("aa"), id("aa")}));
  EXPECT_EQ(tok().encode_text("aaaaa"), (Ids{id("aa"), id("aa"), byte_id('a')}));
  // "   x": pieces "  " and " x"; "Ġ Ġ" (rank 8) before "ĠĠ Ġ".
  EXPECT_EQ(tok().encode_text("    x"), (Ids{id("ĠĠĠ"), byte_id(' '), byte_id('x')}));
}

TEST(Bpe, QuadraticAndHeapAgree) {
  // A denser random merge table over a 4-letter alphabet, then random pieces up to the small
  // path's limit: both algorithms must give the same ids.
  std::mt19937 rng(1234);
  Vocab v;
  for (int b = 0; b < 256; ++b) v.tokens.push_back(byte_symbol(uint8_t(b)));
  std::vector<std::string> syms = {"a", "b", "c", "d"};
  std::set<std::string> have(v.tokens.begin(), v.tokens.end());
  while (v.merges.size() < 400) {
    const std::string& l = syms[rng() % syms.size()];
    const std::string& r = syms[rng() % syms.size()];
    if (l.size() + r.size() > 12 || have.count(l + r)) continue;
    v.merges.push_back(l + " " + r);
    v.tokens.push_back(l + r);
    have.insert(l + r);
    syms.push_back(l + r);
  }
  const Tokenizer t = Tokenizer::from_vocab(v, false);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s(1 + rng() % 48, 'a');
    for (char& c : s) c = char('a' + rng() % 4);
    Ids small, heap, automatic;
    t.bpe_piece_for_test(s, small, 1);
    t.bpe_piece_for_test(s, heap, 2);
    t.bpe_piece_for_test(s, automatic, 0);
    ASSERT_EQ(small, heap) << s;
    ASSERT_EQ(small, automatic) << s;
    EXPECT_EQ(t.decode_bytes(small), s);
  }
}

TEST(Bpe, LongPieceIsLinearish) {
  // One 1 MB piece of letters goes through the heap path (no quadratic blow-up).
  std::string s(1 << 20, 'a');
  const Ids ids = tok().encode_text(s);
  EXPECT_EQ(ids.size(), s.size() / 2);
  EXPECT_EQ(tok().decode_bytes(ids), s);
}

TEST(Specials, EncodeTextTreatsSpecialStringsAsText) {
  const Ids plain = tok().encode_text("<think>hi</think>");
  for (int32_t i : plain) EXPECT_FALSE(tok().is_special(i));
  EXPECT_EQ(tok().decode_bytes(plain), "<think>hi</think>");
  const Ids rendered = tok().encode_with_specials("<think>hi</think>");
  EXPECT_EQ(rendered, (Ids{tok().chat_tokens().think_start, byte_id('h'), byte_id('i'),
                           tok().chat_tokens().think_end}));
  const std::string prompt = std::string(special::kBos) + std::string(special::kUser) + "hello" +
                             std::string(special::kAssistant);
  EXPECT_EQ(tok().encode_with_specials(prompt), (Ids{tok().bos_id(), tok().chat_tokens().user,
                                                     id("hello"), tok().chat_tokens().assistant}));
  for (int32_t i : tok().encode_text(prompt)) EXPECT_FALSE(tok().is_special(i));
}

TEST(Specials, LeftmostLongest) {
  const int32_t x = tok().special_id("<x>"), xy = tok().special_id("<x>y");
  EXPECT_EQ(tok().encode_with_specials("<x>yz"), (Ids{xy, byte_id('z')}));
  EXPECT_EQ(tok().encode_with_specials("<x>z"), (Ids{x, byte_id('z')}));
  EXPECT_EQ(tok().encode_with_specials("<<x>"), (Ids{byte_id('<'), x}));
  EXPECT_EQ(tok().encode_with_specials(""), Ids{});
  EXPECT_FALSE(tok().find_special("hello").has_value());
  EXPECT_THROW(tok().special_id("<nope>"), dsv4::Error);
}

TEST(Specials, DerivedTypesWhenTheFileHasNone) {
  const Tokenizer t = Tokenizer::from_vocab(small_vocab(false));
  EXPECT_TRUE(t.is_special(t.bos_id()));
  EXPECT_TRUE(t.is_special(t.special_id("<x>y")));
  EXPECT_FALSE(t.is_special(*t.find_token("hello")));
  EXPECT_FALSE(t.is_special(*t.find_token("a")));
  EXPECT_EQ(t.token_type(*t.find_token("hello")), TokenType::Normal);
}

TEST(Decode, BytesAndSpecials) {
  const Ids ids = tok().encode_with_specials("<｜User｜>hello world\n");
  EXPECT_EQ(tok().decode(ids), "<｜User｜>hello world\n");
  EXPECT_EQ(tok().decode(ids, /*skip_special=*/true), "hello world\n");
  EXPECT_EQ(tok().token_bytes(byte_id(0xFF)), "\xFF");
  EXPECT_EQ(tok().decode(Ids{byte_id(0xFF), byte_id('a')}),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_THROW(tok().token_bytes(-1), dsv4::Error);
  EXPECT_THROW(tok().token_bytes(int32_t(tok().n_vocab())), dsv4::Error);
}

TEST(Decode, InvalidUtf8RoundTripsLosslessly) {
  const std::string s = "ok\xFF\xFE\xE2\x82 end\xF0\x9F";
  const Ids ids = tok().encode_text(s);
  EXPECT_EQ(tok().decode_bytes(ids), s);
}

TEST(StreamDecoder, EmojiSplitAcrossTokens) {
  StreamDecoder d(tok());
  const std::string emoji = "😀";  // F0 9F 98 80
  std::string out;
  for (size_t i = 0; i + 1 < emoji.size(); ++i) {
    d.push(byte_id(uint8_t(emoji[i])), out);
    EXPECT_EQ(out, "");
  }
  EXPECT_EQ(d.pending_bytes(), 3u);
  d.push(byte_id(uint8_t(emoji.back())), out);
  EXPECT_EQ(out, emoji);
  EXPECT_EQ(d.pending_bytes(), 0u);
  // A ZWJ family in single bytes, with text around it: output equals the bytes, and every
  // chunk that comes out is valid UTF-8.
  const std::string family = "a👨‍👩‍👧b";
  std::string all;
  for (unsigned char c : family) {
    const std::string chunk = d.push(byte_id(c));
    EXPECT_TRUE(utf8::is_valid(chunk));
    all += chunk;
  }
  all += d.finish();
  EXPECT_EQ(all, family);
}

TEST(StreamDecoder, InvalidBytes) {
  const std::string R(utf8::kReplacement);
  StreamDecoder d(tok());
  EXPECT_EQ(d.push(byte_id(0xFF)), R);   // can never start a sequence
  EXPECT_EQ(d.push(byte_id(0xF0)), "");  // may still complete
  EXPECT_EQ(d.push(byte_id('a')), R + "a");
  EXPECT_EQ(d.push(byte_id(0xE2)), "");
  EXPECT_EQ(d.push(byte_id(0x82)), "");
  EXPECT_EQ(d.finish(), R);  // incomplete at the end
  EXPECT_EQ(d.pending_bytes(), 0u);
  EXPECT_EQ(d.push(byte_id(0xC0)), R);  // overlong lead
  StreamDecoder skip(tok(), /*skip_special=*/true);
  EXPECT_EQ(skip.push(tok().bos_id()), "");
  StreamDecoder keep(tok());
  EXPECT_EQ(keep.push(tok().bos_id()), special::kBos);
}

TEST(Vocab, RejectsBrokenVocabularies) {
  {
    Vocab v = small_vocab(true);
    v.merges.push_back("nospace");
    EXPECT_THROW(Tokenizer::from_vocab(v), dsv4::Error);
  }
  {
    Vocab v = small_vocab(true);
    v.merges.push_back("zz qq");
    EXPECT_THROW(Tokenizer::from_vocab(v), dsv4::Error);
  }
  {
    Vocab v = small_vocab(true);
    v.tokens[0] = "not a byte";  // drops the byte token for 0x00
    EXPECT_THROW(Tokenizer::from_vocab(v), dsv4::Error);
  }
  {
    Vocab v = small_vocab(true);
    v.token_types.pop_back();
    EXPECT_THROW(Tokenizer::from_vocab(v), dsv4::Error);
  }
  {
    Vocab v = small_vocab(true);
    v.tokens.pop_back();  // "<x>y"
    v.tokens.pop_back();  // "<x>"
    v.tokens.pop_back();  // "｜DSML｜"
    v.token_types.resize(v.tokens.size());
    try {
      Tokenizer::from_vocab(v);
      ADD_FAILURE() << "no error";
    } catch (const dsv4::Error& e) {
      EXPECT_NE(std::string(e.what()).find("｜DSML｜"), std::string::npos) << e.what();
    }
    EXPECT_NO_THROW(Tokenizer::from_vocab(v, /*require_chat_tokens=*/false));
  }
}

namespace {
dsv4::gguf::File gguf_of(const std::vector<std::pair<std::string, dsv4::gguf::Value>>& kv) {
  dsv4::gguf::Writer w;
  for (const auto& [k, v] : kv) w.set(k, v);
  return dsv4::gguf::File::parse(dsv4::MappedFile::from_bytes(w.to_bytes(), "mem.gguf"));
}
}  // namespace

TEST(Gguf, RoundTripThroughTokenizerKeys) {
  const Vocab v = small_vocab(true);
  const auto kv = gguf_tokenizer_kv(v);
  const dsv4::gguf::File f = gguf_of(kv);
  const Tokenizer t = Tokenizer::from_gguf(f);
  EXPECT_EQ(t.n_vocab(), v.tokens.size());
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "joyai-llm");
  const std::string text = "<think>hello world</think>";
  EXPECT_EQ(t.encode_with_specials(text), tok().encode_with_specials(text));
  EXPECT_EQ(t.encode_text(text), tok().encode_text(text));
  EXPECT_EQ(t.bos_id(), tok().bos_id());
}

TEST(Gguf, RejectsWrongOrMissingKeys) {
  const auto base = gguf_tokenizer_kv(small_vocab(true));
  auto with = [&](const std::string& key, const dsv4::gguf::Value& val) {
    auto kv = base;
    for (auto& [k, v] : kv) {
      if (k == key) v = val;
    }
    return kv;
  };
  auto without = [&](const std::string& key) {
    auto kv = base;
    std::erase_if(kv, [&](const auto& p) { return p.first == key; });
    return kv;
  };
  auto expect_error = [](const auto& kv, const std::string& needle) {
    try {
      Tokenizer::from_gguf(gguf_of(kv));
      ADD_FAILURE() << "no error, expected one naming " << needle;
    } catch (const dsv4::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(with("tokenizer.ggml.model", dsv4::gguf::Value::str("llama")),
               "tokenizer.ggml.model");
  expect_error(with("tokenizer.ggml.pre", dsv4::gguf::Value::str("qwen2")), "tokenizer.ggml.pre");
  expect_error(with("tokenizer.ggml.bos_token_id", dsv4::gguf::Value::u32(5)),
               "tokenizer.ggml.bos_token_id");
  expect_error(without("tokenizer.ggml.tokens"), "tokenizer.ggml.tokens");
  expect_error(without("tokenizer.ggml.merges"), "tokenizer.ggml.merges");
  // A ds4-style file with only tokens and merges is fine (types derived).
  auto minimal = base;
  std::erase_if(minimal, [](const auto& p) {
    return p.first != "tokenizer.ggml.tokens" && p.first != "tokenizer.ggml.merges";
  });
  const Tokenizer t = Tokenizer::from_gguf(gguf_of(minimal));
  EXPECT_TRUE(t.is_special(t.chat_tokens().dsml));
  EXPECT_EQ(t.encode_with_specials("｜DSML｜x"), (Ids{t.chat_tokens().dsml, byte_id('x')}));
}

TEST(Concurrency, ManyThreadsShareOneTokenizer) {
  // The piece cache is shared: results must not depend on interleaving (run under ASan/TSan).
  std::vector<std::string> texts;
  std::mt19937 rng(3);
  for (int i = 0; i < 200; ++i) {
    std::string s;
    for (int k = 0; k < 40; ++k) s += std::string(" hello world aaaa")[rng() % 17];
    texts.push_back(s);
  }
  std::vector<Ids> expect;
  for (const auto& s : texts) expect.push_back(tok().encode_text(s));
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep) {
        for (size_t i = (t + rep) % texts.size(), n = 0; n < texts.size();
             ++n, i = (i + 1) % texts.size()) {
          if (tok().encode_text(texts[i]) != expect[i]) ++bad;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}
