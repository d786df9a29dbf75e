// pull_file: one resumable download with libcurl. Invariant: the .part always holds a prefix of
// the remote file and sha_ has consumed exactly those bytes (have_ of them), so any attempt can
// continue from have_ with "Range: bytes=have_-" and the final hash needs no second pass.
#include <curl/curl.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "core/error.h"
#include "pull/pull.h"
#include "pull/sha256.h"

namespace dsv4::pull {

namespace fs = std::filesystem;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = (char)std::tolower((unsigned char)c);
  return r;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace((unsigned char)s.front())) s.remove_prefix(1);
  while (!s.empty() && std::isspace((unsigned char)s.back())) s.remove_suffix(1);
  return s;
}

std::optional<uint64_t> parse_u64(std::string_view s) {
  s = trim(s);
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (uint64_t)(c - '0');
  }
  return v;
}

// "bytes A-B/T", "bytes A-B/*" or "bytes */T".
struct ContentRange {
  std::optional<uint64_t> first, last, total;
};
std::optional<ContentRange> parse_content_range(std::string_view s) {
  s = trim(s);
  if (!s.starts_with("bytes ")) return std::nullopt;
  s = trim(s.substr(6));
  const size_t slash = s.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  ContentRange cr;
  const std::string_view range = s.substr(0, slash), total = s.substr(slash + 1);
  if (trim(total) != "*") {
    cr.total = parse_u64(total);
    if (!cr.total) return std::nullopt;
  }
  if (trim(range) != "*") {
    const size_t dash = range.find('-');
    if (dash == std::string_view::npos) return std::nullopt;
    cr.first = parse_u64(range.substr(0, dash));
    cr.last = parse_u64(range.substr(dash + 1));
    if (!cr.first || !cr.last || *cr.last < *cr.first) return std::nullopt;
  }
  return cr;
}

struct Hop {  // one HTTP response (a redirect or the final one) and its headers
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  const std::string* get(std::string_view name) const {
    for (const auto& [k, v] : headers)
      if (k == name) return &v;
    return nullptr;
  }
};

void curl_init_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) fail("pull: curl_global_init failed");
  });
}

class Progress {
 public:
  Progress(ProgressMode mode, std::FILE* log) : log_(log) {
    if (!log_) mode = ProgressMode::None;
    if (mode == ProgressMode::Auto)
      mode = isatty(fileno(log_)) ? ProgressMode::Tty : ProgressMode::Plain;
    mode_ = mode;
  }

  void start(uint64_t have, std::optional<uint64_t> total) {
    total_ = total;
    samples_.clear();
    samples_.emplace_back(now_s(), have);
    last_print_ = now_s();
  }

  void update(uint64_t have) {
    if (mode_ == ProgressMode::None) return;
    const double t = now_s();
    const double every = mode_ == ProgressMode::Tty ? 0.25 : 10.0;
    if (t - last_print_ < every) return;
    last_print_ = t;
    samples_.emplace_back(t, have);
    while (samples_.size() > 2 && t - samples_[1].first >= 10.0) samples_.pop_front();
    print(have, false);
  }

  void finish(uint64_t have) {
    if (mode_ == ProgressMode::None) return;
    samples_.emplace_back(now_s(), have);
    print(have, true);
  }

  // A message on its own line (clears a live TTY progress line first).
  template <typename... Args>
  void note(fmt::format_string<Args...> f, Args&&... args) {
    if (!log_) return;
    clear_line();
    std::fputs((fmt::format(f, std::forward<Args>(args)...) + "\n").c_str(), log_);
    std::fflush(log_);
  }

 private:
  void clear_line() {
    if (live_) std::fputs("\r\x1b[K", log_);
    live_ = false;
  }

