// The Engine on a generated tiny model (byte-level vocabulary with the chat specials): prefix
// reuse (memory and disk) with output identical to a fresh run, LRU eviction, concurrency, the
// bounded queue, cancellation, scripted output and its exact event sequence, exact DSML replay,
// the context limit.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "engine/engine.h"
#include "model/tiny_model.h"
#include "text/tokenizer.h"
#include "tiny_model_fixture.h"

using namespace dsv4;
using namespace dsv4::engine;
namespace fs = std::filesystem;
using Kind = GenEvent::Kind;

namespace {

using engine_test::model_path;
using engine_test::temp_root;

EngineOptions options() {
  EngineOptions o;
  o.model_path = model_path();
  o.threads = 1;
  o.prefill_chunk = 16;
  return o;
}

struct Result {
  std::vector<GenEvent> events;
  std::string reasoning, content;
  GenEvent done;
  int n_done = 0;
};

std::shared_ptr<Job> start(Engine& e, GenerationRequest req, std::shared_ptr<Result> res,
                           std::function<void(const GenEvent&)> hook = nullptr) {
  return e.submit(std::move(req), [res, hook](const GenEvent& ev) {
    res->events.push_back(ev);
    if (ev.kind == Kind::kReasoning) res->reasoning += ev.text;
    if (ev.kind == Kind::kContent) res->content += ev.text;
    if (ev.kind == Kind::kDone) {
      res->done = ev;
      ++res->n_done;
    }
    if (hook) hook(ev);
  });
}

Result run(Engine& e, GenerationRequest req) {
  auto res = std::make_shared<Result>();
  start(e, std::move(req), res)->wait();
  return *res;
}

text::Message msg(text::Role role, std::string content) {
  text::Message m;
  m.role = role;
  m.content = std::move(content);
  return m;
}

GenerationRequest chat(std::vector<text::Message> msgs, text::ThinkingMode mode,
                       int64_t max_tokens) {
  GenerationRequest r;
  r.conversation = text::Conversation{std::move(msgs), {}};
  r.render.mode = mode;
  r.sampling.temperature = 0;
  r.stop.max_tokens = max_tokens;
  return r;
}

GenerationRequest completion(std::string prompt, int64_t max_tokens) {
  GenerationRequest r;
  r.raw_prompt = std::move(prompt);
  r.sampling.temperature = 0;
  r.stop.max_tokens = max_tokens;
  return r;
}

}  // namespace

TEST(Engine, PrefixReuseGivesTheSameOutputAsAFreshRun) {
  EngineOptions fresh_opt = options();
  fresh_opt.max_sessions = 0;  // nothing is ever reused
  Engine fresh(fresh_opt);
  Engine e(options());
  EXPECT_EQ(e.model_id(), "tiny");
  const auto req = chat({msg(text::Role::kUser, "Hi")}, text::ThinkingMode::kChat, 4);
  const Result a = run(e, req);
  EXPECT_EQ(a.done.usage.cached_tokens, 0);
  EXPECT_EQ(a.done.usage.cache_source, Usage::CacheSource::kNone);
  // The same stateless request again: everything but the last prompt token is reused.
  const Result b = run(e, req);
  const int64_t n = b.done.usage.prompt_tokens;
  EXPECT_EQ(b.done.usage.cached_tokens, n - 1);
  EXPECT_EQ(b.done.usage.cache_source, Usage::CacheSource::kMemory);
  const Result c = run(fresh, req);
  EXPECT_EQ(c.done.usage.cached_tokens, 0);
  EXPECT_EQ(a.content, c.content);
  EXPECT_EQ(b.content, c.content);
  EXPECT_EQ(a.done.usage.completion_tokens, c.done.usage.completion_tokens);
  EXPECT_EQ(b.done.finish, c.done.finish);
  // A completion whose prompt extends the first one's history continues that session.
  const Result d = run(e, completion("abc", 2));
  const Result d2 = run(e, completion("abcdef", 2));
  EXPECT_EQ(d2.done.usage.cached_tokens, 3);
  EXPECT_EQ(d2.content, run(fresh, completion("abcdef", 2)).content);
  (void)d;
  const EngineStats st = e.stats();
  EXPECT_EQ(st.requests_total, 4);
  EXPECT_GE(st.cache_hits_memory, 2);
  EXPECT_EQ(st.queue_depth, 0);
  EXPECT_GT(st.live_sessions, 0);
  EXPECT_GT(st.session_bytes, 0u);
}

