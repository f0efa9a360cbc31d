#!/usr/bin/env bash
# TLS 1.2 renegotiation, refused by rktls (userspace record layer), on
# loopback:
#  - rktls client against an IIS-like OpenSSL server (tests/reneg/iis_peer.c)
#    that sends part of a response, then HelloRequest, then resets the
#    connection on the client's no_renegotiation: the client delivers the
#    data first, then fails with RKTLS_ERR_RENEGOTIATION (410) and a message
#    naming the cause and the server-side fix;
#  - the same server in --tolerant mode (carries on): the client gets it all;
#  - the client with --reneg-fail-fast: 410 at once, after the
#    no_renegotiation warning (RFC 5246 §7.2.2) and close_notify;
#  - openssl s_client -tls1_2 renegotiating ("R") against the rktls server:
#    refused with the no_renegotiation warning and close_notify, logged,
#    and the server serves the next client.
#
#   tests/reneg.sh      env: BIN (default build/examples), CERTS (default: fresh
#                            certs), CC (default cc)
#
# Prints "ok   NAME" or "FAIL NAME: why" per case, then "N passed, M failed".
# Needs openssl, libssl-dev (iis_peer is built here), python3.
set -euo pipefail

. "$(dirname "$0")/lib.sh"
setup reneg
use_examples server_blocking client
WAIT=20 # seconds: the bound on every run and readiness wait

# The IIS-like peer links libssl and libcrypto only (the kTLS VM reuses it).
mkdir -p "$ROOT/build/reneg"
IIS=$ROOT/build/reneg/iis_peer
"${CC:-cc}" -O2 -Wall -Wextra -Werror -o "$IIS" "$ROOT/tests/reneg/iis_peer.c" -lssl -lcrypto

# Each case is run with tests/lib.sh's `run`: it returns non-zero after
# setting $why (`fail`) and $logs.
has() { # FILE TEXT: FILE contains TEXT (fixed string)
  grep -qF -- "$2" "$1" || fail "$(basename "$1") lacks [$2]"
}

# iis_run NAME PEER-ARGS CLIENT-ARGS...: run the peer and the client; sets
# $o (output prefix), $rc (client exit status); the peer has exited.
iis_run() {
  o=$T/$1; shift
  local peer_args=$1; shift
  logs=("$o.peer" "$o.out" "$o.err")
  start_server "$o.peer" timeout "$WAIT" "$IIS" --cert "$CERT" --key "$KEY" $peer_args ||
    fail "iis_peer did not start" || return
  local pid=$spid
  rc=0
  timeout "$WAIT" "$BIN/client" --port "$port" --ca "$CA" --get / "$@" > "$o.out" 2> "$o.err" || rc=$?
  wait "$pid" || fail "iis_peer exited $?" || return
}
# The data sent before the HelloRequest reached the client's caller.
data_before_delivered() {
  local sent got
  sent=$(sed -n 's/^sent \([0-9]*\) bytes before the HelloRequest$/\1/p' "$o.peer")
  got=$(sed -n 's/^client: read \([0-9]*\) bytes before the failure$/\1/p' "$o.err")
  [ -n "$sent" ] && [ "$sent" = "$got" ] || fail "server sent ${sent:-?} bytes first, client read ${got:-?}"
}
refused_with_410() {
  [ "$rc" = 1 ] || fail "client exited $rc, expected 1" || return
  has "$o.err" "client: read failed: peer requested TLS 1.2 renegotiation, which is refused (410)" &&
    has "$o.err" "the server demanded TLS 1.2 renegotiation (HelloRequest" &&
    has "$o.err" "rustls does not support renegotiation" &&
    has "$o.err" "clientcertnegotiation=enable" &&
    has "$o.err" "enable TLS 1.3" &&
    data_before_delivered
}

