#!/usr/bin/env bash
# Testbed viewer scenarios (issue 14): viewers with a real playout buffer (p2pd-bench's
# VoD model, one viewer per host, through the host's own client cache as a player with
# http_proxy would) on shaped links, with and without p2p mode. Root only.
#
#   sudo perf/testbed/viewers.sh SCENARIO [P2PD_BIN ...]
#     e2   origin with a 50 Mbit/s uplink; 12 viewers 5 s apart, 8 Mbit/s, one 80 MiB
#          title, uplinks PERF_UPLINK (5mbit); variants: plain, -i on the origin
#     e3   origin and a site cache on 1 Gbit/s; 10 viewers below the site cache
#          (-S site), uplinks PERF_UPLINK (5mbit); variants: plain, -i on the cache
#     cdn  50 nodes: origin (1 Gbit/s), two site caches (500 Mbit/s up, -S origin, -i),
#          47 viewers with uplinks of 1, 5 and 20 Mbit/s in turn, half below each site
#          cache, three 40 MiB titles, arrivals 1 s apart; every viewer's copy is
#          compared with the title afterwards (byte-identical)
#   Binaries run side by side (default: a fresh release build); the bench is always
#   this tree's p2pd-bench (it needs --proxy). PERF_VARIANTS limits the variants;
#   PERF_KEEP=DIR keeps the nodes' logs and the viewers' reports; PERF_UPLOAD_SHARE=X
#   (0 < X <= 1) runs every node with --upload-rate at X of its host's uplink, as a
#   BitTorrent user sets an upload limit below the line's rate.
# Writes perf/results/<date>-<commit>-testbed-<scenario>[-<uplink>].md with one row per
# binary and variant (see perf/testbed/viewers.py for the figures).
set -euo pipefail
cd "$(dirname "$0")/../.."
. perf/testbed/net.sh

scenario=${1:?usage: viewers.sh e2|e3|cdn [P2PD_BIN ...]}
shift
bins=("$@")
cargo build --release --locked --bin p2pd --bin p2pd-bench >&2
[ ${#bins[@]} -eq 0 ] && bins=(target/release/p2pd)
bench=$(realpath target/release/p2pd-bench)
uplink=${PERF_UPLINK:-5mbit}
bitrate=8M
work=$(mktemp -d)
run="v$$"
run=${run:0:6}
trap 'tb_down; rm -rf "$work"' EXIT

case $scenario in
    e2) viewers=12 gap=5 size_mib=80 titles=1 variants=${PERF_VARIANTS:-plain p2p} ;;
    e3) viewers=10 gap=5 size_mib=80 titles=1 variants=${PERF_VARIANTS:-plain p2p} ;;
    cdn) viewers=47 gap=1 size_mib=40 titles=3 variants=${PERF_VARIANTS:-p2p} ;;
    *) echo "unknown scenario '$scenario'" >&2; exit 2 ;;
esac
mkdir -p "$work/media"
for t in $(seq "$titles"); do
    head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/media/title$t.bin"
done
# A viewer watches its whole title: its length at the bitrate, and some slack.
title_s=$((size_mib * 8 * 1048576 / 8000000 + 1))
run_s=$((title_s + 40))

# Starts a node in host $1's namespace: p2pd with the remaining arguments, its log in
# $work/$1.log; waits for its startup line.
declare -A uplink_of=()
node() {
    local h=$1
    shift
    local limit=()
    if [ -n "${PERF_UPLOAD_SHARE:-}" ]; then
        limit=(--upload-rate "$(python3 -c "print(int($(tb_bits "${uplink_of[$h]}") / 8 * ${PERF_UPLOAD_SHARE}))")")
    fi
    tb_exec "$h" "$bin" --bind "$(tb_ip "$h")" -P 1111 --threads 1 -M 64M "${limit[@]}" "$@" 2> "$work/$h.log" &
    tb_wait_started "$work/$h.log"
}

# Viewer host v$1 with uplink $2 and a client cache whose parent is $3 (or none),
# to play title $4 (see play).
declare -A title_of=()
viewer() {
    local i=$1 up=$2 parent=$3 h="v$1"
    tb_host "$h" $((10 + i)) "$up" 100mbit
    uplink_of[$h]=$up
    local extra=()
    [ "$parent" != none ] && extra=(-S "$parent")
    node "$h" -c "$work/lhc-$h" -Z "${extra[@]}"
    title_of[$i]=$4
}

# Every viewer plays its title through its client cache, $gap s apart.
play() {
    local i h
    for i in $(seq "$viewers"); do
        h="v$i"
        (
            sleep $(((i - 1) * gap))
            tb_exec "$h" "$bench" --proxy "$(tb_ip "$h"):1111" --rate 0.001 --threads 1 \
                --max-viewers 1 -d "${run_s}s" --watch "${run_s}s" --bitrate "$bitrate" \
                --startup-buffer 2s --max-buffer 30s -q --json "$work/out/viewer-$h.json" \
                "http://$(tb_ip o):1111/title${title_of[$i]}.bin" > "$work/out/bench-$h.txt" 2>&1 || true
        ) &
    done
}

scrape() {
    local role=$1 h=$2
    tb_exec "$h" curl -sf "http://$(tb_ip "$h"):1111/_p2pd/metrics" > "$work/out/metrics-$role-$h.txt" || true
}

