#!/usr/bin/env bash
# Packs GPU binaries built on the dev machine (no GPU needed to build them) for a run on a device
# machine, so that device time goes to running rather than to a ~100 s cold build: the binaries
# (stripped) and the shared libraries they load, other than glibc's and CUDA's (the device has
# its own driver and CUDA 13 runtime), as one xz tar of ~18 MB (carry limit: 64 MiB with the
# tracked tree), with the newest glibc symbol version they need (glibc.txt, checked on unpacking).
# On the device: source tools/gpu_unpack.sh PACK; binaries are then in $PACK_BIN.
# Usage: tools/gpu_pack.sh OUT.tar.xz BINARY...
#   e.g. tools/gpu_pack.sh .wt/pkg.tar.xz build-gpu/bin/dsv4 build-gpu/tests/cuda/test_cuda_forward
set -euo pipefail
out=${1:?usage: gpu_pack.sh OUT.tar.xz BINARY...}
shift
[ $# -gt 0 ] || { echo "gpu_pack.sh: no binaries given" >&2; exit 2; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
for b in "$@"; do
  [ -x "$b" ] || { echo "gpu_pack.sh: $b is not an executable" >&2; exit 2; }
  cp "$b" "$stage/bin/"
  if ldd "$b" | grep -q "not found"; then
    echo "gpu_pack.sh: $b has unresolved libraries:" >&2
    ldd "$b" | grep "not found" >&2
    exit 2
  fi
  ldd "$b" | awk '$3 ~ /^\// {print $3}' |
    grep -Ev '/(libc|libm|libpthread|libdl|librt|libresolv)\.so|ld-linux|/cuda|libcudart|libcublas' |
    while read -r lib; do cp -Ln "$lib" "$stage/lib/" 2>/dev/null || true; done
done
strip --strip-unneeded "$stage"/bin/* 2>/dev/null || true
objdump -T "$stage"/bin/* "$stage"/lib/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 |
  sed 's/GLIBC_//' > "$stage/glibc.txt"
mkdir -p "$(dirname "$out")"
tar -C "$stage" -cf - bin lib glibc.txt | xz -T0 -9 > "$out.tmp"
mv "$out.tmp" "$out"
echo "gpu_pack.sh: $(ls "$stage/bin" | wc -l) binaries, $(ls "$stage/lib" | wc -l) libraries," \
  "glibc >= $(cat "$stage/glibc.txt") -> $out ($(du -h "$out" | cut -f1))"
