#!/usr/bin/env bash
# Builds the libFuzzer targets with clang under ASan+UBSan (build-fuzz/) and
# runs each for a while, starting from its committed corpus (copied, so the
# committed corpus is not modified).
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 30)
# Exits 0 when no target crashed; skips (exit 0, with a message) without clang.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
if ! command -v clang >/dev/null; then
  echo "fuzz: clang is not installed; skipping the libFuzzer runs (corpus replays still run in ctest)"
  exit 0
fi
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHOAL_FUZZ=ON \
  -DSHOAL_SANITIZE=ON >/dev/null
cmake --build build-fuzz -j"$(nproc)" >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for src in tests/fuzz/fuzz_*.c; do
  name=$(basename "$src" .c)
  bin=build-fuzz/tests/$name
  [ -x "$bin" ] || { echo "fuzz: $bin was not built"; status=1; continue; }
  mkdir -p "$work/$name"
  cp -r "tests/fuzz/corpus/$name/." "$work/$name/" 2>/dev/null || true
  if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$work/$name-" \
       "$work/$name" >"$work/$name.log" 2>&1; then
    echo "fuzz: $name: $(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$work/$name.log" | tail -1) runs, no crash"
  else
    echo "fuzz: $name FAILED"; tail -40 "$work/$name.log"; status=1
  fi
done
exit $status
