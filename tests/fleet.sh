#!/usr/bin/env bash
# Resumption across worker processes and machines (examples-c/server_epoll):
# shared ticket-key files (--workers, separate processes, rotation), forged
# tickets, and a Redis-backed session cache shared by two processes,
# including a Redis that is slow or down.
#
#   tests/fleet.sh       env: BIN (default build/examples), CERTS (default: fresh certs)
#
# Prints "ok   NAME" / "FAIL NAME" per check, then "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/examples}
. tests/lib.sh
scratch fleet
test_certs || exit 1
. tests/epoll_lib.sh
for t in openssl python3 redis-server; do command -v $t >/dev/null || { echo "missing $t"; exit 2; }; done
for b in server_epoll server_epoll_redis client; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run make examples (with libhiredis-dev)"; exit 2; }
done
mkdir -p "$T/www"; echo "hello fleet" > "$T/www/hello.txt"

# The operator's way to make keys (README): 80- and 48-byte nginx key files.
openssl rand 80 > "$T/k1.key"
openssl rand 80 > "$T/k2.key"
openssl rand 48 > "$T/k48.key"

# sclient PORT VERSION(1_2|1_3) OUT [ARGS...]: one request with openssl
# s_client; its output in OUT.
sclient() {
  local p=$1 v=$2 out=$3; shift 3
  printf 'GET /hello.txt HTTP/1.0\r\n\r\n' |
    timeout 20 openssl s_client -connect 127.0.0.1:$p -servername localhost \
      -CAfile "$CERTS/ca.pem" -tls$v -ign_eof "$@" > "$out" 2>&1
}
served() { grep -q "hello fleet" "$1"; }
export -f served
# last_hs LOG: the server's last handshake line.
last_hs() { grep '^handshake ok' "$1" | tail -1; }

# ---- one listener, two workers, one key file -------------------------------
start_epoll "$T/w.log" --root "$T/www" --workers 2 --ticket-key "$T/k1.key" || exit 1
wport=$port wspid=$spid
for v in 1_2 1_3; do
  n0=$(grep -c '^handshake ok' "$T/w.log")
  sclient $wport $v "$T/w1-$v.out" -sess_out "$T/w-$v.sess"
  wait_log "$T/w.log" '^handshake ok' $((n0 + 1))
  a=$(last_hs "$T/w.log" | sed -n 's/.* worker=\([0-9]*\)$/\1/p')
  check "workers TLS$v: first handshake full, served by a worker [$a]" \
    bash -c "[ -n '$a' ] && grep -q '^New,' '$T/w1-$v.out' && grep -q 'hello fleet' '$T/w1-$v.out'"
  # Stop worker A: the next connection can only be accepted by worker B.
  kill -STOP "$a"
  sclient $wport $v "$T/w2-$v.out" -sess_in "$T/w-$v.sess"
  wait_log "$T/w.log" '^handshake ok' $((n0 + 2))
  kill -CONT "$a"
  hs=$(last_hs "$T/w.log")
  check "workers TLS$v: worker B resumed worker A's ticket (s_client: Reused) [$hs]" \
    bash -c "grep -q '^Reused,' '$T/w2-$v.out' && served '$T/w2-$v.out'"
  check "workers TLS$v: server says resumed=yes on a worker other than $a" \
    bash -c "[[ '$hs' == *resumed=yes* ]] && [[ '$hs' != *worker=$a ]] && [[ '$hs' == *worker=* ]]"
done

