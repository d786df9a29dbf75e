#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "model/tiny_model.h"

namespace dsv4::cli {

void register_gen_tiny(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "gen-tiny", "Write a tiny DeepSeek V4 Flash GGUF with random weights (tests, demo)");
  struct Opts {
    std::string preset = "tiny", out, mtp_out, tokenizer, layout;
    uint64_t seed = 0;
    bool f32 = false, no_mtp = false;
  };
  auto o = std::make_shared<Opts>();
  sub->add_option("--preset", o->preset, "tiny | tiny-k512 | tiny-q4");
  sub->add_option("-o,--out", o->out, "output GGUF")->required();
  sub->add_option("--mtp-out", o->mtp_out, "output MTP GGUF");
  sub->add_option("--seed", o->seed, "weight seed (default: the preset's)");
  sub->add_flag("--f32", o->f32, "store every weight as F32 (same values)");
  sub->add_flag("--no-mtp", o->no_mtp, "no MTP block");
  sub->add_option("--tokenizer", o->tokenizer, "copy tokenizer.* keys from this GGUF");
  sub->add_option("--layout", o->layout,
                  "instead: write the full-size published layout q2|q4|mtp with zero weights "
                  "(sparse file)");
  sub->callback([o] {
    if (!o->layout.empty()) {
      write_layout_model(o->layout, o->out);
      std::printf("wrote %s (layout %s, sparse)\n", o->out.c_str(), o->layout.c_str());
      return;
    }
    TinySpec s = tiny_preset(o->preset);
    if (o->seed) s.seed = o->seed;
    s.all_f32 = o->f32;
    s.mtp = !o->no_mtp;
    s.tokenizer_gguf = o->tokenizer;
    write_tiny_model(s, o->out, o->mtp_out);
    std::printf("wrote %s%s%s\n", o->out.c_str(), o->mtp_out.empty() ? "" : " and ",
                o->mtp_out.c_str());
  });
}

}  // namespace dsv4::cli
