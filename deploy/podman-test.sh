#!/usr/bin/env bash
# The container test: builds the image from deploy/Dockerfile, runs a swarm
# of four containers from it (a bootstrap node and three servers, host
# networking on loopback ports), and generates every reference case of
# stories260K through them in client containers, byte for byte against
# ../shared/reference. Then: each server's HEALTHCHECK (when the binary has
# `serve --http-port`), and a clean stop (`stop` sends SIGTERM: the server
# announces its blocks OFFLINE, the swarm shows it gone, exit status 0).
#
#   deploy/podman-test.sh [--install-deps] [--reset] [--compose] [--systemd]
#     --install-deps  apt-get install podman, runc and debootstrap (and with
#                     --compose podman-compose) if missing
#     --reset         empty this script's container storage first (a cold build)
#     --compose       then also bring up deploy/compose.yaml (podman-compose, or
#                     `docker compose`), wait for the API's /health and check a
#                     greedy completion through it against the reference text
#     --systemd       then also run deploy/shoal-node.service under systemd in a
#                     container made from the image (podman only): start returns
#                     at READY=1, a generation through it, a restart after
#                     SIGKILL, a clean stop (skipped, with a note, where systemd
#                     does not boot in a container)
#
# Environment:
#   CONTAINER_ENGINE  podman (default) or docker
#   SHOAL_SHARED      the shared folder (default: ../shared beside the checkout)
#   OUT_DIR           where logs go (default: build/deploy-test in the checkout);
#                     the main log is $OUT_DIR/podman-test.log, each container's
#                     own log $OUT_DIR/<name>.log
#   SHOAL_BASE        debootstrap (default for podman) or registry (default for
#                     docker): where debian:bookworm-slim comes from
#   DEBIAN_MIRROR     for debootstrap (default: the first Debian URI in apt's sources)
#   SHOAL_DEBOOTSTRAP_CACHE  where the base image's tarball is kept between runs
#                     (default /var/tmp/shoal-debootstrap; delete it to remake it)
#   SHOAL_PODMAN_ROOT podman's storage for this test (default /var/tmp/shoal-podman):
#                     images, layers (the build cache) and containers live there,
#                     apart from the machine's own podman storage
#
# Without a registry, podman needs two adjustments, made here and only for
# this script's own podman calls: the runc runtime, and a containers.conf
# (CONTAINERS_CONF) with default_ulimits = [] and cgroup_manager =
# "cgroupfs". The base image is made from Debian packages (debootstrap
# --variant=minbase bookworm), imported as docker.io/library/debian:
# bookworm-slim, so the Dockerfile builds unchanged. Build steps use the
# host's network (apt-get inside the build).
#
# Exit status: 0 passed, 1 failed, 77 skipped (not root, or podman/runc/
# debootstrap missing: the reason on stderr). Every container it starts is
# named shoal-test-<pid>-<role> and removed on exit, whatever happens.
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
engine=${CONTAINER_ENGINE:-podman}
shared=${SHOAL_SHARED:-$repo/../shared}
out=${OUT_DIR:-$repo/build/deploy-test}
base_from=${SHOAL_BASE:-$([ "$engine" = docker ] && echo registry || echo debootstrap)}
cache=${SHOAL_DEBOOTSTRAP_CACHE:-/var/tmp/shoal-debootstrap}
proot=${SHOAL_PODMAN_ROOT:-/var/tmp/shoal-podman}
install_deps=0 reset=0 compose=0 with_systemd=0
for a in "$@"; do
  case $a in
    --install-deps) install_deps=1 ;;
    --reset) reset=1 ;;
    --compose) compose=1 ;;
    --systemd) with_systemd=1 ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "podman-test.sh: unknown argument $a (see --help)" >&2; exit 2 ;;
  esac
done

