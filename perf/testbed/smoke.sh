#!/usr/bin/env bash
# Testbed smoke run (issue 14): checks that the emulated links are what they claim
# before any scenario leans on them. Root only; about a minute.
#
# An origin with a 50 Mbit/s uplink and a viewer host with a 20 Mbit/s downlink, each
# in its own namespace (see net.sh): `p2pd get` of a 24 MiB file must take the
# narrower link's time (20 Mbit/s), within 15%; then the origin's uplink drops to
# 8 Mbit/s and a second get must take that one's. A host silenced with tb_silence must
# not be reachable. Writes perf/results/<date>-<commit>-testbed-smoke.md.
#
#   sudo perf/testbed/smoke.sh      PERF_P2PD_BIN=path to use a built binary
set -euo pipefail
cd "$(dirname "$0")/../.."
. perf/testbed/net.sh

bin=${PERF_P2PD_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --locked --bin p2pd >&2
    bin=target/release/p2pd
fi
bin=$(realpath "$bin")
work=$(mktemp -d)
run="s$$"
run=${run:0:6}
trap 'tb_down; rm -rf "$work"' EXIT

tb_init "$run"
tb_host origin 1 50mbit 1gbit
tb_host viewer 2 1gbit 20mbit
tb_host quiet 3 1gbit 1gbit

mkdir -p "$work/media"
head -c $((24 * 1024 * 1024)) /dev/urandom > "$work/media/film.bin"
tb_exec origin "$bin" -p "$work/media" --index-dir "$work/index" --bind "$(tb_ip origin)" -P 1111 \
    2> "$work/origin.log" &
tb_wait_started "$work/origin.log"

# get_secs: seconds `p2pd get` takes for the film from the viewer host.
get_secs() {
    local s e
    s=$(date +%s.%N)
    tb_exec viewer "$bin" get -q -o "$work/out.bin" "spp://$(tb_ip origin):1111/film.bin" >&2
    e=$(date +%s.%N)
    cmp -s "$work/out.bin" "$work/media/film.bin" || { echo "the film arrived changed" >&2; exit 1; }
    rm -f "$work/out.bin"
    echo "$e - $s" | bc -l
}

bits=$((24 * 1024 * 1024 * 8))
check() {
    local what=$1 secs=$2 rate_bps=$3
    local got ratio
    got=$(echo "$bits / $secs" | bc -l)
    ratio=$(echo "$got / $rate_bps" | bc -l)
    printf '| %s | %.1f Mbit/s | %.2f s | %.1f Mbit/s | %.2f |\n' \
        "$what" "$(echo "$rate_bps / 1000000" | bc -l)" "$secs" "$(echo "$got / 1000000" | bc -l)" "$ratio"
    # Within 15% below (TCP's ramp and headers) and a little above (token bucket bursts).
    if [ "$(echo "$ratio < 0.85 || $ratio > 1.05" | bc -l)" = 1 ]; then
        echo "testbed: $what moved at ${ratio}x its link rate" >&2
        return 1
    fi
}

rows=()
fail=0
rows+=("$(check "viewer downlink 20 Mbit/s" "$(get_secs)" 20000000)") || fail=1
tb_rate origin up 8mbit
rows+=("$(check "origin uplink cut to 8 Mbit/s" "$(get_secs)" 8000000)") || fail=1
tb_silence quiet
if tb_exec viewer timeout 3 bash -c "exec 3<>/dev/tcp/$(tb_ip quiet)/22" 2>/dev/null; then
    silence="reachable (wrong)"
    fail=1
elif tb_exec viewer timeout 3 bash -c "exec 3<>/dev/tcp/$(tb_ip origin)/1111" 2>/dev/null; then
    silence="no answer within 3 s, the origin still reachable"
else
    silence="the origin is not reachable either (wrong)"
    fail=1
fi

out=$(tb_result smoke)
{
    echo "# Testbed smoke run, $(date -u +%Y-%m-%dT%H:%MZ), $(basename "$out" .md)"
    echo
    echo "perf/testbed/smoke.sh: hosts in network namespaces on a bridge, links shaped with"
    echo "tc tbf (net.sh); \`p2pd get\` of a 24 MiB file from the origin host to the viewer host."
    echo "Kernel $(uname -r), $(nproc) CPUs."
    echo
    echo "| link | shaped | get took | achieved | achieved / shaped |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "A silenced host: $silence."
    echo
    [ "$fail" = 0 ] && echo "Result: the links are what they claim." || echo "Result: FAILED (see above)."
} > "$out"
cat "$out"
exit "$fail"
