// The DeepSeek V3 / V4 pre-tokenizer: the three `Split` (behavior Isolated) regexes of the
// published tokenizer.json, applied in sequence, each re-splitting every piece of the previous
// step (HF tokenizers semantics: matches and the stretches between them both become pieces, and
// a later regex only sees one piece at a time). The ByteLevel step that follows (use_regex=false)
// only maps bytes, so the pieces here are exactly what BPE sees.
//
// Unicode classes are PCRE2's (PCRE2_UTF | PCRE2_UCP, JIT-compiled when available), so \p{L},
// \p{M}, \p{N}, \p{P}, \p{S} are the real general categories, not ds4's "every non-ASCII byte is
// a letter" approximation. `\s` / `\S` are replaced by the Unicode White_Space property: that is
// what HF tokenizers matches (checked on tokenizers 0.23.2), while PCRE2's own \s adds U+180E and
// JavaScript's (transformers.js) adds U+FEFF and lacks U+0085.
//
// Unicode version: the categories are those of the linked libpcre2 (10.42 on Debian 12: Unicode
// 14.0; see unicode_version()). Code points assigned later (CJK Ext. H/I, Kawi, Garay, ...) are
// "unassigned" here, so text containing them can split differently from HF tokenizers 0.23.2
// (Unicode 16.0) or Node 20 (Unicode 17.0). Everything else matched both exactly in testing.
//
// Text that is not valid UTF-8 is still tokenized losslessly: each ill-formed byte becomes a
// piece of its own (BPE then gives its byte token) and the valid stretches between such bytes are
// split as usual. HF tokenizers cannot take such input at all.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4::text {

// A piece of the input: bytes [begin, end).
struct Span {
  uint32_t begin = 0;
  uint32_t end = 0;
};

// Character classes as this engine sees them (for tests that compare against other engines).
enum CharClass : uint8_t {
  kClassL = 1,       // \p{L}
  kClassM = 2,       // \p{M}
  kClassN = 4,       // \p{N}
  kClassP = 8,       // \p{P}
  kClassS = 16,      // \p{S}
  kClassSpace = 32,  // what the patterns use for \s (Unicode White_Space)
  kClassCn = 64,     // unassigned in PCRE2's Unicode version
};
// The classes of every code point 0..0x10FFFF (surrogates are 0), computed once with PCRE2.
const std::vector<uint8_t>& char_class_table();
// PCRE2's Unicode version, e.g. "14.0.0".
std::string unicode_version();

class PreTokenizer {
 public:
  // The three patterns exactly as they appear in DeepSeek V3's tokenizer.json (pre_tokenizer
  // Sequence → Split.pattern.Regex); vocab_convert checks a tokenizer.json against these.
  static const std::array<std::string, 3>& json_patterns();
  // The same patterns as compiled here (\s and \S spelled out as White_Space classes).
  static const std::array<std::string, 3>& pcre2_patterns();

  PreTokenizer();
  ~PreTokenizer();
  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Appends the pieces of `text` to `out` (cleared first), in order; they tile the text. Text
  // longer than 4 GiB is rejected. Thread-safe (const, no shared mutable state).
  void split(std::string_view text, std::vector<Span>& out) const;
  std::vector<std::string> split_strings(std::string_view text) const;  // convenience for tests

  bool jit() const;  // whether the patterns run JIT-compiled

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4::text
