#!/usr/bin/env bash
# Run servers in the kTLS test VM and reach them from this host.
#
# Usage: tests/vm/serve.sh GUEST_PORT[,GUEST_PORT...] GUEST_SCRIPT [FILE_OR_DIR ...]
#
# Boots the VM (tests/vm/run.sh; VM_KERNEL=lts|rekey chooses the kernel) with
# qemu user networking (restrict=on) and one forward per guest port, from a
# free ephemeral port on 127.0.0.1 here. GUEST_SCRIPT runs in the guest (as
# with run.sh) and must start servers listening on 0.0.0.0:GUEST_PORT (or
# 10.0.2.15). Once every guest port is listening, this prints
#   READY port=HOSTPORT                (the first guest port's forward)
#   READY ports=GP:HP,GP:HP...         (all of them)
# on stdout; the VM's serial output is passed through as well. Exits with the
# guest script's status (125: the VM failed) when the script ends: make it
# wait for its servers (e.g. a server that exits after N connections, under
# `timeout`).
#
# The guest can reach a server on this host's 127.0.0.1:PORT as
# 10.0.2.100:PORT when VM_GUESTFWD="PORT:PORT" is set (see run.sh).
#
# Example (a test script, with tests/lib.sh):
#   tests/vm/serve.sh 4433 my_guest.sh build/examples > "$T/vm.log" 2>&1 &
#   pids+=($!); WAIT=600 wait_for "$T/vm.log" '^READY port=' $!
#   port=$(sed -n 's/^READY port=//p' "$T/vm.log")
#   openssl s_client -connect 127.0.0.1:$port ...
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

(($# >= 2)) || { echo "usage: $0 GUEST_PORT[,GUEST_PORT...] GUEST_SCRIPT [FILE_OR_DIR ...]" >&2; exit 2; }
ports=$1 script=$2; shift 2
[[ $ports =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "serve: bad guest ports '$ports'" >&2; exit 2; }
[[ -f $script ]] || { echo "serve: no such guest script: $script" >&2; exit 2; }

# Free ports on 127.0.0.1, one per guest port (the kernel picks them).
free_ports() { # COUNT
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
IFS=, read -r -a gps <<<"$ports"
read -r -a hps <<<"$(free_ports "${#gps[@]}")"
fwd="" map=""
for i in "${!gps[@]}"; do
    fwd+=" ${hps[$i]}:${gps[$i]}"; map+=",${gps[$i]}:${hps[$i]}"
done

# The guest wrapper: the script in the background, a readiness line once
# every port listens, then the script's status.
cp "$script" "$tmp/user.sh"
cat > "$tmp/guest.sh" <<EOF
sh $tmp/user.sh &
pid=\$!
i=0
while :; do
  all=1
  for p in ${gps[*]}; do netstat -ltn | grep -q "[:.]\$p " || all=0; done
  [ \$all = 1 ] && break
  kill -0 \$pid 2>/dev/null || break
  i=\$((i + 1)); sleep 0.1
done
[ \$all = 1 ] && echo "VM-SERVE-READY"
wait \$pid
EOF

set +e
VM_HOSTFWD="${fwd# }" "$here/run.sh" "$tmp/guest.sh" "$tmp/user.sh" "$@" 2>&1 \
    | while IFS= read -r line; do
        printf '%s\n' "$line"
        if [[ $line == VM-SERVE-READY ]]; then
            echo "READY port=${hps[0]}"; echo "READY ports=${map#,}"
        fi
      done
rc=${PIPESTATUS[0]}
exit "$rc"
