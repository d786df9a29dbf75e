// dsv4 render: OpenAI-style JSON messages -> the exact DeepSeek V4 prompt (text or token ids).
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "gguf/gguf.h"
#include "text/chat.h"
#include "text/tokenizer.h"

namespace dsv4::cli {

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("{}: read error", path);
  return ss.str();
}

}  // namespace

void register_render(CLI::App& app) {
  struct Opts {
    std::string messages, tools, mode = "thinking", effort = "none", model;
    bool tokens = false, keep_reasoning = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "render", "Render OpenAI-style JSON messages into the exact DeepSeek V4 prompt text");
  sub->add_option("--messages", o->messages,
                  "JSON file: an array of messages, or {\"messages\": [...], \"tools\": [...]}")
      ->required();
  sub->add_option("--tools", o->tools, "JSON file: an array of OpenAI function tools");
  sub->add_option("--mode", o->mode, "chat | thinking (default thinking)")
      ->check(CLI::IsMember({"chat", "thinking"}));
  sub->add_option("--reasoning-effort", o->effort,
                  "max (Think-Max prefix, thinking mode) | high | none (default none)")
      ->check(CLI::IsMember({"max", "high", "none"}));
  sub->add_flag("--keep-reasoning", o->keep_reasoning,
                "keep the reasoning of every assistant turn (drop_thinking off)");
  sub->add_flag("--tokens", o->tokens, "print the token ids (one line, comma-separated); needs -m");
  sub->add_option("-m,--model", o->model, "GGUF file holding the tokenizer (with --tokens)");
  sub->callback([o] {
    text::Conversation conv = text::parse_conversation(slurp(o->messages));
    if (!o->tools.empty()) {
      try {
        for (auto& t : text::parse_tools(slurp(o->tools))) conv.tools.push_back(std::move(t));
      } catch (const Error& e) {
        fail("{}: {}", o->tools, e.what());
      }
    }
    text::RenderOptions opt;
    opt.mode = text::parse_thinking_mode(o->mode);
    opt.effort = text::parse_reasoning_effort(o->effort);
    opt.drop_thinking = !o->keep_reasoning;
    const text::Prompt prompt = text::render(conv, opt);
    if (!o->tokens) {
      const std::string s = prompt.text();
      std::fwrite(s.data(), 1, s.size(), stdout);
      return;
    }
    if (o->model.empty()) fail("render --tokens needs -m MODEL (a GGUF with the tokenizer)");
    const auto file = gguf::File::open(o->model);
    const text::Tokenizer tok = text::Tokenizer::from_gguf(file);
    const std::vector<int32_t> ids = prompt.tokens(tok);
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i > 0) line += ',';
      line += std::to_string(ids[i]);
    }
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), stdout);
  });
}

}  // namespace dsv4::cli
