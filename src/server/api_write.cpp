#include "server/api_write.h"

#include <map>
#include <nlohmann/json.hpp>
#include <vector>

namespace dsv4::server {
namespace {

using engine::FinishReason;
using engine::GenEvent;
using Json = nlohmann::ordered_json;
using Kind = GenEvent::Kind;

// Invalid UTF-8 (which the engine should never produce) becomes U+FFFD instead of throwing.
std::string dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string sse_data(const Json& j) {
  return "data: " + dump(j) + "\n\n";
}
std::string sse_event(const std::string& type, const Json& j) {
  return "event: " + type + "\ndata: " + dump(j) + "\n\n";
}

constexpr const char* kDoneLine = "data: [DONE]\n\n";
constexpr const char* kThinkingSignature = "dsv4";

// ---------------------------------------------------------------------------------------------
// What every writer accumulates: the output as segments in order of appearance (a reasoning
// run, a content run, or one tool call), the calls, usage and the end.

struct Call {
  std::string id, name;
  std::string streamed;   // argument bytes sent so far (stream)
  std::string arguments;  // final (kToolCallEnd)
  bool ended = false;
};

struct Segment {
  enum class Type : uint8_t { kReasoning, kContent, kCall };
  Type type;
  std::string text;  // reasoning / content
  size_t call = 0;   // kCall: index into Acc::calls
};

struct Acc {
  std::vector<Segment> segs;
  std::vector<Call> calls;
  std::map<size_t, size_t> call_of;  // engine index -> calls index
  engine::Usage usage;
  FinishReason finish = FinishReason::kStop;
  bool started = false, done = false, error = false;
  std::string error_message;
  std::string stop_sequence;

