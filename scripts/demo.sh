#!/usr/bin/env bash
# The README's demo: build the library and the C examples, make a throwaway
# CA, start the example server on localhost, and run the example client:
# a file fetched and verified, a resumed connection, a rejected client and
# the alert it received. Prints a short report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
echo "--- building the library and the examples"
make -s examples >/dev/null
certs=build/certs; scripts/gen-certs.sh "$certs"
work=$(mktemp -d); srv_pid=""
cleanup() { [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
head -c 2000000 /dev/urandom > "$work/file.bin"

build/examples/server_blocking --cert "$certs/server.pem" --key "$certs/server.key" \
  --cert "$certs/other.pem" --key "$certs/other.key" --alpn h2,http/1.1 --root "$work" --ktls prefer \
  > "$work/server.log" 2>&1 &
srv_pid=$!
port=""
for _ in $(seq 1 100); do
  port=$(sed -n 's/^READY port=//p' "$work/server.log")
  [ -n "$port" ] && break
  kill -0 "$srv_pid" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.05
done
[ -n "$port" ] || { echo "server did not start"; exit 1; }
echo "--- server listening on 127.0.0.1:$port"

echo "--- client: fetch a 2 MB file twice (the second connection resumes)"
build/examples/client --port "$port" --ca "$certs/ca.pem" --alpn http/1.1 --ktls prefer \
  --get /file.bin --out "$work/got.bin" --count 2 | tee "$work/client.log"
cmp -s "$work/file.bin" "$work/got.bin" && fetched="verified byte for byte" || { echo "file differs"; exit 1; }
grep -q "conn 2: .*resumed=yes" "$work/client.log" && resumed=yes || resumed=no

echo "--- client with no ALPN protocol in common (offers only 'spdy/1')"
if build/examples/client --port "$port" --ca "$certs/ca.pem" --alpn spdy/1 --get /file.bin \
    > "$work/reject.log" 2>&1; then
  echo "the server accepted a client it should refuse"; exit 1
fi
cat "$work/reject.log"
alert=$(sed -n 's/^client: received alert //p' "$work/reject.log")

if grep -q "ktls=tx+rx" "$work/client.log"; then
  ktls="in use: the record layer moved into the kernel, files went out with sendfile(2)"
else
  ktls="this kernel lacks kTLS (no TCP ULP \"tls\"): connections ran in userspace (--ktls prefer)"
fi
for _ in $(seq 1 40); do grep -q "handshake failed" "$work/server.log" && break; sleep 0.05; done
echo "--- server log"
cat "$work/server.log"
cat <<REPORT

==== rktls demo report ====
library:        $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1), header include/rktls.h
file transfer:  2 MB over TLS, $fetched
resumption:     second connection resumed: $resumed
rejected peer:  client received alert "$alert"; server logged the alert it sent
kernel TLS:     $ktls
REPORT
[ "$resumed" = yes ] && [ "$alert" = no_application_protocol ]
