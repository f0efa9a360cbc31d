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
  check "workers TLS${v/_/.}: first handshake full, served by a worker [$a]" \
    bash -c "[ -n '$a' ] && grep -q '^New,' '$T/w1-$v.out' && grep -q 'hello fleet' '$T/w1-$v.out'"
  # Stop worker A: the next connection can only be accepted by worker B.
  kill -STOP "$a"
  sclient $wport $v "$T/w2-$v.out" -sess_in "$T/w-$v.sess"
  wait_log "$T/w.log" '^handshake ok' $((n0 + 2))
  kill -CONT "$a"
  hs=$(last_hs "$T/w.log")
  check "workers TLS${v/_/.}: worker B resumed worker A's ticket (s_client: Reused) [$hs]" \
    bash -c "grep -q '^Reused,' '$T/w2-$v.out' && served '$T/w2-$v.out'"
  check "workers TLS${v/_/.}: server says resumed=yes on a worker other than $a" \
    bash -c "[[ '$hs' == *resumed=yes* ]] && [[ '$hs' != *worker=$a ]] && [[ '$hs' == *worker=* ]]"
done

for v in 1.2 1.3; do
  n0=$(grep -c '^handshake ok' "$T/w.log") c0=$(grep -c '^closed: ' "$T/w.log")
  rm -f "$T/go"
  "$BIN/client" --port $wport --ca "$CERTS/ca.pem" --tls${v/./} --get /hello.txt \
    --out "$T/wc-$v.out" --count 2 --resume-after "$T/go" > "$T/wclient-$v.log" 2>&1 &
  cpid=$!
  # Stop worker A only once it has finished the first connection.
  wait_log "$T/w.log" '^closed: ' $((c0 + 1))
  a=$(last_hs "$T/w.log" | sed -n 's/.* worker=\([0-9]*\)$/\1/p')
  kill -STOP "$a"; touch "$T/go"
  wait "$cpid"; crc=$?
  wait_log "$T/w.log" '^handshake ok' $((n0 + 2))
  kill -CONT "$a"
  hs=$(last_hs "$T/w.log")
  check "workers TLS${v/_/.}: rktls client's 2nd connection resumed on worker B [$hs]" \
    bash -c "[ $crc = 0 ] && grep -q 'conn 2: .* resumed=yes' '$T/wclient-$v.log' && [[ '$hs' == *resumed=yes* ]] && [[ '$hs' != *worker=$a ]]"
done

# ---- two separate processes sharing key files --------------------------------
start_epoll "$T/a.log" --root "$T/www" --ticket-key "$T/k1.key" --ticket-key "$T/k48.key" || exit 1
aport=$port
start_epoll "$T/b.log" --root "$T/www" --ticket-key "$T/k1.key" --ticket-key "$T/k48.key" || exit 1
bport=$port
for v in 1.2 1.3; do
  "$BIN/client" --port $aport --resume-port $bport --ca "$CERTS/ca.pem" --tls${v/./} \
    --get /hello.txt --out "$T/c-$v.out" --count 2 > "$T/client-$v.log" 2>&1
  check "processes TLS${v/_/.}: rktls client's 2nd connection, to process B, resumed A's session" \
    bash -c "grep -q 'conn 1: .* resumed=no' '$T/client-$v.log' && grep -q 'conn 2: .* resumed=yes' '$T/client-$v.log'"
  check "processes TLS${v/_/.}: process B logged a resumed handshake" \
    bash -c "grep -q '^handshake ok: TLSv$v .*resumed=yes' '$T/b.log'"
done
for v in 1_2 1_3; do
  sclient $aport $v "$T/p1-$v.out" -sess_out "$T/p-$v.sess"
  sclient $bport $v "$T/p2-$v.out" -sess_in "$T/p-$v.sess"
  check "processes TLS${v/_/.}: s_client resumes on B with A's ticket (Reused)" \
    bash -c "grep -q '^New,' '$T/p1-$v.out' && grep -q '^Reused,' '$T/p2-$v.out' && served '$T/p2-$v.out'"
