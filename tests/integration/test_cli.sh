#!/usr/bin/env bash
# Command-line behaviour of `shoal generate` and `shoal bench`: help, bad
# flags, missing and malformed files, a prompt longer than the context,
# stdout/stderr separation.
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
model=$SHOAL_SHARED/models/stories260K.gguf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok()   { pass=$((pass + 1)); }
bad()  { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect STATUS CMD...: exit status and a one-line stderr for errors
expect() {
  local want=$1; shift
  "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  if [ "$got" -ne "$want" ]; then bad "'$*' exited $got, expected $want"; cat "$tmp/err"; return; fi
  if [ "$want" -ne 0 ]; then
    [ "$(wc -l <"$tmp/err")" -eq 1 ] || { bad "'$*' stderr is not one line:"; cat "$tmp/err"; return; }
    [ ! -s "$tmp/out" ] || { bad "'$*' wrote to stdout on error"; return; }
  fi
  ok
}

expect 0 "$SHOAL" generate --help
grep -q -- "--temp" "$tmp/out" && ok || bad "generate --help lacks --temp"
expect 0 "$SHOAL" bench --help
expect 0 "$SHOAL" --help
expect 2 "$SHOAL" nosuchcommand
expect 2 "$SHOAL" generate
expect 2 "$SHOAL" generate -m "$model" -n abc
expect 2 "$SHOAL" generate -m "$model" -n -5
expect 2 "$SHOAL" generate -m "$model" --temp nan
expect 2 "$SHOAL" generate -m "$model" --top-p 2
expect 2 "$SHOAL" generate -m "$model" --bogus-flag
expect 1 "$SHOAL" generate -m "$tmp/missing.gguf" -p hi
printf 'GGUF' >"$tmp/trunc.gguf"
expect 1 "$SHOAL" generate -m "$tmp/trunc.gguf" -p hi
head -c 100000 "$model" >"$tmp/cut.gguf"
expect 1 "$SHOAL" generate -m "$tmp/cut.gguf" -p hi
long=$(printf 'Once upon a time %.0s' $(seq 1 40))
expect 1 "$SHOAL" generate -m "$model" -c 16 -p "$long"
grep -q "context" "$tmp/err" && ok || bad "long prompt error does not mention the context"

# stdout is exactly prompt + generated text + newline; diagnostics on stderr
"$SHOAL" generate -m "$model" --temp 0 -n 8 -p "Zoo" >"$tmp/out" 2>"$tmp/err"
[ "$(head -c 3 "$tmp/out")" = "Zoo" ] && ok || bad "stdout does not start with the prompt"
[ "$(tail -c 1 "$tmp/out" | od -An -c | tr -d ' ')" = '\n' ] && ok || bad "stdout does not end with a newline"
# -n 0 prints just the prompt and a newline
"$SHOAL" generate -m "$model" --temp 0 -n 0 -p "Zoo" >"$tmp/out" 2>/dev/null
[ "$(cat "$tmp/out")" = "Zoo" ] && ok || bad "-n 0 printed more than the prompt"
# sampling: same seed, same text; the context may exceed the file's
"$SHOAL" generate -m "$model" --temp 1 --seed 7 -n 40 -c 1024 -p "Lily" >"$tmp/a" 2>/dev/null
"$SHOAL" generate -m "$model" --temp 1 --seed 7 -n 40 -c 1024 -p "Lily" >"$tmp/b" 2>/dev/null
cmp -s "$tmp/a" "$tmp/b" && ok || bad "same seed gave different text"
"$SHOAL" bench -m "$model" -p 16 -n 4 -r 1 --json >"$tmp/out" 2>"$tmp/err"
grep -q '"prompt_tps"' "$tmp/out" && grep -q '"decode_tps"' "$tmp/out" && ok || bad "bench --json lacks fields"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
