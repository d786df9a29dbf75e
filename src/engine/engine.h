// The Engine: one loaded model serving generation jobs from many clients (spec/SERVER.md §4.1,
// §4.10-4.13, §5). The server uses only this API; the forward pass runs on a backend
// (engine/backend.h: the CPU reference, or the GPU with EngineOptions::gpu).
//
//  * Jobs go into a bounded queue (submit() throws QueueFull when it holds queue_limit jobs) and
//    are run by the engine's worker in arrival order. Shape: one worker today; batched decoding
//    of several sessions can replace the worker loop without changing this API.
//  * Each job renders its request, tokenizes it, and takes the live session with the longest
//    token prefix of the prompt (sessions are kept in an LRU within a memory budget; a session
//    is used by one job at a time, so two generations never interleave on it). When no live
//    session shares enough, the disk KV store is asked for the longest stored prefix. Only the
//    rest of the prompt is prefilled (in chunks, checking for cancellation between chunks).
//  * Sampling (sample/sampler.h) with the DSML greedy rule (sample/dsml_greedy.h), stop strings
//    (sample/stop.h), max_tokens and the context limit; the text is parsed as it streams
//    (text/dsml.h) into GenEvents. Tool-call ids are assigned by the engine ("call_" + 24 random
//    base-62 characters) and the exact sampled DSML block of each call is remembered, so a later
//    request carrying those ids re-renders the assistant turn byte for byte (then canonical
//    rendering, text::render_tool_calls, is the fallback) and hits the KV prefix.
//  * Scripted output (EngineOptions::scripted_output): every job emits the tokens of that text,
//    then end of turn, instead of sampling; everything else (prefill, parsing, caching) is real.
//  * Snapshots go to the disk store at aligned frontiers and at shutdown (~Engine).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/gen_types.h"
#include "model/config.h"

namespace dsv4::text {
class Tokenizer;
}

namespace dsv4::engine {

struct EngineOptions {
  std::string model_path;
  std::string mtp_path;
  std::string model_id;   // the id /v1/models reports; default: the file name without .gguf
  int threads = 0;        // CPU threads; 0 = all cores
  bool qat = true;        // FP8/FP4 rounding of stored KV, as the real model
  int64_t ctx_limit = 0;  // per-session context limit in tokens; 0 = the model's (GPU: <= 65536)
  uint64_t session_memory_bytes = 4ull << 30;  // budget for live sessions (LRU beyond it)
  int max_sessions = 16;                       // and a count limit
  int queue_limit = 64;                        // jobs waiting (running not counted)
  std::string kv_disk_dir;                     // empty: no disk KV cache
  uint64_t kv_disk_space_mb = 8192;
  int64_t kv_disk_min_tokens = 512;  // prompts shorter than this are not snapshotted
  int64_t kv_disk_align = 2048;      // snapshots at multiples of this many tokens (and the end)
  std::string scripted_output;       // non-empty: the text every generation emits
  // Tokens per prefill step (cancellation granularity); 0: the backend's default (CPU 512,
  // GPU 2048). On the GPU it also sizes the forward scratch (at most 8192).
  int64_t prefill_chunk = 0;
  // The whole-model GPU backend (CUDA builds; throws naming --gpu otherwise or without a
  // device). Sessions live in device memory, sized for ctx_limit tokens each, and count against
  // session_memory_bytes with their device bytes. No MTP (mtp_path must be empty).
  bool gpu = false;
  bool gpu_exact = false;                // f32 products only: equal to the CPU to f32 rounding
  double gpu_expert_host_fraction = -1;  // routed experts in host memory (< 0: automatic)
};

class QueueFull : public Error {
 public:
  using Error::Error;
};

using EventSink = std::function<void(const GenEvent&)>;

// A submitted job. cancel() is safe from any thread at any time; the job then ends promptly
// with kDone(kCancelled) and its session stays consistent (the tokens actually fed are kept).
class Job {
 public:
  virtual ~Job() = default;
  virtual void cancel() = 0;
  virtual void wait() = 0;  // until kDone was delivered
  virtual bool done() const = 0;
};

struct EngineStats {
  int64_t prompt_tokens_total = 0, cached_tokens_total = 0, generated_tokens_total = 0;
  int64_t requests_total = 0, requests_cancelled = 0, requests_failed = 0, requests_rejected = 0;
  int64_t cache_hits_memory = 0, cache_hits_disk = 0, cache_misses = 0;
  int64_t queue_depth = 0, running = 0;
  int64_t live_sessions = 0;
  uint64_t session_bytes = 0, disk_bytes = 0;
  int64_t disk_files = 0;
  double prefill_seconds_total = 0, decode_seconds_total = 0;
  double last_prefill_tps = 0, last_decode_tps = 0;
};

class Engine {
 public:
  // Loads the model (throws dsv4::Error naming the file and problem) and starts the worker.
  explicit Engine(EngineOptions opt);
  // Cancels queued and running jobs, writes the live sessions' snapshots (when a disk dir is
  // set), stops the worker.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const ModelConfig& config() const;
  const text::Tokenizer& tokenizer() const;
  const std::string& model_id() const;
  int64_t context_limit() const;
  // The backend in use: "cpu", or "cuda (device, placement, session size)".
  std::string backend_description() const;

  // The prompt tokens of `req` as a job would feed them. Throws dsv4::Error (bad conversation)
  // or ParamError (bad sampling/stop fields). Thread-safe; used by count_tokens and to validate
  // a request before answering 200.
  std::vector<int32_t> prompt_tokens(const GenerationRequest& req) const;

  // Validates `req` (throws like prompt_tokens, and ContextFull-style dsv4::Error when the
  // prompt does not fit), then queues it. Throws QueueFull when the queue is full. `sink` is
  // called from the engine's thread, in order, ending with exactly one kDone; it must not block
  // for long (the server writes to a socket buffer).
  std::shared_ptr<Job> submit(GenerationRequest req, EventSink sink);

  EngineStats stats() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4::engine
