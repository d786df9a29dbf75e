// dsv4 tokenize: text -> token ids and pieces.
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "gguf/gguf.h"
#include "text/tokenizer.h"

namespace dsv4::cli {

void register_tokenize(CLI::App& app) {
  struct Opts {
    std::string model, text, file;
    bool json = false, specials = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("tokenize", "Tokenize text: token ids and pieces");
  sub->add_option("-m,--model", o->model, "GGUF file holding the tokenizer")->required();
  auto* text_opt = sub->add_option("text", o->text, "the text");
  auto* file_opt = sub->add_option("--file", o->file, "read the text from this file");
  text_opt->excludes(file_opt);
  sub->add_flag("--json", o->json, "JSON output: [{\"id\":..,\"piece\":..,\"text\":..}]");
  sub->add_flag("--specials", o->specials,
                "recognize special-token strings (as in a rendered prompt); by default all text "
                "is plain");
  sub->callback([o, text_opt, file_opt] {
    if (text_opt->count() == 0 && file_opt->count() == 0) {
      fail("tokenize: give the TEXT or --file FILE");
    }
    std::string input = o->text;
    if (file_opt->count() > 0) {
      std::ifstream in(o->file, std::ios::binary);
      if (!in) fail("{}: cannot open", o->file);
      std::ostringstream ss;
      ss << in.rdbuf();
      input = ss.str();
    }
    const auto file = gguf::File::open(o->model);
    const text::Tokenizer tok = text::Tokenizer::from_gguf(file);
    const std::vector<int32_t> ids =
        o->specials ? tok.encode_with_specials(input) : tok.encode_text(input);
    std::string out;
    if (o->json) {
      nlohmann::json arr = nlohmann::json::array();
      for (const int32_t id : ids) {
        arr.push_back({{"id", id},
                       {"piece", std::string(tok.token_string(id))},
                       {"text", std::string(tok.token_bytes(id))}});
      }
      out = arr.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    } else {
      // Line 1: the ids; then one line per token: id and its vocabulary string (byte-level
      // form: a space shows as Ġ, a newline as Ċ).
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i > 0) out += ',';
        out += std::to_string(ids[i]);
      }
      out += '\n';
      for (const int32_t id : ids) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "%6d  ", id);
        out += buf;
        out += tok.token_string(id);
        out += '\n';
      }
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
  });
}

}  // namespace dsv4::cli
