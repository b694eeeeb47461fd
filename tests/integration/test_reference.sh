#!/usr/bin/env bash
# Every reference case of ../shared/reference: greedy `shoal generate` output
# must equal NAME.txt byte for byte, with 1 and 2 threads.
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
model=$SHOAL_SHARED/models/stories260K.gguf
ref=$SHOAL_SHARED/reference
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
while IFS=$'\t' read -r name n prompt; do
  for t in 1 2; do
    if timeout 60 "$SHOAL" generate -m "$model" -c 512 --temp 0 -n "$n" -p "$prompt" -t "$t" \
         >"$tmp/out" 2>"$tmp/err" && cmp -s "$tmp/out" "$ref/$name.txt"; then
      pass=$((pass + 1))
    else
      fail=$((fail + 1))
      echo "FAIL: $name (-t $t)"; cat "$tmp/err"
      diff <(cat "$ref/$name.txt") "$tmp/out" | head -5
    fi
  done
done < "$ref/cases.tsv"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
