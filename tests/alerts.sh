#!/usr/bin/env bash
# Real clients see the proper alert when the rktls server refuses them, on
# the acceptor path (the default of server_blocking) and on the direct path
# (--direct), and the server logs the alert it sent.
# Env: BIN (default build/examples), CERTS (default: generated in a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/examples}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
CERTS=${CERTS:-$tmp/certs}
scripts/gen-certs.sh "$CERTS"
pass=0; fail=0

start_server() { # log args... ; sets $port
  local log=$1; shift
  "$BIN/server_blocking" --cert "$CERTS/server.pem" --key "$CERTS/server.key" "$@" > "$log" 2>&1 &
  pids+=($!)
  port=""
  for _ in $(seq 1 200); do
    port=$(sed -n 's/^READY port=//p' "$log")
    [ -n "$port" ] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.02
  done
  echo "server did not start:"; cat "$log"; return 1
}

# check NAME LOG WANT_IN_LOG CLIENT_OUTPUT WANT_IN_CLIENT
check() {
  local name=$1 log=$2 want_log=$3 out=$4 want_out=$5
  for _ in $(seq 1 100); do grep -q "alert sent: $want_log" "$log" && break; sleep 0.02; done
  if grep -q "$want_out" <<<"$out" && grep -q "alert sent: $want_log" "$log"; then
    echo "ok   $name"; pass=$((pass+1))
  else
    echo "FAIL $name: client output lacks '$want_out' or server log lacks 'alert sent: $want_log'"
    echo "$out" | tail -5; tail -5 "$log"; fail=$((fail+1))
  fi
}

raw_alert() { # port payload-printf-format -> hex of the server's reply
  python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
data = b""
while True:
    try:
        chunk = s.recv(4096)
    except (socket.timeout, ConnectionResetError):
        break
    if not chunk:
        break
    data += chunk
print(data.hex())
PY
}

declare -A http_reply
for path in acceptor direct; do
  flag=(); [ "$path" = direct ] && flag=(--direct)
  ca=(-CAfile "$CERTS/ca.pem")
  gca=(--x509cafile "$CERTS/ca.pem")

  start_server "$tmp/v-$path.log" --tls13 "${flag[@]}"
  out=$(echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -tls1_2 "${ca[@]}" 2>&1 || true)
  check "$path: openssl -tls1_2 vs TLS 1.3 server: protocol_version" "$tmp/v-$path.log" protocol_version "$out" "alert protocol version"
  out=$(timeout 10 gnutls-cli "${gca[@]}" -p "$port" --priority NORMAL:-VERS-ALL:+VERS-TLS1.2 localhost </dev/null 2>&1 || true)
  check "$path: gnutls-cli TLS 1.2 vs TLS 1.3 server: protocol_version" "$tmp/v-$path.log" protocol_version "$out" "Received alert \[70\]"

  start_server "$tmp/c-$path.log" --tls13 --suites 1302 "${flag[@]}"
  out=$(echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256 "${ca[@]}" 2>&1 || true)
  check "$path: openssl, no cipher suite in common: handshake_failure" "$tmp/c-$path.log" handshake_failure "$out" "alert handshake failure"
  out=$(timeout 10 gnutls-cli "${gca[@]}" -p "$port" --priority NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM localhost </dev/null 2>&1 || true)
  check "$path: gnutls-cli, no cipher suite in common: handshake_failure" "$tmp/c-$path.log" handshake_failure "$out" "Received alert \[40\]"

  start_server "$tmp/a-$path.log" --alpn h2 "${flag[@]}"
  out=$(echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -alpn spdy/1 "${ca[@]}" 2>&1 || true)
  check "$path: openssl, no ALPN in common: no_application_protocol" "$tmp/a-$path.log" no_application_protocol "$out" "no application protocol"
  out=$(timeout 10 gnutls-cli "${gca[@]}" -p "$port" --alpn spdy/1 localhost </dev/null 2>&1 || true)
  check "$path: gnutls-cli, no ALPN in common: no_application_protocol" "$tmp/a-$path.log" no_application_protocol "$out" "Received alert \[120\]"

  start_server "$tmp/h-$path.log" "${flag[@]}"
  http_reply[$path]=$(raw_alert "$port" 'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  check "$path: HTTP request on the TLS port gets an alert record" "$tmp/h-$path.log" "" "${http_reply[$path]}" "^150303000202"
done
if [ "${http_reply[acceptor]}" = "${http_reply[direct]}" ]; then
  echo "ok   identical alert bytes for the HTTP request on both paths (${http_reply[direct]})"; pass=$((pass+1))
else
  echo "FAIL alert bytes differ: acceptor ${http_reply[acceptor]} direct ${http_reply[direct]}"; fail=$((fail+1))
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
