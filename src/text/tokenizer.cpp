#include "text/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <mutex>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "gguf/gguf.h"
#include "text/utf8.h"

namespace dsv4::text {
namespace {

struct ByteTable {
  std::array<char32_t, 256> to_cp{};
  std::array<int16_t, 0x144> from_cp{};  // every mapped code point is < U+0144
  ByteTable() {
    from_cp.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      to_cp[b] = printable ? char32_t(b) : char32_t(256 + extra++);
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};
const ByteTable& byte_table() {
  static const ByteTable t;
  return t;
}

struct StrHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using StrMap = std::unordered_map<std::string_view, int32_t, StrHash, std::equal_to<>>;

// (left id, right id) -> (rank, merged id), open addressing.
class MergeTable {
 public:
  struct Entry {
    uint64_t key = kEmpty;
    int32_t rank = 0;
    int32_t merged = 0;
  };
  static constexpr uint64_t kEmpty = std::numeric_limits<uint64_t>::max();

  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    slots_.assign(cap, Entry{});
    mask_ = cap - 1;
  }
  // Later entries with the same pair replace earlier ones, as in HF tokenizers and
  // transformers.js (both build the rank map from the list in order).
  void put(int32_t left, int32_t right, int32_t rank, int32_t merged) {
    const uint64_t key = make_key(left, right);
    for (size_t i = hash(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty || slots_[i].key == key) {
        slots_[i] = Entry{key, rank, merged};
        return;
      }
    }
  }
  const Entry* find(int32_t left, int32_t right) const {
    const uint64_t key = make_key(left, right);
    for (size_t i = hash(key);; i = (i + 1) & mask_) {
      const Entry& e = slots_[i];
      if (e.key == key) return &e;
      if (e.key == kEmpty) return nullptr;
    }
  }

 private:
  static uint64_t make_key(int32_t l, int32_t r) {
    return (uint64_t(uint32_t(l)) << 32) | uint32_t(r);
  }
  size_t hash(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> 17) & mask_; }
  std::vector<Entry> slots_;
  size_t mask_ = 0;
};

// Bounded piece -> ids cache: a 2-way set-associative table of fixed-size slots (no allocation
// after construction, no rehashing). A hit moves the entry to the first way; an insert into a
// full set evicts the second way (least recently used of the two). Pieces longer than kMaxKey
// bytes or with more than kMaxIds tokens are not cached. Guarded by one mutex: a lookup holds it
// for a few dozen nanoseconds.
class PieceCache {
 public:
  static constexpr size_t kMaxKey = 22;
  static constexpr size_t kMaxIds = 8;
  static constexpr size_t kSets = size_t(1) << 15;  // 2 x 32768 slots x 64 bytes = 4 MiB

  PieceCache() : slots_(kSets * 2) {}

  static uint64_t hash(std::string_view s) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xFF51AFD7ED558CCDull);
    size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
      h ^= h >> 29;
    }
    uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 32;
    return h | 1;  // 0 marks an empty slot
  }

  bool lookup(std::string_view piece, uint64_t h, std::vector<int32_t>& out) {
    Slot* set = &slots_[(h & (kSets - 1)) * 2];
    std::lock_guard lock(mu_);
    for (int way = 0; way < 2; ++way) {
      Slot& s = set[way];
      if (s.hash == h && s.key_len == piece.size() &&
          std::memcmp(s.key, piece.data(), piece.size()) == 0) {
        out.insert(out.end(), s.ids, s.ids + s.n_ids);
        if (way == 1) std::swap(set[0], set[1]);
        ++hits_;
        return true;
      }
    }
    ++misses_;
    return false;
  }

  void insert(std::string_view piece, uint64_t h, std::span<const int32_t> ids) {
    if (piece.size() > kMaxKey || ids.size() > kMaxIds) return;
    Slot* set = &slots_[(h & (kSets - 1)) * 2];
    std::lock_guard lock(mu_);
    set[1] = set[0];
    Slot& s = set[0];
    s.hash = h;
    s.key_len = static_cast<uint8_t>(piece.size());
    s.n_ids = static_cast<uint8_t>(ids.size());
    std::memcpy(s.key, piece.data(), piece.size());
    std::copy(ids.begin(), ids.end(), s.ids);
  }

  std::pair<uint64_t, uint64_t> stats() {
    std::lock_guard lock(mu_);
    return {hits_, misses_};
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint8_t key_len = 0;
    uint8_t n_ids = 0;
    char key[kMaxKey];
    int32_t ids[kMaxIds];
  };
  static_assert(sizeof(Slot) == 64);
  std::vector<Slot> slots_;
  std::mutex mu_;
  uint64_t hits_ = 0, misses_ = 0;
};

