#!/usr/bin/env bash
# The command line every subcommand shares (swarm/cli.h): flags set by
# SHOAL_* variables (a reference generation configured by the environment
# alone; the command line wins; bad values give one line naming the
# variable, exit 2), every --help mentions them, the logging flags (-v, -q,
# --log-level, --log-file), an option value "-v" staying a value, and the
# progress bar: drawn in a pseudo-terminal, nothing extra when piped.
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
model=$SHOAL_SHARED/models/stories260K.gguf
ref=$SHOAL_SHARED/reference
tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# stop PID: SIGTERM (SIGINT is ignored by background jobs of a script); the
# exit status, or 255 if it had to be killed after 10 s
stop() {
  local st _
  kill -TERM "$1" 2>/dev/null
  for _ in $(seq 100); do
    if ! kill -0 "$1" 2>/dev/null; then wait "$1"; st=$?; pids=(); return $st; fi
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null; wait "$1" 2>/dev/null; pids=()
  return 255
}

# expect_err STATUS PATTERN CMD...: exit STATUS, one line on stderr matching
# PATTERN (grep -E), nothing on stdout
expect_err() {
  local want=$1 pat=$2; shift 2
  timeout 60 "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  if [ "$got" -ne "$want" ]; then bad "'$*' exited $got, expected $want"; cat "$tmp/err"; return; fi
  [ "$(wc -l <"$tmp/err")" -eq 1 ] || { bad "'$*': stderr is not one line:"; cat "$tmp/err"; return; }
  grep -qE -- "$pat" "$tmp/err" || { bad "'$*': stderr lacks /$pat/:"; cat "$tmp/err"; return; }
  [ ! -s "$tmp/out" ] || { bad "'$*' wrote to stdout on error"; return; }
  ok
}

# ---- a reference case configured by the environment alone ------------------
IFS=$'\t' read -r name n prompt < <(head -n 1 "$ref/cases.tsv")
SHOAL_MODEL=$model SHOAL_CTX_SIZE=512 SHOAL_TEMP=0 SHOAL_N_PREDICT=$n SHOAL_PROMPT=$prompt \
  SHOAL_THREADS=1 timeout 60 "$SHOAL" generate >"$tmp/gen.out" 2>"$tmp/gen.err" &&
  cmp -s "$tmp/gen.out" "$ref/$name.txt" && ok ||
  { bad "generate from SHOAL_* variables differs from $name.txt"; cat "$tmp/gen.err"; }
# the command line wins over the environment
SHOAL_N_PREDICT=3 SHOAL_PROMPT=Zoo SHOAL_TEMP=0.9 timeout 60 "$SHOAL" generate -m "$model" \
  -c 512 --temp 0 -n "$n" --prompt="$prompt" -t 1 >"$tmp/gen2.out" 2>"$tmp/gen2.err" &&
  cmp -s "$tmp/gen2.out" "$ref/$name.txt" && ok ||
  { bad "the command line did not win over SHOAL_*"; cat "$tmp/gen2.err"; }
# -v logs at debug, and names the variables used (never their values)
SHOAL_TEMP=0 timeout 60 "$SHOAL" generate -m "$model" -n 1 -p Zoo -v >/dev/null 2>"$tmp/v.err"
grep -q ' D: generate: from the environment: SHOAL_TEMP$' "$tmp/v.err" && ok ||
  { bad "-v: no debug line naming SHOAL_TEMP"; cat "$tmp/v.err"; }
# an option's value that looks like a logging flag stays a value
timeout 60 "$SHOAL" generate -m "$model" -n 0 -p -v >"$tmp/pv.out" 2>"$tmp/pv.err"
[ "$(cat "$tmp/pv.out")" = "-v" ] && ! grep -q ' D: ' "$tmp/pv.err" && ok ||
  { bad "-p -v: not the prompt '-v'"; cat "$tmp/pv.out" "$tmp/pv.err"; }
