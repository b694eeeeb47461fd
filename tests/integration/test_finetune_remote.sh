#!/usr/bin/env bash
# LoRA fine-tuning through nodes on loopback (`shoal finetune --peers`):
# stories260K served as blocks 0:2, 2:4 and 4:5, plus a spare node for 2:4.
#   - through the 3-node chain the loss curve equals the local run's (max
#     relative difference reported; within 1e-4 required, exact expected at
#     equal thread counts) and the adapter file is the same file;
#   - a node of the chain killed mid-training (SIGKILL, after step 25 of
#     60; checkpoints every 10 steps): the client replaces it with the
#     spare, pushes the last checkpoint to the whole chain, redoes the steps
#     since, and training completes; the final loss is within 5 % of the
#     fault-free run (the adapter is in fact identical);
#   - the adapter made through the chain drives `shoal generate --lora`;
#   - a model range no node serves is an error (exit 1) naming the blocks.
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

declare -A pid_of
start_node() { # NAME A:B
  "$SHOAL" serve -m "$model" --blocks "$2" --port 0 --host 127.0.0.1 \
    --address-file "$tmp/$1.addr" -t 1 --log-level warn >/dev/null 2>"$tmp/$1.log" &
  pids+=($!)
  pid_of[$1]=$!
}
wait_node() {
  local i
  for i in $(seq 100); do [ -s "$tmp/$1.addr" ] && return 0; sleep 0.1; done
  echo "FAIL: node $1 wrote no address in 10 s"; cat "$tmp/$1.log"; exit 1
}
addr() { cat "$tmp/$1.addr"; }
for spec in "n1 0:2" "n2 2:4" "n3 4:5"; do start_node $spec; done
for n in n1 n2 n3; do wait_node $n; done

story="Zib was a little purple robot who lived on a hill of blue sand. Every morning Zib polished his seven shiny buttons and sang a song about the moon. One day a green frog named Pop hopped up the hill and asked Zib for a ride. Zib said yes, and they rolled down the hill together, laughing all the way to the silver river."
for i in 1 2 3 4; do echo "$story"; done >"$tmp/zib.txt"

train() { # OUT STEPS [ARGS...]: stderr into $tmp/OUT.log
  local out=$1 steps=$2
  shift 2
  timeout 180 "$SHOAL" finetune -m "$model" --data "$tmp/zib.txt" --out "$tmp/$out" \
    --steps "$steps" --lr 3e-3 --seed 3 -t 1 --eval 4 "$@" 2>"$tmp/$out.log"
}
curve() { sed -n 's/^step \([0-9]*\)\/[0-9]* loss \([0-9.]*\) .*/\1 \2/p' "$1"; }
# max relative difference of two curves, "inf" when the steps differ
cmp_curves() {
  join <(curve "$1") <(curve "$2") | awk -v n="$(curve "$1" | wc -l)" '
    { d = $2 - $3; if (d < 0) d = -d; r = d / ($3 > 0 ? $3 : 1); if (r > m) m = r; k++ }
    END { if (k != n || k == 0) print "inf"; else printf "%.3g\n", m }'
}

# the same run locally and through three nodes
train local.gguf 40 || { bad "local run failed"; cat "$tmp/local.gguf.log"; }
peers="$(addr n3),$(addr n1),$(addr n2)"
if train chain.gguf 40 --peers "$peers" --timeout 10; then ok; else
  bad "run through the chain failed"; cat "$tmp/chain.gguf.log"
fi
grep -q "^chain: 0:2 .*, 2:4 .*, 4:5 " "$tmp/chain.gguf.log" && ok ||
  { bad "the chain is not 0:2, 2:4, 4:5"; grep chain "$tmp/chain.gguf.log"; }
d=$(cmp_curves "$tmp/chain.gguf.log" "$tmp/local.gguf.log")
echo "loss curve through 3 nodes vs local: max relative difference $d over 40 steps"
awk -v d="$d" 'BEGIN { exit !(d != "inf" && d + 0 <= 1e-4) }' && ok ||
  bad "loss curves differ by $d"
cmp -s "$tmp/chain.gguf" "$tmp/local.gguf" && ok || bad "the adapters differ"

# a node killed mid-training, a spare for its blocks
start_node spare 2:4
wait_node spare
train local60.gguf 60 || bad "local 60-step run failed"
# --timeout 5: a step of the 7-block chain under ASan, beside other tests,
# can take more than 2 s (training notices a killed node by this timeout)
train fail.gguf 60 --peers "$peers,$(addr spare)" --timeout 5 --checkpoint-every 10 &
tpid=$!
for i in $(seq 600); do grep -q "^step 25/" "$tmp/fail.gguf.log" 2>/dev/null && break; sleep 0.02; done
victim=$(sed -n 's/^chain: .*2:4 \(shoal:[^,]*\),.*/\1/p' "$tmp/fail.gguf.log")
killed=
for n in n2 spare; do
  if [ "$(addr $n)" = "$victim" ]; then
    kill -9 "${pid_of[$n]}"
    wait "${pid_of[$n]}" 2>/dev/null
    killed=$n
  fi
done
[ -n "$killed" ] && ok || bad "could not find the node of blocks 2:4 ($victim)"
wait $tpid && ok || { bad "training did not survive the kill"; cat "$tmp/fail.gguf.log"; }
grep "^recovered\|^shoal finetune: step" "$tmp/fail.gguf.log"
grep -q "^recovered: back to the checkpoint of step 20" "$tmp/fail.gguf.log" && ok ||
  bad "no recovery from the checkpoint of step 20"
last_ok=$(sed -n 's/^loss: .*last step \([0-9.]*\).*/\1/p' "$tmp/local60.gguf.log")
last_f=$(sed -n 's/^loss: .*last step \([0-9.]*\).*/\1/p' "$tmp/fail.gguf.log")
echo "final loss: fault-free $last_ok, with a node killed $last_f"
awk -v a="${last_ok:-0}" -v b="${last_f:-9}" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 0.05 * a) }' &&
  ok || bad "final loss $last_f is not within 5 % of $last_ok"
cmp -s "$tmp/fail.gguf" "$tmp/local60.gguf" && echo "the adapter equals the fault-free one" ||
  echo "note: the adapter differs from the fault-free one"

# the chain's adapter applies
timeout 60 "$SHOAL" generate -m "$model" -p "Zib was a little" --temp 0 -n 30 -t 1 \
  --lora "$tmp/chain.gguf" >"$tmp/gen.txt" 2>"$tmp/gen.err" &&
  grep -q "^Zib was a little purple robot" "$tmp/gen.txt" && ok ||
  { bad "generation with the chain's adapter"; cat "$tmp/gen.txt" "$tmp/gen.err"; }

# blocks nobody serves
train none.gguf 2 --peers "$(addr n1),$(addr n3)" --timeout 5
[ $? = 1 ] && grep -q "2:4" "$tmp/none.gguf.log" && ok ||
  { bad "a gap in the chain"; cat "$tmp/none.gguf.log"; }

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
