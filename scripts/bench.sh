#!/usr/bin/env bash
# Benchmarks: rktls vs OpenSSL vs rustls-ffi (issue #14), and nginx on rktls vs
# nginx on OpenSSL (issue #17).
#
#   scripts/bench.sh           (make bench)        writes BENCHMARKS.md and
#                                                  BENCHMARKS-ratios.png (committed)
#   scripts/bench.sh --quick   (make bench-quick)  small counts, into build/bench/quick/;
#                                                  fails unless every figure was produced
#
# Builds in release mode (the library, the examples, bench/loadclient.c,
# bench/hold.c per library, rustls-ffi's example server via
# bench/rustls-ffi.sh, the nginx module via nginx/build.sh), then runs bench/bench.py. Also folds in the figures
# this script made before (bench/throughput.c: record-layer MB/s per suite;
# tests/vm/mem_probe.c: heap per connection, in the VM run of bench.py).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = --quick ] && quick=1
scripts/deps.sh
missing=()
for p in strace valgrind gnuplot-nox util-linux openssl libssl-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
make -s stage examples >/dev/null
# The nginx systems: Debian's nginx with build/nginx/ngx_http_rktls_module.so,
# rebuilt when the module's sources or the header are newer.
mod=build/nginx/ngx_http_rktls_module.so
if [ ! -e $mod ] || [ -n "$(find nginx include/rktls.h -type f -newer $mod -print -quit)" ]; then
  nginx/build.sh >/dev/null
fi
scripts/gen-certs.sh build/certs
B=build/bench
mkdir -p $B
W="-O2 -g -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE"
RK="-Ibuild/stage/include -Lbuild/stage/lib -lrktls -Wl,-rpath,$PWD/build/stage/lib"
gcc $W -o $B/loadclient bench/loadclient.c -lssl -lcrypto
gcc $W -o $B/throughput bench/throughput.c $RK
gcc $W -o $B/mem_probe tests/vm/mem_probe.c $RK
gcc $W -DHOLD_RKTLS -o $B/hold-rktls bench/hold.c $RK
gcc $W -DHOLD_OPENSSL -o $B/hold-openssl bench/hold.c -lssl -lcrypto
bench/rustls-ffi.sh $B
gcc $W -DHOLD_RUSTLS -I$B -o $B/hold-rustls-ffi bench/hold.c $B/librustls_ffi.a \
  -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

mib=256
[ $quick = 1 ] && mib=16
{
  echo "Record layer in one process (bench/throughput.c, rktls buffer mode, one thread):"
  echo "$mib MiB client → server in 16 KiB writes."
  echo
  taskset -c 0 $B/throughput build/certs "$mib"
} > $B/earlier.md

if [ $quick = 1 ]; then
  mkdir -p $B/quick
  python3 bench/bench.py --quick --out $B/quick/BENCHMARKS.md --json $B/quick/results.json
else
  python3 bench/bench.py --out BENCHMARKS.md --json $B/results.json
fi
