#!/usr/bin/env bash
# Load test of Debian's nginx with ngx_http_rktls_module: the mix of
# tests/load.sh (200 clients at once, twice: 50 curl, 40 openssl s_client,
# 40 of the example client, 70 misbehaving ones from tests/load_bad.py) against
# one nginx worker, rktls_handshake_timeout and client_header_timeout 15 s
# (this 2-core machine is shared: at load averages of 20-36 clients were
# starved for several seconds between connect and ClientHello).
#
# Asserts: every good client got its file intact (sha256); every bad one got
# an alert or a close and none hung; stalled ones were closed by nginx's
# timeouts; after each round the worker's open fds (/proc/PID/fd) return
# exactly to the level before the first round, and its VmRSS returns near it
# (round 1 <= start + 16 MB, round 2 <= round 1 + 2 MB, as tests/load.sh);
# nginx logged no alert or crit and exits 0 on QUIT.
#
#   tests/nginx_load.sh   env: BIN (default build/examples), CERTS, MODULE
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/examples}
. tests/lib.sh
scratch nginx-load
test_certs || exit 1
. tests/nginx_lib.sh
. tests/load_lib.sh
for t in curl openssl python3 timeout sha256sum "$NGINX"; do command -v $t >/dev/null || { echo "missing $t"; exit 2; }; done
[ -x "$BIN/client" ] || { echo "missing $BIN/client: make examples"; exit 2; }
[ -f "$MODULE" ] || { echo "missing $MODULE: run nginx/build.sh"; exit 2; }
[ "$(ulimit -n)" -ge 1024 ] || ulimit -n 1024 || { echo "cannot raise ulimit -n to 1024"; exit 2; }

TIMEOUT_MS=15000
CA=$CERTS/ca.pem
load_files

free_ports 1
port=${ports[0]}
nginx_conf "$T/nginx.conf" "
    keepalive_timeout 2s;
    server {
        listen 127.0.0.1:$port backlog=512;
        server_name localhost;
        rktls on;
        rktls_certificate $CERTS/server.pem;
        rktls_certificate_key $CERTS/server.key;
        rktls_handshake_timeout ${TIMEOUT_MS}ms;
        client_header_timeout ${TIMEOUT_MS}ms;
        root $T/www;
    }"
start_nginx "$T/nginx.conf" || exit 1
spid=$wpid
load_rounds "the worker's"

log=$T/nginx/error.log
check "stalled handshakes were timed out by nginx ($(grep -c 'timed out in the handshake' "$log"))" \
  [ "$(grep -c 'timed out in the handshake' "$log")" -ge 20 ]
check "stalled requests were timed out by nginx ($(grep -c 'client timed out.*while reading client request' "$log"))" \
  [ "$(grep -c 'client timed out.*while reading client request' "$log")" -ge 20 ]
check "plain HTTP and garbage were refused with alerts ($(grep -c 'ClientHello refused.*alert .* sent' "$log"))" \
  [ "$(grep -c 'ClientHello refused.*alert .* sent' "$log")" -ge 40 ]
stop_nginx QUIT
check "nginx exited 0 on QUIT ($rc)" [ "$rc" = 0 ]
check "no alert/crit/emerg in nginx's error log" bash -c "! grep -E '\\[(alert|crit|emerg)\\]' '$log'"
grep -E '\[(alert|crit|emerg)\]' "$log" | head -5
summary
