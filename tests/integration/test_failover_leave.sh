#!/usr/bin/env bash
# Graceful leave, stories260K on loopback: a node stopped with SIGTERM in
# the middle of a generation (shoal serve --grace) refuses new sessions,
# flags its replies, and the client moves that span to another node before
# the node goes: the generation ends with the reference text, no error, no
# failover, and one replay of the moved span only; the node exits 0 as
# soon as the client's session is gone. Client-driven and with --push.
# When nobody else serves the span, the client stays on the leaving node
# until its generation ends (the node waits for it, up to its grace), and
# a new client is told the node is leaving.
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
model=$SHOAL_SHARED/models/stories260K.gguf
ref=$SHOAL_SHARED/reference
tmp=$(mktemp -d)
pids=()
cleanup() {
  local p i
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

start() { # NAME A:B [serve options...]: pid in pid_NAME
  local n=$1 b=$2
  shift 2
  rm -f "$tmp/$n.addr"
  "$SHOAL" serve -m "$model" --blocks "$b" --port 0 --host 127.0.0.1 -t 1 \
    --address-file "$tmp/$n.addr" --identity "$tmp/$n.id" "$@" >/dev/null 2>"$tmp/$n.log" &
  pids+=($!)
  eval "pid_$n=$!"
  local i
  for i in $(seq 100); do [ -s "$tmp/$n.addr" ] && return 0; sleep 0.1; done
  echo "FAIL: node $n wrote no address"; cat "$tmp/$n.log"; exit 1
}
addr() { cat "$tmp/$1.addr"; }
# exited PID SECONDS: wait (bounded) for a child to exit; its status in $st
exited() {
  local i
  for i in $(seq $(($2 * 10))); do
    if ! kill -0 "$1" 2>/dev/null; then wait "$1"; st=$?; return 0; fi
    sleep 0.1
  done
  st=none
  return 1
}

for mode in "" --push; do
  echo "${mode:-client-driven}:"
  start A 0:2
  start B 2:5 --grace 20
  start C 2:5 --cache-tokens 4096 # less free cache: the chain starts on B
  peers="$(addr A),$(addr B),$(addr C)"
  t0=$SECONDS
  timeout 60 "$SHOAL" generate -m "$model" -c 512 --temp 0 -n 252 -p "Once upon a time" -t 1 \
    --peers "$peers" --timeout 5 $mode --debug-step-hook "40:kill -TERM $pid_B" \
    >"$tmp/out" 2>"$tmp/err"
  gst=$?
  grep -q "^chain: .*2:5 $(addr B)$" "$tmp/err" && ok || { bad "the chain did not start on B"; cat "$tmp/err"; }
  [ $gst -eq 0 ] && cmp -s "$tmp/out" "$ref/once-256.txt" && ok ||
    { bad "exit $gst or the text differs"; cat "$tmp/err"; }
  grep "^shoal generate: leave: " "$tmp/err" | sed 's/^/  /'
  [ "$(grep -c "^shoal generate: leave: blocks 2:5: peer $(addr B) is leaving; now 2:5 $(addr C) (replay of 4[0-9] positions" "$tmp/err")" -eq 1 ] && ok ||
    { bad "not one move of 2:5 from B to C right after step 40"; cat "$tmp/err"; }
  ! grep -q "failover:" "$tmp/err" && ok || { bad "a failover happened"; cat "$tmp/err"; }
  # B left as soon as the client closed its session there, well within its grace
  exited "$pid_B" 10 && [ "$st" = 0 ] && ok || bad "B: exit status $st"
  [ $((SECONDS - t0)) -lt 12 ] && ok || bad "B took $((SECONDS - t0)) s to leave"
  grep -q "leaving" "$tmp/B.log" && ok || bad "B did not log its leave"
  kill "$pid_A" "$pid_C"
  exited "$pid_A" 10
  exited "$pid_C" 10
done

echo "nobody else serves the span:"
start A 0:2
start B 2:5 --grace 30
peers="$(addr A),$(addr B)"
# at step 20 B is told to leave; at step 60 a second client tries to start
timeout 90 "$SHOAL" generate -m "$model" -c 512 --temp 0 -n 252 -p "Once upon a time" -t 1 \
  --peers "$peers" --timeout 5 --debug-step-hook "20:kill -TERM $pid_B" \
  --debug-step-hook "60:timeout 20 $SHOAL generate -m $model -n 4 -t 1 --peers $peers >/dev/null 2>$tmp/second.err" \
  >"$tmp/out" 2>"$tmp/err"
gst=$?
[ $gst -eq 0 ] && cmp -s "$tmp/out" "$ref/once-256.txt" && ok ||
  { bad "exit $gst or the text differs"; cat "$tmp/err"; }
! grep -Eq "leave:|failover:" "$tmp/err" && ok || { bad "something moved"; cat "$tmp/err"; }
sed 's/^/  second client: /' "$tmp/second.err"
grep -q "no peer serves blocks 2:5 (left out: $(addr B) is leaving)" "$tmp/second.err" && ok ||
  bad "the second client was not told B is leaving"
exited "$pid_B" 10 && [ "$st" = 0 ] && ok || bad "B: exit status $st after its last client"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
