#include "server/http_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fmt/format.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <unordered_set>

#include "sample/sampler.h"
#include "server/api_parse.h"
#include "server/api_types.h"
#include "server/api_write.h"
#include "server/metrics.h"
#include "text/utf8.h"

namespace dsv4::server {

namespace {

using Clock = std::chrono::steady_clock;
using engine::GenEvent;

constexpr auto kWaitSlice = std::chrono::milliseconds(200);

// Constant-time comparison (the time depends only on the lengths).
bool same_secret(std::string_view a, std::string_view b) {
  size_t n = std::max(a.size(), b.size());
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (size_t i = 0; i < n; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned>(x ^ y);
  }
  return diff == 0;
}

bool iequals_prefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) !=
        std::tolower(static_cast<unsigned char>(prefix[i])))
      return false;
  return true;
}

// Client-supplied text quoted in an error message: valid UTF-8 (JSON output needs it), at most
// 200 bytes.
std::string client_text(std::string_view s) {
  std::string out;
  text::utf8::append_lossy(s.substr(0, 200), out, true);
  if (s.size() > 200) out += "...";
  return out;
}

// The deepest nesting of arrays / objects in JSON text (strings skipped), stopping early once
// it exceeds `limit`. Deeply nested documents are refused before parsing: copying or
// walking them recursively would overflow a thread's stack.
int json_depth_over(std::string_view s, int limit) {
  int depth = 0, max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
      if (max_depth > limit) return max_depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}
constexpr int kMaxJsonDepth = 256;

// The dialect whose error shape a path gets (Anthropic paths get Anthropic errors).
Dialect dialect_for_path(const std::string& path) {
  return path.find("/messages") != std::string::npos ? Dialect::kMessages : Dialect::kChat;
}

std::string random_hex(size_t n) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}() ^
                             static_cast<uint64_t>(Clock::now().time_since_epoch().count())};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(n, '0');
  std::lock_guard lk(mu);
  for (auto& c : s) c = kHex[rng() & 15];
  return s;
}

std::string response_id(Dialect d) {
  switch (d) {
    case Dialect::kChat:
      return "chatcmpl-" + random_hex(24);
    case Dialect::kCompletions:
      return "cmpl-" + random_hex(24);
    case Dialect::kResponses:
      return "resp_" + random_hex(24);
    case Dialect::kMessages:
      return "msg_" + random_hex(24);
  }
  return random_hex(24);
}

// The socket of the connection `req` came on: the open socket whose local and peer ports (and
// peer address) are those of the request. -1 when not found. Used only to notice a peer that
// closed its end while we wait (POLLRDHUP); cpp-httplib 0.11 does not hand handlers the socket.
int find_connection_fd(const httplib::Request& req) {
  if (req.remote_port <= 0 || req.local_port <= 0) return -1;
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    struct stat st {};
    if (fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage local{}, peer{};
    socklen_t ll = sizeof(local), pl = sizeof(peer);
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    auto port_of = [](const sockaddr_storage& a) -> int {
      if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
      if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
      return -1;
    };
    if (port_of(local) != req.local_port || port_of(peer) != req.remote_port) continue;
    char buf[INET6_ADDRSTRLEN] = {};
    if (peer.ss_family == AF_INET)
      inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(peer).sin_addr, buf, sizeof(buf));
    else
      inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(peer).sin6_addr, buf, sizeof(buf));
    if (req.remote_addr != buf) continue;
    found = static_cast<int>(fd);
    break;
  }
  closedir(dir);
  return found;
}

