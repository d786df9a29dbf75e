// The Engine (engine.h). One worker thread runs the jobs FIFO. Design of the session cache:
//
//  * A session (engine/backend.h: CPU reference or GPU) cannot be rolled back, so a cached
//    state is only useful when its whole token history is a prefix of the new prompt. The pool
//    holds entries {tokens, session}: the sessions of finished jobs (prompt + generated tokens +
//    closing EOS) and snapshot copies taken during prefill at the prompt's last-but-one token. The
//    snapshot is what lets a diverging request reuse a prefix: a stateless client that re-sends the
//    same conversation, or a thinking-mode follow-up whose earlier reasoning was dropped (the
//    prompt diverges right after `<｜Assistant｜>`), still finds everything but the last token of
//    the previous prompt.
//  * A job takes (moves out of the pool) the entry with the longest history that is a proper
//    prefix of its prompt; at least one prompt token is always prefilled, which gives the
//    logits of the first generated token (snapshots carry no logits). So no session is ever
//    shared by two jobs. When the disk store has a longer prefix, it is loaded instead.
//  * LRU eviction by count (max_sessions) and bytes (session_memory_bytes: the state vectors
//    of CPU sessions, the device memory of GPU sessions); an evicted entry of at least
//    kv_disk_min_tokens goes to the disk store when one is set. The disk store keeps the CPU
//    layout: GPU sessions are downloaded to save and uploaded after a load.
#include "engine/engine.h"

#include <fmt/core.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>

#include "engine/backend.h"
#include "model/cpu_forward.h"
#include "model/memory_plan.h"
#include "model/weights.h"
#include "sample/dsml_greedy.h"
#include "sample/sampler.h"
#include "sample/stop.h"
#include "state/kv_store.h"
#include "state/session_file.h"
#include "text/chat.h"
#include "text/dsml.h"
#include "text/tokenizer.h"

namespace dsv4::engine {
namespace {

constexpr int64_t kGpuDefaultContext = 65536;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool is_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  return a.size() <= b.size() && std::equal(a.begin(), a.end(), b.begin());
}

}  // namespace

namespace detail {

// Remembered tool-call blocks: id -> the exact generated block (spec/SERVER.md §4.12), LRU.
class ToolMemory {
 public:
  struct Block {
    std::string text;
    std::vector<std::string> ids;
  };
  static constexpr size_t kMaxIds = 100000;
  static constexpr uint64_t kMaxBytes = 256ull << 20;

  void remember(std::shared_ptr<const Block> b) {
    std::lock_guard lk(mu_);
    for (const std::string& id : b->ids) {
      auto it = map_.find(id);
      if (it != map_.end()) {
        drop(it);
      }
      lru_.push_front(id);
      bytes_ += b->text.size() + id.size();
      map_.emplace(id, Entry{b, lru_.begin()});
    }
    while (!lru_.empty() && (map_.size() > kMaxIds || bytes_ > kMaxBytes)) {
      drop(map_.find(lru_.back()));
    }
  }

  // The exact block when every call's id is known and they are exactly the calls of one block.
  std::optional<std::string> replay(std::span<const text::ToolCall> calls) {
    std::lock_guard lk(mu_);
    std::shared_ptr<const Block> block;
    for (const text::ToolCall& c : calls) {
      auto it = map_.find(c.id);
      if (it == map_.end()) return std::nullopt;
      if (block && it->second.block != block) return std::nullopt;
      block = it->second.block;
    }
    if (!block || block->ids.size() != calls.size()) return std::nullopt;
    for (size_t i = 0; i < calls.size(); ++i) {
      if (block->ids[i] != calls[i].id) return std::nullopt;
    }
    for (const text::ToolCall& c : calls) {
      auto it = map_.find(c.id);
      lru_.splice(lru_.begin(), lru_, it->second.pos);
    }
    return block->text;
  }