# ---- two separate processes sharing key files --------------------------------
start_epoll "$T/a.log" --root "$T/www" --ticket-key "$T/k1.key" --ticket-key "$T/k48.key" || exit 1
aport=$port
start_epoll "$T/b.log" --root "$T/www" --ticket-key "$T/k1.key" --ticket-key "$T/k48.key" || exit 1
bport=$port
for v in 1.2 1.3; do
  "$BIN/client" --port $aport --resume-port $bport --ca "$CERTS/ca.pem" --tls${v/./} \
    --get /hello.txt --out "$T/c-$v.out" --count 2 > "$T/client-$v.log" 2>&1
  check "processes TLS$v: rktls client's 2nd connection, to process B, resumed A's session" \
    bash -c "grep -q 'conn 1: .* resumed=no' '$T/client-$v.log' && grep -q 'conn 2: .* resumed=yes' '$T/client-$v.log'"
  check "processes TLS$v: process B logged a resumed handshake" \
    bash -c "grep -q '^handshake ok: TLSv$v .*resumed=yes' '$T/b.log'"
done
for v in 1_2 1_3; do
  sclient $aport $v "$T/p1-$v.out" -sess_out "$T/p-$v.sess"
  sclient $bport $v "$T/p2-$v.out" -sess_in "$T/p-$v.sess"
  check "processes TLS$v: s_client resumes on B with A's ticket (Reused)" \
    bash -c "grep -q '^New,' '$T/p1-$v.out' && grep -q '^Reused,' '$T/p2-$v.out' && served '$T/p2-$v.out'"
done

# ---- rotation: new key first, old key still listed, then removed --------------
start_epoll "$T/r1.log" --root "$T/www" --ticket-key "$T/k2.key" --ticket-key "$T/k1.key" || exit 1
rot_both=$port
start_epoll "$T/r2.log" --root "$T/www" --ticket-key "$T/k2.key" || exit 1
rot_new=$port
for v in 1_2 1_3; do
  # p-$v.sess holds a ticket under k1 (from process A).
  sclient $rot_both $v "$T/r1-$v.out" -sess_in "$T/p-$v.sess"
  check "rotation TLS$v: old-key ticket resumes while the old key is listed" \
    bash -c "grep -q '^Reused,' '$T/r1-$v.out' && served '$T/r1-$v.out'"
  sclient $rot_both $v "$T/r0-$v.out" -sess_out "$T/r-$v.sess" # sealed under k2
  sclient $rot_new $v "$T/r2-$v.out" -sess_in "$T/p-$v.sess"
  check "rotation TLS$v: old-key ticket after removal: full handshake, request served, no error" \
    bash -c "grep -q '^New,' '$T/r2-$v.out' && served '$T/r2-$v.out'"
  n=$(grep -c '^handshake ok' "$T/r2.log")
  sclient $rot_new $v "$T/r3-$v.out" -sess_in "$T/r-$v.sess"
  check "rotation TLS$v: a ticket sealed after rotation (new key) resumes where only the new key is" \
    bash -c "grep -q '^Reused,' '$T/r3-$v.out' && served '$T/r3-$v.out'"
done
check "rotation: the server without the old key logged no failure" \
  bash -c "! grep -Eq '^(handshake failed|rejected|connection ended)' '$T/r2.log'"

# ---- forged tickets -----------------------------------------------------------
name=$(head -c 16 "$T/k1.key" | od -An -tx1 | tr -d ' \n')
# A real ticket with one ciphertext byte flipped, offered by s_client.
amark=$(wc -l < "$T/a.log")
for v in 1_2 1_3; do
  python3 - "$T/p-$v.sess" "$T/f-$v.sess" "$name" <<'PY'
import base64, sys
src, dst, name = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
pem = open(src).read().split("-----")
der = bytearray(base64.b64decode(pem[2]))
i = der.find(name)
assert i >= 0, "ticket with our key name not found"
der[i + 40] ^= 0x55
pem[2] = "\n" + base64.encodebytes(bytes(der)).decode()
open(dst, "w").write("-----".join(pem))
PY
  sclient $aport $v "$T/f-$v.out" -sess_in "$T/f-$v.sess"
  check "forged TLS$v: a tampered ticket gets a full handshake and the request is served" \
    bash -c "grep -q '^New,' '$T/f-$v.out' && served '$T/f-$v.out'"