// True when the peer closed its end (or the socket failed).
bool peer_closed(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, static_cast<short>(POLLRDHUP), 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

// One generation job as the HTTP side sees it: the events the engine delivered (pushed from the
// engine thread, drained by the connection's thread).
struct JobState {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<GenEvent> events;
  std::shared_ptr<engine::Job> job;
  bool finished = false;  // kDone was drained by the HTTP side

  void push(const GenEvent& ev) {
    {
      std::lock_guard lk(mu);
      events.push_back(ev);
    }
    cv.notify_all();
  }
  void cancel() {
    std::shared_ptr<engine::Job> j;
    {
      std::lock_guard lk(mu);
      j = job;
    }
    if (j) j->cancel();
  }
  // Waits up to `d` for events and takes them.
  std::deque<GenEvent> take(Clock::duration d) {
    std::unique_lock lk(mu);
    cv.wait_for(lk, d, [&] { return !events.empty(); });
    std::deque<GenEvent> out;
    out.swap(events);
    return out;
  }
};

class Listener : public httplib::Server {
 public:
  // cpp-httplib listens with a backlog of 5; many clients connecting at once would see SYN
  // retries. listen() again on a listening socket only changes the backlog.
  void raise_backlog(int n) {
    int s = svr_sock_.load();
    if (s >= 0) ::listen(s, n);
  }
  // httplib's stop() does nothing before the accept loop has started (a stop right after bind()
  // would be lost); closing the listening socket ends the loop whenever it runs.
  void force_stop() {
    int s = svr_sock_.exchange(INVALID_SOCKET);
    if (s != INVALID_SOCKET) {
      ::shutdown(s, SHUT_RDWR);
      ::close(s);
    }
  }
};

const char* kSseType = "text/event-stream";
const char* kJsonType = "application/json";

}  // namespace

struct HttpServer::Impl {
  engine::Engine& eng;
  ServerOptions opt;
  Listener svr;
  HttpCounters counters;
  ApiLimits limits;
  std::atomic<bool> stopping{false};
  std::mutex jobs_mu;
  std::unordered_set<std::shared_ptr<JobState>> jobs;
  int64_t started_at = static_cast<int64_t>(std::time(nullptr));

  Impl(engine::Engine& e, ServerOptions o) : eng(e), opt(std::move(o)) {
    limits.max_tokens_cap = opt.max_tokens_cap;
    limits.context_limit = eng.context_limit();
    limits.default_seed = opt.default_seed;
    setup();
  }

  // ------------------------------------------------------------------------------------------
  void send_json(httplib::Response& res, int status, const std::string& body) {
    res.status = status;
    res.set_content(body, kJsonType);
  }
  void send_error(httplib::Response& res, Dialect d, const ApiError& e) {
    if (e.status == 429 || e.status == 503) res.set_header("Retry-After", "1");
    send_json(res, e.status, error_body(d, e));
  }
  static ApiError make_error(int status, std::string type, std::string message,
                             std::string param = {}, std::string code = {}) {
    ApiError e;
    e.status = status;
    e.type = std::move(type);
    e.message = std::move(message);
    e.param = std::move(param);
    e.code = std::move(code);
    return e;
  }

  bool authorized(const httplib::Request& req) const {
    if (opt.api_key.empty()) return true;
    std::string auth = req.get_header_value("Authorization");
    if (iequals_prefix(auth, "Bearer ")) {
      std::string_view k = std::string_view(auth).substr(7);
      while (!k.empty() && k.front() == ' ') k.remove_prefix(1);
      if (same_secret(k, opt.api_key)) return true;
    }
    if (req.has_header("x-api-key") && same_secret(req.get_header_value("x-api-key"), opt.api_key))
      return true;
    return false;
  }
  // Answers 401 (and returns false) when the request lacks the key.
  bool check_auth(const httplib::Request& req, httplib::Response& res, Dialect d) {
    if (authorized(req)) return true;
    send_error(res, d,
               make_error(401, "authentication_error",
                          "invalid or missing API key (send Authorization: Bearer KEY or "
                          "x-api-key: KEY)"));
    res.set_header("WWW-Authenticate", "Bearer");
    return false;
  }

  nlohmann::ordered_json model_json() const {
    nlohmann::ordered_json m;
    m["id"] = eng.model_id();
    m["object"] = "model";
    m["created"] = started_at;
    m["owned_by"] = "dsv4";
    m["name"] = "DeepSeek V4 Flash";
    m["context_length"] = eng.context_limit();
    // Anthropic's model object fields, so both SDKs' models.list() parse it.
    m["type"] = "model";
    m["display_name"] = "DeepSeek V4 Flash";
    char iso[32];
    std::time_t t = started_at;
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
    m["created_at"] = iso;
    return m;
  }

