#!/usr/bin/env bash
# Self-test of the kTLS test VM (tests/vm/run.sh): inside the guest, the
# ulp_probe attaches the "tls" ULP, installs a TLS_TX state and writes through
# it, and /proc/net/tls_stat shows a software TX offload (TlsTxSw > 0).
# For contrast it also runs the probe on this host, which (on machines like
# this one) has no kTLS: there the ULP step fails with ENOENT.
# Usage: tests/vm/selftest.sh     (ends with "N passed, M failed")
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -Wall -Wextra -Werror -O2 -o "$tmp/ulp_probe" tests/vm/ulp_probe.c

echo "== host (expected to lack kTLS):"
if host_out=$("$tmp/ulp_probe" 2>&1); then
    echo "$host_out"; echo "note: this host has kTLS itself"
else
    echo "$host_out"
    if grep -q 'TCP_ULP.*ENOENT' <<<"$host_out"; then echo "note: no kTLS on the host, as expected"
    else echo "note: the host probe failed another way"; fi
fi

cat > "$tmp/guest.sh" <<EOF
$tmp/ulp_probe
rc=\$?
echo "--- /proc/net/tls_stat"
cat /proc/net/tls_stat
exit \$rc
EOF

echo "== VM:"
rc=0
tests/vm/run.sh "$tmp/guest.sh" "$tmp/ulp_probe" 2>&1 | tee "$tmp/vm.out" || rc=$?
out=$(tr -d '\r' < "$tmp/vm.out")

problems=()
((rc == 0)) || problems+=("run.sh exited $rc")
grep -qx 'ULP-OK' <<<"$out" || problems+=("no ULP-OK")
grep -qx 'TX-OK' <<<"$out" || problems+=("no TX-OK")
awk '$1 == "TlsTxSw" && $2 > 0 { found = 1 } END { exit !found }' <<<"$out" \
    || problems+=("TlsTxSw is not > 0")

if ((${#problems[@]} == 0)); then
    echo "ok   vm-ktls-probe"
    echo "1 passed, 0 failed"
else
    echo "FAIL vm-ktls-probe: $(IFS=';'; echo "${problems[*]}")"
    echo "0 passed, 1 failed"
    exit 1
fi