done
check "forged: s_client's tampered tickets caused no failure on the server" \
  bash -c "! tail -n +$((amark + 1)) '$T/a.log' | grep -Eq '^(handshake failed|rejected|connection ended)'"

python3 tests/fleet_raw.py $aport "$name" > "$T/raw.out" 2>&1
check "forged: garbage TLS 1.2 tickets from a raw client get full handshakes [$(grep -c full-handshake "$T/raw.out")/5]" \
  bash -c "[ \$(grep -c '^full-handshake' '$T/raw.out') = 5 ]"

# ---- Redis-backed session cache shared by two processes -----------------------
sock=$T/redis.sock
redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --save '' --appendonly no \
  --dir "$T" > "$T/redis.log" 2>&1 &
rpid=$!; pids+=("$rpid")
wait_for "$T/redis.log" 'ready to accept connections' "$rpid" || { echo "redis did not start"; cat "$T/redis.log"; exit 1; }
EPOLL=server_epoll_redis start_epoll "$T/x.log" --root "$T/www" --redis "$sock" || exit 1
xport=$port
EPOLL=server_epoll_redis start_epoll "$T/y.log" --root "$T/www" --redis "$sock" || exit 1
yport=$port
sclient $xport 1_2 "$T/x1.out" -sess_out "$T/x.sess"
sclient $yport 1_2 "$T/y1.out" -sess_in "$T/x.sess"
check "redis TLS1.2: session id from process X resumed on process Y (s_client: Reused)" \
  bash -c "grep -q '^New,' '$T/x1.out' && grep -q '^Reused,' '$T/y1.out' && served '$T/y1.out'"
check "redis TLS1.2: process Y logged resumed=yes" grep -q '^handshake ok: TLSv1.2 .*resumed=yes' "$T/y.log"
for v in 1.2 1.3; do
  "$BIN/client" --port $xport --resume-port $yport --ca "$CERTS/ca.pem" --tls${v/./} \
    --get /hello.txt --out "$T/rc-$v.out" --count 2 > "$T/rclient-$v.log" 2>&1
  check "redis TLS$v: rktls client resumes on Y with X's session" \
    bash -c "grep -q 'conn 1: .* resumed=no' '$T/rclient-$v.log' && grep -q 'conn 2: .* resumed=yes' '$T/rclient-$v.log'"
done
# Slow Redis (stopped): full handshakes within the 100 ms timeout, a log line.
sclient $xport 1_2 "$T/x2.out" -sess_out "$T/x2.sess"
kill -STOP "$rpid"
t0=$(date +%s%N)
sclient $yport 1_2 "$T/slow.out" -sess_in "$T/x2.sess"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
kill -CONT "$rpid"
check "redis slow: full handshake, request served (${ms} ms)" \
  bash -c "grep -q '^New,' '$T/slow.out' && served '$T/slow.out'"
check "redis slow: the server logged the cache failure" grep -q '^session-cache: redis .* failed' "$T/y.log"
# Redis down: full handshakes and a log line, no failed handshake.
kill "$rpid"; wait "$rpid" 2>/dev/null
sleep 1.1 # past the example's one-second reconnect back-off
n=$(grep -c '^session-cache: redis' "$T/x.log")
sclient $xport 1_2 "$T/down.out" -sess_in "$T/x2.sess"
check "redis down: full handshake, request served" \
  bash -c "grep -q '^New,' '$T/down.out' && served '$T/down.out'"
check "redis down: the server logged the cache failure" \
  bash -c "[ \$(grep -c '^session-cache: redis' '$T/x.log') -gt $n ]"
check "redis: no handshake failed on either process" \
  bash -c "! grep -Eq '^(handshake failed|rejected)' '$T/x.log' '$T/y.log'"

for s in "${pids[@]}"; do kill -TERM "$s" 2>/dev/null; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
