#!/usr/bin/env bash
# C tests against the built library: the header compiles as C11 and C++, and
# echo_test (blocking, epoll, buffer modes) and fleet_test (shared ticket
# keys, session-store callbacks) pass linked against the shared and the
# static library, and under valgrind with no leaks or errors; the pointers
# the API returns outlive a refused renegotiation; every test also runs
# under AddressSanitizer/UBSan.
# Usage: tests/c/run.sh STAGE_PREFIX CERTDIR
set -euo pipefail
stage=${1:?stage prefix}; certs=${2:?cert dir}
. "$(dirname "$0")/../lib.sh"
out=build/ctests; mkdir -p "$out"
RUN_LOGS=$out # each step's output: build/ctests/NAME.log
inc="-I$stage/include"
warn="-Wall -Wextra -Werror"
static_libs=$(cat build/native-static-libs)

printf '#include <rktls.h>\nint main(void){ return rktls_version() == 0; }\n' > "$out/hdr.c"
cp "$out/hdr.c" "$out/hdr.cpp"
run header-c11 gcc -std=c11 -pedantic $warn $inc -c "$out/hdr.c" -o "$out/hdr.o"
run header-cxx g++ -std=c++11 -pedantic $warn $inc -c "$out/hdr.cpp" -o "$out/hdrpp.o"

cflags="-O1 -g -std=c11 -D_GNU_SOURCE -pthread $warn $inc"
run build-shared gcc $cflags -o "$out/echo_shared" tests/c/echo_test.c -L"$stage/lib" -lrktls -Wl,-rpath,"$stage/lib"
run build-static gcc $cflags -o "$out/echo_static" tests/c/echo_test.c "$stage/lib/librktls.a" $static_libs
no_librktls() { ! ldd "$out/echo_static" | grep -q rktls; }
run static-has-no-librktls-dependency no_librktls
run build-config gcc $cflags -o "$out/config_test" tests/c/config_test.c -L"$stage/lib" -lrktls -Wl,-rpath,"$stage/lib"
run config "$out/config_test" "$certs"
run build-acceptor gcc $cflags -o "$out/acceptor_test" tests/c/acceptor_test.c -L"$stage/lib" -lrktls -Wl,-rpath,"$stage/lib"
run acceptor "$out/acceptor_test" "$certs"
run build-fleet gcc $cflags -o "$out/fleet_test" tests/c/fleet_test.c -L"$stage/lib" -lrktls -Wl,-rpath,"$stage/lib"
run fleet "$out/fleet_test" "$certs"
run echo-shared "$out/echo_shared" "$certs"
run echo-static "$out/echo_static" "$certs"
run echo-valgrind valgrind -q --error-exitcode=9 --suppressions=tests/c/valgrind.supp --leak-check=full \
  --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
  "$out/echo_shared" "$certs"
run config-valgrind valgrind -q --error-exitcode=9 --suppressions=tests/c/valgrind.supp --leak-check=full \
  --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
  "$out/config_test" "$certs"
run acceptor-valgrind valgrind -q --error-exitcode=9 --suppressions=tests/c/valgrind.supp --leak-check=full \
  --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
  "$out/acceptor_test" "$certs"
run fleet-valgrind valgrind -q --error-exitcode=9 --suppressions=tests/c/valgrind.supp --leak-check=full \
  --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
  "$out/fleet_test" "$certs"
# The same tests under AddressSanitizer and UndefinedBehaviorSanitizer
# (leaks included); the library itself is not instrumented, but every call
# into it and every buffer it reads or writes for the test is checked.
san="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"
for t in echo config acceptor fleet; do
  run build-$t-asan gcc $cflags $san -o "$out/${t}_asan" tests/c/${t}_test.c -L"$stage/lib" -lrktls -Wl,-rpath,"$stage/lib"
  run $t-asan env ASAN_OPTIONS=detect_leaks=1 "$out/${t}_asan" "$certs"
done
# Returned pointers outlive a refused renegotiation (OpenSSL TLS 1.2 client):
# plain, under AddressSanitizer/UBSan, and under valgrind.
run build-pointer-lifetime gcc $cflags -o "$out/pointer_lifetime_test" tests/c/pointer_lifetime_test.c \
  -L"$stage/lib" -lrktls -Wl,-rpath,"$stage/lib" -lssl -lcrypto
run build-pointer-lifetime-asan gcc $cflags $san -o "$out/pointer_lifetime_asan" tests/c/pointer_lifetime_test.c \
  -L"$stage/lib" -lrktls -Wl,-rpath,"$stage/lib" -lssl -lcrypto
run pointer-lifetime "$out/pointer_lifetime_test" "$certs"
run pointer-lifetime-asan "$out/pointer_lifetime_asan" "$certs"
run pointer-lifetime-valgrind valgrind -q --error-exitcode=9 --suppressions=tests/c/valgrind.supp --leak-check=full \
  --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
  "$out/pointer_lifetime_test" "$certs"
summary
