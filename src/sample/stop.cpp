#include "sample/stop.h"

#include <algorithm>

namespace dsv4 {

StopChecker::StopChecker(StopParams p) : p_(std::move(p)) {
  validate(p_);
  fail_.resize(p_.stop_strings.size());
  state_.assign(p_.stop_strings.size(), 0);
  for (size_t s = 0; s < p_.stop_strings.size(); ++s) {
    const std::string& pat = p_.stop_strings[s];
    std::vector<uint32_t>& f = fail_[s];
    f.assign(pat.size(), 0);
    uint32_t q = 0;
    for (size_t i = 1; i < pat.size(); ++i) {
      while (q > 0 && pat[i] != pat[q]) q = f[q - 1];
      if (pat[i] == pat[q]) ++q;
      f[i] = q;
    }
  }
}

Finish StopChecker::on_token(int32_t id) {
  if (finish_ == Finish::kStopToken || finish_ == Finish::kStopString) return finish_;
  ++n_tokens_;
  if (std::find(p_.stop_tokens.begin(), p_.stop_tokens.end(), id) != p_.stop_tokens.end())
    return finish_ = Finish::kStopToken;
  if (p_.max_tokens > 0 && n_tokens_ >= p_.max_tokens) return finish_ = Finish::kLength;
  return Finish::kNone;
}

Finish StopChecker::on_text(std::string_view text) {
  if (finish_ == Finish::kStopToken || finish_ == Finish::kStopString) return Finish::kNone;
  const size_t base = pending_.size();
  pending_.append(text);
  if (p_.stop_strings.empty()) return Finish::kNone;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    size_t hit = SIZE_MAX;
    for (size_t s = 0; s < state_.size(); ++s) {
      const std::string& pat = p_.stop_strings[s];
      uint32_t q = state_[s];
      if (q == pat.size()) q = fail_[s][q - 1];  // cannot happen after a stop; kept for safety
      while (q > 0 && pat[q] != c) q = fail_[s][q - 1];
      if (pat[q] == c) ++q;
      state_[s] = q;
      if (q == pat.size() && (hit == SIZE_MAX || pat.size() > p_.stop_strings[hit].size())) hit = s;
    }
    if (hit != SIZE_MAX) {
      const size_t end = base + i + 1, len = p_.stop_strings[hit].size();
      pending_.resize(end >= len ? end - len : 0);
      matched_ = p_.stop_strings[hit];
      finish_ = Finish::kStopString;
      return finish_;
    }
  }
  return Finish::kNone;
}

size_t StopChecker::safe_len() const {
  if (finish_ == Finish::kStopToken || finish_ == Finish::kStopString) return pending_.size();
  size_t hold = 0;
  for (const uint32_t q : state_) hold = std::max<size_t>(hold, q);
  return pending_.size() - std::min(hold, pending_.size());
}

std::string StopChecker::take_safe() {
  const size_t n = safe_len();
  std::string out = pending_.substr(0, n);
  pending_.erase(0, n);
  return out;
}

std::string StopChecker::take_all() {
  std::string out = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace dsv4
