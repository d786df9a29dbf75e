#include "state/session_file.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

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
    const auto* b = (const uint8_t*)p;
    buf_.insert(buf_.end(), b, b + n);
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

void load_session(const std::string& path, uint64_t fingerprint, std::vector<int32_t>& tokens,
                  CpuSession& s) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("{}: cannot open", path);
  std::vector<uint8_t> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
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
  const uint64_t n_layers = in.get<uint64_t>();
  if (n_layers != s.layers.size())
    fail("{}: {} layers, model has {}", path, n_layers, s.layers.size());
  for (uint64_t l = 0; l < n_layers; ++l) {
    LayerState st = get_layer(in);
    const LayerState& ref = s.layers[l];
    if (st.raw.size() != ref.raw.size() || st.ckv.size() != ref.ckv.size() ||
        st.ikv.size() != ref.ikv.size())
      fail("{}: layer {} state has the wrong shape", path, l);
    out.layers.push_back(std::move(st));
  }
  out.mtp = get_layer(in);
  if ((int64_t)toks.size() != out.n_past) fail("{}: token count does not match the state", path);
  tokens = std::move(toks);
  s = std::move(out);
}

}  // namespace dsv4