TEST(Engine, MultiTurnThinkingReusesThePreviousPrompt) {
  Engine e(options());
  auto t1 = chat({msg(text::Role::kUser, "Hi")}, text::ThinkingMode::kThinking, 2);
  const Result a = run(e, t1);
  // Turn 2 drops turn 1's reasoning, so it diverges right after turn 1's <｜Assistant｜>.
  auto asst = msg(text::Role::kAssistant, "ok");
  auto t2 = chat({msg(text::Role::kUser, "Hi"), asst, msg(text::Role::kUser, "More")},
                 text::ThinkingMode::kThinking, 1);
  const Result b = run(e, t2);
  EXPECT_EQ(b.done.usage.cached_tokens, a.done.usage.prompt_tokens - 1);
}

TEST(Engine, EvictsLeastRecentlyUsedByCountAndBytes) {
  EngineOptions o = options();
  o.max_sessions = 2;
  {
    Engine e(o);
    run(e, completion("a1", 1));
    run(e, completion("b2", 1));
    run(e, completion("c3", 1));
    EXPECT_LE(e.stats().live_sessions, 2);
    // "a1" was evicted (each job leaves a snapshot and its session).
    const Result r = run(e, completion("a1", 1));
    EXPECT_EQ(r.done.usage.cache_source, Usage::CacheSource::kNone);
    EXPECT_GE(e.stats().cache_misses, 4);
  }
  // Bytes: room for one session only (no snapshot copy fits next to it).
  uint64_t one = 0;
  {
    Engine e(options());
    run(e, completion("x", 1));
    one = e.stats().session_bytes / (uint64_t)e.stats().live_sessions;
  }
  ASSERT_GT(one, 0u);
  o.max_sessions = 16;
  o.session_memory_bytes = one + one / 2;
  {
    Engine e(o);
    run(e, completion("a1", 1));
    run(e, completion("b2", 1));
    EXPECT_EQ(e.stats().live_sessions, 1);
    EXPECT_LE(e.stats().session_bytes, o.session_memory_bytes);
  }
  o.session_memory_bytes = one / 2;  // nothing fits
  Engine e(o);
  run(e, completion("p1", 1));
  EXPECT_EQ(e.stats().live_sessions, 0);
  EXPECT_EQ(e.stats().session_bytes, 0u);
}

TEST(Engine, ConcurrentSubmitsAllComplete) {
  Engine e(options());
  std::vector<std::shared_ptr<Result>> results;
  std::vector<std::shared_ptr<Job>> jobs;
  std::mutex mu;
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2; ++i) {
        auto res = std::make_shared<Result>();
        auto job = start(e, completion(std::to_string(t) + std::to_string(i), 1), res);
        std::lock_guard lk(mu);
        results.push_back(res);
        jobs.push_back(job);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (auto& j : jobs) j->wait();
  ASSERT_EQ(results.size(), 6u);
  for (const auto& r : results) {
    EXPECT_EQ(r->n_done, 1);
    ASSERT_FALSE(r->events.empty());
    EXPECT_EQ(r->events.front().kind, Kind::kQueued);
    EXPECT_EQ(r->events.back().kind, Kind::kDone);
    EXPECT_NE(r->done.finish, FinishReason::kError);
  }
  EXPECT_EQ(e.stats().requests_total, 6);
  for (auto& j : jobs) EXPECT_TRUE(j->done());
}

