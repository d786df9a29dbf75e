// pull_file for builds without libcurl/libcrypto: says so.
#include "core/error.h"
#include "pull/pull.h"

namespace dsv4::pull {

PullResult pull_file(const PullOptions& opts) {
  fail(
      "pull: this dsv4 was built without libcurl/OpenSSL (install libcurl4-openssl-dev and "
      "libssl-dev, then rebuild); download {} by hand",
      opts.url);
}

}  // namespace dsv4::pull
