#!/usr/bin/env bash
# perf/cache.sh — what a cache costs and gives, on one machine over loopback.
#
# Builds p2pd and p2pd-bench in release, generates a random corpus under $PERF_WORK,
# starts an origin on 127.0.0.1 and a site cache on 127.0.0.2 (`-S origin -n
# 0.0.0.0/0`, its own cache directory), and measures with `p2pd-bench --max-throughput
# --once` (every title read exactly once, spread over the connections), over HTTP and
# over SPP:
#   origin   the titles straight from the origin (the baseline)
#   fill     the same titles through the empty cache: it fetches every block from the
#            origin over SPP, verifies it, streams it on and writes it to its disk
#   disk     again through the cache, now from its disk (memory cache kept small so
#            blocks are read and verified from disk)
# Each step runs PERF_REPEAT times (default 3) with a fresh cache for every fill; the
# report gives each run and the median, and the ratios against the origin baseline.
# Writes perf/results/YYYY-MM-DD-HHMM-<commit>-cache.md with the raw JSON beside it.
#
# Run as root for the page-cache drops between runs (without root they are skipped and
# the origin reads hit the page cache). Everything listens on 127.0.0.1/127.0.0.2.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

WORK=${PERF_WORK:-/tmp/p2pd-perf-cache}
FILES=${PERF_FILES:-8}
SIZE=${PERF_SIZE:-128M}
CONNS=${PERF_CONNECTIONS:-4}
REPEAT=${PERF_REPEAT:-3}
THREADS=${PERF_THREADS:-$(nproc)}
BLOCK=${PERF_BLOCK:-256k}
ORIGIN_PORT=${PERF_ORIGIN_PORT:-18211}
CACHE_PORT=${PERF_CACHE_PORT:-18212}
CACHE_MEM=${PERF_CACHE_MEM:-32M}
LIMIT=${PERF_LIMIT:-300s}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
P2PD=$TARGET_DIR/release/p2pd
BENCH=$TARGET_DIR/release/p2pd-bench

# shellcheck source=perf/lib.sh
. "$REPO/perf/lib.sh"
cargo build --release --locked --bin p2pd --bin p2pd-bench >&2

rm -rf "$WORK"
mkdir -p "$WORK/corpus" "$WORK/logs" "$WORK/raw"
bytes=$(numfmt --from=iec "$SIZE")
log "corpus: $FILES files of $SIZE"
for i in $(seq -w 1 "$FILES"); do
    head -c "$bytes" /dev/urandom > "$WORK/corpus/title$i.bin"
done

drop_caches() {
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}

ORIGIN=127.0.0.1:$ORIGIN_PORT
CACHE=127.0.0.2:$CACHE_PORT
"$P2PD" -p "$WORK/corpus" --bind 127.0.0.1 -P "$ORIGIN_PORT" --threads "$THREADS" -b "$BLOCK" \
    -M 64M --index-dir "$WORK/index" 2> "$WORK/logs/origin.log" &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
wait_health "$ORIGIN" "$ORIGIN_PID" || die "the origin did not start: $(tail -5 "$WORK/logs/origin.log")"
for _ in $(seq 3000); do
    [ "$(metric "$ORIGIN" p2pd_files_published)" = "$FILES" ] && break
    sleep 0.1
done

CACHE_PID=""
start_cache() {   # start_cache EXTRA...
    "$P2PD" -c "$WORK/cache" --bind 127.0.0.2 -P "$CACHE_PORT" --threads "$THREADS" \
        -S "$ORIGIN" -n 0.0.0.0/0 -M "$CACHE_MEM" "$@" 2>> "$WORK/logs/cache.log" &
    CACHE_PID=$!
    PIDS+=("$CACHE_PID")
    wait_health "$CACHE" "$CACHE_PID" || die "the cache did not start: $(tail -5 "$WORK/logs/cache.log")"
}
stop_cache() { kill "$CACHE_PID" 2>/dev/null || true; wait "$CACHE_PID" 2>/dev/null || true; }

