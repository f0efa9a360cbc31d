#!/usr/bin/env bash
# Debian's nginx serving HTTPS through ngx_http_rktls_module (nginx/).
#
# One nginx (foreground master, one worker, everything under a scratch
# directory, ports the kernel picked) with three rktls sockets:
#   A  two server{} blocks, localhost (ECDSA P-256) and other.test (P-384),
#      chosen by SNI; rktls_ktls prefer (this kernel has none: userspace);
#   B  TLS 1.3 only, one TLS 1.3 suite: for the "nothing in common" alerts;
#   C  TLS 1.2 only, one TLS 1.2 suite, keepalive_timeout 1s.
# Checks: curl byte-exact over TLS 1.2 and 1.3 (0 B to 50 MB, sendfile on and
# off), keep-alive (several requests on one connection, the access log agrees),
# 404, SNI picks the certificate, openssl s_client and gnutls-cli fetch, a
# client with no common version or cipher receives the alert record (the raw
# bytes, then a clean FIN: the lingering close), the access log's variables,
# close_notify when nginx closes an idle keep-alive connection and when it
# shuts down, and `nginx -t` refusing bad configurations with directive, file
# and reason.
#
#   tests/nginx.sh     env: CERTS (default: fresh), MODULE (default build/nginx/...)
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
scratch nginx
test_certs || exit 1
. tests/nginx_lib.sh
for t in curl openssl gnutls-cli python3 sha256sum "$NGINX"; do
  command -v "$t" > /dev/null || { echo "missing $t"; exit 2; }
done
[ -f "$MODULE" ] || { echo "missing $MODULE: run nginx/build.sh"; exit 2; }

CA=$CERTS/ca.pem
mkdir -p "$T/www" "$T/other"
sizes=(0 1 16384 16385 1000000 52428800)
for s in "${sizes[@]}"; do head -c "$s" /dev/urandom > "$T/www/f$s"; done
echo "other.test here" > "$T/other/who"
echo "localhost here" > "$T/www/who"

free_ports 3
pa=${ports[0]} pb=${ports[1]} pc=${ports[2]}
cert() { echo "rktls_certificate $CERTS/$1.pem; rktls_certificate_key $CERTS/$1.key;"; }
nginx_conf "$T/nginx.conf" "
    server {
        listen 127.0.0.1:$pa;
        server_name localhost;
        rktls on; $(cert server)
        rktls_ktls prefer;
        root $T/www;
        location /nosendfile/ { alias $T/www/; sendfile off; }
    }
    server {
        listen 127.0.0.1:$pa;
        server_name other.test;
        rktls on; $(cert other)
        root $T/other;
    }
    server {
        listen 127.0.0.1:$pb;
        server_name localhost;
        rktls on; $(cert server)
        rktls_protocols TLSv1.3;
        rktls_ciphers TLS_AES_128_GCM_SHA256;
        root $T/www;
    }
    server {
        listen 127.0.0.1:$pc;
        server_name localhost;
        rktls on; $(cert server)
        rktls_protocols TLSv1.2;
        rktls_ciphers ECDHE-ECDSA-AES128-GCM-SHA256;
        keepalive_timeout 1s;
        root $T/www;
    }"
check "nginx -t accepts the configuration" nginx_test "$T/nginx.conf"
start_nginx "$T/nginx.conf" || exit 1
A=https://localhost:$pa
CURL=(timeout 120 curl -sS --cacert "$CA")

# Byte-exact files, TLS 1.2 and 1.3, sendfile on (default root) and off.
for v in 1.2 1.3; do
  for loc in "" nosendfile/; do
    args=() urls=()
    for s in "${sizes[@]}"; do args+=(-o "$T/got-$v-$s"); urls+=("$A/$loc""f$s"); done
    out=$("${CURL[@]}" --tlsv$v --tls-max $v -w '%{http_code}/%{num_connects} ' "${args[@]}" "${urls[@]}" 2> "$T/curl.err")
    check "TLS $v ${loc:-sendfile/}: ${#sizes[@]} files, all 200, one connection [$out]" \
      [ "$out" = "200/1 200/0 200/0 200/0 200/0 200/0 " ]
    bad=""
    for s in "${sizes[@]}"; do [ "$(sha "$T/got-$v-$s")" = "$(sha "$T/www/f$s")" ] || bad+=" f$s"; done
    check "TLS $v ${loc:-sendfile/}: every file byte-exact (0 B to 50 MB, sha256)${bad:+, wrong:$bad}" [ -z "$bad" ]
  done
done

# Keep-alive, and what the access log says about it.
: > "$T/nginx/access.log"
out=$("${CURL[@]}" --tlsv1.3 -o /dev/null -o /dev/null -o /dev/null -o /dev/null -w '%{num_connects}' \
  "$A/f1" "$A/f16384" "$A/f1" "$A/who")
