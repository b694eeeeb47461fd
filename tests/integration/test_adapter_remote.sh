#!/usr/bin/env bash
# Serving adapters: nodes started with --adapter NAME=FILE announce it; a
# client asking for --adapter NAME is routed only to nodes that serve it and
# gets exactly the text local --lora FILE gives; without --adapter the same
# nodes give the base model's reference text; asking for an adapter no node
# serves is one clear error.
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
model=$SHOAL_SHARED/models/stories260K.gguf
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

story="Zib was a little purple robot who lived on a hill of blue sand. Every morning Zib polished his seven shiny buttons and sang a song about the moon."
for i in 1 2 3 4 5 6; do echo "$story"; done >"$tmp/zib.txt"
timeout 120 "$SHOAL" finetune -m "$model" --data "$tmp/zib.txt" --out "$tmp/zib.gguf" \
  --steps 30 --seq-len 48 --seed 3 -t 1 >/dev/null 2>"$tmp/ft.log" || { cat "$tmp/ft.log"; exit 1; }

# start NAME ARGS...: a node on a free port; its address in $tmp/NAME.addr
start() {
  local name=$1; shift
  "$SHOAL" serve -m "$model" --port 0 --host 127.0.0.1 -t 1 --identity "$tmp/$name.key" \
    --address-file "$tmp/$name.addr" "$@" >"$tmp/$name.log" 2>&1 &
  pids+=($!)
}
start a --blocks 0:2 --adapter zib="$tmp/zib.gguf"
start b --blocks 2:5 --adapter zib="$tmp/zib.gguf"
start plain --blocks 0:5
for i in $(seq 100); do
  [ -s "$tmp/a.addr" ] && [ -s "$tmp/b.addr" ] && [ -s "$tmp/plain.addr" ] && break
  sleep 0.1
done
A=$(cat "$tmp/a.addr") B=$(cat "$tmp/b.addr") P=$(cat "$tmp/plain.addr")

gen() { timeout 60 "$SHOAL" generate -m "$model" -p "Zib was a little" --temp 0 -n 40 -t 1 "$@"; }
gen --lora "$tmp/zib.gguf" >"$tmp/local.txt" 2>/dev/null || bad "local --lora failed"
gen >"$tmp/base.txt" 2>/dev/null
cmp -s "$tmp/local.txt" "$tmp/base.txt" && bad "the trained adapter does not change the text" || ok

# The plain node covers everything in one hop, but does not serve the adapter.
gen --peers "$P,$A,$B" --adapter zib >"$tmp/remote.txt" 2>"$tmp/remote.err"
cmp -s "$tmp/remote.txt" "$tmp/local.txt" && ok || { bad "--adapter through nodes differs from --lora"; cat "$tmp/remote.err"; }
grep -q "$A" "$tmp/remote.err" && grep -q "$B" "$tmp/remote.err" && ! grep -q "chain:.*$P" "$tmp/remote.err" && ok ||
  { bad "the chain did not avoid the node without the adapter"; cat "$tmp/remote.err"; }
# Without --adapter the adapter nodes serve the base model.
gen --peers "$A,$B" >"$tmp/nobase.txt" 2>/dev/null
cmp -s "$tmp/nobase.txt" "$tmp/base.txt" && ok || bad "nodes with an adapter changed the base model's text"
# An adapter nobody serves: one line, exit 1.
gen --peers "$P" --adapter zib >"$tmp/out" 2>"$tmp/err"
[ $? = 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "adapter" "$tmp/err" && ok ||
  { bad "missing adapter: not one clear error"; cat "$tmp/err"; }
# --adapter without nodes is a usage error.
gen --adapter zib >/dev/null 2>&1; [ $? = 2 ] && ok || bad "--adapter without nodes: not a usage error"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