  // Persistence next to the disk KV cache, so that exact replay survives a restart. The file:
  // "DSV4TOOL", u32 version, u64 block count, per block {u32 id count, per id {u32 len, bytes},
  // u32 len, text}, then u64 FNV-1a of everything before. Blocks oldest first.
  void save(const std::string& path) {
    std::vector<std::shared_ptr<const Block>> blocks;
    {
      std::lock_guard lk(mu_);
      for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
        const auto& b = map_.at(*it).block;
        if (std::find(blocks.begin(), blocks.end(), b) == blocks.end()) blocks.push_back(b);
      }
    }
    if (blocks.empty()) return;
    std::string out("DSV4TOOL", 8);
    auto put32 = [&](uint32_t v) { out.append((const char*)&v, 4); };
    auto put_str = [&](const std::string& t) {
      put32((uint32_t)t.size());
      out += t;
    };
    put32(kFileVersion);
    const uint64_t n = blocks.size();
    out.append((const char*)&n, 8);
    for (const auto& b : blocks) {
      put32((uint32_t)b->ids.size());
      for (const std::string& id : b->ids) put_str(id);
      put_str(b->text);
    }
    const uint64_t sum = fnv(out);
    out.append((const char*)&sum, 8);
    const std::string tmp = path + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    bool ok = f != nullptr;
    if (f) ok = std::fwrite(out.data(), 1, out.size(), f) == out.size();
    if (f) ok = std::fclose(f) == 0 && ok;
    if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
      std::remove(tmp.c_str());
      fmt::print(stderr, "engine: {}: cannot write the tool-call memory\n", path);
    }
  }
  // Loads what save() wrote; a missing file is fine, a bad one is logged and removed.
  void load(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return;
    std::string b;
    char buf[65536];
    for (size_t k; (k = std::fread(buf, 1, sizeof buf, f)) > 0;) b.append(buf, k);
    std::fclose(f);
    size_t off = 8;
    auto need = [&](size_t k) {
      if (b.size() - 8 < off || b.size() - 8 - off < k) throw Error("truncated");
    };
    auto get32 = [&] {
      need(4);
      uint32_t v;
      std::memcpy(&v, b.data() + off, 4);
      off += 4;
      return v;
    };
    auto get_str = [&] {
      const uint32_t k = get32();
      need(k);
      std::string t = b.substr(off, k);
      off += k;
      return t;
    };
    try {
      if (b.size() < 8 + 4 + 8 + 8 || b.compare(0, 8, "DSV4TOOL") != 0)
        throw Error("not a tool-call memory file");
      uint64_t sum;
      std::memcpy(&sum, b.data() + b.size() - 8, 8);
      if (fnv(std::string_view(b).substr(0, b.size() - 8)) != sum) throw Error("checksum mismatch");
      if (get32() != kFileVersion) throw Error("other format version");
      need(8);
      uint64_t n;
      std::memcpy(&n, b.data() + off, 8);
      off += 8;
      std::vector<std::shared_ptr<Block>> blocks;
      for (uint64_t i = 0; i < n; ++i) {
        auto blk = std::make_shared<Block>();
        const uint32_t ids = get32();
        for (uint32_t k = 0; k < ids; ++k) blk->ids.push_back(get_str());
        blk->text = get_str();
        blocks.push_back(std::move(blk));
      }
      for (auto& blk : blocks) remember(std::move(blk));
    } catch (const Error& e) {
      fmt::print(stderr, "engine: removing {}: {}\n", path, e.what());
      std::remove(path.c_str());
    }
  }

 private:
  static constexpr uint32_t kFileVersion = 1;
  static uint64_t fnv(std::string_view s) {
    uint64_t h = 1469598103934665603ull;
    for (const char c : s) h = (h ^ (uint8_t)c) * 1099511628211ull;
    return h;
  }
  struct Entry {
    std::shared_ptr<const Block> block;
    std::list<std::string>::iterator pos;
  };
  void drop(std::unordered_map<std::string, Entry>::iterator it) {
    bytes_ -= it->second.block->text.size() + it->first.size();
    lru_.erase(it->second.pos);
    map_.erase(it);
  }
  std::mutex mu_;
  std::list<std::string> lru_;  // front = most recent
  std::unordered_map<std::string, Entry> map_;
  uint64_t bytes_ = 0;
};

struct JobImpl final : Job {
  GenerationRequest req;
  std::vector<int32_t> tokens;
  EventSink sink;
  std::atomic<bool> cancelled{false};
  std::mutex emit_mu;  // events are delivered one at a time, in order
  bool sink_ok = true;
  bool done_sent = false;  // kDone was delivered (or its delivery attempted)
  mutable std::mutex mu;
  std::condition_variable cv;
  bool finished = false;

  void cancel() override { cancelled = true; }
  void wait() override {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return finished; });
  }
  bool done() const override {
    std::lock_guard lk(mu);
    return finished;
  }
  // A sink that throws cancels its job; it gets no further events.
  void emit(const GenEvent& e) {
    std::lock_guard lk(emit_mu);
    emit_locked(e);
  }
  void emit_locked(const GenEvent& e) {
    if (e.kind == GenEvent::Kind::kDone) done_sent = true;
    if (!sink_ok) return;
    try {
      sink(e);
    } catch (...) {
      sink_ok = false;
      cancelled = true;
    }
  }
  void mark_finished() {
    std::lock_guard lk(mu);
    finished = true;
    cv.notify_all();
  }
};

}  // namespace detail

