// libFuzzer target for the session-file loader (state/session_file.h: parse_session), which reads
// the disk KV cache's files and chat's /load. Byte 0, bit 0 set: the rest is taken as it is;
// clear: its last 8 bytes are replaced by the right checksum, so that mutations reach the parser
// behind the checksum. The model is a small fixed config (layers of ratio 0, 4 and 128). The
// contract, checked on every input:
//  * the only exception is dsv4::Error (a clear message), and then the outputs are untouched;
//  * an accepted file has the model's shapes: as many tokens as n_past, ids below n_vocab,
//    0 <= mtp_n_past <= n_past, and every buffer of every layer and of the MTP state of
//    layer_state_extent's size.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "model/state_extent.h"
#include "state/session_file.h"

using namespace dsv4;

namespace {

constexpr uint64_t kFingerprint = 0x5e55105eull;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

ModelConfig fuzz_config() {
  ModelConfig c;
  c.n_layer = 3;
  c.n_vocab = 50;
  c.head_dim = 8;
  c.window = 4;
  c.idx_head_dim = 4;
  c.compress_ratio = {0, 4, 128};
  return c;
}

void check_layer(const LayerState& l, const LayerStateExtent& e) {
  check(l.raw.size() == e.raw && l.comp.size() == e.comp && l.idx.size() == e.idx &&
        l.ckv.size() == e.ckv && l.cscore.size() == e.cscore && l.ikv.size() == e.ikv &&
        l.iscore.size() == e.iscore);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const ModelConfig c = fuzz_config();
  std::vector<uint8_t> bytes(data + 1, data + size);
  if (!(data[0] & 1) && bytes.size() >= 8) {
    const uint64_t sum = session_checksum(bytes.data(), bytes.size() - 8);
    std::memcpy(bytes.data() + bytes.size() - 8, &sum, 8);
  }
  std::vector<int32_t> tokens = {7};
  CpuSession s;
  s.n_past = -5;
  try {
    parse_session("fuzz", bytes, kFingerprint, c, tokens, s);
  } catch (const Error&) {
    check(tokens.size() == 1 && tokens[0] == 7 && s.n_past == -5 && s.layers.empty());
    return 0;
  }
  check((int64_t)tokens.size() == s.n_past);
  for (int32_t t : tokens) check(t >= 0 && (uint32_t)t < c.n_vocab);
  check(s.mtp_n_past >= 0 && s.mtp_n_past <= s.n_past);
  check(s.layers.size() == c.n_layer);
  for (uint32_t l = 0; l < c.n_layer; ++l)
    check_layer(s.layers[l], layer_state_extent(c, c.ratio(l), s.n_past));
  check_layer(s.mtp, layer_state_extent(c, 0, s.mtp_n_past));
  return 0;
}
