#!/usr/bin/env bash
# Fuzzes every target of every cargo-fuzz folder of the repository for a
# fixed budget each, and records per target the executions, coverage,
# corpus size and findings in a summary table (printed, and written to a
# file). Exits non-zero when any target found something (or failed to build
# or run). CI runs it with a short budget (scripts/test.sh); the fixed-budget
# run recorded in docs/TESTING.md runs it with the default.
#
#   scripts/fuzz.sh                 # 10 minutes per target
#   FUZZ_SECS=60 scripts/fuzz.sh    # 1 minute per target
#   scripts/fuzz.sh agent/fuzz      # only these folders
#
# Environment:
#   FUZZ_SECS=N        seconds per target (default 600)
#   FUZZ_SUMMARY=PATH  where the table goes (default $CARGO_TARGET_DIR/fuzz/summary.md)
#   CARGO_TARGET_DIR   honoured (builds, corpora and logs go under its fuzz/)
#
# Folders are found, not listed: every */fuzz or */*/fuzz holding a
# Cargo.toml with `cargo-fuzz = true`; their targets come from
# `cargo fuzz list`. New inputs go to a corpus under the target directory
# (not committed); checked-in seeds, if a folder has seeds/<target>/, are
# read too. A finding's input is left under <folder>/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
FUZZ_SECS=${FUZZ_SECS:-600}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
OUT=$TARGET_DIR/fuzz
SUMMARY=${FUZZ_SUMMARY:-$OUT/summary.md}
# cargo-fuzz passes nightly-only -Z flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them (AddressSanitizer included).
FUZZ=(env RUSTC_BOOTSTRAP=1 cargo fuzz)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked (scripts/setup.sh with XRPCAP_FUZZ=1)" >&2
    exit 2
fi

discover() {
    local manifest
    for manifest in */fuzz/Cargo.toml */*/fuzz/Cargo.toml; do
        [ -e "$manifest" ] && grep -q '^cargo-fuzz *= *true' "$manifest" && dirname "$manifest"
    done
    return 0
}

if [ "$#" -gt 0 ]; then DIRS=("$@"); else mapfile -t DIRS < <(discover); fi
if [ "${#DIRS[@]}" -eq 0 ]; then
    echo "no cargo-fuzz folders found" >&2
    exit 2
fi

mkdir -p "$OUT" "$(dirname "$SUMMARY")"
REV=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
ROWS=()     # table rows, in run order
FAILED=0

# final_stat LOG NAME → the value of libFuzzer's final `stat::NAME: N`, or "?".
final_stat() {
    sed -n "s/^stat::$2: *\([0-9]*\).*/\1/p" "$1" | tail -n 1 | grep . || echo "?"
}

# last_status LOG FIELD → FIELD of the last status line (`#N ... cov: C ft: F corp: K/...`).
last_status() {
    grep -E '^#[0-9]+' "$1" | tail -n 1 | sed -n "s/.* $2: \([0-9]*\).*/\1/p" | grep . || echo "?"
}

# artifacts DIR TARGET → how many inputs libFuzzer left for TARGET (crash-,
# leak-, timeout-, oom-…).
artifacts() {
    if [ -d "$1/artifacts/$2" ]; then find "$1/artifacts/$2" -type f | wc -l; else echo 0; fi
}

# run_target DIR TARGET: fuzzes TARGET for FUZZ_SECS and adds its row.
run_target() {
    local dir=$1 t=$2 corpus seeds=() log rc=0 before after findings result
    # Two folders may have targets of the same name.
    corpus=$OUT/corpus/${dir//\//-}/$t
    mkdir -p "$corpus" "$OUT/logs"
    [ -d "$dir/seeds/$t" ] && seeds=("$dir/seeds/$t")
    log=$OUT/logs/${dir//\//-}-$t.log
    before=$(artifacts "$dir" "$t")
    echo "fuzzing $dir $t for ${FUZZ_SECS}s (log: $log)"
    # libFuzzer stops itself at max_total_time; the timeout is for a hang
    # outside it (build, startup).
    timeout $((FUZZ_SECS + 300)) "${FUZZ[@]}" run --fuzz-dir "$dir" --target-dir "$OUT" \
        "$t" "$corpus" "${seeds[@]}" \
        -- -max_total_time="$FUZZ_SECS" -print_final_stats=1 >"$log" 2>&1 || rc=$?
    after=$(artifacts "$dir" "$t")
    findings=$((after - before))
    if [ "$rc" -eq 0 ] && [ "$findings" -eq 0 ]; then
        result=ok
    else
        result="FINDING (exit $rc; inputs under $dir/artifacts/$t/)"
        FAILED=1
        tail -n 40 "$log"
    fi
    local execs rate
    execs=$(final_stat "$log" number_of_executed_units)
    rate=$(final_stat "$log" average_exec_per_sec)
    ROWS+=("| $dir | $t | $FUZZ_SECS | $execs | $rate | $(last_status "$log" cov) | $(last_status "$log" corp) | $findings | $result |")
    echo "  ${ROWS[-1]}"
}

for dir in "${DIRS[@]}"; do
    mapfile -t targets < <("${FUZZ[@]}" list --fuzz-dir "$dir")
    if [ "${#targets[@]}" -eq 0 ]; then
        echo "note: $dir has no fuzz targets"
        continue
    fi
    echo "building ${#targets[@]} fuzz targets of $dir: ${targets[*]}"
    if ! "${FUZZ[@]}" build --fuzz-dir "$dir" --target-dir "$OUT"; then
        ROWS+=("| $dir | (all) | $FUZZ_SECS | - | - | - | - | - | BUILD FAILED |")
        FAILED=1
        continue
    fi
    for t in "${targets[@]}"; do
        run_target "$dir" "$t"
    done
done

{
    echo "Fuzz run of $(date -u +%Y-%m-%d) at $REV, ${FUZZ_SECS} s per target, $(rustc --version)"
    echo
    echo "| folder | target | seconds | executions | exec/s | coverage | corpus | findings | result |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} >"$SUMMARY"
echo
cat "$SUMMARY"
echo
echo "summary written to $SUMMARY"
if [ "$FAILED" -ne 0 ]; then
    echo "RESULT: findings or failures above"
    exit 1
fi
echo "RESULT: no finding"
