#include "text/utf8.h"

namespace dsv4::text::utf8 {
namespace {

// Expected total length for a lead byte, 0 for bytes that can never start a sequence.
inline size_t lead_length(uint8_t b) {
  if (b < 0x80) return 1;
  if (b < 0xC2) return 0;  // continuation bytes and the overlong leads C0, C1
  if (b < 0xE0) return 2;
  if (b < 0xF0) return 3;
  if (b < 0xF5) return 4;
  return 0;
}

// Valid range of the second byte for a given lead (the first continuation byte carries the
// overlong / surrogate / >U+10FFFF restrictions).
inline bool second_ok(uint8_t lead, uint8_t b) {
  switch (lead) {
    case 0xE0:
      return b >= 0xA0 && b <= 0xBF;
    case 0xED:
      return b >= 0x80 && b <= 0x9F;
    case 0xF0:
      return b >= 0x90 && b <= 0xBF;
    case 0xF4:
      return b >= 0x80 && b <= 0x8F;
    default:
      return b >= 0x80 && b <= 0xBF;
  }
}

inline bool cont(uint8_t b) {
  return (b & 0xC0) == 0x80;
}

// Length of the maximal prefix of s (starting at a lead byte of expected length `need`) that is
// a valid beginning of a sequence: 1..need.
inline size_t valid_prefix(std::string_view s, size_t need) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t k = 1;
  if (k < s.size() && k < need && second_ok(p[0], p[1])) {
    ++k;
    while (k < s.size() && k < need && cont(p[k])) ++k;
  }
  return k;
}

}  // namespace

size_t valid_sequence_length(std::string_view s) {
  if (s.empty()) return 0;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t need = lead_length(p[0]);
  if (need <= 1) return need;
  return valid_prefix(s, need) == need ? need : 0;
}

bool is_valid(std::string_view s) {
  size_t i = 0;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  while (i < s.size()) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const size_t n = valid_sequence_length(s.substr(i));
    if (n == 0) return false;
    i += n;
  }
  return true;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

char32_t decode(std::string_view s, size_t* len) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = lead_length(p[0]);
  *len = n;
  switch (n) {
    case 1:
      return p[0];
    case 2:
      return (char32_t(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
    case 3:
      return (char32_t(p[0] & 0x0F) << 12) | (char32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    default:
      return (char32_t(p[0] & 0x07) << 18) | (char32_t(p[1] & 0x3F) << 12) |
             (char32_t(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
  }
}

size_t append_lossy(std::string_view in, std::string& out, bool final) {
  const auto* p = reinterpret_cast<const uint8_t*>(in.data());
  size_t i = 0;
  size_t run = 0;  // start of the pending run of valid bytes, copied in one go
  while (i < in.size()) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const size_t need = lead_length(p[i]);
    if (need == 0) {
      out.append(in.data() + run, i - run);
      out.append(kReplacement);
      run = ++i;
      continue;
    }
    const std::string_view rest = in.substr(i);
    const size_t have = valid_prefix(rest, need);
    if (have == need) {
      i += need;
      continue;
    }
    out.append(in.data() + run, i - run);
    if (i + have == in.size() && !final) return i;  // incomplete tail: may still complete
    out.append(kReplacement);                       // maximal subpart, then resync after it
    i += have;
    run = i;
  }
  out.append(in.data() + run, i - run);
  return i;
}

void append_terminal_safe(std::string_view in, std::string& out) {
  for (size_t i = 0; i < in.size();) {
    const auto b = (unsigned char)in[i];
    if (b < 0x20 && b != '\n' && b != '\t') {
      append(out, 0x2400 + b);
      ++i;
    } else if (b == 0x7F) {
      append(out, 0x2421);
      ++i;
    } else if (b == 0xC2 && i + 1 < in.size() && (unsigned char)in[i + 1] >= 0x80 &&
               (unsigned char)in[i + 1] <= 0x9F) {
      out.append(kReplacement);
      i += 2;
    } else {
      out.push_back((char)b);
      ++i;
    }
  }
}

}  // namespace dsv4::text::utf8
