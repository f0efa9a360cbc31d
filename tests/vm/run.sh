#!/usr/bin/env bash
# Run a script inside a throwaway Linux VM whose kernel has kTLS (tls.ko).
#
# Usage: tests/vm/run.sh GUEST_SCRIPT [FILE_OR_DIR ...]
#
# Boots a Debian kernel under qemu software emulation (TCG; this host has no
# kTLS and nested KVM does not work) with an initramfs holding busybox, tls.ko,
# the given files and directories at the same absolute paths as on the host,
# and the shared libraries their ELF files need (per ldd). The guest runs
# GUEST_SCRIPT as /test.sh from the repo root and this script exits with its
# exit code, or 125 if the VM did not report one (timeout, panic, qemu
# failure, a kernel that cannot be fetched). See /work/shared/KTLS-NOTES.md.
#
# Kernel (VM_KERNEL):
#   lts    (default) Debian 12's linux-image-6.12-amd64 from bookworm-security:
#          kTLS without TLS 1.3 rekey.
#   rekey  the newest linux-image-amd64 of trixie-backports (Linux >= 6.14:
#          kTLS with rekey).
#   Or name a meta package and suite: VM_KERNEL_META=linux-image-amd64
#   VM_KERNEL_SUITE=trixie-backports (the archive is the one the machine's own
#   sources use for that suite family).
# Packages are fetched with an apt configuration of this script's own under
# target/vm/apt/<suite>/ (sources list, lists, cache); the machine's apt
# configuration is only read, never changed. The package lists are refreshed
# when older than a day (VM_APT_REFRESH=1: always). Offline, the kernel last
# used for the same choice is taken from the cache.
#
# Networking (optional): VM_HOSTFWD="HOSTPORT:GUESTPORT ..." forwards
#   127.0.0.1:HOSTPORT on the host to the guest's GUESTPORT; VM_GUESTFWD=
#   "GUESTPORT:HOSTPORT ..." lets the guest reach 127.0.0.1:HOSTPORT on the
#   host as 10.0.2.100:GUESTPORT. Either one gives the guest eth0 =
#   10.0.2.15/24 on qemu's user network with restrict=on (no other addresses
#   are reachable). tests/vm/serve.sh builds on this.
#
# Environment: VM_TIMEOUT (seconds for the whole boot + test, default 600).
# Cache: target/vm/cache/<kernel package>/ holds the .deb, vmlinuz and
#   rootfs/lib/modules/ (tls.ko, and <kver>/ with the crypto and virtio-net
#   modules); target/vm/cache/<choice>.current names the last one used.
# Logs:  target/vm/logs/<date>-<pid>.log holds each run's serial output (last 100 kept).
set -Eeuo pipefail
# Any failure of this script itself is 125 too, never a guest's exit code.
trap 'echo "vm: error: command failed at line $LINENO" >&2; exit 125' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NET=${VM_HOSTFWD:-}${VM_GUESTFWD:-}
CACHE=$ROOT/target/vm/cache
LOGS=$ROOT/target/vm/logs
VM_TIMEOUT=${VM_TIMEOUT:-600}

die() { echo "vm: error: $*" >&2; exit 125; }
note() { echo "vm: $*" >&2; }

case ${VM_KERNEL:-lts} in
  lts)   META_PKG=${VM_KERNEL_META:-linux-image-6.12-amd64}; SUITE=${VM_KERNEL_SUITE:-bookworm-security} ;;
  rekey) META_PKG=${VM_KERNEL_META:-linux-image-amd64}; SUITE=${VM_KERNEL_SUITE:-trixie-backports} ;;
  *)     die "VM_KERNEL must be lts or rekey (got '${VM_KERNEL}')" ;;
esac
CHOICE=$META_PKG@$SUITE

