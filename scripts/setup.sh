#!/usr/bin/env bash
# Installs Shoal's build dependencies (Debian 12 packages), builds it, and
# runs the main job: text generation from the shared test model.
#   scripts/setup.sh            install, build, generate
#   scripts/setup.sh --no-run   install and build only
set -euo pipefail
cd "$(dirname "$0")/.."

run_main=1
[ "${1:-}" = "--no-run" ] && run_main=0

packages=(build-essential cmake pkg-config libsodium-dev libzmq3-dev libmsgpack-dev
          libopenblas-dev libjansson-dev libedit-dev libmicrohttpd-dev python3 time
          curl tmux)
# Used by the integration tests when present (they skip those checks
# otherwise): node and npm run the official `openai` package against `shoal
# api`, promtool (package prometheus) checks /metrics, clang builds the
# libFuzzer targets (scripts/fuzz.sh), headless Chromium loads the
# dashboard, iproute2 (ip, tc) makes the multi-host test's namespaces.
optional=(nodejs prometheus clang libclang-rt-14-dev chromium iproute2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
want=()
for p in "${optional[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || want+=("$p")
done
command -v npm >/dev/null || want+=(npm)
if [ ${#want[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  for p in "${want[@]}"; do
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$p" \
      >/dev/null 2>&1 || echo "note: could not install $p (optional, for tests)" >&2
  done
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"

if [ "$run_main" = 1 ]; then
  model=../shared/models/stories260K.gguf
  ./build/shoal generate -m "$model" -c 512 --temp 0 -n 64 -p "Once upon a time"
fi
