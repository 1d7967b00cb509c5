#!/usr/bin/env bash
# Fuzzing smoke for CI (issue 18): builds every cargo-fuzz target in fuzz/
# and runs each for FUZZ_SECONDS (default 30) from the committed seed corpus
# (fuzz/corpus/<target>, never the corpus a long run grew), with its
# dictionary. A crash, a panic, a failed oracle or an input that takes over
# 10 s fails the script; libFuzzer leaves the input in
# fuzz/artifacts/<target>/ (make it a regression test beside the code).
#
# Needs nightly (`cargo +nightly fuzz`); without it, stable with
# RUSTC_BOOTSTRAP=1 (the stable std ships the ASan runtime). Installs
# cargo-fuzz when missing. Builds into ${CARGO_TARGET_DIR:-target}/fuzz.
#
#   bash fuzz/ci.sh                    # every target, 30 s each
#   FUZZ_SECONDS=600 bash fuzz/ci.sh facts config
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${FUZZ_SECONDS:-30}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    echo "== no nightly toolchain: stable with RUSTC_BOOTSTRAP=1"
    fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
fi
target_dir="${CARGO_TARGET_DIR:-$root/target}/fuzz"

echo "== fuzz: build"
"${fuzz[@]}" build --target-dir "$target_dir"

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <("${fuzz[@]}" list)
fi
for t in "${targets[@]}"; do
    echo "== fuzz: $t for ${secs}s from fuzz/corpus/$t"
    # New inputs go to a scratch directory (libFuzzer writes to the first
    # corpus directory only): the committed seeds stay as they are.
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    "${fuzz[@]}" run --target-dir "$target_dir" "$t" "$scratch" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -dict="fuzz/dict/$t.dict" -print_final_stats=1
    rm -rf "$scratch"
done
echo "== fuzz: ${#targets[@]} targets, ${secs}s each, no crash"