# Install the host tools this script needs, only if some are missing.
ensure_packages() {
    local missing=() pkg
    for pkg in qemu-system-x86 busybox-static cpio xz-utils zstd; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return
    note "installing ${missing[*]}"
    timeout 300 apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

# The archive URI the machine's own sources use for Debian's main archive
# (or its security archive for a *-security suite), read from
# /etc/apt/sources.list.d/ and /etc/apt/sources.list; deb.debian.org if none.
archive_uri() {
    local want=debian uri
    [[ $SUITE == *-security ]] && want=debian-security
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n' | grep -E "/$want/?\$" | head -1 || true)
    [[ -n $uri ]] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' \
            | grep -E "/$want/?\$" | head -1 || true)
    echo "${uri:-http://deb.debian.org/$want}"
}

# apt-get/apt-cache with this script's own configuration for $SUITE.
APTDIR=$ROOT/target/vm/apt/$SUITE
own_apt() { # SECONDS apt-get|apt-cache ARGS...
    local t=$1 tool=$2; shift 2
    timeout "$t" "$tool" -q -o Dir::Etc::SourceList="$APTDIR/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$APTDIR/lists" -o Dir::Cache="$APTDIR/cache" \
        -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null \
        -o APT::Architectures=amd64 -o Acquire::Languages=none -o APT::Sandbox::User=root \
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
        -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false \
        -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false \
        -o Acquire::IndexTargets::deb::CNF::DefaultEnabled=false "$@"
}

own_apt_setup() {
    mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
    echo "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(archive_uri) $SUITE main" \
        > "$APTDIR/sources.list.new"
    cmp -s "$APTDIR/sources.list.new" "$APTDIR/sources.list" 2>/dev/null \
        && rm "$APTDIR/sources.list.new" || mv "$APTDIR/sources.list.new" "$APTDIR/sources.list"
}

own_apt_update() {
    note "apt-get update for $SUITE ($(archive_uri)) into $APTDIR"
    own_apt 300 apt-get update -qq >"$APTDIR/update.log" 2>&1 && touch "$APTDIR/updated"
}

# Print the versioned kernel package the meta package depends on (own lists).
resolve_kernel_pkg() {
    own_apt 60 apt-cache depends "$META_PKG" 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)\( .*\)\?$/\1/p' | head -1 || true
}

# Crypto and virtio-net modules the guest may need: tls.ko asks for
# gcm(aes), ccm(aes), rfc7539(chacha20,poly1305)... and the kernel loads them
# via /sbin/modprobe; the network device needs virtio_net and its failover.
MOD_DIRS="kernel/crypto kernel/arch/x86/crypto kernel/lib/crypto"
MOD_FILES="kernel/drivers/net/virtio_net kernel/drivers/net/net_failover kernel/net/core/failover"

# Copy module $1 (path without .ko*) from $2 to $3, uncompressed; fails if absent.
copy_module() {
    local m=$1 from=$2 to=$3
    mkdir -p "$(dirname "$to/$m")"
    if [[ -f $from/$m.ko.xz ]]; then xz -dc "$from/$m.ko.xz" > "$to/$m.ko"
    elif [[ -f $from/$m.ko.zst ]]; then zstd -qdc "$from/$m.ko.zst" > "$to/$m.ko"
    elif [[ -f $from/$m.ko ]]; then cp "$from/$m.ko" "$to/$m.ko"
    else echo "vm: module $m not in the package" >&2; return 1; fi
}

