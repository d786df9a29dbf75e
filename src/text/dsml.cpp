#include "text/dsml.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <system_error>

#include "core/error.h"
#include "core/json_text.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace dsv4::text {

namespace {

using ojson = nlohmann::ordered_json;
using std::string_view;

// ---------------------------------------------------------------------------------------------
// Python's json.dumps(value, ensure_ascii=False).

void append_py_string(std::string& out, string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

// repr(float): the shortest round-trip digits; positional when -4 < decpt <= 16 (decpt: the
// position of the decimal point relative to the digits), else d.ddde+XX.
void append_py_float(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v < 0 ? "-Infinity" : "Infinity";
    return;
  }
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  if (r.ec != std::errc()) fail("cannot format the number {}", v);
  string_view s(buf, static_cast<size_t>(r.ptr - buf));
  if (!s.empty() && s[0] == '-') {
    out += '-';
    s.remove_prefix(1);
  }
  const size_t e_pos = s.find('e');
  std::string digits;
  for (const char c : s.substr(0, e_pos)) {
    if (c != '.') digits += c;
  }
  int exp10 = 0;
  string_view es = s.substr(e_pos + 1);
  if (!es.empty() && es[0] == '+') es.remove_prefix(1);
  std::from_chars(es.data(), es.data() + es.size(), exp10);
  const int decpt = exp10 + 1;
  const int nd = static_cast<int>(digits.size());
  if (decpt <= -4 || decpt > 16) {
    out += digits[0];
    if (nd > 1) {
      out += '.';
      out.append(digits, 1);
    }
    out += 'e';
    out += exp10 < 0 ? '-' : '+';
    const int a = std::abs(exp10);
    if (a < 10) out += '0';
    out += std::to_string(a);
  } else if (decpt <= 0) {
    out += "0.";
    out.append(static_cast<size_t>(-decpt), '0');
    out += digits;
  } else if (decpt >= nd) {
    out += digits;
    out.append(static_cast<size_t>(decpt - nd), '0');
    out += ".0";
  } else {
    out.append(digits, 0, static_cast<size_t>(decpt));
    out += '.';
    out.append(digits, static_cast<size_t>(decpt));
  }
}

void append_py_json(std::string& out, const ojson& j) {
  switch (j.type()) {
    case ojson::value_t::null:
      out += "null";
      break;
    case ojson::value_t::boolean:
      out += j.get<bool>() ? "true" : "false";
      break;
    case ojson::value_t::number_integer:
      out += std::to_string(j.get<int64_t>());
      break;
    case ojson::value_t::number_unsigned:
      out += std::to_string(j.get<uint64_t>());
      break;
    case ojson::value_t::number_float:
      append_py_float(out, j.get<double>());
      break;
    case ojson::value_t::string:
      append_py_string(out, j.get_ref<const std::string&>());
      break;
    case ojson::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& e : j) {
        if (!first) out += ", ";
        first = false;
        append_py_json(out, e);
      }
      out += ']';
      break;
    }
    case ojson::value_t::object: {
      out += '{';
      bool first = true;
      for (const auto& [k, v] : j.items()) {
        if (!first) out += ", ";
        first = false;
        append_py_string(out, k);
        out += ": ";
        append_py_json(out, v);
      }
      out += '}';
      break;
    }
    default:
      fail("JSON value of type {} has no JSON text", j.type_name());
  }
}

// ---------------------------------------------------------------------------------------------
// Scanning helpers.

bool is_ws(char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

// The longest k < needle.size() such that `s` ends with the first k bytes of `needle`.
size_t partial_len(string_view s, string_view needle) {
  for (size_t k = std::min(s.size(), needle.size() - 1); k > 0; --k) {
    if (s.substr(s.size() - k) == needle.substr(0, k)) return k;
  }
  return 0;
}
size_t partial_len(string_view s, std::initializer_list<string_view> needles) {
  size_t k = 0;
  for (string_view n : needles) k = std::max(k, partial_len(s, n));
  return k;
}

// `s` is shorter than some needle and a prefix of it (more input may complete it).
bool proper_prefix_of_any(string_view s, std::initializer_list<string_view> needles) {
  for (string_view n : needles) {
    if (s.size() < n.size() && n.substr(0, s.size()) == s) return true;
  }
  return false;
}

struct Hit {
  size_t pos = string_view::npos;
  size_t which = 0;
  size_t len = 0;
};
Hit find_first(string_view s, std::initializer_list<string_view> needles, size_t from = 0) {
  Hit h;
  size_t i = 0;
  for (string_view n : needles) {
    const size_t p = s.find(n, from);
    if (p != string_view::npos && p < h.pos) h = {p, i, n.size()};
    ++i;
  }
  return h;
}

// The largest n' <= n such that s[0, n') does not end inside a UTF-8 sequence that the bytes
// from n on could still complete.
size_t utf8_cut(string_view s, size_t n) {
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    size_t len = 1;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
    }
    return len > back ? n - back : n;
  }
  return n;
}

