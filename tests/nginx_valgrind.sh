#!/usr/bin/env bash
# Debian's nginx with the rktls module under valgrind (one process:
# master_process off): TLS 1.2 and 1.3 with keep-alive and sendfile, a
# Connection: close, a 404, a refused TLS 1.2 client, plain HTTP on the TLS
# port, an openssl s_client, a keep-alive connection closed by nginx's
# timeout, then a graceful QUIT. valgrind must report no error: no invalid
# read or write, no leak it calls definite. Two blocks nginx itself never
# frees in a single-process run are suppressed: its environment
# (ngx_set_environment) and its connection array, allocated by a static
# function of the nginx binary called from ngx_single_process_cycle (the
# module's own allocations are in the module's object, not matched).
#
#   tests/nginx_valgrind.sh   env: CERTS, MODULE
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
scratch nginx-valgrind
test_certs || exit 1
. tests/nginx_lib.sh
for t in valgrind curl openssl python3 "$NGINX"; do command -v "$t" > /dev/null || { echo "missing $t"; exit 2; }; done
[ -f "$MODULE" ] || { echo "missing $MODULE: run nginx/build.sh"; exit 2; }
CA=$CERTS/ca.pem
mkdir -p "$T/www"
echo hello > "$T/www/who"
head -c 300000 /dev/urandom > "$T/www/big"
free_ports 2
p=${ports[0]} q=${ports[1]}
nginx_conf "$T/nginx.conf" "
    keepalive_timeout 1s;
    server { listen 127.0.0.1:$p; server_name localhost; rktls on; sendfile on;
        rktls_certificate $CERTS/server.pem; rktls_certificate_key $CERTS/server.key; root $T/www; }
    server { listen 127.0.0.1:$q; server_name localhost; rktls on; rktls_protocols TLSv1.3;
        rktls_certificate $CERTS/server.pem; rktls_certificate_key $CERTS/server.key; root $T/www; }"
sed -i 's|^worker_processes 1;|worker_processes 1;\nmaster_process off;|' "$T/nginx.conf"
cat > "$T/nginx.supp" <<'SUPP'
{
   nginx-never-frees-its-environment
   Memcheck:Leak
   match-leak-kinds: definite
   fun:malloc
   fun:ngx_alloc
   fun:ngx_set_environment
}
{
   nginx-never-frees-its-connection-array
   Memcheck:Leak
   match-leak-kinds: definite
   fun:malloc
   fun:ngx_alloc
   obj:/usr/sbin/nginx
   fun:ngx_single_process_cycle
}
SUPP
VG=$T/valgrind.log
: > "$T/nginx/error.log" 2>/dev/null || mkdir -p "$T/nginx"
valgrind --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite \
  --suppressions="$T/nginx.supp" --log-file="$VG" \
  "$NGINX" -p "$T/nginx" -e "$T/nginx/error.log" -c "$T/nginx.conf" -g 'daemon off;' &
vpid=$!; pids+=("$vpid")
WAIT=120 wait_for "$T/nginx/error.log" 'start worker processes\|using the "epoll" event method' "$vpid" ||
  { echo "nginx did not start under valgrind"; cat "$T/nginx/error.log"; exit 1; }
CURL=(timeout 120 curl -sS --cacert "$CA")
# The listening socket is open once the log says so; the first request may
# still wait for valgrind: --retry covers that.
for v in 1.2 1.3; do
  out=$("${CURL[@]}" --retry 20 --retry-connrefused --tlsv$v --tls-max $v -o "$T/got" -o /dev/null \
    -w '%{http_code}%{num_connects} ' "https://localhost:$p/big" "https://localhost:$p/who")
  check "TLS $v: two requests, one connection, 300 kB byte-exact [$out]" \
    [ "$out" = "2001 2000 " ] && cmp -s "$T/got" "$T/www/big"
done
code=$("${CURL[@]}" -H 'Connection: close' -o /dev/null -w '%{http_code}' "https://localhost:$p/big")
check "Connection: close: 200" [ "$code" = 200 ]
code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "https://localhost:$p/nope")
check "404" [ "$code" = 404 ]
"${CURL[@]}" --tlsv1.2 --tls-max 1.2 -o /dev/null "https://localhost:$q/who" 2> "$T/refused"
check "a TLS 1.2 client refused by a TLS 1.3 server gets the alert" grep -q 'alert protocol version' "$T/refused"
got=$(python3 -c 'import socket,sys
s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),timeout=60)
s.sendall(b"GET / HTTP/1.1\r\n\r\n"); print(s.recv(100)[:1].hex())' "$p")
check "plain HTTP on the TLS port: an alert record [$got]" [ "$got" = 15 ]
printf 'GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
  timeout 60 openssl s_client -quiet -connect "127.0.0.1:$p" -servername localhost -CAfile "$CA" > "$T/sc" 2> /dev/null
check "openssl s_client: 200" grep -q '^HTTP/1.1 200 OK' "$T/sc"
python3 - "$p" "$CA" > "$T/idle" <<'PY'
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60),
                    server_hostname="localhost", suppress_ragged_eofs=False)
s.sendall(b"GET /who HTTP/1.1\r\nHost: localhost\r\n\r\n")
data = b""
while b"hello" not in data:
    data += s.recv(4096)
print("close_notify" if s.recv(4096) == b"" else "data")
PY
check "keep-alive timeout under valgrind: close_notify [$(cat "$T/idle")]" [ "$(cat "$T/idle")" = close_notify ]
kill -QUIT "$vpid"
wait "$vpid"; rc=$?
check "valgrind: exit $rc, $(grep -o 'ERROR SUMMARY: [0-9]* errors' "$VG")" [ "$rc" = 0 ]
grep -E 'Invalid|definitely lost in|uninitialised' -A8 "$VG" | head -40
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
