#pragma once
#include <CLI/CLI.hpp>

namespace dsv4::cli {

// Each registers one subcommand whose callback does the work (errors propagate as dsv4::Error).
void register_inspect(CLI::App& app);
void register_logits(CLI::App& app);
void register_gen_tiny(CLI::App& app);
void register_bench(CLI::App& app);
void register_run(CLI::App& app);
void register_render(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_chat(CLI::App& app);
void register_pull(CLI::App& app);
void register_serve(CLI::App& app);

inline void register_all(CLI::App& app) {
  register_inspect(app);
  register_logits(app);
  register_gen_tiny(app);
  register_bench(app);
  register_run(app);
  register_render(app);
  register_tokenize(app);
  register_chat(app);
  register_pull(app);
  register_serve(app);
}

}  // namespace dsv4::cli
