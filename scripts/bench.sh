#!/usr/bin/env bash
# Benchmarks (make bench): userspace record-layer throughput per suite, as
# ratios to memcpy measured in the same run, and the userspace memory an
# established connection holds with and without kTLS (in the test VM).
# Writes bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
make -s stage >/dev/null
scripts/gen-certs.sh build/certs
mkdir -p build/bench build/vm
gcc -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE -Ibuild/stage/include -o build/bench/throughput \
  bench/throughput.c -Lbuild/stage/lib -lrktls -Wl,-rpath,"$PWD/build/stage/lib"
gcc -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE -Ibuild/stage/include -o build/vm/mem_probe \
  tests/vm/mem_probe.c -Lbuild/stage/lib -lrktls -Wl,-rpath,"$PWD/build/stage/lib"
tput=$(build/bench/throughput build/certs "${BENCH_MIB:-256}")
printf '#!/bin/sh\n%s/build/vm/mem_probe %s/build/certs\n' "$PWD" "$PWD" > build/bench/mem.sh
mem=$(tests/vm/run.sh build/bench/mem.sh "$PWD/build/vm" "$PWD/build/certs" 2>/dev/null \
  | grep -E '^(userspace|ktls):' || echo "memory probe failed (see target/vm/logs)")
{
  echo "# rktls benchmark results"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -m)), $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1), $(cargo tree -e normal -i aws-lc-rs 2>/dev/null | head -1 || echo provider)."
  echo
  echo "## Userspace record layer, ${BENCH_MIB:-256} MiB client -> server in 16 KiB writes (buffer mode, one thread)"
  echo
  echo "$tput"
  echo
  echo "## Userspace heap held per established server connection (TLS 1.3, 64 connections, Linux 6.12 VM)"
  echo
  echo '```'
  echo "$mem"
  echo '```'
} > bench/RESULTS.md
cat bench/RESULTS.md
