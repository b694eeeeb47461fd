#!/usr/bin/env bash
# The swarm through the DHT, end to end on loopback: one bootstrap node and
# five servers of stories260K started together without --blocks (two
# blocks each: they place themselves, and rebalance). Within a bounded time
# `shoal swarm --json` must show every block served by servers that answer,
# and `shoal generate --initial-peers BOOTSTRAP` must give every reference
# case byte for byte. Then two servers go: the ones that hold the least
# covered block, one with SIGTERM (it announces OFFLINE) and one with
# SIGKILL (its records must expire: --record-ttl 10). The first must show
# as offline and the second disappear from the DHT within bounds; a new
# server is started, every block must be served again, and generation must
# give the reference output again. Prints the timings it measured.
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
model=$SHOAL_SHARED/models/stories260K.gguf
ref=$SHOAL_SHARED/reference
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
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

declare -A pid_of
wait_file() { # FILE SECONDS
  local i
  for i in $(seq $(($2 * 10))); do [ -s "$1" ] && return 0; sleep 0.1; done
  return 1
}

"$SHOAL" bootstrap --port 0 --host 127.0.0.1 --address-file "$tmp/boot.addr" \
  >/dev/null 2>"$tmp/boot.log" &
pids+=($!)
wait_file "$tmp/boot.addr" 10 || { echo "FAIL: the bootstrap node wrote no address"; cat "$tmp/boot.log"; exit 1; }
boot=$(cat "$tmp/boot.addr")

# start_server NAME: a server that places itself (2 blocks), short record
# life and fast rebalancing so that the test runs in seconds
start_server() {
  "$SHOAL" serve -m "$model" --host 127.0.0.1 --port 0 --initial-peers "$boot" \
    --num-blocks 2 -t 1 --record-ttl 10 --refresh-period 3 --rebalance-period 4 \
    --grace 1 --address-file "$tmp/$1.addr" --identity "$tmp/$1.id" \
    >/dev/null 2>"$tmp/$1.log" &
  pids+=($!)
  pid_of[$1]=$!
}

# swarm_json: the swarm's view into $tmp/swarm.json; status 0 when complete
swarm_json() {
  timeout 60 "$SHOAL" swarm --initial-peers "$boot" -m "$model" --json >"$tmp/swarm.json" \
    2>"$tmp/swarm.err"
}
# wait_complete SECONDS: until every block is served
wait_complete() {
  local t0 i
  t0=$(now)
  for i in $(seq "$1"); do
    swarm_json && return 0
    sleep 1
  done
  return 1
}

t_start=$(now)
for s in s1 s2 s3 s4 s5; do start_server $s; done
for s in s1 s2 s3 s4 s5; do
  wait_file "$tmp/$s.addr" 30 || { bad "server $s wrote no address"; cat "$tmp/$s.log"; }
done
if wait_complete 60; then
  ok; echo "every block served $(since "$t_start") s after the five servers started"
else
  bad "the five servers do not cover every block within 60 s"; cat "$tmp/swarm.json" "$tmp/swarm.err"
  for s in s1 s2 s3 s4 s5; do grep -h "placement\|moving\|now serving" "$tmp/$s.log"; done
fi
# the JSON says what the test needs: every block, 5 online servers that answered
python3 - "$tmp/swarm.json" <<'EOF' && ok || bad "swarm --json does not show 5 online servers covering every block"
import json, sys
m = json.load(open(sys.argv[1]))["models"][0]
assert m["nblocks"] == 5 and m["complete"], m
live = [s for s in m["servers"] if s["state"] == "online" and s["answered"]]
assert len(live) == 5, [(s["address"], s["state"], s["answered"]) for s in m["servers"]]
for b in m["blocks"]:
    assert b["servers"] >= 1 and b["throughput"] > 0, b
for s in live:
    assert s["throughput"] > 0 and s["rtt_ms"] > 0 and s["free_tokens"] > 0, s
EOF
"$SHOAL" swarm --initial-peers "$boot" -m "$model" | sed 's/^/  /'
for s in s1 s2 s3 s4 s5; do grep -h "placement:\|moving from" "$tmp/$s.log" | sed "s/^/  $s: /"; done

