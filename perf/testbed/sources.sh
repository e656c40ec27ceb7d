#!/usr/bin/env bash
# Testbed scenario (issue 14): two sources of different speeds, and the faster one
# slowed, silenced or killed mid-transfer. Origin A (uplink 200 Mbit/s, `-l B`) and
# mirror B (40 Mbit/s) publish the same file; a viewer host (1 Gbit/s) fetches it
# from A, which names B, with `p2pd get` (mode get) or through its own client cache
# with curl (mode lhc). EVENT_AT s in, A's uplink is cut to 10 Mbit/s (slow), its
# bridge port goes down (silence) or its process is killed (kill); `none` has no
# event. Each link's goodput is measured alone first (curl over HTTP from each
# origin), and every run is measured against them: ratio = ideal time / time taken,
# the longest gap with no byte, the time until a 0.5 s window after the event
# carried 80% of what the remaining links give, bytes by source. Root only.
#
#   sudo perf/testbed/sources.sh [P2PD_BIN ...]   default: a fresh release build;
#                                                 several binaries run side by side
#   PERF_MODES="get lhc"  PERF_EVENTS="none slow silence kill"
#   PERF_SIZE_MIB=200  PERF_EVENT_AT=2.5
# Writes perf/results/<date>-<commit>-testbed-sources.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
. perf/testbed/net.sh

bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
    cargo build --release --locked --bin p2pd >&2
    bins=(target/release/p2pd)
fi
modes=${PERF_MODES:-get lhc}
events=${PERF_EVENTS:-none slow silence kill}
size_mib=${PERF_SIZE_MIB:-200}
event_at=${PERF_EVENT_AT:-2.5}
total=$((size_mib * 1024 * 1024))
work=$(mktemp -d)
run="s$$"
run=${run:0:6}
sampler=""
trap '[ -n "$sampler" ] && kill "$sampler" 2>/dev/null; tb_down; rm -rf "$work"' EXIT
progress=perf/testbed/progress.py

mkdir -p "$work/media"
head -c "$total" /dev/urandom > "$work/media/film.bin"

# The network, the two origins (A names B), and both files indexed.
setup() {
    local bin=$1
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
    local h
    for h in a b; do
        tb_exec viewer curl -sf -r 0-0 -o /dev/null "http://$(tb_ip $h):1111/film.bin" || true
    done
}

# Seconds one curl over HTTP from host $1 took for bytes 0..$2-1, and its goodput.
goodput() {
    local t0 t1
    t0=$(date +%s.%N)
    tb_exec viewer curl -sf -r "0-$(($2 - 1))" -o /dev/null "http://$(tb_ip "$1"):1111/film.bin"
    t1=$(date +%s.%N)
    echo "$2 / ($t1 - $t0)" | bc -l
}

bin0=$(realpath "${bins[0]}")
setup "$bin0"
ga=$(goodput a $((100 * 1024 * 1024)))
gb=$(goodput b $((25 * 1024 * 1024)))
echo "goodput alone: A $(printf '%.0f' "$ga") B/s, B $(printf '%.0f' "$gb") B/s" >&2
tb_down

rows=()
for b in "${bins[@]}"; do
    bin=$(realpath "$b")
    for mode in $modes; do
        for ev in $events; do
            setup "$bin"
            rm -f "$work/out.bin" "$work/out.bin.part"
            if [ "$mode" = lhc ]; then
                rm -rf "$work/lhc"
                tb_exec viewer "$bin" -c "$work/lhc" -Z \
                    --bind "$(tb_ip viewer)" -P 1111 2> "$work/lhc.log" &
                tb_wait_started "$work/lhc.log"
            fi
            python3 "$progress" sample "$work/trace" "$work/out.bin.part" "$work/out.bin" &
            sampler=$!
            case $ev in
                slow) (sleep "$event_at"; tb_rate a up 10mbit) & ;;
                silence) (sleep "$event_at"; tb_silence a) & ;;
                kill) (sleep "$event_at"; ip netns pids "tb-$run-a" | xargs -r kill -9) & ;;
                *) (true) & ;;
            esac
            eventer=$!
            if [ "$mode" = get ]; then
                tb_exec viewer "$bin" get -o "$work/out.bin" "spp://$(tb_ip a):1111/film.bin" \
                    --timeout 60000 2> "$work/get.log" || true
                from=$(grep -E "from [0-9.]+:1111" "$work/get.log" | sed 's/^p2pd get: //' | tr '\n' ';' || true)
            else
                tb_exec viewer curl -sf -x "http://$(tb_ip viewer):1111" -o "$work/out.bin" \
                    "http://$(tb_ip a):1111/film.bin" || true
                from=$(tb_exec viewer curl -sf "http://$(tb_ip viewer):1111/_p2pd/metrics" |
                    grep '^p2pd_upstream_bytes_by_source_total' |
                    sed -E 's/.*source="([^"]+)"\} ([0-9]+)/\1: \2 B/' | tr '\n' ';' || true)
            fi
            sleep 0.1
            kill "$sampler" 2>/dev/null || true
            wait "$sampler" 2>/dev/null || true
            sampler=""
            wait "$eventer" || true
            ok="byte-identical"
            cmp -s "$work/out.bin" "$work/media/film.bin" || ok="DIFFERENT"
            case $ev in
                none) figures=$(python3 "$progress" analyse "$work/trace" --total "$total" \
                    --before "$(echo "$ga + $gb" | bc -l)") ;;
                slow) figures=$(python3 "$progress" analyse "$work/trace" --total "$total" \
                    --before "$(echo "$ga + $gb" | bc -l)" --event "$event_at" \
                    --after "$(echo "$ga / 20 + $gb" | bc -l)") ;;
                *) figures=$(python3 "$progress" analyse "$work/trace" --total "$total" \
                    --before "$(echo "$ga + $gb" | bc -l)" --event "$event_at" --after "$gb") ;;
            esac
            echo "$b $mode $ev: $ok $figures | $from" >&2
            rows+=("| \`$b\` | $mode | $ev | $ok | $(echo "$figures" | sed 's/ / · /g') | ${from:-see log} |")
        done
    done
done
tb_down

out=$(tb_result sources)
{
    echo "# Testbed: two sources, and the faster one slowed, silenced or killed, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "perf/testbed/sources.sh: origin A (uplink 200 Mbit/s, \`-l B\`), mirror B (40 Mbit/s),"
    echo "viewer (1 Gbit/s) fetches ${size_mib} MiB from A with \`p2pd get\` (get) or curl through its"
    echo "own client cache (lhc). Events ${event_at} s in: A cut to 10 Mbit/s (slow), A's port"
    echo "down (silence), A's process killed (kill). Goodput alone (curl over HTTP):"
    echo "A $(printf '%.1f' "$(echo "$ga * 8 / 1000000" | bc -l)") Mbit/s, B $(printf '%.1f' "$(echo "$gb * 8 / 1000000" | bc -l)") Mbit/s; ideal = both full all along"
    echo "(after a slow-down A's share is 1/20 of its goodput). ratio = ideal / took;"
    echo "gap = longest time without a byte; back = seconds after the event until a 0.5 s window"
    echo "carried 80% of what the remaining links give (0.5 at best)."
    echo "Kernel $(uname -r), $(nproc) CPUs."
    echo
    echo "| binary | mode | event | bytes | figures | by source |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} > "$out"
cat "$out"