// Byte trie over the added-token strings, for leftmost-longest matching.
class SpecialTrie {
 public:
  SpecialTrie() { nodes_.emplace_back(); }
  void add(std::string_view s, int32_t id) {
    if (s.empty()) return;
    uint32_t n = 0;
    for (unsigned char c : s) {
      uint32_t child = find_child(n, c);
      if (child == 0) {
        child = static_cast<uint32_t>(nodes_.size());
        nodes_.emplace_back();
        nodes_[n].kids.emplace_back(c, child);
      }
      n = child;
    }
    nodes_[n].token = id;
    first_[static_cast<unsigned char>(s[0])] = true;
  }
  bool can_start(unsigned char c) const { return first_[c]; }
  // Longest token matching at the start of `s`: (id, length) or (-1, 0).
  std::pair<int32_t, size_t> longest(std::string_view s) const {
    std::pair<int32_t, size_t> best{-1, 0};
    uint32_t n = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      n = find_child(n, static_cast<unsigned char>(s[i]));
      if (n == 0) break;
      if (nodes_[n].token >= 0) best = {nodes_[n].token, i + 1};
    }
    return best;
  }

 private:
  struct Node {
    int32_t token = -1;
    std::vector<std::pair<unsigned char, uint32_t>> kids;
  };
  uint32_t find_child(uint32_t n, unsigned char c) const {
    for (const auto& [k, child] : nodes_[n].kids) {
      if (k == c) return child;
    }
    return 0;
  }
  std::vector<Node> nodes_;
  std::array<bool, 256> first_{};
};

bool type_is_special(TokenType t) {
  return t == TokenType::Control || t == TokenType::UserDefined || t == TokenType::Unused;
}

}  // namespace

char32_t byte_to_codepoint(uint8_t b) {
  return byte_table().to_cp[b];
}

int byte_from_codepoint(char32_t cp) {
  return cp < byte_table().from_cp.size() ? byte_table().from_cp[cp] : -1;
}

struct Tokenizer::Impl {
  std::vector<std::string> tokens;
  std::vector<std::string> bytes;  // decoded bytes per token
  std::vector<TokenType> types;
  StrMap token_ids;    // every token string -> id (first id wins on duplicates)
  StrMap special_ids;  // added tokens only
  SpecialTrie trie;
  MergeTable merges;
  std::array<int32_t, 256> byte_ids{};
  PreTokenizer pre;
  mutable PieceCache cache;
  ChatTokens chat;
  bool has_chat = false;
  std::string missing_chat;  // names of missing chat tokens, for the error message

  static constexpr size_t kSmallPiece = 48;  // quadratic scan below, heap above

  void bpe_small(const uint8_t* p, size_t n, std::vector<int32_t>& out) const;
  void bpe_heap(const uint8_t* p, size_t n, std::vector<int32_t>& out) const;
  void bpe(std::string_view piece, std::vector<int32_t>& out) const {
    const auto* p = reinterpret_cast<const uint8_t*>(piece.data());
    if (piece.size() == 1) {
      out.push_back(byte_ids[p[0]]);
    } else if (piece.size() <= kSmallPiece) {
      bpe_small(p, piece.size(), out);
    } else {
      bpe_heap(p, piece.size(), out);
    }
  }
  void encode_plain(std::string_view text, std::vector<int32_t>& out) const;
};