check "keep-alive: 4 requests, 1 connection (curl) [$out]" [ "$out" = 1000 ]
sleep 0.2
conns=$(sed -n 's/.* conn=\([0-9]*\) req=.*/\1/p' "$T/nginx/access.log" | sort -u | wc -l)
reqs=$(sed -n 's/.* req=\([0-9]*\)$/\1/p' "$T/nginx/access.log" | tr '\n' ' ')
check "keep-alive: the access log shows one \$connection serving requests 1-4 [$reqs]" \
  [ "$conns" = 1 -a "$reqs" = "1 2 3 4 " ]
line=$(head -1 "$T/nginx/access.log")
check "access log: \$rktls_protocol \$rktls_cipher \$rktls_server_name \$rktls_ktls [$line]" \
  grep -qx '/f1 200 proto=TLSv1.3 cipher=TLS_AES_[0-9A-Z_]* sni=localhost ktls=off conn=[0-9]* req=1' <<< "$line"
: > "$T/nginx/access.log"
"${CURL[@]}" --tlsv1.2 --tls-max 1.2 -o /dev/null "$A/f1"
sleep 0.2
line=$(head -1 "$T/nginx/access.log")
check "access log: TLS 1.2 [$line]" \
  grep -qx '/f1 200 proto=TLSv1.2 cipher=TLS_ECDHE_ECDSA_WITH_[0-9A-Z_]* sni=localhost ktls=off conn=[0-9]* req=1' <<< "$line"

code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$A/no-such-file")
check "missing file: 404" [ "$code" = 404 ]

# SNI: the other server{} and its certificate.
body=$("${CURL[@]}" --resolve "other.test:$pa:127.0.0.1" -v "https://other.test:$pa/who" 2> "$T/sni.err")
check "SNI other.test: its server{} answered [$body]" [ "$body" = "other.test here" ]
check "SNI other.test: its certificate (other.pem, CN=other)" grep -q 'subject: CN=other$' "$T/sni.err"
subj=$(openssl s_client -connect "127.0.0.1:$pa" -servername localhost -CAfile "$CA" < /dev/null 2> /dev/null |
  sed -n 's/^subject=//p')
check "SNI localhost: its certificate [$subj]" [ "$subj" = "CN = server" ]

# openssl s_client and gnutls-cli.
for v in 1_2 1_3; do
  printf 'GET /f16385 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
    timeout 30 openssl s_client -quiet -connect "127.0.0.1:$pa" -servername localhost -tls$v \
      -CAfile "$CA" -verify_return_error > "$T/sc-$v" 2> "$T/sc-$v.err"
  rc=$?
  check "openssl s_client -tls$v: exit 0, 200, body byte-exact" \
    [ $rc = 0 -a "$(head -c 15 "$T/sc-$v")" = "HTTP/1.1 200 OK" -a \
      "$(tail -c 16385 "$T/sc-$v" | sha256sum | cut -d' ' -f1)" = "$(sha "$T/www/f16385")" ]
done
for prio in NORMAL:-VERS-ALL:+VERS-TLS1.2 NORMAL:-VERS-ALL:+VERS-TLS1.3; do
  printf 'GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
    timeout 30 gnutls-cli --x509cafile "$CA" --priority "$prio" -p "$pa" localhost > "$T/gt" 2> "$T/gt.err"
  rc=$?
  check "gnutls-cli ${prio##*+}: exit 0, 200, body" \
    [ $rc = 0 ] && grep -q '^HTTP/1.1 200 OK' "$T/gt" && grep -q '^localhost here' "$T/gt"
done

# Nothing in common: the alert record reaches the client, then a FIN.
# (ClientHellos from Python's ssl; the raw reply bytes are checked.)
raw_alert() { # PORT MAXVER CIPHERS -> hex of everything received, or an error
  python3 - "$@" <<'PY'
import socket, ssl, sys
port, maxver, ciphers = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.maximum_version = getattr(ssl.TLSVersion, maxver)
if ciphers != "-":
    ctx.set_ciphers(ciphers)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
try:
    obj.do_handshake()
except ssl.SSLWantReadError:
    pass
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(out.read())
data = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except ConnectionResetError:
    print("reset after", data.hex()); sys.exit(1)
print(data.hex())
PY
}
got=$(raw_alert "$pb" TLSv1_2 -)
check "TLS 1.2-only client vs TLS 1.3-only server: fatal protocol_version alert, then FIN [$got]" \
  [ "$got" = 15030300020246 ]
code=$("${CURL[@]}" --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-GCM-SHA256 -o /dev/null \
  -w '%{http_code}' "https://localhost:$pc/f1")
