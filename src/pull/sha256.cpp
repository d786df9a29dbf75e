#include "pull/sha256.h"

#include <openssl/evp.h>

#include <cctype>

#include "core/error.h"

namespace dsv4::pull {

namespace {
EVP_MD_CTX* md(void* p) {
  return static_cast<EVP_MD_CTX*>(p);
}
}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_) fail("sha256: EVP_MD_CTX_new failed");
  reset();
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(md(ctx_));
}

void Sha256::reset() {
  if (EVP_DigestInit_ex(md(ctx_), EVP_sha256(), nullptr) != 1) fail("sha256: init failed");
}

void Sha256::update(const void* data, size_t n) {
  if (n && EVP_DigestUpdate(md(ctx_), data, n) != 1) fail("sha256: update failed");
}

std::string Sha256::hex_digest() {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(md(ctx_), d, &len) != 1) fail("sha256: final failed");
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(2 * len);
  for (unsigned i = 0; i < len; ++i) {
    out += hex[d[i] >> 4];
    out += hex[d[i] & 15];
  }
  reset();
  return out;
}

std::string Sha256::of(std::string_view data) {
  Sha256 h;
  h.update(data.data(), data.size());
  return h.hex_digest();
}

std::string normalize_sha256(std::string_view s) {
  while (!s.empty() && std::isspace((unsigned char)s.front())) s.remove_prefix(1);
  while (!s.empty() && std::isspace((unsigned char)s.back())) s.remove_suffix(1);
  if (s.starts_with("W/") || s.starts_with("w/")) s.remove_prefix(2);
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  if (s.size() != 64) return {};
  std::string out;
  out.reserve(64);
  for (char c : s) {
    if (!std::isxdigit((unsigned char)c)) return {};
    out += (char)std::tolower((unsigned char)c);
  }
  return out;
}

}  // namespace dsv4::pull
