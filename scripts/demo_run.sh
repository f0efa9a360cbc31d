#!/bin/sh
# The demo itself, in POSIX sh so that it runs both on the host (from
# scripts/demo.sh) and as the guest of the kTLS test VM (scripts/demo.sh
# --vm, under busybox). Run from the repository root, after
# `make examples` and scripts/gen-certs.sh build/certs. Starts the example
# server on localhost, runs the example client against it (a file fetched
# and verified, a resumed connection, a rejected client and the alert it
# received) and prints a short report.
# Env: DEMO_REQUIRE_KTLS=1 fails the demo unless both ends used kTLS.
set -eu
BIN=build/examples
certs=build/certs
work=$(mktemp -d)
srv_pid=""
cleanup() { [ -z "$srv_pid" ] || kill "$srv_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
head -c 2000000 /dev/urandom > "$work/file.bin"

$BIN/server_blocking --cert "$certs/server.pem" --key "$certs/server.key" \
  --cert "$certs/other.pem" --key "$certs/other.key" --alpn h2,http/1.1 --root "$work" --ktls prefer \
  > "$work/server.log" 2>&1 &
srv_pid=$!
port=""
for _ in $(seq 1 200); do
  port=$(sed -n 's/^READY port=//p' "$work/server.log")
  [ -n "$port" ] && break
  kill -0 "$srv_pid" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.05
done
[ -n "$port" ] || { echo "server did not start"; exit 1; }
echo "--- server listening on 127.0.0.1:$port"

echo "--- client: fetch a 2 MB file twice (the second connection resumes)"
rc=0
$BIN/client --port "$port" --ca "$certs/ca.pem" --alpn http/1.1 --ktls prefer \
  --get /file.bin --out "$work/got.bin" --count 2 > "$work/client.log" 2>&1 || rc=$?
cat "$work/client.log"
[ "$rc" = 0 ] || { echo "the client failed (exit $rc)"; exit 1; }
cmp -s "$work/file.bin" "$work/got.bin" && fetched="verified byte for byte" || { echo "file differs"; exit 1; }
grep -q "conn 2: .*resumed=yes" "$work/client.log" && resumed=yes || resumed=no

echo "--- client with no ALPN protocol in common (offers only 'spdy/1')"
if $BIN/client --port "$port" --ca "$certs/ca.pem" --alpn spdy/1 --get /file.bin \
    > "$work/reject.log" 2>&1; then
  echo "the server accepted a client it should refuse"; exit 1
fi
cat "$work/reject.log"
alert=$(sed -n 's/^client: received alert //p' "$work/reject.log")

if [ "$(grep -c "ktls=tx+rx" "$work/client.log")" = 2 ]; then
  ktls="in use: the record layer moved into the kernel, files went out with sendfile(2)"
  ktls_ok=yes
else
  ktls="this kernel lacks kTLS (no TCP ULP \"tls\"): connections ran in userspace (--ktls prefer)"
  ktls_ok=no
fi
for _ in $(seq 1 40); do grep -q "handshake failed" "$work/server.log" && break; sleep 0.05; done
echo "--- server log"
cat "$work/server.log"
cat <<REPORT

==== rktls demo report ====
library:        $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1), header include/rktls.h
kernel:         $(uname -sr)
file transfer:  2 MB over TLS, $fetched
resumption:     second connection resumed: $resumed
rejected peer:  client received alert "$alert"; server logged the alert it sent
kernel TLS:     $ktls
REPORT
[ "$resumed" = yes ] && [ "$alert" = no_application_protocol ] || exit 1
if [ "${DEMO_REQUIRE_KTLS:-0}" = 1 ] && [ "$ktls_ok" != yes ]; then
  echo "kTLS was required (--vm) but the client did not report ktls=tx+rx twice"; exit 1
fi
