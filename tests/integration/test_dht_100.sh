#!/usr/bin/env bash
# A real DHT of SHOAL_DHT_NODES (default 100) processes on loopback: bootstrap
# nodes (`shoal bootstrap`, no blocks), each joining through one of the nodes
# started before it. Once all have joined, `shoal dht-probe` (a client)
# looks up random ids, through two different entry nodes: every lookup must
# return the true closest node (checked against all the addresses, by brute
# force), and records put by one client must be read back by another client
# that joined elsewhere, all of them. Prints the timings (start, join,
# lookup latency, hops).
set -u
: "${SHOAL:?path of the shoal binary}"
N=${SHOAL_DHT_NODES:-100}
tmp=$(mktemp -d)
pids=()
cleanup() {
  local p i
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for i in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
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
wait_file() { # FILE SECONDS
  local i
  for i in $(seq $(($2 * 10))); do [ -s "$1" ] && return 0; sleep 0.1; done
  return 1
}

t0=$(now)
"$SHOAL" bootstrap --port 0 --host 127.0.0.1 --address-file "$tmp/n0.addr" \
  --log-level warn >/dev/null 2>"$tmp/n0.log" &
pids+=($!)
wait_file "$tmp/n0.addr" 10 || { echo "FAIL: node 0 wrote no address"; exit 1; }
for i in $(seq 1 $((N - 1))); do
  # join through a node started before (the first ones through node 0)
  j=$((RANDOM % i))
  wait_file "$tmp/n$j.addr" 20 || { bad "node $j wrote no address"; break; }
  "$SHOAL" bootstrap --port 0 --host 127.0.0.1 --address-file "$tmp/n$i.addr" \
    --initial-peers "$(cat "$tmp/n$j.addr")" --log-level warn >/dev/null 2>"$tmp/n$i.log" &
  pids+=($!)
done
for i in $(seq 0 $((N - 1))); do
  wait_file "$tmp/n$i.addr" 30 || bad "node $i wrote no address"
done
echo "$N DHT nodes started in $(since "$t0") s"
cat "$tmp"/n*.addr >"$tmp/nodes"
sleep 3 # the last ones' joins and bucket refreshes

for entry in 0 $((N / 2)); do
  t1=$(now)
  if timeout 120 "$SHOAL" dht-probe --initial-peers "$(cat "$tmp/n$entry.addr")" \
       --nodes "$tmp/nodes" --lookups 500 --put-get 50 --parallel 8 --json \
       >"$tmp/probe.out" 2>"$tmp/probe.err"; then
    ok
  else
    bad "lookups through node $entry were not all right"; cat "$tmp/probe.err"
  fi
  grep -v '^{' "$tmp/probe.out" | sed "s/^/through node $entry: /"
  echo "  ($(since "$t1") s in all)"
done
alive=0
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
[ "$alive" -eq "$N" ] && ok || bad "only $alive of $N nodes still run"
grep -h " E: \| W: " "$tmp"/n*.log | head -5
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