check "rktls_ciphers by OpenSSL name: that suite is served [$code]" [ "$code" = 200 ]
got=$(raw_alert "$pc" TLSv1_2 ECDHE-ECDSA-CHACHA20-POLY1305)
check "no common cipher suite: fatal handshake_failure alert, then FIN [$got]" \
  [ "$got" = 15030300020228 ]
timeout 10 openssl s_client -connect "127.0.0.1:$pb" -tls1_2 < /dev/null > "$T/sc-alert" 2>&1
check "openssl s_client -tls1_2 vs TLS 1.3 only: it reports the protocol version alert" \
  grep -q 'alert protocol version' "$T/sc-alert"
grep -q 'rktls: ClientHello refused\|rktls: handshake refused' "$T/nginx/error.log"
check "nginx logged the refusals with the alert sent" \
  grep -q 'alert protocol_version sent' "$T/nginx/error.log"

# Reload (SIGHUP): the new configuration's rktls configs and sockets serve.
nw=$(grep -c 'start worker process' "$T/nginx/error.log")
kill -HUP "$npid"
WAIT=30 wait_for "$T/nginx/error.log" 'gracefully shutting down' "$npid"
end=$((SECONDS + 30))
until [ "$(grep -c 'start worker process' "$T/nginx/error.log")" -gt "$nw" ] || [ $SECONDS -ge $end ]; do sleep 0.05; done
wpid=$(sed -n 's/.*start worker process \([0-9]*\).*/\1/p' "$T/nginx/error.log" | tail -1)
body=$("${CURL[@]}" --resolve "other.test:$pa:127.0.0.1" "https://other.test:$pa/who")
check "after a reload (HUP): a new worker ($wpid) serves over rktls, SNI included [$body]" [ "$body" = "other.test here" ]

# close_notify: (1) nginx closes an idle keep-alive connection (port C,
# keepalive_timeout 1s); (2) nginx shuts down with one idle.
closer() { # PORT -> "close_notify" or what happened instead
  python3 - "$1" "$CA" "$T/idle-ready" <<'PY'
import socket, ssl, sys
port, ca, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20),
                    server_hostname="localhost", suppress_ragged_eofs=False)
s.sendall(b"GET /who HTTP/1.1\r\nHost: localhost\r\n\r\n")
data = b""
while b"localhost here" not in data:
    data += s.recv(4096)
open(ready, "w").write("ready\n")
try:
    rest = s.recv(4096)   # b"" only after the server's close_notify
    print("close_notify" if rest == b"" else "data %r" % rest[:20])
except ssl.SSLEOFError as e:
    print("EOF without close_notify: %s" % e)
except Exception as e:
    print("%s: %s" % (type(e).__name__, e))
PY
}
out=$(closer "$pc")
check "keep-alive timeout: nginx closed the idle connection with close_notify [$out]" [ "$out" = close_notify ]
rm -f "$T/idle-ready"
closer "$pa" > "$T/shutdown-close" &
cpid=$!
wait_for "$T/idle-ready" '^ready' "$cpid"
stop_nginx QUIT
wait $cpid
out=$(cat "$T/shutdown-close")
check "nginx shutdown (QUIT): the idle connection got close_notify [$out]" [ "$out" = close_notify ]
check "nginx exited 0 ($rc)" [ "$rc" = 0 ]
check "no alert/crit in nginx's error log" bash -c "! grep -E '\[(alert|crit|emerg)\]' '$T/nginx/error.log'"

# nginx -t refuses bad configurations, naming directive, file and reason.
bad_conf() { # NAME SERVER-BODY EXPECTED-REGEX
  nginx_conf "$T/bad.conf" "    server { listen 127.0.0.1:$pa; $2 }"
  if nginx_test "$T/bad.conf"; then
    bad "nginx -t refuses: $1 (it passed)"
  else
    check "nginx -t refuses: $1 [$(grep -m1 emerg "$T/nginx/t.out" | cut -c1-200)]" grep -qE "$3" "$T/nginx/t.out"
  fi
}
bad_conf "rktls on with listen ... http2" \
  "rktls on; $(cert server) } server { listen 127.0.0.1:$pa http2;" \
  "\"rktls on\" in $T/bad.conf:[0-9]+: \"listen 127.0.0.1:$pa http2\" is not supported with rktls"
ssl="ssl_certificate $CERTS/server.pem; ssl_certificate_key $CERTS/server.key;"
bad_conf "rktls_certificate without a key" "rktls on; rktls_certificate $CERTS/server.pem;" \
  "no \"rktls_certificate_key\" is defined for \"rktls_certificate\" \"$CERTS/server.pem\" \(\"rktls on\" in $T/bad.conf:[0-9]+\)"
