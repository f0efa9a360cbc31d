#!/usr/bin/env bash
# Real-kernel kTLS tests: boots the test VM (tests/vm/run.sh: Debian's Linux
# 6.12 with tls.ko, under qemu) and runs tests/vm/ktls_guest.sh there with
# the example programs, the library and the test certificates.
# Needs `make stage examples` and build/certs (scripts/test.sh makes both).
set -euo pipefail
cd "$(dirname "$0")/../.."
for f in build/examples/server_blocking build/examples/server_epoll build/examples/client build/certs/ca.pem; do
  [ -e "$f" ] || { echo "missing $f: run make stage examples and scripts/gen-certs.sh build/certs"; exit 2; }
done
mkdir -p build/vm
gcc -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE -Ibuild/stage/include -o build/vm/mem_probe \
  tests/vm/mem_probe.c -Lbuild/stage/lib -lrktls -Wl,-rpath,"$PWD/build/stage/lib"
gcc -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE -pthread -Ibuild/stage/include -o build/vm/first_request \
  tests/vm/first_request.c -Lbuild/stage/lib -lrktls -Wl,-rpath,"$PWD/build/stage/lib"
gcc -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE -pthread -Ibuild/stage/include -o build/vm/control \
  tests/vm/control.c -Lbuild/stage/lib -lrktls -Wl,-rpath,"$PWD/build/stage/lib"
# The IIS-like TLS 1.2 server of tests/reneg.sh (OpenSSL's libssl).
gcc -O2 -Wall -Wextra -Werror -o build/vm/iis_peer tests/reneg/iis_peer.c -lssl -lcrypto
# Debian's openssl and GnuTLS tools are the independent peers (userspace).
exec tests/vm/run.sh tests/vm/ktls_guest.sh "$PWD/build/examples" "$PWD/build/certs" "$PWD/build/vm" \
  "$(command -v openssl)" "$(command -v gnutls-cli)" "$(command -v gnutls-serv)" \
  /usr/lib/ssl /etc/ssl/openssl.cnf
