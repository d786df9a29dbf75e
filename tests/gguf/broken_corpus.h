// The broken-file corpus (tests/data/gguf_broken) and the valid fuzz seeds (tests/fuzz/seeds),
// built byte by byte so that each file has exactly one thing wrong. make_broken_corpus writes
// them out; test_gguf checks that the committed files match and fail as EXPECTED.txt says.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsv4::gguf::corpus {

struct CorpusFile {
  std::string name;  // file name, e.g. "bad_magic.gguf"
  std::vector<uint8_t> bytes;
  std::vector<std::string> expect;  // substrings the error message must contain (broken only)
};

std::vector<CorpusFile> broken_corpus();
std::vector<CorpusFile> valid_seeds();

// A small valid file with metadata and two tensors (used by truncation and bit-flip tests).
std::vector<uint8_t> small_valid_file();

}  // namespace dsv4::gguf::corpus