  void print(uint64_t have, bool final) {
    const auto& [t0, b0] = samples_.front();
    const auto& [t1, b1] = samples_.back();
    const double rate = t1 > t0 && b1 >= b0 ? (double)(b1 - b0) / (t1 - t0) : 0.0;
    std::string line = format_bytes(have);
    if (total_) {
      line += fmt::format(" / {}  {:5.1f}%", format_bytes(*total_),
                          *total_ ? 100.0 * (double)have / (double)*total_ : 100.0);
    }
    line += fmt::format("  {:.1f} MB/s", rate / 1e6);
    if (total_ && !final && *total_ > have)
      line += "  ETA " + format_duration(rate > 0 ? (double)(*total_ - have) / rate : NAN);
    if (mode_ == ProgressMode::Tty) {
      std::fputs(("\r\x1b[K  " + line).c_str(), log_);
      live_ = true;
      if (final) {
        std::fputs("\n", log_);
        live_ = false;
      }
    } else {
      std::fputs(("  " + line + "\n").c_str(), log_);
    }
    std::fflush(log_);
  }

  ProgressMode mode_;
  std::FILE* log_;
  std::optional<uint64_t> total_;
  std::deque<std::pair<double, uint64_t>> samples_;
  double last_print_ = 0;
  bool live_ = false;
};

class Downloader {
 public:
  explicit Downloader(const PullOptions& o)
      : o_(o), part_(fs::path(o.dest).concat(".part")), progress_(o.progress, o.log) {}

  ~Downloader() {
    if (fd_ >= 0) ::close(fd_);
  }

  PullResult run();

 private:
  enum class Outcome { Complete, Restart, Transient, Fatal, Cancelled };
  struct Attempt {
    Outcome outcome;
    std::string reason;
  };

  bool cancelled() const { return o_.cancel && o_.cancel->load(std::memory_order_relaxed); }
  void open_part();
  void hash_existing();
  void truncate_part(const std::string& why);
  Attempt attempt();
  bool begin_body();
  size_t on_body(const char* data, size_t n);
  void learn_sha(const std::string* value, const char* source);
  [[noreturn]] void cancel_exit();

  static size_t header_cb(char* buf, size_t size, size_t n, void* self);
  static size_t write_cb(char* buf, size_t size, size_t n, void* self);
  static int xferinfo_cb(void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t);

  const PullOptions& o_;
  fs::path part_;
  int fd_ = -1;
  uint64_t have_ = 0;  // bytes in the .part, all fed to sha_
  Sha256 sha_;
  Progress progress_;
  PullResult result_;

  // Learned from the server; kept across attempts.
  std::optional<uint64_t> total_;
  std::string server_sha_;
  std::string server_sha_source_;
  bool no_range_ = false;   // the server mangled a range once: download whole from now on
  uint64_t best_have_ = 0;  // the most of the file the .part has held after an attempt

  // Per attempt.
  CURL* curl_ = nullptr;
  uint64_t requested_from_ = 0;
  std::vector<Hop> hops_;
  bool body_started_ = false;
  bool discard_ = false;  // an error response's body: not written
  std::string error_body_;
  std::optional<Attempt> abort_;  // set when a callback stops the transfer
};

