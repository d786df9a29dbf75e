// Session snapshots on disk: the tokens fed so far and the whole CPU session state (raw windows,
// compressed and indexer rows, compressor frontiers). Versioned and checksummed; written
// atomically (temp file + rename), so a failed save leaves the previous file intact.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/cpu_forward.h"

namespace dsv4 {

// Identifies the model a snapshot belongs to (dimensions and tensor bytes).
uint64_t model_fingerprint(const Model& m);

void save_session(const std::string& path, uint64_t fingerprint, const std::vector<int32_t>& tokens,
                  const CpuSession& s);
// Reads a snapshot of the model of config `c` into `tokens` / `s` (whatever `s` held before is
// replaced). The checksum only detects accidents, so every count is checked too: n_past equals
// the token count, 0 <= mtp_n_past <= n_past, token ids are in the vocabulary, the layer count,
// every buffer of every layer and of the MTP block has its layer_state_extent size, and the
// state ends where the checksum begins. Throws naming the path and the problem (not a session
// file, other version, other model, truncated, checksum mismatch; for a size: the layer or
// "MTP", the buffer, found and expected floats); `tokens` and `s` are only written on success.
void load_session(const std::string& path, uint64_t fingerprint, const ModelConfig& c,
                  std::vector<int32_t>& tokens, CpuSession& s);
// load_session on a file's bytes already in memory (`path` only names it in errors).
void parse_session(const std::string& path, const std::vector<uint8_t>& bytes, uint64_t fingerprint,
                   const ModelConfig& c, std::vector<int32_t>& tokens, CpuSession& s);
// The checksum a session file ends with: of every byte before it.
uint64_t session_checksum(const uint8_t* p, size_t n);

}  // namespace dsv4
