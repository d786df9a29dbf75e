// Byte-level BPE tokenizer of DeepSeek V4 (the DeepSeek V3 base vocabulary and merges plus V4's
// added-token table), built from the GGUF keys tokenizer.ggml.tokens / .merges / .token_type.
//
// Two entry points, and the difference matters for safety (spec/SERVER.md §1.5):
//   encode_text(text)           every byte of `text` goes through the pre-tokenizer and BPE;
//                               special-token strings inside it are ordinary text. Use it for
//                               anything a client wrote (message content, tool arguments...).
//   encode_with_specials(text)  first splits out every added-token string (leftmost-longest,
//                               like HF tokenizers' AddedVocabulary), then BPE-encodes the rest.
//                               Only for text the engine rendered itself.
//
// Special tokens are found by their strings, never by hard-coded ids. All methods are const and
// thread-safe; the piece cache inside is internally synchronized.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/pretokenizer.h"

namespace dsv4::gguf {
class File;
}

namespace dsv4::text {

// Strings of the tokens the chat format uses. `｜` is U+FF5C, `▁` is U+2581.
namespace special {
inline constexpr std::string_view kBos = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kUser = "<｜User｜>";
inline constexpr std::string_view kAssistant = "<｜Assistant｜>";
inline constexpr std::string_view kThinkStart = "<think>";
inline constexpr std::string_view kThinkEnd = "</think>";
inline constexpr std::string_view kDsml = "｜DSML｜";
inline constexpr std::string_view kLatestReminder = "<｜latest_reminder｜>";
// Quick-instruction task tokens (encoding/README.md of the V4 release).
inline constexpr std::string_view kAction = "<｜action｜>";
inline constexpr std::string_view kQuery = "<｜query｜>";
inline constexpr std::string_view kAuthority = "<｜authority｜>";
inline constexpr std::string_view kDomain = "<｜domain｜>";
inline constexpr std::string_view kTitle = "<｜title｜>";
inline constexpr std::string_view kExtractedUrl = "<｜extracted_url｜>";
inline constexpr std::string_view kReadUrl = "<｜read_url｜>";
}  // namespace special

// GGUF tokenizer.ggml.token_type values (llama.cpp's llama_token_type numbering).
enum class TokenType : int32_t {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
};

// The raw vocabulary: what the GGUF keys hold.
struct Vocab {
  std::vector<std::string> tokens;  // id -> token string (GPT-2 byte-to-unicode encoded)
  std::vector<std::string> merges;  // "left right", rank = index
  // id -> TokenType; may be empty: then the added tokens are the ones BPE cannot produce (not a
  // single byte symbol and not the result of any merge), which is exact for DeepSeek's vocab.
  std::vector<int32_t> token_types;
};

// The ids of the tokens the chat format needs (resolved by string).
struct ChatTokens {
  int32_t bos = -1, eos = -1, user = -1, assistant = -1, think_start = -1, think_end = -1,
          dsml = -1;
};

// GPT-2's byte <-> unicode table: bytes 33-126, 161-172 and 174-255 map to themselves, the other
// 68 bytes to U+0100.. in increasing byte order.
char32_t byte_to_codepoint(uint8_t b);
// The byte a code point stands for, or -1 when it is not in the table.
int byte_from_codepoint(char32_t cp);

class Tokenizer {
 public:
  // Reads tokenizer.ggml.tokens, .merges and (optional) .token_type; checks .model == "gpt2" and
  // .pre in {"joyai-llm", "deepseek-v3"} when present, and that .bos/.eos_token_id, when
  // present, agree with the BOS/EOS strings. Needs no tensors. Throws dsv4::Error naming the
  // key or token on any problem, including a missing chat token (ChatTokens).
  static Tokenizer from_gguf(const gguf::File& file);
  // From in-memory vocabulary; with `require_chat_tokens` false, small hand-made vocabularies
  // without the chat tokens are accepted (chat_tokens() then throws).
  static Tokenizer from_vocab(Vocab vocab, bool require_chat_tokens = true);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  size_t n_vocab() const;

  // Plain text -> ids; special-token strings are not recognized. Appends to `out`.
  void encode_text(std::string_view text, std::vector<int32_t>& out) const;
  std::vector<int32_t> encode_text(std::string_view text) const;
  // Rendered prompt -> ids: added-token strings become their ids. Appends to `out`.
  void encode_with_specials(std::string_view text, std::vector<int32_t>& out) const;
  std::vector<int32_t> encode_with_specials(std::string_view text) const;

  // The id of the token whose vocabulary string is exactly `token` (any token, e.g. "Ġthe").
  std::optional<int32_t> find_token(std::string_view token) const;
  // The id of the added/special token with string `s`, if there is one.
  std::optional<int32_t> find_special(std::string_view s) const;
  // Like find_special, but throws naming `s` when absent.
  int32_t special_id(std::string_view s) const;
  // True for added tokens (Control, UserDefined, Unused): the ones encode_with_specials splits
  // out and BPE never produces.
  bool is_special(int32_t id) const;
  TokenType token_type(int32_t id) const;
  const ChatTokens& chat_tokens() const;  // throws if the vocabulary lacks one of them
  int32_t bos_id() const { return chat_tokens().bos; }
  int32_t eos_id() const { return chat_tokens().eos; }

  // The vocabulary string of `id` (byte-level encoded for normal tokens). Throws when out of
  // range.
  std::string_view token_string(int32_t id) const;
  // The bytes `id` stands for: added tokens verbatim, normal tokens through the inverse byte
  // map. A single token may end in the middle of a UTF-8 character.
  std::string_view token_bytes(int32_t id) const;

  // Concatenated bytes of `ids` (may be invalid UTF-8 when cut mid-character).
  std::string decode_bytes(std::span<const int32_t> ids, bool skip_special = false) const;
  // Valid UTF-8: ill-formed parts replaced by U+FFFD (as HF's decode does).
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  const PreTokenizer& pre_tokenizer() const;

  // BPE of one pre-tokenized piece, bypassing the cache. `algorithm`: 0 = automatic,
  // 1 = the quadratic scan used for short pieces, 2 = the heap used for long ones. For tests.
  void bpe_piece_for_test(std::string_view piece, std::vector<int32_t>& out, int algorithm) const;
  // Cache statistics (hits, misses) since construction.
  std::pair<uint64_t, uint64_t> cache_stats() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Incremental detokenizer for streaming: returns only complete UTF-8 characters, holding back an
// incomplete sequence across tokens; ill-formed bytes become U+FFFD as soon as they can no
// longer be completed (and any remainder at finish()).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = false);
  // Appends the text that became complete with token `id` to `out`.
  void push(int32_t id, std::string& out);
  std::string push(int32_t id);
  // Flushes what is held back (an incomplete sequence becomes U+FFFD) and resets.
  void finish(std::string& out);
  std::string finish();
  void reset() { pending_.clear(); }
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tok_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace dsv4::text
