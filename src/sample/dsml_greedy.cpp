#include "sample/dsml_greedy.h"

namespace dsv4 {
namespace {

constexpr std::string_view kThinkEnd = "</think>";
constexpr std::string_view kBlockOpen = "<｜DSML｜tool_calls>";
constexpr std::string_view kBlockCloseTag = "</｜DSML｜tool_calls";
constexpr std::string_view kParamTag = "<｜DSML｜parameter";
constexpr std::string_view kParamClose = "</｜DSML｜parameter>";
constexpr uint32_t kDsmlPrefix = 11;  // "<｜DSML｜": only the block tag can follow in content
constexpr uint32_t kCloseGreedy = 2;  // "</" of the parameter close tag
constexpr size_t kTagCap = 4096;

// Advances a match of `pat`, whose first byte '<' occurs nowhere else in it (true of every tag
// here), so a mismatch restarts at 1 on '<' and at 0 otherwise.
uint32_t advance(std::string_view pat, uint32_t m, char c) {
  if (pat[m] == c) return m + 1;
  return c == '<' ? 1 : 0;
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// The `string` attribute of a complete parameter tag (`<｜DSML｜parameter ...>`), or "" when
// absent. Attribute values run verbatim to the next '"'.
std::string_view string_attr(std::string_view tag) {
  size_t i = kParamTag.size();
  while (i < tag.size()) {
    while (i < tag.size() && is_space(tag[i])) ++i;
    const size_t name_start = i;
    while (i < tag.size() && tag[i] != '=' && tag[i] != '>' && !is_space(tag[i])) ++i;
    const std::string_view name = tag.substr(name_start, i - name_start);
    if (i >= tag.size() || tag[i] == '>') break;
    if (tag[i] != '=') continue;
    ++i;
    if (i >= tag.size() || tag[i] != '"') continue;
    const size_t v0 = ++i;
    while (i < tag.size() && tag[i] != '"') ++i;
    const std::string_view value = tag.substr(v0, i - v0);
    ++i;
    if (name == "string") return value;
  }
  return {};
}

}  // namespace

const char* to_string(DsmlRegion r) {
  switch (r) {
    case DsmlRegion::kReasoning:
      return "reasoning";
    case DsmlRegion::kContent:
      return "content";
    case DsmlRegion::kStructural:
      return "structural";
    case DsmlRegion::kStringBody:
      return "string_body";
    case DsmlRegion::kJson:
      return "json";
    case DsmlRegion::kJsonString:
      return "json_string";
  }
  return "?";
}

DsmlGreedyTracker::DsmlGreedyTracker(bool thinking)
    : state_(thinking ? State::kReasoning : State::kContent) {}

void DsmlGreedyTracker::on_text(std::string_view text) {
  for (const char c : text) byte(c);
}

void DsmlGreedyTracker::byte(char c) {
  switch (state_) {
    case State::kReasoning:
      match_ = advance(kThinkEnd, match_, c);
      if (match_ == kThinkEnd.size()) state_ = State::kContent, match_ = 0;
      break;
    case State::kContent:
      match_ = advance(kBlockOpen, match_, c);
      if (match_ == kBlockOpen.size()) state_ = State::kBlock, match_ = 0;
      break;
    case State::kBlock:
      if (c == '<') state_ = State::kTag, tag_.assign(1, '<'), tag_quote_ = false;
      break;
    case State::kTag: {
      if (c == '<' && !tag_quote_) {  // a tag left open: read the new one
        tag_.assign(1, '<');
        break;
      }
      if (tag_.size() < kTagCap) tag_.push_back(c);
      if (c == '"') tag_quote_ = !tag_quote_;
      if (c != '>' || tag_quote_) break;
      const std::string_view tag = tag_;
      if (tag.starts_with(kBlockCloseTag)) {
        state_ = State::kContent;
        match_ = 0;
        ++blocks_closed_;
      } else if (tag.starts_with(kParamTag) &&
                 (is_space(tag[kParamTag.size()]) || tag[kParamTag.size()] == '>')) {
        state_ = string_attr(tag) == "false" ? State::kJson : State::kString;
        match_ = 0;
        json_escape_ = false;
      } else {
        state_ = State::kBlock;
      }
      break;
    }
    case State::kString:
      match_ = advance(kParamClose, match_, c);
      if (match_ == kParamClose.size()) state_ = State::kBlock, match_ = 0;
      break;
    case State::kJson:
      if (c == '"') {
        state_ = State::kJsonString, match_ = 0, json_escape_ = false;
        break;
      }
      match_ = advance(kParamClose, match_, c);
      if (match_ == kParamClose.size()) state_ = State::kBlock, match_ = 0;
      break;
    case State::kJsonString:
      // The closing tag ends the value even inside an unterminated literal (as the parser does).
      match_ = advance(kParamClose, match_, c);
      if (match_ == kParamClose.size()) {
        state_ = State::kBlock, match_ = 0;
      } else if (json_escape_) {
        json_escape_ = false;
      } else if (c == '\\') {
        json_escape_ = true;
      } else if (c == '"') {
        state_ = State::kJson, match_ = 0;
      }
      break;
  }
}

DsmlRegion DsmlGreedyTracker::region() const {
  switch (state_) {
    case State::kReasoning:
      return DsmlRegion::kReasoning;
    case State::kContent:
      return match_ >= kDsmlPrefix ? DsmlRegion::kStructural : DsmlRegion::kContent;
    case State::kBlock:
    case State::kTag:
      return DsmlRegion::kStructural;
    case State::kString:
      return match_ >= kCloseGreedy ? DsmlRegion::kStructural : DsmlRegion::kStringBody;
    case State::kJson:
      return DsmlRegion::kJson;
    case State::kJsonString:
      return match_ >= kCloseGreedy ? DsmlRegion::kStructural : DsmlRegion::kJsonString;
  }
  return DsmlRegion::kContent;
}

bool DsmlGreedyTracker::force_greedy() const {
  const DsmlRegion r = region();
  return r == DsmlRegion::kStructural || r == DsmlRegion::kJson;
}

}  // namespace dsv4
