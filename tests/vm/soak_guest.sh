#!/bin/sh
# Runs inside the test VM (tls.ko loaded), from tests/vm/soak.sh: a short
# soak of server_epoll with `--ktls require` (every connection offloaded)
# and mixed clients inside the guest, for SOAK_SECONDS (build/vm/soak.conf
# from tests/vm/soak.sh): full TLS 1.2 and 1.3 handshakes fetching a file (the rktls
# example client, sha256 checked), resumed ones (--count 3), TLS 1.3
# KeyUpdates both ways on offloaded connections (openssl s_client's k and K
# before its request; on a kernel that can rekey the body must arrive
# intact), and garbage. At the end the server's open fds are back to the
# start, its VmRSS within 8 MB, every good client byte-exact, one final log
# line per accepted connection, every handshake offloaded (ktls=tx+rx), and
# no unexpected error in its log. Ends with "N passed, M failed".
. ./build/vm/soak.conf   # SOAK_SECONDS, written by tests/vm/soak.sh
ROOT=${ROOT:-$(pwd)}
C=$ROOT/build/certs
BIN=$ROOT/build/examples
W=/tmp/soak
mkdir -p $W/www $W/out
pass=0
fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
check() { n=$1; shift; if "$@"; then ok "$n"; else bad "$n"; fi; }
stat_of() { awk -v k="$1" '$1 == k { print $2 }' /proc/net/tls_stat; }

dd if=/dev/urandom of=$W/www/medium bs=1024 count=70 2>/dev/null
for i in $(seq 1 1000); do echo "line $i of the text file"; done > $W/www/text
want=$(sha256sum $W/www/medium | cut -d' ' -f1)
P=8443    # inside the throwaway VM: nothing else listens
$BIN/server_epoll --cert $C/server.pem --key $C/server.key --port $P --root $W/www \
  --ktls require --timeout-ms 30000 --stats > $W/server.log 2>&1 &
