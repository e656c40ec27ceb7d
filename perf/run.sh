#!/usr/bin/env bash
# perf/run.sh — p2pd against nginx on one machine, over loopback, in one run.
#
# Installs nginx, wrk, iperf3 and curl if missing (apt), builds p2pd and p2pd-bench in
# release, generates a random corpus under $PERF_WORK, starts p2pd (origin) and nginx on
# 127.0.0.1 publishing the same directory, and measures side by side, with wrk and with
# p2pd-bench: the iperf3 loopback ceiling, hot throughput (from memory), cold throughput
# (from disk) and VoD capacity (concurrent 8 Mbit/s viewers with zero stalls). Writes one
# markdown result file perf/results/YYYY-MM-DD-HHMM-<commit>.md (raw outputs in the
# sibling directory of the same name) and prints the p2pd/nginx ratios.
#
# Run as root (page-cache drops, package installs). Everything listens on 127.0.0.1 and
# everything written lives under $PERF_WORK or perf/results/. See perf/README.md for the
# environment variables; PERF_QUICK=1 is a ~3 minute smoke run.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PERF_DIR=$REPO/perf
cd "$REPO"

# ---------------------------------------------------------------- configuration --
QUICK=${PERF_QUICK:-0}
q() { if [ "$QUICK" = 1 ]; then echo "$1"; else echo "$2"; fi; }   # q QUICK DEFAULT

WORK=${PERF_WORK:-/tmp/p2pd-perf}
CORES=$(nproc)
THREADS=${PERF_THREADS:-$CORES}
P2PD_PORT=${PERF_P2PD_PORT:-18111}
NGINX_PORT=${PERF_NGINX_PORT:-18112}
IPERF_PORT=${PERF_IPERF_PORT:-18113}

HOT_FILES=${PERF_HOT_FILES:-$(q 2 4)}
HOT_SIZE=${PERF_HOT_SIZE:-$(q 64M 256M)}
VOD_FILES=${PERF_VOD_FILES:-$(q 10 20)}
VOD_SIZE=${PERF_VOD_SIZE:-$(q 32M 64M)}
COLD_FILES=${PERF_COLD_FILES:-$(q 48 96)}
COLD_SIZE=${PERF_COLD_SIZE:-$(q 64M 128M)}

IPERF_TIME=${PERF_IPERF_TIME:-$(q 3 10)}
HOT_DURATION=${PERF_HOT_DURATION:-$(q 5 15)}       # seconds
COLD_DURATION=${PERF_COLD_DURATION:-$(q 2 4)}      # seconds of a wrk cold run; keep bytes read below the cold set
COLD_LIMIT=${PERF_COLD_LIMIT:-300s}                # p2pd-bench --once reads the cold set once; -d bounds it
CONNS=${PERF_CONNECTIONS:-16}
WRK_THREADS=${PERF_WRK_THREADS:-2}

VOD_START=${PERF_VOD_START:-$(q 200 100)}          # first concurrency step; doubled each step
VOD_CAP=${PERF_VOD_CAP:-$(q 1600 12800)}           # highest step tried
VOD_STEP=${PERF_VOD_STEP:-$(q 6 20)}               # seconds per step
VOD_RAMP=${PERF_VOD_RAMP:-$(q 2 4)}                # all N viewers arrive within this many seconds
VOD_BISECT=${PERF_VOD_BISECT:-1}                   # one extra step between last good and first bad
BITRATE=${PERF_BITRATE:-8M}

P2PD_MEM=${PERF_P2PD_MEM:-2G}                      # -M for hot and VoD runs
P2PD_COLD_MEM=${PERF_P2PD_COLD_MEM:-64M}           # -M for cold runs
SPP_VERIFY=${PERF_SPP_VERIFY:-0}                   # 1: the bench verifies SPP digests in every run
SECTIONS=${PERF_SECTIONS:-ceiling hot vod cold}
P2PD_ARGS=${PERF_P2PD_ARGS:-}                      # extra p2pd options for every run (word-split)

TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
P2PD=${PERF_P2PD_BIN:-$TARGET_DIR/release/p2pd}
BENCH=${PERF_BENCH_BIN:-$TARGET_DIR/release/p2pd-bench}

CORPUS=$WORK/corpus
LOGS=$WORK/logs
NGDIR=$WORK/nginx
INDEX_DIR=$WORK/index

STAMP=$(date +%Y-%m-%d-%H%M)
START_EPOCH=$(date +%s)

