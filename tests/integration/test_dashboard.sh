#!/usr/bin/env bash
# The dashboard, /api/v1/state and node metrics, on a loopback swarm of
# stories260K: a bootstrap node, three servers that place themselves (two
# blocks each) with --http-port, and `shoal api --initial-peers`.
#  - the bootstrap node's --http-port: /health 200, its DHT peers and
#    requests in /metrics (promtool);
#  - every node's /health turns 200 once its blocks are online; a node whose
#    DHT cannot be reached stays 503;
#  - /api/v1/state (from the API and from a node) lists the three servers
#    with their spans, and every block as served;
#  - headless Chromium loads the API's page `/`: the page drawn by its
#    script shows a row per server and every block covered; a screenshot
#    is kept ($SHOAL_BUILD/artifacts/dashboard.png);
#  - node /metrics: counters move when a client generates through the
#    swarm (steps, tokens), gauges show the DHT, and `promtool check
#    metrics` accepts the text when promtool is installed.
# Exits 77 (skipped) after the other checks pass when Chromium is missing.
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
model=$SHOAL_SHARED/models/stories260K.gguf
ref=$SHOAL_SHARED/reference
art=${SHOAL_BUILD:-/tmp}/artifacts
. "$(dirname "$0")/lib.sh"
command -v curl >/dev/null || { echo "FAIL: curl is needed"; exit 1; }
command -v python3 >/dev/null || { echo "FAIL: python3 is needed"; exit 1; }
# metric FILE SERIES: the value of one series in a Prometheus text (0 when absent)
metric() { awk -v s="$2" '$1 == s { v = $2 } END { print v + 0 }' "$1"; }

"$SHOAL" bootstrap --port 0 --host 127.0.0.1 --address-file "$tmp/boot.addr" --http-port 0 \
  >/dev/null 2>"$tmp/boot.log" &
pids+=($!)
wait_file "$tmp/boot.addr" 10 || { echo "FAIL: no bootstrap address"; cat "$tmp/boot.log"; exit 1; }
boot=$(cat "$tmp/boot.addr")

for s in s1 s2 s3; do
  "$SHOAL" serve -m "$model" --host 127.0.0.1 --port 0 --initial-peers "$boot" \
    --num-blocks 2 -t 1 --placement-delay 300 --rebalance-period 0 --http-port 0 \
    --address-file "$tmp/$s.addr" >/dev/null 2>"$tmp/$s.log" &
  pids+=($!)
  # one at a time, so that each places itself seeing the ones before
  wait_file "$tmp/$s.addr" 20 || { echo "FAIL: $s wrote no address"; cat "$tmp/$s.log"; exit 1; }
  port=$(status_port "$tmp/$s.log") || exit 1
  eval "port_$s=$port"
  if wait_code "http://127.0.0.1:$port/health" 200 20; then ok; else
    bad "$s: /health is not 200 within 20 s"; curl -s "http://127.0.0.1:$port/health"; echo
  fi
done

# the bootstrap node's status port: /health, and metrics of its DHT
boot_port=$(status_port "$tmp/boot.log") || exit 1
for i in $(seq 30); do # the gauges move once a second
  curl -s "http://127.0.0.1:$boot_port/metrics" >"$tmp/boot.m"
  [ "$(metric "$tmp/boot.m" shoal_bootstrap_dht_peers)" -ge 3 ] && break
  sleep 0.2
done
if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$boot_port/health")" = 200 ] &&
   [ "$(metric "$tmp/boot.m" shoal_bootstrap_dht_peers)" -ge 3 ] &&
   [ "$(metric "$tmp/boot.m" 'shoal_bootstrap_requests_total{rpc="find_node"}')" -ge 3 ]; then ok; else
  bad "bootstrap status port: $(grep -v '^#' "$tmp/boot.m" | tr '\n' ' ')"
fi
if command -v promtool >/dev/null; then
  promtool check metrics <"$tmp/boot.m" >"$tmp/promtool.out" 2>&1 && ok ||
    { bad "bootstrap: promtool check metrics"; cat "$tmp/promtool.out"; }