TEST(Engine, QueueFullAndCancelWhileQueued) {
  EngineOptions o = options();
  o.queue_limit = 1;
  Engine e(o);
  std::mutex mu;
  std::condition_variable cv;
  bool started = false, release = false;
  auto blocker = std::make_shared<Result>();
  auto j1 = start(e, completion("busy", 2), blocker, [&](const GenEvent& ev) {
    if (ev.kind != Kind::kStarted) return;
    std::unique_lock lk(mu);
    started = true;
    cv.notify_all();
    cv.wait(lk, [&] { return release; });
  });
  {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return started; });
  }
  auto queued = std::make_shared<Result>();
  auto j2 = start(e, completion("waiting", 2), queued);
  EXPECT_THROW(start(e, completion("one too many", 2), std::make_shared<Result>()), QueueFull);
  EXPECT_EQ(e.stats().queue_depth, 1);
  EXPECT_EQ(e.stats().running, 1);
  EXPECT_EQ(e.stats().requests_rejected, 1);
  j2->cancel();
  {
    std::lock_guard lk(mu);
    release = true;
  }
  cv.notify_all();
  j1->wait();
  j2->wait();
  EXPECT_TRUE(blocker->done.finish == FinishReason::kLength ||
              blocker->done.finish == FinishReason::kStop);
  EXPECT_EQ(queued->done.finish, FinishReason::kCancelled);
  EXPECT_EQ(queued->n_done, 1);
  EXPECT_EQ(e.stats().requests_cancelled, 1);
}

TEST(Engine, CancelDuringPrefillAndDecodeKeepsSessionsConsistent) {
  EngineOptions o = options();
  o.prefill_chunk = 4;
  Engine e(o);
  const auto req = completion("Prompt: twelve.", 3);
  // Prefill: cancelled when the job starts, before the first chunk.
  {
    std::atomic<Job*> self{nullptr};
    auto res = std::make_shared<Result>();
    auto job = start(e, req, res, [&](const GenEvent& ev) {
      if (ev.kind != Kind::kStarted) return;
      while (!self.load()) std::this_thread::yield();
      self.load()->cancel();
    });
    self = job.get();
    job->wait();
    EXPECT_EQ(res->done.finish, FinishReason::kCancelled);
    EXPECT_EQ(res->done.usage.completion_tokens, 0);
  }
  // Decode: cancelled at the first generated text.
  EngineOptions so = o;
  so.scripted_output = "abcdefgh";
  Engine s(so);
  {
    std::atomic<Job*> self{nullptr};
    auto res = std::make_shared<Result>();
    auto job = start(s, completion("Hi", 50), res, [&](const GenEvent& ev) {
      if (ev.kind != Kind::kContent) return;
      while (!self.load()) std::this_thread::yield();
      self.load()->cancel();
    });
    self = job.get();
    job->wait();
    EXPECT_EQ(res->done.finish, FinishReason::kCancelled);
    EXPECT_GE(res->done.usage.completion_tokens, 1);
    EXPECT_LT(res->done.usage.completion_tokens, 8);
    EXPECT_EQ(s.stats().requests_cancelled, 1);
  }
  // The sessions left behind give the same answer as a fresh engine.
  EngineOptions fo = options();
  fo.max_sessions = 0;
  Engine fresh(fo);
  EXPECT_EQ(run(e, req).content, run(fresh, req).content);
  const Result again = run(s, completion("Hi", 50));
  EXPECT_EQ(again.content, "abcdefgh");
  EXPECT_EQ(again.done.usage.cache_source, Usage::CacheSource::kMemory);
}