spid=$!
i=0
until grep -q '^READY' $W/server.log || [ $i -ge 300 ]; do i=$((i + 1)); sleep 0.1; done
check "server_epoll --ktls require ready" grep -q '^READY' $W/server.log
fds() { ls /proc/$spid/fd | wc -l; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' /proc/$spid/status; }
for i in 1 2 3; do
  timeout 60 $BIN/client --port $P --ca $C/ca.pem --sni localhost --get /medium --out /dev/null > /dev/null 2>&1
done
sleep 0.3
fd0=$(fds) rss0=$(rss_kb)
echo "     start: $fd0 fds, VmRSS $rss0 kB"
rk0=$(stat_of TlsRxRekeyOk) tk0=$(stat_of TlsTxRekeyOk)

# One worker: the kinds in turn until the time is up; counts in $W/out/W.
worker() {
  w=$1 n=0 good=0 bad=0 ku=0
  end=$(($(date +%s) + SOAK_SECONDS))
  while [ "$(date +%s)" -lt $end ]; do
    n=$((n + 1))
    o=$W/out/$w.body
    case $(((n + w) % 5)) in
      0|1)
        v=--tls13; [ $(((n + w) % 5)) = 1 ] && v=--tls12
        rm -f $o
        if timeout 60 $BIN/client --port $P --ca $C/ca.pem --sni localhost $v --get /medium --out $o \
             > $W/out/$w.log 2>&1 && [ "$(sha256sum $o | cut -d' ' -f1)" = "$want" ]; then
          good=$((good + 1))
        else bad=$((bad + 1)); echo "worker $w full $v: $(tail -1 $W/out/$w.log)"; fi ;;
      2)
        rm -f $o
        if timeout 90 $BIN/client --port $P --ca $C/ca.pem --sni localhost --count 3 --get /medium --out $o \
             > $W/out/$w.log 2>&1 && [ "$(sha256sum $o | cut -d' ' -f1)" = "$want" ] &&
           grep -q 'resumed=yes' $W/out/$w.log; then
          good=$((good + 3))
        else bad=$((bad + 1)); echo "worker $w resumed: $(tail -1 $W/out/$w.log)"; fi ;;
      3)
        # s_client acts on one command per read of its stdin: each goes
        # once it has acted on the one before (after the handshake). Its
        # stdin stays open (a fifo) until it ends: the server closes.
        rm -f $W/out/$w.fifo $o $W/out/$w.err; mkfifo $W/out/$w.fifo
        ( upto() { i=0; until eval "$1" || [ $i -ge 300 ]; do i=$((i + 1)); sleep 0.1; done; }
          upto "grep -q '^Verify return code' $o 2>/dev/null"
          for c in k K k; do
            n=$(grep -c KEYUPDATE $W/out/$w.err); echo $c
            upto "[ \$(grep -c KEYUPDATE $W/out/$w.err) -gt $n ]"
          done
          printf 'GET /text HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'; sleep 60 ) \
          > $W/out/$w.fifo &
        feeder=$!
        timeout 60 openssl s_client -connect 127.0.0.1:$P -servername localhost -tls1_3 \
          -CAfile $C/ca.pem < $W/out/$w.fifo > $o 2> $W/out/$w.err
        kill $feeder 2>/dev/null; wait $feeder 2>/dev/null
        if [ "$(grep -c KEYUPDATE $W/out/$w.err)" = 3 ] && grep -q '^line 1000 of the text file' $o &&
           [ "$(grep -c '^line [0-9]* of the text file' $o)" = 1000 ]; then
          good=$((good + 1)) ku=$((ku + 1))
        else bad=$((bad + 1)); echo "worker $w keyupdate: $(tail -2 $W/out/$w.err)"; fi ;;
      4)
        head -c 300 /dev/urandom | timeout 10 nc 127.0.0.1 $P > /dev/null 2>&1 ;;
    esac
  done
  echo "$good $bad $ku $n" > $W/out/$w.count
}
t0=$(date +%s)
for w in 1 2 3 4; do worker $w & done
wait_workers() { for w in 1 2 3 4; do while [ ! -e $W/out/$w.count ]; do sleep 0.5; done; done; }
wait_workers
t1=$(date +%s)
good=$(cat $W/out/*.count | awk '{ s += $1 } END { print s }')
badn=$(cat $W/out/*.count | awk '{ s += $2 } END { print s }')
ku=$(cat $W/out/*.count | awk '{ s += $3 } END { print s }')
total=$(cat $W/out/*.count | awk '{ s += $4 } END { print s }')
echo "     vm soak: $total client runs in $((t1 - t0)) s: $good good connections byte-exact, $ku with KeyUpdates, $badn failed"
check "every good client byte-exact ($badn failed)" [ "$badn" = 0 ]
[ "$badn" = 0 ] || grep -E '^(rejected|handshake failed|timeout|connection ended)' $W/server.log | sort | uniq -c | head
check "KeyUpdate clients ran ($ku)" [ "$ku" -gt 0 ]
rk1=$(stat_of TlsRxRekeyOk) tk1=$(stat_of TlsTxRekeyOk)
check "the kernel installed new RX keys (TlsRxRekeyOk $rk0 -> $rk1, >= 3 per KeyUpdate client)" \
  [ "${rk1:-0}" -ge $((${rk0:-0} + 3 * ku)) ]
check "and new TX keys for the K requests (TlsTxRekeyOk $tk0 -> $tk1)" [ "${tk1:-0}" -ge $((${tk0:-0} + ku)) ]
i=0
until [ "$(fds)" -le "$fd0" ] || [ $i -ge 150 ]; do i=$((i + 1)); sleep 0.1; done
fd1=$(fds) rss1=$(rss_kb)
echo "     end: $fd1 fds, VmRSS $rss1 kB"
check "open fds back to the start ($fd1 vs $fd0)" [ "$fd1" = "$fd0" ]
check "VmRSS $rss1 kB <= start $rss0 kB + 8 MB" [ "$rss1" -le $((rss0 + 8192)) ]
kill -TERM $spid
wait $spid
rc=$?
check "server exited 0 on SIGTERM (status $rc)" [ "$rc" = 0 ]
accepted=$(sed -n 's/^stats: accepted=\([0-9]*\) .*/\1/p' $W/server.log)
finals=$(grep -cE '^(closed: |rejected at |handshake failed: |connection ended: |timeout: )' $W/server.log)
check "one final log line per accepted connection ($finals lines, $accepted accepted)" \
  [ -n "$accepted" -a "$finals" = "$accepted" ]
hs=$(grep -c '^handshake ok:' $W/server.log)
off=$(grep -c '^handshake ok:.* ktls=tx+rx' $W/server.log)
check "every handshake offloaded ($off of $hs ktls=tx+rx)" [ "$hs" -gt 0 -a "$off" = "$hs" ]
unexpected=$(grep -iE 'panic|internal|^accept: ' $W/server.log | head -5)
check "no unexpected error in the server log" [ -z "$unexpected" ]
[ -z "$unexpected" ] || echo "$unexpected"
grep '^stats:' $W/server.log
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
