#include "server/metrics.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace dsv4::server {

void HttpCounters::count_response(int status) {
  int c = status / 100;
  if (c < 0 || c >= static_cast<int>(by_class_.size())) c = 0;
  by_class_[static_cast<size_t>(c)].fetch_add(1, std::memory_order_relaxed);
}

int64_t HttpCounters::responses(int status_class) const {
  if (status_class < 0 || status_class >= static_cast<int>(by_class_.size())) return 0;
  return by_class_[static_cast<size_t>(status_class)].load(std::memory_order_relaxed);
}

int64_t process_rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long long size = 0, resident = 0;
  int n = std::fscanf(f, "%lld %lld", &size, &resident);
  std::fclose(f);
  if (n != 2) return 0;
  long page = sysconf(_SC_PAGESIZE);
  return static_cast<int64_t>(resident) * (page > 0 ? page : 4096);
}

namespace {

void metric(std::string& out, const char* name, const char* type, const char* help) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

std::string render_metrics(const engine::EngineStats& s, const HttpCounters& http) {
  std::string o;
  auto out = std::back_inserter(o);
  metric(o, "dsv4_prompt_tokens_total", "counter", "Prompt tokens of all started requests.");
  fmt::format_to(out, "dsv4_prompt_tokens_total {}\n", s.prompt_tokens_total);
  metric(o, "dsv4_cached_tokens_total", "counter", "Prompt tokens whose KV was reused.");
  fmt::format_to(out, "dsv4_cached_tokens_total {}\n", s.cached_tokens_total);
  metric(o, "dsv4_generated_tokens_total", "counter", "Generated tokens.");
  fmt::format_to(out, "dsv4_generated_tokens_total {}\n", s.generated_tokens_total);

  metric(o, "dsv4_requests_total", "counter", "Generation jobs by outcome.");
  int64_t ok = s.requests_total - s.requests_cancelled - s.requests_failed - s.requests_rejected;
  if (ok < 0) ok = 0;
  fmt::format_to(out, "dsv4_requests_total{{status=\"ok\"}} {}\n", ok);
  fmt::format_to(out, "dsv4_requests_total{{status=\"cancelled\"}} {}\n", s.requests_cancelled);
  fmt::format_to(out, "dsv4_requests_total{{status=\"error\"}} {}\n", s.requests_failed);
  fmt::format_to(out, "dsv4_requests_total{{status=\"rejected\"}} {}\n", s.requests_rejected);

  metric(o, "dsv4_cache_hits_total", "counter",
         "Prefix cache lookups by where the prefix came from.");
  fmt::format_to(out, "dsv4_cache_hits_total{{kind=\"memory\"}} {}\n", s.cache_hits_memory);
  fmt::format_to(out, "dsv4_cache_hits_total{{kind=\"disk\"}} {}\n", s.cache_hits_disk);
  fmt::format_to(out, "dsv4_cache_hits_total{{kind=\"miss\"}} {}\n", s.cache_misses);

  metric(o, "dsv4_queue_depth", "gauge", "Jobs waiting for the engine.");
  fmt::format_to(out, "dsv4_queue_depth {}\n", s.queue_depth);
  metric(o, "dsv4_running_jobs", "gauge", "Jobs the engine is running.");
  fmt::format_to(out, "dsv4_running_jobs {}\n", s.running);
  metric(o, "dsv4_live_sessions", "gauge", "Live KV sessions in memory.");
  fmt::format_to(out, "dsv4_live_sessions {}\n", s.live_sessions);
  metric(o, "dsv4_session_bytes", "gauge", "Memory held by live sessions.");
  fmt::format_to(out, "dsv4_session_bytes {}\n", s.session_bytes);
  metric(o, "dsv4_disk_bytes", "gauge", "Bytes in the disk KV cache.");
  fmt::format_to(out, "dsv4_disk_bytes {}\n", s.disk_bytes);
  metric(o, "dsv4_disk_files", "gauge", "Snapshot files in the disk KV cache.");
  fmt::format_to(out, "dsv4_disk_files {}\n", s.disk_files);
  metric(o, "dsv4_prefill_tokens_per_second", "gauge", "Prefill speed of the last request.");
  fmt::format_to(out, "dsv4_prefill_tokens_per_second {:.3f}\n", s.last_prefill_tps);
  metric(o, "dsv4_decode_tokens_per_second", "gauge", "Decode speed of the last request.");
  fmt::format_to(out, "dsv4_decode_tokens_per_second {:.3f}\n", s.last_decode_tps);
  metric(o, "dsv4_prefill_seconds_total", "counter", "Time spent in prefill.");
  fmt::format_to(out, "dsv4_prefill_seconds_total {:.6f}\n", s.prefill_seconds_total);
  metric(o, "dsv4_decode_seconds_total", "counter", "Time spent decoding.");
  fmt::format_to(out, "dsv4_decode_seconds_total {:.6f}\n", s.decode_seconds_total);

  metric(o, "dsv4_http_responses_total", "counter", "HTTP answers by status class.");
  for (int c = 2; c <= 5; ++c)
    fmt::format_to(out, "dsv4_http_responses_total{{code=\"{}xx\"}} {}\n", c, http.responses(c));
  metric(o, "dsv4_client_disconnects_total", "counter",
         "Generations cancelled because the client went away.");
  fmt::format_to(out, "dsv4_client_disconnects_total {}\n", http.disconnects());
  metric(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  fmt::format_to(out, "process_resident_memory_bytes {}\n", process_rss_bytes());
  return o;
}

}  // namespace dsv4::server
