#!/usr/bin/env bash
# The chaos kit: start a swarm of `shoal serve` nodes on loopback and break
# them while a client generates. Used by tests/integration/test_failover_*.sh
# and by hand:
#
#   tests/chaos.sh start DIR NAME MODEL A:B [serve options...]
#       start node NAME serving blocks A:B and wait (bounded) for its
#       address; its identity, port and options are kept in DIR, so that a
#       restart brings back the same address
#   tests/chaos.sh kill|freeze|thaw|term|restart DIR NAME
#       kill -9 / SIGSTOP / SIGCONT / SIGTERM (graceful leave) / kill -9 and
#       start again on the same port with the same identity (returns at
#       once; the node is back after its start-up time)
#   tests/chaos.sh act DIR ACTION TARGET
#       one of the actions above (kill, freeze, thaw, term, restart) on
#       TARGET: a node's name, or @K, the K-th hop (from 0, modulo the hop
#       count) of the chain in $SHOAL_CHAIN, which `shoal generate` sets
#       for its step hooks ("0:2 shoal://..., 2:5 shoal://...")
#   tests/chaos.sh heal DIR
#       bring every node back: SIGCONT the frozen, start again the dead
#       (same address), and wait (bounded) until all have written it
#   tests/chaos.sh peers DIR [NAME...]   the nodes' addresses, comma-joined
#   tests/chaos.sh pid DIR NAME          the node's process id
#   tests/chaos.sh stopall DIR           stop every node of DIR (SIGCONT,
#                                        SIGTERM, then SIGKILL after 5 s)
#   tests/chaos.sh plan SEED STEPS N TARGET...
#       N random actions at random steps (seeded: the same arguments give
#       the same plan), one per line: "STEP ACTION TARGET" with ACTION one
#       of kill, freeze, restart; distinct steps in 1..STEPS-1, distinct
#       targets (names, or @K as for act)
#   tests/chaos.sh hooks DIR PLANFILE
#       the plan as `shoal generate --debug-step-hook` arguments, one per
#       line (the client runs each action, synchronously, just before the
#       blocks of that step are sent: 0 is the prompt, k the k-th token)
#
# Environment: SHOAL (the binary; default build/shoal next to this file).
# Every process the kit starts is recorded in DIR/NAME.pid; `stopall` in
# an EXIT trap leaves nothing behind.
set -u
here=$(cd "$(dirname "$0")" && pwd)
SHOAL=${SHOAL:-$here/../build/shoal}

die() { echo "chaos: $*" >&2; exit 1; }

# launch DIR NAME: (re)start from the saved arguments, in the background
launch() {
  local d=$1 n=$2 port
  port=$(cat "$d/$n.port" 2>/dev/null || echo 0)
  rm -f "$d/$n.addr"
  "$SHOAL" serve $(cat "$d/$n.args") --port "$port" --host 127.0.0.1 \
    --identity "$d/$n.id" --address-file "$d/$n.addr" --log-level warn \
    >>"$d/$n.out" 2>>"$d/$n.log" </dev/null &
  echo $! >"$d/$n.pid"
}

# wait_addr DIR NAME SECONDS
wait_addr() {
  local d=$1 n=$2 i
  for i in $(seq $(($3 * 10))); do
    [ -s "$d/$n.addr" ] && return 0
    kill -0 "$(cat "$d/$n.pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "chaos: node $n wrote no address:" >&2
  tail -n 5 "$d/$n.log" >&2
  return 1
}

cmd=${1:-}
shift || true
case "$cmd" in
start)
  [ $# -ge 4 ] || die "usage: start DIR NAME MODEL A:B [options]"
  d=$1 n=$2 m=$3 b=$4
  shift 4
  mkdir -p "$d"
  echo "-m $m --blocks $b $*" >"$d/$n.args"
  rm -f "$d/$n.port"
  launch "$d" "$n"
  wait_addr "$d" "$n" 60 || exit 1
  sed 's|^shoal://[^:]*:\([0-9]*\)/.*|\1|' "$d/$n.addr" >"$d/$n.port"
  ;;
kill | freeze | thaw | term)
  d=$1 n=$2
  pid=$(cat "$d/$n.pid") || die "no node $n"
  case "$cmd" in
  kill) kill -9 "$pid" 2>/dev/null ;;
  freeze) kill -STOP "$pid" 2>/dev/null ;;
  thaw) kill -CONT "$pid" 2>/dev/null ;;
  term) kill -TERM "$pid" 2>/dev/null ;;
  esac
  exit 0
  ;;
restart)
  d=$1 n=$2
  pid=$(cat "$d/$n.pid") || die "no node $n"
  kill -9 "$pid" 2>/dev/null
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.02; done
  launch "$d" "$n"
  ;;
act)
  d=$1 action=$2 target=$3
  n=$target
  if [ "${target#@}" != "$target" ]; then
    IFS=',' read -r -a hops <<<"${SHOAL_CHAIN:-}"
    [ ${#hops[@]} -gt 0 ] || die "act: no chain in SHOAL_CHAIN"
    hop=${hops[$(( ${target#@} % ${#hops[@]} ))]}
    a=${hop##* }
    n=$(cd "$d" && grep -lxF "$a" *.addr 2>/dev/null | head -n 1 | sed 's/\.addr$//')
    [ -n "$n" ] || die "act: no node of $d has address $a"
  fi
  echo "$action $n" >>"$d/actions"
  exec bash "$0" "$action" "$d" "$n"
  ;;
heal)
  d=$1
  for f in "$d"/*.args; do
    n=$(basename "$f" .args)
    pid=$(cat "$d/$n.pid")
    if ! kill -0 "$pid" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
      launch "$d" "$n"
    else
      kill -CONT "$pid" 2>/dev/null
    fi
  done
  for f in "$d"/*.args; do wait_addr "$d" "$(basename "$f" .args)" 60 || exit 1; done
  ;;
peers)
  d=$1
  shift
  if [ $# -eq 0 ]; then
    set -- $(cd "$d" && ls *.args 2>/dev/null | sed 's/\.args$//')
  fi
  list=""
  for n in "$@"; do list="$list${list:+,}$(cat "$d/$n.addr")"; done
  echo "$list"
  ;;
pid) cat "$1/$2.pid" ;;
stopall)
  d=$1
  pids=$(cat "$d"/*.pid 2>/dev/null)
  for p in $pids; do kill -CONT "$p" 2>/dev/null; kill -TERM "$p" 2>/dev/null; done
  for p in $pids; do
    for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  exit 0
  ;;
plan)
  [ $# -ge 4 ] || die "usage: plan SEED STEPS N NAME..."
  seed=$1 steps=$2 count=$3
  shift 3
  python3 - "$seed" "$steps" "$count" "$@" <<'EOF'
import random, sys
seed, steps, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
names = sys.argv[4:]
rng = random.Random(seed)
picked = rng.sample(names, min(count, len(names)))
at = sorted(rng.sample(range(1, steps), len(picked)))
for s, n in zip(at, picked):
    print(s, rng.choice(["kill", "freeze", "restart"]), n)
EOF
  ;;
hooks)
  d=$1 plan=$2
  while read -r step action n; do
    [ -n "$step" ] || continue
    echo "$step:SHOAL=$SHOAL bash $here/chaos.sh act $d $action $n"
  done <"$plan"
  ;;
*)
  sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'
  [ -z "$cmd" ] || exit 2
  ;;
esac
