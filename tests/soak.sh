#!/usr/bin/env bash
# Soak of examples-c/server_epoll: SOAK_SECONDS (default 60) of mixed
# clients from tests/soak.py, 24 threads back to back (thousands of
# connections): full handshakes (TLS 1.2 and 1.3), resumed ones, slow
# requests one byte at a time, aborted handshakes, garbage, TCP resets
# mid-response, TLS 1.3 KeyUpdates both ways (openssl s_client's k and K
# before its request). Asserts: every good client got byte-exact files (sha256)
# and some sessions resumed; the server's open fds (/proc/PID/fd) return
# exactly to the level before, its VmRSS to within 8 MB of it (allocator
# high-water mark; a leak of 1 KB per connection would show over thousands);
# its log has one final line per accepted connection and no unexpected
# error (panic, internal error, accept failure).
#   tests/soak.sh     env: BIN (default build/examples), CERTS, SOAK_SECONDS
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/examples}
SOAK_SECONDS=${SOAK_SECONDS:-60}
. tests/lib.sh
scratch soak
test_certs || exit 1
. tests/epoll_lib.sh
for t in python3 curl openssl; do command -v $t >/dev/null || { echo "missing $t"; exit 2; }; done
[ -x "$BIN/server_epoll" ] || { echo "missing $BIN/server_epoll: make examples"; exit 2; }
[ "$(ulimit -n)" -ge 1024 ] || ulimit -n 1024 || { echo "cannot raise ulimit -n to 1024"; exit 2; }

CA=$CERTS/ca.pem
mkdir -p "$T/www"
head -c 700 /dev/urandom > "$T/www/small"
head -c 70000 /dev/urandom > "$T/www/medium"
head -c 600000 /dev/urandom > "$T/www/large"
# The KeyUpdate clients' file: text, found verbatim in s_client's output.
for i in $(seq 1 1000); do echo "line $i of the text file"; done > "$T/www/text"
LOG=$T/server.log
start_epoll "$LOG" --root "$T/www" --timeout-ms 3000 --stats || exit 1
fds() { ls "/proc/$spid/fd" | wc -l; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$spid/status"; }
for i in 1 2 3; do timeout 30 curl -sS --cacert "$CA" -o /dev/null "https://localhost:$port/large"; done
sleep 0.2
fd0=$(fds) rss0=$(rss_kb)
echo "     start: $fd0 fds, VmRSS $rss0 kB"
t0=$SECONDS
timeout $((SOAK_SECONDS + 120)) python3 tests/soak.py "$port" "$CA" "$T/www" "$SOAK_SECONDS" 24 > "$T/soak.log" 2>&1
src=$?
sed 's/^/     /' "$T/soak.log"
total=$(sed -n 's/^total //p' "$T/soak.log")
check "soak: ${total:-0} connections in $((SECONDS - t0)) s, every good client byte-exact, sessions resumed" [ $src = 0 ]
ku=$(awk '$1 == "keyupdate" { print $2 }' "$T/soak.log")
check "TLS 1.3 KeyUpdate clients (3 each, one asking for the server's) byte-exact: ${ku:-0}" [ "${ku:-0}" -gt 0 ]
end=$((SECONDS + 15))
until [ "$(fds)" -le "$fd0" ] || [ $SECONDS -ge $end ]; do sleep 0.1; done
fd1=$(fds) rss1=$(rss_kb)
echo "     end: $fd1 fds, VmRSS $rss1 kB"
check "open fds back to the start ($fd1 vs $fd0)" [ "$fd1" = "$fd0" ]
check "VmRSS $rss1 kB <= start $rss0 kB + 8 MB" [ "$rss1" -le $((rss0 + 8192)) ]
stop_epoll
check "server exited 0 on SIGTERM (status $rc)" [ "$rc" = 0 ]
accepted=$(sed -n 's/^stats: accepted=\([0-9]*\) .*/\1/p' "$LOG")
finals=$(grep -cE '^(closed: |rejected at |handshake failed: |connection ended: |timeout: )' "$LOG")
check "one final log line per accepted connection ($finals lines, $accepted accepted)" \
  [ -n "$accepted" -a "$finals" = "$accepted" ]
unexpected=$(grep -iE 'panic|internal|^accept: ' "$LOG" | head -5)
check "no unexpected error in the server log" [ -z "$unexpected" ]
[ -z "$unexpected" ] || echo "$unexpected" | sed 's/^/    /'
grep "^stats:" "$LOG"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
