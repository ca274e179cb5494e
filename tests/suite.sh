#!/usr/bin/env bash
# The whole test suite: lint, unit tests, then the built binary against the test bench
# (moto, the IMDS emulator, network namespaces). Installs what it needs; safe on a fresh machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

step "bench setup"
bash tests/bench/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build"
cargo build --workspace --locked

step "cargo build (static, for the VM tests: glibc crt-static)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build -p emrboot --locked --target x86_64-unknown-linux-gnu

step "cargo test (unit)"
cargo test --workspace --locked

step "bench tests (built binary against moto, IMDS emulator, netns)"
export EMRBOOT_BIN="$PWD/target/debug/emrboot"
.bench/venv/bin/pytest tests -q -p no:cacheprovider "$@"
