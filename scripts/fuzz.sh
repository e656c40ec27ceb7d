#!/usr/bin/env bash
# Coverage-guided fuzzing of p2pd's input paths with libFuzzer, on the stable
# toolchain: builds the fuzz/ crate once with the flags cargo-fuzz passes (no
# sanitizer), then runs every target for SECONDS (default 60) on its committed corpus
# (fuzz/corpus/<target>/), one target at a time, one process each, under `nice`.
#
#   scripts/fuzz.sh [SECONDS]     FUZZ_TARGETS="registry spp_decode": only these;
#                                 FUZZ_RUNS=N: stop a target after N executions too;
#                                 FUZZ_MAX_LEN=BYTES: inputs at most this long
#
# Prints per target the executions and whether it crashed; exits non-zero on any
# crash. Crash inputs stay in fuzz/artifacts/<target>/ (git-ignored): fix the bug, then
# move the input to fuzz/regressions/<target>/ so `cargo test` replays it for ever.
# New inputs found in a run are merged (libFuzzer -merge=1, only those adding
# coverage) into fuzz/corpus/<target>/, minimized afresh each time, the seed-* files
# kept. Logs go to fuzz/logs/ and a summary line per target to fuzz/logs/summary.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
case "$secs" in
'' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS]" >&2
    exit 2
    ;;
esac
read -r -a targets <<<"${FUZZ_TARGETS:-spp_decode spp_session http_request http_connection registry}"

if ! command -v c++ >/dev/null 2>&1; then
    echo "libfuzzer-sys compiles libFuzzer (C++): run scripts/install-deps.sh first" >&2
    exit 1
fi

host=$(rustc -vV | sed -n 's/^host: //p')
# What cargo-fuzz passes with `--sanitizer none` on Linux (src/project.rs there), plus
# overflow checks, so arithmetic overflow is a finding as in the test build.
flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    -Cllvm-args=-simplifycfg-branch-fold-threshold=0
    -Cllvm-args=-sanitizer-coverage-stack-depth
    --cfg fuzzing
    -Clink-dead-code
    -Cdebug-assertions
    -Coverflow-checks
    -Ccodegen-units=1
)
export RUSTFLAGS="${flags[*]} ${RUSTFLAGS:-}"
# --target keeps the flags off build scripts and proc macros, as cargo-fuzz does; the
# own target dir keeps these artifacts apart from the normal build's.
cargo build --manifest-path fuzz/Cargo.toml --locked --release --target "$host" \
    --target-dir fuzz/target --bins
bindir=fuzz/target/$host/release

mkdir -p fuzz/logs
summary=fuzz/logs/summary.tsv
printf 'target\tseconds\texecutions\texec_per_s\tcorpus_files\tcorpus_bytes\tcrashed\n' >"$summary"
failed=()
for t in "${targets[@]}"; do
    bin=$bindir/$t
    [ -x "$bin" ] || { echo "no fuzz target $t" >&2; exit 2; }
    corpus=fuzz/corpus/$t
    grown=fuzz/corpus-new/$t
    mkdir -p "$corpus" "fuzz/artifacts/$t" "$grown"
    log=fuzz/logs/$t.log
    extra=()
    merge_extra=()
    [ -n "${FUZZ_RUNS:-}" ] && extra+=(-runs="$FUZZ_RUNS")
    # Heads up to the 16 KiB limit and past it (431).
    [ "$t" = http_request ] && extra+=(-max_len=17000) && merge_extra+=(-max_len=17000)
    # Shorter inputs run faster (the registry target's 4 KiB inputs hold 512
    # operations each): FUZZ_MAX_LEN caps them for a run, not for the merge (which
    # would cut the corpus's longer inputs).
    [ -n "${FUZZ_MAX_LEN:-}" ] && extra+=(-max_len="$FUZZ_MAX_LEN")
    echo "== $t: ${secs}s (log $log)"
    rc=0
    began=$(date +%s)
    # New inputs go to the first directory (scratch); the committed corpus seeds it.
    nice -n 10 "$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="fuzz/artifacts/$t/" "${extra[@]}" \
        "$grown" "$corpus" >"$log" 2>&1 || rc=$?
    took=$(($(date +%s) - began))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    execs=${execs:-0}
    crashed=no
    # 72: libFuzzer was interrupted (SIGINT, e.g. to free the machine): no finding;
    # what it found so far is merged as after a full run.
    if [ "$rc" -eq 72 ]; then
        echo "   interrupted after $execs executions"
        rc=0
    fi
    if [ "$rc" -ne 0 ]; then
        crashed=yes
        failed+=("$t")
        echo "   CRASH (exit $rc): $(grep -m1 -E 'panicked|ERROR: libFuzzer|deadly signal' "$log" || true)"
        ls -1t "fuzz/artifacts/$t" | head -1 | sed "s|^|   artifact: fuzz/artifacts/$t/|"
    else
        # Minimize: the seeds first, then whatever of the old corpus and the new
        # inputs adds coverage to them (edges and comparisons; hit counts are left
        # out, which keeps the corpus about a tenth the size for the same edges).
        fresh=$(mktemp -d fuzz/logs/merge.XXXXXX)
        cp "$corpus"/seed-* "$fresh"/ 2>/dev/null || true
        old=$(mktemp -d fuzz/logs/old.XXXXXX)
        find "$corpus" -maxdepth 1 -type f ! -name 'seed-*' -exec mv -t "$old" {} +
        nice -n 10 "$bin" -merge=1 -use_counters=0 -runs=-1 "${merge_extra[@]}" \
            "$fresh" "$old" "$grown" \
            >>"$log" 2>&1
        find "$corpus" -maxdepth 1 -type f -delete
        mv "$fresh"/* "$corpus"/
        rm -rf "$fresh" "$old" "$grown"
    fi
    files=$(find "$corpus" -type f | wc -l)
    bytes=$(du -sb "$corpus" | cut -f1)
    # Per second actually fuzzed (a -runs cap or a crash ends a target early).
    rate=$((execs / (took > 0 ? took : 1)))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$took" "$execs" "$rate" "$files" "$bytes" \
        "$crashed" >>"$summary"
    echo "   $execs executions in ${took}s (~$rate/s), corpus $files files / $bytes bytes, crashed: $crashed"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crashes"
