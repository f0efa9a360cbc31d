#!/usr/bin/env bash
# Build rustls-ffi's own example server (tests/server.c) and its static
# library from the rustls-ffi crate's published source, for the benchmarks.
#
#   bench/rustls-ffi.sh OUTDIR
#
# Cargo fetches the crate into a scratch workspace under target/bench/ (never
# committed); its source is copied to target/bench/rustls-ffi-src, patched by
# bench/rustls-ffi-patch.py (what it changes is listed there and in
# BENCHMARKS.md) and built. Writes OUTDIR/rustls-ffi-server,
# OUTDIR/librustls_ffi.a, OUTDIR/rustls.h and OUTDIR/rustls-ffi.version.
#
# The library is built in rktls's target/ with the same aws-lc-rs as rktls
# (its Cargo.lock is moved to rktls's version) and the same release profile,
# so that the comparison is between the two libraries' TLS code, not between
# two builds of the crypto.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
VERSION=${RUSTLS_FFI_VERSION:-0.15.7}
SCRATCH=$ROOT/target/bench
FETCH=$SCRATCH/rustls-ffi-fetch
SRC=$SCRATCH/rustls-ffi-src
STAMP=$SCRATCH/rustls-ffi.stamp
want="$VERSION $(sha256sum "$ROOT/bench/rustls-ffi-patch.py" | cut -c1-16)"
if [[ -f $STAMP && $(cat "$STAMP") == "$want" && -x $OUT/rustls-ffi-server && -f $OUT/librustls_ffi.a ]]; then
  exit 0
fi

mkdir -p "$FETCH/src"
cat > "$FETCH/Cargo.toml" <<EOF
[package]
name = "rktls-bench-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
rustls-ffi = "=$VERSION"

[workspace]
EOF
: > "$FETCH/src/lib.rs"
(cd "$FETCH" && cargo fetch -q)
manifest=$(cd "$FETCH" && cargo metadata -q --format-version 1 | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(next(p["manifest_path"] for p in m["packages"] if p["name"] == "rustls-ffi"))')
rm -rf "$SRC"
cp -a "$(dirname "$manifest")" "$SRC"
chmod -R u+w "$SRC"
python3 "$ROOT/bench/rustls-ffi-patch.py" "$SRC"

# Same aws-lc-rs as rktls's lock file, same release profile as rktls.
awslc=$(sed -n '/^name = "aws-lc-rs"$/{n;s/^version = "\(.*\)"$/\1/p}' "$ROOT/Cargo.lock")
(cd "$SRC" && cargo update -q -p aws-lc-rs --precise "$awslc")
(cd "$SRC" && CARGO_TARGET_DIR=$ROOT/target CARGO_PROFILE_RELEASE_DEBUG=1 \
  CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=4 \
  CARGO_PROFILE_RELEASE_PANIC=unwind nice cargo build -q --release --lib)
cp "$ROOT/target/release/librustls_ffi.a" "$SRC/src/rustls.h" "$OUT/"
# The libraries a static Rust library needs (as rustc reports them for rktls).
native="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
cc -O2 -g -w -D_GNU_SOURCE -DBENCH_QUIET -I"$OUT" -o "$OUT/rustls-ffi-server" \
  "$SRC/tests/server.c" "$SRC/tests/common.c" "$OUT/librustls_ffi.a" $native
echo "rustls-ffi $VERSION (aws-lc-rs $awslc)" > "$OUT/rustls-ffi.version"
echo "$want" > "$STAMP"
