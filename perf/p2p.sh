#!/usr/bin/env bash
# perf/p2p.sh — what p2p mode saves the origin, with viewers that overlap in time.
#
# Builds p2pd in release, writes one random title under $PERF_WORK, and for each mode
# runs PERF_REPEAT rounds of PERF_VIEWERS viewers that start PERF_STAGGER seconds
# apart and play the title through their own client cache (an LHC on 127.31.1.k, as
# `http_proxy`) at PERF_RATE bytes/s (curl --limit-rate stands in for a player's
# bitrate), so each viewer overlaps the ones before it:
#   off   the origin without -i: every viewer fetches the whole title from it (baseline)
#   p2p   the origin with -i: viewers are handed the earlier viewers that hold blocks
# Every round starts a fresh origin and fresh, empty client caches. It records the
# origin's SPP egress, the bytes each viewer's cache took from peers and from the
# origin (p2pd_fetched_bytes_total), each viewer's time to first byte and total time
# (against the nominal SIZE/RATE), and checks every viewer's bytes against the title.
# Writes perf/results/YYYY-MM-DD-HHMM-<commit>-p2p.md with the raw numbers beside it.
# Everything listens on 127.31.x.y; no root needed.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

WORK=${PERF_WORK:-/tmp/p2pd-perf-p2p}
VIEWERS=${PERF_VIEWERS:-10}
SIZE=${PERF_SIZE:-64M}
RATE=${PERF_RATE:-16M}
STAGGER=${PERF_STAGGER:-1}
REPEAT=${PERF_REPEAT:-3}
THREADS=${PERF_THREADS:-2}
BLOCK=${PERF_BLOCK:-256k}
PORT=${PERF_PORT:-18311}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
P2PD=$TARGET_DIR/release/p2pd

# shellcheck source=perf/lib.sh
. "$REPO/perf/lib.sh"
[ "$VIEWERS" -ge 2 ] || die "PERF_VIEWERS must be at least 2"
cargo build --release --locked --bin p2pd >&2

rm -rf "$WORK"
mkdir -p "$WORK/media" "$WORK/logs" "$WORK/raw"
bytes=$(numfmt --from=iec "$SIZE")
rate=$(numfmt --from=iec "$RATE")
head -c "$bytes" /dev/urandom > "$WORK/media/title.mp4"

ORIGIN=127.31.0.1:$PORT
round() {   # round MODE N: one round; appends a line per viewer to $WORK/raw/MODE.tsv
    local mode=$1 n=$2 extra=() round_pids=() curl_pids=()
    [ "$mode" = p2p ] && extra=(-i)
    "$P2PD" -p "$WORK/media" --bind 127.31.0.1 -P "$PORT" --threads "$THREADS" -b "$BLOCK" \
        --index-dir "$WORK/index" "${extra[@]}" 2> "$WORK/logs/origin-$mode-$n.log" &
    round_pids+=($!)
    PIDS+=($!)
    wait_health "$ORIGIN" "$!" || die "the origin did not start: $(tail -5 "$WORK/logs/origin-$mode-$n.log")"
    until [ "$(metric "$ORIGIN" p2pd_files_published)" = 1 ]; do sleep 0.05; done
    for k in $(seq 1 "$VIEWERS"); do
        "$P2PD" -c "$WORK/lhc/$k" -Z --bind "127.31.1.$k" -P "$PORT" --threads "$THREADS" \
            2> "$WORK/logs/lhc-$mode-$n-$k.log" &
        round_pids+=($!)
        PIDS+=($!)
        wait_health "127.31.1.$k:$PORT" "$!" \
            || die "viewer $k did not start: $(tail -5 "$WORK/logs/lhc-$mode-$n-$k.log")"
    done
    local before
    before=$(metric "$ORIGIN" 'p2pd_bytes_sent_total{proto="spp"}')
    for k in $(seq 1 "$VIEWERS"); do
        http_proxy="http://127.31.1.$k:$PORT" curl -sf --limit-rate "$rate" \
            -o "$WORK/out-$k" -w '%{time_starttransfer} %{time_total}\n' \
            "http://$ORIGIN/title.mp4" > "$WORK/times-$k" &
        curl_pids+=($!)
        sleep "$STAGGER"
    done
    for p in "${curl_pids[@]}"; do wait "$p" || die "$mode round $n: a viewer failed"; done
    local sent=$(( $(metric "$ORIGIN" 'p2pd_bytes_sent_total{proto="spp"}') - before ))
    for k in $(seq 1 "$VIEWERS"); do
        cmp -s "$WORK/out-$k" "$WORK/media/title.mp4" || die "$mode round $n: viewer $k got other bytes"
        local peer server
        peer=$(metric "127.31.1.$k:$PORT" 'p2pd_fetched_bytes_total{source="peer"}')
        server=$(metric "127.31.1.$k:$PORT" 'p2pd_fetched_bytes_total{source="server"}')
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$k" "$peer" "$server" "$(cat "$WORK/times-$k")" "$sent" \
            | tr ' ' '\t' >> "$WORK/raw/$mode.tsv"
    done
    for p in "${round_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK/lhc" "$WORK"/out-* "$WORK"/times-*
    log "$mode round $n: the origin sent $sent bytes for $VIEWERS viewers of $bytes"
}

