# Shared by the integration tests: source it after `set -u` and the checks
# of SHOAL / SHOAL_SHARED.
#   tmp          a fresh folder, removed at exit (kept when KEEP is set)
#   pids         PIDs to stop at exit: add every process started
#   ok / bad     count a passed / failed check (bad prints why)
#   finish       prints the counts; exit status 0 when nothing failed
#   wait_file FILE SECONDS       a file with something in it appears
#   wait_code URL CODE SECONDS   an HTTP status
#   status_port LOGFILE          the port of `serve --http-port`, from its log
#   jget FILE PYEXPR             a value of the JSON in FILE (j: the document)
# Stops only the processes in pids: SIGTERM, 5 s, then SIGKILL.
tmp=$(mktemp -d)
pids=()
pass=0 fail=0
cleanup() {
  local p i
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  [ -n "${KEEP:-}" ] && echo "kept $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
finish() {
  echo "$pass passed, $fail failed"
  [ "$fail" = 0 ]
}
wait_file() {
  local i
  for i in $(seq $(($2 * 10))); do [ -s "$1" ] && return 0; sleep 0.1; done
  return 1
}
wait_code() {
  local i
  for i in $(seq $(($3 * 10))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
status_port() {
  local i p
  for i in $(seq 100); do
    p=$(grep -o 'status port: http://[^ ]*:[0-9]*/' "$1" 2>/dev/null | head -1 | grep -o '[0-9]*/$' | tr -d /)
    [ -n "$p" ] && { echo "$p"; return 0; }
    sleep 0.1
  done
  echo "FAIL: $1 names no status port" >&2
  return 1
}
jget() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null; }
