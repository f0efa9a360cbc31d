#!/usr/bin/env bash
# Every test of rktls: the README's test command (`make test`) runs this, and
# so does CI (.ci/run). Installs what it needs first. Each step prints its
# outcome; the last line is "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
scripts/deps.sh || { echo "deps: installation failed"; exit 1; }

logs=build/test-logs; mkdir -p "$logs"
certs=build/certs
pass=0; fail=0; failed=()
step() { # name command...
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name"
  if "$@" > "$logs/$name.log" 2>&1; then
    pass=$((pass+1)); echo "ok   $name ($((SECONDS-t0))s)"
  else
    fail=$((fail+1)); failed+=("$name"); echo "FAIL $name ($((SECONDS-t0))s)"; tail -40 "$logs/$name.log"
  fi
}

step fmt cargo fmt --check
step clippy cargo clippy --all-targets -- -D warnings
step clippy-ring cargo clippy --all-targets --no-default-features --features ring -- -D warnings
step rust-tests cargo test
step rust-tests-ring cargo test --no-default-features --features ring
step ring-build-has-no-aws-lc bash -c '! cargo tree --no-default-features --features ring -e normal | grep -q aws-lc'
step header-up-to-date make header-check
step header-docs bash -c "python3 scripts/header-docs.py --self-test && python3 scripts/header-docs.py include/rktls.h"
step stage make stage examples examples-san
step certs scripts/gen-certs.sh "$certs"
step c-tests tests/c/run.sh "$PWD/build/stage" "$certs"
step install tests/install_test.sh
step alerts env BIN=build/examples CERTS="$certs" tests/alerts.sh
step renegotiation env BIN=build/examples CERTS="$certs" tests/reneg.sh
step interop env BIN=build/examples CERTS="$certs" tests/interop.sh
step curl env BIN=build/examples CERTS="$certs" tests/curl.sh
step load env BIN=build/examples CERTS="$certs" tests/load.sh
step sanitizers env SAN=build/examples-san CERTS="$certs" tests/sanitizers.sh
step fleet env BIN=build/examples CERTS="$certs" tests/fleet.sh
step nginx-module nginx/build.sh
step nginx env CERTS="$certs" tests/nginx.sh
step nginx-load env BIN=build/examples CERTS="$certs" tests/nginx_load.sh
step nginx-valgrind env CERTS="$certs" tests/nginx_valgrind.sh
step soak env BIN=build/examples CERTS="$certs" SOAK_SECONDS=60 tests/soak.sh
step ktls-vm-selftest tests/vm/selftest.sh
step ktls-vm tests/vm/ktls.sh
step nginx-ktls-vm tests/vm/nginx.sh
step nginx-ktls-vm-rekey env VM_KERNEL=rekey tests/vm/nginx.sh
step soak-ktls-vm env VM_KERNEL=rekey SOAK_SECONDS=60 tests/vm/soak.sh
step bench-quick make bench-quick
step fuzz scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

echo
[ "$fail" -eq 0 ] || echo "failed steps: ${failed[*]} (logs in $logs/)"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