void Downloader::open_part() {
  fs::create_directories(part_.parent_path().empty() ? fs::path(".") : part_.parent_path());
  fd_ = ::open(part_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("pull: cannot open {}: {}", part_.string(), std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0)
    fail("pull: {} is locked: another dsv4 pull is downloading it", part_.string());
  struct stat st;
  if (::fstat(fd_, &st) != 0)
    fail("pull: cannot stat {}: {}", part_.string(), std::strerror(errno));
  have_ = (uint64_t)st.st_size;
}

void Downloader::hash_existing() {
  if (have_ == 0) return;
  progress_.note("Found {} of a previous download in {}; hashing it to resume", format_bytes(have_),
                 part_.filename().string());
  std::vector<char> buf(8 << 20);
  uint64_t off = 0;
  while (off < have_) {
    if (cancelled()) cancel_exit();
    const size_t want = (size_t)std::min<uint64_t>(buf.size(), have_ - off);
    const ssize_t got = ::pread(fd_, buf.data(), want, (off_t)off);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      fail("pull: cannot read {}: {}", part_.string(),
           got < 0 ? std::strerror(errno) : "short file");
    sha_.update(buf.data(), (size_t)got);
    off += (uint64_t)got;
  }
}

void Downloader::truncate_part(const std::string& why) {
  progress_.note("{}; restarting from byte 0", why);
  if (::ftruncate(fd_, 0) != 0)
    fail("pull: cannot truncate {}: {}", part_.string(), std::strerror(errno));
  have_ = 0;
  sha_.reset();
}

void Downloader::cancel_exit() {
  const std::string total = total_ ? " of " + format_bytes(*total_) : "";
  progress_.note("Interrupted: kept {} ({}{}); run the same command again to resume",
                 part_.string(), format_bytes(have_), total);
  fail("pull: interrupted; {} kept for resuming", part_.string());
}

size_t Downloader::header_cb(char* buf, size_t size, size_t n, void* p) {
  auto* self = static_cast<Downloader*>(p);
  const size_t len = size * n;
  std::string_view line = trim(std::string_view(buf, len));
  if (line.starts_with("HTTP/")) {
    Hop h;
    const size_t sp = line.find(' ');
    if (sp != std::string_view::npos) {
      const auto code = parse_u64(line.substr(sp + 1, 3));
      h.status = code ? (long)*code : 0;
    }
    self->hops_.push_back(std::move(h));
  } else if (!line.empty() && !self->hops_.empty()) {
    const size_t colon = line.find(':');
    if (colon != std::string_view::npos)
      self->hops_.back().headers.emplace_back(lower(trim(line.substr(0, colon))),
                                              std::string(trim(line.substr(colon + 1))));
  }
  return len;
}

size_t Downloader::write_cb(char* buf, size_t size, size_t n, void* p) {
  return static_cast<Downloader*>(p)->on_body(buf, size * n);
}

int Downloader::xferinfo_cb(void* p, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<Downloader*>(p)->cancelled() ? 1 : 0;
}

void Downloader::learn_sha(const std::string* value, const char* source) {
  if (!value || !server_sha_.empty()) return;
  std::string h = normalize_sha256(*value);
  if (h.empty()) return;
  server_sha_ = std::move(h);
  server_sha_source_ = source;
}

// The final response's headers are complete: decide what to do with its body. False aborts.
bool Downloader::begin_body() {
  body_started_ = true;
  long code = 0;
  curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &code);
  if (code != 200 && code != 206) {
    discard_ = true;
    return true;
  }
  if (hops_.empty()) {
    abort_ = Attempt{Outcome::Fatal, "response without an HTTP status line"};
    return false;
  }
  // Hugging Face puts the LFS object's size and SHA-256 on the resolve response (the redirect);
  // the CDN's own ETag is only trusted when no hop carries x-linked-etag.
  std::optional<uint64_t> linked_size;
  for (const Hop& h : hops_) {
    learn_sha(h.get("x-linked-etag"), "x-linked-etag");
    if (const std::string* s = h.get("x-linked-size"); s && !linked_size)
      linked_size = parse_u64(*s);
  }
  const Hop& last = hops_.back();
  learn_sha(last.get("etag"), "ETag");

  std::optional<uint64_t> remote;
  if (code == 206) {
    const std::string* cr_text = last.get("content-range");
    const auto cr = cr_text ? parse_content_range(*cr_text) : std::nullopt;
    if (requested_from_ == 0 || !cr || !cr->first || *cr->first != requested_from_ ||
        (cr->total && *cr->last >= *cr->total)) {
      no_range_ = true;
      abort_ = Attempt{Outcome::Restart,
                       fmt::format("server answered 206 with Content-Range '{}' to a request for "
                                   "bytes {}-; not trusting its ranges",
                                   cr_text ? *cr_text : "", requested_from_)};
      return false;
    }
    remote = cr->total;
  } else {
    if (requested_from_ > 0) {
      progress_.note("Server ignored the Range request (HTTP 200 instead of 206)");
      truncate_part("Discarding the partial download");
    }
    if (const std::string* cl = last.get("content-length")) remote = parse_u64(*cl);
  }
  if (linked_size && remote && *linked_size != *remote) {
    abort_ = Attempt{Outcome::Fatal, fmt::format("server announced {} bytes (x-linked-size) but "
                                                 "serves {} bytes",
                                                 *linked_size, *remote)};
    return false;
  }
  if (!remote) remote = linked_size;
  if (remote && total_ && *remote != *total_) {
    abort_ = Attempt{Outcome::Fatal, fmt::format("remote file changed size ({} -> {} bytes) "
                                                 "during the download",
                                                 *total_, *remote)};
    return false;
  }
  if (remote) total_ = remote;
  progress_.start(have_, total_);
  return true;
}

