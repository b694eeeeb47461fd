#!/usr/bin/env bash
# `shoal api` with curl (and the official `openai` npm package when node and
# npm are there), on stories260K:
#  local server: /health, /v1/models, the error cases (bad JSON, unknown
#    model, wrong method, unknown route, body over the cap, bad fields),
#    greedy /v1/completions equal to the reference continuation, the same
#    text streamed as SSE chunks ending with [DONE], 8 concurrent requests,
#    /metrics counters that move (and pass `promtool check metrics` when
#    promtool is installed);
#  swarm server (two loopback nodes, blocks 0:3 and 3:5, an API key):
#    /health is 503 while a node does not answer and 200 once it does, the
#    key is enforced on /v1/ (401) and not on /health, greedy completion
#    and 8 concurrent requests through the chain, and api_openai.mjs;
#  a one-slot server: with the slot held, one more request waits and gets
#    503 after --queue-timeout, and one beyond the queue gets 429.
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_SHARED:?path of the shared folder}"
here=$(cd "$(dirname "$0")" && pwd)
model=$SHOAL_SHARED/models/stories260K.gguf
ref=$SHOAL_SHARED/reference
tmp=$(mktemp -d)
pids=()
stopped=()
cleanup() {
  local p i
  for p in "${stopped[@]}"; do kill -CONT "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
command -v curl >/dev/null || { echo "FAIL: curl is needed"; exit 1; }
command -v python3 >/dev/null || { echo "FAIL: python3 is needed"; exit 1; }

# the greedy continuation of "Once upon a time": the reference without
# its prompt and its final newline
prompt="Once upon a time"
tail -c +$((${#prompt} + 1)) "$ref/once-64.txt" | head -c -1 >"$tmp/expected"

# jget FILE PYEXPR: a value from the JSON in FILE (j is the document)
jget() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null; }

# start_api NAME ARGS...: a server on a free port; wait_url NAME: its URL
start_api() {
  local name=$1; shift
  "$SHOAL" api -m "$model" --port 0 --address-file "$tmp/$name.url" "$@" \
    >"$tmp/$name.out" 2>"$tmp/$name.log" &
  pids+=($!)
  eval "pid_$name=$!"
}
wait_url() {
  local i
  for i in $(seq 100); do
    [ -s "$tmp/$1.url" ] && { cat "$tmp/$1.url"; return 0; }
    sleep 0.1
  done
  echo "FAIL: api $1 wrote no address in 10 s" >&2; cat "$tmp/$1.log" >&2
  exit 1
}
# wait_health URL STATUS SECONDS
wait_health() {
  local i
  for i in $(seq $(($3 * 10))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/health")" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
# req URL PATH [CURL ARGS...]: body in $tmp/body, status in $code
req() {
  local url=$1 path=$2; shift 2
  code=$(curl -s -o "$tmp/body" -w '%{http_code}' "$@" "$url$path")
}
# expect_error STATUS CODE: the last answer is an OpenAI error
expect_error() {
  [ "$code" = "$1" ] && ok || { bad "status $code, want $1: $(cat "$tmp/body")"; return; }
  [ "$(jget "$tmp/body" 'j["error"]["code"]')" = "$2" ] && ok || bad "error code, want $2: $(cat "$tmp/body")"
  [ "$(jget "$tmp/body" 'sorted(j["error"].keys())')" = "['code', 'message', 'param', 'type']" ] && ok ||
    bad "error shape: $(cat "$tmp/body")"
}
greedy='{"model":"stories260K","prompt":"Once upon a time","temperature":0,"max_tokens":60}'
# check_greedy URL [CURL ARGS...]
check_greedy() {
  local url=$1; shift
  req "$url" /v1/completions -H 'Content-Type: application/json' -d "$greedy" "$@"
  [ "$code" = 200 ] && ok || { bad "greedy completion: status $code: $(cat "$tmp/body")"; return; }
  jget "$tmp/body" 'j["choices"][0]["text"]' >"$tmp/text"
  head -c -1 "$tmp/text" >"$tmp/text2"  # print() added a newline
  cmp -s "$tmp/text2" "$tmp/expected" && ok ||
    { bad "greedy completion differs from the reference"; diff "$tmp/expected" "$tmp/text2" | head -5; }
  [ "$(jget "$tmp/body" '(j["usage"]["prompt_tokens"], j["usage"]["completion_tokens"], j["usage"]["total_tokens"])')" = "(5, 60, 65)" ] &&
    ok || bad "usage: $(cat "$tmp/body")"
  [ "$(jget "$tmp/body" 'j["choices"][0]["finish_reason"]')" = length ] && ok || bad "finish_reason"
}
# check_stream URL [CURL ARGS...]
check_stream() {
  local url=$1; shift
  curl -sN "$url/v1/completions" -d "${greedy%\}},\"stream\":true}" "$@" >"$tmp/sse"
  python3 - "$tmp/sse" "$tmp/expected" <<'EOF' && ok || bad "stream"
import json, sys
raw = open(sys.argv[1], encoding="utf-8").read()
want = open(sys.argv[2], encoding="utf-8").read()
events = raw.split("\n\n")
assert events[-1] == "", "the stream does not end with a blank line"
events = events[:-1]
assert all(e.startswith("data: ") for e in events), "an event is not 'data: ...'"
assert events[-1] == "data: [DONE]", "the stream does not end with [DONE]: %r" % events[-1]
chunks = [json.loads(e[6:]) for e in events[:-1]]
text = "".join(c["choices"][0]["text"] for c in chunks)
assert text == want, "streamed text differs: %r" % text
assert len(chunks) > 10, "too few chunks: %d" % len(chunks)
assert all(c["object"] == "text_completion" for c in chunks)
assert chunks[-1]["choices"][0]["finish_reason"] == "length"
assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
EOF
}
# check_concurrent URL N [CURL ARGS...]: N greedy requests at once, all 200
# with the reference text
check_concurrent() {
  local url=$1 n=$2 i; shift 2
  local cp=()
  for i in $(seq "$n"); do
    curl -s -o "$tmp/c$i" -w '%{http_code}' "$url/v1/completions" -d "$greedy" "$@" >"$tmp/c$i.code" &
    cp+=($!)
  done
  for i in "${cp[@]}"; do wait "$i"; done
  local good=0
  for i in $(seq "$n"); do
    [ "$(cat "$tmp/c$i.code")" = 200 ] && [ "$(jget "$tmp/c$i" 'j["choices"][0]["text"]' | head -c -1)" = "$(cat "$tmp/expected")" ] &&
      good=$((good + 1))
  done
  [ "$good" -eq "$n" ] && ok || { bad "$good of $n concurrent requests succeeded"; cat "$tmp"/c*.code; echo; }
}
metric() { curl -s "$1/metrics" | awk -v k="$2" '$1 == k { print $2 }'; }

# --- a local server ------------------------------------------------------------
start_api local -t 2
url=$(wait_url local)
wait_health "$url" 200 10 && ok || { bad "local /health is not 200"; cat "$tmp/local.log"; }
req "$url" /health
[ "$(jget "$tmp/body" 'j["status"]')" = ok ] && ok || bad "/health body: $(cat "$tmp/body")"
req "$url" /v1/models
[ "$code" = 200 ] && [ "$(jget "$tmp/body" '[m["id"] for m in j["data"]]')" = "['stories260K']" ] && ok ||
  bad "/v1/models: $code $(cat "$tmp/body")"
req "$url" /v1/models/stories260K
[ "$code" = 200 ] && ok || bad "/v1/models/stories260K: $code"

req "$url" /v1/completions -d '{"prompt": "Once", "max_tokens": '
expect_error 400 invalid_json
req "$url" /v1/chat/completions -d '[1, 2]'
expect_error 400 invalid_json
req "$url" /v1/completions -d '{"model":"gpt-4","prompt":"x"}'
expect_error 404 model_not_found
req "$url" /v1/models/gpt-4
expect_error 404 model_not_found
req "$url" /v1/completions
expect_error 405 method_not_allowed
req "$url" /v1/models -X POST -d '{}'
expect_error 405 method_not_allowed
req "$url" /v1/nothing
expect_error 404 unknown_url
req "$url" /v1/completions -d '{"prompt":"x","n":2}'
expect_error 400 invalid_value
req "$url" /v1/completions -d '{"prompt":"x","temperature":"hot"}'
expect_error 400 invalid_type
req "$url" /v1/completions -d '{"prompt":"x","max_tokens":0}'
expect_error 400 invalid_value
req "$url" /v1/completions -d '{"max_tokens":3}'
expect_error 400 missing_required_parameter
req "$url" /v1/chat/completions -d '{"messages":[{"role":"wizard","content":"x"}]}'
expect_error 400 invalid_value
req "$url" /v1/chat/completions -d '{"messages":[]}'
expect_error 400 invalid_value
req "$url" /v1/completions -d "{\"prompt\":\"$(head -c 3000 /dev/zero | tr '\0' 'a')\"}"
expect_error 400 context_length_exceeded
head -c $((2 * 1024 * 1024)) /dev/zero | tr '\0' ' ' >"$tmp/big"
req "$url" /v1/completions --data-binary @"$tmp/big"
expect_error 413 request_too_large
# the same, sent chunked (no Content-Length): caught while reading
req "$url" /v1/completions -H 'Transfer-Encoding: chunked' --data-binary @"$tmp/big"
expect_error 413 request_too_large
# stays up after all that
wait_health "$url" 200 2 && ok || bad "local server died"

check_greedy "$url"
check_stream "$url"
# stop sequence, chat shape, seeded sampling is reproducible
req "$url" /v1/completions -d '{"prompt":"Once upon a time","temperature":0,"max_tokens":60,"stop":["Lily","zzz"]}'
[ "$(jget "$tmp/body" '(j["choices"][0]["text"], j["choices"][0]["finish_reason"])')" = \
  "(', there was a little girl named ', 'stop')" ] && ok || bad "stop: $(cat "$tmp/body")"
req "$url" /v1/chat/completions -d '{"messages":[{"role":"user","content":"Once upon a time"}],"temperature":0,"max_tokens":60}'
[ "$(jget "$tmp/body" 'j["choices"][0]["message"]["content"]' | head -c -1)" = "$(cat "$tmp/expected")" ] &&
  [ "$(jget "$tmp/body" 'j["object"]')" = chat.completion ] && ok || bad "chat: $(cat "$tmp/body")"
s1=$(curl -s "$url/v1/completions" -d '{"prompt":"Once upon a time","temperature":1,"seed":7,"max_tokens":20}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["text"])')
s2=$(curl -s "$url/v1/completions" -d '{"prompt":"Once upon a time","temperature":1,"seed":7,"max_tokens":20}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["text"])')
[ -n "$s1" ] && [ "$s1" = "$s2" ] && ok || bad "the same seed gave different texts: '$s1' '$s2'"

before=$(metric "$url" 'shoal_requests_total{route="/v1/completions"}')
gen_before=$(metric "$url" shoal_tokens_generated_total)
check_concurrent "$url" 8
after=$(metric "$url" 'shoal_requests_total{route="/v1/completions"}')
gen_after=$(metric "$url" shoal_tokens_generated_total)
[ "$((after - before))" -eq 8 ] && ok || bad "requests_total moved by $((after - before)), want 8"
[ "$((gen_after - gen_before))" -eq 480 ] && ok || bad "tokens_generated_total moved by $((gen_after - gen_before)), want 480"
[ "$(metric "$url" 'shoal_request_errors_total{route="/v1/completions",code="413"}')" = 2 ] && ok ||
  bad "errors_total for 413"
[ "$(metric "$url" shoal_active_requests)" = 0 ] && ok || bad "active requests not back to 0"
curl -s "$url/metrics" >"$tmp/metrics"
grep -q '^shoal_request_duration_seconds_bucket{route="/v1/completions",le="+Inf"} ' "$tmp/metrics" && ok ||
  bad "no duration histogram"
if command -v promtool >/dev/null; then
  promtool check metrics <"$tmp/metrics" >"$tmp/promtool" 2>&1 && ok ||
    { bad "promtool check metrics"; cat "$tmp/promtool"; }
else
  echo "SKIP: promtool is not installed (Debian package prometheus): metrics format not checked"
fi
kill "$pid_local"; wait "$pid_local" 2>/dev/null
[ $? -eq 0 ] && ok || bad "local server did not exit 0 on SIGTERM"

# --- a swarm server with a key -------------------------------------------------
start_node() {
  "$SHOAL" serve -m "$model" --blocks "$2" --port 0 --host 127.0.0.1 \
    --address-file "$tmp/$1.addr" --identity "$tmp/$1.id" -t 1 \
    >"$tmp/$1.out" 2>"$tmp/$1.log" &
  pids+=($!)
  eval "pid_$1=$!"
}
wait_node() {
  local i
  for i in $(seq 100); do
    [ -s "$tmp/$1.addr" ] && return 0
    sleep 0.1
  done
  echo "FAIL: node $1 wrote no address in 10 s"; cat "$tmp/$1.log"
  exit 1
}
start_node a 0:3
start_node b 3:5
wait_node a; wait_node b
peers="$(cat "$tmp/a.addr"),$(cat "$tmp/b.addr")"
kill -STOP "$pid_b"; stopped+=("$pid_b")
start_api swarm --peers "$peers" --api-key sekret --timeout 1 -t 2
url=$(wait_url swarm)
sleep 1.5
req "$url" /health
[ "$code" = 503 ] && ok || bad "/health with a silent node: $code, want 503"
req "$url" /v1/completions -H 'Authorization: Bearer sekret' -d "$greedy"
expect_error 503 service_unavailable
kill -CONT "$pid_b"; stopped=()
wait_health "$url" 200 15 && ok || { bad "/health did not become 200"; cat "$tmp/swarm.log"; }
req "$url" /v1/models
expect_error 401 invalid_api_key
req "$url" /v1/models -H 'Authorization: Bearer wrong'
expect_error 401 invalid_api_key
req "$url" /v1/models -H 'Authorization: Bearer sekret'
[ "$code" = 200 ] && ok || bad "the right key is refused: $code"
check_greedy "$url" -H 'Authorization: Bearer sekret'
check_stream "$url" -H 'Authorization: Bearer sekret'
check_concurrent "$url" 8 -H 'Authorization: Bearer sekret'

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIP: node or npm is not installed: the openai package test did not run"
elif ! (cd "$tmp" && mkdir npm && cd npm && timeout 120 npm install --no-audit --no-fund --silent openai >npm.log 2>&1); then
  echo "SKIP: 'npm install openai' failed (no registry?): the openai package test did not run"
  tail -5 "$tmp/npm/npm.log"
else
  cp "$here/api_openai.mjs" "$tmp/npm/"
  if (cd "$tmp/npm" && timeout 120 node api_openai.mjs "$url" sekret stories260K "$tmp/expected") >"$tmp/node.out" 2>&1; then
    ok
  else
    bad "api_openai.mjs"
  fi
  cat "$tmp/node.out"
fi

# --- one slot, a queue of one ----------------------------------------------------
start_api small --peers "$peers" --parallel 1 --queue 1 --queue-timeout 1 --timeout 2 \
  --health-interval 600 -t 1
url=$(wait_url small)
wait_health "$url" 200 15 && ok || bad "small: /health did not become 200"
kill -STOP "$pid_b"; stopped+=("$pid_b")
# A holds the slot (its node does not answer), B waits, C finds the queue full
curl -s -o "$tmp/A" "$url/v1/completions" -d '{"prompt":"A","max_tokens":2}' &
pa=$!
sleep 0.3
curl -s -o "$tmp/B" -w '%{http_code}' "$url/v1/completions" -d '{"prompt":"B","max_tokens":2}' >"$tmp/B.code" &
pb=$!
sleep 0.3
req "$url" /v1/completions -d '{"prompt":"C","max_tokens":2}'
expect_error 429 rate_limit_exceeded
wait "$pb"
[ "$(cat "$tmp/B.code")" = 503 ] && [ "$(jget "$tmp/B" 'j["error"]["code"]')" = service_unavailable ] && ok ||
  bad "queued request: $(cat "$tmp/B.code") $(cat "$tmp/B"), want 503"
kill -CONT "$pid_b"; stopped=()
wait "$pa"
# and it recovers: the next request opens a fresh chain
check_greedy "$url"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