# From a package unpacked in $1, make $1/vmlinuz and $1/rootfs/lib/modules/
# holding tls.ko and <kver>/ (the modules, uncompressed, with modules.dep).
# Debian 12 packages keep modules in lib/modules, Debian 13 ones (merged
# /usr) in usr/lib/modules.
unpack_kernel() {
    local x=$1 kver d m mods src
    src=$(compgen -G "$x/lib/modules/*" || compgen -G "$x/usr/lib/modules/*") \
        || { echo "vm: no lib/modules or usr/lib/modules in the package" >&2; return 1; }
    src=$(head -1 <<<"$src"); kver=$(basename "$src")
    mods=$x/rootfs/lib/modules/$kver
    # The image: boot/vmlinuz-<kver>, or <modules dir>/vmlinuz (split packages).
    { cp "$x/boot/vmlinuz-$kver" "$x/vmlinuz" 2>/dev/null || cp "$src/vmlinuz" "$x/vmlinuz" 2>/dev/null; } \
        || { echo "vm: no boot/vmlinuz-$kver or $kver/vmlinuz in the package" >&2; return 1; }
    mkdir -p "$mods" || return 1
    copy_module kernel/net/tls/tls "$src" "$x/tmp-tls" && mv "$x/tmp-tls/kernel/net/tls/tls.ko" "$x/rootfs/lib/modules/tls.ko" || return 1
    for d in $MOD_DIRS; do
        mkdir -p "$mods/$d" && cp -r "$src/$d/." "$mods/$d/" || return 1
    done
    for m in $MOD_FILES; do copy_module "$m" "$src" "$mods" || return 1; done
    cp "$src"/modules.{builtin,builtin.modinfo,order} "$mods/" || return 1
    find "$mods" -name '*.ko.xz' -exec xz -d {} + || return 1
    find "$mods" -name '*.ko.zst' -exec zstd -q -d --rm {} + || return 1
    busybox depmod -b "$x/rootfs" "$kver"
}

# The packages making up kernel package $1: itself, plus the parts newer
# Debian kernels split it into (linux-binary-<kver>: the kernel image,
# linux-modules-<kver>: the modules, linux-base-<kver>: modules.builtin...),
# named in its Depends.
kernel_parts() {
    echo "$1"
    own_apt 60 apt-cache depends "$1" 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-\(binary\|modules\|base\)-[0-9][^ ]*\)$/\1/p' || true
}

