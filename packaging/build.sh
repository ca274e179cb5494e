#!/usr/bin/env bash
# Builds the release: static emrboot binaries for x86_64 and aarch64 (musl, cross-linked with
# zig through cargo-zigbuild), smoke-tests the aarch64 one under qemu-user, then the RPMs.
# Prints each binary's size and sha256. Installs what it needs (apt: rpm, qemu-user-static;
# rustup targets; a venv with ziglang and cargo-zigbuild from PyPI). Safe on a fresh machine
# and with CI=true and no stdin.
#
#   packaging/build.sh [--out DIR] [--check-aarch64]     default DIR: dist/
#
# --check-aarch64 (tests/suite.sh only, never a release): builds the aarch64 binary with the
# `cross-check` profile (no optimisation, no LTO) instead of `release`. It still proves that
# aarch64 cross-compiles, links statically, runs under qemu-user and packs into an RPM, in a
# third of the time; x86_64 is built with the shipped `release` profile either way, and is the
# binary the bench tests run. dist/NOT-FOR-RELEASE then says which binary is not shippable.
#
# Why musl: a glibc static binary still dlopen()s NSS modules for any hosts: source in
# nsswitch.conf other than files/dns (AL2023 lists myhostname/resolve), loading the node's
# libc-version-specific modules into our glibc; musl has no NSS. Why zig: Debian ships no
# aarch64 musl C toolchain, and aws-lc-sys (the SDK's TLS crypto) needs one.
set -euo pipefail

REPO="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
cd "$REPO"
OUT="$REPO/dist"
AARCH64_PROFILE="release"
while (($#)); do
    case "$1" in
        --out) OUT="$(realpath -m "${2:?--out needs a directory}")"; shift 2 ;;
        --check-aarch64) AARCH64_PROFILE="cross-check"; shift ;;
        *) echo "packaging/build.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
VENV="$REPO/.bench/pkg-venv"
ZIG_VERSION="0.17.1"
ZIGBUILD_VERSION="0.24.1"
export DEBIAN_FRONTEND=noninteractive
say() { echo "packaging/build.sh: $*"; }

# --- tools
# shellcheck source=../tests/bench/apt.sh
source "$REPO/tests/bench/apt.sh"
ensure_apt packaging/build.sh rpm qemu-user-static file
installed="$(rustup target list --installed)"
for t in "${TARGETS[@]}"; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
if ! "$VENV/bin/cargo-zigbuild" --version >/dev/null 2>&1 || ! "$VENV/bin/python-zig" version >/dev/null 2>&1; then
    say "installing ziglang $ZIG_VERSION and cargo-zigbuild $ZIGBUILD_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "ziglang==$ZIG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
fi
export PATH="$VENV/bin:$PATH"

# --- binaries
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
commit="$(git rev-parse --short=12 HEAD)"
[[ -z "$(git status --porcelain --untracked-files=no)" ]] || commit="$commit-dirty"
export EMRBOOT_GIT_COMMIT="$commit"
mkdir -p "$OUT"
rm -f "$OUT/NOT-FOR-RELEASE"
for t in "${TARGETS[@]}"; do
    arch="${t%%-*}"
    profile="release"
    [[ "$arch" == aarch64 ]] && profile="$AARCH64_PROFILE"
    say "cargo zigbuild --profile $profile --target $t (commit $commit)"
    cargo zigbuild --profile "$profile" --locked -p emrboot --target "$t"
    install -m 0755 "target/$t/$profile/emrboot" "$OUT/emrboot-$arch"
    if [[ "$profile" != release ]]; then
        echo "emrboot-$arch and its RPM: built with the $profile profile by --check-aarch64; do not ship" \
            >> "$OUT/NOT-FOR-RELEASE"
    fi
done

# --- smoke tests: static, and the aarch64 one answers under qemu-user
for arch in x86_64 aarch64; do
    desc="$(file -b "$OUT/emrboot-$arch")"
    [[ "$desc" == *"statically linked"* || "$desc" == *"static-pie linked"* ]] \
        || { say "emrboot-$arch is not static: $desc"; exit 1; }
done
"$OUT/emrboot-x86_64" --version
qemu-aarch64-static "$OUT/emrboot-aarch64" --version
fixtures="$REPO/../shared/fixtures/emr-info"
for kind in master-ig core-ig; do
    echo "$kind: $(qemu-aarch64-static "$OUT/emrboot-aarch64" --info-dir "$fixtures/$kind" role)"
done

# --- docs generated from the CLI itself
stage="$OUT/stage"
rm -rf "$stage" && mkdir -p "$stage"
"$OUT/emrboot-x86_64" man | gzip -9n > "$stage/emrboot.1.gz"
"$OUT/emrboot-x86_64" completions bash > "$stage/emrboot.bash"
"$OUT/emrboot-x86_64" completions zsh > "$stage/_emrboot"
"$OUT/emrboot-x86_64" completions fish > "$stage/emrboot.fish"
cp systemd/emrboot-boot.service systemd/emrboot-release-ip.service packaging/emrboot.toml.example README.md "$stage/"
"$OUT/emrboot-x86_64" validate "$stage/emrboot.toml.example" >/dev/null

# --- RPMs (rpmbuild from Debian's rpm package; the spec only copies files)
rm -f "$OUT"/emrboot-*.rpm
rpm_version="${version//-/_}"
rpm_release="1.g${commit//-/_}"
for arch in x86_64 aarch64; do
    top="$OUT/rpmbuild-$arch"
    rm -rf "$top" && mkdir -p "$top"
    cp "$OUT/emrboot-$arch" "$stage/emrboot"
    rpmbuild -bb --quiet --target "$arch-linux" \
        --define "_topdir $top" --define "srcdir $stage" \
        --define "emrboot_version $rpm_version" --define "emrboot_release $rpm_release" \
        --define "_rpmdir $OUT" --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
        packaging/emrboot.spec
    rm -rf "$top"
done
rm -rf "$stage"

# --- report
(cd "$OUT" && sha256sum emrboot-x86_64 emrboot-aarch64 ./*.rpm | sed 's# \./# #' > SHA256SUMS)
say "built (commit $commit):"
for f in emrboot-x86_64 emrboot-aarch64 "emrboot-$rpm_version-$rpm_release.x86_64.rpm" "emrboot-$rpm_version-$rpm_release.aarch64.rpm"; do
    size="$(stat -c %s "$OUT/$f")"
    printf '  %-48s %10s bytes  %s MiB  sha256 %s\n' "$f" "$size" \
        "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')" "$(sha256sum "$OUT/$f" | cut -d' ' -f1)"
done
