// dsv4 serve: the OpenAI / Anthropic compatible HTTP server (spec/SERVER.md §4).
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "core/error.h"
#include "engine/engine.h"
#include "server/http_server.h"

namespace dsv4::cli {

namespace {

// SIGINT / SIGTERM are blocked in every thread and taken by one thread with sigwait(): the
// first asks the server to stop (graceful: requests are cancelled, the engine saves its
// snapshots), a second one exits at once.
std::mutex g_stop_mu;
server::HttpServer* g_server = nullptr;
bool g_stop_requested = false;  // a signal came before the server existed

void signal_thread(sigset_t set) {
  int sig = 0;
  if (sigwait(&set, &sig) != 0) return;
  std::fprintf(stderr, "dsv4 serve: %s received, stopping (again to exit at once)\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM");
  {
    std::lock_guard lk(g_stop_mu);
    g_stop_requested = true;
    if (g_server) g_server->stop();
  }
  if (sigwait(&set, &sig) != 0) return;
  std::fprintf(stderr, "dsv4 serve: second signal: exiting now\n");
  _exit(130);
}

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("--scripted-output: cannot read {}", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

void register_serve(CLI::App& app) {
  auto* sub = app.add_subcommand("serve", "OpenAI / Anthropic compatible HTTP server");
  struct Opts {
    engine::EngineOptions eng;
    server::ServerOptions srv;
    std::string scripted_file;
    double max_body_mb = 16;
    double session_memory_mb = 4096;
    bool no_qat = false;
  };
  auto o = std::make_shared<Opts>();
  sub->add_option("-m,--model", o->eng.model_path, "model GGUF")->required();
  sub->add_option("--mtp", o->eng.mtp_path, "MTP draft GGUF");
  sub->add_option("--model-id", o->eng.model_id,
                  "model id reported by /v1/models (default: the file name without .gguf)");
  sub->add_option("--host", o->srv.host, "bind address (default 127.0.0.1: local only)");
  sub->add_option("--port", o->srv.port, "port (default 8000; 0 = any free port)");
  sub->add_option("--api-key", o->srv.api_key,
                  "require this key (Authorization: Bearer KEY or x-api-key: KEY); "
                  "default: $DSV4_API_KEY");
  sub->add_option("--cors", o->srv.cors_origin, "send CORS headers allowing ORIGIN (or *)");
  sub->add_option("-c,--ctx", o->eng.ctx_limit,
                  "per-session context limit in tokens (default: the model's)");
  sub->add_option("-t,--threads", o->eng.threads, "CPU threads (default: all cores)");
  sub->add_option("--kv-disk-dir", o->eng.kv_disk_dir, "directory of the disk KV cache");
  sub->add_option("--kv-disk-space-mb", o->eng.kv_disk_space_mb, "disk KV cache budget (MiB)");
  sub->add_option("--kv-disk-min-tokens", o->eng.kv_disk_min_tokens,
                  "prompts shorter than this are not snapshotted (default 512)");
  sub->add_option("--kv-disk-align", o->eng.kv_disk_align,
                  "snapshot at multiples of this many tokens (default 2048)");
  sub->add_option("--max-sessions", o->eng.max_sessions, "live sessions kept in memory");
  sub->add_option("--session-memory-mb", o->session_memory_mb,
                  "memory budget of the live sessions (MiB)");
  sub->add_option("--queue", o->eng.queue_limit, "jobs that may wait (more: HTTP 429)");
  sub->add_option("--prefill-chunk", o->eng.prefill_chunk,
                  "tokens per prefill step (cancellation granularity; default 512 on the CPU, "
                  "2048 on the GPU)");
  sub->add_flag("--gpu", o->eng.gpu,
                "run the model on the GPU (CUDA builds): weights and sessions in device memory, "
                "each session sized for --ctx tokens");
  sub->add_option("--expert-host-fraction", o->eng.gpu_expert_host_fraction,
                  "with --gpu: fraction of the routed experts kept in host memory (default: "
                  "automatic, only what does not fit)");
  sub->add_option("--max-body-mb", o->max_body_mb, "largest request body (MiB, default 16)");
  sub->add_option("--max-tokens-cap", o->srv.max_tokens_cap,
                  "clamp max_tokens of requests to this (0 = no cap)");
  sub->add_option("--http-threads", o->srv.http_threads, "connections served at once (default 64)");
  sub->add_option("--seed", o->srv.default_seed,
                  "seed for requests that give none (default: random per request)");
  sub->add_option("--scripted-output", o->scripted_file,
                  "testing: every generation emits the text of this file instead of sampling");
  sub->add_flag("--no-qat", o->no_qat, "no FP8/FP4 rounding of the stored KV");
  sub->add_flag("--log-requests", o->srv.log_requests, "log each request to stderr");

  sub->callback([o] {
    if (o->max_body_mb <= 0 || o->max_body_mb > 4096)
      fail("--max-body-mb: must be in (0, 4096], got {}", o->max_body_mb);
    if (o->session_memory_mb <= 0)
      fail("--session-memory-mb: must be > 0, got {}", o->session_memory_mb);
    if (o->srv.port < 0 || o->srv.port > 65535)
      fail("--port: must be in [0, 65535], got {}", o->srv.port);
    if (o->srv.max_tokens_cap < 0) fail("--max-tokens-cap: must be >= 0");
    if (o->eng.prefill_chunk < 0)
      fail("--prefill-chunk: must be >= 1, got {}", o->eng.prefill_chunk);
    if (o->eng.gpu && !o->eng.mtp_path.empty())
      fail("--mtp: MTP speculative decoding does not run on the GPU; drop --mtp or --gpu");
    if (o->eng.queue_limit < 0) fail("--queue: must be >= 0, got {}", o->eng.queue_limit);
    if (o->eng.max_sessions < 1) fail("--max-sessions: must be >= 1, got {}", o->eng.max_sessions);
    if (o->srv.http_threads < 2 || o->srv.http_threads > 4096)
      fail("--http-threads: must be in [2, 4096], got {}", o->srv.http_threads);
    if (o->srv.api_key.empty()) {
      if (const char* k = std::getenv("DSV4_API_KEY")) o->srv.api_key = k;
    }
    o->srv.max_body_bytes = static_cast<uint64_t>(o->max_body_mb * 1024.0 * 1024.0);
    o->eng.session_memory_bytes = static_cast<uint64_t>(o->session_memory_mb * 1024.0 * 1024.0);
    o->eng.qat = !o->no_qat;
    if (!o->scripted_file.empty()) {
      o->eng.scripted_output = read_text_file(o->scripted_file);
      if (o->eng.scripted_output.empty()) fail("--scripted-output: {} is empty", o->scripted_file);
    }

    // Block the stop signals before any thread exists, so that only signal_thread takes them.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    signal(SIGPIPE, SIG_IGN);
    std::thread(signal_thread, set).detach();

    engine::Engine eng(o->eng);
    server::HttpServer srv(eng, o->srv);
    int port = srv.bind();
    {
      std::lock_guard lk(g_stop_mu);
      g_server = &srv;
      if (g_stop_requested) srv.stop();
    }
    std::printf("dsv4 serve: listening on http://%s:%d (model %s, context %lld, backend %s)%s\n",
                o->srv.host.c_str(), port, eng.model_id().c_str(),
                static_cast<long long>(eng.context_limit()), eng.backend_description().c_str(),
                o->srv.api_key.empty() ? "" : " (API key required)");
    std::fflush(stdout);
    bool ok = srv.run();
    {
      std::lock_guard lk(g_stop_mu);
      g_server = nullptr;
    }
    if (!ok) std::fprintf(stderr, "dsv4 serve: the accept loop ended with an error\n");
    std::fprintf(stderr, "dsv4 serve: stopped\n");
    // srv, then eng (which saves the live sessions' snapshots) are destroyed here.
  });
}

}  // namespace dsv4::cli
