// tokenizer_to_gguf: converts a Hugging Face tokenizer.json of DeepSeek V3/V4 into a GGUF that
// holds only the tokenizer keys (tokenizer.ggml.*), with DeepSeek V4's special-token table.
//
//   tokenizer_to_gguf [--vocab-size N] [--no-v4-specials] tokenizer.json out.gguf
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "gguf/gguf.h"
#include "text/tokenizer.h"
#include "text/vocab_convert.h"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: tokenizer_to_gguf [--vocab-size N] [--no-v4-specials] tokenizer.json "
               "out.gguf\n"
               "  Writes a tokenizer-only GGUF (tokenizer.ggml.* keys, no tensors). A V3\n"
               "  tokenizer.json gets DeepSeek V4's added-token table (ids 128000..129279).\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  dsv4::text::ConvertOptions opt;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--vocab-size" && i + 1 < argc) {
      opt.vocab_size = static_cast<uint32_t>(std::strtoul(argv[++i], nullptr, 10));
    } else if (a == "--no-v4-specials") {
      opt.v4_specials = false;
    } else if (a == "-h" || a == "--help") {
      return usage();
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "tokenizer_to_gguf: unknown option %s\n", a.c_str());
      return usage();
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() != 2) return usage();
  try {
    dsv4::text::Vocab vocab = dsv4::text::convert_hf_tokenizer_file(pos[0], opt);
    // Building the tokenizer validates merges, byte tokens and the chat tokens before writing.
    dsv4::text::Tokenizer tok = dsv4::text::Tokenizer::from_vocab(vocab, true);
    dsv4::gguf::Writer w;
    w.set("general.architecture", dsv4::gguf::Value::str("deepseek4"));
    w.set("general.name", dsv4::gguf::Value::str("DeepSeek V4 tokenizer"));
    for (auto& [key, value] : dsv4::text::gguf_tokenizer_kv(vocab)) {
      w.set(std::move(key), std::move(value));
    }
    w.write_file(pos[1]);
    const auto& chat = tok.chat_tokens();
    std::fprintf(stderr,
                 "tokenizer_to_gguf: wrote %s: %zu tokens, %zu merges; BOS %d EOS %d User %d "
                 "Assistant %d <think> %d </think> %d DSML %d\n",
                 pos[1].c_str(), vocab.tokens.size(), vocab.merges.size(), chat.bos, chat.eos,
                 chat.user, chat.assistant, chat.think_start, chat.think_end, chat.dsml);
  } catch (const dsv4::Error& e) {
    std::fprintf(stderr, "tokenizer_to_gguf: %s\n", e.what());
    return 1;
  }
  return 0;
}
