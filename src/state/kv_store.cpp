#include "state/kv_store.h"

#include <fmt/core.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "core/error.h"
#include "state/session_file.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

uint64_t fnv1a(const void* p, size_t n, uint64_t h = 1469598103934665603ull) {
  const auto* b = (const uint8_t*)p;
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

uint64_t now_ns() {
  return (uint64_t)std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

uint64_t mtime_ns(const std::string& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 0;
  return (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec;
}

void touch(const std::string& p) {
  std::error_code ec;
  fs::last_write_time(p, fs::file_time_type::clock::now(), ec);  // best effort
}

bool is_hex_name(const std::string& n) {
  if (n.size() != 16 + 3 || n.compare(16, 3, ".kv") != 0) return false;
  return std::all_of(n.begin(), n.begin() + 16,
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// The header of a session file (state/session_file.cpp, version 1): magic "DSV4SESS", u32
// version, u64 fingerprint, i64 n_past, i64 mtp_n_past, u64 token count, i32 tokens, ... , u64
// checksum. Only this prefix is read; load_session() checks everything else.
constexpr char kMagic[8] = {'D', 'S', 'V', '4', 'S', 'E', 'S', 'S'};
constexpr uint32_t kVersion = 1;
constexpr size_t kFixed = 8 + 4 + 8 + 8 + 8 + 8;

// Empty string on success, else what is wrong.
std::string read_header(const std::string& path, uint64_t fp, uint64_t file_size,
                        std::vector<int32_t>& tokens) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return "cannot open";
  char h[kFixed];
  if (!f.read(h, sizeof h)) return "truncated header";
  if (std::memcmp(h, kMagic, 8) != 0) return "not a dsv4 session file";
  uint32_t version;
  uint64_t fingerprint, ntok;
  int64_t n_past;
  std::memcpy(&version, h + 8, 4);
  std::memcpy(&fingerprint, h + 12, 8);
  std::memcpy(&n_past, h + 20, 8);
  std::memcpy(&ntok, h + 36, 8);
  if (version != kVersion)
    return fmt::format("format version {} (this build reads {})", version, kVersion);
  if (fingerprint != fp) return "saved with a different model";
  if (ntok == 0 || (int64_t)ntok != n_past) return "bad token count";
  // Tokens, then at least the layer count and the checksum.
  if (ntok > (file_size - kFixed) / 4 || kFixed + ntok * 4 + 16 > file_size) return "truncated";
  tokens.resize((size_t)ntok);
  if (!f.read((char*)tokens.data(), (std::streamsize)(ntok * 4))) return "truncated";
  return {};
}

}  // namespace

KvStore::KvStore(std::string dir, uint64_t budget_bytes, uint64_t fingerprint, ModelConfig cfg)
    : dir_(std::move(dir)), budget_(budget_bytes), fp_(fingerprint), cfg_(std::move(cfg)) {
  if (dir_.empty()) fail("kv store: empty directory name");
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) fail("{}: cannot create the KV cache directory: {}", dir_, ec.message());
  if (!fs::is_directory(dir_, ec)) fail("{}: not a directory", dir_);
  scan();
  std::lock_guard lk(mu_);
  evict_locked("");
}

std::string KvStore::file_name(std::span<const int32_t> tokens) const {
  uint64_t h = fnv1a(&fp_, sizeof fp_);
  h = fnv1a(tokens.data(), tokens.size() * sizeof(int32_t), h);
  return fmt::format("{:016x}.kv", h);
}

void KvStore::scan() {
  std::lock_guard lk(mu_);
  std::error_code ec;
  fs::directory_iterator it(dir_, ec);
  if (ec) fail("{}: cannot read the KV cache directory: {}", dir_, ec.message());
  for (const auto& de : it) {
    const std::string name = de.path().filename().string();
    const std::string p = de.path().string();
    if (name.size() > 24 && is_hex_name(name.substr(0, 19)) && name.compare(19, 5, ".tmp.") == 0) {
      // A temporary file of a write in progress (another process on the same directory) or
      // left over from a crash: removed only when its writer is gone.
      const long pid = std::strtol(name.c_str() + 24, nullptr, 10);
      if (pid > 0 && pid != (long)getpid() && (::kill((pid_t)pid, 0) == 0 || errno == EPERM))
        continue;  // signal 0: only asks whether the process exists
      fmt::print(stderr, "kv cache: removing {} (left over from an interrupted write)\n", p);
      fs::remove(p, ec);
      continue;
    }
    if (!is_hex_name(name) || !de.is_regular_file(ec)) continue;
    const uint64_t size = de.file_size(ec);
    if (ec) continue;
    Entry e;
    e.name = name;
    e.bytes = size;
    std::string why = read_header(p, fp_, size, e.tokens);
    if (why.empty() && file_name(e.tokens) != name) why = "file name does not match its tokens";
    if (!why.empty()) {
      fmt::print(stderr, "kv cache: removing {}: {}\n", p, why);
      fs::remove(p, ec);
      continue;
    }
    e.last_used = mtime_ns(p);
    total_ += e.bytes;
    entries_.push_back(std::move(e));
  }
}

size_t KvStore::longest_prefix(std::span<const int32_t> prompt, size_t max_len) const {
  std::lock_guard lk(mu_);
  size_t best = 0;
  for (const Entry& e : entries_) {
    const size_t n = e.tokens.size();
    if (n > best && n <= max_len && n <= prompt.size() &&
        std::equal(e.tokens.begin(), e.tokens.end(), prompt.begin()))
      best = n;
  }
  return best;
}

bool KvStore::contains(std::span<const int32_t> tokens) const {
  std::lock_guard lk(mu_);
  const std::string name = file_name(tokens);
  for (const Entry& e : entries_) {
    if (e.name == name &&
        std::equal(e.tokens.begin(), e.tokens.end(), tokens.begin(), tokens.end()))
      return true;
  }
  return false;
}

size_t KvStore::load_longest(std::span<const int32_t> prompt, size_t max_len,
                             std::vector<int32_t>& tokens, CpuSession& sess) {
  std::lock_guard lk(mu_);
  for (;;) {
    ptrdiff_t best = -1;
    for (size_t i = 0; i < entries_.size(); ++i) {
      const Entry& e = entries_[i];
      const size_t n = e.tokens.size();
      if (n <= max_len && n <= prompt.size() &&
          (best < 0 || n > entries_[(size_t)best].tokens.size()) &&
          std::equal(e.tokens.begin(), e.tokens.end(), prompt.begin()))
        best = (ptrdiff_t)i;
    }
    if (best < 0) return 0;
    Entry& e = entries_[(size_t)best];
    const std::string p = path(e.name);
    std::vector<int32_t> toks;
    CpuSession s;
    try {
      load_session(p, fp_, cfg_, toks, s);
      if (toks != e.tokens) fail("{}: tokens differ from the header", p);
    } catch (const std::exception& ex) {
      fmt::print(stderr, "kv cache: {}\n", ex.what());
      remove_locked((size_t)best, "failed to load");
      continue;
    }
    touch(p);
    e.last_used = now_ns();
    tokens = std::move(toks);
    sess = std::move(s);
    return tokens.size();
  }
}

bool KvStore::save(const std::vector<int32_t>& tokens, const CpuSession& sess) {
  if (tokens.empty() || (int64_t)tokens.size() != sess.n_past) return false;
  std::lock_guard lk(mu_);
  const std::string name = file_name(tokens);
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i].name != name) continue;
    if (entries_[i].tokens == tokens) {
      touch(path(name));
      entries_[i].last_used = now_ns();
      return true;
    }
    remove_locked(i, "hash collision with a new snapshot");
    break;
  }
  const std::string p = path(name);
  try {
    save_session(p, fp_, tokens, sess);
  } catch (const std::exception& ex) {
    fmt::print(stderr, "kv cache: {}\n", ex.what());
    return false;
  }
  std::error_code ec;
  Entry e;
  e.name = name;
  e.tokens = tokens;
  e.bytes = fs::file_size(p, ec);
  e.last_used = now_ns();
  if (ec) return false;
  if (e.bytes > budget_) {
    fmt::print(stderr,
               "kv cache: snapshot of {} tokens ({} bytes) exceeds the budget of {} bytes\n",
               tokens.size(), e.bytes, budget_);
    fs::remove(p, ec);
    return false;
  }
  total_ += e.bytes;
  entries_.push_back(std::move(e));
  evict_locked(name);
  return true;
}

void KvStore::remove_locked(size_t i, const char* why) {
  const std::string p = path(entries_[i].name);
  fmt::print(stderr, "kv cache: removing {} ({})\n", p, why);
  std::error_code ec;
  fs::remove(p, ec);
  total_ -= entries_[i].bytes;
  entries_.erase(entries_.begin() + (ptrdiff_t)i);
}

void KvStore::evict_locked(const std::string& keep) {
  while (total_ > budget_ && !entries_.empty()) {
    ptrdiff_t victim = -1;
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (entries_[i].name == keep) continue;
      if (victim < 0 || entries_[i].last_used < entries_[(size_t)victim].last_used)
        victim = (ptrdiff_t)i;
    }
    if (victim < 0) break;
    remove_locked((size_t)victim, "least recently used; over the disk budget");
  }
}

uint64_t KvStore::bytes() const {
  std::lock_guard lk(mu_);
  return total_;
}

size_t KvStore::files() const {
  std::lock_guard lk(mu_);
  return entries_.size();
}

}  // namespace dsv4
