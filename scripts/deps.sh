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
# Debian's nginx and its module headers (tests/nginx.sh). Installing nginx
# must not leave a system nginx on port 80: a policy-rc.d that forbids
# starting services is in place during the installation (removed afterwards
# if it was ours), and the unit is disabled where systemd runs.
nginx_pkgs=(nginx nginx-dev)
for p in "${nginx_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  policy=/usr/sbin/policy-rc.d own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# rktls deps.sh: no service starts during this installation\nexit 101\n' |
      $SUDO tee "$policy" > /dev/null
    $SUDO chmod 755 "$policy"; own_policy=1
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  [ -z "$own_policy" ] || $SUDO rm -f "$policy"
  [ "$rc" = 0 ] || exit "$rc"
  if [ -d /run/systemd/system ] && systemctl is-enabled nginx > /dev/null 2>&1; then
    $SUDO systemctl disable --now nginx > /dev/null 2>&1 || true
  fi
fi
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done
