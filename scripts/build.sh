#!/usr/bin/env bash
# Configures and builds one flavour of dsv4: release (default; CUDA when a toolkit is found) or
# asan (CPU only, AddressSanitizer + UBSan). Usage: scripts/build.sh [release|asan] [targets...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FLAVOUR="${1:-release}"
shift || true
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"
JOBS="${DSV4_JOBS:-$(nproc)}"
case "$FLAVOUR" in
  release)
    cmake -S "$ROOT" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null ;;
  asan)
    cmake -S "$ROOT" -B "$ROOT/build-asan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DDSV4_SANITIZE=ON -DDSV4_CUDA=OFF >/dev/null ;;
  *) echo "build.sh: unknown flavour '$FLAVOUR' (release|asan)" >&2; exit 2 ;;
esac
DIR="$ROOT/build"
[ "$FLAVOUR" = asan ] && DIR="$ROOT/build-asan"
ninja -C "$DIR" -j "$JOBS" "$@"