rows=()
for b in "${bins[@]}"; do
    bin=$(realpath "$b")
    for variant in $variants; do
        tb_down
        tb_init "$run"
        rm -rf "$work/out" "$work"/lhc-* "$work/site"*
        mkdir -p "$work/out"
        p2p=()
        [ "$variant" = p2p ] && p2p=(-i)
        case $scenario in
            e2)
                tb_host o 1 50mbit 1gbit
                uplink_of[o]=50mbit
                node o -p "$work/media" --index-dir "$work/index-o" "${p2p[@]}"
                for i in $(seq "$viewers"); do
                    viewer "$i" "$uplink" none 1
                done
                ;;
            e3)
                tb_host o 1 1gbit 1gbit
                tb_host s1 2 1gbit 1gbit
                uplink_of[o]=1gbit uplink_of[s1]=1gbit
                node o -p "$work/media" --index-dir "$work/index-o"
                node s1 -c "$work/site1" -Z -n 10.77.0.0/16 -S "$(tb_ip o):1111" "${p2p[@]}"
                for i in $(seq "$viewers"); do
                    viewer "$i" "$uplink" "$(tb_ip s1):1111" 1
                done
                ;;
            cdn)
                tb_host o 1 1gbit 1gbit
                tb_host s1 2 500mbit 1gbit
                tb_host s2 3 500mbit 1gbit
                uplink_of[o]=1gbit uplink_of[s1]=500mbit uplink_of[s2]=500mbit
                node o -p "$work/media" --index-dir "$work/index-o"
                node s1 -c "$work/site1" -Z -n 10.77.0.0/16 -S "$(tb_ip o):1111" "${p2p[@]}"
                node s2 -c "$work/site2" -Z -n 10.77.0.0/16 -S "$(tb_ip o):1111" "${p2p[@]}"
                ups=(1mbit 5mbit 20mbit)
                for i in $(seq "$viewers"); do
                    site=s$((i % 2 + 1))
                    viewer "$i" "${ups[$((i % 3))]}" "$(tb_ip $site):1111" $((i % titles + 1))
                done
                ;;
        esac
        play
        # Every viewer's run ends by itself; then the nodes' figures.
        sleep $(((viewers - 1) * gap + run_s + 5))
        wait_for=0
        while [ "$(ls "$work/out"/viewer-*.json 2>/dev/null | wc -l)" -lt "$viewers" ] && [ $wait_for -lt 60 ]; do
            sleep 1
            wait_for=$((wait_for + 1))
        done
        scrape origin o
        for s in s1 s2; do
            [ -n "$(tb_ip $s)" ] && ip netns list | grep -q "tb-$run-$s " && scrape site "$s"
        done
        identical="-"
        for i in $(seq "$viewers"); do
            scrape lhc "v$i"
        done
        if [ "$scenario" = cdn ]; then
            same=0
            for i in $(seq "$viewers"); do
                t=$((i % titles + 1))
                tb_exec "v$i" curl -sf -x "http://$(tb_ip "v$i"):1111" -o "$work/copy.bin" \
                    "http://$(tb_ip o):1111/title$t.bin" || true
                cmp -s "$work/copy.bin" "$work/media/title$t.bin" && same=$((same + 1))
                rm -f "$work/copy.bin"
            done
            identical="$same/$viewers"
        fi
        up_bits=$(tb_bits "$uplink")
        [ "$scenario" = cdn ] && up_bits=8666666
        figures=$(python3 perf/testbed/viewers.py "$work/out" "$up_bits")
        echo "$b $scenario $variant: $figures identical=$identical" >&2
        rows+=("| \`$b\` | $variant | $(echo "$figures" | sed 's/ / · /g') | $identical |")
        # PERF_KEEP=DIR keeps every node's log and every viewer's report there.
        if [ -n "${PERF_KEEP:-}" ]; then
            mkdir -p "$PERF_KEEP/$(basename "$b")-$variant"
            cp "$work"/*.log "$work"/out/* "$PERF_KEEP/$(basename "$b")-$variant/" 2>/dev/null || true
        fi
        tb_down
    done
done

kind=$scenario
[ "$scenario" != cdn ] && kind="$scenario-$uplink"
out=$(tb_result "$kind")
{
    echo "# Testbed: $scenario, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    case $scenario in
        e2) echo "Origin uplink 50 Mbit/s; $viewers viewers ${gap} s apart at 8 Mbit/s, one ${size_mib} MiB title, uplinks $uplink, downlinks 100 Mbit/s, each through its own client cache." ;;
        e3) echo "Origin and site cache on 1 Gbit/s; $viewers viewers ${gap} s apart below the site cache (-S), uplinks $uplink; p2p = -i on the site cache." ;;
        cdn) echo "Origin (1 Gbit/s), two site caches (500 Mbit/s up, -S origin, -i), $viewers viewers (uplinks 1/5/20 Mbit/s in turn, alternate sites), three ${size_mib} MiB titles, arrivals ${gap} s apart; identical = viewers whose cached copy equals the title." ;;
    esac
    echo "Players: p2pd-bench VoD viewers (8 Mbit/s, 2 s startup buffer, 30 s max buffer) through --proxy. Figures: perf/testbed/viewers.py."
    echo "Kernel $(uname -r), $(nproc) CPUs."
    echo
    echo "| binary | variant | figures | identical |"
    echo "|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} > "$out"
cat "$out"
