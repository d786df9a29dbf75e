#include "text/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <limits>

#include "core/error.h"
#include "text/utf8.h"

namespace dsv4::text {
namespace {

// Unicode White_Space (PropList.txt; unchanged since Unicode 6.3): exactly the set HF tokenizers
// 0.23.2 treats as `\s` in these patterns (probed code point by code point). PCRE2's own `\s` adds
// U+180E and JavaScript's adds U+FEFF and drops U+0085, so the class is spelled out instead.
constexpr std::string_view kWhiteSpaceClass =
    "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

std::string to_pcre2(const std::string& json_pattern) {
  // Only the escapes \s and \S occur in these patterns (checked below); "\\s" cannot appear.
  const std::string ws = "[" + std::string(kWhiteSpaceClass) + "]";
  const std::string not_ws = "[^" + std::string(kWhiteSpaceClass) + "]";
  std::string p = replace_all(json_pattern, "\\S", not_ws);
  p = replace_all(p, "\\s", ws);
  return p;
}

struct Code {
  pcre2_code* code = nullptr;
  bool jit = false;
};

}  // namespace

const std::array<std::string, 3>& PreTokenizer::json_patterns() {
  static const std::array<std::string, 3> patterns = {
      "\\p{N}{1,3}",
      "[一-龥぀-ゟ゠-ヿ]+",
      "[!\"#$%&'()*+,\\-./"
      ":;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
      " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
  };
  return patterns;
}

const std::array<std::string, 3>& PreTokenizer::pcre2_patterns() {
  static const std::array<std::string, 3> patterns = {
      to_pcre2(json_patterns()[0]),
      to_pcre2(json_patterns()[1]),
      to_pcre2(json_patterns()[2]),
  };
  return patterns;
}

struct PreTokenizer::Impl {
  std::array<Code, 3> codes;
  ~Impl() {
    for (auto& c : codes) pcre2_code_free(c.code);
  }
};

PreTokenizer::PreTokenizer() : impl_(std::make_unique<Impl>()) {
  for (size_t i = 0; i < 3; ++i) {
    const std::string& pat = pcre2_patterns()[i];
    int err = 0;
    PCRE2_SIZE err_off = 0;
    pcre2_code* code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(),
                      PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &err_off, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      fail("pre-tokenizer: cannot compile pattern {} at offset {}: {}", i + 1, err_off,
           reinterpret_cast<const char*>(msg));
    }
    impl_->codes[i].code = code;
    impl_->codes[i].jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  }
}

PreTokenizer::~PreTokenizer() = default;
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;

bool PreTokenizer::jit() const {
  return impl_->codes[0].jit && impl_->codes[2].jit;
}