skip() { echo "skipped: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (rootful $engine, debootstrap)"
if [ "$install_deps" = 1 ] && [ "$engine" = podman ]; then
  missing=()
  want=(podman runc debootstrap)
  [ "$compose" = 1 ] && want+=(podman-compose)
  for c in "${want[@]}"; do command -v "$c" >/dev/null || missing+=("$c"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null || skip "cannot install ${missing[*]}"
  fi
fi
command -v "$engine" >/dev/null || skip "$engine is not installed"
[ "$engine" = podman ] && { command -v runc >/dev/null || skip "runc is not installed"; }
[ "$engine" = docker ] && { docker info >/dev/null 2>&1 || skip "no Docker daemon answers"; }
[ "$engine" = docker ] && with_systemd=0 # --systemd=always is podman's
if [ "$compose" = 1 ]; then
  if [ "$engine" = podman ]; then
    command -v podman-compose >/dev/null || skip "--compose: podman-compose is not installed"
  else
    docker compose version >/dev/null 2>&1 || skip "--compose: docker compose is not installed"
  fi
fi
model=$shared/models/stories260K.gguf
ref=$shared/reference
[ -f "$model" ] && [ -f "$ref/cases.tsv" ] || skip "no $model or $ref/cases.tsv"

mkdir -p "$out"
log=$out/podman-test.log
: >"$log"
exec > >(tee -a "$log") 2>&1
echo "log: $log"
work=$(mktemp -d /var/tmp/shoal-podman-test.XXXXXX)
tag=shoal-test-$$
image=localhost/shoal:test
created=()
pass=0 fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
step() { echo "== $(date -u +%H:%M:%S) $*"; }

# ---- the engine -------------------------------------------------------------
if [ "$engine" = podman ]; then
  mkdir -p "$proot/networks"
  # networks (compose makes one) live in this storage too, not in /etc
  cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = []
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"

[network]
network_config_dir = "$proot/networks"
EOF
  export CONTAINERS_CONF=$work/containers.conf
  ctr_cmd=(podman --root "$proot/storage" --runroot "$proot/run" --runtime runc
           --cgroup-manager cgroupfs --events-backend file)
  ctr() { "${ctr_cmd[@]}" "$@"; }
  build_flags=(--format docker)
  # the same podman, as one executable, for podman-compose --podman-path
  printf '#!/bin/sh\nexport CONTAINERS_CONF=%s\nexec podman --root %s --runroot %s --runtime runc --cgroup-manager cgroupfs --events-backend file "$@"\n' \
    "$work/containers.conf" "$proot/storage" "$proot/run" >"$work/podman"
  chmod +x "$work/podman"
  compose_cmd() {
    podman-compose --podman-path "$work/podman" \
      --podman-build-args "--format docker --network host" -p "$tag" \
      -f "$repo/deploy/compose.yaml" "$@"
  }
else
  ctr_cmd=(docker)
  ctr() { docker "$@"; }
  compose_cmd() { docker compose -p "$tag" -f "$repo/deploy/compose.yaml" "$@"; }
  image=shoal:$tag
  build_flags=()
fi

compose_up=0
cleanup() {
  local c
  if [ "$compose_up" = 1 ]; then
    compose_cmd logs >"$out/compose.log" 2>&1
    # the project's containers with their anonymous volumes (podman-compose's
    # down -v removes only the named ones), then the rest of the project
    ctr ps -a -q --filter "label=com.docker.compose.project=$tag" |
      xargs -r "${ctr_cmd[@]}" rm -f -v -t 10 >/dev/null 2>&1
    compose_cmd down -v >/dev/null 2>&1
    [ "$engine" = podman ] && ctr network rm -f "${tag}_default" >/dev/null 2>&1
  fi
  for c in "${created[@]}"; do
    ctr logs "$c" >"$out/${c#"$tag"-}.log" 2>&1
    ctr rm -f -v -t 5 "$c" >/dev/null 2>&1
  done
  ctr rm -f -v "$tag-client" >/dev/null 2>&1 # if interrupted while one ran
  [ "$engine" = docker ] && docker rmi "$image" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

if [ "$reset" = 1 ] && [ "$engine" = podman ]; then
  step "emptying $proot"
  ctr rm -a -f -v >/dev/null 2>&1
  ctr rmi -a -f >/dev/null 2>&1
  ctr volume rm -a -f >/dev/null 2>&1
  rm -rf "$proot"
  mkdir -p "$proot/networks"
fi

# ---- the base image ----------------------------------------------------------
t_all=$(now)
if [ "$base_from" = debootstrap ]; then
  tarball=$cache/bookworm-minbase.tar
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || skip "debootstrap is not installed"
    mirror=${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
      /etc/apt/sources.list.d/*.sources 2>/dev/null |
      grep -o 'https\?://[^ ]*/debian/\?\( \|$\)' | grep -v security | head -1 | tr -d ' ')}
    mirror=${mirror:-http://deb.debian.org/debian}
    step "debootstrap --variant=minbase bookworm from $mirror (cached in $cache)"
    t0=$(now)
    mkdir -p "$cache"
    root=$cache/rootfs.$$
    if ! debootstrap --variant=minbase bookworm "$root" "$mirror" >"$out/debootstrap.log" 2>&1; then
      tail -20 "$out/debootstrap.log"; rm -rf "$root"
      echo "FAIL: debootstrap"; exit 1
    fi
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
    echo "base image made in $(since "$t0") s ($(du -h "$tarball" | cut -f1))"
  else
    echo "base image from the cache: $tarball"
  fi
  if ! ctr image exists docker.io/library/debian:bookworm-slim 2>/dev/null &&
     ! ctr image inspect docker.io/library/debian:bookworm-slim >/dev/null 2>&1; then
    ctr import "$tarball" docker.io/library/debian:bookworm-slim >"$out/import.log" 2>&1 ||
      { echo "FAIL: $engine import"; exit 1; }
  fi
fi

# ---- the image ----------------------------------------------------------------
step "building $image from deploy/Dockerfile"
t0=$(now)
if ctr build "${build_flags[@]}" --network host -f "$repo/deploy/Dockerfile" -t "$image" \
     "$repo" >"$out/build.log" 2>&1; then
  t_build=$(since "$t0")
  ok; echo "image built in $t_build s"
else
  tail -30 "$out/build.log"; echo "FAIL: the image does not build (log: $out/build.log)"; exit 1
fi
ctr image inspect "$image" --format '{{.Size}}' 2>/dev/null |
  awk '{ printf "image size: %.0f MB\n", $1 / 1e6 }'
hc=$(ctr image inspect "$image" --format '{{json .Config.Healthcheck}}' 2>/dev/null)
case $hc in *health*) ok ;; *) bad "the image has no HEALTHCHECK ($hc)" ;; esac
ctr run --rm --network none --no-healthcheck "$image" version | grep -q '^shoal ' && ok ||
  bad "the entrypoint is not shoal"
# local generation in the image, with the kernels the CPU allows and with
# the plain C ones (SHOAL_ISA=c): both the reference text (the binary is
# built without -march, the ISA is chosen at run time)
IFS=$'\t' read -r name n prompt <"$ref/cases.tsv"
for isa in "" c; do
  if ctr run --rm --network none --no-healthcheck -e "SHOAL_ISA=$isa" \
       -v "$shared/models:/models:ro" "$image" \
       generate -m /models/stories260K.gguf -c 512 --temp 0 -n "$n" -p "$prompt" \
       >"$work/local.txt" 2>"$work/local.err" && cmp -s "$work/local.txt" "$ref/$name.txt"; then
    ok
  else
    bad "local generation in the image (SHOAL_ISA='$isa')"; tail -3 "$work/local.err"
  fi
done
ctr run --rm --network none --no-healthcheck -v "$shared/models:/models:ro" "$image" \
  bench -m /models/stories260K.gguf -p 16 -n 16 -t 1 2>/dev/null | grep -o 'isa [a-z0-9]*' |
  sed 's/^/kernels chosen at run time on this CPU: /'

# ---- the swarm -------------------------------------------------------------------
step "starting a bootstrap node and three servers"
t_swarm=$(now)
read -r p0 p1 p2 p3 h1 h2 h3 < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
EOF
)
mkdir -p "$work/swarm" "$work/boot" "$work/s1" "$work/s2" "$work/s3"
chown 10001:10001 "$work/swarm" "$work/boot" "$work/s1" "$work/s2" "$work/s3"
has_http=0
ctr run --rm --network none --no-healthcheck "$image" serve --help 2>&1 | grep -q -- '--http-port' && has_http=1

# the same shape as deploy/compose.yaml: state on a volume, the bootstrap's
# address found in a file on a shared volume, the model on a read-only one
ctr run -d --name "$tag-boot" --network host --no-healthcheck \
  -v "$work/boot:/var/lib/shoal" -v "$work/swarm:/swarm" "$image" \
  bootstrap --host 127.0.0.1 --port "$p0" --identity /var/lib/shoal/identity.key \
  --address-file /swarm/bootstrap.addr >/dev/null && created+=("$tag-boot") ||
  bad "the bootstrap container does not start"
i=0
for s in s1 s2 s3; do
  i=$((i + 1))
  eval "port=\$p$i hport=\$h$i"
  http=() health=(--no-healthcheck)
  if [ "$has_http" = 1 ]; then
    http=(--http-port "$hport")
    # the image's HEALTHCHECK, run below with `healthcheck run` (podman's
    # timer for it needs systemd, which these machines lack: no interval)
    health=(-e "SHOAL_HTTP_PORT=$hport")
    [ "$engine" = podman ] && health+=(--health-interval disable)
  fi
  # the servers place themselves (no --blocks): 3 blocks each of 5
  ctr run -d --name "$tag-$s" --network host "${health[@]}" \
    -v "$work/$s:/var/lib/shoal" -v "$work/swarm:/swarm:ro" -v "$shared/models:/models:ro" \
    --entrypoint /bin/sh "$image" -c '
      while [ ! -s /swarm/bootstrap.addr ]; do sleep 0.2; done
      exec shoal serve -m /models/stories260K.gguf --initial-peers "$(cat /swarm/bootstrap.addr)" \
        --identity /var/lib/shoal/identity.key --address-file /var/lib/shoal/address "$@"' \
    sh --host 127.0.0.1 --port "$port" --num-blocks 3 -t 1 --rebalance-period 5 \
    "${http[@]}" >/dev/null 2>"$work/run.err" && created+=("$tag-$s") ||
    { bad "server $s does not start"; cat "$work/run.err"; }
done

wait_file() { # FILE SECONDS
  local i
  for i in $(seq $(($2 * 10))); do [ -s "$1" ] && return 0; sleep 0.1; done
  return 1
}
wait_file "$work/swarm/bootstrap.addr" 30 || bad "the bootstrap wrote no address file"
boot=$(cat "$work/swarm/bootstrap.addr" 2>/dev/null)
echo "bootstrap: $boot"
for s in s1 s2 s3; do
  wait_file "$work/$s/address" 60 || bad "$s wrote no address"
done

client() { # a client container (one at a time): shoal ARGS...
  ctr run --rm --name "$tag-client" --network host --no-healthcheck \
    -v "$shared/models:/models:ro" "$image" "$@"
}
complete=0
for i in $(seq 90); do
  if client swarm --initial-peers "$boot" -m /models/stories260K.gguf --json \
       >"$work/swarm.json" 2>"$work/swarm.err"; then
    complete=1; break
  fi
  sleep 1
done
if [ "$complete" = 1 ]; then
  ok; echo "every block served $(since "$t_swarm") s after the containers started"
else
  bad "the three servers do not cover every block within 90 s"
  cat "$work/swarm.json" "$work/swarm.err"
fi
client swarm --initial-peers "$boot" -m /models/stories260K.gguf 2>/dev/null | sed 's/^/  /'

step "generating every reference case through the swarm"
t0=$(now)
cases=0 good=0
while IFS=$'\t' read -r name n prompt; do
  cases=$((cases + 1))
  if client generate -m /models/stories260K.gguf -c 512 --temp 0 -n "$n" -p "$prompt" -t 1 \
       --initial-peers "$boot" --timeout 10 >"$work/out" 2>"$work/err" &&
     cmp -s "$work/out" "$ref/$name.txt"; then
    good=$((good + 1))
  else
    bad "$name"; tail -5 "$work/err"; diff "$ref/$name.txt" "$work/out" | head -5
  fi
done <"$ref/cases.tsv"
[ "$good" -eq "$cases" ] && ok
echo "$good/$cases reference cases byte for byte through the containers ($(since "$t0") s)"

# ---- health, then a clean stop --------------------------------------------------------
if [ "$has_http" = 1 ]; then
  for s in s1 s2 s3; do
    if [ "$engine" = podman ]; then
      ctr healthcheck run "$tag-$s" >/dev/null 2>&1; st=$?
    else
      ctr exec "$tag-$s" sh -c 'curl -fsS -o /dev/null "http://127.0.0.1:$SHOAL_HTTP_PORT/health"'
      st=$?
    fi
    [ "$st" = 0 ] && ok || bad "$s: the HEALTHCHECK does not pass (status $st)"
  done
  echo "HEALTHCHECK (GET /health on --http-port) passes in the three servers"
else
  echo "note: this shoal has no serve --http-port: the HEALTHCHECK was not exercised"
fi

step "stopping s3 (SIGTERM: graceful leave)"
a3=$(cat "$work/s3/address" 2>/dev/null)
t0=$(now)
ctr stop -t 30 "$tag-s3" >/dev/null 2>&1
st=$(ctr inspect "$tag-s3" --format '{{.State.ExitCode}}' 2>/dev/null)
[ "$st" = 0 ] && ok || bad "s3 exited with status '$st' after SIGTERM"
ctr logs "$tag-s3" 2>&1 | grep -qi "as offline" && ok || bad "s3 did not announce OFFLINE"
echo "s3 stopped in $(since "$t0") s with status $st"
gone=0
for i in $(seq 20); do
  client swarm --initial-peers "$boot" -m /models/stories260K.gguf --json >"$work/swarm.json" \
    2>/dev/null
  if python3 - "$work/swarm.json" "$a3" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))["models"][0]