has() { case " $SECTIONS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
bytes_of() { numfmt --from=iec "$1"; }
calc() { "$PY" -c "import sys; from math import *; print($1)"; }

# ------------------------------------------------------------- process cleanup --
PIDS=()
POLICY_RC_CREATED=0
forget_pid() { local p=$1 i; for i in "${!PIDS[@]}"; do if [ "${PIDS[$i]}" = "$p" ]; then unset 'PIDS[i]'; fi; done; }
stop_pid() {   # stop_pid PID: TERM, up to 10 s, then KILL; only processes this script started
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || { forget_pid "$p"; return 0; }
    for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    forget_pid "$p"
}
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    [ "$POLICY_RC_CREATED" = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$rc" -ne 0 ] && log "failed (exit $rc); logs under $LOGS"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------- install --
install_deps() {
    local need=()
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
    command -v wrk >/dev/null 2>&1 || need+=(wrk)
    command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
    command -v curl >/dev/null 2>&1 || need+=(curl)
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    command -v fincore >/dev/null 2>&1 || need+=(util-linux)
    command -v cc >/dev/null 2>&1 || need+=(build-essential)
    [ ${#need[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing ${need[*]}; run as root to install them"
    log "installing: ${need[*]}"
    # Keep the packages' own services (nginx on :80, iperf3) from starting: Debian's
    # policy-rc.d mechanism, only for the duration of the install.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    if [ "$POLICY_RC_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
}

# ------------------------------------------------------------------ helpers --
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_until() {   # wait_until SECONDS WHAT PID COMMAND...: poll until COMMAND succeeds
    local secs=$1 what=$2 pid=$3; shift 3
    local deadline=$(($(date +%s) + secs))
    until "$@" >/dev/null 2>&1; do
        [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null && return 1
        [ "$(date +%s)" -ge "$deadline" ] && { log "timed out after ${secs}s waiting for $what"; return 1; }
        sleep 0.2
    done
}

CLK_TCK=$(getconf CLK_TCK)
proc_ticks() {   # utime+stime in ticks of a process (all its threads)
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    s=${s##*) }
    awk '{print $12 + $13}' <<<"$s"
}
server_pids() {  # p2pd | nginx: the processes whose CPU time we count
    case $1 in
        p2pd) echo "$P2PD_PID" ;;
        nginx) echo "$NGINX_PID"   # and its workers
               local d s f
               for d in /proc/[0-9]*; do
                   s=$(cat "$d/stat" 2>/dev/null) || continue
                   read -ra f <<<"${s##*) }"
                   if [ "${f[1]}" = "$NGINX_PID" ]; then echo "${d#/proc/}"; fi
               done ;;
    esac
}
server_ticks() { local t=0 p; for p in $(server_pids "$1"); do t=$((t + $(proc_ticks "$p"))); done; echo "$t"; }

# Machine-wide CPU (from /proc/stat, so softirq time spent on loopback traffic counts too)
# and the kernel's TCP buffer memory, sampled during each run.
stat_cpu() { awk '/^cpu / { print $2 + $3, $4, $5 + $6, $7 + $8, $9; exit }' /proc/stat; }   # user system idle irq+softirq steal
TCP_MEM_PRESSURE_PAGES=$(awk '{print $2}' /proc/sys/net/ipv4/tcp_mem 2>/dev/null || echo 0)
SAMPLER_PID=""
start_sampler() {   # start_sampler FILE: peak of "TCP: ... mem N" (pages) into FILE
    local file=$1
    echo 0 > "$file"
    ( peak=0
      while :; do
          m=$(awk '/^TCP:/ { for (i = 1; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat)
          if [ "${m:-0}" -gt "$peak" ]; then peak=$m; echo "$peak" > "$file"; fi
          sleep 0.5
      done ) &
    SAMPLER_PID=$!
    PIDS+=("$SAMPLER_PID")
}
stop_sampler() { [ -n "$SAMPLER_PID" ] && stop_pid "$SAMPLER_PID"; SAMPLER_PID=""; }

metrics() { curl -sf "http://127.0.0.1:$P2PD_PORT/_p2pd/metrics"; }
metric() {   # metric NAME [FILE]: sum of a p2pd metric over its labels
    local src=${2:-}
    { if [ -n "$src" ]; then cat "$src"; else metrics; fi; } |
        awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f\n", s }'
}

# Results: one associative array, written into the markdown at the end.
declare -A R
COMMANDS=$WORK/commands.txt
record_cmd() { printf '%q ' "$@" | sed 's/ $//' >> "$COMMANDS"; echo >> "$COMMANDS"; }
record_raw() { echo "$*" >> "$COMMANDS"; }

jget() { "$PY" - "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    d = d.get(k, {}) if isinstance(d, dict) else {}
print("" if d == {} or d is None else d)
PY
}
fmt() { [ -z "${1:-}" ] && { echo "n/a"; return; }; "$PY" -c "print(f'{float(\"$1\"):.${2:-2}f}')"; }
ratio() {   # ratio A B -> A/B with 2 decimals, or n/a
    [ -z "${1:-}" ] || [ -z "${2:-}" ] && { echo "n/a"; return; }
    "$PY" -c "b=float('$2'); print('n/a' if b == 0 else f'{float(\"$1\")/b:.2f}')"
}

# --------------------------------------------------------------- servers --
P2PD_PID=""
NGINX_PID=""
NFILES=0

start_p2pd() {   # start_p2pd MEM LABEL [EXTRA ARGS...]
    local mem=$1 label=$2 log=$LOGS/p2pd-$2.log; shift 2
    # Once (not reproduced since) the port still answered right after the previous p2pd
    # had exited: give it up to 15 s to come free.
    port_free() { ! port_busy "$P2PD_PORT"; }
    wait_until 15 "port $P2PD_PORT to be free" "" port_free || die "port $P2PD_PORT is in use (set PERF_P2PD_PORT)"
    local cmd=("$P2PD" -p "$CORPUS" -P "$P2PD_PORT" --bind 127.0.0.1 --threads "$THREADS"
               -M "$mem" --index-dir "$INDEX_DIR" --max-connections 32768 $P2PD_ARGS "$@")
    record_cmd "${cmd[@]}"
    "${cmd[@]}" 2> "$log" &
    P2PD_PID=$!
    PIDS+=("$P2PD_PID")
    wait_until 60 "p2pd health" "$P2PD_PID" curl -sf "http://127.0.0.1:$P2PD_PORT/_p2pd/health" ||
        { tail -20 "$log" >&2; die "p2pd did not start"; }
    grep -m1 'origin publishing' "$log" >&2 || true
    # Every file's digest index must exist before we measure (first start: hashed; later: reused).
    files_ready() { [ "$(metric p2pd_files_published)" -ge "$NFILES" ]; }
    wait_until 900 "p2pd to index $NFILES files" "$P2PD_PID" files_ready ||
        { tail -20 "$log" >&2; die "p2pd did not index the corpus"; }
    R[p2pd_index_builds]=$(( ${R[p2pd_index_builds]:-0} + $(metric p2pd_index_builds_total) ))
}
stop_p2pd() { [ -n "$P2PD_PID" ] && stop_pid "$P2PD_PID"; P2PD_PID=""; }

start_nginx() {
    port_busy "$NGINX_PORT" && die "port $NGINX_PORT is in use (set PERF_NGINX_PORT)"
    mkdir -p "$NGDIR/tmp"
    local user_line="" nofile
    [ "$(id -u)" -eq 0 ] && user_line="user root;"
    nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=65536; [ "$nofile" -gt 65536 ] && nofile=65536
    sed -e "s|@USER_LINE@|$user_line|" -e "s|@WORKERS@|$THREADS|" -e "s|@NGDIR@|$NGDIR|g" \
        -e "s|@PORT@|$NGINX_PORT|" -e "s|@ROOT@|$CORPUS|" -e "s|worker_rlimit_nofile 65536|worker_rlimit_nofile $nofile|" \
        "$PERF_DIR/nginx.conf.tmpl" > "$NGDIR/nginx.conf"
    local cmd=("$NGINX" -p "$NGDIR" -c "$NGDIR/nginx.conf")
    local nginx_help
    nginx_help=$("$NGINX" -h 2>&1 || true)
    [[ "$nginx_help" == *"-e filename"* ]] && cmd+=(-e "$NGDIR/error.log")
    "${cmd[@]}" -t -q 2> "$LOGS/nginx-t.log" || { cat "$LOGS/nginx-t.log" >&2; die "nginx config test failed"; }
    record_cmd "${cmd[@]}"
    "${cmd[@]}" 2> "$LOGS/nginx.log" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_until 30 "nginx" "$NGINX_PID" curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$NGINX_PORT/hot/file00" ||
        { cat "$LOGS/nginx.log" "$NGDIR/error.log" >&2 2>/dev/null; die "nginx did not start"; }
}
stop_nginx() { [ -n "$NGINX_PID" ] && stop_pid "$NGINX_PID"; NGINX_PID=""; }

# ------------------------------------------------------------- measurements --
# run_measure KEY SERVER CLIENT COMMAND...: runs one client, records wall time, the
# server's CPU time and (p2pd) its metrics before and after. CLIENT is wrk or bench.
run_measure() {
    local key=$1 server=$2 client=$3; shift 3
    local out=$RAW/$key.out t0 t1 c0 c1 rc=0
    record_cmd "$@"
    [ "$server" = p2pd ] && metrics > "$RAW/$key.metrics-before" 2>/dev/null || true
    local s0 s1
    start_sampler "$RAW/$key.tcpmem"
    s0=$(stat_cpu); c0=$(server_ticks "$server"); t0=$(date +%s.%N)
    times > "$WORK/times.0"   # the client's CPU: this shell's children times before and after
    "$@" > "$out" 2>&1 || rc=$?
    times > "$WORK/times.1"
    t1=$(date +%s.%N); c1=$(server_ticks "$server"); s1=$(stat_cpu)
    stop_sampler
    R[$key.tcpmem_mib]=$(( $(cat "$RAW/$key.tcpmem") * 4096 >> 20 ))
    rm -f "$RAW/$key.tcpmem"
    R[$key.client_cores]=$("$PY" - "$WORK/times.0" "$WORK/times.1" "$t0" "$t1" <<'PY'
import re, sys
def children(path):   # second line of bash's `times`: children user and system, e.g. 0m1.234s
    line = open(path).read().splitlines()[1]
    return sum(int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", line))
print(f"{(children(sys.argv[2]) - children(sys.argv[1])) / (float(sys.argv[4]) - float(sys.argv[3])):.2f}")
PY
)
    read -r R[$key.busy_pct] R[$key.softirq_pct] R[$key.steal_pct] R[$key.other_pct] < <("$PY" -c "
a = [int(x) for x in '$s0'.split()]; b = [int(x) for x in '$s1'.split()]
d = [y - x for x, y in zip(a, b)]; t = sum(d) or 1
busy = 100 * (t - d[2]) / t
ours = 100 * ($c1 - $c0) / $CLK_TCK / ($t1 - $t0) / $CORES + 100 * ${R[$key.client_cores]} / $CORES
print(round(busy), round(100 * d[3] / t), round(100 * d[4] / t), max(0, round(busy - ours)))")
    [ "$server" = p2pd ] && metrics > "$RAW/$key.metrics-after" 2>/dev/null || true
    R[$key.wall]=$(calc "$t1 - $t0")
    R[$key.server_cores]=$(calc "round(($c1 - $c0) / $CLK_TCK / ($t1 - $t0), 2)")
    R[$key.rc]=$rc
    if [ "$client" = wrk ]; then
        local line
        line=$(grep -m1 '^WRKJSON ' "$out" | cut -d' ' -f2-) || true
        if [ -n "$line" ]; then
            echo "$line" > "$RAW/$key.json"
            R[$key.gbit]=$(calc "round($(jget "$RAW/$key.json" bytes) * 8 / $(jget "$RAW/$key.json" duration_us) / 1e3, 3)")
            R[$key.bytes]=$(jget "$RAW/$key.json" bytes)
            R[$key.errors]=$("$PY" -c "import json; d=json.load(open('$RAW/$key.json')); print(sum(v for k,v in d.items() if k.startswith('errors_') and k != 'errors_timeout'))")
        fi
    else
        if [ -s "$RAW/$key.json" ]; then
            R[$key.gbit]=$(calc "round($(jget "$RAW/$key.json" gbit_per_s), 3)")
            R[$key.bytes]=$(jget "$RAW/$key.json" bytes)
            R[$key.errors]=$(jget "$RAW/$key.json" errors_total)
        fi
    fi
    if [ "$server" = p2pd ] && [ -s "$RAW/$key.metrics-after" ]; then
        local h m
        h=$(( $(metric p2pd_memory_cache_hits_total "$RAW/$key.metrics-after") - $(metric p2pd_memory_cache_hits_total "$RAW/$key.metrics-before") ))
        m=$(( $(metric p2pd_memory_cache_misses_total "$RAW/$key.metrics-after") - $(metric p2pd_memory_cache_misses_total "$RAW/$key.metrics-before") ))
        R[$key.disk_bytes]=$(( $(metric p2pd_disk_read_bytes_total "$RAW/$key.metrics-after") - $(metric p2pd_disk_read_bytes_total "$RAW/$key.metrics-before") ))
        [ $((h + m)) -gt 0 ] && R[$key.hit_pct]=$(calc "round(100 * $h / ($h + $m), 1)")
    fi
    if [ "$rc" -ne 0 ]; then
        log "  $key: client exited $rc (see $out)"; tail -3 "$out" >&2
    fi
    log "  $key: $(fmt "${R[$key.gbit]:-}") Gbit/s (server ${R[$key.server_cores]} cores${R[$key.client_cores]:+, client ${R[$key.client_cores]} cores}, machine ${R[$key.busy_pct]}% busy, ${R[$key.other_pct]}% not ours${R[$key.hit_pct]:+, p2pd cache hits ${R[$key.hit_pct]}%})"
}

bench_verify_flag() { [ "$SPP_VERIFY" = 1 ] || echo --no-verify; }

url_list() {   # url_list SCHEME PORT SUBDIR PREFIX COUNT > file
    local i
    for ((i = 0; i < $5; i++)); do printf '%s://127.0.0.1:%s/%s/%s%02d\n' "$1" "$2" "$3" "$4" "$i"; done
}

warm_http() {  # warm_http PORT SUBDIR PREFIX COUNT: one full GET of each file
    local i
    for ((i = 0; i < $4; i++)); do
        curl -sf -o /dev/null "http://127.0.0.1:$1/$2/$3$(printf %02d "$i")" || die "warm-up GET $2/$3$i on port $1 failed"
    done
}

# Some machines reclaim page cache that has been idle for a while (e.g. a DAMON pageout
# scheme on VMs), so content is warmed again right before every hot run and VoD step,
# through the server about to be measured; the share in the page cache is recorded.
port_of() { if [ "$1" = p2pd ]; then echo "$P2PD_PORT"; else echo "$NGINX_PORT"; fi; }
rewarm() {   # rewarm KEY SERVER SUBDIR PREFIX COUNT
    local key=$1 server=$2 sub=$3 prefix=$4 count=$5 i files=()
    warm_http "$(port_of "$server")" "$sub" "$prefix" "$count"
    for ((i = 0; i < count; i++)); do files+=("$CORPUS/$sub/$prefix$(printf %02d "$i")"); done
    R[$key.cached]=$(resident_pct "${files[@]}")
}

resident_pct() {   # resident_pct FILES...: % of the files' bytes in the page cache
    fincore -b -n -o RES,SIZE "$@" | awk '{r += $1; s += $2} END { printf "%.1f\n", s ? 100 * r / s : 0 }'
}
cold_files() { local i; for ((i = 0; i < COLD_FILES; i++)); do printf '%s/cold/file%02d\n' "$CORPUS" "$i"; done; }
DROP_PCT=""
drop_page_cache() {   # sets DROP_PCT: % of the cold set still in the page cache afterwards
    sync
    if { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
        R[drop_method]="sync; echo 3 > /proc/sys/vm/drop_caches"
    else
        # No permission: POSIX_FADV_DONTNEED on every cold file (dd iflag=nocache count=0).
        local f
        while read -r f; do dd if="$f" iflag=nocache count=0 status=none; done < <(cold_files)
        R[drop_method]="posix_fadvise(DONTNEED) per cold file (drop_caches refused)"
    fi
    local cf
    mapfile -t cf < <(cold_files)
    DROP_PCT=$(resident_pct "${cf[@]}")
    if "$PY" -c "import sys; sys.exit(0 if $DROP_PCT > 5 else 1)"; then
        log "  WARNING: ${DROP_PCT}% of the cold set is still in the page cache: not a cold run"
        R[cold_not_cold]="${R[cold_not_cold]:-} ${DROP_PCT}%"
    fi
}

# ===================================================================== main ==
rm -rf "$LOGS"
mkdir -p "$WORK" "$LOGS" "$CORPUS" "$INDEX_DIR"
: > "$COMMANDS"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)

log "p2pd perf run ($( [ "$QUICK" = 1 ] && echo quick || echo default)); work dir $WORK"
install_deps
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3)   # the system one starts faster than a shim
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi

COMMIT=$(git -C "$REPO" rev-parse --short HEAD)
DIRTY=""
[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no -- . ':!perf/results' 2>/dev/null)" ] && DIRTY="-dirty"
RESULT_MD=$PERF_DIR/results/$STAMP-$COMMIT$DIRTY.md
RAW=$PERF_DIR/results/$STAMP-$COMMIT$DIRTY
mkdir -p "$RAW"

if [ -z "${PERF_P2PD_BIN:-}" ] || [ -z "${PERF_BENCH_BIN:-}" ]; then
    log "building (cargo build --release --locked --bins)"
    record_cmd cargo build --release --locked --bins
    cargo build --release --locked --bins 2>&1 | tail -2 >&2
fi
[ -x "$P2PD" ] || die "no p2pd binary at $P2PD"
[ -x "$BENCH" ] || die "no p2pd-bench binary at $BENCH (is it in this commit?)"

# A DAMON "pageout" scheme (kdamond) reclaims memory left idle for a while, page cache included.
R[damon]="none"
for kd in /sys/kernel/mm/damon/admin/kdamonds/[0-9]*; do
    [ "$(cat "$kd/state" 2>/dev/null)" = on ] || continue
    for sc in "$kd"/contexts/*/schemes/[0-9]*; do
        [ "$(cat "$sc/action" 2>/dev/null)" = pageout ] || continue
        aggr=$(cat "$kd"/contexts/0/monitoring_attrs/intervals/aggr_us 2>/dev/null || echo 0)
        age=$(cat "$sc/access_pattern/age/min" 2>/dev/null || echo 0)
        R[damon]="kdamond pageout scheme on: memory idle ≥ $((aggr * age / 1000000)) s is reclaimed (quota $(( $(cat "$sc/quotas/bytes" 2>/dev/null || echo 0) >> 20 )) MiB per $(cat "$sc/quotas/reset_interval_ms" 2>/dev/null || echo '?') ms)"
    done
done
[ "${R[damon]}" != none ] && log "note: ${R[damon]}; content is re-warmed before every hot run and VoD step"

# Other load on the machine skews every number: measure it for 2 s before starting.
s0=$(stat_cpu); sleep 2; s1=$(stat_cpu)
R[idle_check]=$("$PY" -c "
a = [int(x) for x in '$s0'.split()]; b = [int(x) for x in '$s1'.split()]
d = [y - x for x, y in zip(a, b)]; t = sum(d) or 1
print(round(100 * (t - d[2]) / t))")
R[loadavg]=$(cut -d' ' -f1-3 /proc/loadavg)
if [ "${R[idle_check]}" -gt 15 ]; then
    log "WARNING: the machine is ${R[idle_check]}% busy before the run (load ${R[loadavg]}): numbers will be skewed"
fi

# ------------------------------------------------------------------ corpus --
gen_set() {   # gen_set SUBDIR PREFIX COUNT SIZE: random files, kept from earlier runs if their size fits
    local dir=$CORPUS/$1 prefix=$2 count=$3 size i f n=0
    size=$(bytes_of "$4")
    mkdir -p "$dir"
    for f in "$dir"/*; do   # files beyond COUNT from an earlier, bigger configuration
        [ -e "$f" ] || continue
        i=${f##*/"$prefix"}; [[ "$i" =~ ^[0-9]+$ ]] && [ $((10#$i)) -lt "$count" ] || rm -f "$f"
    done
    for ((i = 0; i < count; i++)); do
        f=$dir/$prefix$(printf %02d "$i")
        [ -f "$f" ] && [ "$(stat -c %s "$f")" = "$size" ] && continue
        if command -v openssl >/dev/null 2>&1; then openssl rand -out "$f" "$size"
        else head -c "$size" /dev/urandom > "$f"; fi
        n=$((n + 1))
    done
    chmod -R a+rX "$dir"
    [ "$n" -gt 0 ] && log "  $1: wrote $n of $count files of $4" || log "  $1: $count files of $4 kept from an earlier run"
}
log "corpus under $CORPUS"
gen_set hot file "$HOT_FILES" "$HOT_SIZE"
gen_set vod title "$VOD_FILES" "$VOD_SIZE"
gen_set cold file "$COLD_FILES" "$COLD_SIZE"
find "$CORPUS" -mindepth 1 -maxdepth 1 ! -name hot ! -name vod ! -name cold -exec rm -rf {} +
sync
NFILES=$((HOT_FILES + VOD_FILES + COLD_FILES))
COLD_SET_BYTES=$((COLD_FILES * $(bytes_of "$COLD_SIZE")))

url_list spp "$P2PD_PORT" hot file "$HOT_FILES" > "$RAW/hot-spp.urls"
url_list http "$P2PD_PORT" hot file "$HOT_FILES" > "$RAW/hot-p2pd-http.urls"
url_list http "$NGINX_PORT" hot file "$HOT_FILES" > "$RAW/hot-nginx-http.urls"
url_list spp "$P2PD_PORT" vod title "$VOD_FILES" > "$RAW/vod-spp.urls"
url_list http "$P2PD_PORT" vod title "$VOD_FILES" > "$RAW/vod-p2pd-http.urls"
url_list http "$NGINX_PORT" vod title "$VOD_FILES" > "$RAW/vod-nginx-http.urls"
url_list spp "$P2PD_PORT" cold file "$COLD_FILES" > "$RAW/cold-spp.urls"
url_list http "$P2PD_PORT" cold file "$COLD_FILES" > "$RAW/cold-p2pd-http.urls"
url_list http "$NGINX_PORT" cold file "$COLD_FILES" > "$RAW/cold-nginx-http.urls"
sed 's|^http://[^/]*||' "$RAW/cold-nginx-http.urls" > "$RAW/cold.paths"

# ----------------------------------------------------------------- ceiling --
if has ceiling; then
    log "ceiling: iperf3 over loopback"
    port_busy "$IPERF_PORT" && die "port $IPERF_PORT is in use (set PERF_IPERF_PORT)"
    for streams in 1 "$CORES"; do
        record_cmd iperf3 -s -1 -B 127.0.0.1 -p "$IPERF_PORT"
        iperf3 -s -1 -B 127.0.0.1 -p "$IPERF_PORT" > "$LOGS/iperf3-server-$streams.log" 2>&1 &
        ipid=$!; PIDS+=("$ipid")
        sleep 0.5
        cmd=(iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -t "$IPERF_TIME" -P "$streams" -J)
        record_cmd "${cmd[@]}"
        "${cmd[@]}" > "$RAW/iperf3-P$streams.json" || die "iperf3 client failed"
        wait "$ipid" 2>/dev/null || true; forget_pid "$ipid"
        R[iperf.P$streams]=$(calc "round($(jget "$RAW/iperf3-P$streams.json" end.sum_received.bits_per_second) / 1e9, 2)")
        log "  iperf3 -P $streams: ${R[iperf.P$streams]} Gbit/s"
    done
    R[iperf.best]=$(calc "max(${R[iperf.P1]}, ${R[iperf.P$CORES]})")
fi

# -------------------------------------------------------- start the servers --
log "starting p2pd (-M $P2PD_MEM) and nginx"
start_p2pd "$P2PD_MEM" main
start_nginx

# --------------------------------------------------------------------- hot --
HOT_URL_PATH=/hot/file00
if has hot; then
    log "hot: warming p2pd's memory cache and nginx's page cache"
    record_raw "# warm-up: curl -sf -o /dev/null http://127.0.0.1:{$P2PD_PORT,$NGINX_PORT}/hot/fileNN, each hot file once per server, and again through the measured server right before each hot run"
    warm_http "$P2PD_PORT" hot file "$HOT_FILES"
    warm_http "$NGINX_PORT" hot file "$HOT_FILES"
    mapfile -t hf < <(for ((i = 0; i < HOT_FILES; i++)); do printf '%s/hot/file%02d\n' "$CORPUS" "$i"; done)
    R[hot.resident]=$(resident_pct "${hf[@]}")
    R[hot.p2pd_cache_bytes]=$(metric p2pd_memory_cache_bytes)
    d=${HOT_DURATION}s
    log "hot: ${HOT_DURATION}s per run, $CONNS connections"
    rewarm hot.wrk.p2pd p2pd hot file "$HOT_FILES"
    run_measure hot.wrk.p2pd p2pd wrk wrk -t"$WRK_THREADS" -c"$CONNS" -d"$d" --timeout 60s -s "$PERF_DIR/wrk.lua" "http://127.0.0.1:$P2PD_PORT$HOT_URL_PATH"
    rewarm hot.wrk.nginx nginx hot file "$HOT_FILES"
    run_measure hot.wrk.nginx nginx wrk wrk -t"$WRK_THREADS" -c"$CONNS" -d"$d" --timeout 60s -s "$PERF_DIR/wrk.lua" "http://127.0.0.1:$NGINX_PORT$HOT_URL_PATH"
    rewarm hot.bench.p2pd-spp p2pd hot file "$HOT_FILES"
    run_measure hot.bench.p2pd-spp p2pd bench "$BENCH" --max-throughput -c "$CONNS" -d "$d" --popularity uniform $(bench_verify_flag) -q --json "$RAW/hot.bench.p2pd-spp.json" --url-file "$RAW/hot-spp.urls"
    rewarm hot.bench.p2pd-http p2pd hot file "$HOT_FILES"
    run_measure hot.bench.p2pd-http p2pd bench "$BENCH" --max-throughput -c "$CONNS" -d "$d" --popularity uniform -q --json "$RAW/hot.bench.p2pd-http.json" --url-file "$RAW/hot-p2pd-http.urls"
    rewarm hot.bench.nginx-http nginx hot file "$HOT_FILES"
    run_measure hot.bench.nginx-http nginx bench "$BENCH" --max-throughput -c "$CONNS" -d "$d" --popularity uniform -q --json "$RAW/hot.bench.nginx-http.json" --url-file "$RAW/hot-nginx-http.urls"
    if [ "$SPP_VERIFY" != 1 ]; then   # for information: the same SPP run with the client verifying every block
        rewarm hot.bench.p2pd-spp-verified p2pd hot file "$HOT_FILES"
        run_measure hot.bench.p2pd-spp-verified p2pd bench "$BENCH" --max-throughput -c "$CONNS" -d "$d" --popularity uniform -q --json "$RAW/hot.bench.p2pd-spp-verified.json" --url-file "$RAW/hot-spp.urls"
    fi
fi

# --------------------------------------------------------------------- VoD --
# vod_step KEY SERVER N URLFILE [extra]: one step; prints PASS or FAIL
vod_step() {
    local key=$1 server=$2 n=$3 urls=$4; shift 4
    local rate watch j
    rate=$(( (n + VOD_RAMP - 1) / VOD_RAMP ))
    watch=$((VOD_STEP + 10))
    j=$RAW/$key.json
    rewarm "$key" "$server" vod title "$VOD_FILES"
    run_measure "$key" "$server" bench "$BENCH" --max-viewers "$n" --rate "$rate" --arrivals fixed \
        --popularity zipf:1.0 --bitrate "$BITRATE" --watch "${watch}s" -d "${VOD_STEP}s" "$@" -q \
        --json "$j" --url-file "$urls" >&2
    local stalls failed peak
    stalls=$(jget "$j" stalls.count 2>/dev/null || true)
    failed=$(jget "$j" viewers.failed 2>/dev/null || true)
    peak=$(jget "$j" viewers.concurrent_peak 2>/dev/null || true)
    R[$key.stalls]=${stalls:-n/a}; R[$key.failed]=${failed:-n/a}; R[$key.peak]=${peak:-n/a}
    R[$key.startup_p99]=$(jget "$j" startup_ms.p99 2>/dev/null || true)
    R[$key.errors_total]=$(jget "$j" errors_total 2>/dev/null || true)
    local verdict
    verdict=$("$PY" -c "
try: print('PASS' if float('$stalls') == 0 and float('$failed') == 0 and float('$peak') >= $n else 'FAIL')
except ValueError: print('FAIL')")
    R[$key.verdict]=$verdict
    log "    $n viewers: $verdict (stalls ${stalls:-?}, failed ${failed:-?}, peak ${peak:-?}, startup p99 ${R[$key.startup_p99]:-?} ms, ${R[$key.gbit]:-?} Gbit/s)"
    sleep 2   # let the previous step's connections drain
    [ "$verdict" = PASS ]
}
# vod_capacity NAME SERVER URLFILE [extra]: ramp, then bisect once
vod_capacity() {
    local name=$1 server=$2 urls=$3; shift 3
    local n=$VOD_START good=0 bad=0
    local steps=()
    log "  VoD capacity: $name"
    while [ "$n" -le "$VOD_CAP" ]; do
        steps+=("$n")
        if vod_step "vod.$name.$n" "$server" "$n" "$urls" "$@"; then good=$n; n=$((n * 2)); else bad=$n; break; fi
    done
    if [ "$VOD_BISECT" = 1 ] && [ "$bad" -gt 0 ] && [ "$good" -gt 0 ]; then
        local mid=$(( (good + bad) / 2 ))
        steps+=("$mid")
        vod_step "vod.$name.$mid" "$server" "$mid" "$urls" "$@" && good=$mid
    fi
    R[vod.$name.steps]="${steps[*]}"
    R[vod.$name.capacity]=$good
    R[vod.$name.first_bad]=$bad
    if [ "$bad" = 0 ]; then R[vod.$name.note]="no failure up to the cap ($VOD_CAP)"
    elif [ "$good" = 0 ]; then R[vod.$name.note]="failed at the first step ($VOD_START)"; fi
    log "  $name: capacity ${good} viewers${R[vod.$name.note]:+ (${R[vod.$name.note]})}"
}
if has vod; then
    if [ "$VOD_CAP" -gt $((FD_LIMIT - 500)) ]; then
        VOD_CAP=$((FD_LIMIT - 500)); log "VoD cap lowered to $VOD_CAP by the open-files limit ($FD_LIMIT)"
    fi
    log "VoD: warming the $VOD_FILES titles on both servers"
    record_raw "# warm-up: curl -sf -o /dev/null http://127.0.0.1:{$P2PD_PORT,$NGINX_PORT}/vod/titleNN, each title once per server, and again through the measured server right before each VoD step"
    warm_http "$P2PD_PORT" vod title "$VOD_FILES"
    warm_http "$NGINX_PORT" vod title "$VOD_FILES"
    log "VoD: ${VOD_STEP}s per step, arrivals within ${VOD_RAMP}s, $BITRATE viewers, steps from $VOD_START doubling up to $VOD_CAP"
    vod_capacity p2pd-spp p2pd "$RAW/vod-spp.urls" $(bench_verify_flag)
    vod_capacity p2pd-http p2pd "$RAW/vod-p2pd-http.urls"
    vod_capacity nginx-http nginx "$RAW/vod-nginx-http.urls"
fi

# -------------------------------------------------------------------- cold --
if has cold; then
    log "cold: $COLD_FILES files of $COLD_SIZE ($((COLD_SET_BYTES >> 20)) MiB), p2pd-bench reads each once, wrk rotates over them for ${COLD_DURATION}s; p2pd restarted with -M $P2PD_COLD_MEM before each of its runs"
    stop_p2pd
    # Disk ceiling: the whole cold set read once with O_DIRECT by $CORES parallel dd.
    drop_page_cache; R[cold.resident_ceiling]=$DROP_PCT
    record_raw "# disk ceiling, after dropping the page cache:"
    record_raw "ls $CORPUS/cold/file* | xargs -P $CORES -I{} dd if={} of=/dev/null bs=1M iflag=direct status=none"
    t0=$(date +%s.%N)
    cold_files | xargs -P "$CORES" -I{} dd if={} of=/dev/null bs=1M iflag=direct status=none
    t1=$(date +%s.%N)
    R[disk.gbit]=$(calc "round($COLD_SET_BYTES * 8 / ($t1 - $t0) / 1e9, 2)")
    log "  disk ceiling (O_DIRECT, $CORES x dd): ${R[disk.gbit]} Gbit/s"

    COLD_P2PD_EXTRA=()
    cold_run() {   # cold_run KEY SERVER CLIENT CMD...  (p2pd gets "${COLD_P2PD_EXTRA[@]}" too)
        local key=$1 server=$2
        record_raw "# $key: $([ "$server" = p2pd ] && echo "p2pd restarted, then ")page cache dropped"
        if [ "$server" = p2pd ]; then stop_p2pd; start_p2pd "$P2PD_COLD_MEM" "$key" "${COLD_P2PD_EXTRA[@]}"; fi
        drop_page_cache; R[$key.resident]=$DROP_PCT
        run_measure "$@"
        if [ -n "${R[$key.bytes]:-}" ] && [ "${R[$key.bytes]}" -gt "$COLD_SET_BYTES" ]; then
            R[$key.note]="read more than the cold set ($((R[$key.bytes] >> 20)) MiB > $((COLD_SET_BYTES >> 20)) MiB): some bytes twice"
            log "  WARNING $key: ${R[$key.note]}"
        fi
        if [ "$server" = nginx ]; then
            mapfile -t cf < <(cold_files)
            R[$key.resident_after]=$(resident_pct "${cf[@]}")
            R[$key.disk_mib]=$("$PY" -c "print(round(${R[$key.resident_after]} * $COLD_SET_BYTES / 100 / 1048576))")
        fi
    }
    d=${COLD_DURATION}s
    cold_run cold.bench.p2pd-spp p2pd bench "$BENCH" --max-throughput --once -c "$CONNS" -d "$COLD_LIMIT" $(bench_verify_flag) -q --json "$RAW/cold.bench.p2pd-spp.json" --url-file "$RAW/cold-spp.urls"
    cold_run cold.bench.nginx-http nginx bench "$BENCH" --max-throughput --once -c "$CONNS" -d "$COLD_LIMIT" -q --json "$RAW/cold.bench.nginx-http.json" --url-file "$RAW/cold-nginx-http.urls"
    cold_run cold.bench.p2pd-http p2pd bench "$BENCH" --max-throughput --once -c "$CONNS" -d "$COLD_LIMIT" -q --json "$RAW/cold.bench.p2pd-http.json" --url-file "$RAW/cold-p2pd-http.urls"
    cold_run cold.wrk.nginx nginx wrk wrk -t"$WRK_THREADS" -c"$CONNS" -d"$d" --timeout 60s -s "$PERF_DIR/wrk.lua" "http://127.0.0.1:$NGINX_PORT/" -- "$RAW/cold.paths" "$WRK_THREADS"
    cold_run cold.wrk.p2pd p2pd wrk wrk -t"$WRK_THREADS" -c"$CONNS" -d"$d" --timeout 60s -s "$PERF_DIR/wrk.lua" "http://127.0.0.1:$P2PD_PORT/" -- "$RAW/cold.paths" "$WRK_THREADS"
    # The same two p2pd HTTP runs with --buffered-reads (page cache and kernel read-ahead
    # instead of O_DIRECT), where this p2pd has the option: shows which is faster here.
    p2pd_help=$("$P2PD" --help 2>/dev/null || true)
    if [[ "$p2pd_help" == *--buffered-reads* ]] && [[ " $P2PD_ARGS " != *" --buffered-reads "* ]]; then
        COLD_P2PD_EXTRA=(--buffered-reads)
        cold_run cold.bench.p2pd-http-buffered p2pd bench "$BENCH" --max-throughput --once -c "$CONNS" -d "$COLD_LIMIT" -q --json "$RAW/cold.bench.p2pd-http-buffered.json" --url-file "$RAW/cold-p2pd-http.urls"
        cold_run cold.wrk.p2pd-buffered p2pd wrk wrk -t"$WRK_THREADS" -c"$CONNS" -d"$d" --timeout 60s -s "$PERF_DIR/wrk.lua" "http://127.0.0.1:$P2PD_PORT/" -- "$RAW/cold.paths" "$WRK_THREADS"
        COLD_P2PD_EXTRA=()
    fi
fi

stop_nginx
stop_p2pd
cp "$NGDIR/nginx.conf" "$RAW/nginx.conf"
cp "$LOGS"/p2pd-*.log "$RAW/" 2>/dev/null || true
cp "$COMMANDS" "$RAW/commands.txt"
END_EPOCH=$(date +%s)
RUNTIME=$((END_EPOCH - START_EPOCH))

# ================================================================== report ==
g() { fmt "${R[$1.gbit]:-}"; }
rt() { ratio "${R[$1.gbit]:-}" "${R[$2.gbit]:-}"; }
rv() { ratio "${R[vod.$1.capacity]:-}" "${R[vod.$2.capacity]:-}"; }
rc_best() {  # best p2pd number of a section / ceiling
    "$PY" -c "
xs=[float(x) for x in '$1'.split() if x not in ('', 'n/a')]
c='$2'
print('n/a' if not xs or c in ('', 'n/a') else f'{max(xs)/float(c):.2f}')"
}

SUMMARY=$(
    echo "p2pd/nginx ratios (>1: p2pd ahead), commit $COMMIT$DIRTY, $STAMP, $(q quick default) run"
    if has hot; then
        echo "hot  wrk        http: p2pd $(g hot.wrk.p2pd) / nginx $(g hot.wrk.nginx) Gbit/s = $(rt hot.wrk.p2pd hot.wrk.nginx)"
        echo "hot  p2pd-bench http: p2pd $(g hot.bench.p2pd-http) / nginx $(g hot.bench.nginx-http) Gbit/s = $(rt hot.bench.p2pd-http hot.bench.nginx-http)"
        echo "hot  p2pd-bench spp/http: p2pd $(g hot.bench.p2pd-spp) / nginx $(g hot.bench.nginx-http) Gbit/s = $(rt hot.bench.p2pd-spp hot.bench.nginx-http)"
    fi
    if has cold; then
        echo "cold wrk        http: p2pd $(g cold.wrk.p2pd) / nginx $(g cold.wrk.nginx) Gbit/s = $(rt cold.wrk.p2pd cold.wrk.nginx)"
        echo "cold p2pd-bench http: p2pd $(g cold.bench.p2pd-http) / nginx $(g cold.bench.nginx-http) Gbit/s = $(rt cold.bench.p2pd-http cold.bench.nginx-http)"
        echo "cold p2pd-bench spp/http: p2pd $(g cold.bench.p2pd-spp) / nginx $(g cold.bench.nginx-http) Gbit/s = $(rt cold.bench.p2pd-spp cold.bench.nginx-http)"
        if [ -n "${R[cold.wrk.p2pd-buffered.wall]:-}" ]; then
            echo "cold wrk        http, p2pd --buffered-reads: p2pd $(g cold.wrk.p2pd-buffered) / nginx $(g cold.wrk.nginx) Gbit/s = $(rt cold.wrk.p2pd-buffered cold.wrk.nginx)"
            echo "cold p2pd-bench http, p2pd --buffered-reads: p2pd $(g cold.bench.p2pd-http-buffered) / nginx $(g cold.bench.nginx-http) Gbit/s = $(rt cold.bench.p2pd-http-buffered cold.bench.nginx-http)"
        fi
    fi
    if has vod; then
        echo "VoD  capacity     http: p2pd ${R[vod.p2pd-http.capacity]:-n/a} / nginx ${R[vod.nginx-http.capacity]:-n/a} viewers = $(rv p2pd-http nginx-http)"
        echo "VoD  capacity spp/http: p2pd ${R[vod.p2pd-spp.capacity]:-n/a} / nginx ${R[vod.nginx-http.capacity]:-n/a} viewers = $(rv p2pd-spp nginx-http)"
    fi
    if has ceiling && has hot; then
        echo "hot  best p2pd / iperf3 ceiling ${R[iperf.best]} Gbit/s = $(rc_best "$(g hot.wrk.p2pd) $(g hot.bench.p2pd-http) $(g hot.bench.p2pd-spp)" "${R[iperf.best]}")  (nginx: $(rc_best "$(g hot.wrk.nginx) $(g hot.bench.nginx-http)" "${R[iperf.best]}"))"
    fi
    if has cold; then
        echo "cold best p2pd (O_DIRECT) / disk ceiling ${R[disk.gbit]} Gbit/s = $(rc_best "$(g cold.wrk.p2pd) $(g cold.bench.p2pd-http) $(g cold.bench.p2pd-spp)" "${R[disk.gbit]}")  (nginx: $(rc_best "$(g cold.wrk.nginx) $(g cold.bench.nginx-http)" "${R[disk.gbit]}"))"
    fi
    echo "total runtime ${RUNTIME}s"
)

row() {   # row KEY SERVER PROTO CLIENT
    local k=$1 notes=""
    [ "${R[$k.rc]:-0}" != 0 ] && notes+="client exit ${R[$k.rc]}; "
    [ -n "${R[$k.errors]:-}" ] && [ "${R[$k.errors]}" != 0 ] && notes+="errors ${R[$k.errors]}; "
    [ -n "${R[$k.hit_pct]:-}" ] && notes+="p2pd cache hits ${R[$k.hit_pct]}%; "
    [ -n "${R[$k.disk_bytes]:-}" ] && notes+="p2pd disk reads $((R[$k.disk_bytes] >> 20)) MiB; "
    [ -n "${R[$k.cached]:-}" ] && notes+="page cache after re-warm ${R[$k.cached]}%; "
    [ -n "${R[$k.resident]:-}" ] && notes+="page cache before ${R[$k.resident]}%; "
    [ -n "${R[$k.resident_after]:-}" ] && notes+="after ${R[$k.resident_after]}% (≈ ${R[$k.disk_mib]} MiB read from disk); "
    [ -n "${R[$k.note]:-}" ] && notes+="${R[$k.note]}; "
    local mib="n/a"; [ -n "${R[$k.bytes]:-}" ] && mib=$((R[$k.bytes] >> 20))
    echo "| $2 | $3 | $4 | **$(g "$k")** | $mib | ${R[$k.server_cores]:-n/a} | ${R[$k.client_cores]:-n/a} | ${R[$k.busy_pct]:-n/a} / ${R[$k.softirq_pct]:-n/a} / ${R[$k.other_pct]:-n/a} | ${notes%; } |"
}
vod_rows() {   # vod_rows NAME
    local n k
    for n in ${R[vod.$1.steps]:-}; do
        k=vod.$1.$n
        echo "| $1 | $n | ${R[$k.verdict]:-n/a} | ${R[$k.stalls]:-n/a} | ${R[$k.failed]:-n/a} | ${R[$k.peak]:-n/a} | $(fmt "${R[$k.startup_p99]:-}" 0) | $(g "$k") | ${R[$k.server_cores]:-n/a} | ${R[$k.client_cores]:-n/a} | ${R[$k.busy_pct]:-n/a} / ${R[$k.other_pct]:-n/a} | ${R[$k.tcpmem_mib]:-n/a} | ${R[$k.errors_total]:-n/a} | ${R[$k.hit_pct]:--} | ${R[$k.cached]:-n/a} |"
    done
}

disk_dev=$(findmnt -no SOURCE -T "$CORPUS" 2>/dev/null || echo "?")
{
    echo "# p2pd vs nginx — $STAMP ($(q "quick" "default") run)"
    echo
    echo "Produced by \`perf/run.sh\`; raw outputs in [\`$(basename "$RAW")/\`]($(basename "$RAW")/)."
    echo
    echo "## Summary"
    echo
    echo '```'
    echo "$SUMMARY"
    echo '```'
    echo
    echo "## Run"
    echo
    echo "- date: $(date -d "@$START_EPOCH" '+%Y-%m-%d %H:%M:%S %Z'), runtime ${RUNTIME}s"
    echo "- commit: \`$COMMIT$DIRTY\` ($(git -C "$REPO" log -1 --format=%s | head -c 100))"
    echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
    echo "- corpus filesystem: $(findmnt -no SOURCE,FSTYPE,OPTIONS -T "$CORPUS" 2>/dev/null) ($(df -h --output=size,avail "$CORPUS" | tail -1 | awk '{print $1 " size, " $2 " free"}'); rotational $(cat /sys/block/"$(basename "$disk_dev")"/queue/rotational 2>/dev/null || echo '?'))"
    echo "- versions: $("$NGINX" -v 2>&1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(iperf3 -v | head -1), $("$P2PD" --version), $(cargo --version 2>/dev/null || echo 'cargo ?')"
    echo "- p2pd: \`--threads $THREADS\`, \`-M $P2PD_MEM\` (hot, VoD), \`-M $P2PD_COLD_MEM\` (cold, a fresh process per run), \`--max-connections 32768\`${P2PD_ARGS:+, \`$P2PD_ARGS\`}, block size default; nginx: worker_processes $THREADS, sendfile, tcp_nopush, keepalive, access_log off ([config]($(basename "$RAW")/nginx.conf))"
    echo "- clients on the same $CORES cores as the servers: wrk \`-t$WRK_THREADS -c$CONNS\`, p2pd-bench \`-c $CONNS\` (max-throughput); SPP runs $( [ "$SPP_VERIFY" = 1 ] && echo "verify every block" || echo "use \`--no-verify\` (server alone) unless marked verified")"
    echo "- corpus ($CORPUS): hot $HOT_FILES × $HOT_SIZE, VoD $VOD_FILES × $VOD_SIZE, cold $COLD_FILES × $COLD_SIZE; random bytes; p2pd digest indexes hashed in this run: ${R[p2pd_index_builds]:-0} (the others reused from $INDEX_DIR)"
    echo "- other load before the run: ${R[idle_check]}% CPU busy over 2 s, load average ${R[loadavg]}$([ "${R[idle_check]}" -gt 15 ] && echo " — **the machine was not idle; numbers are skewed**")"
    echo "- proactive reclaim: ${R[damon]}"
    echo "- open-files limit $FD_LIMIT; page cache dropped by: ${R[drop_method]:-n/a}; TCP memory pressure starts at $((TCP_MEM_PRESSURE_PAGES * 4096 >> 20)) MiB (net.ipv4.tcp_mem)"
    echo "- CPU columns: server / client cores = CPU seconds of the server's processes / of the client (wrk or p2pd-bench) per second of run; machine busy and softirq % from /proc/stat over the run (100% = all $CORES cores); \"not ours\" = busy minus server and client, i.e. kernel threads (ksoftirqd, kworkers) and any other load on the machine"
    echo
    echo "## Ceilings"
    echo
    if has ceiling; then
        echo "- iperf3 loopback, 1 stream: **${R[iperf.P1]} Gbit/s**; $CORES streams: **${R[iperf.P$CORES]} Gbit/s**"
    fi
    if has cold; then
        echo "- disk, the cold set read once with O_DIRECT by $CORES parallel \`dd bs=1M\`: **${R[disk.gbit]} Gbit/s** (page cache before: ${R[cold.resident_ceiling]}%)"
    fi
    echo
    if has hot; then
        echo "## Hot throughput (${HOT_DURATION}s per run, content in memory)"
        echo
        echo "p2pd memory cache after warm-up: $((${R[hot.p2pd_cache_bytes]:-0} >> 20)) MiB; hot files in the page cache: ${R[hot.resident]}%. wrk fetches \`$HOT_URL_PATH\` over and over; p2pd-bench fetches the $HOT_FILES hot files (uniform)."
        echo
        echo "| server | protocol | client | Gbit/s | MiB moved | server cores | client cores | machine busy / softirq / not ours % | notes |"
        echo "|---|---|---|---|---|---|---|---|---|"
        row hot.wrk.p2pd p2pd HTTP wrk
        row hot.wrk.nginx nginx HTTP wrk
        row hot.bench.p2pd-http p2pd HTTP p2pd-bench
        row hot.bench.nginx-http nginx HTTP p2pd-bench
        row hot.bench.p2pd-spp p2pd SPP p2pd-bench
        [ -n "${R[hot.bench.p2pd-spp-verified.wall]:-}" ] && row hot.bench.p2pd-spp-verified p2pd "SPP, verified" p2pd-bench
        echo
    fi
    if has cold; then
        echo "## Cold throughput (content on disk)"
        echo
        echo "Before each run the page cache is dropped and p2pd is a fresh process with \`-M $P2PD_COLD_MEM\` (its digest indexes reused from disk). p2pd-bench \`--once\` fetches each of the $COLD_FILES cold files exactly once ($((COLD_SET_BYTES >> 20)) MiB, no byte twice); wrk runs ${COLD_DURATION}s rotating over the same files in order (perf/wrk.lua). p2pd reads with O_DIRECT; nginx through the page cache (readahead $(cat /sys/block/"$(basename "$disk_dev")"/queue/read_ahead_kb 2>/dev/null || echo '?') KiB)."
        echo
        echo "| server | protocol | client | Gbit/s | MiB moved | server cores | client cores | machine busy / softirq / not ours % | notes |"
        echo "|---|---|---|---|---|---|---|---|---|"
        row cold.wrk.p2pd p2pd HTTP wrk
        row cold.wrk.nginx nginx HTTP wrk
        row cold.bench.p2pd-http p2pd HTTP p2pd-bench
        row cold.bench.nginx-http nginx HTTP p2pd-bench
        row cold.bench.p2pd-spp p2pd SPP p2pd-bench
        if [ -n "${R[cold.wrk.p2pd-buffered.wall]:-}" ]; then
            row cold.wrk.p2pd-buffered "p2pd --buffered-reads" HTTP wrk
            row cold.bench.p2pd-http-buffered "p2pd --buffered-reads" HTTP p2pd-bench
        fi
        echo
    fi
    if has vod; then
        echo "## VoD capacity ($BITRATE viewers, zero stalls)"
        echo
        echo "Each step: p2pd-bench \`--max-viewers N --rate ceil(N/$VOD_RAMP) --watch $((VOD_STEP + 10))s -d ${VOD_STEP}s --bitrate $BITRATE --popularity zipf:1.0\` over the $VOD_FILES titles (warmed in both servers); PASS = stalls 0, failed 0 and the concurrency reached N. Steps double from $VOD_START up to $VOD_CAP, then one step between the last pass and the first failure."
        echo
        echo "| target | capacity (viewers) | steps | note |"
        echo "|---|---|---|---|"
        for t in p2pd-spp p2pd-http nginx-http; do
            echo "| $t | **${R[vod.$t.capacity]:-n/a}** | ${R[vod.$t.steps]:-} | ${R[vod.$t.note]:-} |"
        done
        echo
        echo "| target | N | verdict | stalls | failed | peak | startup p99 ms | Gbit/s | server cores | client cores | machine busy / not ours % | TCP mem peak MiB | errors | p2pd cache hits % | titles in page cache % |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        vod_rows p2pd-spp; vod_rows p2pd-http; vod_rows nginx-http
        echo
    fi
    echo "## Commands"
    echo
    echo '```'
    sed "s|$REPO/||g" "$COMMANDS"
    echo '```'
} > "$RESULT_MD"

echo
echo "$SUMMARY"
echo "result: ${RESULT_MD#"$REPO"/}"