fi

# a node whose DHT does not answer never gets its blocks online: 503
dead="shoal://127.0.0.1:9/$(cut -d/ -f4 <<<"$boot")"
"$SHOAL" serve -m "$model" --host 127.0.0.1 --port 0 --blocks 0:5 --initial-peers "$dead" \
  -t 1 --http-port 0 --address-file "$tmp/lost.addr" >/dev/null 2>"$tmp/lost.log" &
pids+=($!)
lost_port=$(status_port "$tmp/lost.log") || exit 1
sleep 2
code=$(curl -s -o "$tmp/lost.health" -w '%{http_code}' "http://127.0.0.1:$lost_port/health")
if [ "$code" = 503 ] && [ "$(jget "$tmp/lost.health" 'j["status"]')" = unavailable ]; then ok; else
  bad "a node with no reachable DHT: /health $code $(cat "$tmp/lost.health")"
fi
kill "${pids[-1]}"

"$SHOAL" api -m "$model" --port 0 --initial-peers "$boot" --address-file "$tmp/api.url" \
  >/dev/null 2>"$tmp/api.log" &
pids+=($!)
wait_file "$tmp/api.url" 10 || { echo "FAIL: the API wrote no address"; cat "$tmp/api.log"; exit 1; }
api=$(cat "$tmp/api.url")
wait_code "$api/health" 200 30 || bad "the API's /health is not 200 within 30 s"

# /api/v1/state, from the API and from a node
addrs=$(cat "$tmp/s1.addr" "$tmp/s2.addr" "$tmp/s3.addr" | sort)
for src in "$api" "http://127.0.0.1:$port_s2"; do
  code=$(curl -s -o "$tmp/state.json" -w '%{http_code}' "$src/api/v1/state")
  got=$(jget "$tmp/state.json" '"\n".join(sorted(s["address"] for s in j["models"][0]["servers"] if s["answered"] and s["state"] == "online"))')
  served=$(jget "$tmp/state.json" 'all(b["servers"] >= 1 for b in j["models"][0]["blocks"]) and len(j["models"][0]["blocks"]) == 5')
  if [ "$code" = 200 ] && [ "$got" = "$addrs" ] && [ "$served" = True ] &&
     [ "$(jget "$tmp/state.json" 'j["models"][0]["complete"]')" = True ] &&
     [ "$(jget "$tmp/state.json" 'j["status"]')" = ok ]; then ok; else
    bad "$src/api/v1/state: $code, servers [$got], every block served: $served"
    head -c 2000 "$tmp/state.json"; echo
  fi
done
[ "$(jget "$tmp/state.json" 'j["self"]["role"]')" = node ] &&
  [ "$(jget "$tmp/state.json" 'j["self"]["address"]')" = "$(cat "$tmp/s2.addr")" ] && ok ||
  bad "the node's state does not name the node itself"
# spans in the state are the servers' own
for s in s1 s2 s3; do
  span=$(jget "$tmp/state.json" "[x['span'] for x in j['models'][0]['servers'] if x['address'] == '$(cat "$tmp/$s.addr")'][0]")
  [ "$(jget "$tmp/state.json" "len([1 for x in j['models'][0]['servers'] if x['address'] == '$(cat "$tmp/$s.addr")' and x['span'][1] - x['span'][0] == 2])")" = 1 ] &&
    ok || bad "$s: span $span is not two blocks"
done

# the page: its script fetches the state and draws it
code=$(curl -s -o "$tmp/page.html" -w '%{http_code}' "$api/")
if [ "$code" = 200 ] && grep -q '<title>Shoal swarm</title>' "$tmp/page.html"; then ok; else
  bad "GET / on the API: $code"
fi
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port_s1/")" = 200 ] && ok ||
  bad "GET / on a node is not 200"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port_s1/metrics")" = 405 ] && ok ||
  bad "POST /metrics on a node is not 405"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port_s1/nope")" = 404 ] && ok ||
  bad "an unknown URL on a node is not 404"