namespace {

using detail::JobImpl;
using detail::ToolMemory;

constexpr const char* kToolMemoryFile = "tool_calls.bin";

GenEvent event(GenEvent::Kind k, std::string text = {}) {
  GenEvent e;
  e.kind = k;
  e.text = std::move(text);
  return e;
}

}  // namespace

struct Engine::Impl {
  EngineOptions opt;
  std::unique_ptr<Model> model;
  std::unique_ptr<Backend> backend;  // before `pool`: sessions must go first
  size_t chunk = 0;                  // prefill chunk in use
  std::unique_ptr<text::Tokenizer> tok;
  std::string model_id;
  int64_t ctx = 0;
  uint64_t fingerprint = 0;
  std::unique_ptr<KvStore> store;
  std::vector<int32_t> scripted;  // tokens of opt.scripted_output
  ToolMemory tools;

  // Queue.
  mutable std::mutex qmu;
  std::condition_variable qcv;
  std::deque<std::shared_ptr<JobImpl>> queue;
  std::shared_ptr<JobImpl> current;
  bool stopping = false;
  std::thread worker;

  // Live sessions (worker thread only, and ~Engine after the worker stopped).
  struct Live {
    std::vector<int32_t> tokens;
    std::unique_ptr<BackendSession> sess;
    uint64_t bytes = 0;
  };
  std::list<Live> pool;  // front = most recently used
  uint64_t pool_bytes = 0;

  // Statistics.
  mutable std::mutex smu;
  EngineStats st;

  std::mt19937_64 id_rng{std::random_device{}()};

  void run();
  void run_job(JobImpl& job);
  void generate(JobImpl& job, Usage& u, FinishReason& finish);
  Live acquire(const std::vector<int32_t>& prompt, Usage& u);
  void put_back(Live&& l);
  void evict();
  void snapshot_to_disk(const Live& l);
  std::string new_call_id();
  void update_pool_stats() {
    std::lock_guard lk(smu);
    st.live_sessions = (int64_t)pool.size();
    st.session_bytes = pool_bytes;
  }
};

// ---------------------------------------------------------------------------------------------

Engine::Engine(EngineOptions opt) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  if (opt.prefill_chunk < 0)
    fail("engine: prefill_chunk must be >= 1 (0: the backend's default), got {}",
         opt.prefill_chunk);
  if (opt.gpu && !opt.mtp_path.empty())
    fail("engine: the MTP draft model (--mtp) is not supported on the GPU backend (--gpu)");
  if (opt.kv_disk_align < 1) fail("engine: kv_disk_align must be >= 1, got {}", opt.kv_disk_align);
  if (opt.max_sessions < 0) fail("engine: max_sessions must be >= 0, got {}", opt.max_sessions);
  if (opt.queue_limit < 0) fail("engine: queue_limit must be >= 0, got {}", opt.queue_limit);
  if (opt.ctx_limit < 0) fail("engine: ctx_limit must be >= 0, got {}", opt.ctx_limit);
  m.opt = std::move(opt);
  m.model = load_model(m.opt.model_path, m.opt.mtp_path);
  m.tok = std::make_unique<text::Tokenizer>(text::Tokenizer::from_gguf(*m.model->file));
  m.tok->chat_tokens();  // throws when the vocabulary lacks the chat tokens
  m.model_id = m.opt.model_id;
  if (m.model_id.empty()) {
    m.model_id = std::filesystem::path(m.opt.model_path).filename().string();
    if (m.model_id.size() > 5 && m.model_id.ends_with(".gguf"))
      m.model_id.resize(m.model_id.size() - 5);
  }
  // A GPU session reserves device state for the whole context (~13.8 KB per token of the real
  // model: 13 GiB at 1M), so without --ctx the GPU gets at most 64K tokens per session.
  const int64_t model_ctx =
      m.model->cfg.context_length > 0 ? (int64_t)m.model->cfg.context_length : 65536;
  m.ctx = m.opt.ctx_limit > 0 ? m.opt.ctx_limit
          : m.opt.gpu         ? std::min<int64_t>(model_ctx, kGpuDefaultContext)
                              : model_ctx;
  if (m.ctx < 2) fail("engine: context limit {} is too small", m.ctx);
  BackendOptions bo;
  bo.gpu = m.opt.gpu;
  bo.qat = m.opt.qat;
  bo.max_ctx = m.ctx;  // no session ever holds more than the context limit
  bo.gpu_batch = m.opt.prefill_chunk > 0 ? std::min<int64_t>(m.opt.prefill_chunk, 8192) : 2048;
  bo.gpu_exact = m.opt.gpu_exact;
  bo.expert_host_fraction = m.opt.gpu_expert_host_fraction;
  if (m.opt.gpu) {
    const uint64_t per = kv_memory_plan(m.model->cfg, m.ctx, StateStorage::kF32).total_bytes();
    bo.session_reserve_bytes =
        std::min<uint64_t>(m.opt.session_memory_bytes, per * (uint64_t)m.opt.max_sessions);
  }
  m.backend = make_backend(*m.model, bo);
  m.chunk =
      (size_t)(m.opt.prefill_chunk > 0 ? m.opt.prefill_chunk : m.backend->default_prefill_chunk());
  if (m.backend->is_gpu() && m.opt.max_sessions > 0) {
    const uint64_t one = m.backend->new_session()->bytes();
    if (2 * one > m.opt.session_memory_bytes)
      fmt::print(stderr,
                 "engine: a GPU session takes {:.1f} MiB of device memory (context {}); the "
                 "session budget of {:.1f} MiB keeps fewer than two, so prompts reuse no prefix "
                 "from memory: raise the budget or lower the context limit\n",
                 one / 1048576.0, m.ctx, m.opt.session_memory_bytes / 1048576.0);
  }
  m.fingerprint = model_fingerprint(*m.model);
  if (!m.opt.kv_disk_dir.empty()) {
    m.store = std::make_unique<KvStore>(m.opt.kv_disk_dir, m.opt.kv_disk_space_mb << 20,
                                        m.fingerprint, m.model->cfg);
    m.tools.load(m.store->dir() + "/" + kToolMemoryFile);
  }
  if (!m.opt.scripted_output.empty())
    m.scripted = m.tok->encode_with_specials(m.opt.scripted_output);
  m.worker = std::thread([&m] { m.run(); });
}

