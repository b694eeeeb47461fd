#!/usr/bin/env bash
# `shoal keygen` and the life of a `shoal serve` process: identity files
# (created 0600, never overwritten, refused when others may read them, the
# same key across restarts), the printed address and --address-file, --port 0,
# a port already taken, bad arguments, and a clean exit 0 on SIGTERM and
# SIGINT. RPCs are tested by tests/unit/test_node_rpc.c and test_node_hostile.c.
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
model=$SHOAL_SHARED/models/stories260K.gguf
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
# forget PID: it has been reaped, so its number may belong to someone else now
forget() {
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}
trap cleanup EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# start NAME ARGS...: run `shoal serve ARGS` in the background, PID in $pid
start() {
  local name=$1; shift
  "$SHOAL" serve -m "$model" --host 127.0.0.1 -t 1 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pid=$!
  pids+=("$pid")
}

# wait_file FILE: up to 20 s for FILE to exist and be non-empty
wait_file() {
  for _ in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.1; done
  return 1
}

# stop PID SIGNAL: the exit status, or 255 if it had to be killed after 5 s
stop() {
  local st
  kill -"$2" "$1" 2>/dev/null
  for _ in $(seq 50); do
    if ! kill -0 "$1" 2>/dev/null; then wait "$1"; st=$?; forget "$1"; return $st; fi
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null; wait "$1" 2>/dev/null; forget "$1"
  return 255
}

# expect STATUS CMD...: exit status, nothing on stdout for errors
expect() {
  local want=$1; shift
  timeout 30 "$@" >"$tmp/x.out" 2>"$tmp/x.err"
  local got=$?
  if [ "$got" -ne "$want" ]; then bad "'$*' exited $got, expected $want"; cat "$tmp/x.err"; return 1; fi
  if [ "$want" -ne 0 ] && [ -s "$tmp/x.out" ]; then bad "'$*' wrote to stdout on error"; return 1; fi
  ok
}

mode() { stat -c %a "$1"; }

# ---- keygen --------------------------------------------------------------
expect 0 "$SHOAL" --help
grep -q "serve" "$tmp/x.out" && grep -q "keygen" "$tmp/x.out" && ok || bad "--help lacks serve/keygen"
expect 0 "$SHOAL" keygen --help
expect 0 "$SHOAL" serve --help
grep -q -- "--address-file" "$tmp/x.out" && ok || bad "serve --help lacks --address-file"
expect 2 "$SHOAL" keygen
expect 0 "$SHOAL" keygen -o "$tmp/id.key"
key=$(cat "$tmp/x.out")
[[ "$key" =~ ^[0-9a-f]{64}$ ]] && ok || bad "keygen printed '$key', not a key"
[ "$(mode "$tmp/id.key")" = 600 ] && ok || bad "identity mode $(mode "$tmp/id.key")"
cp "$tmp/id.key" "$tmp/id.copy"
expect 1 "$SHOAL" keygen -o "$tmp/id.key"
grep -q "never overwritten" "$tmp/x.err" && ok || bad "overwrite refusal message"
cmp -s "$tmp/id.key" "$tmp/id.copy" && ok || bad "keygen overwrote an identity"

