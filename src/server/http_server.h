// The HTTP server of `dsv4 serve` (spec/SERVER.md §4): cpp-httplib on a bounded thread pool in
// front of one engine::Engine. Routes the four API dialects (src/server/api_*), streams SSE
// from a per-request event queue, answers errors in each dialect's shape, and exposes /health,
// /v1/models and /metrics.
//
// Unlike ds4 (spec/SERVER.md §9.3): an optional API key (Bearer or x-api-key, compared in
// constant time), a bounded thread pool, a body-size limit, HTTP keep-alive, and cancellation:
// a client that disconnects (noticed by a failed write or by the peer's FIN while waiting)
// cancels its job, queued or running.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "engine/engine.h"

namespace dsv4::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;          // 0: any free port (bind() returns it)
  std::string api_key;      // empty: no authentication
  std::string cors_origin;  // empty: no CORS headers; "*" or an origin
  uint64_t max_body_bytes = 16ull << 20;
  int64_t max_tokens_cap = 0;  // > 0: max_tokens above it are clamped
  int http_threads = 64;       // connections served at once (keep-alive included)
  int keepalive_seconds = 5;   // SSE ": keepalive" comment interval while waiting
  bool log_requests = false;   // one stderr line per request
  uint64_t default_seed = 0;   // seed for requests without one (0: random)
};

class HttpServer {
 public:
  // `engine` must outlive the server.
  HttpServer(engine::Engine& engine, ServerOptions opt);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens; returns the bound port. Throws dsv4::Error when that fails.
  int bind();
  // Serves until stop(). Returns false when the accept loop failed.
  bool run();
  // Cancels every running request (non-streamed ones answer 503, streams end) and makes run()
  // return once the connections are closed. Safe from any thread.
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4::server
