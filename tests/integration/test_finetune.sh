#!/usr/bin/env bash
# Local LoRA fine-tuning with `shoal finetune` on stories260K, and applying
# the adapter with `shoal generate --lora`:
#   - a little story the model does not know (a purple robot named Zib),
#     repeated: the step loss falls by at least 30 %, and the text's
#     perplexity by at least half;
#   - two runs with the same seed write identical adapter files; another
#     seed writes another file;
#   - the file has llama.cpp's adapter keys and tensor names;
#   - greedy generation with a fresh adapter (B = 0, --steps 0) equals
#     generation without one; with the trained adapter, generation from the
#     story's first words continues the story;
#   - usage errors exit 2; an unreadable data file or adapter exits 1.
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
model=$SHOAL_SHARED/models/stories260K.gguf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

story="Zib was a little purple robot who lived on a hill of blue sand. Every morning Zib polished his seven shiny buttons and sang a song about the moon. One day a green frog named Pop hopped up the hill and asked Zib for a ride. Zib said yes, and they rolled down the hill together, laughing all the way to the silver river."
for i in 1 2 3 4; do echo "$story"; done >"$tmp/zib.txt"

train() { # OUT [ARGS...]: stderr into $tmp/OUT.log
  local out=$1
  shift
  timeout 120 "$SHOAL" finetune -m "$model" --data "$tmp/zib.txt" --out "$tmp/$out" \
    --steps 60 --lr 3e-3 --seed 7 -t 1 "$@" 2>"$tmp/$out.log"
}

if train a.gguf; then ok; else bad "finetune failed"; cat "$tmp/a.gguf.log"; fi
# "loss: first step X, last step Y (...)" and "text: loss A -> B, perplexity P -> Q"
read -r first last < <(sed -n 's/^loss: first step \([0-9.]*\), last step \([0-9.]*\).*/\1 \2/p' "$tmp/a.gguf.log")
read -r pb pa < <(sed -n 's/^text: .*perplexity \([0-9.]*\) -> \([0-9.]*\)$/\1 \2/p' "$tmp/a.gguf.log")
echo "step loss $first -> $last; text perplexity $pb -> $pa"
awk -v a="${first:-0}" -v b="${last:-9}" 'BEGIN { exit !(a > 0 && b <= 0.7 * a) }' && ok ||
  bad "the loss did not fall by 30 % ($first -> $last)"
awk -v a="${pb:-0}" -v b="${pa:-9}" 'BEGIN { exit !(a > 0 && b <= 0.5 * a) }' && ok ||
  bad "the text's perplexity did not halve ($pb -> $pa)"
[ "$(grep -c '^step [0-9]*/60 loss [0-9.]* tok/s [0-9]*$' "$tmp/a.gguf.log")" = 60 ] && ok ||
  bad "expected 60 progress lines"

# determinism
train b.gguf && cmp -s "$tmp/a.gguf" "$tmp/b.gguf" && ok || bad "two runs with seed 7 differ"
train c.gguf --seed 8 && ! cmp -s "$tmp/a.gguf" "$tmp/c.gguf" && ok ||
  bad "seeds 7 and 8 gave the same adapter"

# llama.cpp's layout: keys and tensor names in the file
for key in general.type adapter adapter.type lora adapter.lora.alpha \
  blk.0.attn_q.weight.lora_a blk.4.ffn_down.weight.lora_b; do
  grep -q -a -F "$key" "$tmp/a.gguf" && ok || bad "no '$key' in the adapter file"
done

# applying it
gen() { timeout 60 "$SHOAL" generate -m "$model" -p "Zib was a little" --temp 0 -n 40 -t 1 "$@" 2>"$tmp/gen.err"; }
train fresh.gguf --steps 0 || bad "finetune --steps 0 failed"
gen >"$tmp/plain.txt" && gen --lora "$tmp/fresh.gguf" >"$tmp/fresh.txt" &&
  cmp -s "$tmp/plain.txt" "$tmp/fresh.txt" && ok || bad "a fresh adapter changed generation"
gen --lora "$tmp/a.gguf" >"$tmp/tuned.txt" || { bad "generate --lora failed"; cat "$tmp/gen.err"; }
echo "without: $(cat "$tmp/plain.txt")"
echo "tuned:   $(cat "$tmp/tuned.txt")"
grep -q "^Zib was a little purple robot who lived on a hill of blue sand" "$tmp/tuned.txt" && ok ||
  bad "the tuned model does not continue the story"
! cmp -s "$tmp/plain.txt" "$tmp/tuned.txt" && ok || bad "the adapter changed nothing"

# errors
"$SHOAL" finetune -m "$model" --out "$tmp/x.gguf" 2>/dev/null; [ $? = 2 ] && ok || bad "no --data: not 2"
"$SHOAL" finetune -m "$model" --data "$tmp/zib.txt" --out "$tmp/x.gguf" --targets q,z 2>/dev/null
[ $? = 2 ] && ok || bad "bad --targets: not 2"
"$SHOAL" finetune -m "$model" --data "$tmp/zib.txt" --out "$tmp/x.gguf" --rank 100 2>/dev/null
[ $? = 2 ] && ok || bad "rank above the model's widths: not 2"
"$SHOAL" finetune -m "$model" --data "$tmp/none.txt" --out "$tmp/x.gguf" 2>/dev/null
[ $? = 1 ] && ok || bad "missing data file: not 1"
printf 'a' >"$tmp/short.txt"
"$SHOAL" finetune -m "$model" --data "$tmp/short.txt" --out "$tmp/x.gguf" 2>"$tmp/err"
[ $? = 1 ] && grep -q "too short" "$tmp/err" && ok || { bad "a one-letter text"; cat "$tmp/err"; }
[ ! -e "$tmp/x.gguf" ] && ok || bad "a failed run wrote an adapter"
gen --lora "$tmp/zib.txt" >/dev/null; [ $? = 1 ] && ok || bad "a text file taken as an adapter"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
