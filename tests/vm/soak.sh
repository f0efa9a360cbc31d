#!/usr/bin/env bash
# The soak in the kTLS VM: boots the test VM (tests/vm/run.sh; default
# VM_KERNEL=rekey, a kernel that can install new TLS 1.3 keys) and runs
# tests/vm/soak_guest.sh there: server_epoll with `--ktls require` and mixed
# clients inside the guest for SOAK_SECONDS (default 60; qemu TCG is slow,
# so this is hundreds of connections, not thousands), TLS 1.3 KeyUpdates
# both ways on offloaded connections included. Needs `make stage examples`
# and build/certs. Ends with the guest's "N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
for f in build/examples/server_epoll build/examples/client build/certs/ca.pem; do
  [ -e "$f" ] || { echo "missing $f: run make stage examples and scripts/gen-certs.sh build/certs"; exit 2; }
done
mkdir -p build/vm
echo "SOAK_SECONDS=${SOAK_SECONDS:-60}" > build/vm/soak.conf
export VM_KERNEL=${VM_KERNEL:-rekey}
VM_TIMEOUT=${VM_TIMEOUT:-900} exec tests/vm/run.sh tests/vm/soak_guest.sh "$PWD/build/vm/soak.conf" \
  "$PWD/build/examples" "$PWD/build/certs" "$(command -v openssl)" /usr/lib/ssl /etc/ssl/openssl.cnf