std::string excerpt(string_view s) {
  constexpr size_t kMax = 48;
  if (s.size() <= kMax) return std::string(s);
  return std::string(s.substr(0, utf8_cut(s, kMax))) + "...";
}

// Ill-formed UTF-8 (a model can sample a stray byte token) becomes U+FFFD, so that names and
// arguments are always valid JSON text.
std::string valid_utf8(string_view s) {
  if (utf8::is_valid(s)) return std::string(s);
  std::string out;
  utf8::append_lossy(s, out, true);
  return out;
}

std::string_view trim(string_view s) {
  while (!s.empty() && is_ws(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ws(s.back())) s.remove_suffix(1);
  return s;
}

// A DSML start tag `<｜DSML｜NAME attr="v" ...>`: `name_len` bytes of the tag name are known to
// be at the start of `s`.
struct Tag {
  enum class Status : uint8_t { kIncomplete, kMalformed, kOk } status = Status::kIncomplete;
  size_t len = 0;
  std::vector<std::pair<std::string, std::string>> attrs;
  const std::string* attr(string_view k) const {
    for (const auto& [name, v] : attrs) {
      if (name == k) return &v;
    }
    return nullptr;
  }
};
constexpr size_t kMaxTagBytes = 4096;

Tag parse_tag(string_view s, size_t name_len) {
  Tag t;
  auto incomplete = [&] {
    t.status = s.size() > kMaxTagBytes ? Tag::Status::kMalformed : Tag::Status::kIncomplete;
    return t;
  };
  auto malformed = [&] {
    t.status = Tag::Status::kMalformed;
    return t;
  };
  size_t i = name_len;
  if (i >= s.size()) return incomplete();
  if (!is_ws(s[i]) && s[i] != '>') return malformed();
  for (;;) {
    while (i < s.size() && is_ws(s[i])) ++i;
    if (i >= s.size()) return incomplete();
    if (s[i] == '>') {
      t.status = Tag::Status::kOk;
      t.len = i + 1;
      return t;
    }
    const size_t k0 = i;
    while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_' ||
                            s[i] == '-' || s[i] == ':')) {
      ++i;
    }
    if (i >= s.size()) return incomplete();
    if (i == k0) return malformed();
    std::string key(s.substr(k0, i - k0));
    while (i < s.size() && is_ws(s[i])) ++i;
    if (i >= s.size()) return incomplete();
    if (s[i] != '=') return malformed();
    ++i;
    while (i < s.size() && is_ws(s[i])) ++i;
    if (i >= s.size()) return incomplete();
    if (s[i] != '"') return malformed();
    ++i;
    const size_t q = s.find('"', i);
    if (q == string_view::npos) return incomplete();
    t.attrs.emplace_back(std::move(key), std::string(s.substr(i, q - i)));
    i = q + 1;
    if (i > kMaxTagBytes) return malformed();
  }
}

constexpr string_view kDsmlTagStart = "<｜DSML｜";
constexpr string_view kDsmlEndTagStart = "</｜DSML｜";

void emit_text(std::vector<DsmlEvent>& out, DsmlEvent::Kind kind, string_view t) {
  if (t.empty()) return;
  if (!out.empty() && out.back().kind == kind) {
    out.back().text += t;
    return;
  }
  DsmlEvent e;
  e.kind = kind;
  e.text = std::string(t);
  out.push_back(std::move(e));
}

}  // namespace

std::string python_json(std::string_view json_text) {
  if (has_nul_byte(json_text))
    fail("invalid JSON: NUL byte at offset {}", nul_byte_offset(json_text));
  ojson j;
  try {
    j = ojson::parse(json_text);
  } catch (const ojson::exception& e) {
    fail("invalid JSON: {}", e.what());
  }
  std::string out;
  append_py_json(out, j);
  return out;
}

