# Shared by tests/curl.sh and tests/load.sh (sourced, bash, after
# tests/lib.sh): examples-c/server_epoll on an ephemeral port.
# Needs: BIN, CERTS, T and `pids` (tests/lib.sh's scratch).

# start_epoll LOG ARGS...: starts server_epoll (or $EPOLL, e.g.
# server_epoll_redis), waits (at most 20 s) for its readiness line; sets
# $port and $spid.
start_epoll() {
  local log=$1; shift
  start_server "$log" "$BIN/${EPOLL:-server_epoll}" --cert "$CERTS/server.pem" --key "$CERTS/server.key" \
    --port 0 "$@"
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

