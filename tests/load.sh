#!/usr/bin/env bash
# Load test of examples-c/server_epoll: 200 clients at once, twice.
#
# Each round starts, concurrently: 50 curl (TLS 1.2 and 1.3, some fetching
# two files over one kept-alive connection), 40 `openssl s_client -quiet`
# with a GET piped in, 40 of the example `client --get`, and 70 misbehaving
# clients (tests/load_bad.py: 10 each of half a ClientHello then close,
# connect-and-close, plain HTTP, random bytes, a stall mid-handshake, a stall
# mid-request, and a TCP reset mid-response).
#
# All 200 wait at a start line and begin together (the server reports how
# many it held at once: --stats peak=, 160-175 on a 2-core machine).
# Asserts: every good client got its file intact (sha256); every bad one got
# an alert or a close, and none hung (each is bounded by `timeout`); the
# stalled ones were closed by the server's --timeout-ms; the server logged
# exactly one final line per connection it accepted; and after each round
# the server's open fds (/proc/PID/fd) return exactly to the level before the
# first round and its VmRSS (/proc/PID/status) returns near it:
#   round 1: RSS <= start + 16 MB (allocator high-water mark of 200 connections
#            in flight, which malloc may keep; measured ~3 MB),
#   round 2: RSS <= round 1 + 2 MB (a leak of 10 KB per connection would add 4 MB).
#
#   tests/load.sh        env: BIN (default build/examples), CERTS (default: fresh certs)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/examples}
. tests/lib.sh
scratch load
test_certs || exit 1
. tests/epoll_lib.sh
. tests/load_lib.sh
for t in curl openssl python3 timeout sha256sum; do command -v $t >/dev/null || { echo "missing $t"; exit 2; }; done
[ -x "$BIN/server_epoll" ] && [ -x "$BIN/client" ] || { echo "missing $BIN/server_epoll or client: make examples"; exit 2; }
# 200 clients in this shell's children plus the server's fds: well below 1024,
# but a low hard limit would break the test, not the server.
[ "$(ulimit -n)" -ge 1024 ] || ulimit -n 1024 || { echo "cannot raise ulimit -n to 1024"; exit 2; }

# Long enough that a good client starved by 200 processes on 2 cores is not
# taken for a stalled one (at 3 s, good clients were timed out under load).
TIMEOUT_MS=8000
load_files

LOG=$T/server.log
start_epoll "$LOG" --root "$T/www" --timeout-ms $TIMEOUT_MS --stats || exit 1
load_rounds "the server's"

stop_epoll
check "server exited 0 on SIGTERM (status $rc)" [ "$rc" = 0 ]
accepted=$(sed -n 's/^stats: accepted=\([0-9]*\) .*/\1/p' "$LOG")
finals=$(grep -cE '^(closed: |rejected at |handshake failed: |connection ended: |timeout: )' "$LOG")
check "one final log line per accepted connection ($finals lines, $accepted accepted)" \
  [ -n "$accepted" -a "$finals" = "$accepted" ]
check "stalled handshakes were timed out by the server ($(grep -c '^timeout: in accept' "$LOG"))" \
  [ "$(grep -c '^timeout: in accept' "$LOG")" -ge 20 ]
check "stalled requests were timed out by the server ($(grep -c '^timeout: in request' "$LOG"))" \
  [ "$(grep -c '^timeout: in request' "$LOG")" -ge 20 ]
check "plain HTTP and garbage were refused with alerts ($(grep -c '^rejected at accept: .*alert sent' "$LOG"))" \
  [ "$(grep -c '^rejected at accept: .*alert sent' "$LOG")" -ge 40 ]
grep "^stats:" "$LOG"
# Starting a client process takes a few ms of CPU, so on 2 cores the first
# finish before the last connect; the stalled ones (20 per round) hold on.
peak=$(sed -n 's/^stats: .* peak=\([0-9]*\).*/\1/p' "$LOG")
check "the server held ${peak:-?} connections at once (> 100)" [ "${peak:-0}" -gt 100 ]
summary
