// dsv4 pull: the model downloader. Resumable HTTP(S) download of the published GGUF files into
// DIR/<file>.part (Range requests, validated), redirects followed, transient failures retried with
// bounded backoff, size and SHA-256 checked before the .part is renamed atomically to DIR/<file>.
#pragma once
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace dsv4::pull {

// Where antirez publishes the GGUFs (antirez/ds4 download_model.sh:
// REPO="antirez/deepseek-v4-gguf", url="https://huggingface.co/$REPO/resolve/main/$file").
inline constexpr std::string_view kHfRepo = "antirez/deepseek-v4-gguf";
inline constexpr std::string_view kDefaultUrlBase =
    "https://huggingface.co/antirez/deepseek-v4-gguf/resolve/main";

struct ModelEntry {
  std::string_view name;  // what `dsv4 pull NAME` accepts
  std::string_view file;  // the published file name
  std::string_view about;
};

// The downloadable files, in the order `dsv4 pull` lists them.
std::span<const ModelEntry> known_models();
// The entry called `name`; otherwise fails with a message listing every known name.
const ModelEntry& resolve_model(std::string_view name);
// url_base (no trailing slash needed) + "/" + file.
std::string model_url(std::string_view url_base, std::string_view file);

enum class ProgressMode { Auto, Tty, Plain, None };  // Auto: Tty when the log is a terminal

struct PullOptions {
  std::string url;             // full URL of the file
  std::filesystem::path dest;  // final path; the download goes to dest + ".part"
  std::string token;           // bearer token (never sent to another host after a redirect)
  std::string sha256;          // expected SHA-256 (hex); empty: the server's, when it gives one
  int max_retries = 8;         // consecutive failed attempts without progress before giving up
  double backoff_initial_s = 1.0;
  double backoff_max_s = 60.0;
  long connect_timeout_s = 30;
  long stall_timeout_s = 60;  // an attempt fails after this long below 1 KiB/s
  ProgressMode progress = ProgressMode::Auto;
  std::FILE* log = stderr;                    // messages and progress
  const std::atomic<bool>* cancel = nullptr;  // set (e.g. by SIGINT): stop, keep the .part
};

struct PullResult {
  std::filesystem::path path;  // the final file
  uint64_t bytes = 0;          // its size
  std::string sha256;          // hex; empty when the file was already there (not re-hashed)
  bool already_present = false;
  bool sha256_verified = false;  // an expected hash was known and matched
  int attempts = 0;              // HTTP requests made
  uint64_t downloaded = 0;       // body bytes written in this call (after any restart)
};

// Downloads opts.url to opts.dest (see the file comment). If dest already exists it is left
// alone (already_present). Errors are dsv4::Error with the reason; the .part is kept when it can
// be resumed and deleted when it is provably wrong (bigger than the file, or a full-size file
// whose hash differs from the one the server published). Cancellation throws too, leaving the
// .part resumable.
PullResult pull_file(const PullOptions& opts);

// Human-readable helpers, exposed for tests.
std::string format_bytes(uint64_t bytes);     // "1.50 GiB"
std::string format_duration(double seconds);  // "1h02m", "3m07s", "12s"

}  // namespace dsv4::pull
