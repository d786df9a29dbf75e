// A small hand-made byte-level vocabulary for unit tests: the 256 byte symbols (ids 0..255 in
// byte order), a few merges, and the seven chat tokens.
#pragma once
#include <string>
#include <vector>

#include "text/tokenizer.h"
#include "text/utf8.h"

namespace dsv4::text::testdata {

inline std::string byte_symbol(uint8_t b) {
  std::string s;
  utf8::append(s, byte_to_codepoint(b));
  return s;
}

// Merges in rank order; each adds its concatenation as a new token.
inline const std::vector<std::string>& small_merges() {
  static const std::vector<std::string> m = {
      "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "a a", "Ġ Ġ", "ĠĠ Ġ",
  };
  return m;
}

inline const std::vector<std::string>& small_specials() {
  static const std::vector<std::string> s = {
      std::string(special::kBos),
      std::string(special::kEos),
      std::string(special::kUser),
      std::string(special::kAssistant),
      std::string(special::kThinkStart),
      std::string(special::kThinkEnd),
      std::string(special::kDsml),
      "<x>",
      "<x>y",
  };
  return s;
}

// Token types are left empty unless `with_types`: then the reader must derive them.
inline Vocab small_vocab(bool with_types) {
  Vocab v;
  for (int b = 0; b < 256; ++b) v.tokens.push_back(byte_symbol(uint8_t(b)));
  for (const std::string& m : small_merges()) {
    const size_t sp = m.find(' ');
    v.tokens.push_back(m.substr(0, sp) + m.substr(sp + 1));
    v.merges.push_back(m);
  }
  const size_t n_normal = v.tokens.size();
  for (const std::string& s : small_specials()) v.tokens.push_back(s);
  if (with_types) {
    v.token_types.assign(v.tokens.size(), int32_t(TokenType::Normal));
    for (size_t i = n_normal; i < v.tokens.size(); ++i) {
      v.token_types[i] = int32_t(TokenType::Control);
    }
  }
  return v;
}

}  // namespace dsv4::text::testdata
