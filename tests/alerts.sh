#!/usr/bin/env bash
# Real clients see the proper alert when the rktls server refuses them, on
# the acceptor path (the default of server_blocking) and on the direct path
# (--direct), and the server logs the alert it sent.
# Env: BIN (default build/examples), CERTS (default: generated in a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/examples}
. tests/lib.sh
scratch alerts
test_certs

serve() { # LOG ARGS...: server_blocking on an ephemeral port; sets $port
  local log=$1; shift
  start_server "$log" "$BIN/server_blocking" --cert "$CERTS/server.pem" --key "$CERTS/server.key" "$@"
}

# alerted LOG WANT_IN_LOG CLIENT_OUTPUT WANT_IN_CLIENT: the client saw the
# alert and the server logged that it sent it.
alerted() {
  local log=$1 want_log=$2 out=$3 want_out=$4
  printf '%s\n' "$out" > "$log.client"
  logs=("$log.client" "$log")
  wait_for "$log" "alert sent: $want_log" "$spid" || true
  grep -q "$want_out" <<<"$out" || fail "client output lacks '$want_out'" || return
  grep -q "alert sent: $want_log" "$log" || fail "server log lacks 'alert sent: $want_log'"
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

  serve "$T/v-$path.log" --tls13 "${flag[@]}"
  out=$(echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -tls1_2 "${ca[@]}" 2>&1 || true)
  run "$path: openssl -tls1_2 vs TLS 1.3 server: protocol_version" alerted "$T/v-$path.log" protocol_version "$out" "alert protocol version"
  out=$(timeout 10 gnutls-cli "${gca[@]}" -p "$port" --priority NORMAL:-VERS-ALL:+VERS-TLS1.2 localhost </dev/null 2>&1 || true)
  run "$path: gnutls-cli TLS 1.2 vs TLS 1.3 server: protocol_version" alerted "$T/v-$path.log" protocol_version "$out" "Received alert \[70\]"

  serve "$T/c-$path.log" --tls13 --suites 1302 "${flag[@]}"
  out=$(echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256 "${ca[@]}" 2>&1 || true)
  run "$path: openssl, no cipher suite in common: handshake_failure" alerted "$T/c-$path.log" handshake_failure "$out" "alert handshake failure"
  out=$(timeout 10 gnutls-cli "${gca[@]}" -p "$port" --priority NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM localhost </dev/null 2>&1 || true)
  run "$path: gnutls-cli, no cipher suite in common: handshake_failure" alerted "$T/c-$path.log" handshake_failure "$out" "Received alert \[40\]"

  serve "$T/a-$path.log" --alpn h2 "${flag[@]}"
  out=$(echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -alpn spdy/1 "${ca[@]}" 2>&1 || true)
  run "$path: openssl, no ALPN in common: no_application_protocol" alerted "$T/a-$path.log" no_application_protocol "$out" "no application protocol"
  out=$(timeout 10 gnutls-cli "${gca[@]}" -p "$port" --alpn spdy/1 localhost </dev/null 2>&1 || true)
  run "$path: gnutls-cli, no ALPN in common: no_application_protocol" alerted "$T/a-$path.log" no_application_protocol "$out" "Received alert \[120\]"

  serve "$T/h-$path.log" "${flag[@]}"
  http_reply[$path]=$(raw_alert "$port" 'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  run "$path: HTTP request on the TLS port gets an alert record" alerted "$T/h-$path.log" "" "${http_reply[$path]}" "^150303000202"
done
same_alert() {
  [ "${http_reply[acceptor]}" = "${http_reply[direct]}" ] ||
    fail "acceptor ${http_reply[acceptor]} direct ${http_reply[direct]}"
}
run "identical alert bytes for the HTTP request on both paths (${http_reply[direct]})" same_alert
summary
