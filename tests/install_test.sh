#!/usr/bin/env bash
# Install into a scratch prefix, then build and run a C program against the
# installed copy using only `pkg-config --cflags --libs rktls`.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
scratch install
tmp=$T
# The ABI version is written once, in Cargo.toml.
abi=$(sed -n 's/^abi-version = \([0-9]*\)/\1/p' Cargo.toml)
make -s install PREFIX="$tmp/prefix" >/dev/null
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
for f in include/rktls.h lib/librktls.a lib/librktls.so "lib/librktls.so.$abi" lib/pkgconfig/rktls.pc; do
  [ -e "$tmp/prefix/$f" ] || { echo "FAIL: $f not installed"; exit 1; }
done
cat > "$tmp/app.c" <<'C'
#include <rktls.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    rktls_server_config_builder *b = NULL;
    const rktls_server_config *cfg = NULL;
    if (rktls_server_config_builder_new(&b) != RKTLS_OK)
        return 1;
    /* No certificate: building must fail with a clear code. */
    rktls_result r = rktls_server_config_builder_build(b, &cfg);
    printf("%s | %s | %s\n", rktls_version(), RKTLS_VERSION_STRING, rktls_result_str(r));
    return r == RKTLS_ERR_CONFIG_INCOMPLETE && cfg == NULL ? 0 : 1;
}
C
gcc -Wall -Wextra -Werror -o "$tmp/app" "$tmp/app.c" $(pkg-config --cflags --libs rktls)
readelf -d "$tmp/app" | grep -q "NEEDED.*librktls.so.$abi" || { echo "FAIL: app does not need librktls.so.$abi"; exit 1; }
out=$(LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/app")
echo "$out"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
case "$out" in
  "rktls $version "*"| $version | configuration incomplete"*) echo "install: ok" ;;
  *) echo "FAIL: unexpected output"; exit 1 ;;
esac