bad_conf "a key that does not match the certificate" \
  "rktls on; rktls_certificate $CERTS/server.pem; rktls_certificate_key $CERTS/other.key;" \
  "rktls_certificate_key \"$CERTS/other.key\" in $T/bad.conf:[0-9]+: .*(match|mismatch)"
bad_conf "a missing key file" \
  "rktls on; rktls_certificate $CERTS/server.pem; rktls_certificate_key $T/nope.key;" \
  "rktls_certificate_key \"$T/nope.key\" in $T/bad.conf:[0-9]+: .*nope.key"
bad_conf "rktls on without a certificate" "rktls on;" \
  "no \"rktls_certificate\" is defined for \"rktls on\" in $T/bad.conf:[0-9]+"
bad_conf "an unknown protocol" "rktls on; $(cert server) rktls_protocols TLSv1.2 TLSv1.4;" \
  "unknown protocol \"TLSv1.4\" in \"rktls_protocols\".* in $T/bad.conf:[0-9]+"
bad_conf "an unknown cipher suite" "rktls on; $(cert server) rktls_ciphers TLS_AES_128_GCM_SHA256:RC4-MD5;" \
  "unknown cipher suite \"RC4-MD5\" in \"rktls_ciphers\".* in $T/bad.conf:[0-9]+"
bad_conf "rktls on and listen ... ssl on one socket" \
  "rktls on; $(cert server) $ssl } server { listen 127.0.0.1:$pa ssl; $ssl" \
  "\"rktls on\" in $T/bad.conf:[0-9]+ and \"listen 127.0.0.1:$pa ssl\" cannot share a socket"

# rktls_session_ticket_key: two server{}s (two rktls configs) with the same
# key file resume each other's sessions; two without it do not (each config
# has its own automatic key). Needs the library's
# rktls_server_config_builder_set_ticket_keys_file(); a library without it
# must make nginx -t refuse the directive, saying so.
openssl rand 80 > "$T/ticket.key"
free_ports 4
tk=("rktls_session_ticket_key $T/ticket.key;" "rktls_session_ticket_key $T/ticket.key;" "" "")
body=""
for i in 0 1 2 3; do
  body+="    server { listen 127.0.0.1:${ports[$i]}; server_name localhost; rktls on; $(cert server) ${tk[$i]} root $T/www; }
"
done
nginx_conf "$T/tickets.conf" "$body"
incdir=$(PKG_CONFIG_PATH=${RKTLS_PC_PATH:-build/stage/lib/pkgconfig} pkg-config --variable=includedir rktls)
if grep -q rktls_server_config_builder_set_ticket_keys_file "$incdir/rktls.h"; then
  echo "     (the library has rktls_server_config_builder_set_ticket_keys_file: resumption checks)"
  start_nginx "$T/tickets.conf" || exit 1
  resumes() { # FROM-PORT TO-PORT VERSION -> "Reused" or "New"
    local req='GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
    rm -f "$T/sess"
    printf "$req" | timeout 20 openssl s_client -connect "127.0.0.1:$1" -servername localhost -tls$3 \
      -CAfile "$CA" -sess_out "$T/sess" -ign_eof > /dev/null 2>&1
    printf "$req" | timeout 20 openssl s_client -connect "127.0.0.1:$2" -servername localhost -tls$3 \
      -CAfile "$CA" -sess_in "$T/sess" -ign_eof 2> /dev/null | sed -n 's/^\(Reused\|New\), .*/\1/p' | head -1
  }
  for v in 1_2 1_3; do
    out=$(resumes "${ports[0]}" "${ports[1]}" $v)
    check "ticket key file: a TLS ${v/_/.} session from one server{} resumes on the other [$out]" [ "$out" = Reused ]
    out=$(resumes "${ports[2]}" "${ports[3]}" $v)
    check "no key file: a TLS ${v/_/.} session does not resume on another server{} [$out]" [ "$out" = New ]
    out=$(resumes "${ports[2]}" "${ports[2]}" $v)
    check "no key file: a TLS ${v/_/.} session resumes on the same server{} [$out]" [ "$out" = Reused ]
  done
  stop_nginx QUIT
  head -c 20 /dev/urandom > "$T/short.key"
  bad_conf "a ticket key file of the wrong size" \
    "rktls on; $(cert server) rktls_session_ticket_key $T/short.key;" \
    "rktls_session_ticket_key for \"rktls on\" in $T/bad.conf:[0-9]+: .*short.key"
else
  echo "     (the library has no rktls_server_config_builder_set_ticket_keys_file)"
  nginx_test "$T/tickets.conf"
  check "nginx -t refuses rktls_session_ticket_key, naming what the library lacks" \
    grep -q 'rktls_session_ticket_key.*needs an rktls with rktls_server_config_builder_set_ticket_keys_file' "$T/nginx/t.out"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
