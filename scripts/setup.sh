#!/usr/bin/env bash
# Installs what dsv4 needs on a fresh Debian machine (idempotent: installed packages are skipped,
# apt-get update runs only when something is missing). Needs root (or sudo) for apt.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git
  libfmt-dev nlohmann-json3-dev libcli11-dev     # formatting, JSON, command line
  libpcre2-dev libutf8proc-dev                   # tokenizer: Unicode-exact pre-tokenizer regexes
  libcurl4-openssl-dev libssl-dev                # dsv4 pull (HTTP with resume), hashing
  libcpp-httplib-dev                             # HTTP server
  libgtest-dev libgmock-dev libbenchmark-dev     # tests and micro-benchmarks
  clang libclang-rt-14-dev                       # libFuzzer target
  python3-numpy                                  # gguf-py oracle (Debian's python3)
  nodejs npm                                     # npm-installed oracles (llama.cpp, tokenizer)
  libedit-dev                                    # dsv4 chat: line editing and history (BSD)
  tmux                                           # terminal-level chat test
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come with a newer nodejs than Debian's; accept any working npm.
if command -v npm >/dev/null 2>&1; then
  tmp=()
  for p in "${missing[@]}"; do [ "$p" = npm ] || [ "$p" = nodejs ] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup: CUDA toolkit found at /usr/local/cuda (add /usr/local/cuda/bin to PATH)" >&2
fi
echo "setup: ok" >&2
