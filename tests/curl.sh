#!/usr/bin/env bash
# curl as a real consumer of examples-c/server_epoll: files fetched byte-exact
# over TLS 1.2 and 1.3, several URLs over one kept-alive connection (curl says
# it reused the connection, the server says one handshake served them all),
# "Connection: close" honoured, 404, no path traversal, HEAD, and a graceful
# SIGTERM that lets a download in flight finish, then exits 0.
#
#   tests/curl.sh        env: BIN (default build/examples), CERTS (default: fresh certs)
#
# Prints "ok   NAME" / "FAIL NAME" per check, then "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/examples}
. tests/lib.sh
scratch curl
test_certs || exit 1
. tests/epoll_lib.sh
for t in curl python3 sha256sum; do command -v $t >/dev/null || { echo "missing $t"; exit 2; }; done
[ -x "$BIN/server_epoll" ] || { echo "missing $BIN/server_epoll: run make examples"; exit 2; }

mkdir -p "$T/www/sub"
head -c 3000001 /dev/urandom > "$T/www/big.bin"
head -c 70000 /dev/urandom > "$T/www/sub/mid.bin"
echo "hello over rktls" > "$T/www/hello.txt"
: > "$T/www/empty"
echo "must never be served" > "$T/secret"
files=(big.bin sub/mid.bin hello.txt empty)

LOG=$T/server.log
# A second certificate, chosen by SNI (the acceptor path).
start_epoll "$LOG" --root "$T/www" --cert "$CERTS/other.pem" --key "$CERTS/other.key" \
  --sni other.test || exit 1
base=https://localhost:$port
CURL=(timeout 60 curl -sS --cacert "$CERTS/ca.pem")

# since: the server log after line $mark.
mark() { mark=$(wc -l < "$LOG"); }
since() { tail -n +$((mark + 1)) "$LOG"; }

for v in 1.2 1.3; do
  ver=(--tlsv$v --tls-max $v)
  mark
  args=() urls=()
  for i in "${!files[@]}"; do args+=(-o "$T/got-$v-$i"); urls+=("$base/${files[$i]}"); done
  out=$("${CURL[@]}" "${ver[@]}" -v "${args[@]}" -w '%{http_code} %{num_connects}\n' "${urls[@]}" 2> "$T/curl-$v.err")
  check "TLS $v: curl exits 0" [ $? = 0 ]
  check "TLS $v: 4 responses, all 200, one connection for all [$(echo $out)]" \
    [ "$(echo $out)" = "200 1 200 0 200 0 200 0" ]
  check "TLS $v: curl re-used the connection 3 times" \
    [ "$(grep -c 'Re-using existing connection' "$T/curl-$v.err")" = 3 ]
  check "TLS $v: curl negotiated TLSv$v" grep -q "SSL connection using TLSv$v" "$T/curl-$v.err"
  for i in "${!files[@]}"; do
    check "TLS $v: ${files[$i]} byte-exact ($(stat -c %s "$T/www/${files[$i]}") bytes, sha256)" \
      [ "$(sha "$T/got-$v-$i" 2>/dev/null)" = "$(sha "$T/www/${files[$i]}")" ]
  done
  wait_log "$LOG" '^closed: clean requests=4$' $([ $v = 1.2 ] && echo 1 || echo 2)
  check "TLS $v: server logged one handshake (TLSv$v) that served 4 requests" \
    [ "$(since | grep -c '^handshake ok: TLSv'$v)" = 1 -a "$(since | grep -c '^closed: clean requests=4$')" = 1 ]
done

# Connection: close is honoured: two URLs, two connections.
mark
out=$("${CURL[@]}" -H 'Connection: close' -o /dev/null -o /dev/null -w '%{num_connects} ' \
  "$base/hello.txt" "$base/hello.txt")
check "Connection: close: curl needed a new connection per request [$out]" [ "$out" = "1 1 " ]
wait_log "$LOG" '^closed: clean requests=1$' 2
check "Connection: close: server closed after each response" \
  [ "$(since | grep -c '^closed: clean requests=1$')" = 2 ]
hdr=$("${CURL[@]}" -H 'Connection: close' -D - -o /dev/null "$base/hello.txt" | tr -d '\r')
check "Connection: close: the response says Connection: close" grep -qx 'Connection: close' <<<"$hdr"

# Errors and safety.
code=$("${CURL[@]}" -o "$T/nf" -w '%{http_code}' "$base/no-such-file")
check "missing file: 404" [ "$code" = 404 ]
code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$base/sub")
check "a directory is not a file: 404" [ "$code" = 404 ]
for p in /../secret /sub/../../secret /%2e%2e/secret /sub/%2E%2E/%2e%2e/secret; do
  code=$("${CURL[@]}" --path-as-is -o "$T/trav" -w '%{http_code}' "$base$p")
  check "no path traversal: $p -> $code" [ "$code" != 200 -a "$(cat "$T/trav")" != "must never be served" ]
done
ln -s "$T/secret" "$T/www/link"
code=$("${CURL[@]}" -o "$T/trav" -w '%{http_code}' "$base/link")
check "no escape through a symlink out of the root -> $code" \
  [ "$code" != 200 -a "$(cat "$T/trav")" != "must never be served" ]
len=$("${CURL[@]}" -I "$base/big.bin" | tr -d '\r' | sed -n 's/^Content-Length: //Ip')
check "HEAD: Content-Length $len without a body" [ "$len" = "$(stat -c %s "$T/www/big.bin")" ]
code=$("${CURL[@]}" -X POST -d x -o /dev/null -w '%{http_code}' "$base/hello.txt")
check "POST: 4xx, no hang" [ "${code:0:1}" = 4 ]

# SNI other.test gets the other certificate (curl verifies its name);
# localhost, above, got the first.
out=$("${CURL[@]}" --resolve "other.test:$port:127.0.0.1" "https://other.test:$port/hello.txt" 2>&1)
check "SNI other.test: the server chose the other.test certificate" \
  [ "$out" = "$(cat "$T/www/hello.txt")" ]

# Graceful shutdown: a slow download in flight completes, then exit 0.
mark
"${CURL[@]}" --limit-rate 1M -o "$T/slow" "$base/big.bin" 2> "$T/slow.err" &
cpid=$!
wait_log "$LOG" '^request: GET /big.bin' $(( $(grep -c '^request: GET /big.bin' "$LOG") + 1 ))
kill -TERM "$spid"
wait "$cpid"; crc=$?
stop_epoll
check "SIGTERM during a download: curl completed it (exit $crc)" \
  [ $crc = 0 -a "$(sha "$T/slow" 2>/dev/null)" = "$(sha "$T/www/big.bin")" ]
check "SIGTERM: server drained and exited 0 (status $rc)" [ "$rc" = 0 ]
check "SIGTERM: arrived with the download in flight (server drained 1 connection)" \
  grep -q '^shutdown: signal 15, draining 1 connection' "$LOG"
check "SIGTERM: the download's connection closed cleanly (close_notify)" \
  grep -q '^closed: clean requests=1$' <(since)

summary
