#!/usr/bin/env bash
# Prepares the test bench: the OS packages it needs and a Python venv at $REPO/.bench/venv.
# Idempotent and fast on a re-run (no apt-get, no pip when nothing changed), safe with CI=true
# and no stdin.
set -euo pipefail

REPO="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
VENV="$REPO/.bench/venv"
REQS="$REPO/tests/bench/requirements.txt"
STAMP="$VENV/.requirements.sha256"

# Debian packages the bench needs; add to this list (e.g. musl-tools, nfs-ganesha, qemu-system-x86).
BENCH_APT_PACKAGES=(iproute2 iptables socat)
# install phase tests: a Debian minbase chroot (tests/chroot.py) and GNU time for the benchmark.
BENCH_APT_PACKAGES+=(debootstrap time)
# strace: the crash tests kill emrboot at chosen syscalls (strace -e inject=...:signal=KILL);
# file, rpm, qemu-user-static, systemd: the packaging tests (rpm -qlp, the aarch64 binary, verify).
BENCH_APT_PACKAGES+=(strace file rpm qemu-user-static systemd cpio)
# chromium: the cluster view's HTML page is rendered in a real headless browser (tests/test_cluster.py).
BENCH_APT_PACKAGES+=(chromium)
BENCH_APT_PACKAGES+=(${BENCH_APT_EXTRA:-})

export DEBIAN_FRONTEND=noninteractive

say() { echo "setup.sh: $*"; }

# python3-venv only matters where `python3 -m venv` cannot already make a venv with pip
# (pyenv's Python can; Debian's python3 cannot without it).
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    BENCH_APT_PACKAGES+=(python3-venv)
fi

# shellcheck source=apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
ensure_apt setup.sh "${BENCH_APT_PACKAGES[@]}"

if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi

want="$(sha256sum "$REQS" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
    say "installing $REQS into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS" </dev/null
    echo "$want" >"$STAMP"
else
    say "venv up to date ($VENV)"
fi

# The VM bench (tests/vm): nfs-ganesha, QEMU, busybox and the cached guest kernel.
bash "$REPO/tests/vm/setup.sh"