Engine::~Engine() {
  Impl& m = *impl_;
  {
    std::lock_guard lk(m.qmu);
    m.stopping = true;
    for (auto& j : m.queue) j->cancelled = true;
    if (m.current) m.current->cancelled = true;
  }
  m.qcv.notify_all();
  if (m.worker.joinable()) m.worker.join();
  if (m.store) {
    for (const Impl::Live& l : m.pool) m.snapshot_to_disk(l);
    m.tools.save(m.store->dir() + "/" + kToolMemoryFile);
  }
}

const ModelConfig& Engine::config() const {
  return impl_->model->cfg;
}
const text::Tokenizer& Engine::tokenizer() const {
  return *impl_->tok;
}
const std::string& Engine::model_id() const {
  return impl_->model_id;
}
int64_t Engine::context_limit() const {
  return impl_->ctx;
}
std::string Engine::backend_description() const {
  return impl_->backend->describe();
}

std::vector<int32_t> Engine::prompt_tokens(const GenerationRequest& req) const {
  Impl& m = *impl_;
  const int64_t nv = (int64_t)m.model->cfg.n_vocab;
  validate(req.sampling, nv);
  validate(req.stop, nv);
  std::vector<int32_t> ids;
  if (req.conversation) {
    if (req.tool_choice.kind == ToolChoice::Kind::kFunction) {
      bool found = false;
      for (const text::Tool& t : req.conversation->tools)
        found = found || t.name == req.tool_choice.function;
      for (const text::Message& msg : req.conversation->messages) {
        for (const text::Tool& t : msg.tools) found = found || t.name == req.tool_choice.function;
      }
      if (!found)
        fail("tool_choice: no tool named \"{}\" in the request", req.tool_choice.function);
    }
    if (req.tool_choice.kind == ToolChoice::Kind::kRequired) {
      bool any = !req.conversation->tools.empty();
      for (const text::Message& msg : req.conversation->messages) any = any || !msg.tools.empty();
      if (!any) fail("tool_choice: \"required\" needs at least one tool");
    }
    text::RenderOptions ro = req.render;
    if (!ro.replay_tool_calls) {
      ro.replay_tool_calls = [&m](std::span<const text::ToolCall> calls) {
        return m.tools.replay(calls);
      };
    }
    ids = text::render(*req.conversation, ro).tokens(*m.tok);
  } else {
    ids.push_back(m.tok->bos_id());
    m.tok->encode_text(req.raw_prompt, ids);
  }
  return ids;
}

