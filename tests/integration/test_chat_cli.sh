#!/usr/bin/env bash
# `shoal chat`, locally and through a loopback swarm of two nodes serving
# stories260K (blocks 0:3 and 3:5):
#  - off a terminal, the message "Once upon a time" with --temp 0 -n 60 is
#    answered with the reference continuation (once-64.txt without its
#    prompt), as one line (newlines written as \n), locally and remotely;
#  - the conversation stays in the cache: a second message feeds only its
#    own tokens (the stderr line's prompt count), /regen and /clear work,
#    and every reply is one line;
#  - usage errors are one line;
#  - on a terminal (driven through tmux, skipped without it): the prompt,
#    a streamed reply, /help, the stats line, Ctrl-C at the prompt twice
#    exits with status 0, the history file is written; and on a slow
#    random-weight model, Ctrl-C stops a long reply and the chat goes on.
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
model=$SHOAL_SHARED/models/stories260K.gguf
ref=$SHOAL_SHARED/reference
tmp=$(mktemp -d)
pids=()
tmux_sock="shoal-chat-test-$$"
cleanup() {
  local p i
  command -v tmux >/dev/null && tmux -L "$tmux_sock" kill-server 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# The expected reply: the reference without the prompt and the final
# newline, with newlines and backslashes escaped as chat writes them.
prompt="Once upon a time"
expect=$(tail -c +$((${#prompt} + 1)) "$ref/once-64.txt" | head -c -1 |
         sed -e 's/\\/\\\\/g' | sed -e ':a;N;$!ba;s/\n/\\n/g')
[ -n "$expect" ] || { echo "FAIL: cannot read the reference"; exit 1; }

# --- local, off a terminal ---------------------------------------------------
printf '%s\n' "$prompt" | timeout 60 "$SHOAL" chat -m "$model" --temp 0 -n 60 -t 1 \
  >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 0 ] && ok || { bad "local chat exited $rc"; cat "$tmp/err"; }
[ "$(cat "$tmp/out")" = "$expect" ] && ok ||
  { bad "local reply differs from the reference"; echo "want: $expect"; echo "got:  $(cat "$tmp/out")"; }
[ "$(wc -l <"$tmp/out")" -eq 1 ] && ok || bad "local reply is not one line"
grep -Eq '^prompt: 5 tokens, .* tok/s; generated: 60 tokens, .* tok/s$' "$tmp/err" && ok ||
  { bad "no stats line"; cat "$tmp/err"; }

# --- several turns: only new tokens are fed ----------------------------------
printf '%s\n' "$prompt" "The dog" "/regen" "/clear" "$prompt" "/exit" "never read" |
  timeout 60 "$SHOAL" chat -m "$model" --temp 0 -n 30 -t 1 >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 0 ] && ok || { bad "multi-turn chat exited $rc"; cat "$tmp/err"; }
[ "$(wc -l <"$tmp/out")" -eq 4 ] && ok || { bad "expected 4 reply lines"; cat "$tmp/out"; }
mapfile -t fed < <(sed -n 's/^prompt: \([0-9]*\) tokens.*/\1/p' "$tmp/err")
# turn 1: BOS + 4 prompt tokens; turn 2: the last reply token (sampled, not
# fed yet) and " The dog" only; /regen: the last token again, for its
# logits; after /clear the same first message is still in the cache: 1
[ "${fed[*]:-}" = "5 4 1 1" ] && ok || { bad "tokens fed per turn: '${fed[*]:-}', want '5 4 1 1'"; cat "$tmp/err"; }
l1=$(sed -n 1p "$tmp/out"); l2=$(sed -n 2p "$tmp/out"); l3=$(sed -n 3p "$tmp/out"); l4=$(sed -n 4p "$tmp/out")
[ "$l2" = "$l3" ] && ok || bad "greedy /regen gave another reply"
[ "$l1" = "$l4" ] && ok || bad "the first message after /clear got another reply"
[ "${expect#"$l1"}" != "$expect" ] && ok || bad "first reply is not the reference's beginning"

# --- usage errors --------------------------------------------------------------
expect_usage() {
  "$@" </dev/null >"$tmp/o" 2>"$tmp/e"
  local rc=$?
  [ "$rc" -eq 2 ] && ok || bad "'$*' exited $rc, want 2"
  [ "$(wc -l <"$tmp/e")" -eq 1 ] && ok || { bad "'$*' stderr is not one line"; cat "$tmp/e"; }
}
expect_usage "$SHOAL" chat
expect_usage "$SHOAL" chat -m "$model" --chat-template nonsense
expect_usage "$SHOAL" chat -m "$model" --peers not-an-address
expect_usage "$SHOAL" chat -m "$model" --bogus
"$SHOAL" chat --help >"$tmp/o" && grep -q -- "--initial-peers" "$tmp/o" && grep -q -- "-sys" "$tmp/o" &&
  ok || bad "chat --help lacks --initial-peers or -sys"
# -sys is accepted (a system prompt is plain text for a model without a template)
printf 'hello\n' | timeout 60 "$SHOAL" chat -m "$model" -sys "A story." --temp 0 -n 5 -t 1 \
  >"$tmp/o" 2>"$tmp/e" && [ "$(wc -l <"$tmp/o")" -eq 1 ] && ok || { bad "-sys run failed"; cat "$tmp/e"; }

# --- through a loopback swarm ----------------------------------------------------
# a DHT bootstrap node, which the nodes join (for --initial-peers below)
"$SHOAL" bootstrap --port 0 --host 127.0.0.1 --address-file "$tmp/boot.addr" \
  >/dev/null 2>"$tmp/boot.log" &
pids+=($!)
for i in $(seq 100); do [ -s "$tmp/boot.addr" ] && break; sleep 0.1; done
boot=$(cat "$tmp/boot.addr")
start_node() {
  "$SHOAL" serve -m "$model" --blocks "$2" --port 0 --host 127.0.0.1 \
    --address-file "$tmp/$1.addr" --identity "$tmp/$1.id" -t 1 --initial-peers "$boot" \
    >"$tmp/$1.out" 2>"$tmp/$1.log" &
  pids+=($!)
}
wait_node() {
  local i
  for i in $(seq 100); do
    [ -s "$tmp/$1.addr" ] && return 0
    sleep 0.1
  done
  echo "FAIL: node $1 wrote no address in 10 s"; cat "$tmp/$1.log"
  exit 1
}
start_node a 0:3
start_node b 3:5
wait_node a; wait_node b
peers="$(cat "$tmp/b.addr"),$(cat "$tmp/a.addr")"
printf '%s\n' "$prompt" "The dog" | timeout 60 "$SHOAL" chat -m "$model" --peers "$peers" \
  --temp 0 -n 60 -t 1 >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 0 ] && ok || { bad "remote chat exited $rc"; cat "$tmp/err"; }
[ "$(sed -n 1p "$tmp/out")" = "$expect" ] && ok ||
  { bad "remote reply differs from the reference"; echo "want: $expect"; echo "got:  $(sed -n 1p "$tmp/out")"; }
[ "$(wc -l <"$tmp/out")" -eq 2 ] && ok || bad "remote: expected 2 reply lines"
grep -q '^chain: 2 hops, codec f32: 0:3 .*, 3:5 ' "$tmp/err" && ok || { bad "no 2-hop chain line"; cat "$tmp/err"; }
mapfile -t fed < <(sed -n 's/^prompt: \([0-9]*\) tokens.*/\1/p' "$tmp/err")
[ "${fed[1]:-}" = "4" ] && ok || bad "remote second turn fed ${fed[1]:-?} tokens, want 4"
# --initial-peers: the nodes found through the DHT give the same reply
printf '%s\n' "$prompt" | timeout 60 "$SHOAL" chat -m "$model" --initial-peers "$boot" \
  --temp 0 -n 60 -t 1 >"$tmp/out" 2>"$tmp/err"
[ "$(cat "$tmp/out")" = "$expect" ] && ok || { bad "--initial-peers reply differs"; cat "$tmp/err"; }

# --- on a terminal, through tmux --------------------------------------------------
if ! command -v tmux >/dev/null; then
  echo "SKIP: tmux is not installed: the terminal test did not run"
else
  mkdir -p "$tmp/home"
  # -J joins wrapped lines: a marker must not be missed because the pane
  # wrapped it (a long reply puts "[stopped]" anywhere on a row)
  screen() { tmux -L "$tmux_sock" capture-pane -p -J -t chat; }
  # wait_for PATTERN: the screen shows it within 20 s
  wait_for() {
    local i
    for i in $(seq 200); do
      screen | grep -Eq -- "$1" && return 0
      sleep 0.1
    done
    return 1
  }
  tmux -L "$tmux_sock" new-session -d -s chat -x 200 -y 50 \
    "HOME='$tmp/home' '$SHOAL' chat -m '$model' --temp 0 -n 60 -t 1; echo \"EXIT STATUS \$?\"; sleep 60"
  wait_for '^> ?$' && ok || { bad "tty: no prompt"; screen; }
  tmux -L "$tmux_sock" send-keys -t chat "$prompt" Enter
  wait_for '^prompt: 5 tokens' && ok || { bad "tty: no stats line"; screen; }
  screen | grep -q "there was a little girl named Lily" && ok || { bad "tty: reply not shown"; screen; }
  tmux -L "$tmux_sock" send-keys -t chat "/help" Enter
  wait_for '/regen +write the last reply again' && ok || { bad "tty: /help"; screen; }
  tmux -L "$tmux_sock" send-keys -t chat C-c
  wait_for 'Ctrl-C again' && ok || { bad "tty: first Ctrl-C"; screen; }
  tmux -L "$tmux_sock" send-keys -t chat C-c
  wait_for '^EXIT STATUS 0' && ok || { bad "tty: second Ctrl-C did not exit with 0"; screen; }
  grep -q 'Once\\040upon' "$tmp/home/.shoal_chat_history" 2>/dev/null && ok ||
    bad "tty: history file not written"

  # Ctrl-C stops a reply: a random-weight model slow enough (some 200
  # tokens/s) that a 4000-token reply takes many seconds
  tmux -L "$tmux_sock" kill-session -t chat
  "$SHOAL" mkmodel -o "$tmp/slow.gguf" --dim 1024 --ffn 2816 --heads 8 --kv-heads 8 --layers 4 \
    --vocab 4000 --type q8_0 --ctx 4096 >/dev/null 2>&1 || bad "mkmodel failed"
  tmux -L "$tmux_sock" new-session -d -s chat -x 200 -y 50 \
    "HOME='$tmp/home' '$SHOAL' chat -m '$tmp/slow.gguf' --temp 0 -n 4000 -t 1 2>'$tmp/slow.err'; echo \"EXIT STATUS \$?\"; sleep 60"
  wait_for '^> ?$' && ok || { bad "tty slow: no prompt"; screen; }
  tmux -L "$tmux_sock" send-keys -t chat "hello" Enter
  sleep 1
  tmux -L "$tmux_sock" send-keys -t chat C-c
  wait_for '\[stopped\]' && ok || { bad "tty: Ctrl-C did not stop the reply"; screen; }
  wait_for '^> ?$' && ok || { bad "tty: no prompt after a stopped reply"; screen; }
  n=$(sed -n 's/.*generated: \([0-9]*\) tokens.*/\1/p' "$tmp/slow.err")
  [ -n "$n" ] && [ "$n" -gt 0 ] && [ "$n" -lt 4000 ] && ok || { bad "stopped reply generated '$n' tokens"; cat "$tmp/slow.err"; }
  # the stopped reply stays in the conversation; the chat goes on
  tmux -L "$tmux_sock" send-keys -t chat "/clear" Enter
  wait_for 'conversation cleared' && ok || { bad "tty: /clear after a stop"; screen; }
  tmux -L "$tmux_sock" send-keys -t chat C-c
  wait_for 'Ctrl-C again' && ok || { bad "tty: Ctrl-C at the prompt after /clear"; screen; }
  tmux -L "$tmux_sock" send-keys -t chat C-c
  wait_for '^EXIT STATUS 0' && ok || { bad "tty: did not exit after two Ctrl-C"; screen; }
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
