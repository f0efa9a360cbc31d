#!/usr/bin/env bash
# The README's demo: build the library and the C examples, make a throwaway
# CA, then run scripts/demo_run.sh: the example server on localhost and the
# example client against it (a file fetched and verified, a resumed
# connection, a rejected client and the alert it received), with a short
# report.
#
#   scripts/demo.sh        on this machine (kTLS if its kernel has it)
#   scripts/demo.sh --vm   the same demo inside the kTLS test VM (tests/vm/run.sh:
#                          a Debian kernel with tls.ko, under qemu; a few
#                          minutes): both ends must report ktls=tx+rx.
#                          VM_KERNEL=lts (default: Debian 12's 6.12) or
#                          VM_KERNEL=rekey (newest trixie-backports kernel)
set -euo pipefail
cd "$(dirname "$0")/.."
vm=no
case "${1:-}" in
  "") ;;
  --vm) vm=yes ;;
  *) echo "usage: scripts/demo.sh [--vm]" >&2; exit 2 ;;
esac
scripts/deps.sh
echo "--- building the library and the examples"
make -s examples >/dev/null
certs=build/certs; scripts/gen-certs.sh "$certs"
if [ $vm = no ]; then
  exec sh scripts/demo_run.sh
fi
echo "--- booting the test VM (VM_KERNEL=${VM_KERNEL:-lts}: $([ "${VM_KERNEL:-lts}" = rekey ] && echo "newest trixie-backports kernel" || echo "Debian 12's Linux 6.12"), with kTLS) to run the demo there"
guest=$(mktemp); trap 'rm -f "$guest"' EXIT
printf '#!/bin/sh\nDEMO_REQUIRE_KTLS=1 sh scripts/demo_run.sh\n' > "$guest"
tests/vm/run.sh "$guest" "$PWD/build/examples" "$PWD/$certs" "$PWD/scripts/demo_run.sh" "$PWD/Cargo.toml"
