#!/usr/bin/env bash
# The whole test suite: unit tests, codec property tests and the integration tests
# that start real p2pd processes on loopback addresses. One build, reused by all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --all-targets --locked
cargo test --locked "$@"
