# Sourced on a device machine: unpacks a tools/gpu_pack.sh archive to /tmp/dsv4-pack and points
# the loader at its libraries after CUDA's. Sets PACK_BIN. Usage: source tools/gpu_unpack.sh PACK
pack=${1:?usage: source tools/gpu_unpack.sh PACK}
rm -rf /tmp/dsv4-pack && mkdir -p /tmp/dsv4-pack && tar -xJf "$pack" -C /tmp/dsv4-pack
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/cuda/lib:/tmp/dsv4-pack/lib:${LD_LIBRARY_PATH:-}"
export PACK_BIN=/tmp/dsv4-pack/bin
need=$(cat /tmp/dsv4-pack/glibc.txt 2>/dev/null)
have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
if [ -n "$need" ] && [ -n "$have" ] &&
  [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
  echo "gpu_unpack.sh: the binaries need glibc $need, this machine has $have (build on the device instead)" >&2
fi
if ldd "$PACK_BIN"/* 2>/dev/null | grep -q "not found"; then
  echo "gpu_unpack.sh: unresolved libraries (build on the device instead):" >&2
  ldd "$PACK_BIN"/* | grep "not found" >&2
fi
