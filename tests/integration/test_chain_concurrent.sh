#!/usr/bin/env bash
# Four clients generate at the same time through the same three nodes
# (stories260K as 0:2, 2:4, 4:5), each running several reference cases back
# to back so that their sessions overlap on every node; every output must
# equal the reference byte for byte, and the nodes must stay up.
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

start_node() {
  "$SHOAL" serve -m "$2" --blocks "$3" --port 0 --host 127.0.0.1 \
    --address-file "$tmp/$1.addr" --identity "$tmp/$1.id" -t 1 \
    >"$tmp/$1.out" 2>"$tmp/$1.log" &
  pids+=($!)
}
wait_node() {
  local i
  for i in $(seq 100); do
    [ -s "$tmp/$1.addr" ] && return 0
    sleep 0.1
  done
  echo "FAIL: node $1 wrote no address in 10 s"; cat "$tmp/$1.log"
  exit 1
}

start_node n1 "$model" 0:2
start_node n2 "$model" 2:4
start_node n3 "$model" 4:5
for n in n1 n2 n3; do wait_node $n; done
peers="$(cat "$tmp/n1.addr"),$(cat "$tmp/n2.addr"),$(cat "$tmp/n3.addr")"

# client K runs the long cases starting at a different one, so the four
# are at different positions of different stories at any moment
mapfile -t cases < <(grep -- '-256'$'\t' "$ref/cases.tsv")
client() {
  local k=$1 j name n prompt
  for j in 0 1 2 3 4; do
    IFS=$'\t' read -r name n prompt <<<"${cases[$(((k + j) % ${#cases[@]}))]}"
    date +%s.%N >"$tmp/c$k.$j.t0"
    timeout 120 "$SHOAL" generate -m "$model" -c 512 --temp 0 -n "$n" -p "$prompt" -t 1 \
      --peers "$peers" --timeout 30 >"$tmp/c$k.$j.out" 2>"$tmp/c$k.$j.err"
    echo "$? $name" >"$tmp/c$k.$j.status"
    date +%s.%N >"$tmp/c$k.$j.t1"
  done
}
clients=()
for k in 0 1 2 3; do
  client $k &
  clients+=($!)
done
for p in "${clients[@]}"; do wait "$p"; done

for k in 0 1 2 3; do
  for j in 0 1 2 3 4; do
    read -r rc name <"$tmp/c$k.$j.status"
    if [ "$rc" -eq 0 ] && cmp -s "$tmp/c$k.$j.out" "$ref/$name.txt"; then
      ok
    else
      bad "client $k, $name: exit $rc"; cat "$tmp/c$k.$j.err"
      diff <(cat "$ref/$name.txt") "$tmp/c$k.$j.out" | head -5
    fi
  done
done
# the runs did overlap: the most clients generating at one moment
most=$(for f in "$tmp"/c*.t0; do echo "$(cat "$f") 1"; echo "$(cat "${f%.t0}.t1") -1"; done |
       sort -n | awk '{ c += $2; if (c > m) m = c } END { print m }')
echo "at most $most clients were generating at the same time"
[ "$most" -ge 3 ] && ok || bad "the clients hardly overlapped ($most at once)"
for i in "${!pids[@]}"; do
  kill -0 "${pids[$i]}" 2>/dev/null && ok || bad "node $i died"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