void Tokenizer::Impl::bpe_small(const uint8_t* p, size_t n, std::vector<int32_t>& out) const {
  constexpr int32_t kNone = std::numeric_limits<int32_t>::max();
  std::array<int32_t, kSmallPiece> ids;
  std::array<int32_t, kSmallPiece> ranks;   // ranks[i]: pair (i, i+1)
  std::array<int32_t, kSmallPiece> merged;  // merged[i]: id of the merged pair (i, i+1)
  for (size_t i = 0; i < n; ++i) ids[i] = byte_ids[p[i]];
  auto score = [&](size_t i) {
    const MergeTable::Entry* e = merges.find(ids[i], ids[i + 1]);
    ranks[i] = e ? e->rank : kNone;
    merged[i] = e ? e->merged : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) score(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i) {
      if (ranks[i] < ranks[best]) best = i;
    }
    if (ranks[best] == kNone) break;
    ids[best] = merged[best];
    for (size_t i = best + 1; i + 1 < n; ++i) ids[i] = ids[i + 1];
    for (size_t i = best + 1; i + 2 < n; ++i) {
      ranks[i] = ranks[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (best > 0) score(best - 1);
    if (best + 1 < n) score(best);
  }
  out.insert(out.end(), ids.begin(), ids.begin() + static_cast<ptrdiff_t>(n));
}

void Tokenizer::Impl::bpe_heap(const uint8_t* p, size_t n, std::vector<int32_t>& out) const {
  struct Node {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  struct Cand {
    int32_t rank;
    int32_t pos;  // index of the left node
    int32_t left;
    int32_t right;
    int32_t merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Node> nodes(n);
  for (size_t i = 0; i < n; ++i) {
    nodes[i] = {byte_ids[p[i]], static_cast<int32_t>(i) - 1,
                i + 1 < n ? static_cast<int32_t>(i + 1) : -1};
  }
  std::vector<Cand> storage;
  storage.reserve(n);
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap(std::greater<Cand>{},
                                                                        std::move(storage));
  auto push = [&](int32_t pos) {
    const int32_t nx = nodes[pos].next;
    if (nx < 0) return;
    if (const MergeTable::Entry* e = merges.find(nodes[pos].id, nodes[nx].id)) {
      heap.push({e->rank, pos, nodes[pos].id, nodes[nx].id, e->merged});
    }
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Node& left = nodes[c.pos];
    // Stale candidates: the left node was consumed or changed, or its right neighbour did.
    if (left.id != c.left || left.next < 0 || nodes[left.next].id != c.right) continue;
    const int32_t right = left.next;
    left.id = c.merged;
    left.next = nodes[right].next;
    if (left.next >= 0) nodes[left.next].prev = c.pos;
    nodes[right].id = -1;
    if (left.prev >= 0) push(left.prev);
    push(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = nodes[i].next) out.push_back(nodes[i].id);
}

void Tokenizer::Impl::encode_plain(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::vector<Span> spans;
  pre.split(text, spans);
  std::vector<int32_t> tmp;
  for (const Span& s : spans) {
    const std::string_view piece = text.substr(s.begin, s.end - s.begin);
    if (piece.size() == 1) {
      out.push_back(byte_ids[static_cast<uint8_t>(piece[0])]);
      continue;
    }
    if (piece.size() > PieceCache::kMaxKey) {
      bpe(piece, out);
      continue;
    }
    const uint64_t h = PieceCache::hash(piece);
    if (cache.lookup(piece, h, out)) continue;
    tmp.clear();
    bpe(piece, tmp);
    cache.insert(piece, h, tmp);
    out.insert(out.end(), tmp.begin(), tmp.end());
  }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_vocab(Vocab vocab, bool require_chat_tokens) {
  auto impl = std::make_unique<Impl>();
  Impl& t = *impl;
  const size_t n = vocab.tokens.size();
  if (n == 0) fail("tokenizer: the vocabulary is empty");
  if (n > size_t(std::numeric_limits<int32_t>::max())) {
    fail("tokenizer: {} tokens is more than an int32 id can address", n);
  }
  if (!vocab.token_types.empty() && vocab.token_types.size() != n) {
    fail("tokenizer: token_type has {} entries but there are {} tokens", vocab.token_types.size(),
         n);
  }
  t.tokens = std::move(vocab.tokens);
  t.token_ids.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    if (t.tokens[i].empty()) fail("tokenizer: token {} is the empty string", i);
    t.token_ids.emplace(t.tokens[i], static_cast<int32_t>(i));  // keeps the first on duplicates
  }

  // The 256 byte symbols every byte-level BPE vocabulary must have.
  for (int b = 0; b < 256; ++b) {
    std::string sym;
    utf8::append(sym, byte_to_codepoint(static_cast<uint8_t>(b)));
    auto it = t.token_ids.find(std::string_view(sym));
    if (it == t.token_ids.end()) {
      fail("tokenizer: the vocabulary lacks the byte token for 0x{:02X} (\"{}\")", b, sym);
    }
    t.byte_ids[b] = it->second;
  }

  // Merges: "left right" with a single ASCII space; both parts and their concatenation must be
  // tokens.
  std::vector<bool> reachable(n, false);
  for (int b = 0; b < 256; ++b) reachable[t.byte_ids[b]] = true;
  t.merges.reserve(vocab.merges.size());
  std::string joined;
  for (size_t r = 0; r < vocab.merges.size(); ++r) {
    const std::string& m = vocab.merges[r];
    const size_t sp = m.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 >= m.size() ||
        m.find(' ', sp + 1) != std::string::npos) {
      fail("tokenizer: merge {} (\"{}\") is not of the form \"left right\"", r, m);
    }
    const std::string_view l(m.data(), sp), rt(m.data() + sp + 1, m.size() - sp - 1);
    auto li = t.token_ids.find(l), ri = t.token_ids.find(rt);
    joined.assign(l);
    joined.append(rt);
    auto mi = t.token_ids.find(std::string_view(joined));
    if (li == t.token_ids.end() || ri == t.token_ids.end() || mi == t.token_ids.end()) {
      fail("tokenizer: merge {} (\"{}\") names a token that is not in the vocabulary", r, m);
    }
    t.merges.put(li->second, ri->second, static_cast<int32_t>(r), mi->second);
    reachable[mi->second] = true;
  }

  // Token types: from the file, else derived (added = unreachable by BPE).
  t.types.resize(n);
  for (size_t i = 0; i < n; ++i) {
    if (!vocab.token_types.empty()) {
      const int32_t v = vocab.token_types[i];
      if (v < 0 || v > 6) fail("tokenizer: token {} has unknown token_type {}", i, v);
      t.types[i] = static_cast<TokenType>(v);
    } else {
      t.types[i] = reachable[i] ? TokenType::Normal : TokenType::Control;
    }
  }

  // Chat tokens by string; they are special whatever the type table says.
  auto resolve = [&](std::string_view s, int32_t& id) {
    auto it = t.token_ids.find(s);
    if (it == t.token_ids.end()) {
      if (!t.missing_chat.empty()) t.missing_chat += ", ";
      t.missing_chat += s;
      return;
    }
    id = it->second;
    if (!type_is_special(t.types[id])) t.types[id] = TokenType::Control;
  };
  resolve(special::kBos, t.chat.bos);
  resolve(special::kEos, t.chat.eos);
  resolve(special::kUser, t.chat.user);
  resolve(special::kAssistant, t.chat.assistant);
  resolve(special::kThinkStart, t.chat.think_start);
  resolve(special::kThinkEnd, t.chat.think_end);
  resolve(special::kDsml, t.chat.dsml);
  t.has_chat = t.missing_chat.empty();
  if (require_chat_tokens && !t.has_chat) {
    fail("tokenizer: the vocabulary lacks the chat token(s) {}", t.missing_chat);
  }

  // Added tokens: lookup table, trie, and their bytes verbatim. Normal tokens decode through the
  // inverse byte map; a token with a code point outside it decodes to its raw string (what HF's
  // ByteLevel decoder does).
  t.bytes.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& s = t.tokens[i];
    if (type_is_special(t.types[i])) {
      t.special_ids.emplace(s, static_cast<int32_t>(i));
      t.trie.add(s, static_cast<int32_t>(i));
      t.bytes[i] = s;
      continue;
    }
    std::string out;
    bool ok = utf8::is_valid(s);
    for (size_t k = 0; ok && k < s.size();) {
      size_t len = 0;
      const int b = byte_from_codepoint(utf8::decode(std::string_view(s).substr(k), &len));
      if (b < 0) ok = false;
      out.push_back(static_cast<char>(b));
      k += len;
    }
    t.bytes[i] = ok ? std::move(out) : s;
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_gguf(const gguf::File& file) {
  const std::string where = file.path();
  if (file.find("tokenizer.ggml.model") != nullptr) {
    const std::string model = file.get_string("tokenizer.ggml.model");
    if (model != "gpt2") {
      fail("{}: tokenizer.ggml.model is \"{}\"; only byte-level BPE (\"gpt2\") is supported", where,
           model);
    }
  }
  if (file.find("tokenizer.ggml.pre") != nullptr) {
    const std::string pre = file.get_string("tokenizer.ggml.pre");
    if (pre != "joyai-llm" && pre != "deepseek-v3") {
      fail(
          "{}: tokenizer.ggml.pre is \"{}\"; this tokenizer implements DeepSeek V3/V4's "
          "pre-tokenizer (\"joyai-llm\" or \"deepseek-v3\")",
          where, pre);
    }
  }
  if (file.find("tokenizer.ggml.tokens") == nullptr) {
    fail("{}: missing key tokenizer.ggml.tokens", where);
  }
  if (file.find("tokenizer.ggml.merges") == nullptr) {
    fail("{}: missing key tokenizer.ggml.merges", where);
  }
  Vocab v;
  v.tokens = file.get_string_array("tokenizer.ggml.tokens");
  v.merges = file.get_string_array("tokenizer.ggml.merges");
  if (file.find("tokenizer.ggml.token_type") != nullptr) {
    const std::vector<int64_t> types = file.get_int_array("tokenizer.ggml.token_type");
    v.token_types.reserve(types.size());
    for (size_t i = 0; i < types.size(); ++i) {
      if (types[i] < 0 || types[i] > 6) {
        fail("{}: tokenizer.ggml.token_type[{}] = {} is not a token type", where, i, types[i]);
      }
      v.token_types.push_back(static_cast<int32_t>(types[i]));
    }
  }
  Tokenizer tok = [&] {
    try {
      return from_vocab(std::move(v), true);
    } catch (const Error& e) {
      fail("{}: {}", where, e.what());
    }
  }();
  const ChatTokens& chat = tok.chat_tokens();
  auto check_id = [&](std::string_view key, int32_t expect, std::string_view what) {
    if (file.find(key) == nullptr) return;
    const uint64_t id = file.get_uint(key);
    if (id != uint64_t(expect)) {
      fail("{}: {} = {} but the {} string \"{}\" is token {}", where, key, id,
           key.find("bos") != std::string_view::npos ? "BOS" : "EOS", what, expect);
    }
  };
  check_id("tokenizer.ggml.bos_token_id", chat.bos, special::kBos);
  check_id("tokenizer.ggml.eos_token_id", chat.eos, special::kEos);
  return tok;
}

size_t Tokenizer::n_vocab() const {
  return impl_->tokens.size();
}

void Tokenizer::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  impl_->encode_plain(text, out);
}

std::vector<int32_t> Tokenizer::encode_text(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  impl_->encode_plain(text, out);
  return out;
}

void Tokenizer::encode_with_specials(std::string_view text, std::vector<int32_t>& out) const {
  const Impl& t = *impl_;
  size_t start = 0;  // start of the pending plain stretch
  for (size_t i = 0; i < text.size();) {
    if (!t.trie.can_start(static_cast<unsigned char>(text[i]))) {
      ++i;
      continue;
    }
    const auto [id, len] = t.trie.longest(text.substr(i));
    if (id < 0) {
      ++i;
      continue;
    }
    t.encode_plain(text.substr(start, i - start), out);
    out.push_back(id);
    i += len;
    start = i;
  }
  t.encode_plain(text.substr(start), out);
}

std::vector<int32_t> Tokenizer::encode_with_specials(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  encode_with_specials(text, out);
  return out;
}

std::optional<int32_t> Tokenizer::find_token(std::string_view token) const {
  auto it = impl_->token_ids.find(token);
  if (it == impl_->token_ids.end()) return std::nullopt;
  return it->second;
}

std::optional<int32_t> Tokenizer::find_special(std::string_view s) const {
  auto it = impl_->special_ids.find(s);
  if (it == impl_->special_ids.end()) return std::nullopt;
  return it->second;
}

int32_t Tokenizer::special_id(std::string_view s) const {
  if (auto id = find_special(s)) return *id;
  fail("tokenizer: the vocabulary has no special token \"{}\"", s);
}

bool Tokenizer::is_special(int32_t id) const {
  return type_is_special(token_type(id));
}

TokenType Tokenizer::token_type(int32_t id) const {
  if (id < 0 || size_t(id) >= impl_->types.size()) {
    fail("tokenizer: token id {} is out of range (vocabulary of {})", id, impl_->types.size());
  }
  return impl_->types[id];
}

const ChatTokens& Tokenizer::chat_tokens() const {
  if (!impl_->has_chat) {
    fail("tokenizer: the vocabulary lacks the chat token(s) {}", impl_->missing_chat);
  }
  return impl_->chat;
}

std::string_view Tokenizer::token_string(int32_t id) const {
  if (id < 0 || size_t(id) >= impl_->tokens.size()) {
    fail("tokenizer: token id {} is out of range (vocabulary of {})", id, impl_->tokens.size());
  }
  return impl_->tokens[id];
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || size_t(id) >= impl_->bytes.size()) {
    fail("tokenizer: token id {} is out of range (vocabulary of {})", id, impl_->bytes.size());
  }
  return impl_->bytes[id];
}

std::string Tokenizer::decode_bytes(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (skip_special && is_special(id)) continue;
    out.append(token_bytes(id));
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const std::string raw = decode_bytes(ids, skip_special);
  std::string out;
  out.reserve(raw.size());
  utf8::append_lossy(raw, out, true);
  return out;
}

const PreTokenizer& Tokenizer::pre_tokenizer() const {
  return impl_->pre;
}

void Tokenizer::bpe_piece_for_test(std::string_view piece, std::vector<int32_t>& out,
                                   int algorithm) const {
  const auto* p = reinterpret_cast<const uint8_t*>(piece.data());
  if (piece.empty()) return;
  if (algorithm == 1 && piece.size() <= Impl::kSmallPiece) {
    impl_->bpe_small(p, piece.size(), out);
  } else if (algorithm == 2) {
    impl_->bpe_heap(p, piece.size(), out);
  } else {
    impl_->bpe(piece, out);
  }
}

std::pair<uint64_t, uint64_t> Tokenizer::cache_stats() const {
  return impl_->cache.stats();
}

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(&tok), skip_special_(skip_special) {}

void StreamDecoder::push(int32_t id, std::string& out) {
  if (skip_special_ && tok_->is_special(id)) return;
  pending_.append(tok_->token_bytes(id));
  const size_t used = utf8::append_lossy(pending_, out, false);
  pending_.erase(0, used);
}

std::string StreamDecoder::push(int32_t id) {
  std::string out;
  push(id, out);
  return out;
}

void StreamDecoder::finish(std::string& out) {
  utf8::append_lossy(pending_, out, true);
  pending_.clear();
}

std::string StreamDecoder::finish() {
  std::string out;
  finish(out);
  return out;
}

}  // namespace dsv4::text