assert not [s for s in m["servers"] if s["address"] == sys.argv[2] and s["state"] == "online"]
EOF
  then gone=1; break; fi
  sleep 1
done
[ "$gone" = 1 ] && ok || bad "the swarm still shows s3 online after its stop"

# the bootstrap node stops cleanly too (SIGTERM as a container's PID 1)
ctr stop -t 10 "$tag-boot" >/dev/null 2>&1
st=$(ctr inspect "$tag-boot" --format '{{.State.ExitCode}}' 2>/dev/null)
[ "$st" = 0 ] && ok || bad "the bootstrap exited with status '$st' after SIGTERM"

t_run=$(since "$t_swarm")

# ---- systemd ----------------------------------------------------------------------
# deploy/shoal-node.service, as written (its sandbox included), run by a real
# systemd inside a container made from the image: readiness, status, a
# generation through the node, a restart after SIGKILL, a clean stop.
if [ "$with_systemd" = 1 ]; then
  step "deploy/shoal-node.service under systemd (in a container)"
  sd=$work/systemd
  mkdir -p "$sd"
  cp "$repo/deploy/shoal-node.service" "$repo/deploy/shoal.sysusers" \
    "$repo/deploy/shoal-node.env" "$sd/"
  cat >"$sd/Containerfile" <<EOF