case_iis_resets() {
  iis_run iis "" || return
  has "$o.peer" "received alert level=1 desc=100" && has "$o.peer" "reset the connection" &&
    refused_with_410 && has "$o.err" "then reset the connection" &&
    has "$o.err" "client: errno 104 (Connection reset by peer)"
}
case_tolerant() {
  iis_run tolerant --tolerant || return
  [ "$rc" = 0 ] || fail "client exited $rc" || return
  has "$o.peer" "client answered with record type 21" &&
    has "$o.peer" "closed cleanly after 1000 more bytes" || return
  grep -qx "client: got 2000 bytes" "$o.out" || fail "client did not get the whole body cleanly"
}
case_fail_fast() {
  iis_run fail-fast "" --reneg-fail-fast || return
  has "$o.peer" "received alert level=1 desc=100" && refused_with_410 &&
    has "$o.err" "rktls ended the connection at once (fail-fast)" &&
    has "$o.err" "client: sent alert no_renegotiation"
}
case_fail_fast_tolerant() {
  iis_run fail-fast-tolerant --tolerant --reneg-fail-fast || return
  has "$o.peer" "client answered with record type 21" && refused_with_410 &&
    has "$o.err" "client: sent alert no_renegotiation"
}

run "rktls client -> IIS-like server: HelloRequest, then reset: 410 with the fix" case_iis_resets
run "rktls client -> tolerant server: refusal, then all the data" case_tolerant
run "rktls client --reneg-fail-fast -> IIS-like server: no_renegotiation warning, 410" case_fail_fast
run "rktls client --reneg-fail-fast -> tolerant server: no_renegotiation warning, 410" case_fail_fast_tolerant

# ---- openssl s_client renegotiating against the rktls server ------------------
mkdir -p "$T/www"
head -c 100000 /dev/urandom > "$T/www/file"
RKLOG=$T/server.log
start_server "$RKLOG" timeout 300 "$BIN/server_blocking" --cert "$CERT" --key "$KEY" --root "$T/www" ||
  exit 1
RKPORT=$port RKPID=$spid

case_s_client_renegotiates() {
  local o=$T/s_client
  logs=("$o.out" "$RKLOG")
  # "R" on a line of its own asks s_client to renegotiate (only without
  # -ign_eof); its input stays open until the server has logged the outcome,
  # so s_client does not close first on end of input.
  {
    printf 'R\n'
    local end=$((SECONDS + WAIT))
    until grep -q '^connection ended:' "$RKLOG" || [ $SECONDS -ge $end ]; do sleep 0.02; done
  } | timeout "$WAIT" openssl s_client -connect "127.0.0.1:$RKPORT" -servername localhost \
    -CAfile "$CA" -verify_return_error -tls1_2 > "$o.out" 2>&1 || true
  has "$o.out" "RENEGOTIATING" || return
  # OpenSSL reports a warning no_renegotiation as "no renegotiation"; a
  # fatal alert would add "SSL alert number 100".
  has "$o.out" "ssl3_read_bytes:no renegotiation" || return
  ! grep -q "SSL alert number" "$o.out" || fail "s_client got a fatal alert" || return
  has "$RKLOG" "the client attempted TLS 1.2 renegotiation (a new ClientHello); rktls never renegotiates and ended the connection (sent alert no_renegotiation as a warning, then close_notify)" ||
    return
  kill -0 $RKPID 2>/dev/null || fail "the rktls server exited"
}
case_next_client_served() {
  local o=$T/after
  logs=("$o.out" "$o.err" "$RKLOG")
  timeout "$WAIT" "$BIN/client" --port "$RKPORT" --ca "$CA" --tls12 --get /file --out "$o.body" > "$o.out" 2> "$o.err" ||
    fail "client exited $?" || return
  cmp -s "$o.body" "$T/www/file" || fail "fetched file differs"
}
run "openssl s_client -tls1_2 renegotiates -> rktls server refuses, logs it" case_s_client_renegotiates
run "rktls server serves the next client after the refusal" case_next_client_served

summary