done

# ---- live rotation: workers reread their key files on SIGHUP -----------------
# The operator's practice (README): a new key becomes current, the current
# one stays listed as previous for one ticket lifetime, then goes.
openssl rand 80 > "$T/k0.key"
openssl rand 80 > "$T/k3.key"
cp "$T/k1.key" "$T/current.key"; cp "$T/k0.key" "$T/previous.key"
start_epoll "$T/rot.log" --root "$T/www" --workers 2 \
  --ticket-key "$T/current.key" --ticket-key "$T/previous.key" || exit 1
rport=$port rpid=$spid
# rotate NEW: previous := current, current := NEW; SIGHUP; wait for both workers.
reloads=0
rotate() {
  cp "$T/current.key" "$T/previous.key"; cp "$1" "$T/current.key"
  kill -HUP "$rpid"; reloads=$((reloads + 2))
  wait_log "$T/rot.log" '^ticket keys: reloaded 2 worker=' $reloads
}
for v in 1_2 1_3; do sclient $rport $v "$T/t1-$v.out" -sess_out "$T/t1-$v.sess"; done
rotate "$T/k2.key"
check "rotation: both workers reloaded their keys on SIGHUP" \
  [ "$(grep -c '^ticket keys: reloaded 2 worker=' "$T/rot.log")" = 2 ]
for v in 1_2 1_3; do
  sclient $rport $v "$T/t2-$v.out" -sess_in "$T/t1-$v.sess"
  check "rotation TLS${v/_/.}: a ticket under the previous key still resumes" \
    bash -c "grep -q '^New,' '$T/t1-$v.out' && grep -q '^Reused,' '$T/t2-$v.out' && served '$T/t2-$v.out'"
  sclient $rport $v "$T/t3-$v.out" -sess_out "$T/t3-$v.sess" # sealed under k2
done
rotate "$T/k3.key"
rmark=$(wc -l < "$T/rot.log")
for v in 1_2 1_3; do
  sclient $rport $v "$T/t4-$v.out" -sess_in "$T/t1-$v.sess"
  check "rotation TLS${v/_/.}: after its key is removed, the old ticket gets a full handshake, request served" \
    bash -c "grep -q '^New,' '$T/t4-$v.out' && served '$T/t4-$v.out'"
  sclient $rport $v "$T/t5-$v.out" -sess_in "$T/t3-$v.sess"
  check "rotation TLS${v/_/.}: a ticket sealed under the then-current key resumes once it is previous" \
    bash -c "grep -q '^Reused,' '$T/t5-$v.out' && served '$T/t5-$v.out'"
done
check "rotation: no failed handshake after the old key was removed" \
  bash -c "! tail -n +$((rmark + 1)) '$T/rot.log' | grep -Eq '^(handshake failed|rejected|connection ended)'"
# A broken key file: the reload fails, logged, and the keys in use stay.
head -c 50 /dev/urandom > "$T/current.key"
kill -HUP "$rpid"
wait_log "$T/rot.log" '^ticket keys: reload failed: .*48 or 80 bytes' 2
check "rotation: a 50-byte key file is refused on reload, with a log line naming the rule" \
  [ "$(grep -c '^ticket keys: reload failed: .*48 or 80 bytes' "$T/rot.log")" = 2 ]
sclient $rport 1_3 "$T/t6.out" -sess_in "$T/t3-1_3.sess"
check "rotation: after the failed reload the previous keys still resume" \
  bash -c "grep -q '^Reused,' '$T/t6.out' && served '$T/t6.out'"

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
  check "forged TLS${v/_/.}: a tampered ticket gets a full handshake and the request is served" \
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
  check "redis TLS${v/_/.}: rktls client resumes on Y with X's session" \
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
