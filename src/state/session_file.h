// Session snapshots on disk: the tokens fed so far and the whole CPU session state (raw windows,
// compressed and indexer rows, compressor frontiers). Versioned and checksummed; written
// atomically (temp file + rename), so a failed save leaves the previous file intact.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/cpu_forward.h"

namespace dsv4 {

// Identifies the model a snapshot belongs to (dimensions and tensor bytes).
uint64_t model_fingerprint(const Model& m);

void save_session(const std::string& path, uint64_t fingerprint, const std::vector<int32_t>& tokens,
                  const CpuSession& s);
// Throws naming the path and the problem (not a session file, other version, other model,
// truncated, checksum mismatch); `tokens` and `s` are only written on success.
void load_session(const std::string& path, uint64_t fingerprint, std::vector<int32_t>& tokens,
                  CpuSession& s);

}  // namespace dsv4