# node metrics move when a client generates through the swarm
for s in s1 s2 s3; do curl -s "http://127.0.0.1:$(eval echo \$port_$s)/metrics" >"$tmp/$s.m0"; done
"$SHOAL" generate -m "$model" --initial-peers "$boot" --temp 0 -n 60 -p "Once upon a time" \
  -c 512 -t 1 --timeout 10 >"$tmp/gen.out" 2>"$tmp/gen.err"
cmp -s "$tmp/gen.out" "$ref/once-64.txt" && ok || { bad "generation through the swarm differs"; cat "$tmp/gen.err"; diff "$ref/once-64.txt" "$tmp/gen.out" | head -5; }
steps=0 tokens=0
for s in s1 s2 s3; do
  curl -s "http://127.0.0.1:$(eval echo \$port_$s)/metrics" >"$tmp/$s.m1"
  d=$(( $(metric "$tmp/$s.m1" 'shoal_node_requests_total{rpc="session_step"}') -
        $(metric "$tmp/$s.m0" 'shoal_node_requests_total{rpc="session_step"}') ))
  steps=$((steps + d))
  t=$(( $(metric "$tmp/$s.m1" 'shoal_node_tokens_processed_total{rpc="session_step"}') -
        $(metric "$tmp/$s.m0" 'shoal_node_tokens_processed_total{rpc="session_step"}') ))
  tokens=$((tokens + t))
  [ "$(metric "$tmp/$s.m1" shoal_node_dht_peers)" -ge 1 ] && ok || bad "$s: shoal_node_dht_peers is 0"
  grep -q '^shoal_node_step_duration_seconds_bucket{rpc="session_step",le="+Inf"}' "$tmp/$s.m1" ||
    [ "$d" = 0 ] || bad "$s: no step latency histogram after $d steps"
  if command -v promtool >/dev/null; then
    promtool check metrics <"$tmp/$s.m1" >"$tmp/promtool.out" 2>&1 && ok ||
      { bad "$s: promtool check metrics"; cat "$tmp/promtool.out"; }
  fi
done
# a chain of at least two servers ran 60 steps (the prompt is one): >= 2 * 60
if [ "$steps" -ge 120 ] && [ "$tokens" -ge 120 ]; then ok; else
  bad "node metrics did not move: $steps steps, $tokens tokens"
fi
echo "node metrics: $steps steps, $tokens tokens over the three servers"
command -v promtool >/dev/null || echo "note: promtool is not installed; the format was not checked"

# headless Chromium: the drawn page
chrome=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chrome" ]; then
  finish || exit 1
  echo "SKIP: Chromium is not installed (apt-get install chromium); the page was not checked" >&2
  exit 77
fi
mkdir -p "$art"
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
       --disable-background-networking --disable-component-update --disable-sync
       --user-data-dir="$tmp/chrome" --virtual-time-budget=8000)
timeout 90 "$chrome" "${flags[@]}" --dump-dom "$api/" >"$tmp/dom.html" 2>"$tmp/chrome.log"
rows=$(grep -o 'data-address="[^"]*"' "$tmp/dom.html" | sed 's/data-address="//; s/"$//' | sort)
cells=$(grep -o 'data-block="[0-9]*" data-servers="[0-9]*"' "$tmp/dom.html" | grep -vc 'data-servers="0"')
if [ "$rows" = "$addrs" ] && [ "$cells" = 5 ] && grep -q 'every block is covered' "$tmp/dom.html"; then
  ok
else
  bad "the page drawn in Chromium: servers [$rows], covered blocks $cells"
  head -c 3000 "$tmp/dom.html"; echo; tail -5 "$tmp/chrome.log"
fi
timeout 90 "$chrome" "${flags[@]}" --window-size=1300,600 --screenshot="$art/dashboard.png" \
  "$api/" >/dev/null 2>>"$tmp/chrome.log"
[ -s "$art/dashboard.png" ] && { ok; echo "screenshot: $art/dashboard.png"; } ||
  bad "no screenshot"

finish