# ---- serve: address, address file, identity --------------------------------
start a --blocks 0:2 --port 0 --identity "$tmp/id.key" --address-file "$tmp/a.addr"
a=$pid
if wait_file "$tmp/a.addr"; then
  addr=$(cat "$tmp/a.addr")
  [ "$(wc -l <"$tmp/a.addr")" -eq 1 ] && ok || bad "address file is not one line"
  if [[ "$addr" =~ ^shoal://127\.0\.0\.1:([0-9]+)/([0-9a-f]{64})$ ]]; then
    ok; port=${BASH_REMATCH[1]}; akey=${BASH_REMATCH[2]}
  else
    bad "address '$addr'"; port=0; akey=
  fi
  [ "$akey" = "$key" ] && ok || bad "address key is not the identity's"
  [ "$port" -gt 0 ] && ok || bad "port 0 was not replaced"
  for _ in $(seq 50); do [ -s "$tmp/a.out" ] && break; sleep 0.1; done
  [ "$(cat "$tmp/a.out")" = "$addr" ] && ok || bad "stdout '$(cat "$tmp/a.out")' != address file"
  ls "$tmp" | grep -q '\.tmp\.' && bad "a temporary address file was left" || ok

  # the same port again: refused with one clear line
  start b --blocks 2:5 --port "$port"
  b=$pid
  for _ in $(seq 100); do kill -0 "$b" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$b" 2>/dev/null; then
    bad "a second node took a port in use"; stop "$b" KILL
  else
    wait "$b"; st=$?; forget "$b"
    [ "$st" -eq 1 ] && ok || bad "port in use: exit $st"
    grep -q "cannot listen" "$tmp/b.err" && ok || bad "port in use: no clear message"
  fi

  t0=$(date +%s%N)
  stop "$a" TERM; st=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ "$st" -eq 0 ] && ok || bad "SIGTERM: exit $st"
  [ "$ms" -lt 3000 ] && ok || bad "SIGTERM took $ms ms"
else
  bad "no address file"; cat "$tmp/a.err"; stop "$a" KILL
fi

# a missing identity file is created (0600), and gives the same key next time
start c --blocks 4:5 --identity "$tmp/new.key" --address-file "$tmp/c.addr"
c=$pid
if wait_file "$tmp/c.addr"; then
  [ "$(mode "$tmp/new.key")" = 600 ] && ok || bad "created identity mode $(mode "$tmp/new.key")"
  first=$(cat "$tmp/c.addr")
  stop "$c" INT; st=$?
  [ "$st" -eq 0 ] && ok || bad "SIGINT: exit $st"
  rm -f "$tmp/c.addr"
  start c2 --blocks 4:5 --identity "$tmp/new.key" --address-file "$tmp/c.addr"
  c2=$pid
  if wait_file "$tmp/c.addr"; then
    [ "${first##*/}" = "$(sed 's,.*/,,' "$tmp/c.addr")" ] && ok || bad "key changed across restarts"
  else
    bad "restart: no address"; cat "$tmp/c2.err"
  fi
  stop "$c2" TERM >/dev/null
else
  bad "missing identity: no address"; cat "$tmp/c.err"; stop "$c" KILL
fi

# an identity others may read is refused
chmod 644 "$tmp/id.copy"
expect 1 "$SHOAL" serve -m "$model" --blocks 0:1 --host 127.0.0.1 --identity "$tmp/id.copy"
grep -q "chmod 600" "$tmp/x.err" && ok || bad "group-readable identity: message"
echo "not a key" >"$tmp/junk.key"; chmod 600 "$tmp/junk.key"
expect 1 "$SHOAL" serve -m "$model" --blocks 0:1 --host 127.0.0.1 --identity "$tmp/junk.key"

# ---- bad arguments -----------------------------------------------------------
expect 2 "$SHOAL" serve -m "$model"
expect 2 "$SHOAL" serve --blocks 0:1
expect 2 "$SHOAL" serve -m "$model" --blocks 3:2
expect 2 "$SHOAL" serve -m "$model" --blocks 1
expect 2 "$SHOAL" serve -m "$model" --blocks 0:9 --host 127.0.0.1
grep -q "0:5" "$tmp/x.err" && ok || bad "out-of-range span: message lacks the model's 0:5"
expect 2 "$SHOAL" serve -m "$model" --blocks 0:1 --port 70000
expect 2 "$SHOAL" serve -m "$model" --blocks 0:1 --threads 0
expect 2 "$SHOAL" serve -m "$model" --blocks 0:1 --log-level loud
expect 2 "$SHOAL" serve -m "$model" --blocks 0:1 --bogus
expect 1 "$SHOAL" serve -m "$tmp/missing.gguf" --blocks 0:1
expect 1 "$SHOAL" serve -m "$model" --blocks 0:1 --host 203.0.113.1 --port 0

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