# a flag without a value: SHOAL_PUSH=1 is --push (which needs peers)
SHOAL_PUSH=1 expect_err 2 'needs --peers' "$SHOAL" generate -m "$model" -p x
SHOAL_PUSH=0 timeout 60 "$SHOAL" generate -m "$model" -n 1 -p x >/dev/null 2>&1 && ok ||
  bad "SHOAL_PUSH=0 did not leave --push unset"

# ---- bad values: one line, exit 2, naming the variable ---------------------
SHOAL_N_PREDICT=abc expect_err 2 '^shoal generate: SHOAL_N_PREDICT: expected an integer' \
  "$SHOAL" generate -m "$model"
SHOAL_TEMP=hot expect_err 2 '^shoal generate: SHOAL_TEMP: expected a number' \
  "$SHOAL" generate -m "$model"
SHOAL_PUSH=maybe expect_err 2 "^shoal generate: SHOAL_PUSH: expected 1, true.*got 'maybe'" \
  "$SHOAL" generate -m "$model"
SHOAL_PORT=x expect_err 2 "^shoal serve: SHOAL_PORT: expected an integer .* got 'x'" \
  "$SHOAL" serve -m "$model" --blocks 0:1
SHOAL_PORT=99999 expect_err 2 '^shoal bootstrap: SHOAL_PORT: expected' "$SHOAL" bootstrap
SHOAL_INITIAL_PEERS=nowhere expect_err 2 "^shoal generate: SHOAL_INITIAL_PEERS: 'nowhere' is not" \
  "$SHOAL" generate -m "$model"
SHOAL_CODEC=f8 expect_err 2 '^shoal chat: SHOAL_CODEC: expected f32' "$SHOAL" chat -m "$model"
SHOAL_TYPE=q9 expect_err 2 '^shoal mkmodel: unknown SHOAL_TYPE' "$SHOAL" mkmodel -o "$tmp/x.gguf" \
  --dim 64 --ffn 64 --heads 2 --kv-heads 2 --layers 1 --vocab 300
SHOAL_LOG_LEVEL=loud expect_err 2 '^shoal keygen: SHOAL_LOG_LEVEL: expected debug' \
  "$SHOAL" keygen -o "$tmp/k"
expect_err 2 '^shoal bench: --log-level: expected debug' "$SHOAL" bench --log-level loud
expect_err 2 '^shoal swarm: --log-file /nonexistent-dir/f: cannot open' \
  "$SHOAL" swarm --log-file /nonexistent-dir/f
expect_err 2 "^shoal serve: unknown option '--bogus' \(see --help\)" "$SHOAL" serve --bogus
expect_err 2 "^shoal keygen: unknown option '-z'" "$SHOAL" keygen -z
expect_err 1 '^shoal finetune: --data /nonexistent-dir/t.txt: cannot read it: No such file' \
  "$SHOAL" finetune -m "$model" --data /nonexistent-dir/t.txt --out "$tmp/a.gguf"

# ---- every subcommand's --help: exit 0, the logging flags and SHOAL_ --------
cmds=$("$SHOAL" --help | sed -n 's/^  \([a-z-]*\)  .*/\1/p' | grep -vx version)
[ "$(echo "$cmds" | wc -w)" -ge 10 ] && ok || bad "shoal --help lists only: $cmds"
for c in $cmds dht-probe; do
  if timeout 10 "$SHOAL" "$c" --help >"$tmp/help" 2>&1 && grep -q 'SHOAL_<FLAG>' "$tmp/help" &&
     grep -q -- '--log-file' "$tmp/help"; then ok; else bad "shoal $c --help"; fi
done

# ---- --log-file, -q, and the environment configuring a daemon --------------
SHOAL_MODEL=$model SHOAL_BLOCKS=0:2 SHOAL_HOST=127.0.0.1 SHOAL_THREADS=1 \
  SHOAL_ADDRESS_FILE=$tmp/n.addr SHOAL_LOG_FILE=$tmp/n.log "$SHOAL" serve >"$tmp/n.out" 2>"$tmp/n.err" &
