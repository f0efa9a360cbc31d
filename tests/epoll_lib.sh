# Shared by tests/curl.sh and tests/load.sh (sourced, bash): start
# examples-c/server_epoll on an ephemeral port and report results.
# Needs: BIN, CERTS, T (a scratch directory), and an array `pids`.

passed=0 failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; failed=$((failed + 1)); }
check() { # NAME COMMAND...: ok if the command succeeds
  local name=$1; shift
  if "$@"; then ok "$name"; else bad "$name"; fi
}

# start_epoll LOG ARGS...: starts server_epoll (or $EPOLL, e.g.
# server_epoll_redis), waits (at most 20 s) for its readiness line; sets
# $port and $spid.
start_epoll() {
  local log=$1 end=$((SECONDS + 20)); shift
  : > "$log"
  "$BIN/${EPOLL:-server_epoll}" --cert "$CERTS/server.pem" --key "$CERTS/server.key" --port 0 "$@" \
    > "$log" 2>&1 &
  spid=$!; pids+=("$spid")
  port=""
  until port=$(sed -n 's/^READY port=//p' "$log") && [ -n "$port" ]; do
    kill -0 "$spid" 2>/dev/null && [ $SECONDS -lt $end ] || {
      echo "server_epoll did not start:"; cat "$log"; return 1; }
    sleep 0.02
  done
}

# stop_epoll: SIGTERM, then wait (at most 15 s); sets $rc to its exit status.
stop_epoll() {
  local end=$((SECONDS + 15))
  kill -TERM "$spid" 2>/dev/null || true
  while kill -0 "$spid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.05; done
  if kill -0 "$spid" 2>/dev/null; then
    kill -KILL "$spid"; rc=timeout
  else
    rc=0; wait "$spid" || rc=$?
  fi
}

# wait_log LOG REGEX COUNT: until LOG has COUNT lines matching REGEX (at most 20 s).
wait_log() {
  local end=$((SECONDS + 20))
  until [ "$(grep -c -- "$2" "$1")" -ge "$3" ]; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.05
  done
}

sha() { sha256sum "$1" | cut -d' ' -f1; }
