#include "state/session_file.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "model/state_extent.h"

namespace dsv4 {
namespace {

constexpr char kMagic[8] = {'D', 'S', 'V', '4', 'S', 'E', 'S', 'S'};
constexpr uint32_t kVersion = 1;

uint64_t fnv1a(const void* p, size_t n, uint64_t h = 1469598103934665603ull) {
  const auto* b = (const uint8_t*)p;
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

class Out {
 public:
  template <typename T>
  void put(const T& v) {
    bytes(&v, sizeof v);
  }
  void bytes(const void* p, size_t n) {
    if (n == 0) return;  // empty vectors may hand us a null pointer
    // resize + memcpy, not vector::insert: GCC 12 at -O3 reports a false stringop-overflow in
    // the inlined insert (seen in CI's release build).
    const size_t at = buf_.size();
    buf_.resize(at + n);
    std::memcpy(buf_.data() + at, p, n);
  }
  template <typename T>
  void vec(const std::vector<T>& v) {
    put<uint64_t>(v.size());
    bytes(v.data(), v.size() * sizeof(T));
  }
  std::vector<uint8_t>& buf() { return buf_; }

 private:
  std::vector<uint8_t> buf_;
};

class In {
 public:
  In(const std::string& path, const std::vector<uint8_t>& b) : path_(path), b_(b) {}
  template <typename T>
  T get() {
    T v;
    need(sizeof v);
    std::memcpy(&v, b_.data() + off_, sizeof v);
    off_ += sizeof v;
    return v;
  }
  template <typename T>
  std::vector<T> vec() {
    const uint64_t n = get<uint64_t>();
    if (n > (b_.size() - off_) / sizeof(T)) fail("{}: truncated session file", path_);
    std::vector<T> v((size_t)n);
    if (n > 0) std::memcpy(v.data(), b_.data() + off_, (size_t)n * sizeof(T));
    off_ += (size_t)n * sizeof(T);
    return v;
  }
  void need(size_t n) {
    if (b_.size() - off_ < n) fail("{}: truncated session file", path_);
  }
  size_t offset() const { return off_; }

 private:
  const std::string& path_;
  const std::vector<uint8_t>& b_;
  size_t off_ = 0;
};

void put_layer(Out& o, const LayerState& l) {
  o.vec(l.raw);
  o.vec(l.comp);
  o.vec(l.idx);
  o.vec(l.ckv);
  o.vec(l.cscore);
  o.vec(l.ikv);
  o.vec(l.iscore);
}
LayerState get_layer(In& in) {
  LayerState l;
  l.raw = in.vec<float>();
  l.comp = in.vec<float>();
  l.idx = in.vec<float>();
  l.ckv = in.vec<float>();
  l.cscore = in.vec<float>();
  l.ikv = in.vec<float>();
  l.iscore = in.vec<float>();
  return l;
}

// Names the first buffer of `st` whose size is not `e`'s.
void check_layer(const std::string& path, const std::string& what, const LayerState& st,
                 const LayerStateExtent& e) {
  const struct {
    const char* name;
    size_t found, expected;
  } bufs[] = {{"raw", st.raw.size(), e.raw},          {"comp", st.comp.size(), e.comp},
              {"idx", st.idx.size(), e.idx},          {"ckv", st.ckv.size(), e.ckv},
              {"cscore", st.cscore.size(), e.cscore}, {"ikv", st.ikv.size(), e.ikv},
              {"iscore", st.iscore.size(), e.iscore}};
  for (const auto& b : bufs)
    if (b.found != b.expected)
      fail("{}: {} buffer {} has {} floats, expected {}", path, what, b.name, b.found, b.expected);
}

}  // namespace

uint64_t model_fingerprint(const Model& m) {
  uint64_t h = fnv1a(m.cfg.compress_ratio.data(), m.cfg.compress_ratio.size() * 4);
  const uint32_t dims[] = {m.cfg.n_layer,  m.cfg.n_embd,   m.cfg.n_vocab,  m.cfg.n_head,
                           m.cfg.head_dim, m.cfg.n_expert, m.cfg.idx_topk, m.cfg.window};
  h = fnv1a(dims, sizeof dims, h);
  for (const auto& t : m.file->tensors()) {
    h = fnv1a(t.name.data(), t.name.size(), h);
    h = fnv1a(&t.nbytes, sizeof t.nbytes, h);
  }
  return h;
}

void save_session(const std::string& path, uint64_t fingerprint, const std::vector<int32_t>& tokens,
                  const CpuSession& s) {
  Out o;
  o.bytes(kMagic, sizeof kMagic);
  o.put(kVersion);
  o.put(fingerprint);
  o.put<int64_t>(s.n_past);
  o.put<int64_t>(s.mtp_n_past);
  o.vec(tokens);
  o.put<uint64_t>(s.layers.size());
  for (const auto& l : s.layers) put_layer(o, l);
  put_layer(o, s.mtp);
  const uint64_t sum = fnv1a(o.buf().data(), o.buf().size());
  o.put(sum);
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail("{}: cannot create: {}", path, std::strerror(errno));
  bool ok = std::fwrite(o.buf().data(), 1, o.buf().size(), f) == o.buf().size();
  ok = (std::fflush(f) == 0) && ok && (fsync(fileno(f)) == 0);
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail("{}: write failed; the previous file (if any) is unchanged", path);
  }
}

uint64_t session_checksum(const uint8_t* p, size_t n) {
  return fnv1a(p, n);
}

void load_session(const std::string& path, uint64_t fingerprint, const ModelConfig& c,
                  std::vector<int32_t>& tokens, CpuSession& s) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("{}: cannot open", path);
  const std::vector<uint8_t> b((std::istreambuf_iterator<char>(f)),
                               std::istreambuf_iterator<char>());
  parse_session(path, b, fingerprint, c, tokens, s);
}

