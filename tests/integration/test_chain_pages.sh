#!/usr/bin/env bash
# With --peers the client reads only the tokenizer, embedding and head of
# its model file: on a generated model whose blocks hold almost all of its
# 130 MiB, the client's peak resident memory stays far below the blocks'
# size, while a local run maps them all. Local and remote runs give the same
# text, greedy and sampled (same seed), through a single node serving every
# block.
set -u
: "${SHOAL:?path of the shoal binary}"
tmp=$(mktemp -d)
pids=()
cleanup() {
  local p i
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
[ -x /usr/bin/time ] || { echo "FAIL: /usr/bin/time is needed to measure peak memory"; exit 1; }

# 8 blocks of 16 MiB (f32, dim 512, ffn 2048); embedding and head 0.6 MiB each
model=$tmp/big.gguf
"$SHOAL" mkmodel -o "$model" --dim 512 --ffn 2048 --heads 8 --kv-heads 8 --layers 8 \
  --vocab 300 --type f32 --ctx 256 >/dev/null || { echo "FAIL: mkmodel"; exit 1; }

"$SHOAL" serve -m "$model" --blocks 0:8 --port 0 --host 127.0.0.1 --address-file "$tmp/n.addr" \
  --identity "$tmp/n.id" -t 1 >"$tmp/n.out" 2>"$tmp/n.log" &
pids+=($!)
for i in $(seq 100); do [ -s "$tmp/n.addr" ] && break; sleep 0.1; done
[ -s "$tmp/n.addr" ] || { echo "FAIL: the node wrote no address in 10 s"; cat "$tmp/n.log"; exit 1; }
peer=$(cat "$tmp/n.addr")

# run NAME ARGS...: peak RSS (KiB) into $tmp/NAME.rss, text into $tmp/NAME.out
run() {
  local name=$1
  shift
  timeout 60 /usr/bin/time -f "%M" -o "$tmp/$name.rss" \
    "$SHOAL" generate -m "$model" -n 24 -p "hello" -t 1 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" ||
    { bad "$name failed"; cat "$tmp/$name.err"; }
}
run local --temp 0
run remote --temp 0 --peers "$peer"
run local_s --temp 1 --seed 9
run remote_s --temp 1 --seed 9 --peers "$peer"

cmp -s "$tmp/local.out" "$tmp/remote.out" && ok || bad "greedy text differs local vs remote"
cmp -s "$tmp/local_s.out" "$tmp/remote_s.out" && ok || bad "sampled text differs local vs remote"
grep -q '^chain: 1 hop, codec f32: 0:8 ' "$tmp/remote.err" && ok || { bad "not a 1-hop chain"; cat "$tmp/remote.err"; }

l=$(cat "$tmp/local.rss") r=$(cat "$tmp/remote.rss")
echo "peak resident memory: local $((l / 1024)) MiB, remote $((r / 1024)) MiB (blocks: 128 MiB)"
# the local run maps every block (the measurement works) ...
[ "$l" -gt $((100 * 1024)) ] && ok || bad "local peak RSS ${l} KiB: blocks not resident?"
# ... the remote one touches none of them
[ "$r" -lt $((32 * 1024)) ] && ok || bad "remote peak RSS ${r} KiB: the client touched block pages"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