# Download and unpack kernel package $1 into $CACHE/$1 unless already there.
fetch_kernel() {
    local pkg=$1 dir=$CACHE/$1 deb tmp parts
    # A cache entry unpacked by an older run.sh (without the network
    # modules) is unpacked again from its .debs.
    [[ -f $dir/vmlinuz && -f $dir/rootfs/lib/modules/tls.ko && -f $dir/unpacked.v2 ]] && return 0
    mkdir -p "$dir"
    if ! [[ -f $dir/debs.complete ]]; then
        parts=$(kernel_parts "$pkg" | tr '\n' ' ')
        note "downloading $parts from $SUITE (about 100 MB)"
        rm -f "$dir"/*.deb
        # shellcheck disable=SC2086
        (cd "$dir" && own_apt 900 apt-get download $parts) \
            || { rm -f "$dir"/*.deb; note "cannot download $parts from $SUITE ($(archive_uri))"; return 1; }
        touch "$dir/debs.complete"
    fi
    tmp=$(mktemp -d "$dir/unpack.XXXXXX")
    for deb in "$dir"/*.deb; do
        dpkg -x "$deb" "$tmp" || { rm -rf "$tmp" "$dir"/*.deb "$dir/debs.complete"; die "cannot unpack $deb (removed; the next run downloads it again)"; }
    done
    if ! unpack_kernel "$tmp"; then
        rm -rf "$tmp"
        die "cannot find the kernel image, tls.ko and the modules it needs in $pkg's packages ($dir/*.deb)"
    fi
    rm -rf "$dir/rootfs" "$dir/vmlinuz"
    mv "$tmp/rootfs" "$dir/rootfs"
    mv "$tmp/vmlinuz" "$dir/vmlinuz"
    touch "$dir/unpacked.v2"             # last: marks a complete cache entry of this layout
    rm -rf "$tmp"
}

# Set KDIR to the cache directory (vmlinuz, rootfs/) of the chosen kernel.
find_kernel() {
    local pkg="" cached="" marker=$CACHE/${CHOICE//\//_}.current
    mkdir -p "$CACHE"; exec 9>"$CACHE/.lock"           # one cache writer at a time
    flock -w 1800 9 || die "cannot lock $CACHE/.lock"
    own_apt_setup
    [[ -f $marker && -f $CACHE/$(cat "$marker")/unpacked.v2 ]] && cached=$(cat "$marker")
    # Fresh lists (under a day old) are used as they are; otherwise refresh.
    if [[ ${VM_APT_REFRESH:-0} = 1 || ! -f $APTDIR/updated ]] \
        || [[ -n $(find "$APTDIR/updated" -mmin +1440) ]]; then
        own_apt_update || note "apt-get update for $SUITE failed (see $APTDIR/update.log)"
    fi
    pkg=$(resolve_kernel_pkg)
    if [[ -n $pkg ]] && ! fetch_kernel "$pkg"; then
        # The lists may name a version the archive no longer has: refresh once.
        own_apt_update || true
        pkg=$(resolve_kernel_pkg)
        [[ -n $pkg ]] && fetch_kernel "$pkg" || pkg=""
    fi
    if [[ -n $pkg ]]; then
        KDIR=$CACHE/$pkg; echo "$pkg" > "$marker"
    elif [[ -n $cached ]]; then
        KDIR=$CACHE/$cached; note "cannot resolve or fetch $META_PKG from $SUITE; using cached $cached"
    else
        die "no kernel: cannot fetch $META_PKG from $SUITE ($(archive_uri)) and nothing cached in" \
            "$CACHE for it. Fetch it with network access (tests/vm/run.sh downloads it), or put an" \
            "unpacked cache entry there (${META_PKG}'s versioned package, see $APTDIR/update.log)"
    fi
    KPKG=$(basename "$KDIR")
    exec 9>&-
}

# Copy host path $1 into the guest root $GROOT at the same absolute path.
copy_same_path() {
    local src=$1 dst=$GROOT$1
    mkdir -p "$(dirname "$dst")"
    if [[ -d $src ]]; then cp -a "$src/." "$dst/"
    else cp -L --remove-destination "$src" "$dst"; fi
}

is_elf() { [[ -f $1 && $(LC_ALL=C head -c 4 "$1" 2>/dev/null | tr -d '\0') == $'\177ELF' ]]; }

# Copy every shared library (and the loader) that ldd lists for ELF file $1.
copy_libs() {
    local lib out
    out=$(ldd "$1" 2>/dev/null) || return 0        # static binaries, objects: nothing to do
    if grep -q 'not found' <<<"$out"; then
        note "warning: $1 has unresolved libraries:"; grep 'not found' <<<"$out" >&2
    fi
    for lib in $(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' <<<"$out"); do
        [[ -e $GROOT$lib ]] || copy_same_path "$lib"
    done
}

# Write the guest's /init: set up, run /test.sh, report its exit code, power off.
write_init() {
    cat > "$GROOT/init" <<EOF
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export VM_KERNEL_PKG='$KPKG' VM_KERNEL='${VM_KERNEL:-lts}'
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
# A tmpfs on /tmp, keeping whatever the initramfs put there (copied test files).
mv /tmp /tmp.initrd && mkdir /tmp && mount -t tmpfs tmpfs /tmp && cp -a /tmp.initrd/. /tmp/ && rm -rf /tmp.initrd
insmod /lib/modules/tls.ko || echo "vm: insmod tls.ko failed"
ip link set lo up
if [ -n "$NET" ]; then
  modprobe virtio_net || echo "vm: modprobe virtio_net failed"
  ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2 \
    || echo "vm: eth0 setup failed"
fi
[ -d '$ROOT' ] && cd '$ROOT'
echo; echo "vm: running /test.sh on \$(uname -r)"
/bin/sh /test.sh
rc=\$?
echo; echo "VM-RESULT exit=\$rc"     # on a line of its own even if the output lacked a newline
sync
reboot -f
EOF
    chmod 755 "$GROOT/init"
}

# Build the initramfs $1 from the guest script and the given files/dirs.
build_initrd() {
    local out=$1 script=$2 path f app; shift 2
    mkdir -p "$GROOT"/{bin,sbin,proc,sys,dev,tmp,lib/modules}
    mknod -m 600 "$GROOT/dev/console" c 5 1 2>/dev/null || true   # the kernel's first console
    cp -L "$(command -v busybox)" "$GROOT/bin/busybox"
    for app in $("$GROOT/bin/busybox" --list-full); do      # e.g. bin/sh, usr/sbin/ip
        case $app in */busybox) ;;
                     *sbin/*) ln -sf /bin/busybox "$GROOT/sbin/${app##*/}" ;;
                     *)       ln -sf /bin/busybox "$GROOT/bin/${app##*/}" ;; esac
    done
    cp -a "$KDIR/rootfs/." "$GROOT/"                   # /lib/modules/{tls.ko,<kver>/}
    cp "$script" "$GROOT/test.sh"
    for path in "$@"; do
        path=$(realpath -s "$path")
        copy_same_path "$path"
        if [[ -d $path ]]; then
            while IFS= read -r -d '' f; do is_elf "$f" && copy_libs "$f"; done \
                < <(find "$path" -type f -print0)
        elif is_elf "$path"; then copy_libs "$path"; fi
    done
    write_init
    (cd "$GROOT" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) | gzip -1 > "$out"
}

