// The disk KV store (spec/SERVER.md §5, without ds4's bugs of §9.2.4-6): session snapshots
// (state/session_file.h: versioned, checksummed, written atomically) kept in one directory under
// a byte budget, found by the longest token prefix of a prompt.
//
//  * File names: 16 lower-case hex digits of a 64-bit FNV-1a hash of the model fingerprint and
//    the token ids, then ".kv". Nothing a client wrote ever names a file.
//  * An in-memory index (tokens, size, last use) is built once, at start-up, by reading only the
//    header of each file (magic, version, model fingerprint, token count and tokens). Files
//    with a bad header, another model's fingerprint, another format version, a truncated body or
//    a name that does not match their tokens are logged (stderr) and removed, as are temporary
//    files a crash left behind. Other file names are left alone.
//  * lookup: the longest stored token sequence that is a prefix of the prompt (and no longer than
//    a limit). A file that fails to load (checksum, truncation...) is logged and removed, and the
//    next-longest candidate is tried.
//  * Budget: after every save, least recently used files go (the new one is kept unless it alone
//    exceeds the budget). Last use is the file's mtime, refreshed on every hit.
// Thread-safe (one mutex); loading and saving happen under it.
#pragma once
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "model/cpu_forward.h"

namespace dsv4 {

class KvStore {
 public:
  // Creates `dir` if needed and scans it. `fingerprint` (model_fingerprint) and `cfg` describe
  // the model: the first keys and filters the files, the second gives the state shapes loads
  // are checked against. Throws dsv4::Error when the directory cannot be created or read.
  KvStore(std::string dir, uint64_t budget_bytes, uint64_t fingerprint, ModelConfig cfg);

  // The length of the longest stored sequence that is a prefix of `prompt` and has at most
  // `max_len` tokens (0 when none).
  size_t longest_prefix(std::span<const int32_t> prompt, size_t max_len) const;

  // Loads the longest stored prefix of `prompt` with at most `max_len` tokens into `tokens` /
  // `sess` (replacing what `sess` held). Files that fail to load (load_session: checksum,
  // truncation, any state size that is not the model's) are removed and the next candidate is
  // tried. Returns the number of tokens loaded (0: nothing loaded, `tokens` and `sess`
  // untouched).
  size_t load_longest(std::span<const int32_t> prompt, size_t max_len, std::vector<int32_t>& tokens,
                      CpuSession& sess);

  // Saves a snapshot of `tokens` / `sess` (sess.n_past == tokens.size()), then evicts. Returns
  // false (and logs) when the file would not fit the budget or the write failed. A sequence
  // already stored is not written again (its last use is refreshed).
  bool save(const std::vector<int32_t>& tokens, const CpuSession& sess);
  bool contains(std::span<const int32_t> tokens) const;

  uint64_t bytes() const;
  size_t files() const;
  const std::string& dir() const { return dir_; }
  // The file name a token sequence is stored under (no directory).
  std::string file_name(std::span<const int32_t> tokens) const;

 private:
  struct Entry {
    std::string name;
    std::vector<int32_t> tokens;
    uint64_t bytes = 0;
    uint64_t last_used = 0;  // nanoseconds (file mtime)
  };
  void scan();
  void evict_locked(const std::string& keep);
  void remove_locked(size_t i, const char* why);
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  std::string dir_;
  uint64_t budget_;
  uint64_t fp_;
  ModelConfig cfg_;
  mutable std::mutex mu_;
  std::vector<Entry> entries_;
  uint64_t total_ = 0;
};

}  // namespace dsv4
