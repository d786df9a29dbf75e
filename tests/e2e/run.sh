#!/usr/bin/env bash
# Driver of the dsv4 serve end-to-end tests: writes a tiny model, then runs each SUITE (a node
# script here, e.g. sdk, hostile, restart, load), which starts its own `dsv4 serve` instances on
# free ports and stops them with SIGTERM. Exit 77 (skipped) without node or the npm SDKs
# (install them with scripts/fetch_oracles.sh, or `npm ci` in tests/e2e).
# Usage: run.sh DSV4_BINARY SUITE...
set -euo pipefail
DSV4="${1:?dsv4 binary}"
shift
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
command -v node >/dev/null || { echo "e2e: node not installed: skipped"; exit 77; }
if [ ! -d "$HERE/node_modules/openai" ] || [ ! -d "$HERE/node_modules/@anthropic-ai/sdk" ]; then
  echo "e2e: $HERE/node_modules missing (run scripts/fetch_oracles.sh): skipped"
  exit 77
fi
TMP="$(mktemp -d /tmp/dsv4-e2e.XXXXXX)"
keep=0
cleanup() { if [ $keep = 0 ]; then rm -rf "$TMP"; else echo "e2e: logs kept in $TMP"; fi; }
trap cleanup EXIT
"$DSV4" gen-tiny -o "$TMP/tiny.gguf" --no-mtp >/dev/null
export DSV4_BIN="$DSV4" DSV4_MODEL="$TMP/tiny.gguf" E2E_TMP="$TMP"
rc=0
for suite in "$@"; do
  echo "e2e: suite $suite"
  if ! node "$HERE/$suite.mjs"; then
    rc=1
    keep=1
  fi
done
exit $rc
