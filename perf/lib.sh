# perf/lib.sh — what perf/cache.sh and perf/p2p.sh share. Sourced, not run.

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Every process a script starts goes into PIDS; they are stopped on exit.
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
command -v python3 >/dev/null || die "python3 is needed for the report"

wait_health() {   # wait_health ADDR PID: until p2pd at ADDR answers; 1 if PID exits first
    for _ in $(seq 600); do
        curl -sf "http://$1/_p2pd/health" >/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

metric() { curl -sf "http://$1/_p2pd/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
