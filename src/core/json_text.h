// Guarding nlohmann::json against NUL bytes in JSON text from outside.
#pragma once
#include <string_view>

namespace dsv4 {

// nlohmann::json's lexer takes a NUL byte for the end of its input, so parse("{}\0junk") returns
// {} and accept("0\0junk") is true: whatever follows the NUL is silently dropped. No valid JSON
// text contains a NUL byte (raw control characters are not allowed inside strings either), so
// text from clients, files or the model is checked with this before it is parsed.
inline size_t nul_byte_offset(std::string_view s) {
  return s.find('\0');
}
inline bool has_nul_byte(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

}  // namespace dsv4
