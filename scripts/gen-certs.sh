#!/usr/bin/env bash
# Make a throwaway PKI for tests and the demo with the openssl CLI:
#   ca.pem                      the CA (ECDSA P-256)
#   server.pem / server.key     localhost, 127.0.0.1, example.com (ECDSA P-256)
#   other.pem / other.key       other.test (ECDSA P-384): a second SNI name
#   rsa.pem / rsa.key           localhost (RSA 2048)
#   ed25519.pem / ed25519.key   localhost (Ed25519)
#   client.pem / client.key     a client certificate
# Usage: gen-certs.sh DIR   (does nothing if DIR/ca.pem exists)
set -euo pipefail
dir=${1:?usage: gen-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
[ -f ca.pem ] && [ -f client.key ] && exit 0

openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
  -keyout ca.key -out ca.pem -days 3650 -subj "/CN=rktls test CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null

leaf() { # name keyalg-args san eku
  local name=$1 san=$2 eku=$3; shift 3
  openssl genpkey "$@" -out "$name.key" 2>/dev/null
  openssl req -new -key "$name.key" -subj "/CN=$name" -out "$name.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nsubjectAltName=%s\nextendedKeyUsage=%s\n' "$san" "$eku" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -days 825 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}
leaf server "DNS:localhost,IP:127.0.0.1,DNS:example.com" serverAuth -algorithm EC -pkeyopt ec_paramgen_curve:P-256
leaf other "DNS:other.test" serverAuth -algorithm EC -pkeyopt ec_paramgen_curve:P-384
leaf rsa "DNS:localhost,IP:127.0.0.1" serverAuth -algorithm RSA -pkeyopt rsa_keygen_bits:2048
leaf ed25519 "DNS:localhost,IP:127.0.0.1" serverAuth -algorithm ED25519
leaf client "DNS:client.test" clientAuth -algorithm EC -pkeyopt ec_paramgen_curve:P-256