TEST(Engine, ScriptedThinkingAndToolCallEvents) {
  EngineOptions o = options();
  // Not canonical (a call without parameters renders with "\n\n" inside the invoke): only
  // exact replay reproduces it.
  const std::string block =
      "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"w\">\n</｜DSML｜invoke>\n"
      "</｜DSML｜tool_calls>";
  o.scripted_output = "Hm.</think>Ok." + block;
  Engine e(o);
  // No tool schemas in the prompt (they would make it long in the byte vocabulary); keep the
  // reasoning of earlier turns as a conversation with tools would.
  GenerationRequest req = chat({msg(text::Role::kUser, "Q")}, text::ThinkingMode::kThinking, 1000);
  req.render.drop_thinking = false;
  const Result r = run(e, req);
  std::vector<Kind> kinds;
  for (const GenEvent& ev : r.events) {
    if (kinds.empty() || kinds.back() != ev.kind || ev.kind == Kind::kToolCallArgs)
      kinds.push_back(ev.kind);
  }
  const std::vector<Kind> want = {Kind::kQueued,      Kind::kStarted,       Kind::kReasoning,
                                  Kind::kContent,     Kind::kToolCallStart, Kind::kToolCallArgs,
                                  Kind::kToolCallEnd, Kind::kDone};
  EXPECT_EQ(kinds, want);
  EXPECT_EQ(r.reasoning, "Hm.");
  EXPECT_EQ(r.content, "Ok.");
  GenEvent start_ev, args_ev, end_ev;
  for (const GenEvent& ev : r.events) {
    if (ev.kind == Kind::kToolCallStart) start_ev = ev;
    if (ev.kind == Kind::kToolCallArgs) args_ev = ev;
    if (ev.kind == Kind::kToolCallEnd) end_ev = ev;
  }
  EXPECT_EQ(start_ev.name, "w");
  EXPECT_EQ(start_ev.index, 0u);
  ASSERT_EQ(start_ev.id.size(), 5u + 24u);
  EXPECT_TRUE(start_ev.id.starts_with("call_"));
  EXPECT_EQ(end_ev.id, start_ev.id);
  EXPECT_EQ(end_ev.name, "w");
  EXPECT_EQ(end_ev.arguments, "{}");
  EXPECT_EQ(args_ev.text, end_ev.arguments);
  EXPECT_EQ(r.done.finish, FinishReason::kToolCalls);
  const auto scripted = e.tokenizer().encode_with_specials(o.scripted_output);
  EXPECT_EQ(r.done.usage.completion_tokens, (int64_t)scripted.size());
  const auto reasoning = e.tokenizer().encode_with_specials("Hm.</think>");
  EXPECT_EQ(r.done.usage.reasoning_tokens, (int64_t)reasoning.size());

  // The follow-up carries the call back (arguments re-serialized by the client) and its result:
  // the exact block is replayed, so the whole first turn is a cached prefix.
  GenerationRequest next = req;
  next.stop.max_tokens = 1;
  text::Message asst = msg(text::Role::kAssistant, "Ok.");
  asst.reasoning_content = "Hm.";
  asst.tool_calls.push_back({start_ev.id, "w", "{ }"});
  text::Message result = msg(text::Role::kTool, "R");
  result.tool_call_id = start_ev.id;
  next.conversation->messages.push_back(asst);
  next.conversation->messages.push_back(result);
  const auto first_turn = r.done.usage.prompt_tokens + (int64_t)scripted.size() + 1;  // + EOS
  const Result f = run(e, next);
  EXPECT_EQ(f.done.usage.cached_tokens, first_turn);
  EXPECT_EQ(f.done.usage.cache_source, Usage::CacheSource::kMemory);
  // The rendered tokens contain the exact block, not the canonical one.
  const std::string txt = e.tokenizer().decode(e.prompt_tokens(next));
  EXPECT_NE(txt.find("name=\"w\">\n</"), std::string::npos);
  // An id the engine never issued renders canonically.
  next.conversation->messages[next.conversation->messages.size() - 2].tool_calls[0].id = "call_x";
  const std::string canon = e.tokenizer().decode(e.prompt_tokens(next));
  EXPECT_EQ(canon.find("name=\"w\">\n</"), std::string::npos);
  EXPECT_NE(canon.find("name=\"w\">\n\n</"), std::string::npos);
}