# run_cases LABEL: every reference case through the DHT, byte for byte
run_cases() {
  local name n prompt t0 cases=0 good=0
  t0=$(now)
  while IFS=$'\t' read -r name n prompt; do
    cases=$((cases + 1))
    if timeout 120 "$SHOAL" generate -m "$model" -c 512 --temp 0 -n "$n" -p "$prompt" -t 1 \
         --initial-peers "$boot" --timeout 10 >"$tmp/out" 2>"$tmp/err" &&
       cmp -s "$tmp/out" "$ref/$name.txt"; then
      good=$((good + 1))
    else
      bad "$1: $name"; cat "$tmp/err"; diff <(cat "$ref/$name.txt") "$tmp/out" | head -5
    fi
  done <"$ref/cases.tsv"
  [ "$good" -eq "$cases" ] && ok
  echo "$1: $good/$cases reference cases byte for byte through --initial-peers ($(since "$t0") s)"
}
run_cases "five servers"
grep -h "^DHT:\|^route:\|^chain:" "$tmp/err" | sed 's/^/  /'

# two servers go: those holding the least covered block
swarm_json
read -r v1 v2 < <(python3 - "$tmp/swarm.json" "$tmp" <<'EOF'
import json, sys, glob, os
m = json.load(open(sys.argv[1]))["models"][0]
names = {open(f).read().strip(): os.path.basename(f)[:-5] for f in glob.glob(sys.argv[2] + "/s*.addr")}
blk = min(m["blocks"], key=lambda b: b["servers"])
victims = [names[a] for a in blk["addresses"]][:2]
for s in m["servers"]:
    if len(victims) == 2:
        break
    n = names.get(s["address"])
    if n and n not in victims and s["state"] == "online":
        victims.append(n)
print(*victims)
EOF
)
[ -n "${v1:-}" ] && [ -n "${v2:-}" ] || { bad "cannot pick two servers to stop"; v1=s1; v2=s2; }
a1=$(cat "$tmp/$v1.addr"); a2=$(cat "$tmp/$v2.addr")
echo "stopping $v1 (SIGTERM: OFFLINE) and $v2 (SIGKILL: its records expire)"
t_kill=$(now)
kill -TERM "${pid_of[$v1]}"
kill -9 "${pid_of[$v2]}"
# v1 must show as offline, v2 must vanish (record expiry, <= 10 s + a refresh)
state_of() { # ADDRESS -> online|offline|joining|gone (from $tmp/swarm.json)
  python3 - "$tmp/swarm.json" "$1" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))["models"][0]
st = [s["state"] for s in m["servers"] if s["address"] == sys.argv[2]]
print(st[0] if st else "gone")
EOF
}
t_off="" t_gone=""
for i in $(seq 40); do
  swarm_json
  [ -z "$t_off" ] && [ "$(state_of "$a1")" != online ] && t_off=$(since "$t_kill")
  [ -z "$t_gone" ] && [ "$(state_of "$a2")" = gone ] && t_gone=$(since "$t_kill")
  [ -n "$t_off" ] && [ -n "$t_gone" ] && break
  sleep 1
done
[ -n "$t_off" ] && ok || bad "$v1 (SIGTERM) still shows online 40 s later"
[ -n "$t_gone" ] && ok || bad "$v2 (SIGKILL) still in the DHT 40 s later"
echo "$v1 shown OFFLINE after ${t_off:-?} s; $v2's records expired after ${t_gone:-?} s (ttl 10 s)"

t_new=$(now)
start_server s6
wait_file "$tmp/s6.addr" 30 || bad "s6 wrote no address"
if wait_complete 60; then
  ok; echo "every block served again $(since "$t_new") s after s6 started"
else
  bad "not every block is served 60 s after s6 started"; cat "$tmp/swarm.json"
fi
grep -h "placement:" "$tmp/s6.log" | sed 's/^/  s6: /'
# s6 itself must show online (the others may have closed the gap first)
for i in $(seq 30); do
  [ "$(state_of "$(cat "$tmp/s6.addr")")" = online ] && break
  sleep 1
  swarm_json
done
[ "$(state_of "$(cat "$tmp/s6.addr")")" = online ] && ok || { bad "s6 is not online in the swarm"; cat "$tmp/swarm.json"; }
"$SHOAL" swarm --initial-peers "$boot" -m "$model" | sed 's/^/  /'
run_cases "after the churn"
grep -h "^DHT:\|^route:\|^chain:" "$tmp/err" | sed 's/^/  /'
for s in s1 s2 s3 s4 s5 s6; do grep -h "moving from" "$tmp/$s.log" | sed "s/^/  $s: /"; done

for s in s1 s2 s3 s4 s5 s6; do
  [ "$s" = "$v1" ] || [ "$s" = "$v2" ] && continue
  kill -0 "${pid_of[$s]}" 2>/dev/null && ok || { bad "server $s died"; tail -5 "$tmp/$s.log"; }
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
