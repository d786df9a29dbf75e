#include <omp.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "cli/commands.h"
#include "core/error.h"
#include "core/npy.h"
#include "model/cpu_forward.h"

namespace dsv4::cli {
namespace {

std::vector<int32_t> parse_ids(const std::string& text, const std::string& what) {
  std::vector<int32_t> ids;
  std::string tok;
  for (size_t i = 0; i <= text.size(); ++i) {
    const char ch = i < text.size() ? text[i] : ' ';
    if (ch == ',' || ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r') {
      if (!tok.empty()) {
        char* end = nullptr;
        const long long v = std::strtoll(tok.c_str(), &end, 10);
        if (*end != '\0' || v < 0 || v > INT32_MAX) fail("{}: bad token id '{}'", what, tok);
        ids.push_back((int32_t)v);
        tok.clear();
      }
    } else {
      tok += ch;
    }
  }
  if (ids.empty()) fail("{}: no token ids", what);
  return ids;
}

}  // namespace

void register_logits(CLI::App& app) {
  auto* sub = app.add_subcommand("logits", "Write the model's logits for a token sequence (.npy)");
  struct Opts {
    std::string model, mtp, tokens, tokens_file, qat = "on", positions = "all", out, margins;
    std::string mtp_out, trace_dir;
    int chunk = 0, threads = 0;
  };
  auto o = std::make_shared<Opts>();
  sub->add_option("-m,--model", o->model, "GGUF model")->required();
  sub->add_option("--mtp", o->mtp, "MTP GGUF (for --mtp-out)");
  sub->add_option("--tokens", o->tokens, "comma/space separated token ids");
  sub->add_option("--tokens-file", o->tokens_file, "file of token ids");
  sub->add_option("--qat", o->qat, "FP8/FP4 rounding of KV and indexer: on|off")
      ->check(CLI::IsMember({"on", "off"}));
  sub->add_option("--positions", o->positions, "all | comma-separated positions");
  sub->add_option("-o,--out", o->out, "output .npy [n_positions, vocab] float32")->required();
  sub->add_option("--chunk", o->chunk, "prefill chunk size (0 = one batch, 1 = token by token)");
  sub->add_option("--margins", o->margins, "also write per-position tie margins (.npy)");
  sub->add_option("--mtp-out", o->mtp_out,
                  "also write MTP logits: MTP block on each position's final state with the next "
                  "token (last position: token 0)");
  sub->add_option("--threads", o->threads, "CPU threads (default: all cores)");
  sub->add_option(
      "--trace-dir", o->trace_dir,
      "write per-layer intermediates as L<layer>_<name>.npy (rows in emission order) and "
      "L<layer>_<name>_pos.npy (their positions)");
  sub->callback([o] {
    if (o->tokens.empty() == o->tokens_file.empty())
      fail("logits: give exactly one of --tokens and --tokens-file");
    std::vector<int32_t> ids;
    if (!o->tokens.empty()) {
      ids = parse_ids(o->tokens, "--tokens");
    } else {
      std::ifstream in(o->tokens_file);
      if (!in) fail("{}: cannot open", o->tokens_file);
      std::stringstream ss;
      ss << in.rdbuf();
      ids = parse_ids(ss.str(), o->tokens_file);
    }
    if (o->threads > 0) omp_set_num_threads(o->threads);
    auto model = load_model(o->model, o->mtp);
    CpuModel cpu(*model, CpuOptions{o->qat == "on"});
    const int64_t n = (int64_t)ids.size(), V = model->cfg.n_vocab;
    std::vector<int64_t> pos;
    if (o->positions == "all") {
      for (int64_t i = 0; i < n; ++i) pos.push_back(i);
    } else {
      for (int32_t p : parse_ids(o->positions, "--positions")) {
        if (p >= n) fail("--positions: {} is past the last token ({})", p, n - 1);
        pos.push_back(p);
      }
    }
    CpuSession sess = cpu.new_session();
    std::vector<float> all((size_t)(n * V)), margins((size_t)n), hc;
    const bool want_hc = !o->mtp_out.empty();
    const int64_t chunk = o->chunk > 0 ? o->chunk : n;
    struct Trace {
      std::vector<float> data;
      std::vector<int32_t> pos;
      int64_t width = 0;
    };
    std::map<std::string, Trace> traces;
    TraceFn trace;
    if (!o->trace_dir.empty())
      trace = [&](int layer, const std::string& name, int64_t p, const float* d, int64_t len) {
        Trace& t = traces["L" + std::to_string(layer) + "_" + name];
        if (t.width && t.width != len) return;  // variable-length rows (top-k ids): first width
        t.width = len;
        t.data.insert(t.data.end(), d, d + len);
        t.pos.push_back((int32_t)p);
      };
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t len = std::min(chunk, n - s);
      ForwardResult r;
      cpu.forward(sess, &ids[s], len, true, want_hc, r, trace);
      std::copy(r.logits.begin(), r.logits.end(), all.begin() + s * V);
      std::copy(r.tie_margin.begin(), r.tie_margin.end(), margins.begin() + s);
      if (want_hc) hc.insert(hc.end(), r.hc_final.begin(), r.hc_final.end());
    }
    for (const auto& [name, t] : traces) {
      const int64_t rows = (int64_t)t.pos.size();
      write_npy_f32(o->trace_dir + "/" + name + ".npy", {rows, t.width}, t.data.data());
      write_npy_i32(o->trace_dir + "/" + name + "_pos.npy", {rows}, t.pos.data());
    }
    std::vector<float> sel;
    for (int64_t p : pos) sel.insert(sel.end(), all.begin() + p * V, all.begin() + (p + 1) * V);
    write_npy_f32(o->out, {(int64_t)pos.size(), V}, sel.data());
    if (!o->margins.empty()) write_npy_f32(o->margins, {n}, margins.data());
    if (want_hc) {
      std::vector<int32_t> next(ids.begin() + 1, ids.end());
      next.push_back(0);
      std::vector<float> ml;
      cpu.mtp_forward(sess, hc.data(), next.data(), n, ml);
      write_npy_f32(o->mtp_out, {n, V}, ml.data());
    }
    std::fprintf(stderr, "logits: %lld tokens, %zu positions -> %s\n", (long long)n, pos.size(),
                 o->out.c_str());
  });
}

}  // namespace dsv4::cli