std::shared_ptr<Job> Engine::submit(GenerationRequest req, EventSink sink) {
  Impl& m = *impl_;
  std::vector<int32_t> ids;
  try {
    ids = prompt_tokens(req);
    if ((int64_t)ids.size() >= m.ctx) {
      fail(
          "the prompt is {} tokens and the context limit is {} tokens (at least one token must be "
          "left for the answer)",
          ids.size(), m.ctx);
    }
  } catch (...) {
    std::lock_guard lk(m.smu);
    ++m.st.requests_rejected;
    throw;
  }
  auto job = std::make_shared<JobImpl>();
  job->req = std::move(req);
  job->tokens = std::move(ids);
  job->sink = std::move(sink);
  // kQueued is delivered here, on the caller's thread, outside the queue lock; the worker's
  // first event waits for it (emit_mu).
  std::unique_lock emit_lock(job->emit_mu);
  {
    std::lock_guard lk(m.qmu);
    if (m.stopping) fail("the engine is shutting down");
    if ((int64_t)m.queue.size() >= m.opt.queue_limit) {
      {
        std::lock_guard sl(m.smu);
        ++m.st.requests_rejected;
      }
      throw QueueFull(fmt::format("the queue is full ({} requests waiting)", m.queue.size()));
    }
    m.queue.push_back(job);
  }
  m.qcv.notify_one();
  job->emit_locked(event(GenEvent::Kind::kQueued));
  return job;
}

EngineStats Engine::stats() const {
  Impl& m = *impl_;
  EngineStats s;
  {
    std::lock_guard lk(m.smu);
    s = m.st;
  }
  {
    std::lock_guard lk(m.qmu);
    s.queue_depth = (int64_t)m.queue.size();
    s.running = m.current ? 1 : 0;
  }
  if (m.store) {
    s.disk_bytes = m.store->bytes();
    s.disk_files = (int64_t)m.store->files();
  }
  return s;
}

// ---------------------------------------------------------------------------------------------

void Engine::Impl::run() {
  if (opt.threads > 0) omp_set_num_threads(opt.threads);
  for (;;) {
    std::shared_ptr<JobImpl> job;
    {
      std::unique_lock lk(qmu);
      qcv.wait(lk, [&] { return stopping || !queue.empty(); });
      if (queue.empty()) return;  // stopping
      job = std::move(queue.front());
      queue.pop_front();
      current = job;
      if (stopping) job->cancelled = true;
    }
    run_job(*job);
    {
      std::lock_guard lk(qmu);
      current.reset();
    }
    job->mark_finished();
  }
}

void Engine::Impl::run_job(JobImpl& job) {
  Usage u;
  u.prompt_tokens = (int64_t)job.tokens.size();
  FinishReason finish = FinishReason::kStop;
  if (job.cancelled) {
    finish = FinishReason::kCancelled;
  } else {
    try {
      generate(job, u, finish);
      return;  // generate delivered kDone
    } catch (const std::exception& e) {
      fmt::print(stderr, "engine: request {}: {}\n", job.req.request_id, e.what());
      if (job.done_sent) return;  // failed after the answer was complete (closing the turn)
      job.emit(event(GenEvent::Kind::kError, e.what()));
      finish = FinishReason::kError;
    }
  }
  {
    std::lock_guard lk(smu);
    ++st.requests_total;
    if (finish == FinishReason::kCancelled) ++st.requests_cancelled;
    if (finish == FinishReason::kError) ++st.requests_failed;
  }
  GenEvent done = event(GenEvent::Kind::kDone);
  done.finish = finish;
  done.usage = u;
  job.emit(done);
}

Engine::Impl::Live Engine::Impl::acquire(const std::vector<int32_t>& prompt, Usage& u) {
  const size_t max_len = prompt.size() - 1;  // at least one token is prefilled
  auto best = pool.end();
  for (auto it = pool.begin(); it != pool.end(); ++it) {
    if (it->tokens.size() <= max_len && is_prefix(it->tokens, prompt) &&
        (best == pool.end() || it->tokens.size() > best->tokens.size()))
      best = it;
  }
  const size_t live_len = best == pool.end() ? 0 : best->tokens.size();
  Live l;
  if (store && store->longest_prefix(prompt, max_len) > live_len) {
    CpuSession host;  // filled (and its shapes checked) by load_longest
    if (store->load_longest(prompt, max_len, l.tokens, host) > live_len) {
      l.sess = backend->from_host(std::move(host));
      u.cached_tokens = (int64_t)l.tokens.size();
      u.cache_source = Usage::CacheSource::kDisk;
      std::lock_guard lk(smu);
      ++st.cache_hits_disk;
      return l;
    }
  }
  if (best != pool.end() && live_len > 0) {
    l = std::move(*best);
    pool_bytes -= l.bytes;
    pool.erase(best);
    update_pool_stats();
    u.cached_tokens = (int64_t)l.tokens.size();
    u.cache_source = Usage::CacheSource::kMemory;
    std::lock_guard lk(smu);
    ++st.cache_hits_memory;
    return l;
  }
  l.tokens.clear();
  l.sess = backend->new_session();
  std::lock_guard lk(smu);
  ++st.cache_misses;
  return l;
}

