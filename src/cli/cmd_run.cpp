// dsv4 run: one-shot answer to a prompt, streamed, with thinking shown distinctly and the prompt /
// generation token counts and speeds at the end. The CPU reference, or the GPU with --gpu.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/error.h"
#include "engine/backend.h"
#include "sample/dsml_greedy.h"
#include "sample/sampler.h"
#include "sample/stop.h"
#include "text/tokenizer.h"

namespace dsv4::cli {
void register_run(CLI::App& app) {
  auto* sub = app.add_subcommand("run", "Answer one prompt (streamed)");
  struct Opts {
    std::string model, prompt, prompt_file, system;
    int n_predict = 256;
    bool think = false, raw = false, qat = true, gpu = false;
    std::vector<std::string> stops;
    SamplerParams sp = greedy_params();
  };
  auto o = std::make_shared<Opts>();
  sub->add_option("-m,--model", o->model, "GGUF model")->required();
  sub->add_option("-p,--prompt", o->prompt, "prompt text");
  sub->add_option("--prompt-file", o->prompt_file, "read the prompt from a file");
  sub->add_option("--system", o->system, "system prompt");
  sub->add_option("-n,--n-predict", o->n_predict, "maximum tokens to generate");
  sub->add_flag("--think", o->think, "thinking mode (the model reasons before answering)");
  sub->add_flag("--raw", o->raw,
                "feed the prompt as already-rendered text (special tokens honoured)");
  add_sampling_options(sub, o->sp);
  sub->add_option("--stop", o->stops, "stop string (repeatable); not printed");
  sub->add_flag("--gpu", o->gpu, "run the model on the GPU (CUDA builds)");
  sub->callback([o] {
    if (o->prompt.empty() == o->prompt_file.empty())
      fail("run: give exactly one of -p/--prompt and --prompt-file");
    std::string prompt = o->prompt;
    if (!o->prompt_file.empty()) {
      std::ifstream in(o->prompt_file, std::ios::binary);
      if (!in) fail("{}: cannot open", o->prompt_file);
      std::stringstream ss;
      ss << in.rdbuf();
      prompt = ss.str();
    }
    auto model = load_model(o->model);
    const text::Tokenizer tok = text::Tokenizer::from_gguf(*model->file);
    const auto& ct = tok.chat_tokens();
    // Non-thinking: BOS [system] <｜User｜>prompt<｜Assistant｜></think>; thinking ends with
    // <think>.
    std::vector<int32_t> ids;
    if (o->raw) {
      tok.encode_with_specials(prompt, ids);
    } else {
      ids.push_back(ct.bos);
      if (!o->system.empty()) tok.encode_text(o->system, ids);
      ids.push_back(ct.user);
      tok.encode_text(prompt, ids);
      ids.push_back(ct.assistant);
      ids.push_back(o->think ? ct.think_start : ct.think_end);
    }
    if (o->n_predict < 0) fail("--n-predict: must be >= 0, got {}", o->n_predict);
    validate(o->sp, (int64_t)model->cfg.n_vocab);
    engine::BackendOptions bo;
    bo.gpu = o->gpu;
    bo.qat = o->qat;
    bo.max_ctx = (int64_t)ids.size() + o->n_predict + 1;  // the GPU session holds the whole run
    const auto backend = engine::make_backend(*model, bo);
    const auto sess = backend->new_session();
    Sampler sampler(o->sp);
    sampler.add_prompt(ids);  // the repetition window starts with the prompt
    const bool tty = isatty(STDOUT_FILENO);
    const char* dim = tty ? "\x1b[2m" : "";
    const char* reset = tty ? "\x1b[0m" : "";
    bool thinking = o->think;
    if (thinking) std::printf("%s[thinking] ", dim);

    const double t0 = now_s();
    std::vector<float> logits;
    backend->forward(*sess, ids.data(), (int64_t)ids.size(), logits);
    const double t_prefill = now_s() - t0;
    text::StreamDecoder dec(tok, true);
    const double t1 = now_s();
    int n_gen = 0;
    std::string out;
    // DSML markup is sampled greedily, argument payloads with the settings (spec/SERVER.md §3.3);
    // stop strings are withheld from the output, also when split across tokens.
    DsmlGreedyTracker dsml(o->think);
    StopParams stp;
    stp.stop_tokens = {ct.eos};
    stp.stop_strings = o->stops;
    StopChecker stop(stp);
    while (n_gen < o->n_predict) {
      const int32_t next = sampler.sample(logits.data(), model->cfg.n_vocab, dsml.force_greedy());
      ++n_gen;
      if (stop.on_token(next) == Finish::kStopToken) break;
      dsml.on_text(tok.token_bytes(next));
      if (thinking && next == ct.think_end) {
        thinking = false;
        std::printf("%s\n", reset);
      } else {
        out.clear();
        dec.push(next, out);
        const bool stopped = stop.on_text(out) == Finish::kStopString;
        write_model_text(stop.take_safe(), tty);
        if (stopped) break;
      }
      if (n_gen >= o->n_predict) break;
      backend->forward(*sess, &next, 1, logits);
    }
    if (stop.finish() != Finish::kStopString) stop.on_text(dec.finish());
    write_model_text(stop.take_all(), tty);
    const double t_gen = now_s() - t1;
    std::printf("%s\n", reset);
    std::fprintf(stderr,
                 "\n[prompt %zu tokens, %.1f tok/s | generated %d tokens, %.2f tok/s | %s]\n",
                 ids.size(), ids.size() / t_prefill, n_gen, n_gen / t_gen, o->gpu ? "gpu" : "cpu");
  });
}

}  // namespace dsv4::cli