void parse_session(const std::string& path, const std::vector<uint8_t>& b, uint64_t fingerprint,
                   const ModelConfig& c, std::vector<int32_t>& tokens, CpuSession& s) {
  if (b.size() < sizeof kMagic + 8 || std::memcmp(b.data(), kMagic, sizeof kMagic) != 0)
    fail("{}: not a dsv4 session file", path);
  uint64_t stored;
  std::memcpy(&stored, b.data() + b.size() - 8, 8);
  if (fnv1a(b.data(), b.size() - 8) != stored) fail("{}: checksum mismatch (corrupt file)", path);
  In in(path, b);
  for (size_t i = 0; i < sizeof kMagic; ++i) in.get<char>();
  const uint32_t version = in.get<uint32_t>();
  if (version != kVersion)
    fail("{}: session format version {} (this build reads {})", path, version, kVersion);
  if (in.get<uint64_t>() != fingerprint) fail("{}: saved with a different model", path);
  CpuSession out;
  out.n_past = in.get<int64_t>();
  out.mtp_n_past = in.get<int64_t>();
  std::vector<int32_t> toks = in.vec<int32_t>();
  // The token list is bounded by the file's size, so once n_past equals its length the
  // extents below are bounded too.
  if (out.n_past < 0) fail("{}: negative n_past {}", path, out.n_past);
  if ((int64_t)toks.size() != out.n_past)
    fail("{}: {} tokens but n_past is {}", path, toks.size(), out.n_past);
  // The MTP block runs on the main model's final states, so it can never be ahead of it.
  if (out.mtp_n_past < 0 || out.mtp_n_past > out.n_past)
    fail("{}: mtp_n_past {} is outside [0, n_past = {}]", path, out.mtp_n_past, out.n_past);
  for (size_t i = 0; i < toks.size(); ++i)
    if (toks[i] < 0 || (uint32_t)toks[i] >= c.n_vocab)
      fail("{}: token {} has id {}, outside the vocabulary of {}", path, i, toks[i], c.n_vocab);
  const uint64_t n_layers = in.get<uint64_t>();
  if (n_layers != c.n_layer) fail("{}: {} layers, model has {}", path, n_layers, c.n_layer);
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    out.layers.push_back(get_layer(in));
    check_layer(path, fmt::format("layer {}", l), out.layers.back(),
                layer_state_extent(c, c.ratio(l), out.n_past));
  }
  out.mtp = get_layer(in);
  check_layer(path, "MTP", out.mtp, layer_state_extent(c, 0, out.mtp_n_past));
  if (const size_t sum_at = b.size() - 8; in.offset() != sum_at)
    fail("{}: the state ends at byte {} but the checksum starts at byte {}", path, in.offset(),
         sum_at);
  tokens = std::move(toks);
  s = std::move(out);
}

}  // namespace dsv4
