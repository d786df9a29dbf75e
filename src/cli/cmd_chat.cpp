// dsv4 chat: a multi-turn chat that keeps its KV session between turns (each turn only prefills
// the new tokens), with slash commands, line editing and history (libedit), and Ctrl-C to stop a
// generation without leaving the program.
//
// Turns are appended to the session token by token in the official format:
//   BOS [Think-Max prefix] [system] <｜User｜>text<｜Assistant｜></think> answer
//   <｜end▁of▁sentence｜> <｜User｜>... (thinking mode: <think> instead of </think>; the reasoning
//   stays in the context, unlike the server's stateless re-rendering, which drops earlier
//   reasoning).
#include <editline/readline.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/error.h"
#include "engine/backend.h"
#include "sample/sampler.h"
#include "state/session_file.h"
#include "text/chat.h"
#include "text/tokenizer.h"

namespace dsv4::cli {
namespace {

std::atomic<bool> g_interrupted{false};
void on_sigint(int) {
  g_interrupted = true;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct ChatState {
  const Model* model = nullptr;
  const text::Tokenizer* tok = nullptr;
  const engine::Backend* backend = nullptr;
  std::unique_ptr<engine::BackendSession> sess;
  std::vector<int32_t> fed;  // every token in the session, in order
  bool thinking = false, think_max = false;
  int64_t ctx = 65536;
  int n_predict = 1024;
  std::string system;
  SamplerParams sp;
};

// Feeds `ids` (a turn's new tokens) and generates the answer, streaming it.
void run_turn(ChatState& st, std::vector<int32_t> ids) {
  const auto& ct = st.tok->chat_tokens();
  const int64_t need = (int64_t)(st.fed.size() + ids.size()) + 1;
  if (need > st.ctx)
    fail("context full: {} tokens needed, limit {} (use /clear, or /ctx N)", need, st.ctx);
  const size_t reused = st.fed.size();
  g_interrupted = false;  // a Ctrl-C from here on (prefill included) stops this turn
  std::vector<float> logits;
  const double t0 = now_s();
  st.backend->forward(*st.sess, ids.data(), (int64_t)ids.size(), logits);
  const double t_prefill = now_s() - t0;
  st.fed.insert(st.fed.end(), ids.begin(), ids.end());

  Sampler sampler(st.sp);
  sampler.add_prompt(st.fed);
  text::StreamDecoder dec(*st.tok, true);
  const bool tty = isatty(STDOUT_FILENO);
  const char* dim = tty ? "\x1b[2m" : "";
  const char* reset = tty ? "\x1b[0m" : "";
  bool thinking = st.thinking;
  if (thinking) std::printf("%s[thinking] ", dim);
  const double t1 = now_s();
  int n_gen = 0;
  bool interrupted = false;
  std::string out;
  while (true) {
    if (g_interrupted) {
      interrupted = true;
      break;
    }
    if (n_gen >= st.n_predict || (int64_t)st.fed.size() + 1 >= st.ctx) break;
    const int32_t next = sampler.sample(logits.data(), st.model->cfg.n_vocab);
    ++n_gen;
    if (next == ct.eos) break;
    if (thinking && next == ct.think_end) {
      thinking = false;
      std::printf("%s\n", reset);
    } else {
      out.clear();
      dec.push(next, out);
      write_model_text(out, tty);
    }
    st.backend->forward(*st.sess, &next, 1, logits);
    st.fed.push_back(next);
  }
  write_model_text(dec.finish(), tty);
  const double t_gen = now_s() - t1;
  // Close the assistant turn in the session, as the format's history does.
  st.backend->forward(*st.sess, &ct.eos, 1, logits);
  st.fed.push_back(ct.eos);
  std::printf("%s%s\n", reset, interrupted ? "\n[interrupted]" : "");
  std::fprintf(stderr,
               "[context %zu tokens: reused %zu cached, prefilled %zu new at %.1f tok/s | "
               "generated %d tokens at %.2f tok/s]\n",
               st.fed.size(), reused, ids.size(), ids.size() / t_prefill, n_gen,
               n_gen / std::max(t_gen, 1e-9));
}

std::vector<int32_t> user_turn_tokens(const ChatState& st, const std::string& text) {
  const auto& ct = st.tok->chat_tokens();
  std::vector<int32_t> ids;
  if (st.fed.empty()) {
    ids.push_back(ct.bos);
    if (st.thinking && st.think_max) st.tok->encode_text(text::kReasoningEffortMaxPrefix, ids);
    if (!st.system.empty()) st.tok->encode_text(st.system, ids);
  }
  ids.push_back(ct.user);
  st.tok->encode_text(text, ids);  // message text never becomes a special token
  ids.push_back(ct.assistant);
  ids.push_back(st.thinking ? ct.think_start : ct.think_end);
  return ids;
}

const char* kHelp =
    "commands: /think  /nothink  /think-max  /ctx N  /read FILE  /save FILE  /load FILE  /clear  "
    "/quit\n";

// Returns false when the chat should end.
bool handle_command(ChatState& st, const std::string& line, std::string& user_text) {
  std::istringstream is(line);
  std::string cmd, arg;
  is >> cmd;
  std::getline(is >> std::ws, arg);
  const uint64_t fp = model_fingerprint(*st.model);
  if (cmd == "/quit" || cmd == "/exit") return false;
  if (cmd == "/think") {
    st.thinking = true;
    st.think_max = false;
    std::printf("[thinking mode]\n");
  } else if (cmd == "/nothink") {
    st.thinking = false;
    std::printf("[chat mode, no thinking]\n");
  } else if (cmd == "/think-max") {
    st.thinking = st.think_max = true;
    std::printf("[Think-Max: applies from the start of a conversation (/clear)%s]\n",
                st.ctx < 393216 ? "; DeepSeek recommends a context of at least 393216 (/ctx)" : "");
  } else if (cmd == "/ctx") {
    const long long v = std::atoll(arg.c_str());
    const int64_t cap = st.backend->capacity();
    if (v < 16) {
      std::printf("[usage: /ctx N (N >= 16)]\n");
    } else if (cap > 0 && v > cap) {
      std::printf("[the GPU session holds at most %lld tokens (set at start with --ctx)]\n",
                  (long long)cap);
    } else {
      st.ctx = v;
      std::printf("[context limit %lld tokens]\n", v);
    }
  } else if (cmd == "/clear") {
    st.sess = st.backend->new_session();
    st.fed.clear();
    std::printf("[conversation cleared]\n");
  } else if (cmd == "/save") {
    CpuSession scratch;
    save_session(arg, fp, st.fed, st.sess->host_state(scratch));
    std::printf("[saved %zu tokens to %s]\n", st.fed.size(), arg.c_str());
  } else if (cmd == "/load") {
    // Session files hold the CPU layout: a GPU session is uploaded (within its capacity).
    std::vector<int32_t> fed;
    CpuSession host;
    load_session(arg, fp, st.model->cfg, fed, host);
    st.sess = st.backend->from_host(std::move(host));
    st.fed = std::move(fed);
    std::printf("[loaded %zu tokens from %s]\n", st.fed.size(), arg.c_str());
  } else if (cmd == "/read") {
    user_text = read_file(arg);
    std::printf("[read %zu bytes from %s]\n", user_text.size(), arg.c_str());
  } else {
    std::fputs(kHelp, stdout);
  }
  return true;
}

}  // namespace

void register_chat(CLI::App& app) {
  auto* sub = app.add_subcommand("chat", "Interactive multi-turn chat (keeps the KV session)");
  struct Opts {
    std::string model, system;
    int64_t ctx = 65536;
    int n_predict = 1024;
    bool think = false, ignore_eos = false, gpu = false;
    SamplerParams sp = greedy_params();
  };
  auto o = std::make_shared<Opts>();
  sub->add_option("-m,--model", o->model, "GGUF model")->required();
  sub->add_option("--system", o->system, "system prompt");
  sub->add_option("--ctx", o->ctx, "context limit in tokens");
  sub->add_option("-n,--n-predict", o->n_predict, "maximum tokens per answer");
  sub->add_flag("--think", o->think, "start in thinking mode");
  sub->add_flag("--gpu", o->gpu,
                "run the model on the GPU (CUDA builds); the session is sized for --ctx tokens");
  sub->add_flag("--ignore-eos", o->ignore_eos, "never end an answer by itself (tests, demos)");
  add_sampling_options(sub, o->sp);
  sub->callback([o] {
    auto model = load_model(o->model);
    const text::Tokenizer tok = text::Tokenizer::from_gguf(*model->file);
    if (o->ctx < 16) fail("--ctx: must be >= 16, got {}", o->ctx);
    engine::BackendOptions bo;
    bo.gpu = o->gpu;
    bo.max_ctx = o->ctx;
    const auto backend = engine::make_backend(*model, bo);
    ChatState st;
    st.model = model.get();
    st.tok = &tok;
    st.backend = backend.get();
    st.sess = backend->new_session();
    st.thinking = o->think;
    st.ctx = o->ctx;
    st.n_predict = o->n_predict;
    st.system = o->system;
    st.sp = o->sp;
    if (o->ignore_eos)
      st.sp.logit_bias[tok.chat_tokens().eos] = -std::numeric_limits<float>::infinity();
    validate(st.sp, (int64_t)model->cfg.n_vocab);

    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    const bool tty = isatty(STDIN_FILENO);
    std::printf(
        "dsv4 chat: %s (%s). Type /help for commands, Ctrl-C stops an answer, Ctrl-D or "
        "/quit leaves.\n",
        o->model.c_str(), model->cfg.name.c_str());
    while (true) {
      std::string line;
      if (tty) {
        g_interrupted = false;
        char* raw = readline("> ");
        if (!raw) {
          if (g_interrupted) continue;  // Ctrl-C at the prompt: a fresh prompt
          break;
        }
        line = raw;
        std::free(raw);
        if (!line.empty()) add_history(line.c_str());
      } else {
        std::printf("> ");
        std::fflush(stdout);
        if (!std::getline(std::cin, line)) break;
      }
      if (line.empty()) continue;
      std::string user_text;
      try {
        if (line[0] == '/') {
          if (!handle_command(st, line, user_text)) break;
          if (user_text.empty()) continue;
        } else {
          user_text = line;
        }
        run_turn(st, user_turn_tokens(st, user_text));
      } catch (const Error& e) {
        std::printf("[error: %s]\n", e.what());
      }
    }
    std::printf("\n");
  });
}

}  // namespace dsv4::cli
