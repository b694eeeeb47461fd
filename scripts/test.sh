#!/usr/bin/env bash
# Builds Shoal and runs the whole test suite (unit, integration, fuzz-corpus
# replay). With --asan, runs it in a separate AddressSanitizer+UBSan build.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=build flags=(-DCMAKE_BUILD_TYPE=Release)
if [ "${1:-}" = "--asan" ]; then
  dir=build-asan flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHOAL_SANITIZE=ON)
  shift
fi
cmake -S . -B "$dir" "${flags[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
ctest --test-dir "$dir" --output-on-failure -j2 "$@"
