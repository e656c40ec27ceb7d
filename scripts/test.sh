#!/usr/bin/env bash
# The whole test suite, and what CI runs (.ci/run): first the habit gates (formatting,
# clippy, rustdoc; the first that fails stops the run with one line saying how to fix
# it), then unit tests, codec property tests and the integration tests that start real
# p2pd processes on loopback addresses. One build, reused by all: every cargo command
# here uses the same target directory (target/, or $CARGO_TARGET_DIR).
#
#   scripts/test.sh [ARGS...]    ARGS go to `cargo test`, e.g. `--test p2p` or
#                                `-- --test-threads=1`; the gates always run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

# gate NAME FIX COMMAND...: runs COMMAND; if it fails, says which gate and how to fix it.
gate() {
    local name=$1 fix=$2
    shift 2
    echo "== $name: $*" >&2
    if ! "$@"; then
        echo "scripts/test.sh: the $name gate failed: $fix" >&2
        exit 1
    fi
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

cargo build --all-targets --locked
cargo test --locked "$@"
