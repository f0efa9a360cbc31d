#!/bin/sh
# Runs inside the test VM (tls.ko loaded), from tests/vm/nginx.sh: Debian's
# nginx with the rktls module serves a file from two servers, one with
# `rktls_ktls require; sendfile on;` and one with `rktls_ktls off`. The
# client (the rktls example, kTLS off, so every kernel TLS socket counted is
# nginx's) checks the bytes; /proc/net/tls_stat must count nginx's offloaded
# sockets for the first server only, the access log must say ktls=tx+rx, and
# the nginx worker's user CPU for the kernel-TLS transfer must be at most a
# third of the userspace one's, lowest of three transfers each (the kernel
# encrypts, sendfile copies nothing). Then a TLS 1.3 KeyUpdate from openssl
# s_client: followed on a kernel that can rekey, refused with an alert on
# 6.12. Ends with "N passed, M failed".
ROOT=${ROOT:-$(pwd)}
C=$ROOT/build/certs
MODULE=$ROOT/build/nginx/ngx_http_rktls_module.so
W=/tmp/ng
mkdir -p $W/www $W/tmp
pass=0
fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
check() { n=$1; shift; if "$@"; then ok "$n"; else bad "$n"; fi; }
stat_of() { awk -v k="$1" '$1 == k { print $2 }' /proc/net/tls_stat; }
utime() { awk '{ print $14 }' /proc/$wpid/stat; }   # clock ticks in user mode

# nginx resolves its user's name; the initramfs has no passwd file.
mkdir -p /etc
grep -q '^root:' /etc/passwd 2>/dev/null || echo 'root:x:0:0:root:/root:/bin/sh' >> /etc/passwd
grep -q '^root:' /etc/group 2>/dev/null || echo 'root:x:0:' >> /etc/group
grep -q '^nogroup:' /etc/group 2>/dev/null || echo 'nogroup:x:65534:' >> /etc/group

dd if=/dev/urandom of=$W/www/big bs=1024 count=8192 2>/dev/null
want=$(sha256sum $W/www/big | cut -d' ' -f1)
P1=8443 P2=8444    # inside the throwaway VM: nothing else listens
cat > $W/nginx.conf <<CONF
load_module $MODULE;
user root;
worker_processes 1;
pid $W/nginx.pid;
error_log $W/error.log info;
events { worker_connections 64; }
http {
    client_body_temp_path $W/tmp/body;
    proxy_temp_path $W/tmp/proxy;
    fastcgi_temp_path $W/tmp/fastcgi;
    uwsgi_temp_path $W/tmp/uwsgi;
    scgi_temp_path $W/tmp/scgi;
    log_format k '\$server_port \$status \$rktls_protocol ktls=\$rktls_ktls';
    access_log $W/access.log k;
    sendfile on;
    rktls_certificate $C/server.pem;
    rktls_certificate_key $C/server.key;
    server { listen 127.0.0.1:$P1; server_name localhost; rktls on; rktls_ktls require; root $W/www; }
    server { listen 127.0.0.1:$P2; server_name localhost; rktls on; rktls_ktls off; root $W/www; }
}
CONF
/usr/sbin/nginx -p $W -e $W/error.log -c $W/nginx.conf -g 'daemon off;' > $W/stdout 2>&1 &
npid=$!
i=0
wpid=""
while [ -z "$wpid" ] && [ $i -lt 300 ]; do
  wpid=$(sed -n 's/.*start worker process \([0-9]*\).*/\1/p' $W/error.log 2>/dev/null | tail -1)
  i=$((i + 1)); sleep 0.1
done
if [ -z "$wpid" ]; then
  bad "nginx started"; cat $W/error.log $W/stdout; echo "$pass passed, $fail failed"; exit 1
fi
uname -r

