// Test text for the tokenizer: the conformance corpus from shared/, hand-written samples that
// cover code, many scripts, emoji, unusual whitespace and numerals, and random Unicode strings.
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace dsv4::text::testdata {

// $DSV4_CONFORMANCE_DIR, else <source>/../shared/conformance; "" when that is not a directory.
std::string conformance_dir();
// $DSV4_TOKENIZER_JSON, else the V3 tokenizer.json inside the npm oracle's node_modules; "" when
// the file does not exist.
std::string tokenizer_json_path();
std::string oracle_dir();  // tests/oracles/tokenizer

std::string read_file(const std::string& path);  // throws dsv4::Error

struct Doc {
  std::string name;
  std::string text;
};
// Every text file of the conformance set: api-vectors prompts, corpora, encoding tests and
// READMEs. Empty when `dir` is empty.
std::vector<Doc> conformance_docs(const std::string& dir);

// Hand-written samples: code in several languages, prose in many scripts, emoji with skin tones
// and ZWJ sequences, CRLF, NBSP / zero-width / ideographic spaces, digits of several scripts,
// `。\n`, `”\n`, `Ⅻ ½ ² ٣`, special-token strings inside text.
const std::vector<std::string>& generated_samples();

// `n` random valid-UTF-8 strings of 1..64 code points drawn from a mix of classes (ASCII, all
// kinds of whitespace, combining marks, digits of many scripts, punctuation and symbols, CJK,
// kana, Hangul, emoji and modifiers, and uniformly from all planes). Code points in `exclude`
// are never produced. Deterministic for a given seed.
std::vector<std::string> random_strings(size_t n, uint64_t seed, const std::set<char32_t>& exclude);

// About `bytes` bytes of mixed text (conformance documents when present, else the samples).
std::string mixed_text(size_t bytes);

}  // namespace dsv4::text::testdata
