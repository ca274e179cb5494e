#!/usr/bin/env bash
# Prepares the VM bench (tests/vm/vm.py): nfs-ganesha for the host side, QEMU + busybox for the
# guest, and Debian's bookworm kernel unpacked (never installed) into $REPO/.bench/vm/kernel with
# an ELF vmlinux beside it. Idempotent and fast when done: no apt-get when nothing is missing, and
# the kernel is cached (delete .bench/vm to fetch it again). Safe with CI=true and no stdin.
# Called from tests/bench/setup.sh; may be run on its own.
set -euo pipefail

REPO="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
VMDIR="$REPO/.bench/vm"
KDIR="$VMDIR/kernel"
# The kernel the bench was proven with; if the archive no longer carries it, the newest
# linux-image-6.1.0-N-amd64 that apt-cache knows is used instead.
KPKG_WANT="${VM_KERNEL_PACKAGE:-linux-image-6.1.0-56-amd64}"

export DEBIAN_FRONTEND=noninteractive
say() { echo "vm/setup.sh: $*"; }
# shellcheck source=../bench/apt.sh
source "$REPO/tests/bench/apt.sh"
VM_APT_PACKAGES=(nfs-ganesha nfs-ganesha-vfs qemu-system-x86 busybox-static cpio socat xz-utils kmod)
ensure_apt vm/setup.sh "${VM_APT_PACKAGES[@]}"

# Debian's nfs-ganesha package starts its own daemon on install where systemd runs; the bench
# starts its own instances, on their own ports, and never uses that one.

if [[ -f "$VMDIR/vmlinux" && -f "$VMDIR/kernel.version" && -d "$KDIR/lib/modules" ]]; then
    say "guest kernel cached: $(cat "$VMDIR/kernel.version") ($VMDIR/vmlinux)"
    exit 0
fi

mkdir -p "$VMDIR"
dl="$VMDIR/download"
rm -rf "$dl" "$KDIR" "$VMDIR/vmlinux" "$VMDIR/vmlinuz" "$VMDIR/kernel.version"
mkdir -p "$dl"

have_pkg() { [[ -n "$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | grep -v '(none)')" ]]; }
pkg="$KPKG_WANT"
if ! have_pkg "$pkg"; then
    apt_update_once
fi
if ! have_pkg "$pkg"; then
    pkg="$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | cut -d' ' -f1 | sort -V | tail -1)"
    [[ -n "$pkg" ]] || { say "no linux-image-6.1.0-*-amd64 in apt's lists"; exit 1; }
    say "$KPKG_WANT is gone from the archive; using $pkg"
fi
say "downloading $pkg"
(cd "$dl" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" </dev/null)
deb="$(ls "$dl"/*.deb)"
dpkg-deb -x "$deb" "$KDIR"
kver="$(ls "$KDIR/lib/modules")"
[[ $(wc -w <<<"$kver") -eq 1 ]] || { say "unexpected module trees: $kver"; exit 1; }
depmod -b "$KDIR" "$kver"
cp "$KDIR/boot/vmlinuz-$kver" "$VMDIR/vmlinuz"

# vmlinuz is a bzImage whose payload is XZ-compressed: find the XZ stream and decompress it into
# the ELF vmlinux that QEMU's -kernel boots directly (PVH entry point), skipping the real-mode
# setup and the self-decompressor.
off="$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$VMDIR/vmlinuz" | head -1 | cut -d: -f1 || true)"
# (xz stops after its stream and tail then dies of SIGPIPE: hence no pipe, which pipefail would fail.)
if [[ -n "$off" ]] && xz -dc --single-stream <(tail -c +"$((off + 1))" "$VMDIR/vmlinuz") >"$VMDIR/vmlinux.tmp" 2>/dev/null \
        && [[ "$(head -c 4 "$VMDIR/vmlinux.tmp" | od -An -c | tr -d ' ')" == "177ELF" ]]; then
    mv "$VMDIR/vmlinux.tmp" "$VMDIR/vmlinux"
else
    rm -f "$VMDIR/vmlinux.tmp"
    say "could not extract an ELF vmlinux from vmlinuz; booting the bzImage instead"
    cp "$VMDIR/vmlinuz" "$VMDIR/vmlinux"
fi
rm -rf "$dl"
echo "$kver $pkg" >"$VMDIR/kernel.version"
say "guest kernel ready: $kver ($pkg) at $VMDIR/vmlinux"
