#!/usr/bin/env bash
# Run a script inside a throwaway Linux VM whose kernel has kTLS (tls.ko).
#
# Usage: tests/vm/run.sh GUEST_SCRIPT [FILE_OR_DIR ...]
#
# Boots Debian's current linux-image-6.12-amd64 kernel under qemu software
# emulation (TCG; this host has no kTLS and nested KVM does not work) with an
# initramfs holding busybox, tls.ko, the given files and directories at the same
# absolute paths as on the host, and the shared libraries their ELF files need
# (per ldd). The guest runs GUEST_SCRIPT as /test.sh from the repo root and
# this script exits with its exit code, or 125 if the VM did not report one
# (timeout, panic, qemu failure). See /work/shared/KTLS-NOTES.md.
#
# Environment: VM_TIMEOUT (seconds for the whole boot + test, default 600);
#   VM_KERNEL_META (kernel meta package, default linux-image-6.12-amd64).
# Cache: target/vm/cache/<kernel package>/ holds the .deb, vmlinuz and
#   rootfs/lib/modules/ (tls.ko, and <kver>/ with the crypto modules).
# Logs:  target/vm/logs/<date>-<pid>.log holds each run's serial output (last 100 kept).
set -Eeuo pipefail
# Any failure of this script itself is 125 too, never a guest's exit code.
trap 'echo "vm: error: command failed at line $LINENO" >&2; exit 125' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=$ROOT/target/vm/cache
LOGS=$ROOT/target/vm/logs
META_PKG=${VM_KERNEL_META:-linux-image-6.12-amd64}
VM_TIMEOUT=${VM_TIMEOUT:-600}

die() { echo "vm: error: $*" >&2; exit 125; }
note() { echo "vm: $*" >&2; }

# Install the host tools this script needs, only if some are missing.
ensure_packages() {
    local missing=() pkg
    for pkg in qemu-system-x86 busybox-static cpio xz-utils; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return
    note "installing ${missing[*]}"
    timeout 300 apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

# Print the versioned kernel package the meta package currently depends on.
resolve_kernel_pkg() {
    local pkg
    pkg=$(apt-cache depends "$META_PKG" 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -1 || true)
    # A fresh machine may have no package lists yet: fetch them once.
    if [[ -z $pkg ]] && ! compgen -G "$CACHE/linux-image-*/vmlinuz" >/dev/null; then
        timeout 300 apt-get update -qq >/dev/null 2>&1 || true
        pkg=$(apt-cache depends "$META_PKG" 2>/dev/null \
            | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -1 || true)
    fi
    echo "$pkg"
}

# Crypto modules the guest may need: tls.ko asks for gcm(aes), ccm(aes),
# rfc7539(chacha20,poly1305)... and the kernel loads them via /sbin/modprobe.
MOD_DIRS="kernel/crypto kernel/arch/x86/crypto kernel/lib/crypto"

# From a package unpacked in $1, make $1/vmlinuz and $1/rootfs/lib/modules/
# holding tls.ko and <kver>/ (the crypto modules, uncompressed, with modules.dep).
unpack_kernel() {
    local x=$1 kver d mods
    kver=$(basename "$(compgen -G "$x/lib/modules/*")") || return 1
    mods=$x/rootfs/lib/modules/$kver
    cp "$x"/boot/vmlinuz-* "$x/vmlinuz" || return 1
    mkdir -p "$mods" || return 1
    xz -dc "$x/lib/modules/$kver/kernel/net/tls/tls.ko.xz" > "$x/rootfs/lib/modules/tls.ko" || return 1
    for d in $MOD_DIRS; do
        mkdir -p "$mods/$d" && cp -r "$x/lib/modules/$kver/$d/." "$mods/$d/" || return 1
    done
    cp "$x/lib/modules/$kver"/modules.{builtin,builtin.modinfo,order} "$mods/" || return 1
    find "$mods" -name '*.ko.xz' -exec xz -d {} + && busybox depmod -b "$x/rootfs" "$kver"
}

# Download and unpack kernel package $1 into $CACHE/$1 unless already there.
fetch_kernel() {
    local pkg=$1 dir=$CACHE/$1 deb tmp
    [[ -f $dir/vmlinuz && -f $dir/rootfs/lib/modules/tls.ko ]] && return 0
    mkdir -p "$dir"
    if ! compgen -G "$dir/*.deb" >/dev/null; then
        note "downloading $pkg (about 100 MB)"
        (cd "$dir" && timeout 900 apt-get download -q -o APT::Sandbox::User=root "$pkg") \
            || { rm -f "$dir"/*.deb; return 1; }
    fi
    deb=$(compgen -G "$dir/*.deb" | head -1)
    tmp=$(mktemp -d "$dir/unpack.XXXXXX")
    dpkg -x "$deb" "$tmp" && unpack_kernel "$tmp" || { rm -rf "$tmp"; die "cannot unpack $deb"; }
    rm -rf "$dir/rootfs" "$dir/vmlinuz"
    mv "$tmp/rootfs" "$dir/rootfs"
    mv "$tmp/vmlinuz" "$dir/vmlinuz"     # last: its presence marks a complete cache entry
    rm -rf "$tmp"
}

# Set KDIR to the cache directory (vmlinuz, rootfs/) of the current kernel.
# Offline (apt-cache cannot resolve), fall back to the newest cached kernel.
find_kernel() {
    local pkg cached
    mkdir -p "$CACHE"; exec 9>"$CACHE/.lock"           # one cache writer at a time
    flock -w 1800 9 || die "cannot lock $CACHE/.lock"
    cached=$(compgen -G "$CACHE/linux-image-*/vmlinuz" | sort -V | tail -1 || true)
    pkg=$(resolve_kernel_pkg)
    if [[ -n $pkg ]] && fetch_kernel "$pkg"; then
        KDIR=$CACHE/$pkg
    elif [[ -z $pkg && -n $cached ]]; then
        KDIR=$(dirname "$cached"); note "cannot resolve $META_PKG; using cached $(basename "$KDIR")"
    else                                              # no or stale package lists: update, retry
        note "running apt-get update"
        timeout 300 apt-get update -qq || die "apt-get update failed"
        pkg=$(resolve_kernel_pkg)
        [[ -n $pkg ]] && fetch_kernel "$pkg" || die "cannot get the kernel package ${pkg:-of $META_PKG}"
        KDIR=$CACHE/$pkg
    fi
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
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
# A tmpfs on /tmp, keeping whatever the initramfs put there (copied test files).
mv /tmp /tmp.initrd && mkdir /tmp && mount -t tmpfs tmpfs /tmp && cp -a /tmp.initrd/. /tmp/ && rm -rf /tmp.initrd
insmod /lib/modules/tls.ko || echo "vm: insmod tls.ko failed"
ip link set lo up
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

# Boot the VM; serial console to stdout and to log $1. Returns qemu's status.
# The filter drops CRs and the firmware's terminal escapes (reset, no-autowrap).
boot() {
    local log=$1 rc=0
    timeout --kill-after=10 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 \
        -nographic -no-reboot -nic none -kernel "$KDIR/vmlinuz" -initrd "$WORK/initrd.gz" \
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
    note "booting $(basename "$KDIR") (timeout ${VM_TIMEOUT}s, log $log)"
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
