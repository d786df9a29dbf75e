// Incremental SHA-256 (OpenSSL's EVP interface), for checking downloads against published hashes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dsv4::pull {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void reset();
  void update(const void* data, size_t n);
  // Lower-case hex digest of everything fed since the last reset; the state is reset afterwards.
  std::string hex_digest();

  static std::string of(std::string_view data);

 private:
  void* ctx_;  // EVP_MD_CTX*
};

// The 64 lower-case hex digits of `s` if it is a SHA-256 written in hex (surrounding quotes and a
// weak-validator "W/" prefix, as found in ETag headers, are dropped; case is ignored); else "".
std::string normalize_sha256(std::string_view s);

}  // namespace dsv4::pull
