#!/bin/sh
# Runs inside the test VM (tests/vm/run.sh; Debian's Linux 6.12 with tls.ko),
# started by bench/bench.py, which puts "REPS= MIB= WARM= N= NGX= NGXPORT=" in
# front of this. Prints one "BENCHVM ..." line per measurement:
#   BENCHVM bulk sys=S rep=R bytes=B utime=U stime=T txsw=K   (ticks of the server)
#   BENCHVM hold sys=S per_conn=B offloaded=K
# Systems: rktls-ktls (server_epoll --ktls require: TX+RX in the kernel,
# body by sendfile), rktls-user (--ktls off), openssl (s_server -WWW);
# nginx-rktls-ktls (`rktls_ktls require; sendfile on;`) and nginx-openssl
# (`listen ... ssl`, userspace): Debian's nginx as one process (daemon off,
# master_process off), with the configs bench.py wrote under $NGX/SYS/
# (bench/nginx_conf.sh); nginx-openssl-ktls is nginx-openssl plus
# `ssl_conf_command Options KTLS;` (txsw says whether OpenSSL engaged it).
ROOT=${ROOT:-$(pwd)}
BIN=$ROOT/build/examples
BB=$ROOT/build/bench
C=$ROOT/build/certs
W=/tmp/benchwww
mkdir -p $W
grep -q localhost /etc/hosts 2>/dev/null || echo "127.0.0.1 localhost" >> /etc/hosts
ulimit -n 8192
# nginx resolves its default user's name (it stays root: no master, no
# workers); the initramfs has no passwd file.
mkdir -p /etc
grep -q '^nobody:' /etc/passwd 2>/dev/null || echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> /etc/passwd
grep -q '^nogroup:' /etc/group 2>/dev/null || echo 'nogroup:x:65534:' >> /etc/group
dd if=/dev/urandom of=$W/big bs=1048576 count=$MIB 2>/dev/null
printf '%0100d' 0 > $W/small
BYTES=$((MIB * 1048576))
status=0

ticks() { # pid -> "utime stime"
  cut -d' ' -f14,15 /proc/$1/stat
}
txsw() {
  awk '$1 == "TlsTxSw" { print $2 }' /proc/net/tls_stat
}

# start SYS: sets spid and port
start() {
  rm -f /tmp/srv.log
  case $1 in
    rktls-ktls) taskset -c 0 $BIN/server_epoll --cert $C/server.pem --key $C/server.key --root $W \
                  --ktls require --quiet > /tmp/srv.log 2>&1 & ;;
    rktls-user) taskset -c 0 $BIN/server_epoll --cert $C/server.pem --key $C/server.key --root $W \
                  --ktls off --quiet > /tmp/srv.log 2>&1 & ;;
    openssl) (cd $W && exec taskset -c 0 openssl s_server -accept 127.0.0.1:0 -cert $C/server.pem \
                  -key $C/server.key -WWW > /tmp/srv.log 2>&1) & ;;
    nginx-*) taskset -c 0 /usr/sbin/nginx -p $NGX/$1/nginx -e $NGX/$1/nginx/error.log \
                  -c $NGX/$1/nginx.conf -g 'daemon off; master_process off;' > /tmp/srv.log 2>&1 & ;;
  esac
  spid=$!
  port=""
  i=0
  hex=$(printf ':%04X 00000000:0000 0A' $NGXPORT)
  while [ -z "$port" ] && [ $i -lt 600 ]; do
    case $1 in
      nginx-*) grep -q "$hex" /proc/net/tcp && port=$NGXPORT ;;
      *) port=$(sed -n -e 's/^READY port=//p' -e 's/^ACCEPT .*:\([0-9]*\)$/\1/p' /tmp/srv.log) ;;
    esac
    i=$((i + 1))
    sleep 0.1
  done
  [ -n "$port" ] || { echo "server $1 did not start"; cat /tmp/srv.log $NGX/$1/nginx/error.log 2>/dev/null; status=1; }
}

stop() {
  kill $spid 2>/dev/null
  wait $spid 2>/dev/null
}

# s_server runs without -quiet for its "ACCEPT host:port" ready line (its
# only other output is one "FILE:big" line per download).
rep=1
while [ $rep -le $REPS ]; do
  for s in rktls-ktls rktls-user openssl nginx-rktls-ktls nginx-openssl nginx-openssl-ktls; do
    start $s
    pid=$spid # the subshell exec'd taskset, which exec'd the server
    k0=$(txsw)
    # One connection with a 100-byte body first: its CPU (mostly the handshake,
    # slow under emulation) is taken off the download's, which also has one.
    set -- $(ticks $pid)
    u0=$1 s0=$2
    taskset -c 1 $BB/loadclient full $port 1 --path /small > /tmp/cl.log 2>&1 || status=1
    set -- $(ticks $pid)
    hu=$(($1 - u0)) hs=$(($2 - s0)) u0=$1 s0=$2
    if taskset -c 1 $BB/loadclient bulk $port 1 --path /big --expect $BYTES --suite TLS_AES_128_GCM_SHA256 > /tmp/cl.log 2>&1; then
      set -- $(ticks $pid)
      echo "BENCHVM bulk sys=$s rep=$rep bytes=$BYTES utime=$(($1 - u0 - hu)) stime=$(($2 - s0 - hs)) hs_utime=$hu hs_stime=$hs txsw=$(($(txsw) - k0))"
    else
      echo "bulk $s failed:"; cat /tmp/cl.log /tmp/srv.log; status=1
    fi
    stop
  done
  rep=$((rep + 1))
done

for s in rktls-user rktls-ktls; do
  flag=""
  [ $s = rktls-ktls ] && flag=--ktls
  rm -f /tmp/hold.log
  taskset -c 0 $BB/hold-rktls $C/server.pem $C/server.key $WARM $N $flag > /tmp/hold.log 2>&1 &
  hpid=$!
  port=""
  i=0
  while [ -z "$port" ] && [ $i -lt 300 ]; do
    port=$(sed -n 's/^READY port=//p' /tmp/hold.log)
    i=$((i + 1))
    sleep 0.1
  done
  mkfifo /tmp/hold.in 2>/dev/null
  taskset -c 1 $BB/loadclient hold $port $((WARM + N)) < /tmp/hold.in > /tmp/holdc.log 2>&1 &
  cpid=$!
  exec 3> /tmp/hold.in
  wait $hpid
  line=$(sed -n 's/^hold //p' /tmp/hold.log)
  exec 3>&-
  wait $cpid
  if [ -n "$line" ]; then
    echo "BENCHVM hold sys=$s $line"
  else
    echo "hold $s failed:"; cat /tmp/hold.log /tmp/holdc.log; status=1
  fi
done
# The heap figure scripts/bench.sh made before (tests/vm/mem_probe.c, 64 connections).
$BB/mem_probe $C | sed 's/^/BENCHVM heap /'
exit $status
