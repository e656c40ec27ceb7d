#!/usr/bin/env bash
# Quick start: builds p2pd, publishes a generated sample directory from an origin on
# 127.0.0.1, fetches a file back over SPP with `p2pd get` (every block verified) and
# over HTTP with curl (whole and ranged), then starts a client cache and HTTP proxy
# (LHC) on 127.0.0.2 and plays the movie through it as `http_proxy` twice: the first
# viewing fills the cache over SPP, the second costs the origin nothing. Prints what
# happened.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked --bin p2pd
bin=target/release/p2pd
work=$(mktemp -d)
pid=""
lhc=""
cleanup() {
    for p in $pid $lhc; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/media/trailers"
head -c $((24 * 1024 * 1024 + 12345)) /dev/urandom > "$work/media/movie.mp4"
head -c $((3 * 1024 * 1024)) /dev/urandom > "$work/media/trailers/teaser.ts"
echo "== sample directory: $work/media"
ls -lR "$work/media" | sed 's/^/   /'

"$bin" -p "$work/media" --bind 127.0.0.1 -P 0 --index-dir "$work/index" 2> "$work/origin.log" &
pid=$!
for _ in $(seq 100); do grep -q "publishing" "$work/origin.log" && break; sleep 0.1; done
port=$(sed -n 's/.* on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/origin.log" | head -n1)
[ -n "$port" ] || { cat "$work/origin.log"; echo "origin did not start" >&2; exit 1; }
echo "== origin: $(head -n1 "$work/origin.log")"

echo "== p2pd get spp://127.0.0.1:$port/movie.mp4"
"$bin" get "spp://127.0.0.1:$port/movie.mp4" -o "$work/movie.copy"
cmp "$work/media/movie.mp4" "$work/movie.copy" && echo "   byte-identical: $(sha256sum < "$work/movie.copy" | cut -c1-16)..."

echo "== HTTP: curl http://127.0.0.1:$port/trailers/teaser.ts"
curl -sS -o "$work/teaser.copy" -w '   status %{http_code}, %{size_download} bytes, %{content_type}\n' "http://127.0.0.1:$port/trailers/teaser.ts"
cmp "$work/media/trailers/teaser.ts" "$work/teaser.copy" && echo "   byte-identical"
echo "== HTTP range: last 100 bytes of movie.mp4"
curl -sS -r -100 -o "$work/tail" -D - "http://127.0.0.1:$port/movie.mp4" | grep -iE '^(HTTP|content-range)' | sed 's/^/   /'
cmp "$work/tail" <(tail -c 100 "$work/media/movie.mp4") && echo "   range bytes match"
echo "== origin metrics"
curl -sS "http://127.0.0.1:$port/_p2pd/metrics" | grep -E '^p2pd_(bytes_sent|requests|index_builds|files_published)' | sed 's/^/   /'

"$bin" -c "$work/lhc-cache" --bind 127.0.0.2 -P 0 2> "$work/lhc.log" &
lhc=$!
for _ in $(seq 100); do grep -q "caching in" "$work/lhc.log" && break; sleep 0.1; done
lport=$(sed -n 's/.* on 127\.0\.0\.2:\([0-9]*\) .*/\1/p' "$work/lhc.log" | head -n1)
[ -n "$lport" ] || { cat "$work/lhc.log"; echo "client cache did not start" >&2; exit 1; }
echo "== client cache: $(head -n1 "$work/lhc.log")"
spp_sent() { curl -sS "http://127.0.0.1:$port/_p2pd/metrics" | sed -n 's/^p2pd_bytes_sent_total{proto="spp"} //p'; }
for viewing in first second; do
    before=$(spp_sent)
    echo "== $viewing viewing: http_proxy=http://127.0.0.2:$lport curl http://127.0.0.1:$port/movie.mp4"
    http_proxy="http://127.0.0.2:$lport" curl -sS -o "$work/movie.proxied" \
        -w '   status %{http_code}, %{size_download} bytes\n' "http://127.0.0.1:$port/movie.mp4"
    cmp "$work/media/movie.mp4" "$work/movie.proxied" && echo "   byte-identical"
    echo "   the origin sent $(( $(spp_sent) - before )) bytes over SPP for it"
done
echo "== client cache metrics"
curl -sS "http://127.0.0.2:$lport/_p2pd/metrics" | grep -E '^p2pd_(upstream_fetches|upstream_bytes|disk_cache_hits|memory_cache_hits|disk_cache_bytes|files_cached)' | sed 's/^/   /'
echo "== done: the origin served only blocks its digest index vouches for, p2pd get and the client cache verified every block against the origin's digest, and the second viewing came from the cache"
