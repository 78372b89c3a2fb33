#!/usr/bin/env bash
# Runs every test of xrpcapd: prerequisites, formatting, lints, unit/property/
# integration tests and the end-to-end tests (real binaries in network
# namespaces) as root, including those marked #[ignore = "needs root"]; the
# same test binaries again as an unprivileged user (they must pass there,
# root-only tests reported ignored); the demo, the packages, and bounded fuzz
# runs. Run it as root.
# Prints the time of each stage and a summary; exits non-zero on any failure.
#
#   scripts/test.sh
#
# Environment:
#   XRPCAP_FUZZ_SECS=N   seconds per fuzz target (default 20; 0 skips fuzzing)
#   CARGO_TARGET_DIR     honoured (the e2e tests find the binaries there)
#
# Every stage runs even when an earlier one failed (except setup), so one
# run shows everything that is wrong.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
FUZZ_SECS=${XRPCAP_FUZZ_SECS:-20}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac

STAGES=()   # "name|status|seconds"
FAILED=0
T_START=$EPOCHREALTIME

banner() { printf '\n=== %s ===\n' "$*"; }

elapsed_since() { # start → seconds with one decimal
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

# stage NAME FUNCTION: runs FUNCTION, records its status and time.
# Functions chain their commands with && / `|| return 1` because `set -e` is
# suspended inside a function whose status is tested.
stage() {
    local name=$1 fn=$2 t0 status
    banner "$name"
    t0=$EPOCHREALTIME
    if "$fn"; then status=ok; else status=FAILED; FAILED=1; fi
    # A function may downgrade itself to "skipped" by setting STAGE_NOTE.
    if [ "$status" = ok ] && [ -n "${STAGE_NOTE:-}" ]; then status="skipped: $STAGE_NOTE"; fi
    STAGE_NOTE=
    STAGES+=("$name|$status|$(elapsed_since "$t0")")
    printf -- '--- %s: %s (%ss)\n' "$name" "$status" "$(elapsed_since "$t0")"
}

run_setup() {
    XRPCAP_FUZZ=$([ "$FUZZ_SECS" = 0 ] && echo 0 || echo 1) scripts/setup.sh
}

run_fmt() { cargo fmt --all --check; }

run_clippy() { cargo clippy --workspace --all-targets -- -D warnings; }

# The e2e tests run the binaries, which `cargo test` does not build for another
# package's tests: build them once, in the same (debug) profile the tests use.
run_build() { cargo build --workspace --bins; }

# Benchmarks and reports are #[ignore]d too (they report figures, they do not
# assert behaviour: TESTING.md); --include-ignored must not start them.
BENCHMARKS=(
    bench_afxdp_against_afpacket bench_gso_against_sendmmsg bench_afpacket_flood
    throughput_report thousand_agents_report verify_cost
)

# Every test, the root-only ones (#[ignore = "needs root"]) included.
run_tests() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "note: not root: the tests marked \"needs root\" will fail, as they must"
    fi
    local skips=() b
    for b in "${BENCHMARKS[@]}"; do skips+=(--skip "$b"); done
    XRPCAP_BIN_DIR=$TARGET_DIR/debug cargo test --workspace --no-fail-fast -- --include-ignored "${skips[@]}"
}

# The same test binaries (built above, as root) run as uid/gid 65534, each from
# its package's folder as cargo runs it: they must pass without privileges,
# with the root-only tests reported ignored. This keeps a plain `cargo test`
# green on a laptop.
run_tests_unprivileged() {
    if [ "$(id -u)" -ne 0 ]; then STAGE_NOTE="not root: the test stage above ran unprivileged"; return 0; fi
    local list manifest exe status=0
    list=$(cargo test --workspace --no-run --message-format=json |
        jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
               | "\(.manifest_path) \(.executable)"') || return 1
    while read -r manifest exe; do
        echo "--- $(basename "$exe") as uid 65534"
        (cd "$(dirname "$manifest")" &&
            setpriv --reuid=65534 --regid=65534 --clear-groups "$exe" -q) || status=1
    done <<<"$list"
    return "$status"
}

# The README's main command, on the debug build (byte-for-byte check included).
run_demo() {
    rm -rf "$TARGET_DIR/demo" && XRPCAP_DEMO_PROFILE=debug XRPCAP_DEMO_DIR=$TARGET_DIR/demo scripts/demo.sh
}

# The deb and rpm packages (agent, sensor, debug symbols), built with cargo-deb
# and cargo-generate-rpm from stripped debug binaries, checked: contents,
# scripts, lintian, rpmlint, requires, units and portable baseline.
run_packaging() { packaging/check.sh; }

# Every target of every fuzz folder for FUZZ_SECS each (scripts/fuzz.sh finds
# the folders and targets, and writes its table to target/fuzz/summary.md).
run_fuzz() {
    if [ "$FUZZ_SECS" = 0 ]; then STAGE_NOTE="XRPCAP_FUZZ_SECS=0"; return 0; fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "note: cargo-fuzz is not installed (setup could not install it): fuzzing skipped"
        STAGE_NOTE="no cargo-fuzz"; return 0
    fi
    FUZZ_SECS=$FUZZ_SECS CARGO_TARGET_DIR=$TARGET_DIR scripts/fuzz.sh
}

stage setup run_setup || true
if [ "$FAILED" -ne 0 ]; then
    echo "setup failed: stopping"
    exit 1
fi
stage "cargo fmt --check" run_fmt
stage "cargo clippy -D warnings" run_clippy
stage "cargo build (binaries)" run_build
stage "cargo test --workspace" run_tests
stage "tests as uid 65534" run_tests_unprivileged
stage "demo (scripts/demo.sh)" run_demo
stage "packaging" run_packaging
stage "fuzz (${FUZZ_SECS}s per target)" run_fuzz

banner summary
for s in "${STAGES[@]}"; do
    IFS='|' read -r name status secs <<<"$s"
    printf '  %-28s %-34s %7ss\n' "$name" "$status" "$secs"
done
printf '  %-28s %-34s %7ss\n' total "" "$(elapsed_since "$T_START")"
if [ "$FAILED" -ne 0 ]; then
    echo "RESULT: FAILED"
    exit 1
fi
echo "RESULT: all stages passed"
