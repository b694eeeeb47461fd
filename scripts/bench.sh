#!/usr/bin/env bash
# The benchmark table of docs/BENCHMARKS.md: random-weight models with
# Llama-2-7B layer shapes (4 blocks, vocab 32000) in F16, Q8_0 and Q4_0,
# prompt (128 tokens) and decode (32 tokens) with 1 and 2 threads.
#   scripts/bench.sh [MODEL_DIR]   (default /tmp/shoal-bench; models are made once, ~3.7 GB)
# A benchmark prints numbers; run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/shoal-bench}
bin=./build/shoal
[ -x "$bin" ] || { echo "build first: scripts/setup.sh --no-run" >&2; exit 1; }
mkdir -p "$dir"
for t in f16 q8_0 q4_0; do
  m=$dir/7b-$t.gguf
  [ -s "$m" ] || "$bin" mkmodel -o "$m" --dim 4096 --ffn 11008 --heads 32 --kv-heads 32 \
                   --layers 4 --vocab 32000 --type "$t" --seed 1 >&2
done
printf '%-6s %-7s %12s %12s %12s %10s\n' type threads "pp128 tok/s" "tg32 tok/s" "bound tok/s" "of bound"
for t in f16 q8_0 q4_0; do
  for th in 1 2; do
    "$bin" bench -m "$dir/7b-$t.gguf" -p 128 -n 32 -t "$th" -r 3 --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("%-6s %-7d %12.1f %12.2f %12.2f %9.0f%%" % (r["type"], r["threads"], r["prompt_tps"],
      r["decode_tps"], r["decode_bound_tps"], 100 * r["decode_fraction_of_bound"]))'
  done
done
