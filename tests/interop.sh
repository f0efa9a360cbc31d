#!/usr/bin/env bash
# Interop test on loopback between rktls (the example server and client) and
# independent TLS stacks: OpenSSL (s_client, s_server) and GnuTLS (gnutls-cli,
# gnutls-serv), for TLS 1.2 and 1.3 with AES-128-GCM, AES-256-GCM and
# ChaCha20-Poly1305. Data is compared byte for byte and resumption is checked
# from both ends.
#
#   tests/interop.sh            env: BIN   (default build/examples)
#                                    CERTS (default: fresh certs from scripts/gen-certs.sh)
#
# Prints "ok   NAME" or "FAIL NAME: why" per case, then "N passed, M failed";
# exits non-zero if anything failed. Needs openssl, gnutls-cli, gnutls-serv,
# python3. gnutls-serv has no listen-address option: it binds all interfaces
# (on an ephemeral port, for the few seconds of its cases).
set -euo pipefail

. "$(dirname "$0")/lib.sh"
setup interop
use_examples server_blocking client
WAIT=20 # seconds: the bound on every client run and readiness wait

# Test data: a random ~1 MB file to fetch over HTTP, and 64 KiB of hex lines
# to echo (gnutls-serv treats lines starting with "/" as commands).
mkdir -p "$T/www"
head -c 1048573 /dev/urandom > "$T/www/file"
SIZE=$(stat -c %s "$T/www/file")
python3 -c 'import os,sys; sys.stdout.write("".join(os.urandom(32).hex()+"\n" for _ in range(1000)))' > "$T/echo.txt"

# ---- reporting --------------------------------------------------------------
# Each case is run with tests/lib.sh's `run`: it returns non-zero after
# setting $why (`fail`) and $logs. On a failure, the rktls server's log
# since the case's mark is shown too.
rk_mark=""
on_fail() {
  [ -z "$rk_mark" ] || tail -n +$((rk_mark + 1)) "$RKLOG" | sed 's/^/    rktls server: /'
}

# ---- parameters per version and cipher ----------------------------------------
# params V C, with V in 1.2|1.3 and C in AES-128-GCM|AES-256-GCM|CHACHA20-POLY1305, sets
#   ossl: openssl s_client/s_server options, iana: the suite's IANA name,
#   prio: the GnuTLS priority string, ver: how rktls prints the version.
params() {
  local v=$1 c=$2 s13 s12 i12
  case $c in
    AES-128-GCM) s13=TLS_AES_128_GCM_SHA256 s12=AES128-GCM-SHA256 i12=AES_128_GCM_SHA256 ;;
    AES-256-GCM) s13=TLS_AES_256_GCM_SHA384 s12=AES256-GCM-SHA384 i12=AES_256_GCM_SHA384 ;;
    CHACHA20-POLY1305) s13=TLS_CHACHA20_POLY1305_SHA256 s12=CHACHA20-POLY1305 i12=CHACHA20_POLY1305_SHA256 ;;
  esac
  ver=TLSv$v
  prio="NORMAL:-VERS-ALL:+VERS-TLS$v:-CIPHER-ALL:+$c"
  if [ "$v" = 1.3 ]; then
    ossl=(-tls1_3 -ciphersuites "$s13") iana=$s13
  else # the certificate is ECDSA, so TLS 1.2 suites are ECDHE-ECDSA
    ossl=(-tls1_2 -cipher "ECDHE-ECDSA-$s12") iana=TLS_ECDHE_ECDSA_WITH_$i12
  fi
}