pid=$!
pids+=("$pid")
for _ in $(seq 200); do [ -s "$tmp/n.addr" ] && break; sleep 0.1; done
[ -s "$tmp/n.addr" ] && ok || bad "serve configured by SHOAL_* wrote no address"
stop "$pid" && ok || bad "serve did not exit 0 on SIGTERM"
grep -q ' I: serving blocks 0:2 ' "$tmp/n.log" && grep -q ' I: stopped$' "$tmp/n.log" && ok ||
  { bad "SHOAL_LOG_FILE lacks the serve's lines"; cat "$tmp/n.log"; }
! grep -q ' I: ' "$tmp/n.err" && ok || { bad "with a log file, log lines still on stderr"; cat "$tmp/n.err"; }
"$SHOAL" bootstrap --host 127.0.0.1 -q --address-file "$tmp/b.addr" >"$tmp/b.out" 2>"$tmp/b.err" &
pid=$!
pids+=("$pid")
for _ in $(seq 200); do [ -s "$tmp/b.addr" ] && break; sleep 0.1; done
stop "$pid"
[ -s "$tmp/b.addr" ] && ! grep -q ' I: ' "$tmp/b.err" && ok ||
  { bad "bootstrap -q still logs info lines"; cat "$tmp/b.err"; }
# --log-file appends
timeout 60 "$SHOAL" bootstrap --log-level=bogus --log-file "$tmp/n.log" >/dev/null 2>&1
[ $? -eq 2 ] && ok || bad "--log-level=bogus did not exit 2"
n1=$(wc -l <"$tmp/n.log")
SHOAL_TEMP=0 timeout 60 "$SHOAL" generate -m "$model" -n 1 -p x --log-file "$tmp/n.log" -v \
  >/dev/null 2>&1
n2=$(wc -l <"$tmp/n.log")
[ "$n2" -gt "$n1" ] && grep -q 'from the environment: SHOAL_TEMP' "$tmp/n.log" && ok ||
  bad "--log-file did not append ($n1 -> $n2 lines)"

# ---- the progress bar: on a terminal only ---------------------------------
# mkmodel of a medium model (a few seconds here): in a pseudo-terminal the
# bar is drawn and ended with a newline; piped, stderr stays empty.
mk=(mkmodel --dim 1024 --ffn 2816 --heads 16 --kv-heads 16 --layers 6 --vocab 32000 --type q8_0)
SHOAL_OUTPUT=$tmp/piped.gguf timeout 120 "$SHOAL" "${mk[@]}" >"$tmp/mk.out" 2>"$tmp/mk.err" &&
  [ -s "$tmp/piped.gguf" ] && [ ! -s "$tmp/mk.err" ] && [ "$(wc -l <"$tmp/mk.out")" -eq 1 ] && ok ||
  { bad "mkmodel piped: stderr not empty or no file"; cat "$tmp/mk.err"; }
if command -v python3 >/dev/null; then
  python3 - "$SHOAL" "${mk[@]}" -o "$tmp/tty.gguf" >"$tmp/pty.out" <<'EOF'
import os, pty, sys, time
t0 = time.time()
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
while True:
    try:
        d = os.read(fd, 65536)
    except OSError:
        break
    if not d:
        break
    out += d
_, st = os.waitpid(pid, 0)
print("status", os.waitstatus_to_exitcode(st), "seconds", round(time.time() - t0, 1))
print("bar", int(b"\rwriting [" in out), "full", int(b"100%" in out),
      "newline", int(b"100%" in out and out.rfind(b"\n") > out.rfind(b"100%")))
EOF
  read -r _ st _ secs <<<"$(sed -n 1p "$tmp/pty.out")"
  if [ "$st" != 0 ]; then
    bad "mkmodel in a pseudo-terminal exited $st"
  elif awk "BEGIN{exit !($secs < 1.5)}"; then
    echo "mkmodel took ${secs} s in the pseudo-terminal: too quick to expect a bar"
  else
    grep -q '^bar 1 full 1 newline 1$' "$tmp/pty.out" && ok ||
      { bad "no progress bar in a pseudo-terminal"; cat "$tmp/pty.out"; }
  fi
  cmp -s "$tmp/piped.gguf" "$tmp/tty.gguf" && ok || bad "the bar changed the file"
else
  echo "no python3: the pseudo-terminal check is skipped"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