void Engine::Impl::snapshot_to_disk(const Live& l) {
  if (!store || (int64_t)l.tokens.size() < opt.kv_disk_min_tokens || l.tokens.empty()) return;
  if (store->contains(l.tokens)) return;
  CpuSession scratch;
  store->save(l.tokens, l.sess->host_state(scratch));
}

void Engine::Impl::put_back(Live&& l) {
  if (l.tokens.empty()) return;
  l.bytes = l.sess->bytes();
  pool_bytes += l.bytes;
  pool.push_front(std::move(l));
  evict();
}

void Engine::Impl::evict() {
  while (!pool.empty() &&
         ((int64_t)pool.size() > opt.max_sessions || pool_bytes > opt.session_memory_bytes)) {
    snapshot_to_disk(pool.back());
    pool_bytes -= pool.back().bytes;
    pool.pop_back();
  }
  update_pool_stats();
}

std::string Engine::Impl::new_call_id() {
  static constexpr char kChars[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::string id = "call_";
  std::uniform_int_distribution<int> d(0, 61);
  for (int i = 0; i < 24; ++i) id += kChars[d(id_rng)];
  return id;
}

void Engine::Impl::generate(JobImpl& job, Usage& u, FinishReason& finish) {
  const GenerationRequest& req = job.req;
  const std::vector<int32_t>& P = job.tokens;
  const size_t n = P.size();
  const text::ChatTokens& ct = tok->chat_tokens();
  const int64_t nv = (int64_t)model->cfg.n_vocab;

  Live cur = acquire(P, u);
  GenEvent started = event(GenEvent::Kind::kStarted);
  started.usage = u;
  job.emit(started);

  // The session goes back to the pool with the tokens actually fed (also after a cancel); not
  // after an exception, which may have left a forward pass half done.
  struct Guard {
    Impl& m;
    Live& l;
    int exceptions = std::uncaught_exceptions();
    ~Guard() {
      if (std::uncaught_exceptions() == exceptions) m.put_back(std::move(l));
    }
  } guard{*this, cur};

  // `stop_text`: the stop string that ended generation (writers report it, e.g. Anthropic's
  // stop_sequence).
  auto done = [&](FinishReason f, const std::string& stop_text = {}) {
    finish = f;
    {
      std::lock_guard lk(smu);
      ++st.requests_total;
      st.prompt_tokens_total += u.prompt_tokens;
      st.cached_tokens_total += u.cached_tokens;
      st.generated_tokens_total += u.completion_tokens;
      st.prefill_seconds_total += u.prefill_seconds;
      st.decode_seconds_total += u.decode_seconds;
      const int64_t prefilled = u.prompt_tokens - u.cached_tokens;
      if (u.prefill_seconds > 0 && prefilled > 0)
        st.last_prefill_tps = prefilled / u.prefill_seconds;
      if (u.decode_seconds > 0 && u.completion_tokens > 0)
        st.last_decode_tps = u.completion_tokens / u.decode_seconds;
      if (f == FinishReason::kCancelled) ++st.requests_cancelled;
      if (f == FinishReason::kError) ++st.requests_failed;
    }
    GenEvent d = event(GenEvent::Kind::kDone);
    d.finish = f;
    d.usage = u;
    d.text = stop_text;
    job.emit(d);
  };

  // ---- Prefill, in chunks; snapshots at disk-aligned frontiers and at the last-but-one token.
  const double t0 = now_s();
  std::vector<float> logits;  // of the last token fed
  const bool disk = store && (int64_t)n >= opt.kv_disk_min_tokens;
  const size_t align = (size_t)opt.kv_disk_align;
  auto at_frontier = [&](size_t pos) {
    if (disk && pos % align == 0) snapshot_to_disk(cur);
    if (pos + 1 != n) return;
    if (disk) snapshot_to_disk(cur);
    if (opt.max_sessions < 2) return;  // the snapshot would evict the session itself
    for (const Live& l : pool) {
      if (l.tokens.size() == pos && is_prefix(l.tokens, P)) return;  // already there
    }
    const uint64_t bytes = cur.sess->bytes();
    if (bytes * 2 > opt.session_memory_bytes) return;
    Live copy;
    copy.tokens = cur.tokens;
    try {
      copy.sess = cur.sess->clone();
    } catch (const std::exception& e) {  // e.g. no device memory left: the request goes on
      fmt::print(stderr, "engine: request {}: no prefix snapshot: {}\n", req.request_id, e.what());
      return;
    }
    put_back(std::move(copy));
  };
  size_t pos = cur.tokens.size();
  if (pos > 0) at_frontier(pos);
  while (pos < n) {
    if (job.cancelled) {
      u.prefill_seconds = now_s() - t0;
      done(FinishReason::kCancelled);
      return;
    }
    size_t end = std::min(n, pos + chunk);
    if (disk) end = std::min(end, (pos / align + 1) * align);
    if (pos + 1 < n) end = std::min(end, n - 1);
    backend->forward(*cur.sess, P.data() + pos, (int64_t)(end - pos), logits);
    cur.tokens.insert(cur.tokens.end(), P.begin() + (ptrdiff_t)pos, P.begin() + (ptrdiff_t)end);
    pos = end;
    if (pos < n) at_frontier(pos);
  }
  u.prefill_seconds = now_s() - t0;

  // ---- Decode.
  const bool chat = req.conversation.has_value();
  const bool thinking = chat && P.back() == ct.think_start;
  const bool parse =
      chat && req.parse_tool_calls && req.tool_choice.kind != ToolChoice::Kind::kNone;
  const bool scripted_mode = !scripted.empty();
  Sampler sampler(req.sampling);
  sampler.add_prompt(P);
  StopParams sp = req.stop;
  sp.stop_tokens.push_back(ct.eos);
  StopChecker stop(sp);
  text::StreamDecoder dec(*tok, false);
  DsmlGreedyTracker greedy(thinking);
  text::DsmlParser parser(thinking);
  std::vector<text::DsmlEvent> evs;

  // tool_choice required / function: the tool-call opening is forced as soon as the answer
  // (content) begins, so the model has to write a call.
  std::vector<int32_t> forced;
  size_t forced_at = 0;
  bool force_armed = false;
  if (parse && !scripted_mode &&
      (req.tool_choice.kind == ToolChoice::Kind::kRequired ||
       req.tool_choice.kind == ToolChoice::Kind::kFunction)) {
    tok->encode_with_specials(std::string("\n\n") + std::string(text::dsml::kBlockOpen) + "\n" +
                                  std::string(text::dsml::kInvokeOpen) + " name=\"",
                              forced);
    if (req.tool_choice.kind == ToolChoice::Kind::kFunction) {
      tok->encode_text(req.tool_choice.function, forced);
      tok->encode_with_specials("\">\n", forced);
    }
    force_armed = !thinking;
  }

  std::vector<std::string> call_ids, call_names;
  std::vector<std::string> block_ids;  // ids of the calls of the open block
  size_t n_calls = 0;
  bool block_closed = false;
  auto handle = [&](std::vector<text::DsmlEvent>& list) {
    for (text::DsmlEvent& e : list) {
      switch (e.kind) {
        case text::DsmlEvent::Kind::kReasoning:
          job.emit(event(GenEvent::Kind::kReasoning, std::move(e.text)));
          break;
        case text::DsmlEvent::Kind::kContent:
          job.emit(event(GenEvent::Kind::kContent, std::move(e.text)));
          break;
        case text::DsmlEvent::Kind::kToolCallStart: {
          if (!parse) break;
          if (call_ids.size() <= e.index) {
            call_ids.resize(e.index + 1);
            call_names.resize(e.index + 1);
          }
          call_ids[e.index] = new_call_id();
          call_names[e.index] = e.name;
          GenEvent g = event(GenEvent::Kind::kToolCallStart);
          g.index = e.index;
          g.id = call_ids[e.index];
          g.name = e.name;
          job.emit(g);
          break;
        }
        case text::DsmlEvent::Kind::kToolCall: {
          if (!parse) break;
          if (call_ids.size() <= e.index) {  // no start seen (should not happen)
            call_ids.resize(e.index + 1);
            call_names.resize(e.index + 1);
          }
          if (call_ids[e.index].empty()) call_ids[e.index] = new_call_id();
          GenEvent a = event(GenEvent::Kind::kToolCallArgs, e.arguments);
          a.index = e.index;
          a.id = call_ids[e.index];
          job.emit(a);
          GenEvent g = event(GenEvent::Kind::kToolCallEnd);
          g.index = e.index;
          g.id = call_ids[e.index];
          g.name = e.name;
          g.arguments = std::move(e.arguments);
          job.emit(g);
          block_ids.push_back(call_ids[e.index]);
          ++n_calls;
          break;
        }
        case text::DsmlEvent::Kind::kToolBlockEnd:
          if (!parse) {
            job.emit(event(GenEvent::Kind::kContent, std::move(e.text)));
            break;
          }
          if (!block_ids.empty()) {
            auto b = std::make_shared<ToolMemory::Block>();
            b->text = std::move(e.text);
            b->ids = std::move(block_ids);
            tools.remember(std::move(b));
          }
          block_ids.clear();
          block_closed = true;
          break;
        case text::DsmlEvent::Kind::kIssue:
          fmt::print(stderr, "engine: request {}: tool call: {}\n", req.request_id, e.text);
          break;
      }
    }
    list.clear();
  };
  auto feed = [&](const std::string& s) {
    if (s.empty()) return;
    parser.feed(s, evs);
    handle(evs);
  };

  if (req.echo) {
    job.emit(event(GenEvent::Kind::kContent, chat ? tok->decode(P) : req.raw_prompt));
  }

  const double t1 = now_s();
  size_t script_at = 0;
  bool in_reasoning = thinking;
  bool eos_end = false;
  std::optional<FinishReason> fin;
  std::string piece;
  while (!fin) {
    if (job.cancelled) {
      fin = FinishReason::kCancelled;
      break;
    }
    if ((int64_t)cur.tokens.size() >= ctx) {
      fin = FinishReason::kLength;
      break;
    }
    int32_t id;
    if (scripted_mode) {
      id = script_at < scripted.size() ? scripted[script_at++] : ct.eos;
    } else if (force_armed && forced_at < forced.size()) {
      id = forced[forced_at++];
      sampler.accept(id);
    } else {
      id = sampler.sample(logits.data(), nv, parse && greedy.force_greedy());
    }
    const Finish f = stop.on_token(id);
    if (f == Finish::kStopToken) {
      eos_end = id == ct.eos;
      fin = FinishReason::kStop;
      break;
    }
    ++u.completion_tokens;
    if (in_reasoning) ++u.reasoning_tokens;
    if (id == ct.think_end && in_reasoning) {
      in_reasoning = false;
      if (!forced.empty()) force_armed = true;
    }
    const std::string_view bytes = tok->token_bytes(id);
    greedy.on_text(bytes);
    piece.clear();
    if (!tok->is_special(id) || id == ct.think_end || id == ct.think_start || id == ct.dsml) {
      dec.push(id, piece);
    }
    // The token enters the session before the stop checks (spec/SERVER.md §3.5).
    backend->forward(*cur.sess, &id, 1, logits);
    cur.tokens.push_back(id);
    if (stop.on_text(piece) == Finish::kStopString) {
      feed(stop.take_all());
      fin = FinishReason::kStop;
      break;
    }
    feed(stop.take_safe());
    if (f == Finish::kLength) fin = FinishReason::kLength;
    if (block_closed) fin = n_calls > 0 ? FinishReason::kToolCalls : FinishReason::kStop;
  }
  if (*fin != FinishReason::kCancelled) {
    if (stop.finish() != Finish::kStopString) {
      stop.on_text(dec.finish());
      feed(stop.take_all());
    }
    parser.finish(evs);
    handle(evs);
    if (n_calls > 0 && *fin == FinishReason::kStop && !parser.incomplete_call())
      fin = FinishReason::kToolCalls;
  }
  u.decode_seconds = now_s() - t1;
  done(*fin, *fin == FinishReason::kStop && stop.finish() == Finish::kStopString ? stop.matched()
                                                                                 : std::string());

  // Close the turn in the session as the rendered history will (…<｜end▁of▁sentence｜>), so the
  // next request's prompt finds it: after an end of turn, tool calls, or max_tokens.
  const bool close = eos_end || *fin == FinishReason::kToolCalls ||
                     (*fin == FinishReason::kLength && stop.finish() == Finish::kLength);
  if (close && (int64_t)cur.tokens.size() < ctx) {
    backend->forward(*cur.sess, &ct.eos, 1, logits);
    cur.tokens.push_back(ct.eos);
  }
}

}  // namespace dsv4::engine
