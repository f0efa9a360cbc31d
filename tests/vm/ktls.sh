#!/usr/bin/env bash
# Real-kernel kTLS tests on two kernels: Debian 12's 6.12 (VM_KERNEL=lts:
# kTLS without TLS 1.3 rekey) and the newest trixie-backports kernel
# (VM_KERNEL=rekey: with rekey). Each kernel gets one boot
# (tests/vm/serve.sh over tests/vm/run.sh) that runs tests/vm/ktls_guest.sh
# with the example programs, the library and the test certificates, then
# serves offloaded rktls servers and a client to this host's openssl and
# GnuTLS tools (tests/vm/hostpeers.sh), which send KeyUpdates mid-stream.
# Every case asserts the behaviour of the kernel it runs on.
#
# Usage: tests/vm/ktls.sh [lts|rekey ...]   (default: lts rekey)
# Needs `make stage examples` and build/certs (scripts/test.sh makes both).
# Writes the kernels booted to build/vm/kernels-tested.txt. Ends with
# "N passed, M failed" over both kernels.
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
. tests/vm/hostpeers.sh
for f in build/examples/server_blocking build/examples/server_epoll build/examples/client build/certs/ca.pem; do
  [ -e "$f" ] || { echo "missing $f: run make stage examples and scripts/gen-certs.sh build/certs"; exit 2; }
done
mkdir -p build/vm
cc_vm() { # NAME SOURCE [EXTRA...]
  local name=$1 src=$2; shift 2
  gcc -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE -pthread -Ibuild/stage/include -o "build/vm/$name" \
    "$src" -Lbuild/stage/lib -lrktls -Wl,-rpath,"$PWD/build/stage/lib" "$@" || exit 2
}
cc_vm mem_probe tests/vm/mem_probe.c
cc_vm first_request tests/vm/first_request.c
cc_vm control tests/vm/control.c
cc_vm rekey_peer tests/vm/rekey_peer.c
# The IIS-like TLS 1.2 server of tests/reneg.sh (OpenSSL's libssl).
gcc -O2 -Wall -Wextra -Werror -o build/vm/iis_peer tests/reneg/iis_peer.c -lssl -lcrypto || exit 2

CERTS=$PWD/build/certs
kernels=("$@"); [ ${#kernels[@]} -gt 0 ] || kernels=(lts rekey)
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
: > build/vm/kernels-tested.txt.new

for VM_KERNEL in "${kernels[@]}"; do
  export VM_KERNEL
  t0=$SECONDS
  echo "=== kTLS VM suite on VM_KERNEL=$VM_KERNEL"
  scratch "ktls-$VM_KERNEL"
  VMLOG=$T/vm.log
  start_s_server
  VM_TIMEOUT=${VM_TIMEOUT:-1500} VM_GUESTFWD="4444:$SSERVER_PORT" \
    tests/vm/serve.sh 4433,4434,4435,4436 tests/vm/ktls_guest.sh \
    "$PWD/build/examples" "$CERTS" "$PWD/build/vm" "$PWD/tests/vm/peers_guest.sh" \
    "$(command -v openssl)" "$(command -v gnutls-cli)" "$(command -v gnutls-serv)" \
    /usr/lib/ssl /etc/ssl/openssl.cnf > "$VMLOG" 2>&1 5>&- &
  vm=$!
  pids+=("$vm")
  if WAIT=1500 wait_for "$VMLOG" '^READY ports=' "$vm"; then
    host_peers "$(sed -n 's/^READY ports=//p' "$VMLOG")"
  else
    bad "$VM_KERNEL: the VM's servers for host peers did not start"
  fi
  exec 5>&-   # s_server's stdin, if its case did not run
  wait "$vm"; rc=$?
  # The guest suite's own verdicts (its last line: "N passed, M failed").
  sed -n '/^vm: running/,$p' "$VMLOG" | grep -av '^\[' | sed "s/^/  [$VM_KERNEL guest] /"
  summary=$(grep -a '^[0-9]* passed, [0-9]* failed$' "$VMLOG" | tail -1)
  gp=${summary%% *}; gf=$(sed 's/.* \([0-9]*\) failed/\1/' <<<"$summary")
  [ -n "$summary" ] || { gp=0; gf=1; bad "$VM_KERNEL: no summary line from the guest suite"; }
  pass=$((pass + gp)); fail=$((fail + gf))
  [ "$rc" = 0 ] || bad "$VM_KERNEL: the guest suite exited $rc"
  uname_r=$(sed -n 's/^vm: running \/test.sh on //p' "$VMLOG" | head -1)
  pkg=$(sed -n 's/^vm: booting \([^ ]*\) .*/\1/p' "$VMLOG" | head -1)
  echo "$VM_KERNEL: $uname_r ($pkg)" >> build/vm/kernels-tested.txt.new
  echo "--- $VM_KERNEL: tls_stat at the end"
  sed -n 's/^\[tls_stat\] //p' "$VMLOG"
  echo "--- $VM_KERNEL: $uname_r, guest $gp passed $gf failed; $((SECONDS - t0)) s"
  cp "$VMLOG" "build/vm/ktls-$VM_KERNEL.log"
  _scratch_cleanup; trap - EXIT
done
mv build/vm/kernels-tested.txt.new build/vm/kernels-tested.txt
echo "kernels: $(tr '\n' ';' < build/vm/kernels-tested.txt) (full VM output: build/vm/ktls-*.log)"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
