#!/usr/bin/env bash
# Build ngx_http_rktls_module.so for Debian's nginx, against the headers and
# configure of the nginx-dev package (/usr/share/nginx/src) and an installed
# or staged rktls found through pkg-config. No nginx source is vendored: the
# package's tree is copied to build/nginx/src and configured there with the
# flags Debian's nginx was built with (its conf_flags, --with-compat).
#
#   nginx/build.sh [RKTLS_PREFIX]    default: build/stage (make stage)
#   -> build/nginx/ngx_http_rktls_module.so
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-$root/build/stage}
src=/usr/share/nginx/src
out=$root/build/nginx
[ -x "$src/configure" ] || { echo "missing $src/configure: apt-get install nginx-dev"; exit 2; }
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
pkg-config --exists rktls || { echo "no rktls.pc under $prefix/lib/pkgconfig: run make stage"; exit 2; }

rm -rf "$out/src"
mkdir -p "$out"
cp -a "$src" "$out/src"
# shellcheck disable=SC1091
. "$src/conf_flags"
cd "$out/src"
./configure "${NGX_CONF_FLAGS[@]}" \
  --with-cc-opt="-g -O2 -fPIC -Wall -Wextra -Werror -Wno-unused-parameter" \
  --add-dynamic-module="$root/nginx" > "$out/configure.log" 2>&1 ||
  { tail -20 "$out/configure.log"; exit 1; }
make -f objs/Makefile modules > "$out/make.log" 2>&1 || { grep -B2 -A8 -E 'error|warning' "$out/make.log" | head -60; exit 1; }
cp objs/ngx_http_rktls_module.so "$out/"
echo "built $out/ngx_http_rktls_module.so"
