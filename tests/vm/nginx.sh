#!/usr/bin/env bash
# nginx with the rktls module on a kernel with kTLS: boots the test VM
# (tests/vm/run.sh) and runs tests/vm/nginx_guest.sh there with Debian's
# nginx, the module, the example client, the library and the certificates.
# Needs `make stage examples`, nginx/build.sh and build/certs.
set -euo pipefail
cd "$(dirname "$0")/../.."
for f in build/nginx/ngx_http_rktls_module.so build/examples/client build/certs/ca.pem /usr/sbin/nginx; do
  [ -e "$f" ] || { echo "missing $f: run make nginx examples and scripts/gen-certs.sh build/certs"; exit 2; }
done
# Debian's openssl is the KeyUpdate peer.
exec tests/vm/run.sh tests/vm/nginx_guest.sh "$PWD/build/nginx/ngx_http_rktls_module.so" \
  "$PWD/build/examples/client" "$PWD/build/certs" /usr/sbin/nginx \
  "$(command -v openssl)" /usr/lib/ssl /etc/ssl/openssl.cnf
