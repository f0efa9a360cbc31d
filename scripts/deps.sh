#!/usr/bin/env bash
# Install what the tests and the demo need on a fresh Debian machine of this
# kind: Debian packages via apt-get (only those missing), Rust components via
# rustup. Idempotent; prints nothing when all is present.
set -euo pipefail
# redis-server and libhiredis-dev: the Redis-backed session cache example
# and tests/fleet.sh.
pkgs=(openssl libssl-dev gnutls-bin valgrind pkg-config python3 curl redis-server libhiredis-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done