# qemu's network options: none, or user networking with the forwards asked for.
net_args() {
    local f h g opt="user,id=n0,restrict=on"
    if [[ -z $NET ]]; then echo "-nic none"; return; fi
    for f in ${VM_HOSTFWD:-}; do
        h=${f%%:*}; g=${f#*:}
        [[ $h =~ ^[0-9]+$ && $g =~ ^[0-9]+$ ]] || die "bad VM_HOSTFWD entry '$f' (HOSTPORT:GUESTPORT)"
        opt+=",hostfwd=tcp:127.0.0.1:$h-10.0.2.15:$g"
    done
    for f in ${VM_GUESTFWD:-}; do
        g=${f%%:*}; h=${f#*:}
        [[ $h =~ ^[0-9]+$ && $g =~ ^[0-9]+$ ]] || die "bad VM_GUESTFWD entry '$f' (GUESTPORT:HOSTPORT)"
        opt+=",guestfwd=tcp:10.0.2.100:$g-tcp:127.0.0.1:$h"
    done
    echo "-netdev $opt -device virtio-net-pci,netdev=n0"
}

# Boot the VM; serial console to stdout and to log $1. Returns qemu's status.
# The filter drops CRs and the firmware's terminal escapes (reset, no-autowrap).
boot() {
    local log=$1 rc=0
    timeout --kill-after=10 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 \
        -nographic -no-reboot $(net_args) -kernel "$KDIR/vmlinuz" -initrd "$WORK/initrd.gz" \
        -append "console=ttyS0 quiet panic=-1" </dev/null 2>&1 \
        | sed -u -e 's/\r$//' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' | tee "$log" || rc=$?
    return "$rc"
}

main() {
    (($# >= 1)) || die "usage: $0 GUEST_SCRIPT [FILE_OR_DIR ...]"
    local script=$1 p log rc=0 result; shift
    [[ -f $script ]] || die "no such guest script: $script"
    for p in "$@"; do [[ -e $p ]] || die "no such file or directory: $p"; done

    ensure_packages
    find_kernel
    WORK=$(mktemp -d); GROOT=$WORK/root
    trap 'rm -rf "$WORK"' EXIT
    build_initrd "$WORK/initrd.gz" "$script" "$@"

    mkdir -p "$LOGS"; log=$LOGS/$(date +%Y%m%d-%H%M%S)-$$.log
    { ls -1t "$LOGS"/*.log 2>/dev/null || true; } | tail -n +100 | xargs -r rm -f   # keep 100
    note "booting $KPKG (VM_KERNEL=${VM_KERNEL:-lts}; timeout ${VM_TIMEOUT}s, log $log)"
    boot "$log" || rc=$?

    result=$(sed -n 's/^VM-RESULT exit=\([0-9]\{1,3\}\)$/\1/p' "$log" | tail -1)
    if [[ -z $result ]]; then
        case $rc in 124|137) note "FAILED: VM timed out after ${VM_TIMEOUT}s" ;;
                    *) note "FAILED: VM ended without a result line (qemu status $rc; kernel panic?)" ;; esac
        echo "vm: no VM-RESULT line; see $log" >&2
        exit 125
    fi
    note "guest script exited $result (log $log)"
    exit "$result"
}

main "$@"
