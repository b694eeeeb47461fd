#!/usr/bin/env bash
# `shoal serve` under a service manager (the sd_notify protocol,
# node/notify.h), with a small Python listener in systemd's place on an
# AF_UNIX datagram socket that passes credentials:
#  1. A swarm node whose bootstrap is not up yet must not say READY=1;
#     once the bootstrap starts (same identity and port, so the same
#     address) READY=1 must come, from the node's own pid, and at that
#     moment `shoal swarm` must already show the node online. SIGTERM:
#     STOPPING=1, OFFLINE announced, exit status 0.
#  2. A node with --blocks and no --initial-peers (an abstract socket,
#     "@name"): READY=1 as soon as it serves; SIGTERM with --grace 0 (a
#     stop at once): STOPPING=1, status 0.
# (SIGTERM, not SIGINT: a background job of a script starts with SIGINT
# ignored, and an ignored signal never reaches sigtimedwait.)
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
model=$SHOAL_SHARED/models/stories260K.gguf
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
wait_file() { # FILE SECONDS
  local i
  for i in $(seq $(($2 * 10))); do [ -s "$1" ] && return 0; sleep 0.1; done
  return 1
}

# listen SOCKET LOG: one line per datagram, "PID<TAB>MESSAGE" with newlines
# written as '|'; the listener ends by itself after 120 s
listen() {
  python3 - "$1" "$2" <<'PY' &
import socket, sys, struct, time
path, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind("\0" + path[1:] if path.startswith("@") else path)
s.settimeout(1.0)
end = time.time() + 120
with open(log, "a") as f:
    print("listening", file=f, flush=True)
    while time.time() < end:
        try:
            msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            continue
        pid = 0
        for lvl, typ, data in anc:
            if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", data[:12])[0]
        print("%d\t%s" % (pid, msg.decode(errors="replace").replace("\n", "|")), file=f,
              flush=True)
PY
  pids+=($!)
  local i
  for i in $(seq 50); do grep -q listening "$2" 2>/dev/null && return 0; sleep 0.1; done
  echo "FAIL: the listener did not start"; exit 1
}
# wait_msg LOG PATTERN SECONDS: until a line of LOG matches
wait_msg() {
  local i
  for i in $(seq $(($3 * 10))); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
# wait_exit PID SECONDS: its exit status, or 255 if still running
wait_exit() {
  local i
  for i in $(seq $(($2 * 10))); do
    kill -0 "$1" 2>/dev/null || { wait "$1"; return $?; }
    sleep 0.1
  done
  return 255
}

# ---- 1. readiness waits for the swarm -------------------------------------
"$SHOAL" bootstrap --port 0 --host 127.0.0.1 --identity "$tmp/boot.id" \
  --address-file "$tmp/boot.addr" >/dev/null 2>"$tmp/boot0.log" &
bpid=$!
wait_file "$tmp/boot.addr" 10 || { echo "FAIL: no bootstrap address"; cat "$tmp/boot0.log"; exit 1; }
boot=$(cat "$tmp/boot.addr")
bport=${boot#shoal://127.0.0.1:}; bport=${bport%%/*}
kill -TERM $bpid; wait $bpid
rm -f "$tmp/boot.addr"

listen "$tmp/notify.sock" "$tmp/notify1.log"
t0=$(now)
NOTIFY_SOCKET=$tmp/notify.sock "$SHOAL" serve -m "$model" --blocks 0:5 --host 127.0.0.1 \
  --port 0 --initial-peers "$boot" -t 1 --refresh-period 3 --grace 1 \
  --address-file "$tmp/s1.addr" >/dev/null 2>"$tmp/s1.log" &
spid=$!
pids+=($spid)
wait_file "$tmp/s1.addr" 20 || { bad "the server wrote no address"; cat "$tmp/s1.log"; }
sleep 4 # the announcer tries the absent bootstrap and announces anyway after 5 s
if grep -q READY "$tmp/notify1.log"; then
  bad "READY=1 while the swarm is unreachable"; cat "$tmp/notify1.log"
else
  ok
fi
"$SHOAL" bootstrap --port "$bport" --host 127.0.0.1 --identity "$tmp/boot.id" \
  --address-file "$tmp/boot.addr" >/dev/null 2>"$tmp/boot.log" &
pids+=($!)
wait_file "$tmp/boot.addr" 10 || bad "the bootstrap did not come back"
[ "$(cat "$tmp/boot.addr")" = "$boot" ] && ok || bad "the bootstrap's address changed"
t_boot=$(now)
if wait_msg "$tmp/notify1.log" 'READY=1' 60; then
  ok; echo "READY=1 $(since "$t_boot") s after the bootstrap came up ($(since "$t0") s after start)"
  # the node must be findable now
  if timeout 60 "$SHOAL" swarm --initial-peers "$boot" -m "$model" --json >"$tmp/swarm.json" \
       2>"$tmp/swarm.err" &&
     python3 - "$tmp/swarm.json" "$(cat "$tmp/s1.addr")" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["models"][0]
assert any(s["address"] == sys.argv[2] and s["state"] == "online" for s in m["servers"]), m
assert m["complete"], m
PY
  then ok; else bad "READY=1 came but the swarm does not show the node online"; cat "$tmp/swarm.json" "$tmp/swarm.err"; fi
else
  bad "no READY=1 within 60 s of the bootstrap's start"; cat "$tmp/notify1.log"; tail -5 "$tmp/s1.log"
fi
line=$(grep 'READY=1' "$tmp/notify1.log" | head -1)
[ "${line%%$'\t'*}" = "$spid" ] && ok || bad "READY=1 from pid '${line%%$'\t'*}', not $spid"
echo "$line" | grep -q "STATUS=serving blocks 0:5 as shoal://" && ok || bad "no STATUS with the span: $line"
[ "$(grep -c 'READY=1' "$tmp/notify1.log")" = 1 ] && ok || bad "READY=1 more than once"
kill -TERM $spid
wait_msg "$tmp/notify1.log" 'STOPPING=1' 10 && ok || bad "no STOPPING=1 after SIGTERM"
wait_exit $spid 20; st=$?
[ "$st" = 0 ] && ok || { bad "the server exited with $st after SIGTERM"; tail -5 "$tmp/s1.log"; }
grep -qi "blocks 0:5 as offline" "$tmp/s1.log" && ok || { bad "the server did not announce OFFLINE"; cat "$tmp/s1.log"; }

# ---- 2. no swarm: ready once serving; abstract socket -----------------------
name="@shoal-test-notify-$$-$RANDOM"
listen "$name" "$tmp/notify2.log"
NOTIFY_SOCKET=$name "$SHOAL" serve -m "$model" --blocks 1:3 --host 127.0.0.1 --port 0 -t 1 --grace 0 \
  --address-file "$tmp/s2.addr" >/dev/null 2>"$tmp/s2.log" &
spid=$!
pids+=($spid)
wait_file "$tmp/s2.addr" 20 || bad "the second server wrote no address"
wait_msg "$tmp/notify2.log" 'READY=1|STATUS=serving blocks 1:3' 10 && ok ||
  { bad "no READY=1 from a node without a swarm"; cat "$tmp/notify2.log"; }
kill -TERM $spid
wait_msg "$tmp/notify2.log" 'STOPPING=1|STATUS=stopping' 10 && ok || bad "no STOPPING=1 after SIGTERM"
wait_exit $spid 20; st=$?
[ "$st" = 0 ] && ok || bad "the second server exited with $st after SIGTERM"
sed 's/^/  notify: /' "$tmp/notify1.log" "$tmp/notify2.log" | grep -v listening
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
