#!/usr/bin/env bash
# Benchmark (not a test): fault tolerance and forwarding on loopback.
#
#   tests/bench_failover.sh [RUNS]      (default 10 failover runs per kind)
#
# 1. Forwarding: decode time per token through 4 nodes (one span each,
#    -t 1, CURVE on), client-driven (a round trip per hop) against
#    --push (one pass through the chain, the nodes pass hidden states on),
#    for stories260K and for BIG, a Llama-2-7B-shaped model (4 blocks,
#    1 per node). Median and best of 3 runs of N tokens each.
# 2. Failover: RUNS generations of stories260K and RUNS of BIG through a
#    swarm with every span served twice, each with one node killed (kill -9)
#    or frozen (SIGSTOP) at a random step of the chain (tests/chaos.sh,
#    seeded). From the client's failover lines: the time from the failure
#    (as the client meets it: the request to the dead node) to the next
#    token, split into detection (until the failure is seen), re-routing
#    (plan and open sessions on the replacement) and replay (rebuilding its
#    cache), p50 and p95 of each, per kind of failure.
#
# Environment: SHOAL (the binary; default build/shoal), SHOAL_SHARED (the
# shared folder; default ../shared), BIG (default /tmp/models/7b-q8_0.gguf,
# made with `shoal mkmodel` when missing, ~30 s), N (tokens, default 64).
set -u
here=$(cd "$(dirname "$0")" && pwd)
SHOAL=${SHOAL:-$here/../build/shoal}
SHOAL_SHARED=${SHOAL_SHARED:-$here/../../shared}
BIG=${BIG:-/tmp/models/7b-q8_0.gguf}
N=${N:-64}
runs=${1:-10}
kit=$here/chaos.sh
export SHOAL
[ -x "$SHOAL" ] || { echo "no shoal binary at $SHOAL (set SHOAL)"; exit 1; }
small=$SHOAL_SHARED/models/stories260K.gguf
tmp=$(mktemp -d)
trap 'for s in "$tmp"/sw*; do bash "$kit" stopall "$s"; done 2>/dev/null; rm -rf "$tmp"' EXIT
if [ ! -s "$BIG" ]; then
  mkdir -p "$(dirname "$BIG")"
  echo "making $BIG (~30 s)"
  "$SHOAL" mkmodel -o "$BIG" --dim 4096 --ffn 11008 --heads 32 --kv-heads 32 --layers 4 \
    --vocab 32000 --type q8_0 >/dev/null || exit 1
fi

# stats: median and best of the numbers on stdin
med_best() { sort -g | awk '{ v[NR] = $1 } END { printf "median %7.2f  best %7.2f", v[int((NR + 1) / 2)], v[1] }'; }
pct() { # P: the P-th percentile of the numbers on stdin (nearest rank)
  sort -g | awk -v p="$1" '{ v[NR] = $1 } END { if (!NR) { print "-"; exit } i = int(NR * p / 100 + 0.999); if (i < 1) i = 1; printf "%.0f", v[i] }'
}
ms_per_tok() { sed -n 's/.*generated: [0-9]* tokens, \([0-9.]*\) tok\/s.*/\1/p' "$1" | awk '{ if ($1 > 0) printf "%.3f\n", 1000 / $1 }'; }

echo "== forwarding: decode ms/token through 4 nodes on loopback (N=$N) =="
fwd() { # LABEL MODEL SPAN...
  local label=$1 m=$2 d=$tmp/sw-fwd-$1 k=0
  shift 2
  for s in "$@"; do k=$((k + 1)); bash "$kit" start "$d" n$k "$m" "$s" -t 1 || exit 1; done
  local peers
  peers=$(bash "$kit" peers "$d")
  : >"$tmp/pull" && : >"$tmp/push" && : >"$tmp/local"
  for r in 1 2 3; do
    "$SHOAL" generate -m "$m" -c 512 --temp 0 -n "$N" -p "Once upon a time" -t 1 \
      >/dev/null 2>"$tmp/e" && ms_per_tok "$tmp/e" >>"$tmp/local"
    for mode in pull push; do
      "$SHOAL" generate -m "$m" -c 512 --temp 0 -n "$N" -p "Once upon a time" -t 1 \
        --peers "$peers" $([ $mode = push ] && echo --push) >/dev/null 2>"$tmp/e" &&
        ms_per_tok "$tmp/e" >>"$tmp/$mode"
    done
  done
  printf '  %-12s local   %s\n' "$label" "$(med_best <"$tmp/local")"
  printf '  %-12s pull    %s\n' "" "$(med_best <"$tmp/pull")"
  printf '  %-12s push    %s\n' "" "$(med_best <"$tmp/push")"
  bash "$kit" stopall "$d"
}
fwd stories260K "$small" 0:2 2:3 3:4 4:5
fwd 7B-shaped "$BIG" 0:1 1:2 2:3 3:4

echo "== failover: from the failure to the next token, ms (p50 / p95 over $runs runs) =="
fo() { # LABEL MODEL N SPAN...
  local label=$1 m=$2 n=$3 d=$tmp/sw-fo-$1 k=0
  shift 3
  for s in "$@"; do k=$((k + 1)); bash "$kit" start "$d" n$k "$m" "$s" -t 1 || exit 1; done
  local peers
  peers=$(bash "$kit" peers "$d")
  for kind in kill freeze; do
    : >"$tmp/fo"
    for r in $(seq "$runs"); do
      local step=$(( (r * 7919) % (n - 4) + 2 ))
      "$SHOAL" generate -m "$m" -c 512 --temp 0 -n "$n" -p "Once upon a time" -t 1 \
        --peers "$peers" --timeout 30 \
        --debug-step-hook "$step:SHOAL=$SHOAL bash $kit act $d $kind @$((r % 2))" \
        >/dev/null 2>"$tmp/e" || { echo "  run failed:"; cat "$tmp/e"; }
      # "(seen after D ms); now ... (plan P ms, open O ms, replay of K positions T ms)"
      sed -n 's/.*seen after \([0-9]*\) ms.*plan \([0-9]*\) ms, open \([0-9]*\) ms, replay of [0-9]* positions \([0-9]*\) ms.*/\1 \2 \3 \4/p' \
        "$tmp/e" | head -n 1 >>"$tmp/fo"
      bash "$kit" heal "$d" || exit 1
    done
    local det rer rep tot
    det=$(awk '{ print $1 }' "$tmp/fo")
    rer=$(awk '{ print $2 + $3 }' "$tmp/fo")
    rep=$(awk '{ print $4 }' "$tmp/fo")
    tot=$(awk '{ print $1 + $2 + $3 + $4 }' "$tmp/fo")
    printf '  %-12s %-6s %2d runs  detect %4s / %-4s  re-route %4s / %-4s  replay %4s / %-4s  total %4s / %s\n' \
      "$label" "$kind" "$(wc -l <"$tmp/fo")" \
      "$(pct 50 <<<"$det")" "$(pct 95 <<<"$det")" "$(pct 50 <<<"$rer")" "$(pct 95 <<<"$rer")" \
      "$(pct 50 <<<"$rep")" "$(pct 95 <<<"$rep")" "$(pct 50 <<<"$tot")" "$(pct 95 <<<"$tot")"
  done
  bash "$kit" stopall "$d"
}
fo stories260K "$small" 120 0:2 2:5 0:3 3:5 0:1 1:5
fo 7B-shaped "$BIG" 24 0:2 2:4 0:2 2:4