urls() {   # urls SCHEME ADDR
    for f in "$WORK"/corpus/*.bin; do echo "$1://$2/$(basename "$f")"; done
}

bench() {   # bench NAME SCHEME ADDR
    local out=$WORK/raw/$1.json
    urls "$2" "$3" > "$WORK/raw/$1.urls"
    "$BENCH" --max-throughput --once -c "$CONNS" -d "$LIMIT" -q --url-file "$WORK/raw/$1.urls" \
        --json "$out" > "$WORK/raw/$1.out"
    python3 -c "
import json,sys
d=json.load(open('$out'))
assert d['errors_total']==0, d['errors']
print(d['bytes_per_s'], d['bytes'])"
}

declare -A MBPS SKIPPED REFETCHED
total=$((bytes * FILES))
for proto in http spp; do
    for r in $(seq 1 "$REPEAT"); do
        drop_caches
        read -r bps got < <(bench "origin-$proto-$r" "$proto" "$ORIGIN")
        [ "$got" = "$total" ] || die "origin-$proto-$r: $got bytes, expected $total"
        MBPS[origin-$proto]+="$(python3 -c "print(round($bps/1e6))") "

        rm -rf "$WORK/cache"
        drop_caches
        start_cache -Z
        before=$(metric "$ORIGIN" 'p2pd_bytes_sent_total{proto="spp"}')
        read -r bps got < <(bench "fill-$proto-$r" "$proto" "$CACHE")
        [ "$got" = "$total" ] || die "fill-$proto-$r: $got bytes, expected $total"
        sent=$(( $(metric "$ORIGIN" 'p2pd_bytes_sent_total{proto="spp"}') - before ))
        [ "$sent" = "$total" ] || log "fill-$proto-$r: the origin sent $sent bytes for $total"
        MBPS[fill-$proto]+="$(python3 -c "print(round($bps/1e6))") "
        # Let the last writes land, then read everything back from the cache's disk.
        for _ in $(seq 100); do
            [ "$(metric "$CACHE" p2pd_disk_cache_write_bytes_total)" = "$total" ] && break
            sleep 0.1
        done
        SKIPPED[$proto]+="$(metric "$CACHE" p2pd_disk_cache_write_skipped_total) "
        stop_cache
        drop_caches
        start_cache
        before=$(metric "$ORIGIN" 'p2pd_bytes_sent_total{proto="spp"}')
        read -r bps got < <(bench "disk-$proto-$r" "$proto" "$CACHE")
        sent=$(( $(metric "$ORIGIN" 'p2pd_bytes_sent_total{proto="spp"}') - before ))
        [ "$sent" = 0 ] || log "disk-$proto-$r: the origin sent $sent bytes"
        REFETCHED[$proto]+="$sent "
        MBPS[disk-$proto]+="$(python3 -c "print(round($bps/1e6))") "
        stop_cache
        log "$proto run $r: origin ${MBPS[origin-$proto]}/ fill ${MBPS[fill-$proto]}/ disk ${MBPS[disk-$proto]}MB/s"
    done
done

commit=$(git rev-parse --short HEAD)
stamp=$(date +%Y-%m-%d-%H%M)
result=perf/results/$stamp-$commit-cache.md
mkdir -p "perf/results/$stamp-$commit-cache"
cp "$WORK"/raw/* "perf/results/$stamp-$commit-cache/"
median() { python3 -c "import statistics,sys; print(round(statistics.median(map(float,sys.argv[1:]))))" $1; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
{
    echo "# Cache throughput, $stamp, commit $commit"
    echo
    echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r)."
    echo "Corpus: $FILES files of $SIZE, block size $BLOCK; origin and cache with $THREADS shards each;"
    echo "cache \`-M $CACHE_MEM\`; p2pd-bench \`--max-throughput --once -c $CONNS\`; page cache dropped before"
    echo "every run$( [ -w /proc/sys/vm/drop_caches ] || echo ' (not: no root)'). MB/s = 10^6 bytes/s. Command: \`perf/cache.sh\`."
    echo
    echo "| | HTTP runs (MB/s) | HTTP median | SPP runs (MB/s) | SPP median |"
    echo "|---|---|---|---|---|"
    for k in origin fill disk; do
        echo "| $k | ${MBPS[$k-http]}| $(median "${MBPS[$k-http]}") | ${MBPS[$k-spp]}| $(median "${MBPS[$k-spp]}") |"
    done
    echo
    echo "Blocks served but not stored during each fill (p2pd_disk_cache_write_skipped_total):"
    echo "HTTP ${SKIPPED[http]}, SPP ${SKIPPED[spp]}; bytes the origin sent during each disk run"
    echo "(0 when the fill stored everything): HTTP ${REFETCHED[http]}, SPP ${REFETCHED[spp]}."
    echo
    echo "Ratios of medians against the origin:"
    for p in http spp; do
        o=$(median "${MBPS[origin-$p]}")
        echo "- $p: fill / origin $(ratio "$(median "${MBPS[fill-$p]}")" "$o"), disk / origin $(ratio "$(median "${MBPS[disk-$p]}")" "$o")"
    done
} > "$result"
cat "$result"
log "wrote $result"
