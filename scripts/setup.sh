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
          libopenblas-dev libjansson-dev libedit-dev libmicrohttpd-dev python3 time)
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

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"

if [ "$run_main" = 1 ]; then
  model=../shared/models/stories260K.gguf
  ./build/shoal generate -m "$model" -c 512 --temp 0 -n 64 -p "Once upon a time"
fi
