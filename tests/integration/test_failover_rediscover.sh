#!/usr/bin/env bash
# Failover finds servers that joined after the chain opened: a client
# generates stories260K through the DHT while only server A (blocks 0:5)
# exists; at step 20 a step hook starts server B (0:5), waits until B's
# /health says its blocks are online, and kills A (SIGKILL). The client
# knows no replacement, so it must look the swarm up again, find B, replay
# into it and finish with exactly the reference text.
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
model=$SHOAL_SHARED/models/stories260K.gguf
ref=$SHOAL_SHARED/reference
. "$(dirname "$0")/lib.sh"
trap '[ -s "$tmp/b.pid" ] && pids+=("$(cat "$tmp/b.pid")"); cleanup' EXIT

"$SHOAL" bootstrap --port 0 --host 127.0.0.1 --address-file "$tmp/boot.addr" \
  >/dev/null 2>"$tmp/boot.log" &
pids+=($!)
wait_file "$tmp/boot.addr" 10 || { echo "FAIL: no bootstrap address"; exit 1; }
boot=$(cat "$tmp/boot.addr")

serve() { # NAME: a server of every block, announced in the DHT
  exec "$SHOAL" serve -m "$model" --host 127.0.0.1 --port 0 --blocks 0:5 --initial-peers "$boot" \
    -t 1 --http-port 0 --address-file "$tmp/$1.addr" >/dev/null 2>"$tmp/$1.log"
}
serve A &
pid_a=$!
pids+=($pid_a)
wait_file "$tmp/A.addr" 10 || { echo "FAIL: A wrote no address"; cat "$tmp/A.log"; exit 1; }
# wait_online NAME: its /health is 200 within 20 s
cat >"$tmp/wait_online.sh" <<EOS
for i in \$(seq 200); do
  port=\$(grep -o 'status port: http://127.0.0.1:[0-9]*' "$tmp/\$1.log" 2>/dev/null | grep -o '[0-9]*\$')
  [ -n "\$port" ] && [ "\$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:\$port/health")" = 200 ] && exit 0
  sleep 0.1
done
exit 1
EOS
bash "$tmp/wait_online.sh" A || { echo "FAIL: A never came online"; cat "$tmp/A.log"; exit 1; }

# the hook: start B, wait until it is online, kill A
cat >"$tmp/hook.sh" <<EOS
"$SHOAL" serve -m "$model" --host 127.0.0.1 --port 0 --blocks 0:5 --initial-peers "$boot" \
  -t 1 --http-port 0 --address-file "$tmp/B.addr" >/dev/null 2>"$tmp/B.log" &
echo \$! >"$tmp/b.pid"
bash "$tmp/wait_online.sh" B || echo "hook: B never came online" >&2
kill -9 $pid_a
EOS
fail=0
timeout 120 "$SHOAL" generate -m "$model" -c 512 --temp 0 -n 60 -p "Once upon a time" -t 1 \
  --initial-peers "$boot" --timeout 10 --debug-step-hook "20:bash $tmp/hook.sh" \
  >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ "$rc" = 0 ] && cmp -s "$tmp/out" "$ref/once-64.txt"; then
  echo "ok: the text equals the reference after A died and B was found"
else
  echo "FAIL: generate exited $rc or the text differs"; cat "$tmp/err"
  diff "$ref/once-64.txt" "$tmp/out" | head -5
  fail=1
fi
if grep -q 'the swarm named 1 more server' "$tmp/err" && grep -q "$(cut -d/ -f4 "$tmp/B.addr")" "$tmp/err"; then
  echo "ok: failover looked the swarm up again and moved to B"
else
  echo "FAIL: no fresh lookup reported, or B not used"; cat "$tmp/err"; fail=1
fi
grep -E 'failover|swarm named|moved|replay' "$tmp/err" | head -5
[ "$fail" = 0 ] || { echo "--- client"; cat "$tmp/err"; echo "--- B"; cat "$tmp/B.log"; }
exit $fail
