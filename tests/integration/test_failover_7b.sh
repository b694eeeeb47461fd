#!/usr/bin/env bash
# Failover on a model with Llama-2-7B layer shapes (2 blocks of dim 4096,
# ffn 11008, 32 heads, q4_0, random weights; made once with `shoal mkmodel`
# and kept in the build folder): the text generated through nodes that are
# killed, frozen and restarted at chosen steps must equal the local
# generation byte for byte, with replacement nodes that run another thread
# count (the chain starts on R, -t 2; its replacements run -t 1) and other
# span boundaries:
#
#   R 0:2 -t 2   S 0:2 -t 1 (less free cache: R is chosen first)
#   P 0:1 -t 1   Q 1:2 -t 1
#
# Plans (steps of `shoal generate --debug-step-hook`), client-driven and
# with --push: R killed at step 4, then the hop that replaced it frozen at
# step 10 (0:2 moves to P + Q); R killed during the prompt (step 0); and
# the first hop frozen at the very last step.
set -u
: "${SHOAL:?path of the shoal binary}"
here=$(cd "$(dirname "$0")" && pwd)
kit="$here/../chaos.sh"
cache=${SHOAL_BUILD:-/tmp}
model=${FAILOVER_7B_MODEL:-$cache/failover-7b-2l-q4_0.gguf}
tmp=$(mktemp -d)
d=$tmp/swarm
export SHOAL
trap 'bash "$kit" stopall "$d"; rm -rf "$tmp"' EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

if [ ! -s "$model" ]; then
  echo "making $model (once)"
  "$SHOAL" mkmodel -o "$model" --dim 4096 --ffn 11008 --heads 32 --kv-heads 32 --layers 2 \
    --vocab 32000 --type q4_0 >/dev/null || { echo "FAIL: mkmodel"; exit 1; }
fi
N=20
gen() { # [ARGS...]
  timeout 300 "$SHOAL" generate -m "$model" -c 128 --temp 0 -n $N -p "Once upon a time" -t 1 "$@"
}
gen -t 2 >"$tmp/local.txt" 2>"$tmp/local.err" || { echo "FAIL: local run"; cat "$tmp/local.err"; exit 1; }
echo "local: $(sed -n 's/.*generated: /generated: /p' "$tmp/local.err")"

bash "$kit" start "$d" R "$model" 0:2 -t 2 || exit 1
bash "$kit" start "$d" S "$model" 0:2 -t 1 --cache-tokens 2048 || exit 1
bash "$kit" start "$d" P "$model" 0:1 -t 1 || exit 1
bash "$kit" start "$d" Q "$model" 1:2 -t 1 || exit 1
peers=$(bash "$kit" peers "$d")
name() { grep -lxF "$1" "$d"/*.addr | head -n 1 | xargs -r basename | sed 's/\.addr$//'; }

# run LABEL MODE PLAN...: one generation under the plan ("STEP ACTION TARGET")
run() {
  local label=$1 mode=$2 hooks=() line
  shift 2
  printf '%s\n' "$@" >"$tmp/plan"
  while IFS= read -r line; do hooks+=(--debug-step-hook "$line"); done \
    < <(bash "$kit" hooks "$d" "$tmp/plan")
  rm -f "$d/actions"
  local t0=$SECONDS
  gen --peers "$peers" --timeout 20 $mode "${hooks[@]}" >"$tmp/out" 2>"$tmp/err"
  local st=$? k
  k=$(grep -c "failover: " "$tmp/err")
  printf '  %-28s %-6s %3ds  %d failover(s)  [%s]\n' "$label" "${mode:-pull}" $((SECONDS - t0)) \
    "$k" "$(paste -sd, "$d/actions" 2>/dev/null)"
  grep "failover: " "$tmp/err" | sed 's/shoal:\/\/127\.0\.0\.1:[0-9]*\/\([0-9a-f]\{6\}\)[0-9a-f]*/\1/g; s/^/      /'
  [ $st -eq 0 ] && cmp -s "$tmp/out" "$tmp/local.txt" && ok ||
    { bad "$label ${mode:-pull}: exit $st or the text differs from the local run"; cat "$tmp/err"; }
  [ "$k" -ge 1 ] && ok || bad "$label: no failover"
  ! grep -q "differs from the first run" "$tmp/err" && ok || bad "$label: a replay differed"
  bash "$kit" heal "$d" || { echo "FAIL: heal"; exit 1; }
}

for mode in "" --push; do
  run "kill R, freeze its successor" "$mode" "4 kill R" "10 freeze @0"
  # the first failover moved 0:2 (-t 2) onto S (-t 1) whole
  grep -q "failover: blocks 0:2: peer $(cat "$d/R.addr") lost its connection .* now 0:2 $(cat "$d/S.addr") " "$tmp/err" && ok ||
    { bad "0:2 did not move from R (-t 2) to S (-t 1)"; cat "$tmp/err"; }
  # the second split it over P and Q (other boundaries, -t 1)
  grep -q "failover: blocks 0:2: .* now 0:1 $(cat "$d/P.addr"), 1:2 $(cat "$d/Q.addr") " "$tmp/err" && ok ||
    { bad "0:2 did not move to P + Q"; cat "$tmp/err"; }
done
run "R killed during the prompt" "" "0 kill R"
run "frozen at the last step" "--push" "$((N - 1)) freeze @0"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
