# The one harness of the shell tests (sourced, bash): results, a scratch
# directory, certificates, and servers started on an ephemeral port.
#
# Results: `ok NAME` and `bad NAME [WHY]` print one line each and count;
# `run NAME CMD...` (also spelled `check`) runs CMD in this shell: success
# is ok, failure is bad with $why and the tails of the files in $logs (CMD
# sets them: `fail WHY` sets $why and returns 1). With $RUN_LOGS set, CMD's
# output goes to $RUN_LOGS/NAME.log, shown on failure. A script defines
# `on_fail` to show more on a failure. `summary` prints "N passed, M
# failed" and returns non-zero if anything failed.

# sha FILE: its sha256, hex.
sha() { sha256sum "$1" | cut -d' ' -f1; }

# $ROOT: the repository.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

passed=0 failed=0 why="" logs=()
ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1${2:+: $2}"; failed=$((failed + 1)); }
fail() { why=$1; return 1; }
run() {
  # (Names prefixed with _run_: CMD sees and may set any variable.)
  local _run_name=$1 _run_rc=0 _run_f; shift
  why="" logs=()
  if [ -n "${RUN_LOGS:-}" ]; then
    "$@" > "$RUN_LOGS/$_run_name.log" 2>&1 || _run_rc=$?
    logs+=("$RUN_LOGS/$_run_name.log")
  else
    "$@" || _run_rc=$?
  fi
  if [ $_run_rc = 0 ]; then
    ok "$_run_name"
  else
    bad "$_run_name" "$why"
    for _run_f in ${logs[@]+"${logs[@]}"}; do [ -s "$_run_f" ] && tail_of "$_run_f"; done
    if declare -F on_fail > /dev/null; then on_fail; fi
  fi
  return 0
}
check() { run "$@"; }
summary() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
# tail_of FILE: its last lines, binary bytes masked, each prefixed by its name.
tail_of() {
  tail -c 1500 "$1" | tr -c '[:print:]\n' '.' | tail -n 8 | sed "s|^|    $(basename "$1"): |"
}

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
# certificates (scripts/gen-certs.sh) in $T/certs; $CA, $CERT and $KEY are
# the CA and the server's certificate and key in it.
test_certs() {
  if [ -n "${CERTS:-}" ]; then
    CERTS=$(cd "$CERTS" && pwd)
  else
    CERTS=$T/certs
    "$(dirname "${BASH_SOURCE[0]}")/../scripts/gen-certs.sh" "$CERTS"
  fi
  CA=$CERTS/ca.pem CERT=$CERTS/server.pem KEY=$CERTS/server.key
  require "$CA" "$CERT" "$KEY"
}

# setup NAME: `scratch NAME` and `test_certs`.
setup() {
  scratch "$1"
  test_certs
}

# use_examples PROGRAM...: $BIN as an absolute path (default: build/examples)
# holding the example PROGRAMs.
use_examples() {
  BIN=$(cd "${BIN:-$ROOT/build/examples}" && pwd)
  local p
  for p; do require "$BIN/$p"; done
}

# require FILE...: exit 2 (a setup problem, not a failed test) if one is missing.
require() {
  local f
  for f; do [ -e "$f" ] || { echo "missing $f" >&2; exit 2; }; done
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

# start_server LOG CMD...: starts CMD in the background with its output in
# LOG (emptied first) and waits for its readiness line "READY port=N";
# sets $port and $spid (also added to $pids). On failure shows LOG.
start_server() {
  local log=$1; shift
  : > "$log"
  "$@" > "$log" 2>&1 &
  spid=$!; pids+=("$spid")
  port=""
  if ! wait_for "$log" '^READY port=' "$spid"; then
    echo "server did not start: $*"; cat "$log"; return 1
  fi
  port=$(sed -n 's/^READY port=//p' "$log")
}
