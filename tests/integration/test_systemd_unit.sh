#!/usr/bin/env bash
# deploy/shoal-node.service passes `systemd-analyze verify` with nothing
# said (an unknown key or a bad value is only a warning there, so any
# output fails the test). verify also checks that ExecStart's binary
# exists, and /usr/local/bin/shoal is not installed here: the unit is
# verified as a temporary copy whose ExecStart names the built binary,
# every other line unchanged. Then the contract the README states: the
# unit is Type=notify with restart on failure, a dedicated user, state and
# cache directories; and every --flag in ExecStart and in the example
# environment file is one `shoal serve --help` knows (so a renamed flag
# cannot leave the unit broken). Skipped (77) without systemd-analyze.
set -u
: "${SHOAL:?path of the shoal binary}" "${SHOAL_TESTS_DIR:?path of tests/}"
unit=$SHOAL_TESTS_DIR/../deploy/shoal-node.service
envfile=$SHOAL_TESTS_DIR/../deploy/shoal-node.env
if ! command -v systemd-analyze >/dev/null; then
  echo "skipped: systemd-analyze is not installed (Debian package systemd)" >&2
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

grep -q '^ExecStart=/usr/local/bin/shoal serve ' "$unit" && ok ||
  bad "ExecStart does not run /usr/local/bin/shoal serve"
sed "s#^ExecStart=/usr/local/bin/shoal #ExecStart=$SHOAL #" "$unit" >"$tmp/shoal-node.service"
if systemd-analyze verify --man=no "$tmp/shoal-node.service" >"$tmp/verify.out" 2>&1 &&
   [ ! -s "$tmp/verify.out" ]; then
  ok; echo "systemd-analyze verify: clean ($(systemd-analyze --version | head -1))"
else
  bad "systemd-analyze verify:"; sed "s#$tmp/##" "$tmp/verify.out"
fi
# the exposure score, for the record (not a pass/fail: it differs by version)
systemd-analyze security --offline=yes "$tmp/shoal-node.service" 2>/dev/null |
  grep -i "overall exposure" | sed 's/^/  /'

for line in '^Type=notify$' '^NotifyAccess=main$' '^Restart=on-failure$' '^User=shoal$' \
            '^StateDirectory=shoal$' '^CacheDirectory=shoal$' '^KillSignal=SIGTERM$'; do
  grep -q "$line" "$unit" && ok || bad "the unit lacks $line"
done

"$SHOAL" serve --help >"$tmp/help" 2>&1
flags=$( (grep '^ExecStart=' "$unit"; grep '^#   --\|^[A-Z_]*=.*--' "$envfile") |
         grep -o -- '--[a-z][a-z-]*' | sort -u)
[ -n "$flags" ] && ok || bad "no flags found in ExecStart"
for f in $flags; do
  grep -q -- "$f[ ,=]" "$tmp/help" && ok || bad "shoal serve --help does not know $f"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