# ---- servers ----------------------------------------------------------------
# wait_port PORT PID: until 127.0.0.1:PORT accepts connections.
wait_port() {
  local end=$((SECONDS + WAIT))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    kill -0 "$2" 2>/dev/null || return 1
    [ $SECONDS -lt $end ] || return 1
    sleep 0.02
  done
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# mark: remember where the rktls server's log is, before a connection.
mark() { rk_mark=$(wc -l < "$RKLOG"); }
# Cases against other servers show no rktls server log.
unmark() { rk_mark=""; }
# handshake lines the rktls server logged since the mark; waits for COUNT of them.
server_lines() { # COUNT
  local end=$((SECONDS + WAIT))
  while [ "$(tail -n +$((rk_mark + 1)) "$RKLOG" | grep -c '^handshake')" -lt "$1" ] && [ $SECONDS -lt $end ]; do
    sleep 0.02
  done
  tail -n +$((rk_mark + 1)) "$RKLOG" | grep '^handshake' || true
}
# expect_server RESUMED...: one handshake line per connection since the mark,
# each with the expected version, suite and resumed= value.
expect_server() {
  local got want
  got=$(server_lines $#)
  want=$(for r; do echo "handshake ok: $ver $iana sni=localhost alpn=- resumed=$r ktls=off"; done)
  [ "$got" = "$want" ] || fail "rktls server logged [${got//$'\n'/; }], expected [${want//$'\n'/; }]"
}

# body_of OUT BODY: the HTTP response body in OUT (after any tool chatter),
# Content-Length bytes of it, into BODY.
body_of() {
  python3 - "$1" "$2" <<'EOF'
import re, sys
d = open(sys.argv[1], 'rb').read()
i = d.find(b'HTTP/1.')
j = d.find(b'\r\n\r\n', i)
if i < 0 or j < 0: sys.exit('no HTTP response in the output')
head = d[i:j]
if not head.startswith((b'HTTP/1.1 200', b'HTTP/1.0 200')): sys.exit('status: %r' % head[:40])
m = re.search(rb'(?im)^content-length:\s*(\d+)', head)
if not m: sys.exit('no Content-Length')
n = int(m.group(1)); body = d[j + 4:j + 4 + n]
if len(body) != n: sys.exit('body is %d bytes, Content-Length %d' % (len(body), n))
open(sys.argv[2], 'wb').write(body)
EOF
}
same_file() { # BODY
  cmp -s "$1" "$T/www/file" || fail "body differs from the file ($(stat -c %s "$1") bytes vs $SIZE)"
}

# ---- 1. rktls server, OpenSSL and GnuTLS clients ------------------------------
RKLOG=$T/rktls-server.log
start_server "$RKLOG" timeout 900 "$BIN/server_blocking" --cert "$CERT" --key "$KEY" --root "$T/www" ||
  exit 1
RKPORT=$port
printf 'GET /file HTTP/1.0\r\n\r\n' > "$T/get"

s_client() { # OUT EXTRA-ARGS...: stdin is the request
  local out=$1; shift
  timeout "$WAIT" openssl s_client -connect "127.0.0.1:$RKPORT" -servername localhost \
    -CAfile "$CA" -verify_return_error "${ossl[@]}" "$@" > "$out" 2> "$out.err"
}
case_s_client() { # V C: full handshake with data, then a resumption with -sess_in
  params "$1" "$2"
  local o=$T/s_client-$1-$2
  logs=("$o.err")
  mark
  s_client "$o" -quiet -sess_out "$o.sess" < "$T/get" || fail "s_client exited $?" || return
  body_of "$o" "$o.body" 2> "$o.py" || fail "$(cat "$o.py")" || return
  same_file "$o.body" && expect_server no || return
  logs=("$o.2" "$o.2.err")
  mark
  s_client "$o.2" -sess_in "$o.sess" < /dev/null || fail "s_client -sess_in exited $?" || return
  grep -aq "^Reused, $ver" "$o.2" || fail "s_client -sess_in did not print 'Reused, $ver'" || return
  expect_server yes
}
case_gnutls_cli() { # V C RESUME: with RESUME=yes the data goes over the resumed connection
  params "$1" "$2"
  local o=$T/gnutls-cli-$1-$2-$3 extra=() want=(no)
  [ "$3" = yes ] && extra=(--resume) want=(no yes)
  logs=("$o.info" "$o.err")
  mark
  timeout "$WAIT" gnutls-cli --x509cafile "$CA" -p "$RKPORT" --priority "$prio" ${extra[@]+"${extra[@]}"} \
    localhost < "$T/get" > "$o" 2> "$o.err"
  local rc=$?
  LC_ALL=C grep -aE '^(- |\*\*\* )[[:print:]]*$' "$o" > "$o.info" || true # its messages, not the data
  [ $rc = 0 ] || fail "gnutls-cli exited $rc after $(stat -c %s "$o") bytes of output" || return
  if [ "$3" = yes ]; then
    grep -aq '^\*\*\* This is a resumed session' "$o" || fail "gnutls-cli did not resume" || return
  fi
  body_of "$o" "$o.body" 2> "$o.py" || fail "$(cat "$o.py")" || return
  same_file "$o.body" && expect_server "${want[@]}"
}

VERSIONS=(1.3 1.2)
CIPHERS=(AES-128-GCM AES-256-GCM CHACHA20-POLY1305)
for v in "${VERSIONS[@]}"; do
  for c in "${CIPHERS[@]}"; do
    run "openssl s_client -> rktls server  TLSv$v $c (data + resumption)" case_s_client "$v" "$c"
    run "gnutls-cli -> rktls server        TLSv$v $c (data)" case_gnutls_cli "$v" "$c" no
    run "gnutls-cli -> rktls server        TLSv$v $c (data, --resume)" case_gnutls_cli "$v" "$c" yes
  done
done

# ---- 2. rktls client, OpenSSL and GnuTLS servers ------------------------------
# expect_client OUT RESUMED...: the client's line per connection.
expect_client() {
  local out=$1 got want i=0; shift
  got=$(grep '^client: conn' "$out" || true)
  want=$(for r; do i=$((i + 1)); echo "client: conn $i: $ver $iana alpn=- resumed=$r ktls=off"; done)
  [ "$got" = "$want" ] || fail "client printed [${got//$'\n'/; }], expected [${want//$'\n'/; }]"
}
client() { # OUT ARGS...
  local out=$1; shift
  timeout "$WAIT" "$BIN/client" --port "$port" --ca "$CA" "$@" > "$out" 2> "$out.err" ||
    fail "client exited $?: $(tail -n 2 "$out.err" | tr '\n' ' ')"
}
case_s_server() { # V C: openssl s_server -WWW; one fetch, then two with resumption
  params "$1" "$2"
  local o=$T/s_server-$1-$2 pid port
  unmark
  logs=("$o.log")
  (cd "$T/www" && exec timeout 300 openssl s_server -accept 127.0.0.1:0 -cert "$CERT" -key "$KEY" \
    "${ossl[@]}" -WWW) > "$o.log" 2>&1 &
  pid=$!; pids+=($pid)
  wait_for "$o.log" '^ACCEPT ' $pid || fail "s_server did not start" || return
  port=$(sed -n 's/^ACCEPT .*://p' "$o.log")
  logs=("$o.out.err" "$o.log")
  client "$o.out" --get /file --out "$o.body" && expect_client "$o.out" no && same_file "$o.body" ||
    { stop $pid; return 1; }
  logs=("$o.out2" "$o.out2.err" "$o.log")
  client "$o.out2" --get /file --out "$o.body2" --count 2 && expect_client "$o.out2" no yes &&
    same_file "$o.body2" || { stop $pid; return 1; }
  [ "$(grep -c "^client: got $SIZE bytes" "$o.out2")" = 2 ] || fail "a fetch was short" || { stop $pid; return 1; }
  stop $pid
}
case_gnutls_serv() { # V C: gnutls-serv echo mode; two echoes, the second resumed
  params "$1" "$2"
  local o=$T/gnutls-serv-$1-$2 pid port try
  unmark
  logs=("$o.log")
  # No listen address (it binds all interfaces) and no way to learn an
  # ephemeral port: take a free one, retrying if another process got it first.
  for try in 1 2 3; do
    port=$(free_port)
    timeout 300 gnutls-serv --echo --crlf -q -p "$port" --x509certfile "$CERT" --x509keyfile "$KEY" \
      --priority "$prio" > "$o.log" 2>&1 &
    pid=$!; pids+=($pid)
    # It block-buffers its "listening" line, so probe the port instead.
    wait_port "$port" $pid && kill -0 $pid 2>/dev/null && break
    stop $pid
    [ $try = 3 ] && { fail "gnutls-serv did not start"; return; }
  done
  logs=("$o.out" "$o.out.err" "$o.log")
  client "$o.out" --echo "$T/echo.txt" --count 2 && expect_client "$o.out" no yes &&
    [ "$(grep -c '^client: echo ok' "$o.out")" = 2 ] || { why=${why:-"echo not ok"}; stop $pid; return 1; }
  stop $pid
}

for v in "${VERSIONS[@]}"; do
  for c in "${CIPHERS[@]}"; do
    run "rktls client -> openssl s_server  TLSv$v $c (data + resumption)" case_s_server "$v" "$c"
    run "rktls client -> gnutls-serv       TLSv$v $c (echo + resumption)" case_gnutls_serv "$v" "$c"
  done
done

summary