TEST(Engine, ToolChoiceNoneKeepsDsmlAsContent) {
  EngineOptions o = options();
  const std::string block = "\n\n<｜DSML｜tool_calls>\n</｜DSML｜tool_calls>";
  o.scripted_output = "x" + block;
  Engine e(o);
  GenerationRequest req = chat({msg(text::Role::kUser, "q")}, text::ThinkingMode::kChat, 500);
  req.tool_choice.kind = ToolChoice::Kind::kNone;
  const Result r = run(e, req);
  EXPECT_EQ(r.content, "x" + block);
  EXPECT_EQ(r.done.finish, FinishReason::kStop);
  // tool_choice naming an unknown function is refused; "required" needs a tool.
  req.tool_choice.kind = ToolChoice::Kind::kFunction;
  req.tool_choice.function = "nope";
  EXPECT_THROW(e.prompt_tokens(req), Error);
  req.tool_choice.kind = ToolChoice::Kind::kRequired;
  EXPECT_THROW(e.prompt_tokens(req), Error);
}

TEST(Engine, ScriptedOutputStopsAtMaxTokensAndStopStrings) {
  EngineOptions o = options();
  o.scripted_output = "ab cd ef";
  Engine e(o);
  const Result a = run(e, completion("p", 2));
  EXPECT_EQ(a.content, "ab");
  EXPECT_EQ(a.done.finish, FinishReason::kLength);
  EXPECT_EQ(a.done.usage.completion_tokens, 2);
  GenerationRequest req = completion("p", 100);
  req.stop.stop_strings = {" e"};
  const Result b = run(e, req);
  EXPECT_EQ(b.content, "ab cd");
  EXPECT_EQ(b.done.finish, FinishReason::kStop);
  EXPECT_EQ(b.done.text, " e");  // the stop string that fired (Anthropic's stop_sequence)
  const Result c = run(e, completion("p", 100));
  EXPECT_EQ(c.content, "ab cd ef");
  EXPECT_EQ(c.done.finish, FinishReason::kStop);
  EXPECT_EQ(c.done.text, "");  // ended by the end of turn
  req = completion("p", 100);
  req.echo = true;
  EXPECT_EQ(run(e, req).content, "pab cd ef");
}

TEST(Engine, DiskStoreSurvivesRestart) {
  const fs::path dir = temp_root() / "kv";
  EngineOptions o = options();
  o.kv_disk_dir = dir.string();
  o.kv_disk_min_tokens = 4;
  o.kv_disk_align = 8;
  o.prefill_chunk = 4;
  const auto req = completion("Disk cache prompt.", 2);
  Result first;
  int64_t files = 0;
  {
    Engine e(o);
    first = run(e, req);
    files = e.stats().disk_files;
    EXPECT_GE(files, 3);  // at 8, 16 and the last-but-one token
    EXPECT_GT(e.stats().disk_bytes, 0u);
  }  // shutdown: the live session is saved too
  {
    Engine e(o);
    EXPECT_GT(e.stats().disk_files, files);
    const Result again = run(e, req);
    EXPECT_EQ(again.done.usage.cache_source, Usage::CacheSource::kDisk);
    EXPECT_EQ(again.done.usage.cached_tokens, again.done.usage.prompt_tokens - 1);
    EXPECT_EQ(again.content, first.content);
    EXPECT_EQ(e.stats().cache_hits_disk, 1);
    // A longer prompt finds a shorter prefix: the output still equals a fresh run.
    const auto longer = completion("Disk cache prompt? No.", 2);
    EngineOptions fo = options();
    fo.max_sessions = 0;
    Engine fresh(fo);
    EXPECT_EQ(run(e, longer).content, run(fresh, longer).content);
  }
  // A corrupt file is removed, never fatal.
  for (const auto& f : fs::directory_iterator(dir)) {
    std::fstream io(f.path(), std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(120);
    io.write("XXXXXXXX", 8);
  }
  {
    Engine e(o);
    const Result r = run(e, req);
    EXPECT_EQ(r.done.usage.cache_source, Usage::CacheSource::kNone);
    EXPECT_EQ(r.content, first.content);
  }
}

TEST(Engine, ContextLimit) {
  EngineOptions o = options();
  o.ctx_limit = 16;
  o.scripted_output = "abcdefghijklmnopqrstuvwxyz";
  Engine e(o);
  EXPECT_EQ(e.context_limit(), 16);
  try {
    e.submit(completion("0123456789abcdef", 4), [](const GenEvent&) {});
    FAIL() << "a prompt over the context was accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("context limit is 16"), std::string::npos) << err.what();
  }
  EXPECT_EQ(e.stats().requests_rejected, 1);
  // BOS + 13 bytes = 14 tokens: room for two generated tokens.
  const Result r = run(e, completion("0123456789abc", 100));
  EXPECT_EQ(r.done.finish, FinishReason::kLength);
  EXPECT_EQ(r.done.usage.completion_tokens, 2);
  EXPECT_EQ(r.content, "ab");
  // Bad sampling parameters are refused at submit.
  GenerationRequest bad = completion("x", 1);
  bad.sampling.temperature = -1;
  EXPECT_THROW(e.submit(bad, [](const GenEvent&) {}), ParamError);
}

TEST(Engine, BadModelPathNamesTheFile) {
  EngineOptions o = options();
  o.model_path = (temp_root() / "missing.gguf").string();
  try {
    Engine e(o);
    FAIL();
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("missing.gguf"), std::string::npos) << err.what();
  }
}

