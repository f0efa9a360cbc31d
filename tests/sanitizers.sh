#!/usr/bin/env bash
# The C examples built with -fsanitize=address,undefined (`make
# examples-san`, build/examples-san) run end to end: file fetches and echo
# over TLS 1.2 and 1.3 through both servers, plus the regressions the
# examples once had:
# - client: a request longer than its buffer (snprintf's untruncated length
#   was passed to write: a stack over-read sent to the server);
# - server_blocking: idle clients pinned a thread each, forever (now at most
#   --max-threads at once and a --timeout on every socket).
# Every sanitized process must exit without a sanitizer report (LeakSanitizer
# included).
#
#   tests/sanitizers.sh     env: SAN (default build/examples-san), CERTS
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${SAN:-build/examples-san}
. tests/lib.sh
setup san || exit 1
use_examples server_epoll server_blocking client
. tests/epoll_lib.sh
export ASAN_OPTIONS=detect_leaks=1:exitcode=66 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# clean LOG...: no sanitizer report in any of the logs.
clean() { ! grep -lE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$@"; }
CLIENT=("$BIN/client" --ca "$CERTS/ca.pem" --sni localhost)

mkdir -p "$T/www"
head -c 1000003 /dev/urandom > "$T/www/file.bin"

# server_epoll + client: fetch over both versions.
start_epoll "$T/epoll.log" --root "$T/www" || exit 1
for v in 12 13; do
  "${CLIENT[@]}" --port "$port" --tls$v --get /file.bin --out "$T/got$v" > "$T/client$v.log" 2>&1
  check "epoll TLS 1.${v#1}: sanitized client fetches byte-exact" \
    cmp -s "$T/got$v" "$T/www/file.bin"
done
check "client request longer than its buffer: refused, no over-read" \
  bash -c '! "$@" > "$0" 2>&1 && grep -q "request too long" "$0"' "$T/long.log" \
  "${CLIENT[@]}" --port "$port" --get "/$(head -c 3000 /dev/zero | tr '\0' a)"
stop_epoll
check "server_epoll exits 0 on SIGTERM" [ "$rc" = 0 ]
check "no sanitizer report (server_epoll, clients)" clean "$T"/epoll.log "$T"/client*.log "$T/long.log"

# server_blocking with 2 threads and a 1 s timeout: two idle clients take
# both threads; the real client must still be served once they time out.
LOG=$T/blocking.log
start_server "$LOG" "$BIN/server_blocking" --cert "$CERTS/server.pem" --key "$CERTS/server.key" \
  --port 0 --root "$T/www" --max-threads 2 --timeout 1 --max-conns 3 || exit 1
bpid=$spid bport=$port
exec 7<>"/dev/tcp/127.0.0.1/$bport" 8<>"/dev/tcp/127.0.0.1/$bport"
"${CLIENT[@]}" --port "$bport" --get /file.bin --out "$T/gotb" > "$T/clientb.log" 2>&1
check "blocking: served after two idle clients held every thread" cmp -s "$T/gotb" "$T/www/file.bin"
check "blocking: both idle clients were dropped by the timeout" \
  [ "$(grep -c '^rejected at accept: would block' "$LOG")" = 2 ]
exec 7>&- 8>&-
brc=0; wait "$bpid" || brc=$?
check "server_blocking exits 0 after --max-conns" [ "$brc" = 0 ]
check "no sanitizer report (server_blocking, clients)" clean "$LOG" "$T/clientb.log"

summary
