#!/usr/bin/env bash
# nginx + rktls against nginx + OpenSSL (Debian's own `listen ... ssl`), same
# nginx binary, same certificate (ECDSA P-256), one worker each, userspace TLS
# (this kernel has no kTLS). Measures the worker's CPU time (utime + stime
# from /proc, not wall time: the machine is shared) for
#   - full handshakes: `openssl s_time -new` for a few seconds, TLS 1.2 and 1.3;
#   - bulk: a 256 MB file over TLS 1.3 with curl (sendfile on), as CPU s/GB.
# Prints one line per measurement. Not a test: numbers, no pass/fail.
#
#   nginx/bench.sh        needs build/nginx/ngx_http_rktls_module.so, build/certs
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
scratch nginx-bench
CERTS=${CERTS:-build/certs}
test_certs || exit 1
. tests/nginx_lib.sh
CA=$CERTS/ca.pem
mkdir -p "$T/www"
head -c 268435456 /dev/zero > "$T/www/big"
echo hi > "$T/www/small"
free_ports 2
pr=${ports[0]} po=${ports[1]}
nginx_conf "$T/nginx.conf" "
    sendfile on;
    access_log off;
    server { listen 127.0.0.1:$pr; server_name localhost; rktls on;
        rktls_certificate $CERTS/server.pem; rktls_certificate_key $CERTS/server.key; root $T/www; }
    server { listen 127.0.0.1:$po ssl; server_name localhost;
        ssl_certificate $CERTS/server.pem; ssl_certificate_key $CERTS/server.key;
        ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache off; ssl_session_tickets off; root $T/www; }"
start_nginx "$T/nginx.conf" || exit 1
hz=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$wpid/stat"; }   # utime + stime, ticks

for v in 1.2 1.3; do
  for sys in rktls:$pr openssl:$po; do
    name=${sys%%:*} port=${sys#*:}
    c0=$(cpu)
    n=$(timeout 60 openssl s_time -connect "127.0.0.1:$port" -new -time 5 -tls${v/./_} 2>/dev/null |
      sed -n 's/^\([0-9]*\) connections in [0-9.]* real.*/\1/p' | head -1)
    c1=$(cpu)
    awk -v n="$n" -v t=$((c1 - c0)) -v hz="$hz" -v s="$name" -v v="$v" 'BEGIN {
      if (n > 0) printf "handshake TLS %s nginx+%-7s %5d full handshakes, worker CPU %.2f ms each\n", v, s, n, t / hz * 1000 / n;
      else printf "handshake TLS %s nginx+%s: no result\n", v, s }'
  done
done
for sys in rktls:$pr openssl:$po; do
  name=${sys%%:*} port=${sys#*:}
  c0=$(cpu)
  timeout 300 curl -sS --cacert "$CA" --tlsv1.3 -o /dev/null "https://localhost:$port/big"
  c1=$(cpu)
  awk -v t=$((c1 - c0)) -v hz="$hz" -v s="$name" 'BEGIN {
    printf "bulk TLS 1.3 nginx+%-7s 256 MB, worker CPU %.2f s/GB\n", s, t / hz * 4 }'
done
stop_nginx QUIT