fetch() { # PORT VERSION-FLAG [FILE] -> sets got (sha), du (worker utime ticks), dtx (TlsTxSw delta)
  tx0=$(stat_of TlsTxSw); u0=$(utime)
  $ROOT/build/examples/client --port $1 $2 --ca $C/ca.pem --get /${3:-big} --out $W/got > $W/client.log 2>&1
  crc=$?
  u1=$(utime); tx1=$(stat_of TlsTxSw)
  got=$(sha256sum $W/got 2>/dev/null | cut -d' ' -f1)
  du=$((u1 - u0)); dtx=$((tx1 - tx0))
  rm -f $W/got
}
echo small > $W/www/small
for v in --tls12 --tls13; do
  # Warm-up: rktls probes the kernel once per version and cipher, with a
  # handshake on a loopback connection inside the worker: not per transfer.
  $ROOT/build/examples/client --port $P1 $v --ca $C/ca.pem --get /small --out $W/small.got > /dev/null 2>&1
  fetch $P1 $v small; echo "     (ktls $v: a connection for 6 bytes: $du ticks)"
  fetch $P1 $v
  check "ktls require $v: 8 MB byte-exact (client exit $crc)" [ "$crc" = 0 -a "$got" = "$want" ]
  check "ktls require $v: tls_stat counts nginx's offloaded socket (TlsTxSw +$dtx)" [ "$dtx" = 1 ]
  ku=$du
  # the lowest of three: tick accounting under TCG is noisy
  for r in 2 3; do fetch $P1 $v; [ "$du" -lt "$ku" ] && ku=$du; done
  fetch $P2 $v small; echo "     (userspace $v: a connection for 6 bytes: $du ticks)"
  fetch $P2 $v
  check "ktls off $v: 8 MB byte-exact (client exit $crc)" [ "$crc" = 0 -a "$got" = "$want" ]
  check "ktls off $v: no kernel TLS socket (TlsTxSw +$dtx)" [ "$dtx" = 0 ]
  uu=$du
  for r in 2 3; do fetch $P2 $v; [ "$du" -lt "$uu" ] && uu=$du; done
  check "worker user CPU for 8 MB $v: kernel TLS $ku ticks, userspace $uu ticks (kTLS <= 1/3)" \
    [ "$uu" -ge 10 -a $((ku * 3)) -le "$uu" ]
done
sleep 0.3
grep -q "^$P1 200 TLSv1.2 ktls=tx+rx" $W/access.log && grep -q "^$P1 200 TLSv1.3 ktls=tx+rx" $W/access.log
check "access log: \$rktls_ktls is tx+rx on the kTLS server (TLS 1.2 and 1.3)" [ $? = 0 ]
check "access log: \$rktls_ktls is off on the other" grep -q "^$P2 200 TLSv1.3 ktls=off" $W/access.log
cat $W/access.log
grep TlsTxSw /proc/net/tls_stat; grep TlsRxSw /proc/net/tls_stat
# A TLS 1.3 KeyUpdate from openssl s_client (its "K" command: update and ask
# for ours) on the kTLS server, between two requests on one connection. A
# kernel that can rekey (>= 6.14) installs the new keys and the second
# request is answered; 6.12 cannot: nginx's read ends with
# RKTLS_ERR_KTLS_NO_REKEY, after answering the first, and the client is told
# with an alert. (s_client reads commands from a pipe, so the steps are paced.)
kmaj=$(uname -r | cut -d. -f1) kmin=$(uname -r | cut -d. -f2)
rk0=$(stat_of TlsRxRekeyOk) tk0=$(stat_of TlsTxRekeyOk)
req='GET /small HTTP/1.1\r\nHost: localhost\r\n\r\n'
( printf "$req"; sleep 2; echo K; sleep 2; printf "$req"; sleep 3 ) |
  timeout 30 openssl s_client -connect 127.0.0.1:$P1 -servername localhost -tls1_3 \
    -CAfile $C/ca.pem > $W/ku.out 2>&1
n200=$(grep -c '^HTTP/1.1 200' $W/ku.out)
grep -q KEYUPDATE $W/ku.out
check "s_client sent its KeyUpdate" [ $? = 0 ]
if [ "$kmaj" -gt 6 ] || { [ "$kmaj" = 6 ] && [ "$kmin" -ge 14 ]; }; then
  rk1=$(stat_of TlsRxRekeyOk) tk1=$(stat_of TlsTxRekeyOk)
  check "rekey kernel: both requests answered across the KeyUpdate ($n200 responses)" [ "$n200" = 2 ]
  check "rekey kernel: the kernel installed new RX keys (TlsRxRekeyOk $rk0 -> $rk1)" [ "${rk1:-0}" -gt "${rk0:-0}" ]
  check "rekey kernel: and new TX keys after our KeyUpdate (TlsTxRekeyOk $tk0 -> $tk1)" [ "${tk1:-0}" -gt "${tk0:-0}" ]
else
  check "6.12: the first request answered, none after the KeyUpdate ($n200 responses)" [ "$n200" = 1 ]
  check "6.12: nginx logged the KeyUpdate it cannot follow" grep -q 'new keys\|rekey\|KTLS_NO_REKEY\|cannot install' $W/error.log
fi
tail -5 $W/ku.out
grep -i 'rktls' $W/error.log | tail -3

kill -QUIT $npid
i=0
while kill -0 $npid 2>/dev/null && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.1; done
check "nginx exited on QUIT" [ "$i" -lt 100 ]
if grep -E '\[(alert|crit|emerg)\]' $W/error.log; then bad "no alert/crit in nginx's error log"; else ok "no alert/crit in nginx's error log"; fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
