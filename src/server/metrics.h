// Server metrics: HTTP-level counters kept by the server plus the engine's EngineStats, rendered
// as Prometheus text (GET /metrics).
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "engine/engine.h"

namespace dsv4::server {

// Counters of answered HTTP requests, by status class and by outcome. Thread-safe.
class HttpCounters {
 public:
  // One answered request with HTTP status `status`.
  void count_response(int status);
  // A generation that ended because its client went away (disconnect), seen by the server.
  void count_disconnect() { disconnects_.fetch_add(1, std::memory_order_relaxed); }

  int64_t responses(int status_class) const;  // 2..5 -> count of Nxx answers
  int64_t disconnects() const { return disconnects_.load(std::memory_order_relaxed); }

 private:
  std::array<std::atomic<int64_t>, 6> by_class_{};
  std::atomic<int64_t> disconnects_{0};
};

// Resident set size of this process in bytes (from /proc/self/statm; 0 when unavailable).
int64_t process_rss_bytes();

// The Prometheus text exposition (version 0.0.4) of the engine's stats and the HTTP counters:
// dsv4_prompt_tokens_total, dsv4_generated_tokens_total, dsv4_cached_tokens_total,
// dsv4_requests_total{status="ok|cancelled|error|rejected"}, dsv4_cache_hits_total{kind=
// "memory|disk|miss"}, dsv4_queue_depth, dsv4_running_jobs, dsv4_live_sessions,
// dsv4_session_bytes, dsv4_disk_bytes, dsv4_disk_files, dsv4_prefill_tokens_per_second,
// dsv4_decode_tokens_per_second, dsv4_http_responses_total{code="2xx|..."},
// dsv4_client_disconnects_total, process_resident_memory_bytes.
std::string render_metrics(const engine::EngineStats& s, const HttpCounters& http);

}  // namespace dsv4::server