std::string python_json_string(std::string_view s) {
  std::string out;
  append_py_string(out, s);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Rendering.

void append_tool_calls_dsml(std::span<const ToolCall> calls, TextPieces& out) {
  if (calls.empty()) return;
  auto tmpl = [&](std::string s) { out.push_back({std::move(s), false}); };
  auto data = [&](std::string s) { out.push_back({std::move(s), true}); };
  const std::string dsml(special::kDsml);
  tmpl("\n\n<" + dsml + "tool_calls>\n");
  for (size_t c = 0; c < calls.size(); ++c) {
    const ToolCall& call = calls[c];
    if (c > 0) tmpl("\n");
    tmpl("<" + dsml + "invoke name=\"");
    data(call.name);
    tmpl("\">\n");
    ojson args;
    bool object = false;
    if (trim(call.arguments).empty()) {
      args = ojson::object();
      object = true;
    } else if (!has_nul_byte(call.arguments)) {
      try {
        args = ojson::parse(call.arguments);
        object = args.is_object();
      } catch (const ojson::exception&) {
        object = false;
      }
    }
    bool first = true;
    auto param = [&](const std::string& key, bool is_string, std::string value) {
      if (!first) tmpl("\n");
      first = false;
      tmpl("<" + dsml + "parameter name=\"");
      data(key);
      tmpl(is_string ? "\" string=\"true\">" : "\" string=\"false\">");
      data(std::move(value));
      tmpl("</" + dsml + "parameter>");
    };
    if (object) {
      for (const auto& [k, v] : args.items()) {
        if (v.is_string()) {
          param(k, true, v.get<std::string>());
        } else {
          std::string js;
          append_py_json(js, v);
          param(k, false, std::move(js));
        }
      }
    } else {
      param("arguments", true, call.arguments);
    }
    tmpl("\n</" + dsml + "invoke>");
  }
  tmpl("\n</" + dsml + "tool_calls>");
}

std::string render_tool_calls(std::span<const ToolCall> calls) {
  TextPieces pieces;
  append_tool_calls_dsml(calls, pieces);
  std::string s;
  for (const TextPiece& p : pieces) s += p.text;
  return s;
}

// ---------------------------------------------------------------------------------------------
// Parsing.

DsmlParser::DsmlParser(bool thinking) : state_(thinking ? State::kReasoning : State::kContent) {}

bool DsmlParser::in_tool_block() const {
  return state_ == State::kBlock || state_ == State::kInvoke || state_ == State::kValue;
}

void DsmlParser::feed(std::string_view text, std::vector<DsmlEvent>& out) {
  if (finished_) return;
  buf_.append(text);
  while (step(false, out)) {
  }
}

void DsmlParser::finish(std::vector<DsmlEvent>& out) {
  if (finished_) return;
  finished_ = true;
  while (step(true, out)) {
  }
  if (in_tool_block()) {
    raw_ += buf_;  // an unfinished tag
    buf_.clear();
    end_of_input(out);
  }
}

void DsmlParser::consume(size_t n) {
  if (in_tool_block()) raw_.append(buf_, 0, n);
  buf_.erase(0, n);
}

void DsmlParser::issue(std::vector<DsmlEvent>& out, std::string text) {
  DsmlEvent e;
  e.kind = DsmlEvent::Kind::kIssue;
  e.text = std::move(text);
  out.push_back(std::move(e));
}

bool DsmlParser::step(bool final, std::vector<DsmlEvent>& out) {
  switch (state_) {
    case State::kReasoning:
      return step_reasoning(final, out);
    case State::kContent:
      return step_content(final, out);
    case State::kBlock:
      return step_block(final, out);
    case State::kInvoke:
      return step_invoke(final, out);
    case State::kValue:
      return step_value(final, out);
    case State::kAfterBlock:
      return step_after_block(final, out);
    case State::kDone:
      if (!buf_.empty()) {
        if (!tail_reported_ && !trim(buf_).empty()) {
          tail_reported_ = true;
          issue(out, "text after <｜end▁of▁sentence｜> ignored: " + excerpt(buf_));
        }
        buf_.clear();
      }
      return false;
  }
  return false;
}

bool DsmlParser::step_reasoning(bool final, std::vector<DsmlEvent>& out) {
  if (buf_.empty()) return false;
  if (at_start_) {
    if (buf_.starts_with(special::kThinkStart)) {
      consume(special::kThinkStart.size());
      at_start_ = false;
      return true;
    }
    if (!final && proper_prefix_of_any(buf_, {special::kThinkStart})) return false;
    at_start_ = false;
  }
  const Hit h = find_first(buf_, {special::kThinkEnd, special::kEos});
  if (h.pos != string_view::npos) {
    emit_text(out, DsmlEvent::Kind::kReasoning, string_view(buf_).substr(0, h.pos));
    consume(h.pos + h.len);
    if (h.which == 0) {
      reasoning_closed_ = true;
      state_ = State::kContent;
    } else {
      saw_eos_ = true;
      state_ = State::kDone;
    }
    return true;
  }
  size_t n = buf_.size();
  if (!final) n = utf8_cut(buf_, n - partial_len(buf_, {special::kThinkEnd, special::kEos}));
  if (n == 0) return false;
  emit_text(out, DsmlEvent::Kind::kReasoning, string_view(buf_).substr(0, n));
  consume(n);
  return true;
}

bool DsmlParser::step_content(bool final, std::vector<DsmlEvent>& out) {
  if (buf_.empty()) return false;
  const Hit h = find_first(buf_, {dsml::kBlockOpen, special::kEos});
  if (h.pos != string_view::npos) {
    if (h.which == 1) {
      emit_text(out, DsmlEvent::Kind::kContent, string_view(buf_).substr(0, h.pos));
      consume(h.pos + h.len);
      saw_eos_ = true;
      state_ = State::kDone;
      return true;
    }
    size_t text_end = h.pos;
    if (text_end >= 2 && buf_[text_end - 1] == '\n' && buf_[text_end - 2] == '\n') text_end -= 2;
    emit_text(out, DsmlEvent::Kind::kContent, string_view(buf_).substr(0, text_end));
    consume(text_end);
    state_ = State::kBlock;
    raw_.clear();
    junk_reported_ = false;
    consume(h.pos - text_end + h.len);  // "\n\n" and the tag, into raw_
    return true;
  }
  size_t n = buf_.size();
  if (!final) {
    n -= partial_len(buf_, {dsml::kBlockOpen, special::kEos});
    // Up to two newlines may turn out to be the separator before the block.
    for (int k = 0; k < 2 && n > 0 && buf_[n - 1] == '\n'; ++k) --n;
    n = utf8_cut(buf_, n);
  }
  if (n == 0) return false;
  emit_text(out, DsmlEvent::Kind::kContent, string_view(buf_).substr(0, n));
  consume(n);
  return true;
}

bool DsmlParser::skip_junk(bool final, std::vector<DsmlEvent>& out) {
  const Hit h = find_first(buf_, {kDsmlTagStart, kDsmlEndTagStart, special::kEos}, 1);
  size_t n = h.pos;
  if (n == string_view::npos) {
    n = buf_.size();
    if (!final) n -= partial_len(buf_, {kDsmlTagStart, kDsmlEndTagStart, special::kEos});
  }
  if (n == 0) return false;
  if (!junk_reported_) {
    junk_reported_ = true;
    issue(out, "unexpected text in the tool_calls block skipped: " +
                   excerpt(string_view(buf_).substr(0, n)));
  }
  consume(n);
  return true;
}

bool DsmlParser::step_block(bool final, std::vector<DsmlEvent>& out) {
  size_t ws = 0;
  while (ws < buf_.size() && is_ws(buf_[ws])) ++ws;
  if (ws > 0) {
    consume(ws);
    return true;
  }
  if (buf_.empty()) return false;
  if (buf_.starts_with(special::kEos)) {
    buf_.erase(0, special::kEos.size());
    saw_eos_ = true;
    end_of_input(out);
    return true;
  }
  if (buf_.starts_with(dsml::kBlockClose)) {
    consume(dsml::kBlockClose.size());
    end_block(out);
    state_ = State::kAfterBlock;
    return true;
  }
  if (buf_.starts_with(dsml::kInvokeOpen)) {
    const Tag t = parse_tag(buf_, dsml::kInvokeOpen.size());
    if (t.status == Tag::Status::kIncomplete) return false;
    if (t.status == Tag::Status::kMalformed) {
      issue(out, "malformed invoke tag skipped: " + excerpt(buf_));
      junk_reported_ = true;
      return skip_junk(final, out);
    }
    const std::string* name = t.attr("name");
    call_valid_ = name != nullptr;
    call_name_ = name ? valid_utf8(*name) : std::string();
    params_.clear();
    if (call_valid_) {
      DsmlEvent e;
      e.kind = DsmlEvent::Kind::kToolCallStart;
      e.index = n_calls_;
      e.name = call_name_;
      out.push_back(std::move(e));
    } else {
      issue(out, "invoke without a name attribute; the call is dropped");
    }
    consume(t.len);
    state_ = State::kInvoke;
    junk_reported_ = false;
    return true;
  }
  if (!final && proper_prefix_of_any(buf_, {dsml::kInvokeOpen, dsml::kBlockClose, special::kEos})) {
    return false;
  }
  return skip_junk(final, out);
}

bool DsmlParser::step_invoke(bool final, std::vector<DsmlEvent>& out) {
  size_t ws = 0;
  while (ws < buf_.size() && is_ws(buf_[ws])) ++ws;
  if (ws > 0) {
    consume(ws);
    return true;
  }
  if (buf_.empty()) return false;
  if (buf_.starts_with(special::kEos)) {
    buf_.erase(0, special::kEos.size());
    saw_eos_ = true;
    end_of_input(out);
    return true;
  }
  if (buf_.starts_with(dsml::kInvokeClose)) {
    consume(dsml::kInvokeClose.size());
    end_invoke(out);
    state_ = State::kBlock;
    return true;
  }
  if (buf_.starts_with(dsml::kParamOpen)) {
    const Tag t = parse_tag(buf_, dsml::kParamOpen.size());
    if (t.status == Tag::Status::kIncomplete) return false;
    if (t.status == Tag::Status::kMalformed) {
      issue(out, "malformed parameter tag skipped: " + excerpt(buf_));
      junk_reported_ = true;
      return skip_junk(final, out);
    }
    const std::string* name = t.attr("name");
    const std::string* str = t.attr("string");
    param_valid_ = name != nullptr;
    param_name_ = name ? valid_utf8(*name) : std::string();
    param_string_ = true;
    if (str != nullptr && *str == "false") {
      param_string_ = false;
    } else if (str != nullptr && *str != "true") {
      issue(out, "parameter \"" + param_name_ + "\": string=\"" + excerpt(*str) +
                     "\" is neither true nor false; taken as a string");
    }
    value_.clear();
    consume(t.len);
    state_ = State::kValue;
    junk_reported_ = false;
    return true;
  }
  if (buf_.starts_with(dsml::kInvokeOpen) || buf_.starts_with(dsml::kBlockClose)) {
    issue(out, "invoke \"" + call_name_ + "\" not closed with </｜DSML｜invoke>; closed here");
    end_invoke(out);
    state_ = State::kBlock;
    return true;
  }
  if (!final && proper_prefix_of_any(buf_, {dsml::kInvokeClose, dsml::kParamOpen, dsml::kInvokeOpen,
                                            dsml::kBlockClose, special::kEos})) {
    return false;
  }
  return skip_junk(final, out);
}

bool DsmlParser::step_value(bool final, std::vector<DsmlEvent>& out) {
  if (buf_.empty()) return false;
  const size_t pos = buf_.find(dsml::kParamClose);
  if (pos != std::string::npos) {
    value_.append(buf_, 0, pos);
    consume(pos + dsml::kParamClose.size());
    end_param(out);
    state_ = State::kInvoke;
    return true;
  }
  size_t n = buf_.size();
  if (!final) n -= partial_len(buf_, dsml::kParamClose);
  if (n == 0) return false;
  value_.append(buf_, 0, n);
  consume(n);
  return true;
}

bool DsmlParser::step_after_block(bool final, std::vector<DsmlEvent>& out) {
  size_t ws = 0;
  while (ws < buf_.size() && is_ws(buf_[ws])) ++ws;
  if (ws > 0) {
    consume(ws);
    return true;
  }
  if (buf_.empty()) return false;
  if (buf_.starts_with(special::kEos)) {
    consume(special::kEos.size());
    saw_eos_ = true;
    state_ = State::kDone;
    return true;
  }
  if (buf_.starts_with(dsml::kBlockOpen)) {
    state_ = State::kContent;
    return true;
  }
  if (!final && proper_prefix_of_any(buf_, {dsml::kBlockOpen, special::kEos})) return false;
  issue(out, "text after </｜DSML｜tool_calls> taken as content: " + excerpt(buf_));
  state_ = State::kContent;
  return true;
}

void DsmlParser::end_param(std::vector<DsmlEvent>& out) {
  if (!param_valid_) {
    issue(out, "parameter without a name attribute dropped");
    return;
  }
  if (!call_valid_) return;
  for (const Param& p : params_) {
    if (p.name == param_name_) {
      issue(out, "parameter \"" + param_name_ + "\" of \"" + call_name_ +
                     "\" repeated; the first value is kept");
      return;
    }
  }
  Param p;
  p.name = param_name_;
  if (param_string_) {
    p.json = python_json_string(valid_utf8(value_));
  } else {
    const std::string v(trim(value_));
    if (!v.empty() && !has_nul_byte(v) && ojson::accept(v)) {
      p.json = v;
    } else {
      issue(out,
            "parameter \"" + param_name_ + "\" of \"" + call_name_ +
                "\" has string=\"false\" but is not JSON; passed as a string: " + excerpt(value_));
      p.json = python_json_string(valid_utf8(value_));
    }
  }
  params_.push_back(std::move(p));
}

void DsmlParser::end_invoke(std::vector<DsmlEvent>& out) {
  if (call_valid_) {
    DsmlEvent e;
    e.kind = DsmlEvent::Kind::kToolCall;
    e.index = n_calls_++;
    e.name = call_name_;
    e.arguments = "{";
    for (size_t i = 0; i < params_.size(); ++i) {
      if (i > 0) e.arguments += ", ";
      append_py_string(e.arguments, params_[i].name);
      e.arguments += ": ";
      e.arguments += params_[i].json;
    }
    e.arguments += "}";
    out.push_back(std::move(e));
  }
  call_valid_ = false;
  call_name_.clear();
  params_.clear();
  junk_reported_ = false;
}

void DsmlParser::end_block(std::vector<DsmlEvent>& out) {
  DsmlEvent e;
  e.kind = DsmlEvent::Kind::kToolBlockEnd;
  e.text = std::move(raw_);
  raw_.clear();
  out.push_back(std::move(e));
}

void DsmlParser::end_of_input(std::vector<DsmlEvent>& out) {
  if (state_ == State::kInvoke || state_ == State::kValue) {
    incomplete_call_ = true;
    if (call_valid_) {
      issue(out, "generation ended inside tool call " + std::to_string(n_calls_) + " (\"" +
                     call_name_ + "\"); the call is dropped");
    } else {
      issue(out, "generation ended inside an invoke");
    }
  } else {
    issue(out, "generation ended before </｜DSML｜tool_calls>");
  }
  call_valid_ = false;
  call_name_.clear();
  params_.clear();
  end_block(out);
  state_ = State::kDone;
}

void add_event(ParsedMessage& m, DsmlEvent e) {
  switch (e.kind) {
    case DsmlEvent::Kind::kReasoning:
      m.reasoning_content += e.text;
      break;
    case DsmlEvent::Kind::kContent:
      m.content += e.text;
      break;
    case DsmlEvent::Kind::kToolCallStart:
      break;
    case DsmlEvent::Kind::kToolCall:
      m.tool_calls.push_back({std::string(), std::move(e.name), std::move(e.arguments)});
      break;
    case DsmlEvent::Kind::kToolBlockEnd:
      m.raw_dsml += e.text;
      break;
    case DsmlEvent::Kind::kIssue:
      m.issues.push_back(std::move(e.text));
      break;
  }
}

ParsedMessage parse_generated(std::string_view text, bool thinking) {
  DsmlParser p(thinking);
  std::vector<DsmlEvent> ev;
  p.feed(text, ev);
  p.finish(ev);
  ParsedMessage m;
  for (DsmlEvent& e : ev) add_event(m, std::move(e));
  m.reasoning_closed = p.reasoning_closed();
  m.incomplete_call = p.incomplete_call();
  m.saw_eos = p.saw_eos();
  return m;
}

}  // namespace dsv4::text
