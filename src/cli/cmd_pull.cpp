// dsv4 pull: download one of the published GGUFs (antirez/deepseek-v4-gguf on Hugging Face) into
// --dir, resumably; Ctrl-C keeps DIR/<file>.part and the same command resumes it.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "pull/pull.h"

namespace dsv4::cli {
namespace {

std::atomic<bool> g_cancel{false};

extern "C" void on_interrupt(int) {
  g_cancel.store(true);
}

// SIGINT/SIGTERM set g_cancel (a second one kills: SA_RESETHAND); restored on scope exit.
class InterruptGuard {
 public:
  InterruptGuard() {
    g_cancel.store(false);
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~InterruptGuard() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

std::string read_token_file(const std::string& path) {
  std::ifstream in(path);
  std::string t;
  if (in) std::getline(in, t);
  while (!t.empty() && (t.back() == '\r' || t.back() == ' ')) t.pop_back();
  return t;
}

// --token, else $HF_TOKEN, else (only when talking to Hugging Face itself) the token the
// Hugging Face CLI stores, as antirez/ds4's download_model.sh does.
std::string resolve_token(const std::string& given, bool hugging_face) {
  if (!given.empty()) return given;
  if (const char* e = std::getenv("HF_TOKEN"); e && *e) return e;
  if (!hugging_face) return {};
  if (const char* home = std::getenv("HF_HOME"); home && *home)
    return read_token_file(std::string(home) + "/token");
  if (const char* home = std::getenv("HOME"); home && *home)
    return read_token_file(std::string(home) + "/.cache/huggingface/token");
  return {};
}

}  // namespace

void register_pull(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "pull", "Download a published model file (resumable; size and SHA-256 checked)");
  struct Opts {
    std::string model, dir = "models", url_base{pull::kDefaultUrlBase}, token, sha256;
    int retries = 8;
    bool list = false, quiet = false;
  };
  auto o = std::make_shared<Opts>();
  std::string names;
  for (const auto& m : pull::known_models())
    names += (names.empty() ? "" : ", ") + std::string(m.name);
  sub->add_option("model", o->model, "which file: " + names);
  sub->add_option("--dir", o->dir, "download directory")->capture_default_str();
  sub->add_option("--url-base", o->url_base, "where the files are (a mirror; tests)")
      ->capture_default_str();
  sub->add_option("--token", o->token, "Hugging Face token (default: $HF_TOKEN)");
  sub->add_option("--sha256", o->sha256,
                  "expected SHA-256 (default: the server's, if it gives one)");
  sub->add_option("--retries", o->retries, "attempts without progress before giving up")
      ->capture_default_str();
  sub->add_flag("--list", o->list, "list the downloadable files");
  sub->add_flag("-q,--quiet", o->quiet, "no progress display");
  sub->callback([o] {
    if (o->list) {
      for (const auto& m : pull::known_models())
        std::printf("%-11s %s\n            %s\n", std::string(m.name).c_str(),
                    std::string(m.about).c_str(), std::string(m.file).c_str());
      return;
    }
    const pull::ModelEntry& m = pull::resolve_model(o->model);
    pull::PullOptions po;
    po.url = pull::model_url(o->url_base, m.file);
    po.dest = std::filesystem::path(o->dir) / std::string(m.file);
    po.token = resolve_token(o->token, o->url_base == pull::kDefaultUrlBase);
    po.sha256 = o->sha256;
    po.max_retries = o->retries;
    po.progress = o->quiet ? pull::ProgressMode::None : pull::ProgressMode::Auto;
    po.cancel = &g_cancel;
    pull::PullResult r;
    {
      InterruptGuard guard;
      r = pull::pull_file(po);
    }
    const std::string path = r.path.string();
    if (m.name == "mtp")
      std::fprintf(stderr, "MTP draft layer: pass it as --mtp %s\n", path.c_str());
    else
      std::fprintf(stderr, "Use it with: dsv4 run -m %s -p \"Hello\"\n", path.c_str());
  });
}

}  // namespace dsv4::cli