size_t Downloader::on_body(const char* data, size_t n) {
  if (!body_started_ && !begin_body()) return 0;
  if (discard_) {
    if (error_body_.size() < 512)
      error_body_.append(data, std::min<size_t>(n, 512 - error_body_.size()));
    return n;
  }
  if (cancelled()) return 0;
  if (total_ && have_ + n > *total_) {
    abort_ = Attempt{Outcome::Fatal,
                     fmt::format("server sent more than the announced {} bytes", *total_)};
    return 0;
  }
  size_t done = 0;
  while (done < n) {
    const ssize_t w = ::pwrite(fd_, data + done, n - done, (off_t)(have_ + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      abort_ = Attempt{Outcome::Fatal,
                       fmt::format("cannot write {}: {}", part_.string(), std::strerror(errno))};
      // Bytes of this chunk that did land were not hashed: cut the file back to have_.
      if (::ftruncate(fd_, (off_t)have_) != 0) abort_->reason += " (and cannot truncate it)";
      return 0;
    }
    done += (size_t)w;
  }
  sha_.update(data, n);
  have_ += n;
  result_.downloaded += n;
  progress_.update(have_);
  return n;
}

Downloader::Attempt Downloader::attempt() {
  hops_.clear();
  body_started_ = discard_ = false;
  error_body_.clear();
  abort_.reset();
  if (no_range_ && have_ > 0) truncate_part("Range requests disabled for this server");
  requested_from_ = have_;
  ++result_.attempts;

  struct Handle {
    CURL* c = curl_easy_init();
    ~Handle() { curl_easy_cleanup(c); }
  } h;
  if (!h.c) fail("pull: curl_easy_init failed");
  curl_ = h.c;
  char errbuf[CURL_ERROR_SIZE] = {0};
  const std::string range = fmt::format("{}-", requested_from_);
  curl_easy_setopt(h.c, CURLOPT_URL, o_.url.c_str());
  curl_easy_setopt(h.c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h.c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h.c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(h.c, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(h.c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h.c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h.c, CURLOPT_USERAGENT, "dsv4-pull/1");
  curl_easy_setopt(h.c, CURLOPT_CONNECTTIMEOUT, o_.connect_timeout_s);
  curl_easy_setopt(h.c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(h.c, CURLOPT_LOW_SPEED_TIME, o_.stall_timeout_s);
  curl_easy_setopt(h.c, CURLOPT_HEADERFUNCTION, &Downloader::header_cb);
  curl_easy_setopt(h.c, CURLOPT_HEADERDATA, this);
  curl_easy_setopt(h.c, CURLOPT_WRITEFUNCTION, &Downloader::write_cb);
  curl_easy_setopt(h.c, CURLOPT_WRITEDATA, this);
  curl_easy_setopt(h.c, CURLOPT_XFERINFOFUNCTION, &Downloader::xferinfo_cb);
  curl_easy_setopt(h.c, CURLOPT_XFERINFODATA, this);
  curl_easy_setopt(h.c, CURLOPT_NOPROGRESS, 0L);
  if (requested_from_ > 0) curl_easy_setopt(h.c, CURLOPT_RANGE, range.c_str());
  if (!o_.token.empty()) {
    // Real HTTP auth (not a custom header): curl drops it when a redirect leaves the host, so the
    // token never reaches the CDN.
    curl_easy_setopt(h.c, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
    curl_easy_setopt(h.c, CURLOPT_XOAUTH2_BEARER, o_.token.c_str());
  }

  const CURLcode rc = curl_easy_perform(h.c);
  long code = 0;
  curl_easy_getinfo(h.c, CURLINFO_RESPONSE_CODE, &code);
  if (rc == CURLE_OK && !body_started_ && !begin_body() && !abort_)
    abort_ = Attempt{Outcome::Fatal, "internal: empty body rejected"};
  curl_ = nullptr;
  if (cancelled()) return {Outcome::Cancelled, "interrupted"};
  if (abort_) return *abort_;
  if (rc != CURLE_OK) {
    std::string why = errbuf[0] ? std::string(trim(errbuf)) : curl_easy_strerror(rc);
    if (total_) why += fmt::format(" (at byte {} of {})", have_, *total_);
    const bool fatal = rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT ||
                       rc == CURLE_TOO_MANY_REDIRECTS || rc == CURLE_PEER_FAILED_VERIFICATION ||
                       rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_LOGIN_DENIED;
    return {fatal ? Outcome::Fatal : Outcome::Transient, why};
  }
  if (code == 200 || code == 206) {
    if (total_ && have_ < *total_)
      return {Outcome::Transient,
              fmt::format("connection closed at byte {} of {}", have_, *total_)};
    return {Outcome::Complete, ""};
  }
  if (code == 416 && requested_from_ > 0) {
    const std::string* cr_text = hops_.empty() ? nullptr : hops_.back().get("content-range");
    const auto cr = cr_text ? parse_content_range(*cr_text) : std::nullopt;
    if (cr && cr->total && !cr->first) {
      if (total_ && *total_ != *cr->total)
        return {Outcome::Fatal,
                fmt::format("remote file changed size ({} -> {} bytes)", *total_, *cr->total)};
      total_ = cr->total;
      if (have_ == *cr->total) {
        progress_.note("The partial download is already complete ({} bytes)", have_);
        return {Outcome::Complete, ""};
      }
      if (have_ > *cr->total)
        return {Outcome::Restart, fmt::format("The partial download ({} bytes) is larger than the "
                                              "remote file ({} bytes)",
                                              have_, *cr->total)};
    }
    return {Outcome::Restart, fmt::format("Server refused the range request from byte {} (HTTP "
                                          "416)",
                                          requested_from_)};
  }
  std::string body = std::string(trim(error_body_));
  if (body.size() > 200) body = body.substr(0, 200) + "...";
  const std::string detail = body.empty() ? "" : ": " + body;
  if (code == 408 || code == 425 || code == 429 || code >= 500)
    return {Outcome::Transient, fmt::format("HTTP {}{}", code, detail)};
  if (code == 401)
    return {Outcome::Fatal, fmt::format("HTTP 401 (authentication required): pass --token or set "
                                        "HF_TOKEN{}",
                                        detail)};
  if (code == 403)
    return {Outcome::Fatal, fmt::format("HTTP 403 (access denied): the token may lack access to "
                                        "this repository{}",
                                        detail)};
  if (code == 404) return {Outcome::Fatal, fmt::format("HTTP 404 (not found): {}", o_.url)};
  return {Outcome::Fatal, fmt::format("HTTP {}{}", code, detail)};
}

PullResult Downloader::run() {
  result_.path = o_.dest;
  std::string want_sha;
  if (!o_.sha256.empty()) {
    want_sha = normalize_sha256(o_.sha256);
    if (want_sha.empty()) fail("pull: --sha256 '{}' is not 64 hex digits", o_.sha256);
  }
  std::error_code ec;
  if (fs::exists(o_.dest, ec)) {
    result_.already_present = true;
    result_.bytes = fs::file_size(o_.dest, ec);
    progress_.note("Already downloaded: {}", o_.dest.string());
    return result_;
  }
  curl_init_once();
  open_part();
  progress_.note("Downloading {}\n  from {}\n  to {}", o_.dest.filename().string(), o_.url,
                 part_.string());
  hash_existing();
  best_have_ = have_;

  int failures = 0, restarts = 0;
  for (;;) {
    if (cancelled()) cancel_exit();
    Attempt a = attempt();
    if (a.outcome == Outcome::Complete) break;
    if (a.outcome == Outcome::Cancelled) cancel_exit();
    if (a.outcome == Outcome::Fatal) fail("pull: {}: {}", o_.dest.filename().string(), a.reason);
    if (a.outcome == Outcome::Restart) {
      if (++restarts > 3)
        fail("pull: {}: {} (gave up after 3 restarts)", o_.dest.filename().string(), a.reason);
      truncate_part(a.reason);
      continue;
    }
    // Transient: the count only grows while attempts make no progress, so a long download over a
    // flaky link keeps going while a dead server is given up on after max_retries. Progress means
    // getting further than ever before (a server that ignores Range and drops the connection
    // restarts from zero each time and so makes none).
    failures = have_ > best_have_ ? 1 : failures + 1;
    best_have_ = std::max(best_have_, have_);
    if (failures > o_.max_retries)
      fail("pull: {}: {}; giving up after {} attempts (the .part is kept; run again to resume)",
           o_.dest.filename().string(), a.reason, result_.attempts);
    const double delay = std::min(
        o_.backoff_max_s, o_.backoff_initial_s * std::ldexp(1.0, std::min(failures - 1, 30)));
    progress_.note("Attempt {} failed: {}; retrying in {:.1f}s ({}/{})", result_.attempts, a.reason,
                   delay, failures, o_.max_retries);
    const double until = now_s() + delay;
    while (now_s() < until) {
      if (cancelled()) cancel_exit();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  if (result_.downloaded > 0) progress_.finish(have_);

  const std::string name = o_.dest.filename().string();
  if (total_ && have_ != *total_)
    fail("pull: {}: size {} differs from the server's {}", name, have_, *total_);
  result_.bytes = have_;
  result_.sha256 = sha_.hex_digest();
  const std::string& expected = want_sha.empty() ? server_sha_ : want_sha;
  if (!want_sha.empty() && !server_sha_.empty() && want_sha != server_sha_)
    progress_.note("Note: --sha256 differs from the server's {} ({}); checking --sha256",
                   server_sha_source_, server_sha_);
  if (!expected.empty() && expected != result_.sha256) {
    if (want_sha.empty()) {
      // Full size yet not the bytes the server published: provably wrong, do not resume it.
      ::close(fd_);
      fd_ = -1;
      fs::remove(part_, ec);
      fail(
          "pull: {}: SHA-256 mismatch: the server's {} says {}, the download hashes to {}; "
          "deleted {} (run again to download from scratch)",
          name, server_sha_source_, expected, result_.sha256, part_.string());
    }
    fail(
        "pull: {}: SHA-256 mismatch: expected {} (--sha256), the download hashes to {}; kept {} "
        "(if the expected hash is right, delete it and pull again)",
        name, expected, result_.sha256, part_.string());
  }
  result_.sha256_verified = !expected.empty();
  if (::fsync(fd_) != 0) fail("pull: fsync {}: {}", part_.string(), std::strerror(errno));
  if (::rename(part_.c_str(), o_.dest.c_str()) != 0)
    fail("pull: cannot rename {} to {}: {}", part_.string(), o_.dest.string(),
         std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  const fs::path dir = o_.dest.parent_path().empty() ? fs::path(".") : o_.dest.parent_path();
  if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  progress_.note(
      "Saved {} ({}, SHA-256 {}{})", o_.dest.string(), format_bytes(have_), result_.sha256,
      result_.sha256_verified
          ? fmt::format(" matches {}", want_sha.empty() ? server_sha_source_ : "--sha256")
          : ", not verified: the server published none");
  return result_;
}

}  // namespace

PullResult pull_file(const PullOptions& opts) {
  if (opts.url.empty()) fail("pull: no URL");
  if (opts.dest.empty()) fail("pull: no destination");
  Downloader d(opts);
  return d.run();
}

}  // namespace dsv4::pull
