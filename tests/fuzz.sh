#!/usr/bin/env bash
# Fuzzes the two parsers of untrusted files with libFuzzer + AddressSanitizer: the config
# (fuzz/fuzz_targets/config.rs) and the EMR info files (fuzz_targets/info_file.rs), each for
# FUZZ_SECONDS (default 60), with corpora seeded from the fixtures. Exits non-zero on a crash
# (the input is left in fuzz/artifacts/<target>/). Prints executions per target.
#
# Builds the targets with cargo directly, with the flags `cargo fuzz build` passes (cargo-fuzz
# 0.13: sancov at coverage level 4 with inline 8-bit counters, the PC table and compare tracing,
# --cfg fuzzing, ASan, debug assertions), so a fresh machine does not spend minutes on
# `cargo install cargo-fuzz`. `cargo +nightly fuzz run config` works the same on a developer's
# machine. --target keeps RUSTFLAGS off build scripts and proc macros, as cargo-fuzz does.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TRIPLE="x86_64-unknown-linux-gnu"
TARGETS=(config info_file)

# libFuzzer's flags need nightly; without a nightly toolchain, stable accepts them this way.
if rustup toolchain list | grep -q '^nightly'; then
    TOOLCHAIN=(+nightly)
else
    TOOLCHAIN=()
    export RUSTC_BOOTSTRAP=1
fi
flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    -Cllvm-args=-sanitizer-coverage-stack-depth
    --cfg fuzzing
    -Zsanitizer=address
    -Cdebug-assertions
    -Coverflow-checks
)
echo "== build the fuzz targets (libFuzzer + ASan, $TRIPLE)"
RUSTFLAGS="${flags[*]}" cargo "${TOOLCHAIN[@]}" build --quiet --manifest-path fuzz/Cargo.toml \
    --release --locked --target "$TRIPLE" --bins
bin_dir="fuzz/target/$TRIPLE/release"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/config" "$work/info_file"
cp tests/data/*.toml packaging/emrboot.toml.example "$work/config/"
for f in ../shared/fixtures/emr-info/*/*.json; do
    cp "$f" "$work/info_file/$(basename "$(dirname "$f")")-$(basename "$f")"
done

export ASAN_OPTIONS="detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
for target in "${TARGETS[@]}"; do
    echo "== fuzz $target for ${SECONDS_EACH}s (seeds: $(ls "$work/$target" | wc -l))"
    log="$work/$target.log"
    mkdir -p "fuzz/artifacts/$target"
    rc=0
    "$bin_dir/$target" "$work/$target" -artifact_prefix="fuzz/artifacts/$target/" \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|Done [0-9]+ runs" "$log" || true
    if ((rc)); then
        tail -40 "$log"
        echo "fuzz.sh: $target failed (exit $rc); a crashing input is in fuzz/artifacts/$target/"
        exit 1
    fi
done
