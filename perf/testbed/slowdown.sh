#!/usr/bin/env bash
# Testbed scenario (issue 14): a source that slows down. Origin A (200 Mbit/s uplink,
# `-l B`) and mirror B (40 Mbit/s) publish the same 200 MiB file; a viewer host
# (1 Gbit/s) runs `p2pd get` from A, which names B; 2.5 s in, A's uplink is cut to
# 10 Mbit/s. Ideal: B's 40 plus A's 10 Mbit/s from then on. Root only; a few minutes.
# Writes perf/results/<date>-<commit>-testbed-slowdown.md with each binary's time and
# bytes per source.
#
#   sudo perf/testbed/slowdown.sh [P2PD_BIN ...]   default: a fresh release build;
#                                                  several binaries run side by side
set -euo pipefail
cd "$(dirname "$0")/../.."
. perf/testbed/net.sh

bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
    cargo build --release --locked --bin p2pd >&2
    bins=(target/release/p2pd)
fi
work=$(mktemp -d)
run="w$$"
run=${run:0:6}
trap 'tb_down; rm -rf "$work"' EXIT
size_mib=${PERF_SIZE_MIB:-200}
cut_after=${PERF_CUT_AFTER:-2.5}

mkdir -p "$work/media"
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/media/film.bin"

rows=()
for b in "${bins[@]}"; do
    bin=$(realpath "$b")
    tb_down
    tb_init "$run"
    tb_host a 1 200mbit 1gbit
    tb_host b 2 40mbit 1gbit
    tb_host viewer 3 1gbit 1gbit
    tb_exec b "$bin" -p "$work/media" --index-dir "$work/index-b" --bind "$(tb_ip b)" -P 1111 \
        2> "$work/b.log" &
    tb_exec a "$bin" -p "$work/media" --index-dir "$work/index-a" --bind "$(tb_ip a)" -P 1111 \
        -l "$(tb_ip b):1111" 2> "$work/a.log" &
    tb_wait_started "$work/a.log"
    tb_wait_started "$work/b.log"
    # Both index the file before the clock starts.
    tb_exec viewer "$bin" get -q -o "$work/warm.bin" "spp://$(tb_ip a):1111/film.bin" --timeout 60000 \
        >/dev/null 2>&1 || true
    tb_exec viewer "$bin" get -q -o "$work/warm.bin" "spp://$(tb_ip b):1111/film.bin" --timeout 60000 \
        >/dev/null 2>&1 || true
    start=$(date +%s.%N)
    (sleep "$cut_after"; tb_rate a up 10mbit) &
    cutter=$!
    tb_exec viewer "$bin" get -o "$work/out.bin" "spp://$(tb_ip a):1111/film.bin" \
        --timeout 60000 2> "$work/get.log" || true
    end=$(date +%s.%N)
    wait "$cutter" || true
    ok="byte-identical"
    cmp -s "$work/out.bin" "$work/media/film.bin" || ok="DIFFERENT"
    rm -f "$work/out.bin"
    took=$(echo "$end - $start" | bc -l)
    from=$(grep -E "from [0-9.]+:1111" "$work/get.log" | sed 's/^p2pd get: //' | tr '\n' ';')
    rows+=("| \`$b\` | $(printf '%.1f' "$took") s | $ok | ${from:-see log} |")
    echo "$b: $took s, $from" >&2
    pkill -f "index-a" 2>/dev/null || true
    pkill -f "index-b" 2>/dev/null || true
done

# Ideal: all of A's 200 and B's 40 Mbit/s until the cut, then 10 + 40.
ideal=$(echo "c = $cut_after; t = $size_mib * 8 * 1.048576; pre = 240 * c; if (pre >= t) t / 240 else c + (t - pre) / 50" | bc -l)
out=$(tb_result slowdown)
{
    echo "# Testbed: a source that slows down, $(date -u +%Y-%m-%dT%H:%MZ), $(basename "$out" .md)"
    echo
    echo "perf/testbed/slowdown.sh: origin A (uplink 200 Mbit/s, \`-l B\`), mirror B (40 Mbit/s),"
    echo "viewer (1 Gbit/s) runs \`p2pd get\` of ${size_mib} MiB from A; ${cut_after} s in, A's uplink is cut"
    echo "to 10 Mbit/s. Ideal (both links full all along): $(printf '%.1f' "$ideal") s."
    echo "Kernel $(uname -r), $(nproc) CPUs."
    echo
    echo "| binary | get took | bytes | by source |"
    echo "|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} > "$out"
cat "$out"
