#!/usr/bin/env bash
# The whole test suite, and what CI runs (.ci/run): first the habit gates (formatting,
# clippy, rustdoc; the first that fails stops the run with one line saying how to fix
# it), then unit tests, codec property tests and the integration tests that start real
# p2pd processes on loopback addresses. One build, reused by all: every cargo command
# here uses the same target directory (target/, or $CARGO_TARGET_DIR).
# Each phase's wall time is printed as it ends, so a slow one is seen at once.
#
#   scripts/test.sh [ARGS...]    ARGS go to `cargo test` instead of the default runs,
#                                e.g. `--test it p2p::` or `-- --test-threads=1`; the
#                                gates always run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

# phase COMMAND...: runs COMMAND and says how long it took (stops the script if it fails).
phase() {
    local start=$SECONDS
    "$@"
    echo "== $* took $((SECONDS - start)) s" >&2
}

# gate NAME FIX COMMAND...: runs COMMAND; if it fails, says which gate and how to fix it.
gate() {
    local name=$1 fix=$2 start=$SECONDS
    shift 2
    echo "== $name: $*" >&2
    if ! "$@"; then
        echo "scripts/test.sh: the $name gate failed: $fix" >&2
        exit 1
    fi
    echo "== $name took $((SECONDS - start)) s" >&2
}

gate formatting "run 'cargo fmt --all' and commit the result" \
    cargo fmt --all --check
# fuzz/ is its own crate and workspace (only scripts/fuzz.sh builds it), so
# `cargo fmt --all` does not reach it: its targets are checked here directly.
gate formatting "run 'rustfmt --edition 2021 fuzz/fuzz_targets/*.rs' and commit the result" \
    rustfmt --edition 2021 --check fuzz/fuzz_targets/*.rs
gate clippy "fix the warnings above (CONTRIBUTING.md, 'The habit gates')" \
    cargo clippy --all-targets --locked -- -D warnings
gate rustdoc "fix the doc comments above (CONTRIBUTING.md, 'The habit gates')" \
    env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked

if [ $# -gt 0 ]; then
    phase cargo test --locked "$@"
    exit
fi
# Everything: the unit tests (some time the runtime's budgets, so one thread per core),
# then the integration tests, which mostly wait on processes and sockets: two threads
# per core (tests that measure run alone, see tests/it/harness/alone.rs). clippy has
# already checked every target, benches included; these build only what they run.
phase cargo test --locked --lib --bins
phase cargo test --locked --test it -- --test-threads="$(( 2 * $(nproc) ))"
phase cargo test --locked --doc