namespace {

struct MatchData {
  pcre2_match_data* md;
  MatchData() : md(pcre2_match_data_create(1, nullptr)) {
    if (md == nullptr) fail("pre-tokenizer: out of memory (pcre2_match_data_create)");
  }
  ~MatchData() { pcre2_match_data_free(md); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
};

// Splits the valid-UTF-8 piece [b, e) of `text` by `code` with Isolated behavior.
void isolate(const Code& code, const char* text, Span piece, pcre2_match_data* md,
             std::vector<Span>& out) {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text + piece.begin);
  const PCRE2_SIZE len = piece.end - piece.begin;
  PCRE2_SIZE pos = 0;
  while (pos < len) {
    const int rc =
        code.jit ? pcre2_jit_match(code.code, subject, len, pos, PCRE2_NO_UTF_CHECK, md, nullptr)
                 : pcre2_match(code.code, subject, len, pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      fail("pre-tokenizer: match failed: {}", reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    PCRE2_SIZE m0 = ov[0], m1 = ov[1];
    if (m1 <= m0) {  // no pattern here can match empty; never loop forever if one did
      size_t n = 0;
      utf8::decode(std::string_view(text + piece.begin + m0, len - m0), &n);
      m1 = m0 + n;
    }
    if (m0 > pos)
      out.push_back(
          {static_cast<uint32_t>(piece.begin + pos), static_cast<uint32_t>(piece.begin + m0)});
    out.push_back(
        {static_cast<uint32_t>(piece.begin + m0), static_cast<uint32_t>(piece.begin + m1)});
    pos = m1;
  }
  if (pos < len) out.push_back({static_cast<uint32_t>(piece.begin + pos), piece.end});
}

}  // namespace

void PreTokenizer::split(std::string_view text, std::vector<Span>& out) const {
  out.clear();
  if (text.empty()) return;
  if (text.size() >= std::numeric_limits<uint32_t>::max()) {
    fail("pre-tokenizer: text of {} bytes is too long (limit 4 GiB)", text.size());
  }
  // Stage 0: valid UTF-8 stretches, and every ill-formed byte on its own. `bad` marks which.
  std::vector<Span> cur;
  std::vector<uint8_t> bad;
  {
    const auto* p = reinterpret_cast<const uint8_t*>(text.data());
    size_t start = 0, i = 0;
    while (i < text.size()) {
      if (p[i] < 0x80) {
        ++i;
        continue;
      }
      const size_t n = utf8::valid_sequence_length(text.substr(i));
      if (n > 0) {
        i += n;
        continue;
      }
      if (i > start) {
        cur.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(i)});
        bad.push_back(0);
      }
      cur.push_back({static_cast<uint32_t>(i), static_cast<uint32_t>(i + 1)});
      bad.push_back(1);
      start = ++i;
    }
    if (start < text.size()) {
      cur.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(text.size())});
      bad.push_back(0);
    }
  }
  MatchData md;
  std::vector<Span> next;
  next.reserve(cur.size() + text.size() / 4);
  for (size_t stage = 0; stage < 3; ++stage) {
    next.clear();
    std::vector<uint8_t> next_bad;
    const bool last = stage == 2;
    for (size_t k = 0; k < cur.size(); ++k) {
      if (bad[k]) {
        next.push_back(cur[k]);
        if (!last) next_bad.push_back(1);
        continue;
      }
      const size_t before = next.size();
      isolate(impl_->codes[stage], text.data(), cur[k], md.md, next);
      if (!last) next_bad.resize(next_bad.size() + (next.size() - before), 0);
    }
    if (last) {
      out.swap(next);
    } else {
      cur.swap(next);
      bad.swap(next_bad);
    }
  }
}

std::vector<std::string> PreTokenizer::split_strings(std::string_view text) const {
  std::vector<Span> spans;
  split(text, spans);
  std::vector<std::string> out;
  out.reserve(spans.size());
  for (const Span& s : spans) out.emplace_back(text.substr(s.begin, s.end - s.begin));
  return out;
}

const std::vector<uint8_t>& char_class_table() {
  static const std::vector<uint8_t> table = [] {
    const std::pair<std::string, uint8_t> classes[] = {
        {"\\p{L}", kClassL},   {"\\p{M}", kClassM},
        {"\\p{N}", kClassN},   {"\\p{P}", kClassP},
        {"\\p{S}", kClassS},   {"[" + std::string(kWhiteSpaceClass) + "]", kClassSpace},
        {"\\p{Cn}", kClassCn},
    };
    std::vector<uint8_t> t(0x110000, 0);
    MatchData md;
    for (const auto& [pat, bit] : classes) {
      const std::string anchored = "^" + pat + "$";
      int err = 0;
      PCRE2_SIZE off = 0;
      pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(anchored.data()),
                                       anchored.size(), PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
      if (code == nullptr) fail("char_class_table: cannot compile {}", anchored);
      const bool jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
      std::string buf;
      for (char32_t cp = 0; cp < 0x110000; ++cp) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        buf.clear();
        utf8::append(buf, cp);
        const auto* subj = reinterpret_cast<PCRE2_SPTR>(buf.data());
        const int rc =
            jit ? pcre2_jit_match(code, subj, buf.size(), 0, PCRE2_NO_UTF_CHECK, md.md, nullptr)
                : pcre2_match(code, subj, buf.size(), 0, PCRE2_NO_UTF_CHECK, md.md, nullptr);
        if (rc >= 0) t[cp] |= bit;
      }
      pcre2_code_free(code);
    }
    return t;
  }();
  return table;
}

std::string unicode_version() {
  char buf[64] = {};
  pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, buf);
  return buf;
}

}  // namespace dsv4::text
