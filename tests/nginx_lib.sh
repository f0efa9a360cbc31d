# Shared by the nginx tests (sourced, bash, after tests/lib.sh): run Debian's
# nginx with the rktls module on a generated config, as a foreground master
# (daemon off) whose files all live in the scratch directory $T.
# Needs: T, pids, CERTS; MODULE (default build/nginx/ngx_http_rktls_module.so).

MODULE=$(cd "$(dirname "${MODULE:-build/nginx/ngx_http_rktls_module.so}")" && pwd)/$(basename "${MODULE:-build/nginx/ngx_http_rktls_module.so}")
NGINX=${NGINX:-/usr/sbin/nginx}

passed=0 failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; failed=$((failed + 1)); }
check() { # NAME COMMAND...: ok if the command succeeds
  local name=$1; shift
  if "$@"; then ok "$name"; else bad "$name"; fi
}

# free_ports N: N distinct loopback ports the kernel picked (bound with port 0
# and released at once) in $ports.
free_ports() {
  ports=($(python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
))
}

# nginx_conf FILE HTTP_BODY: a complete nginx.conf around HTTP_BODY (the
# inside of http {}): module, one worker, logs, pid and temp paths under $T.
# NGINX_LOG_LEVEL: the error log's level (default info). Also used by
# bench/bench.py (bench/nginx_conf.sh) for its nginx systems.
nginx_conf() {
  local f=$1 body=$2 d=$T/nginx
  mkdir -p "$d/tmp"
  # As root, nginx's workers run as nobody: they must be able to read $T.
  chmod 755 "$T"
  cat > "$f" <<CONF
load_module $MODULE;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log ${NGINX_LOG_LEVEL:-info};
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    log_format rktls '\$request_uri \$status proto=\$rktls_protocol cipher=\$rktls_cipher sni=\$rktls_server_name ktls=\$rktls_ktls conn=\$connection req=\$connection_requests';
    access_log $d/access.log rktls;
$body
}
CONF
}

# nginx_test CONF: nginx -t on CONF; output in $T/nginx/t.out.
nginx_test() {
  "$NGINX" -t -p "$T/nginx" -e "$T/nginx/t-error.log" -c "$1" > "$T/nginx/t.out" 2>&1
}

# start_nginx CONF: the master in the foreground (background job), waits (at
# most 20 s) until its worker started; sets $npid (master) and $wpid (worker).
start_nginx() {
  local conf=$1 end=$((SECONDS + 20)) log=$T/nginx/error.log
  : > "$log"
  "$NGINX" -p "$T/nginx" -e "$log" -c "$conf" -g 'daemon off;' > "$T/nginx/stdout" 2>&1 &
  npid=$!; pids+=("$npid")
  until wpid=$(sed -n 's/.*start worker process \([0-9]*\).*/\1/p' "$log" | tail -1) && [ -n "$wpid" ]; do
    kill -0 "$npid" 2>/dev/null && [ $SECONDS -lt $end ] || {
      echo "nginx did not start:"; cat "$log" "$T/nginx/stdout"; return 1; }
    sleep 0.02
  done
}

# stop_nginx [SIGNAL]: QUIT (graceful) by default, waits (at most 15 s);
# sets $rc to the master's exit status.
stop_nginx() {
  local end=$((SECONDS + 15))
  kill -"${1:-QUIT}" "$npid" 2>/dev/null || true
  while kill -0 "$npid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.05; done
  if kill -0 "$npid" 2>/dev/null; then
    kill -KILL "$npid"; rc=timeout
  else
    rc=0; wait "$npid" || rc=$?
  fi
}