  size_t call_index(size_t engine_index) {
    const auto it = call_of.find(engine_index);
    if (it != call_of.end()) return it->second;
    calls.emplace_back();
    call_of[engine_index] = calls.size() - 1;
    segs.push_back({Segment::Type::kCall, {}, calls.size() - 1});
    return calls.size() - 1;
  }
  // Appends text; returns true when a new segment was opened.
  bool add_text(Segment::Type t, const std::string& s) {
    if (!segs.empty() && segs.back().type == t) {
      segs.back().text += s;
      return false;
    }
    segs.push_back({t, s, 0});
    return true;
  }
  bool any_calls() const {
    for (const Call& c : calls) {
      if (c.ended) return true;
    }
    return false;
  }
  std::string reasoning() const {
    std::string s;
    for (const Segment& g : segs) {
      if (g.type == Segment::Type::kReasoning) s += g.text;
    }
    return s;
  }
  std::string content() const {
    std::string s;
    for (const Segment& g : segs) {
      if (g.type == Segment::Type::kContent) s += g.text;
    }
    return s;
  }
  FinishReason effective_finish() const {
    if (error || finish == FinishReason::kError) return FinishReason::kError;
    if (finish == FinishReason::kLength) return FinishReason::kLength;
    if (any_calls()) return FinishReason::kToolCalls;
    return FinishReason::kStop;
  }
};

Json openai_usage(const engine::Usage& u) {
  Json j = Json::object();
  j["prompt_tokens"] = u.prompt_tokens;
  j["completion_tokens"] = u.completion_tokens;
  j["total_tokens"] = u.prompt_tokens + u.completion_tokens;
  j["prompt_tokens_details"] = {{"cached_tokens", u.cached_tokens},
                                {"cache_write_tokens", u.prompt_tokens - u.cached_tokens}};
  j["completion_tokens_details"] = {{"reasoning_tokens", u.reasoning_tokens}};
  return j;
}

Json responses_usage(const engine::Usage& u) {
  Json j = Json::object();
  j["input_tokens"] = u.prompt_tokens;
  j["input_tokens_details"] = {{"cached_tokens", u.cached_tokens}};
  j["output_tokens"] = u.completion_tokens;
  j["output_tokens_details"] = {{"reasoning_tokens", u.reasoning_tokens}};
  j["total_tokens"] = u.prompt_tokens + u.completion_tokens;
  return j;
}

Json anthropic_usage(const engine::Usage& u) {
  Json j = Json::object();
  j["input_tokens"] = u.prompt_tokens - u.cached_tokens;
  j["cache_creation_input_tokens"] = 0;
  j["cache_read_input_tokens"] = u.cached_tokens;
  j["output_tokens"] = u.completion_tokens;
  return j;
}

Json openai_error_json(const std::string& message, const char* type) {
  Json e = Json::object();
  e["message"] = message;
  e["type"] = type;
  e["param"] = nullptr;
  e["code"] = nullptr;
  return Json{{"error", e}};
}

// The tool-call input object for Anthropic: the arguments JSON when it is an object, else {}.
Json arguments_object(const std::string& args) {
  Json j = Json::parse(args, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Json::object();
  return j;
}

class WriterBase : public ResponseWriter {
 public:
  WriterBase(const ParsedRequest& req, const WriterMeta& meta)
      : stream_(req.stream), include_usage_(req.include_usage), meta_(meta) {}

  std::string on_event(const GenEvent& ev) override {
    if (acc_.done) return {};
    std::string out;
    switch (ev.kind) {
      case Kind::kQueued:
        return {};
      case Kind::kStarted:
        acc_.usage.prompt_tokens = ev.usage.prompt_tokens;
        acc_.usage.cached_tokens = ev.usage.cached_tokens;
        open(out);
        return out;
      case Kind::kReasoning:
      case Kind::kContent: {
        if (ev.text.empty()) return {};
        open(out);
        const auto t =
            ev.kind == Kind::kReasoning ? Segment::Type::kReasoning : Segment::Type::kContent;
        const bool fresh = acc_.add_text(t, ev.text);
        if (stream_) {
          if (fresh) begin_seg(acc_.segs.size() - 1, out);
          text_delta(acc_.segs.size() - 1, ev.text, out);
        }
        return out;
      }
      case Kind::kToolCallStart:
      case Kind::kToolCallArgs:
      case Kind::kToolCallEnd: {
        open(out);
        const size_t n_segs = acc_.segs.size();
        const size_t ci = acc_.call_index(ev.index);
        Call& c = acc_.calls[ci];
        const bool fresh = acc_.segs.size() > n_segs;
        if (!ev.id.empty()) c.id = ev.id;
        if (c.id.empty()) c.id = meta_.id + "_call_" + std::to_string(ci);  // (engine gave none)
        if (!ev.name.empty()) c.name = ev.name;
        if (stream_ && fresh) begin_seg(acc_.segs.size() - 1, out);
        if (ev.kind == Kind::kToolCallArgs && !ev.text.empty()) {
          c.streamed += ev.text;
          if (stream_) args_delta(ci, ev.text, out);
        }
        if (ev.kind == Kind::kToolCallEnd) {
          c.arguments = ev.arguments;
          c.ended = true;
          if (stream_) {
            // Arguments not streamed yet (all, or the rest when the deltas were a prefix).
            if (c.arguments.size() > c.streamed.size() &&
                c.arguments.compare(0, c.streamed.size(), c.streamed) == 0) {
              const std::string rest = c.arguments.substr(c.streamed.size());
              c.streamed = c.arguments;
              args_delta(ci, rest, out);
            }
            // The call's segment closes now (if it is the open one).
            if (open_ != kNone && acc_.segs[open_].type == Segment::Type::kCall &&
                acc_.segs[open_].call == ci) {
              end_seg(out);
            }
          }
        }
        return out;
      }
      case Kind::kError:
        acc_.error = true;
        acc_.error_message = ev.text.empty() ? "generation failed" : ev.text;
        if (stream_) {
          open(out);
          stream_error(out);
        }
        return out;
      case Kind::kDone: {
        // kStarted may carry the prompt numbers when kDone does not.
        const engine::Usage started = acc_.usage;
        acc_.usage = ev.usage;
        if (acc_.usage.prompt_tokens == 0) {
          acc_.usage.prompt_tokens = started.prompt_tokens;
          acc_.usage.cached_tokens = started.cached_tokens;
        }
      }
        acc_.finish = ev.finish;
        if (ev.finish == FinishReason::kStop) acc_.stop_sequence = ev.text;
        if (ev.finish == FinishReason::kError) acc_.error = true;
        if (acc_.error && acc_.error_message.empty()) acc_.error_message = "generation failed";
        if (stream_) open(out);
        acc_.done = true;
        if (stream_) {
          if (!acc_.error) end_seg(out);
          finish_stream(out);
        }
        return out;
    }
    return out;
  }

  int final_status() const override { return acc_.error ? 500 : 200; }
  bool done() const override { return acc_.done; }

 protected:
  // Dialect hooks (streaming only).
  virtual void open_stream(std::string& out) = 0;
  virtual void open_seg(size_t seg, std::string& out) = 0;
  virtual void close_seg(size_t seg, std::string& out) = 0;
  virtual void text_delta(size_t seg, const std::string& text, std::string& out) = 0;
  virtual void args_delta(size_t call, const std::string& text, std::string& out) = 0;
  virtual void stream_error(std::string& out) = 0;
  virtual void finish_stream(std::string& out) = 0;

  void open(std::string& out) {
    if (acc_.started) return;
    acc_.started = true;
    if (stream_) open_stream(out);
  }
  // Streaming: closes the open segment and opens `seg`.
  void begin_seg(size_t seg, std::string& out) {
    end_seg(out);
    open_seg(seg, out);
    open_ = seg;
  }
  void end_seg(std::string& out) {
    if (open_ == kNone) return;
    close_seg(open_, out);
    open_ = kNone;
  }
  static constexpr size_t kNone = size_t(-1);

  bool stream_;
  bool include_usage_;
  WriterMeta meta_;
  Acc acc_;
  size_t open_ = kNone;  // the segment open in the stream
};

// ---------------------------------------------------------------------------------------------
// OpenAI chat completions.

class ChatWriter : public WriterBase {
 public:
  using WriterBase::WriterBase;

  std::string final_body() const override {
    if (acc_.error) return error_body(Dialect::kChat, error());
    Json msg = Json::object();
    msg["role"] = "assistant";
    msg["content"] = acc_.content();
    const std::string r = acc_.reasoning();
    if (!r.empty()) msg["reasoning_content"] = r;
    Json calls = Json::array();
    for (const Call& c : acc_.calls) {
      if (!c.ended) continue;
      calls.push_back({{"id", c.id},
                       {"type", "function"},
                       {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
    }
    if (!calls.empty()) msg["tool_calls"] = calls;
    Json choice = Json::object();
    choice["index"] = 0;
    choice["message"] = msg;
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = openai_finish_reason(acc_.effective_finish());
    Json j = head("chat.completion");
    j["choices"] = Json::array({choice});
    j["usage"] = openai_usage(acc_.usage);
    return dump(j);
  }

 private:
  ApiError error() const {
    ApiError e;
    e.status = 500;
    e.type = "server_error";
    e.message = acc_.error_message;
    return e;
  }
  Json head(const char* object) const {
    Json j = Json::object();
    j["id"] = meta_.id;
    j["object"] = object;
    j["created"] = meta_.created;
    j["model"] = meta_.model;
    return j;
  }
  std::string chunk(Json delta, const Json& finish = nullptr) const {
    Json choice = Json::object();
    choice["index"] = 0;
    choice["delta"] = std::move(delta);
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = finish;
    Json j = head("chat.completion.chunk");
    j["choices"] = Json::array({choice});
    return sse_data(j);
  }
  void open_stream(std::string& out) override { out += chunk({{"role", "assistant"}}); }
  void open_seg(size_t seg, std::string& out) override {
    const Segment& g = acc_.segs[seg];
    if (g.type != Segment::Type::kCall) return;
    const Call& c = acc_.calls[g.call];
    Json tc = Json::object();
    tc["index"] = g.call;
    tc["id"] = c.id;
    tc["type"] = "function";
    tc["function"] = {{"name", c.name}, {"arguments", ""}};
    out += chunk({{"tool_calls", Json::array({tc})}});
  }
  void close_seg(size_t, std::string&) override {}
  void text_delta(size_t seg, const std::string& text, std::string& out) override {
    const char* k =
        acc_.segs[seg].type == Segment::Type::kReasoning ? "reasoning_content" : "content";
    out += chunk({{k, text}});
  }
  void args_delta(size_t call, const std::string& text, std::string& out) override {
    Json tc = Json::object();
    tc["index"] = call;
    tc["function"] = {{"arguments", text}};
    out += chunk({{"tool_calls", Json::array({tc})}});
  }
  void stream_error(std::string& out) override {
    out += sse_data(openai_error_json(acc_.error_message, "server_error"));
  }
  void finish_stream(std::string& out) override {
    if (!acc_.error) {
      out += chunk(Json::object(), openai_finish_reason(acc_.effective_finish()));
      if (include_usage_) {
        Json j = head("chat.completion.chunk");
        j["choices"] = Json::array();
        j["usage"] = openai_usage(acc_.usage);
        out += sse_data(j);
      }
    }
    out += kDoneLine;
  }
};

// ---------------------------------------------------------------------------------------------
// OpenAI completions: reasoning and content are both plain text.

class CompletionsWriter : public WriterBase {
 public:
  using WriterBase::WriterBase;

  std::string final_body() const override {
    if (acc_.error) {
      ApiError e;
      e.status = 500;
      e.type = "server_error";
      e.message = acc_.error_message;
      return error_body(Dialect::kCompletions, e);
    }
    std::string text;
    for (const Segment& g : acc_.segs) text += g.text;
    Json j = head();
    j["choices"] = Json::array({choice(text, finish())});
    j["usage"] = openai_usage(acc_.usage);
    return dump(j);
  }

 private:
  Json finish() const {
    const FinishReason f = acc_.effective_finish();
    return f == FinishReason::kLength ? "length" : "stop";
  }
  Json head() const {
    Json j = Json::object();
    j["id"] = meta_.id;
    j["object"] = "text_completion";
    j["created"] = meta_.created;
    j["model"] = meta_.model;
    return j;
  }
  static Json choice(const std::string& text, const Json& finish) {
    Json c = Json::object();
    c["text"] = text;
    c["index"] = 0;
    c["logprobs"] = nullptr;
    c["finish_reason"] = finish;
    return c;
  }
  std::string chunk(const std::string& text, const Json& finish = nullptr) const {
    Json j = head();
    j["choices"] = Json::array({choice(text, finish)});
    return sse_data(j);
  }
  void open_stream(std::string&) override {}
  void open_seg(size_t, std::string&) override {}
  void close_seg(size_t, std::string&) override {}
  void text_delta(size_t, const std::string& text, std::string& out) override {
    out += chunk(text);
  }
  void args_delta(size_t, const std::string&, std::string&) override {}
  void stream_error(std::string& out) override {
    out += sse_data(openai_error_json(acc_.error_message, "server_error"));
  }
  void finish_stream(std::string& out) override {
    if (!acc_.error) {
      out += chunk("", finish());
      if (include_usage_) {
        Json j = head();
        j["choices"] = Json::array();
        j["usage"] = openai_usage(acc_.usage);
        out += sse_data(j);
      }
    }
    out += kDoneLine;
  }
};

// ---------------------------------------------------------------------------------------------
// OpenAI Responses.

class ResponsesWriter : public WriterBase {
 public:
  ResponsesWriter(const ParsedRequest& req, const WriterMeta& meta)
      : WriterBase(req, meta), summary_(req.reasoning_summary), parallel_(req.parallel_tool_calls) {
    suffix_ = meta.id.rfind("resp_", 0) == 0 ? meta.id.substr(5) : meta.id;
  }

  std::string final_body() const override {
    if (acc_.error) {
      ApiError e;
      e.status = 500;
      e.type = "server_error";
      e.message = acc_.error_message;
      return error_body(Dialect::kResponses, e);
    }
    return dump(response(final_status_name(), true));
  }

 private:
  std::string final_status_name() const {
    if (!acc_.done) return "in_progress";
    switch (acc_.effective_finish()) {
      case FinishReason::kError:
        return "failed";
      case FinishReason::kLength:
        return "incomplete";
      default:
        return "completed";
    }
  }
  std::string item_id(size_t seg) const {
    const char* p = "msg_";
    if (acc_.segs[seg].type == Segment::Type::kReasoning) p = "rs_";
    if (acc_.segs[seg].type == Segment::Type::kCall) p = "fc_";
    return p + suffix_ + "_" + std::to_string(seg);
  }
  // The item of segment `seg`; `status` "in_progress" gives the empty opening form.
  Json item(size_t seg, const std::string& status) const {
    const Segment& g = acc_.segs[seg];
    const bool empty = status == "in_progress";
    Json j = Json::object();
    j["id"] = item_id(seg);
    switch (g.type) {
      case Segment::Type::kReasoning: {
        j["type"] = "reasoning";
        j["status"] = status;
        j["summary"] = Json::array();
        if (summary_) {
          if (!empty) j["summary"].push_back({{"type", "summary_text"}, {"text", g.text}});
        } else {
          j["content"] = Json::array();
          if (!empty) j["content"].push_back({{"type", "reasoning_text"}, {"text", g.text}});
        }
        break;
      }
      case Segment::Type::kContent:
        j["type"] = "message";
        j["status"] = status;
        j["role"] = "assistant";
        j["content"] = Json::array();
        if (!empty) j["content"].push_back(output_text(g.text));
        break;
      case Segment::Type::kCall: {
        const Call& c = acc_.calls[g.call];
        j["type"] = "function_call";
        j["status"] = status;
        j["arguments"] = empty ? std::string() : c.arguments;
        j["call_id"] = c.id;
        j["name"] = c.name;
        break;
      }
    }
    return j;
  }
  static Json output_text(const std::string& text) {
    Json p = Json::object();
    p["type"] = "output_text";
    p["text"] = text;
    p["annotations"] = Json::array();
    return p;
  }
  std::string seg_status(size_t seg) const {
    if (acc_.done && seg + 1 == acc_.segs.size() &&
        acc_.effective_finish() == FinishReason::kLength) {
      return "incomplete";
    }
    return "completed";
  }
  Json response(const std::string& status, bool with_output) const {
    Json j = Json::object();
    j["id"] = meta_.id;
    j["object"] = "response";
    j["created_at"] = meta_.created;
    j["status"] = status;
    j["error"] = nullptr;
    if (status == "failed") {
      j["error"] = {{"code", "server_error"}, {"message", acc_.error_message}};
    }
    j["incomplete_details"] = nullptr;
    if (status == "incomplete") j["incomplete_details"] = {{"reason", "max_output_tokens"}};
    j["model"] = meta_.model;
    j["output"] = Json::array();
    if (with_output) {
      for (size_t s = 0; s < acc_.segs.size(); ++s) {
        const Segment& g = acc_.segs[s];
        if (g.type == Segment::Type::kCall && !acc_.calls[g.call].ended) continue;
        j["output"].push_back(item(s, seg_status(s)));
      }
    }
    j["parallel_tool_calls"] = parallel_;
    j["usage"] = nullptr;
    if (acc_.done) j["usage"] = responses_usage(acc_.usage);
    return j;
  }
  void emit(const std::string& type, Json fields, std::string& out) {
    Json j = Json::object();
    j["type"] = type;
    j["sequence_number"] = seq_++;
    for (auto& [k, v] : fields.items()) j[k] = v;
    out += sse_event(type, j);
  }
  void open_stream(std::string& out) override {
    emit("response.created", {{"response", response("in_progress", false)}}, out);
    emit("response.in_progress", {{"response", response("in_progress", false)}}, out);
  }
  Json where(size_t seg) const {
    Json j = Json::object();
    j["item_id"] = item_id(seg);
    j["output_index"] = output_index(seg);
    return j;
  }
  size_t output_index(size_t seg) const {
    // Segments of calls that never ended are still output items while streaming.
    return seg;
  }
  void open_seg(size_t seg, std::string& out) override {
    const Segment& g = acc_.segs[seg];
    Json added = Json::object();
    added["output_index"] = output_index(seg);
    added["item"] = item(seg, "in_progress");
    emit("response.output_item.added", added, out);
    if (g.type == Segment::Type::kReasoning) {
      Json j = where(seg);
      if (summary_) {
        j["summary_index"] = 0;
        j["part"] = {{"type", "summary_text"}, {"text", ""}};
        emit("response.reasoning_summary_part.added", j, out);
      } else {
        j["content_index"] = 0;
        j["part"] = {{"type", "reasoning_text"}, {"text", ""}};
        emit("response.content_part.added", j, out);
      }
    } else if (g.type == Segment::Type::kContent) {
      Json j = where(seg);
      j["content_index"] = 0;
      j["part"] = output_text("");
      emit("response.content_part.added", j, out);
    }
  }
  void close_seg(size_t seg, std::string& out) override {
    const Segment& g = acc_.segs[seg];
    const std::string status = acc_.done ? seg_status(seg) : "completed";
    if (g.type == Segment::Type::kReasoning) {
      Json j = where(seg);
      if (summary_) {
        j["summary_index"] = 0;
        Json t = j;
        t["text"] = g.text;
        emit("response.reasoning_summary_text.done", t, out);
        j["part"] = {{"type", "summary_text"}, {"text", g.text}};
        emit("response.reasoning_summary_part.done", j, out);
      } else {
        j["content_index"] = 0;
        Json t = j;
        t["text"] = g.text;
        emit("response.reasoning_text.done", t, out);
        j["part"] = {{"type", "reasoning_text"}, {"text", g.text}};
        emit("response.content_part.done", j, out);
      }
    } else if (g.type == Segment::Type::kContent) {
      Json j = where(seg);
      j["content_index"] = 0;
      Json t = j;
      t["text"] = g.text;
      t["logprobs"] = Json::array();
      emit("response.output_text.done", t, out);
      j["part"] = output_text(g.text);
      emit("response.content_part.done", j, out);
    } else {
      const Call& c = acc_.calls[g.call];
      Json j = where(seg);
      j["name"] = c.name;
      j["arguments"] = c.ended ? c.arguments : c.streamed;
      emit("response.function_call_arguments.done", j, out);
    }
    Json done = Json::object();
    done["output_index"] = output_index(seg);
    Json it = item(seg, status);
    if (g.type == Segment::Type::kCall && !acc_.calls[g.call].ended) {
      it["status"] = "incomplete";
      it["arguments"] = acc_.calls[g.call].streamed;
    }
    done["item"] = it;
    emit("response.output_item.done", done, out);
  }
  void text_delta(size_t seg, const std::string& text, std::string& out) override {
    Json j = where(seg);
    if (acc_.segs[seg].type == Segment::Type::kReasoning) {
      if (summary_) {
        j["summary_index"] = 0;
        j["delta"] = text;
        emit("response.reasoning_summary_text.delta", j, out);
      } else {
        j["content_index"] = 0;
        j["delta"] = text;
        emit("response.reasoning_text.delta", j, out);
      }
    } else {
      j["content_index"] = 0;
      j["delta"] = text;
      j["logprobs"] = Json::array();
      emit("response.output_text.delta", j, out);
    }
  }
  void args_delta(size_t call, const std::string& text, std::string& out) override {
    size_t seg = 0;
    for (size_t s = 0; s < acc_.segs.size(); ++s) {
      if (acc_.segs[s].type == Segment::Type::kCall && acc_.segs[s].call == call) seg = s;
    }
    Json j = where(seg);
    j["delta"] = text;
    emit("response.function_call_arguments.delta", j, out);
  }
  void stream_error(std::string& out) override {
    Json j = Json::object();
    j["code"] = "server_error";
    j["message"] = acc_.error_message;
    j["param"] = nullptr;
    emit("error", j, out);
  }
  void finish_stream(std::string& out) override {
    const std::string status = final_status_name();
    const std::string type = status == "failed"       ? "response.failed"
                             : status == "incomplete" ? "response.incomplete"
                                                      : "response.completed";
    // Streaming clients rebuild the output from the item events, so the final response carries
    // every item that was announced (incomplete calls included) to keep output indexes stable.
    Json r = response(status, false);
    for (size_t s = 0; s < acc_.segs.size(); ++s) {
      Json it = item(s, seg_status(s));
      const Segment& g = acc_.segs[s];
      if (g.type == Segment::Type::kCall && !acc_.calls[g.call].ended) {
        it["status"] = "incomplete";
        it["arguments"] = acc_.calls[g.call].streamed;
      }
      r["output"].push_back(it);
    }
    emit(type, {{"response", r}}, out);
  }

  bool summary_;
  bool parallel_;
  std::string suffix_;
  int64_t seq_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Anthropic Messages.

class MessagesWriter : public WriterBase {
 public:
  using WriterBase::WriterBase;

  std::string final_body() const override {
    if (acc_.error) {
      ApiError e;
      e.status = 500;
      e.type = "api_error";
      e.message = acc_.error_message;
      return error_body(Dialect::kMessages, e);
    }
    Json content = Json::array();
    bool visible = false;
    for (const Segment& g : acc_.segs) {
      switch (g.type) {
        case Segment::Type::kReasoning:
          content.push_back(
              {{"type", "thinking"}, {"thinking", g.text}, {"signature", kThinkingSignature}});
          break;
        case Segment::Type::kContent:
          content.push_back({{"type", "text"}, {"text", g.text}});
          visible = true;
          break;
        case Segment::Type::kCall: {
          const Call& c = acc_.calls[g.call];
          if (!c.ended) break;
          Json t = Json::object();
          t["type"] = "tool_use";
          t["id"] = c.id;
          t["name"] = c.name;
          t["input"] = arguments_object(c.arguments);
          content.push_back(t);
          visible = true;
          break;
        }
      }
    }
    if (!visible) content.push_back({{"type", "text"}, {"text", ""}});
    Json j = message_head();
    j["content"] = content;
    j["stop_reason"] = stop_reason();
    j["stop_sequence"] = stop_sequence();
    j["usage"] = anthropic_usage(acc_.usage);
    return dump(j);
  }

 private:
  Json message_head() const {
    Json j = Json::object();
    j["id"] = meta_.id;
    j["type"] = "message";
    j["role"] = "assistant";
    j["model"] = meta_.model;
    return j;
  }
  std::string stop_reason() const {
    const FinishReason f = acc_.effective_finish();
    if (f == FinishReason::kStop && !acc_.stop_sequence.empty()) return "stop_sequence";
    return anthropic_stop_reason(f);
  }
  Json stop_sequence() const {
    if (stop_reason() == "stop_sequence") return acc_.stop_sequence;
    return nullptr;
  }
  void emit(const std::string& type, Json fields, std::string& out) {
    Json j = Json::object();
    j["type"] = type;
    for (auto& [k, v] : fields.items()) j[k] = v;
    out += sse_event(type, j);
  }
  void open_stream(std::string& out) override {
    Json m = message_head();
    m["content"] = Json::array();
    m["stop_reason"] = nullptr;
    m["stop_sequence"] = nullptr;
    engine::Usage u = acc_.usage;
    u.completion_tokens = 0;
    m["usage"] = anthropic_usage(u);
    emit("message_start", {{"message", m}}, out);
  }
  void start_block(const Json& block, std::string& out) {
    emit("content_block_start", {{"index", block_}, {"content_block", block}}, out);
  }
  void stop_block(std::string& out) {
    emit("content_block_stop", {{"index", block_}}, out);
    ++block_;
  }
  void delta(const Json& d, std::string& out) {
    emit("content_block_delta", {{"index", block_}, {"delta", d}}, out);
  }
  void open_seg(size_t seg, std::string& out) override {
    const Segment& g = acc_.segs[seg];
    switch (g.type) {
      case Segment::Type::kReasoning:
        start_block({{"type", "thinking"}, {"thinking", ""}, {"signature", ""}}, out);
        break;
      case Segment::Type::kContent:
        start_block({{"type", "text"}, {"text", ""}}, out);
        visible_ = true;
        break;
      case Segment::Type::kCall: {
        const Call& c = acc_.calls[g.call];
        Json b = Json::object();
        b["type"] = "tool_use";
        b["id"] = c.id;
        b["name"] = c.name;
        b["input"] = Json::object();
        start_block(b, out);
        visible_ = true;
        break;
      }
    }
  }
  void close_seg(size_t seg, std::string& out) override {
    if (acc_.segs[seg].type == Segment::Type::kReasoning) {
      delta({{"type", "signature_delta"}, {"signature", kThinkingSignature}}, out);
    }
    stop_block(out);
  }
  void text_delta(size_t seg, const std::string& text, std::string& out) override {
    if (acc_.segs[seg].type == Segment::Type::kReasoning) {
      delta({{"type", "thinking_delta"}, {"thinking", text}}, out);
    } else {
      delta({{"type", "text_delta"}, {"text", text}}, out);
    }
  }
  void args_delta(size_t, const std::string& text, std::string& out) override {
    delta({{"type", "input_json_delta"}, {"partial_json", text}}, out);
  }
  void stream_error(std::string& out) override {
    Json e = Json::object();
    e["type"] = "api_error";
    e["message"] = acc_.error_message;
    emit("error", {{"error", e}}, out);
  }
  void finish_stream(std::string& out) override {
    if (acc_.error) return;  // the error event ended the stream
    if (!visible_) {
      start_block({{"type", "text"}, {"text", ""}}, out);
      stop_block(out);
    }
    Json d = Json::object();
    d["stop_reason"] = stop_reason();
    d["stop_sequence"] = stop_sequence();
    emit("message_delta", {{"delta", d}, {"usage", anthropic_usage(acc_.usage)}}, out);
    emit("message_stop", Json::object(), out);
  }

  int64_t block_ = 0;
  bool visible_ = false;
};

}  // namespace

std::string openai_finish_reason(FinishReason f) {
  switch (f) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kToolCalls:
      return "tool_calls";
    case FinishReason::kError:
      return "error";
    case FinishReason::kStop:
    case FinishReason::kCancelled:
      break;
  }
  return "stop";
}

std::string anthropic_stop_reason(FinishReason f) {
  switch (f) {
    case FinishReason::kLength:
      return "max_tokens";
    case FinishReason::kToolCalls:
      return "tool_use";
    case FinishReason::kStop:
    case FinishReason::kCancelled:
    case FinishReason::kError:
      break;
  }
  return "end_turn";
}

std::string count_tokens_body(int64_t input_tokens) {
  return dump(Json{{"input_tokens", input_tokens}});
}

std::string anthropic_error_type(int status) {
  switch (status) {
    case 400:
    case 409:
    case 422:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 503:
    case 529:
      return "overloaded_error";
    default:
      break;
  }
  return status >= 500 ? "api_error" : "invalid_request_error";
}

std::string error_body(Dialect d, const ApiError& e) {
  if (d == Dialect::kMessages) {
    Json err = Json::object();
    err["type"] = anthropic_error_type(e.status);
    err["message"] = e.message;
    Json j = Json::object();
    j["type"] = "error";
    j["error"] = err;
    return dump(j);
  }
  Json err = Json::object();
  err["message"] = e.message;
  err["type"] = e.type;
  err["param"] = e.param.empty() ? Json(nullptr) : Json(e.param);
  err["code"] = e.code.empty() ? Json(nullptr) : Json(e.code);
  return dump(Json{{"error", err}});
}

std::unique_ptr<ResponseWriter> make_writer(Dialect d, const ParsedRequest& req,
                                            const WriterMeta& meta) {
  switch (d) {
    case Dialect::kChat:
      return std::make_unique<ChatWriter>(req, meta);
    case Dialect::kCompletions:
      return std::make_unique<CompletionsWriter>(req, meta);
    case Dialect::kResponses:
      return std::make_unique<ResponsesWriter>(req, meta);
    case Dialect::kMessages:
      return std::make_unique<MessagesWriter>(req, meta);
  }
  return std::make_unique<ChatWriter>(req, meta);
}

}  // namespace dsv4::server