TEST(Engine, ThrowingSinkCancelsItsJob) {
  Engine e(options());
  std::atomic<int> calls{0};
  auto job = e.submit(completion("x", 5), [&](const GenEvent& ev) {
    ++calls;
    if (ev.kind == Kind::kStarted) throw std::runtime_error("socket gone");
  });
  job->wait();
  EXPECT_TRUE(job->done());
  EXPECT_EQ(calls.load(), 2);  // kQueued, kStarted; nothing after the throw
  EXPECT_EQ(e.stats().requests_cancelled, 1);
  // The engine goes on.
  EXPECT_EQ(run(e, completion("x", 1)).n_done, 1);
}

TEST(Engine, ToolCallMemorySurvivesRestart) {
  const fs::path dir = temp_root() / "kv_tools";
  EngineOptions o = options();
  o.kv_disk_dir = dir.string();
  const std::string block =
      "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"w\">\n</｜DSML｜invoke>\n"
      "</｜DSML｜tool_calls>";
  o.scripted_output = block;
  GenerationRequest req = chat({msg(text::Role::kUser, "Q")}, text::ThinkingMode::kChat, 100);
  std::string id;
  {
    Engine e(o);
    const Result r = run(e, req);
    ASSERT_EQ(r.done.finish, FinishReason::kToolCalls);
    for (const GenEvent& ev : r.events) {
      if (ev.kind == Kind::kToolCallEnd) id = ev.id;
    }
  }
  ASSERT_FALSE(id.empty());
  text::Message asst = msg(text::Role::kAssistant, "");
  asst.tool_calls.push_back({id, "w", "{}"});
  text::Message result = msg(text::Role::kTool, "R");
  result.tool_call_id = id;
  req.conversation->messages.push_back(asst);
  req.conversation->messages.push_back(result);
  const std::string exact = "name=\"w\">\n</";
  {
    Engine e(o);  // a new process on the same directory replays the exact block
    EXPECT_NE(e.tokenizer().decode(e.prompt_tokens(req)).find(exact), std::string::npos);
  }
  // A damaged file is removed (and the rendering falls back to canonical).
  const fs::path file = dir / "tool_calls.bin";
  ASSERT_TRUE(fs::exists(file));
  fs::resize_file(file, fs::file_size(file) - 3);
  {
    Engine e(o);
    EXPECT_EQ(e.tokenizer().decode(e.prompt_tokens(req)).find(exact), std::string::npos);
  }
}