FROM $image
USER root
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      systemd systemd-sysv && rm -rf /var/lib/apt/lists/* && userdel shoal
COPY shoal-node.service /etc/systemd/system/shoal-node.service
COPY shoal.sysusers /usr/lib/sysusers.d/shoal.conf
COPY shoal-node.env /etc/shoal/node.env
ENTRYPOINT []
CMD ["/sbin/init"]
EOF
  if ctr build --network host -t localhost/shoal-systemd:test "$sd" >"$out/systemd-build.log" 2>&1 &&
     ctr run -d --name "$tag-systemd" --systemd=always --no-healthcheck --network host \
       -v "$shared/models:/srv/models:ro" localhost/shoal-systemd:test >/dev/null 2>&1; then
    created+=("$tag-systemd")
    booted=
    for i in $(seq 60); do
      booted=$(ctr exec "$tag-systemd" systemctl is-system-running 2>/dev/null)
      case $booted in running|degraded) break ;; esac
      sleep 0.5
    done
  else
    booted=none; tail -5 "$out/systemd-build.log"
  fi
  case $booted in
  running|degraded)
    read -r sp0 sp1 < <(python3 -c 'import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
    # a bootstrap node beside it, and node.env filled in as a volunteer would
    ctr exec "$tag-systemd" sh -c "
      systemd-run --unit shoal-boot /usr/local/bin/shoal bootstrap --host 127.0.0.1 \
        --port $sp0 --address-file /run/boot.addr >/dev/null 2>&1
      for i in \$(seq 100); do [ -s /run/boot.addr ] && break; sleep 0.1; done
      sed -i -e 's|^MODEL=.*|MODEL=/srv/models/stories260K.gguf|' \
        -e \"s|^INITIAL_PEERS=.*|INITIAL_PEERS=\$(cat /run/boot.addr)|\" \
        -e 's|^PORT=.*|PORT=$sp1|' -e 's|^EXTRA_ARGS=.*|EXTRA_ARGS=--host 127.0.0.1 -t 1|' \
        /etc/shoal/node.env"
    sboot=$(ctr exec "$tag-systemd" cat /run/boot.addr)
    t0=$(now)
    ctr exec "$tag-systemd" systemctl start shoal-node && ok || bad "systemctl start shoal-node"
    t_start=$(since "$t0")
    show() { ctr exec "$tag-systemd" systemctl show shoal-node -p "$1" --value; }
    status=$(show StatusText)
    case $status in "serving blocks 0:5 as shoal://"*) ok ;; *) bad "status: '$status'" ;; esac
    [ "$(show User)" = shoal ] && ok || bad "the service does not run as shoal"
    echo "systemctl start returned after $t_start s (READY=1); status: $status"
    IFS=$'\t' read -r name n prompt <"$ref/cases.tsv"
    client generate -m /models/stories260K.gguf -c 512 --temp 0 -n "$n" -p "$prompt" -t 1 \
      --initial-peers "$sboot" --timeout 10 >"$work/out" 2>"$work/err" &&
      cmp -s "$work/out" "$ref/$name.txt" && ok ||
      { bad "$name through the systemd node"; tail -3 "$work/err"; }
    pid0=$(show MainPID)
    ctr exec "$tag-systemd" systemctl kill -s SIGKILL shoal-node
    restarted=0
    for i in $(seq 40); do # RestartSec=10s, then READY=1 again
      [ "$(show ActiveState)" = active ] && [ "$(show MainPID)" != "$pid0" ] &&
        [ "$(show NRestarts)" = 1 ] && { restarted=1; break; }
      sleep 0.5
    done
    [ "$restarted" = 1 ] && ok || bad "no restart after SIGKILL (Restart=on-failure)"
    [ "$(ctr exec "$tag-systemd" cat /var/lib/shoal/address)" = "${status#serving blocks 0:5 as }" ] &&
      ok || bad "the address changed across the restart (StateDirectory identity)"
    t0=$(now)
    ctr exec "$tag-systemd" systemctl stop shoal-node
    echo "systemctl stop took $(since "$t0") s"
    [ "$(show Result)" = success ] && [ "$(show ExecMainStatus)" = 0 ] && ok ||
      bad "stop: result $(show Result), status $(show ExecMainStatus)"
    ctr exec "$tag-systemd" journalctl -u shoal-node --no-pager -o short-precise \
      >"$out/systemd-journal.log" 2>&1
    grep -q "0:5 as offline" "$out/systemd-journal.log" && ok ||
      bad "no OFFLINE announcement in the journal"
    ;;
  *) echo "note: systemd does not boot in a container here ($booted): the unit was not run" ;;
  esac
fi

# ---- compose -----------------------------------------------------------------------
if [ "$compose" = 1 ]; then
  step "deploy/compose.yaml: bootstrap, three servers and the API"
  t0=$(now)
  api_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
  export SHOAL_MODEL=$model SHOAL_API_PORT=$api_port
  compose_up=1
  if [ "$engine" = podman ]; then
    ctr tag "$image" localhost/shoal:latest # the image just tested (this storage only)
    up=(up -d)
  else
    up=(up -d --build) # the build is cached from the one above
  fi
  if compose_cmd "${up[@]}" >"$out/compose-up.log" 2>&1; then ok; else
    bad "compose up"; tail -20 "$out/compose-up.log"
  fi
  healthy=0 code=
  for i in $(seq 120); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$api_port/health")
    [ "$code" = 200 ] && { healthy=1; break; }
    sleep 1
  done
  [ "$healthy" = 1 ] && ok || bad "the API's /health is not 200 within 120 s (last: $code)"
  echo "compose: the API healthy $(since "$t0") s after up"
  IFS=$'\t' read -r name n prompt <"$ref/cases.tsv"
  body=$(python3 -c 'import json, sys; print(json.dumps({"model": "model",
    "prompt": sys.argv[1], "max_tokens": int(sys.argv[2]), "temperature": 0}))' "$prompt" "$n")
  if curl -sS -m 60 "http://127.0.0.1:$api_port/v1/completions" \
       -H 'Content-Type: application/json' -d "$body" >"$work/completion.json" &&
     python3 - "$work/completion.json" "$prompt" "$ref/$name.txt" <<'EOF'
import json, sys
text = json.load(open(sys.argv[1]))["choices"][0]["text"]
want = open(sys.argv[3]).read()
assert sys.argv[2] + text + "\n" == want, (text, want)
EOF
  then ok; echo "compose: a greedy completion through the API is $name's reference text"
  else bad "the completion through compose's API differs from $name"; cat "$work/completion.json"
  fi
  # every service's container must be up (none restarting)
  running=$(ctr ps --filter "label=com.docker.compose.project=$tag" --format '{{.Names}}' | wc -l)
  [ "$running" = 5 ] && ok || { bad "$running of 5 compose containers run"; ctr ps -a; }
fi
echo "timings: image build ${t_build:-?} s, swarm run $t_run s, all $(since "$t_all") s"
echo "$pass passed, $fail failed (log: $log)"
[ "$fail" -eq 0 ]
