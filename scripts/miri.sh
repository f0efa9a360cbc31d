#!/usr/bin/env bash
# Miri (undefined-behaviour checker) on the tests of the pure modules, those
# that make no syscall and call no C crypto: result codes and messages,
# alert names and parsing, ClientHello parsing, the C-boundary helpers
# (guard, copy-out) and the log callback. Needs the nightly toolchain with
# the miri component (installed here if missing). Not part of `make test`:
# its first run builds every dependency for Miri (about 15 minutes on the
# 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
rustup +nightly component list --installed | grep -q '^miri' || rustup +nightly component add miri
cargo +nightly miri test --lib -- result:: alert:: hello:: ffi:: logging::
