#!/usr/bin/env bash
# Benchmark (not a test): the per-hop overhead of generating through a chain
# of nodes on loopback (CURVE on), against the same model run locally.
#
#   tests/bench_chain.sh [RUNS]        (default 3 runs of each setup)
#
# Environment: SHOAL (the binary; default build/shoal), SHOAL_SHARED (the
# shared folder; default ../shared), BIG (the Llama-2-7B-shaped model; made
# with `shoal mkmodel` when missing, ~30 s), CODECS (default "f32"), N
# (tokens per run, default 64).
#
# Two models, 4 nodes each, every process with one compute thread, so each
# block runs on one core either way and the difference is the chain's cost
# (serialization, encryption, four loopback round trips per token, the
# node's scheduling):
#   stories260K  5 blocks, nodes 0:2 2:3 3:4 4:5
#   BIG          4 blocks of Llama-2-7B shapes (q8_0), one block per node
# Runs alternate (local, then each codec through the chain) so that all
# setups see the same background load. It prints the median and the best
# of RUNS runs of `shoal generate -n N` (generation tok/s from its stderr)
# as ms per token; on a busy machine the best is the steadier figure.
set -u
here=$(cd "$(dirname "$0")" && pwd)
SHOAL=${SHOAL:-$here/../build/shoal}
SHOAL_SHARED=${SHOAL_SHARED:-$here/../../shared}
BIG=${BIG:-/tmp/models/7b-q8_0.gguf}
CODECS=${CODECS:-f32}
N=${N:-64}
runs=${1:-3}
[ -x "$SHOAL" ] || { echo "no shoal binary at $SHOAL (set SHOAL)"; exit 1; }
tmp=$(mktemp -d)
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
trap 'stop_nodes; rm -rf "$tmp"' EXIT

start_nodes() { # MODEL SPAN...: the comma-joined addresses into $peers
  local m=$1 k=0 s list=""
  shift
  for s in "$@"; do
    k=$((k + 1))
    rm -f "$tmp/n$k.addr"
    "$SHOAL" serve -m "$m" --blocks "$s" --port 0 --host 127.0.0.1 --address-file "$tmp/n$k.addr" \
      -t 1 --log-level warn >/dev/null 2>"$tmp/n$k.log" &
    pids+=($!)
  done
  for k in $(seq $#); do
    for i in $(seq 600); do [ -s "$tmp/n$k.addr" ] && break; sleep 0.1; done
    [ -s "$tmp/n$k.addr" ] || { echo "node $k did not start:" >&2; cat "$tmp/n$k.log" >&2; exit 1; }
    list="$list${list:+,}$(cat "$tmp/n$k.addr")"
  done
  peers=$list
}

# gen_tps MODEL ARGS...: generation tok/s of one run
gen_tps() {
  local m=$1
  shift
  "$SHOAL" generate -m "$m" --temp 0 -n "$N" -p "Once upon a time" -t 1 "$@" \
    >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err" >&2; echo 0; return; }
  sed -n 's/.*generated: \([0-9]*\) tokens, \([0-9.]*\) tok\/s.*/\1 \2/p' "$tmp/err" | tail -1
}

# ms per generated token of one run, and the token count
run_ms() {
  gen_tps "$@" | awk '{ if ($2 > 0) printf "%.4f %d\n", 1000 / $2, $1; else print "nan 0" }'
}
median() { sort -n "$1" | awk '{ v[NR] = $1 } END { printf "%.3f", v[int((NR + 1) / 2)] }'; }
best() { sort -n "$1" | head -1; }

bench() { # LABEL MODEL SPAN...
  local label=$1 m=$2
  shift 2
  cat "$m" >/dev/null # warm the page cache for both sides alike
  start_nodes "$m" "$@"
  gen_tps "$m" --peers "$peers" >/dev/null # first contact: handshakes, first touch of pages
  local r c ms ntok
  rm -f "$tmp"/ms.*
  # interleaved, so that both sides see the same background load
  for r in $(seq "$runs"); do
    read -r ms ntok < <(run_ms "$m")
    echo "$ms" >>"$tmp/ms.local"
    for c in $CODECS; do
      read -r ms _ < <(run_ms "$m" --peers "$peers" --codec "$c")
      echo "$ms" >>"$tmp/ms.$c"
    done
  done
  local loc rem stat
  echo "$label: $ntok tokens per run, $runs runs"
  for stat in median best; do
    loc=$($stat "$tmp/ms.local")
    printf "  %-6s %-22s %8.3f ms/token\n" "$stat" "local (1 thread)" "$loc"
    for c in $CODECS; do
      rem=$($stat "$tmp/ms.$c")
      echo "$rem $loc $c $stat" | awk '{ printf "  %-6s %-22s %8.3f ms/token  (%+.1f%%; %+.3f ms per token, %+.3f ms per hop)\n",
        $4, "4 nodes, " $3, $1, ($1 / $2 - 1) * 100, $1 - $2, ($1 - $2) / 4 }'
    done
  done
  stop_nodes
}

bench "stories260K (5 blocks: 0:2 2:3 3:4 4:5)" "$SHOAL_SHARED/models/stories260K.gguf" \
  0:2 2:3 3:4 4:5

if [ ! -s "$BIG" ]; then
  echo "making $BIG (Llama-2-7B layer shapes, 4 layers, q8_0) ..."
  mkdir -p "$(dirname "$BIG")"
  "$SHOAL" mkmodel -o "$BIG" --dim 4096 --ffn 11008 --heads 32 --kv-heads 32 --layers 4 \
    --vocab 32000 --type q8_0 >/dev/null || exit 1
fi
bench "Llama-2-7B shapes, 4 layers q8_0 (1 block per node)" "$BIG" 0:1 1:2 2:3 3:4
