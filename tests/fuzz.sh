#!/usr/bin/env bash
# Fuzzes the two parsers of untrusted files with cargo-fuzz (libFuzzer + AddressSanitizer):
# the config (fuzz/fuzz_targets/config.rs) and the EMR info files (fuzz_targets/info_file.rs),
# each for FUZZ_SECONDS (default 60), with corpora seeded from the fixtures. Exits non-zero on a
# crash (libFuzzer leaves the input in fuzz/artifacts/). Prints executions per target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_EACH="${FUZZ_SECONDS:-60}"
CARGO_FUZZ_VERSION="0.13.1"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
# libFuzzer's flags need nightly; without a nightly toolchain, stable accepts them this way.
if rustup toolchain list | grep -q '^nightly'; then
    TOOLCHAIN=(+nightly)
else
    TOOLCHAIN=()
    export RUSTC_BOOTSTRAP=1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/config" "$work/info_file"
cp tests/data/*.toml packaging/emrboot.toml.example "$work/config/"
for f in ../shared/fixtures/emr-info/*/*.json; do
    cp "$f" "$work/info_file/$(basename "$(dirname "$f")")-$(basename "$f")"
done

for target in config info_file; do
    echo "== fuzz $target for ${SECONDS_EACH}s (seeds: $(ls "$work/$target" | wc -l))"
    log="$work/$target.log"
    rc=0
    cargo "${TOOLCHAIN[@]}" fuzz run --fuzz-dir fuzz "$target" "$work/$target" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|Done [0-9]+ runs" "$log" || true
    if ((rc)); then
        tail -40 "$log"
        echo "fuzz.sh: $target failed (exit $rc); a crashing input is in fuzz/artifacts/$target/"
        exit 1
    fi
done
