#!/usr/bin/env bash
# Failover under chaos, stories260K: six nodes on loopback, every block
# served by at least two of them with different span boundaries
#
#   A 0:2   B 2:5   C 0:3   D 3:5   E 0:1   F 1:5
#
# and every case of ../shared/reference generated through them, once
# client-driven and once with server-to-server forwarding (--push), while
# the kit (tests/chaos.sh) kills (kill -9), freezes (SIGSTOP) or restarts
# one or two nodes of the client's current chain at random steps (seeded:
# CHAOS_SEED) mid-generation. Every run must complete with the reference
# text byte for byte, report at least one failover, and never report a
# replay whose output differs from the first run. Then the edges: a node
# lost while the prompt runs (step 0), and one lost at the very last step.
# After each run the swarm is healed (frozen nodes resumed, dead ones
# started again on the same address).
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
here=$(cd "$(dirname "$0")" && pwd)
kit="$here/../chaos.sh"
model=$SHOAL_SHARED/models/stories260K.gguf
ref=$SHOAL_SHARED/reference
seed=${CHAOS_SEED:-5}
modes=${CHAOS_MODES:-pull push} # what to run: pull (client-driven), push
tmp=$(mktemp -d)
d=$tmp/swarm
export SHOAL
trap 'bash "$kit" stopall "$d"; rm -rf "$tmp"' EXIT
pass=0 fail=0 runs=0 failovers=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

declare -A span=([A]=0:2 [B]=2:5 [C]=0:3 [D]=3:5 [E]=0:1 [F]=1:5)
for n in A B C D E F; do
  bash "$kit" start "$d" $n "$model" "${span[$n]}" -t 1 || { echo "FAIL: node $n"; exit 1; }
done
peers=$(bash "$kit" peers "$d")

# last_step NAME N PROMPT: the index of the client's last blocks call (0 is
# the prompt; one call per generated token that is fed), from a clean run
last_step() {
  timeout 60 "$SHOAL" generate -m "$model" -c 512 --temp 0 -n "$2" -p "$3" -t 1 \
    --peers "$peers" >/dev/null 2>"$tmp/clean.err" || { echo -1; return; }
  local g
  g=$(sed -n 's/.*generated: \([0-9]*\) tokens.*/\1/p' "$tmp/clean.err")
  # every generated token is fed but the last one when -n stopped it
  if [ "$g" -eq "$2" ]; then echo $((g - 1)); else echo "$g"; fi
}

# chaos NAME N PROMPT MODE PLANFILE: one generation under the plan's actions
chaos() {
  local name=$1 n=$2 prompt=$3 mode=$4 plan=$5 hooks=() line
  while IFS= read -r line; do hooks+=(--debug-step-hook "$line"); done \
    < <(bash "$kit" hooks "$d" "$plan")
  rm -f "$d/actions"
  runs=$((runs + 1))
  local t0=$SECONDS
  timeout 120 "$SHOAL" generate -m "$model" -c 512 --temp 0 -n "$n" -p "$prompt" -t 1 \
    --peers "$peers" --timeout 5 --max-retries 4 $mode "${hooks[@]}" \
    >"$tmp/out" 2>"$tmp/err"
  local st=$? took=$((SECONDS - t0))
  local acts k
  acts=$(paste -sd, "$d/actions" 2>/dev/null)
  k=$(grep -c "^shoal generate: failover: " "$tmp/err")
  failovers=$((failovers + k))
  printf '  %-14s %-6s %2ds  %d failover(s)  [%s]\n' "$name" "${mode:-pull}" "$took" "$k" "$acts"
  if [ $st -ne 0 ] || ! cmp -s "$tmp/out" "$ref/$name.txt"; then
    bad "$name ${mode:-pull} [$acts]: exit $st or output differs"; cat "$tmp/err"
    cmp "$tmp/out" "$ref/$name.txt"
  else
    ok
  fi
  [ "$k" -ge 1 ] && ok || { bad "$name ${mode:-pull}: no failover reported [$acts]"; cat "$tmp/err"; }
  ! grep -q "differs from the first run" "$tmp/err" && ok ||
    { bad "$name ${mode:-pull}: a replay gave other hidden states"; grep differs "$tmp/err"; }
  bash "$kit" heal "$d" || { echo "FAIL: cannot heal the swarm"; exit 1; }
}

declare -A last
while IFS=$'\t' read -r name n prompt; do
  last[$name]=$(last_step "$name" "$n" "$prompt")
  [ "${last[$name]}" -ge 2 ] || { echo "FAIL: clean run of $name"; cat "$tmp/clean.err"; exit 1; }
done <"$ref/cases.tsv"

flag() { [ "$1" = push ] && echo --push; }
i=0
for m in $modes; do
  mode=$(flag $m)
  echo "${mode:-client-driven}:"
  while IFS=$'\t' read -r name n prompt; do
    i=$((i + 1))
    # one or two of the chain's hops, at random steps in 1..last
    count=$(( (seed + i) % 2 + 1 ))
    bash "$kit" plan $((seed * 1000 + i)) $((last[$name] + 1)) $count @0 @1 >"$tmp/plan"
    chaos "$name" "$n" "$prompt" "$mode" "$tmp/plan"
  done <"$ref/cases.tsv"
done

echo "edges:"
for m in $modes; do
  mode=$(flag $m)
  # lost during the prompt: the first hop killed, the second frozen
  printf '0 kill @0\n0 freeze @1\n' >"$tmp/plan"
  chaos once-256 252 "Once upon a time" "$mode" "$tmp/plan"
  # lost at the very last step
  printf '%s freeze @1\n' "${last[lily-tom-256]}" >"$tmp/plan"
  chaos lily-tom-256 252 "Lily and Tom" "$mode" "$tmp/plan"
  printf '%s kill @0\n' "${last[zoo-64]}" >"$tmp/plan"
  chaos zoo-64 61 "Zoo" "$mode" "$tmp/plan"
done

echo "$runs runs under chaos, $failovers failovers"
[ "$runs" -ge 20 ] && ok || bad "only $runs runs"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
