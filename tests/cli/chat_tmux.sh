#!/usr/bin/env bash
# Terminal-level test of `dsv4 chat` on the tiny model, driven through tmux like a person would:
#   1. two turns: the second reuses the first turn's KV (its stats line says "reused N cached"
#      with N > 0 and prefills only the new turn);
#   2. Ctrl-C interrupts a long generation and the program keeps running (a third turn answers);
#   3. /save and /load of a session, /quit.
# Usage: chat_tmux.sh DSV4_BINARY
set -euo pipefail
DSV4="${1:?dsv4 binary}"
command -v tmux >/dev/null || { echo "chat_tmux: tmux not installed: skipped"; exit 77; }
TMP="$(mktemp -d)"
SOCK="$TMP/tmux.sock"
S=dsv4chat
cleanup() { tmux -S "$SOCK" kill-server 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
"$DSV4" gen-tiny -o "$TMP/tiny.gguf" --no-mtp >/dev/null
tmux -S "$SOCK" new-session -d -s $S -x 200 -y 50 \
  "$DSV4 chat -m $TMP/tiny.gguf -n 100000 --ctx 1000000 --temp 1.0 --seed 7 --ignore-eos 2>&1; echo CHAT-EXITED; sleep 60"
pane() { tmux -S "$SOCK" capture-pane -t $S -p -S -2000; }
# Characters of the pane after the last line holding $1 (whitespace not counted).
text_after() { pane | awk -v p="$1" 'index($0, p) { n = 0; next } { gsub(/[[:space:]]/, ""); n += length($0) } END { print n + 0 }'; }
wait_for() {  # wait_for REGEX TIMEOUT_S
  local t=0
  until pane | grep -aEq "$1"; do
    sleep 0.5
    t=$((t + 1))
    if [ $t -gt $(($2 * 2)) ]; then
      echo "chat_tmux: FAIL: timed out waiting for /$1/"; pane | tail -30; exit 1
    fi
  done
}
send() { tmux -S "$SOCK" send-keys -t $S "$@"; }
# ask_and_interrupt PROMPT: sends a turn and presses Ctrl-C once its answer is streaming (some
# text after the prompt's line; the answer may start with newlines).
ask_and_interrupt() {
  send "$1" Enter
  local t=0
  until [ "$(text_after "$1")" -gt 8 ]; do
    sleep 0.5
    t=$((t + 1))
    [ $t -lt 240 ] || { echo "chat_tmux: FAIL: no answer streamed for '$1'"; pane | tail -20; exit 1; }
  done
  send C-c
}

wait_for "Type /help" 60
# Turn 1, interrupted by Ctrl-C once some answer text has streamed.
ask_and_interrupt "tell me a very long story"
wait_for "\[interrupted\]" 60
wait_for "reused 0 cached, prefilled [0-9]+ new at [0-9.]+ tok/s \| generated [1-9]" 30
# Turn 2 must reuse the session: "reused N cached" with N > 0 (printed when it is stopped).
ask_and_interrupt "and now a second turn"
wait_for "reused [1-9][0-9]* cached" 120
send "/save $TMP/s.bin" Enter
wait_for "saved [0-9]+ tokens" 30
send "/clear" Enter
wait_for "conversation cleared" 30
send "/load $TMP/s.bin" Enter
wait_for "loaded [0-9]+ tokens" 30
send "/quit" Enter
wait_for "CHAT-EXITED" 30
if pane | grep -aq "\[error:"; then echo "chat_tmux: FAIL: an error was printed"; pane | tail -30; exit 1; fi
echo "chat_tmux: PASS"
pane | grep -aE "context [0-9]+ tokens|interrupted|saved|loaded" | sed 's/^/  /'
