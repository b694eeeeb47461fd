#!/usr/bin/env bash
# Benchmark (not a test): LoRA training tokens/s locally and through a
# 4-node loopback chain, on a model with Llama-2-7B layer shapes.
#
#   tests/bench_finetune.sh [STEPS]        (default 3 optimizer steps per run)
#
# Environment: SHOAL (the binary; default build/shoal), BIG (the
# Llama-2-7B-shaped model: 4 blocks, q8_0; made with `shoal mkmodel` when
# missing), SEQ (tokens per sequence, default 64), BATCH (sequences per
# step, default 1), RANK (default 8).
#
# Every process has one compute thread, so each block runs on one core
# either way: locally the client runs the 4 blocks itself; through the
# chain each node runs one block (0:1 1:2 2:3 3:4) and the client only
# the embedding and head. A step is forward, backward (recomputing the
# blocks' activations from their kept inputs) and an AdamW step; only
# activations and gradients cross the wire (f32). The figure is the
# tokens/s `shoal finetune` reports over its steps (after one warm-up
# step that is not counted), and the chain's share of the local figure.
set -u
here=$(cd "$(dirname "$0")" && pwd)
SHOAL=${SHOAL:-$here/../build/shoal}
BIG=${BIG:-/tmp/models/7b-q8_0.gguf}
SEQ=${SEQ:-64}
BATCH=${BATCH:-1}
RANK=${RANK:-8}
steps=${1:-3}
[ -x "$SHOAL" ] || { echo "no shoal binary at $SHOAL (set SHOAL)"; exit 1; }
tmp=$(mktemp -d /tmp/bench-finetune.XXXXXX)
pids=()
stop_nodes() {
  local p i
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  pids=()
}
trap 'stop_nodes; [ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT

if [ ! -s "$BIG" ]; then
  echo "making $BIG (Llama-2-7B layer shapes, 4 layers, q8_0) ..."
  mkdir -p "$(dirname "$BIG")"
  "$SHOAL" mkmodel -o "$BIG" --dim 4096 --ffn 11008 --heads 32 --kv-heads 32 --layers 4 \
    --vocab 32000 --type q8_0 >/dev/null || exit 1
fi
cat "$BIG" >/dev/null # warm the page cache for both sides alike

# some text: any bytes tokenize
for i in $(seq 200); do echo "The quick brown fox $i jumps over the lazy dog near the river bank."; done \
  >"$tmp/text.txt"

k=0
list=""
for s in 0:1 1:2 2:3 3:4; do
  k=$((k + 1))
  "$SHOAL" serve -m "$BIG" --blocks "$s" --port 0 --host 127.0.0.1 --address-file "$tmp/n$k.addr" \
    -t 1 --log-level warn >/dev/null 2>"$tmp/n$k.log" &
  pids+=($!)
done
for k in 1 2 3 4; do
  for i in $(seq 600); do [ -s "$tmp/n$k.addr" ] && break; sleep 0.1; done
  [ -s "$tmp/n$k.addr" ] || { echo "node $k did not start:" >&2; cat "$tmp/n$k.log" >&2; exit 1; }
  list="$list${list:+,}$(cat "$tmp/n$k.addr")"
done

run() { # LABEL ARGS...: prints tokens/s
  local label=$1
  shift
  "$SHOAL" finetune -m "$BIG" --data "$tmp/text.txt" --out "$tmp/a.gguf" --steps "$((steps + 1))" \
    --batch "$BATCH" --seq-len "$SEQ" --rank "$RANK" --eval 0 -t 1 "$@" 2>"$tmp/$label.log" ||
    { cat "$tmp/$label.log" >&2; echo 0; return; }
  # tokens/s of the steps after the first (the progress lines' per-step figures)
  sed -n 's/^step \([0-9]*\)\/[0-9]* loss [0-9.]* tok\/s \([0-9.]*\)$/\1 \2/p' "$tmp/$label.log" |
    awk '$1 > 1 { s += 1 / $2; n++ } END { if (n) printf "%.1f\n", n / s; else print 0 }'
}

loc=$(run local)
rem=$(run chain --peers "$list" --timeout 600)
echo "LoRA training, Llama-2-7B shapes, 4 blocks q8_0, rank $RANK, $BATCH x $SEQ tokens per step, $steps steps:"
printf "  %-28s %8.1f tokens/s\n" "local (1 thread)" "$loc"
echo "$rem $loc" | awk '{ printf "  %-28s %8.1f tokens/s  (%.0f%% of local)\n", "4 nodes, 1 block each, f32", $1, ($2 > 0 ? 100 * $1 / $2 : 0) }'