for mode in off p2p; do
    for n in $(seq 1 "$REPEAT"); do round "$mode" "$n"; done
done

commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo -dirty)
stamp=$(date +%Y-%m-%d-%H%M)
result=perf/results/$stamp-$commit-p2p.md
mkdir -p "perf/results/$stamp-$commit-p2p"
cp "$WORK"/raw/* "perf/results/$stamp-$commit-p2p/"
python3 - "$WORK/raw" "$bytes" "$rate" "$VIEWERS" > "$result" <<EOF
import statistics as st, sys
raw, size, rate, viewers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def load(mode):
    rounds = {}
    for line in open(f"{raw}/{mode}.tsv"):
        n, k, peer, server, ttfb, total, sent = line.split()
        rounds.setdefault(int(n), []).append(dict(k=int(k), peer=int(peer), server=int(server),
            ttfb=float(ttfb), total=float(total), sent=int(sent)))
    return rounds
nominal = size / rate
print(f"# p2p mode with overlapping viewers, $stamp, commit $commit")
print()
print(f"$VIEWERS viewers of one {size}-byte title, each through its own client cache (LHC), starting")
print(f"$STAGGER s apart and playing at {rate} bytes/s (curl --limit-rate; nominal {nominal:.1f} s); origin")
print(f"and caches with $THREADS shards, block size $BLOCK; a fresh origin and empty caches every round;")
print(f"every viewer's bytes checked against the title. Command: \`perf/p2p.sh\`.")
print()
print("| mode | round | origin egress (MB) | egress / title | viewers 2..N from peers | median TTFB (ms) | slowest viewer (s) |")
print("|---|---|---|---|---|---|---|")
summary = {}
for mode in ("off", "p2p"):
    rows = []
    for n, vs in sorted(load(mode).items()):
        sent = vs[0]["sent"]
        later = [v for v in vs if v["k"] > 1]
        got = sum(v["peer"] + v["server"] for v in later)
        eff = sum(v["peer"] for v in later) / got if got else 0.0
        ttfb = st.median(v["ttfb"] for v in vs) * 1000
        slow = max(v["total"] for v in vs)
        rows.append((sent, eff, ttfb, slow))
        print(f"| {mode} | {n} | {sent/1e6:.1f} | {sent/size:.2f} | {eff*100:.1f}% | {ttfb:.0f} | {slow:.2f} |")
    summary[mode] = [st.median(r[i] for r in rows) for i in range(4)]
print()
off, p2p = summary["off"], summary["p2p"]
print("Medians over the rounds:")
print()
print(f"- origin egress: off {off[0]/1e6:.1f} MB ({off[0]/size:.2f} titles), p2p {p2p[0]/1e6:.1f} MB ({p2p[0]/size:.2f} titles); p2p / off = {p2p[0]/off[0]:.2f}")
print(f"- peer efficiency of viewers 2..{viewers} (bytes from peers / bytes fetched): {p2p[1]*100:.1f}%")
print(f"- median time to first byte: off {off[2]:.0f} ms, p2p {p2p[2]:.0f} ms")
print(f"- slowest viewer's total time: off {off[3]:.2f} s, p2p {p2p[3]:.2f} s (nominal {nominal:.2f} s)")
EOF
cat "$result"
log "wrote $result"
