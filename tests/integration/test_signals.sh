#!/usr/bin/env bash
# Stop signals reach the commands' clean stops: OpenBLAS starts a thread
# from its library constructor, before main() blocks SIGINT/SIGTERM, and the
# kernel may hand a process-wide signal to that thread (client/main.c passes
# it on to the main thread). Each daemon is stopped with SIGTERM several
# times and must exit 0 (it used to die with 143 every time: bootstrap);
# a command without a clean stop still dies of the signal (143).
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
model=$SHOAL_SHARED/models/stories260K.gguf
. "$(dirname "$0")/lib.sh"

# stop_rc NAME CMD...: start, wait until it wrote its address, SIGTERM; the exit status
stop_rc() {
  local name=$1; shift
  rm -f "$tmp/$name.addr"
  "$@" --address-file "$tmp/$name.addr" >/dev/null 2>"$tmp/$name.log" &
  local p=$!
  pids+=($p)
  wait_file "$tmp/$name.addr" 20 || { echo "FAIL: $name wrote no address" >&2; cat "$tmp/$name.log" >&2; }
  kill -TERM "$p"
  local i
  for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  wait "$p"
}
for i in 1 2 3 4 5; do
  stop_rc boot "$SHOAL" bootstrap --port 0 --host 127.0.0.1
  rc=$?; [ "$rc" = 0 ] && ok || bad "bootstrap, SIGTERM #$i: exit $rc"
done
for i in 1 2 3; do
  stop_rc serve "$SHOAL" serve -m "$model" --blocks 0:5 --host 127.0.0.1 --port 0 -t 1 --grace 0
  rc=$?; [ "$rc" = 0 ] && ok || bad "serve, SIGTERM #$i: exit $rc"
done
stop_rc api "$SHOAL" api -m "$model" --port 0
rc=$?; [ "$rc" = 0 ] && ok || bad "api, SIGTERM: exit $rc"
# no clean stop of its own: the default action, as before
"$SHOAL" mkmodel -o "$tmp/big.gguf" --dim 2048 --ffn 5632 --heads 16 --kv-heads 16 --layers 8 \
  --vocab 32000 --type f16 >/dev/null 2>&1 &
p=$!
pids+=($p)
sleep 0.5
kill -TERM "$p"
wait "$p"
rc=$?
[ "$rc" = 143 ] && ok || bad "mkmodel, SIGTERM: exit $rc (expected 143)"
finish
