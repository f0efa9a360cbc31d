#!/bin/sh
# Runs inside the test VM at the end of tests/vm/ktls_guest.sh when the VM
# has a network device (tests/vm/ktls.sh boots it through tests/vm/serve.sh):
# offloaded rktls servers (tests/vm/rekey_peer.c) for the host's openssl
# s_client and gnutls-cli, and an offloaded rktls client for the host's
# openssl s_server (reached as 10.0.2.100:4444). tests/vm/hostpeers.sh on the
# host drives the peers and checks what each end saw; the servers print
# "conn N end=..." lines with the /proc/net/tls_stat deltas, prefixed with
# their port. Each server exits after its connections (300 s at most).
RP=$ROOT/build/vm/rekey_peer
run() { # TAG ARGS...
  tag=$1
  shift
  timeout 300 $RP "$@" 2>&1 | while IFS= read -r l; do echo "[$tag] $l"; done
}
run 4433 server $C 4433 --conns 3 &      # s_client k/K; REFRESH from s_client and gnutls-cli
a=$!
run 4434 server $C 4434 --conns 1 --key-limit 8 &
b=$!
run 4435 server $C 4435 --conns 1 --dirs needs &
c=$!
run 4436 server $C 4436 --conns 1 --event &
d=$!
wait $a $b $c $d
# The client last, alone, so its tls_stat deltas are its own.
run client client $C 10.0.2.100 4444
echo "[peers] done"
cat /proc/net/tls_stat | sed 's/^/[tls_stat] /'
