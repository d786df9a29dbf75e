# Sourced on the GPU machines (no package registry there): unpacks the carried Debian packages in
# .debs/ (fmt, GoogleTest, nlohmann-json, CLI11, PCRE2, utf8proc, pkgconf, cpp-httplib and the
# -dev packages its pkg-config file requires: OpenSSL, zlib, brotli) into a private sysroot
# and points CMake, pkg-config and the loader at it. Usage: source tools/gpu_env.sh
SYSROOT=/tmp/dsv4-sysroot
if [ ! -d "$SYSROOT/usr" ]; then
  mkdir -p "$SYSROOT"
  for f in .debs/*.deb; do dpkg -x "$f" "$SYSROOT"; done
fi
export PATH="/usr/local/cuda/bin:$SYSROOT/usr/bin:$PATH"
export CMAKE_PREFIX_PATH="$SYSROOT/usr:${CMAKE_PREFIX_PATH:-}"
export PKG_CONFIG_SYSROOT_DIR="$SYSROOT"
export PKG_CONFIG_LIBDIR="$SYSROOT/usr/lib/x86_64-linux-gnu/pkgconfig:$SYSROOT/usr/share/pkgconfig"
export LD_LIBRARY_PATH="$SYSROOT/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export LIBRARY_PATH="$SYSROOT/usr/lib/x86_64-linux-gnu:${LIBRARY_PATH:-}"  # plain -lX link flags