  // ------------------------------------------------------------------------------------------
  void setup() {
    int threads = std::max(2, opt.http_threads);
    svr.new_task_queue = [threads] {
      return new httplib::ThreadPool(static_cast<size_t>(threads));
    };
    svr.set_payload_max_length(static_cast<size_t>(opt.max_body_bytes));
    svr.set_read_timeout(30, 0);
    svr.set_write_timeout(30, 0);
    svr.set_keep_alive_timeout(5);
    svr.set_keep_alive_max_count(1000);
    svr.set_tcp_nodelay(true);
    if (!opt.cors_origin.empty()) {
      svr.set_default_headers({
          {"Access-Control-Allow-Origin", opt.cors_origin},
          {"Access-Control-Allow-Methods", "GET, POST, OPTIONS"},
          {"Access-Control-Allow-Headers", "*, Authorization"},
          {"Access-Control-Max-Age", "600"},
      });
    }
    svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      counters.count_response(res.status);
      if (opt.log_requests)
        std::fprintf(stderr, "dsv4 serve: %s %s %s:%d -> %d\n", req.method.c_str(),
                     req.path.c_str(), req.remote_addr.c_str(), req.remote_port, res.status);
    });
    svr.set_exception_handler(
        [this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "internal error";
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          std::fprintf(stderr, "dsv4 serve: error in %s %s: %s\n", req.method.c_str(),
                       req.path.c_str(), what.c_str());
          send_error(res, dialect_for_path(req.path), make_error(500, "server_error", what));
        });
    svr.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          Dialect d = dialect_for_path(req.path);
          if (res.status == 404) {
            if (known_path(req.path)) {
              res.set_header("Allow", allowed_methods(req.path));
              send_error(res, d,
                         make_error(405, "invalid_request_error",
                                    fmt::format("method {} not allowed on {}",
                                                client_text(req.method), client_text(req.path))));
            } else {
              send_error(res, d,
                         make_error(404, "not_found_error",
                                    fmt::format("unknown endpoint: {} {}", client_text(req.method),
                                                client_text(req.path))));
            }
          } else if (res.status == 413) {
            send_error(res, d,
                       make_error(413, "request_too_large",
                                  fmt::format("request body larger than the limit of {} bytes "
                                              "(--max-body-mb)",
                                              opt.max_body_bytes)));
          } else if (res.status >= 400) {
            send_error(res, d, make_error(res.status, "invalid_request_error", "bad HTTP request"));
          }
          return httplib::Server::HandlerResponse::Handled;
        }));

    svr.Options(".*", [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
    svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"status":"ok"})", kJsonType);
    });
    svr.Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
      if (!check_auth(req, res, Dialect::kChat)) return;
      res.set_content(render_metrics(eng.stats(), counters), "text/plain; version=0.0.4");
    });
    auto models = [this](const httplib::Request& req, httplib::Response& res) {
      if (!check_auth(req, res, Dialect::kChat)) return;
      nlohmann::ordered_json list;
      list["object"] = "list";
      list["data"] = nlohmann::ordered_json::array({model_json()});
      list["has_more"] = false;
      list["first_id"] = eng.model_id();
      list["last_id"] = eng.model_id();
      send_json(res, 200, list.dump());
    };
    svr.Get("/v1/models", models);
    svr.Get("/models", models);
    auto model = [this](const httplib::Request& req, httplib::Response& res) {
      if (!check_auth(req, res, Dialect::kChat)) return;
      std::string id = req.matches.size() > 1 ? std::string(req.matches[1]) : "";
      if (id != eng.model_id()) {
        send_error(res, Dialect::kChat,
                   make_error(404, "not_found_error",
                              fmt::format("the model '{}' does not exist (this server serves "
                                          "'{}')",
                                          client_text(id), eng.model_id()),
                              "model", "model_not_found"));
        return;
      }
      send_json(res, 200, model_json().dump());
    };
    svr.Get(R"(/v1/models/(.+))", model);
    svr.Get(R"(/models/(.+))", model);

    auto gen = [this](Dialect d, bool count) {
      return [this, d, count](const httplib::Request& req, httplib::Response& res) {
        handle_generate(req, res, d, count);
      };
    };
    for (const char* prefix : {"/v1", ""}) {
      std::string p = prefix;
      svr.Post(p + "/chat/completions", gen(Dialect::kChat, false));
      svr.Post(p + "/completions", gen(Dialect::kCompletions, false));
      svr.Post(p + "/responses", gen(Dialect::kResponses, false));
      svr.Post(p + "/messages", gen(Dialect::kMessages, false));
      svr.Post(p + "/messages/count_tokens", gen(Dialect::kMessages, true));
    }
  }

  static bool is_post_path(const std::string& path) {
    std::string_view p = path;
    if (p.starts_with("/v1/")) p.remove_prefix(3);
    return p == "/chat/completions" || p == "/completions" || p == "/responses" ||
           p == "/messages" || p == "/messages/count_tokens";
  }
  static bool is_get_path(const std::string& path) {
    std::string_view p = path;
    if (p == "/health" || p == "/metrics") return true;
    if (p.starts_with("/v1/")) p.remove_prefix(3);
    return p == "/models" || (p.starts_with("/models/") && p.size() > 8);
  }
  static bool known_path(const std::string& path) {
    return is_post_path(path) || is_get_path(path);
  }
  static std::string allowed_methods(const std::string& path) {
    return is_post_path(path) ? "POST, OPTIONS" : "GET, OPTIONS";
  }

  void register_job(const std::shared_ptr<JobState>& st) {
    std::lock_guard lk(jobs_mu);
    jobs.insert(st);
  }
  void unregister_job(const std::shared_ptr<JobState>& st) {
    std::lock_guard lk(jobs_mu);
    jobs.erase(st);
  }

  // ------------------------------------------------------------------------------------------
  void handle_generate(const httplib::Request& req, httplib::Response& res, Dialect d,
                       bool count_only) {
    if (!check_auth(req, res, d)) return;
    if (stopping.load()) {
      send_error(res, d, make_error(503, "overloaded_error", "server shutting down"));
      return;
    }
    if (!text::utf8::is_valid(req.body)) {
      size_t pos = 0;
      std::string_view b = req.body;
      while (pos < b.size()) {
        size_t n = text::utf8::valid_sequence_length(b.substr(pos));
        if (n == 0) break;
        pos += n;
      }
      send_error(res, d,
                 bad_request("", fmt::format("request body is not valid UTF-8 (bad byte at "
                                             "offset {})",
                                             pos)));
      return;
    }
    if (json_depth_over(req.body, kMaxJsonDepth) > kMaxJsonDepth) {
      send_error(res, d,
                 bad_request("", fmt::format("invalid JSON request: nested deeper than {} levels",
                                             kMaxJsonDepth)));
      return;
    }
    ParsedRequest pr;
    try {
      if (count_only)
        pr = parse_count_tokens(parse_body(req.body), limits);
      else
        pr = parse_request(d, req.body, limits);
    } catch (const ApiException& e) {
      send_error(res, d, e.error());
      return;
    } catch (const ParamError& e) {
      send_error(res, d, bad_request(e.field(), e.what()));
      return;
    } catch (const Error& e) {
      send_error(res, d, bad_request("", e.what()));
      return;
    }

    if (count_only || pr.count_only) {
      try {
        size_t n = eng.prompt_tokens(pr.gen).size();
        send_json(res, 200, count_tokens_body(static_cast<int64_t>(n)));
      } catch (const ParamError& e) {
        send_error(res, d, bad_request(e.field(), e.what()));
      } catch (const Error& e) {
        send_error(res, d, bad_request("messages", e.what()));
      }
      return;
    }

    WriterMeta meta;
    meta.id = response_id(d);
    meta.model = pr.model.empty() ? eng.model_id() : pr.model;
    meta.created = static_cast<int64_t>(std::time(nullptr));
    pr.gen.request_id = meta.id;
    auto writer = make_writer(d, pr, meta);

    auto st = std::make_shared<JobState>();
    try {
      // The sink holds the state weakly: the job holds the sink, and the state holds the job.
      std::weak_ptr<JobState> weak = st;
      auto job = eng.submit(pr.gen, [weak](const GenEvent& ev) {
        if (auto s = weak.lock()) s->push(ev);
      });
      std::lock_guard lk(st->mu);
      st->job = std::move(job);
    } catch (const engine::QueueFull& e) {
      send_error(res, d, make_error(429, "rate_limit_error", e.what()));
      return;
    } catch (const ParamError& e) {
      send_error(res, d, bad_request(e.field(), e.what()));
      return;
    } catch (const Error& e) {
      std::string msg = e.what();
      bool ctx = msg.find("context") != std::string::npos;
      send_error(res, d,
                 make_error(400, "invalid_request_error", msg, ctx ? "messages" : "",
                            ctx ? "context_length_exceeded" : ""));
      return;
    }
    register_job(st);
    if (stopping.load()) st->cancel();  // stop() may have run between the check and here

    int fd = find_connection_fd(req);
    if (!pr.stream) {
      finish_blocking(res, d, st, *writer, fd);
      unregister_job(st);
      return;
    }

    struct StreamCtx {
      std::shared_ptr<JobState> st;
      std::unique_ptr<ResponseWriter> writer;
      int fd = -1;
      Clock::time_point last_write = Clock::now();
      bool finished = false;
    };
    auto ctx = std::make_shared<StreamCtx>();
    ctx->st = st;
    ctx->writer = std::move(writer);
    ctx->fd = fd;
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    auto keepalive = std::chrono::seconds(std::max(1, opt.keepalive_seconds));
    res.set_chunked_content_provider(
        kSseType,
        [this, ctx, keepalive](size_t, httplib::DataSink& sink) -> bool {
          if (ctx->finished) {
            sink.done();
            return true;
          }
          auto batch = ctx->st->take(kWaitSlice);
          std::string bytes;
          for (const auto& ev : batch) {
            bytes += ctx->writer->on_event(ev);
            if (ev.kind == GenEvent::Kind::kDone) ctx->finished = true;
          }
          if (bytes.empty() && !ctx->finished) {
            if (peer_closed(ctx->fd)) return client_gone(*ctx->st);
            if (Clock::now() - ctx->last_write < keepalive) return true;
            bytes = ": keepalive\n\n";
          }
          // Never write 0 bytes: cpp-httplib ends the stream on an empty write.
          if (!bytes.empty()) {
            if (!sink.write(bytes.data(), bytes.size())) return client_gone(*ctx->st);
            ctx->last_write = Clock::now();
          }
          if (ctx->finished) sink.done();
          return true;
        },
        [this, ctx](bool) {
          // The stream ended: normally after kDone; otherwise the client went away or the
          // server is stopping, and the job must not go on.
          if (!ctx->finished) ctx->st->cancel();
          unregister_job(ctx->st);
        });
  }

  bool client_gone(JobState& st) {
    counters.count_disconnect();
    st.cancel();
    return false;
  }

  // A non-streamed answer: collect the events into the writer, then the final body.
  void finish_blocking(httplib::Response& res, Dialect d, const std::shared_ptr<JobState>& st,
                       ResponseWriter& writer, int fd) {
    bool done = false, gone = false;
    engine::FinishReason finish = engine::FinishReason::kStop;
    while (!done) {
      for (const auto& ev : st->take(kWaitSlice)) {
        (void)writer.on_event(ev);
        if (ev.kind == GenEvent::Kind::kDone) {
          done = true;
          finish = ev.finish;
        }
      }
      if (!done && !gone && peer_closed(fd)) {
        gone = true;
        client_gone(*st);
      }
    }
    if (finish == engine::FinishReason::kCancelled && stopping.load()) {
      send_error(res, d, make_error(503, "overloaded_error", "server shutting down"));
    } else {
      send_json(res, writer.final_status(), writer.final_body());
    }
  }

  void stop() {
    stopping.store(true);
    {
      std::lock_guard lk(jobs_mu);
      for (const auto& st : jobs) st->cancel();
    }
    svr.force_stop();
  }
};

HttpServer::HttpServer(engine::Engine& engine, ServerOptions opt)
    : impl_(std::make_unique<Impl>(engine, std::move(opt))) {}

HttpServer::~HttpServer() {
  impl_->stop();
}

int HttpServer::bind() {
  auto& o = impl_->opt;
  int port = o.port;
  if (o.port == 0) {
    port = impl_->svr.bind_to_any_port(o.host);
    if (port <= 0) fail("cannot listen on {}: {}", o.host, std::strerror(errno));
  } else if (!impl_->svr.bind_to_port(o.host, o.port)) {
    fail("cannot listen on {}:{}: {}", o.host, o.port, std::strerror(errno));
  }
  impl_->svr.raise_backlog(512);
  return port;
}

bool HttpServer::run() {
  return impl_->svr.listen_after_bind();
}

void HttpServer::stop() {
  impl_->stop();
}

}  // namespace dsv4::server
