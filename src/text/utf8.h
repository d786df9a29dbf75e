// UTF-8 helpers for the tokenizer: validation, code point decoding and encoding, and lossy
// repair with U+FFFD that works on a stream (an incomplete trailing sequence is held back until
// the next bytes show whether it completes).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dsv4::text::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the well-formed UTF-8 sequence starting at s[0] (1..4), or 0 when the bytes there
// are not a complete, well-formed sequence (bad lead byte, bad continuation, overlong form,
// surrogate, above U+10FFFF, or truncated by the end of `s`).
size_t valid_sequence_length(std::string_view s);

// True when all of `s` is well-formed UTF-8.
bool is_valid(std::string_view s);

// Appends the UTF-8 encoding of `cp` (must be a scalar value: <= 0x10FFFF, not a surrogate).
void append(std::string& out, char32_t cp);

// Decodes the well-formed sequence at s[0]; `len` receives its length. Only call where
// valid_sequence_length(s) > 0.
char32_t decode(std::string_view s, size_t* len);

// Lossy repair: appends `in` to `out`, replacing every ill-formed subsequence by one U+FFFD per
// maximal subpart (the Unicode / WHATWG convention, as in Rust's String::from_utf8_lossy and
// JavaScript's TextDecoder). With `final` false, a trailing sequence that is incomplete but could
// still complete is not consumed. Returns the number of bytes of `in` consumed.
size_t append_lossy(std::string_view in, std::string& out, bool final);

// For text written to a terminal: appends valid UTF-8 `in` to `out` with every control
// character except newline and tab made visible and inert. C0 controls (ESC, CR, SO, BEL...)
// become their Unicode Control Pictures (U+2400 + c, so ESC shows as U+241B), DEL becomes
// U+2421 and C1 controls (U+0080..U+009F) become U+FFFD. Model output can contain any token,
// and an escape sequence written raw would reconfigure the user's terminal (charset switches,
// cursor moves, title changes) rather than show what the model produced.
void append_terminal_safe(std::string_view in, std::string& out);

}  // namespace dsv4::text::utf8
