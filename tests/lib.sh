# Shared by the test scripts (sourced, bash).

# scratch NAME: $T, a fresh temporary directory, and $pids, an array of
# background processes; on exit (or SIGINT/SIGTERM) the processes are
# killed and $T removed.
scratch() {
  T=$(mktemp -d "${TMPDIR:-/tmp}/rktls-$1.XXXXXX")
  pids=()
  trap _scratch_cleanup EXIT
  trap 'exit 130' INT TERM
}
_scratch_cleanup() {
  for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$T"
}

# test_certs: $CERTS as an absolute path: the directory given, or fresh
# certificates (scripts/gen-certs.sh) in $T/certs.
test_certs() {
  if [ -n "${CERTS:-}" ]; then
    CERTS=$(cd "$CERTS" && pwd)
  else
    CERTS=$T/certs
    "$(dirname "${BASH_SOURCE[0]}")/../scripts/gen-certs.sh" "$CERTS"
  fi
}

# wait_for FILE REGEX PID: until FILE has a line matching REGEX, for at most
# $WAIT seconds (default 20); fails if PID exits first.
wait_for() {
  local end=$((SECONDS + ${WAIT:-20}))
  until grep -aq "$2" "$1" 2>/dev/null; do
    kill -0 "$3" 2>/dev/null || return 1
    [ $SECONDS -lt $end ] || return 1
    sleep 0.02
  done
}
