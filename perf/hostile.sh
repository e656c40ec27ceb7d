#!/usr/bin/env bash
# perf/hostile.sh — a legitimate viewer against 1,000 hostile connections, per role.
#
# Builds p2pd in release, writes one random file of 4096 blocks (PERF_BLOCK, default
# 256k: 1 GiB) under $PERF_WORK, and for each role (origin, site cache, client cache)
# starts the node on loopback (-M PERF_MEM, -i, --max-connections 4000), runs the
# viewer once to fill a cache, then PERF_ROUNDS rounds (default 3) of: the viewer
# unattacked (the baseline), then again while perf/hostile_attack.py holds a fresh
# set of PERF_ATTACK connections (default 1000) doing the worst they can at once (pipelined Info/Locate/Get requests never
# read, slow readers, Have/Holdings floods, random bytes, crash frames quoting long
# multi-byte paths, half frames, single bytes, silence). The node's VmRSS is sampled
# every 100 ms, its health every second. The viewer: origin `p2pd get` over SPP,
# site cache curl over HTTP from inside its -n, client cache curl through it as
# http_proxy; its bytes are compared with the file.
# Writes perf/results/YYYY-MM-DD-hostile.md (PERF_RESULT overrides) with, per role,
# the peak VmRSS against -M + 64 KiB × connections + 50 MiB, the viewer's throughput
# attacked and unattacked, and whether its bytes were identical.
# Everything listens on 127.33.x.y; no root needed (the open-files limit is raised
# to its hard limit, which must allow the connections).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

WORK=${PERF_WORK:-/tmp/p2pd-perf-hostile}
BLOCK=${PERF_BLOCK:-256k}
MEM=${PERF_MEM:-32M}
THREADS=${PERF_THREADS:-2}
ATTACK=${PERF_ATTACK:-1000}
FLOOD=${PERF_FLOOD_BYTES:-262144}
PORT=${PERF_PORT:-18411}
ROLES=${PERF_ROLES:-origin scc lhc}
ROUNDS=${PERF_ROUNDS:-3}
# Comma-separated attack kinds (info,locate,get,slow,have,random,crash,half,onebyte,
# silent): only these, as many connections of each as in the full mix (diagnosis).
KINDS=${PERF_ATTACK_KINDS:-}
# Seconds between the attack being mounted and the attacked viewer starting.
SETTLE=${PERF_SETTLE:-0}
# Non-empty: sample the node's pinned bytes, shed and open connections every 100 ms
# during each attacked view into $WORK/raw/ROLE-trace-RN (diagnosis).
TRACE=${PERF_TRACE:-}
# Non-empty: perf record the node during each attacked view into
# $WORK/raw/ROLE-perf-RN.data (diagnosis; a frame-pointer build gives call graphs).
RECORD=${PERF_RECORD:-}
RESULT=${PERF_RESULT:-perf/results/$(date +%Y-%m-%d)-hostile.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
P2PD=${PERF_P2PD_BIN:-$TARGET_DIR/release/p2pd}

# shellcheck source=perf/lib.sh
. "$REPO/perf/lib.sh"

# Every attacking connection, the viewer's and the node's own need a descriptor.
need=$(( ATTACK * 2 + 1024 ))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
    ulimit -Hn "$need" 2>/dev/null || die "the open-files hard limit is $hard; $need needed (run as root or raise it)"
fi
ulimit -n "$need"
if [ -z "${PERF_P2PD_BIN:-}" ]; then cargo build --release --locked --bin p2pd >&2; fi

mkdir -p "$WORK/media" "$WORK/logs" "$WORK/raw"
rm -f "$WORK"/raw/*
bs=$(numfmt --from=iec "${BLOCK^^}")
mem=$(numfmt --from=iec "${MEM^^}")
bytes=$(( bs * 4096 ))
if [ "$(stat -c %s "$WORK/media/big.bin" 2>/dev/null || echo 0)" != "$bytes" ]; then
    log "writing a $bytes-byte file (4096 blocks of $BLOCK)"
    head -c "$bytes" /dev/urandom > "$WORK/media/big.bin"
fi

ORIGIN=127.33.0.1:$PORT
NODE=127.33.0.2:$PORT
VIEWER_IP=127.33.200.1
INSIDERS=$(seq -s, -f '127.33.200.%g' 10 29)
OUTSIDERS=$(seq -s, -f '127.33.201.%g' 1 20)

now() { date +%s.%N; }
# CPU seconds the process used so far (all its threads, those gone included).
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# A node past this much memory is SIGKILLed (and the run says so): an unbounded node
# would otherwise take the whole machine.
RSS_CAP=${PERF_RSS_CAP:-3G}
rss_cap_kib=$(( $(numfmt --from=iec "${RSS_CAP^^}") / 1024 ))

sample_rss() {   # sample_rss PID FILE: VmRSS in KiB every 100 ms while PID runs
    local kib
    while kill -0 "$1" 2>/dev/null; do
        kib=$(awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
        if [ -n "$kib" ]; then
            echo "$kib" >> "$2"
            if [ "$kib" -gt "$rss_cap_kib" ]; then
                kill -9 "$1" 2>/dev/null || true
                echo "$kib" > "$2.killed"
                log "VmRSS of pid $1 passed $RSS_CAP ($kib KiB): killed"
            fi
        fi
        sleep 0.1
    done
}

trace_metrics() {   # trace_metrics ADDR FILE: "SECONDS pinned shed open" every 100 ms
    local t0 m
    t0=$(now)
    while :; do
        m=$(curl -sf -m 1 "http://$1/_p2pd/metrics" | awk '$1 == "p2pd_pinned_bytes" { p = $2 }
            $1 == "p2pd_connections_shed_total" { s = $2 } $1 == "p2pd_connections_open" { o = $2 }
            END { print p, s, o }' || true)
        awk -v a="$t0" -v b="$(now)" -v m="$m" 'BEGIN { printf "%.1f %s\n", b - a, m }' >> "$2"
        sleep 0.1
    done
}

probe_health() {   # probe_health ADDR FILE: one line per second, the HTTP status
    while :; do
        curl -s -o /dev/null -m 2 -w '%{http_code}\n' "http://$1/_p2pd/health" >> "$2" || echo 000 >> "$2"
        sleep 1
    done
}

view() {   # view ROLE: streams the file as the role's viewer into cmp against the file
           # (nothing written to disk: a gigabyte of writeback per view took the disk
           # from the next view); prints "SECONDS SAME" (yes/no), or "fail no"
    local role=$1 t0 t1 st=()
    local file=$WORK/media/big.bin
    t0=$(now)
    {
        case $role in
            origin) "$P2PD" get "spp://$ORIGIN/big.bin" -o - -q --timeout 60000 | cmp -s - "$file" ;;
            scc) curl -sf -m 600 --interface "$VIEWER_IP" -H "Host: $ORIGIN" "http://$NODE/big.bin" | cmp -s - "$file" ;;
            lhc) http_proxy="http://$NODE" curl -sf -m 600 "http://$ORIGIN/big.bin" | cmp -s - "$file" ;;
        esac
        st=("${PIPESTATUS[@]}")
    } || true
    t1=$(now)
    # A failed viewer, or bytes that differ (cmp then exits early and the viewer dies
    # of the broken pipe), is a failed view.
    if [ "${st[0]:-1}" != 0 ] || [ "${st[1]:-1}" != 0 ]; then
        echo "fail no"
        return 0
    fi
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f yes\n", b - a }'
}

run_role() {
    local role=$1 pids=() target_pid fetch_src other_src
    rm -rf "$WORK/cache" "$WORK/index"
    local oargs=(-p "$WORK/media" --index-dir "$WORK/index" --bind 127.33.0.1 -P "$PORT"
        --threads "$THREADS" -b "$BLOCK" -M "$MEM" --max-connections 4000)
    [ "$role" = origin ] && oargs+=(-i)
    "$P2PD" "${oargs[@]}" 2> "$WORK/logs/origin-$role.log" &
    pids+=($!); PIDS+=($!); target_pid=$!
    wait_health "$ORIGIN" "$!" || die "the origin did not start: $(tail -5 "$WORK/logs/origin-$role.log")"
    until [ "$(metric "$ORIGIN" p2pd_files_published)" = 1 ]; do sleep 0.1; done
    fetch_src=$INSIDERS other_src=$OUTSIDERS
    if [ "$role" != origin ]; then
        local cargs=(-c "$WORK/cache" -Z --bind 127.33.0.2 -P "$PORT" --threads "$THREADS"
            -M "$MEM" -i --max-connections 4000)
        [ "$role" = scc ] && cargs+=(-n 127.33.200.0/24)
        # A client cache fetches for its own machine: its own address is local.
        [ "$role" = lhc ] && fetch_src=127.33.0.2,127.0.0.1
        "$P2PD" "${cargs[@]}" 2> "$WORK/logs/$role.log" &
        pids+=($!); PIDS+=($!); target_pid=$!
        wait_health "$NODE" "$!" || die "the $role did not start: $(tail -5 "$WORK/logs/$role.log")"
    fi
    local target=$ORIGIN
    [ "$role" != origin ] && target=$NODE
    local tracer recorder t_fill ok c0 a0 c_base c_att a_att same=yes alive=yes health_end=000 after=000 r sampler prober attacker
    read -r t_fill ok <<<"$(view "$role")"
    [ "$ok" = yes ] || same=no
    : > "$WORK/raw/$role-rounds"
    # Rounds of (unattacked, attacked) side by side: the machine's noise hits both.
    for r in $(seq "$ROUNDS"); do
        sample_rss "$target_pid" "$WORK/raw/$role-rss-unattacked" &
        sampler=$!
        local t_base t_att
        c0=$(cpu_secs "$target_pid")
        read -r t_base ok <<<"$(view "$role")"
        c_base=$(awk -v a="$c0" -v b="$(cpu_secs "$target_pid")" 'BEGIN { printf "%.2f", b - a }')
        [ "$ok" = yes ] || same=no
        kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true

        sample_rss "$target_pid" "$WORK/raw/$role-rss-attacked" &
        sampler=$!
        probe_health "$target" "$WORK/raw/$role-health" &
        prober=$!
        python3 "$REPO/perf/hostile_attack.py" --target "$target" --host 127.33.0.1 --port "$PORT" \
            --path big.bin --connections "$ATTACK" --flood-bytes "$FLOOD" \
            --fetch-src "$fetch_src" --other-src "$other_src" --only "$KINDS" \
            > "$WORK/raw/$role-attack.json" 2> "$WORK/logs/attack-$role.log" &
        attacker=$!
        for _ in $(seq 600); do
            grep -q mounted "$WORK/logs/attack-$role.log" && break
            kill -0 "$attacker" 2>/dev/null || break
            sleep 0.1
        done
        log "$role round $r: unattacked viewer ${t_base}s (node CPU ${c_base}s); $(tail -1 "$WORK/logs/attack-$role.log")"
        sleep "$SETTLE"
        c0=$(cpu_secs "$target_pid")
        a0=$(cpu_secs "$attacker")
        tracer=
        if [ -n "$TRACE" ]; then
            trace_metrics "$target" "$WORK/raw/$role-trace-r$r" &
            tracer=$!
        fi
        recorder=
        if [ -n "$RECORD" ]; then
            perf record -q -F 999 --call-graph fp -p "$target_pid" -o "$WORK/raw/$role-perf-r$r.data" 2>/dev/null &
            recorder=$!
            sleep 0.3
        fi
        read -r t_att ok <<<"$(view "$role")"
        [ -n "$recorder" ] && { kill -INT "$recorder" 2>/dev/null || true; wait "$recorder" 2>/dev/null || true; }
        [ -n "$tracer" ] && { kill "$tracer" 2>/dev/null || true; wait "$tracer" 2>/dev/null || true; }
        c_att=$(awk -v a="$c0" -v b="$(cpu_secs "$target_pid")" 'BEGIN { printf "%.2f", b - a }')
        a_att=$(awk -v a="$a0" -v b="$(cpu_secs "$attacker")" 'BEGIN { printf "%.2f", b - a }')
        [ "$ok" = yes ] || same=no
        kill -0 "$target_pid" 2>/dev/null || alive=no
        health_end=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://$target/_p2pd/health" || true)
        kill -TERM "$attacker" 2>/dev/null || true; wait "$attacker" 2>/dev/null || true
        kill "$prober" "$sampler" 2>/dev/null || true
        wait "$prober" "$sampler" 2>/dev/null || true
        after=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://$target/_p2pd/health" || true)
        log "$role round $r: attacked viewer ${t_att}s (node CPU ${c_att}s, attack driver CPU ${a_att}s), bytes identical so far: $same, node running: $alive, health $health_end (after the attack $after)"
        printf '%s\t%s\n' "$t_base" "$t_att" >> "$WORK/raw/$role-rounds"
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$role" "$t_fill" "$same" "$alive" "$health_end" "$after" \
        > "$WORK/raw/$role.tsv"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    # The kernel tears a process's io_uring down after it exits, and an accept still
    # pending there keeps the listening socket (and the port) for a moment longer.
    for _ in $(seq 100); do
        ss -Hltn "sport = :$PORT" | grep -q . || break
        sleep 0.1
    done
}

for role in $ROLES; do run_role "$role"; done

commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo -dirty)
raw_dir=${RESULT%.md}
mkdir -p "$raw_dir"
cp "$WORK"/raw/* "$raw_dir/"
machine="$(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(free -g | awk '/Mem:/ { print $2 }') GiB, $(uname -sr)"
python3 - "$WORK/raw" "$bytes" "$mem" "$ATTACK" "$commit" "$machine" "$ROLES" > "$RESULT" <<EOF
import json, sys
raw, size, mem, attack, commit, machine, roles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7].split()
MiB = 1 << 20
bound = mem + 64 * 1024 * attack + 50 * MiB
def peak(path):
    try:
        return max(int(l) for l in open(path) if l.strip()) * 1024
    except (OSError, ValueError):
        return 0
names = {"origin": "origin (SPP, p2pd get)", "scc": "site cache (HTTP, curl from inside -n)", "lhc": "client cache (HTTP proxy, curl)"}
print(f"# Hostile input: a viewer against {attack} hostile connections, $(date +%Y-%m-%d), commit {commit}")
print()
print(f"Machine: {machine}. Command: \`perf/hostile.sh\` (PERF_BLOCK=$BLOCK PERF_MEM=$MEM PERF_THREADS=$THREADS PERF_ATTACK=$ATTACK PERF_FLOOD_BYTES=$FLOOD${KINDS:+ PERF_ATTACK_KINDS=$KINDS}).")
print()
print(f"Each node: $THREADS shards, -M $MEM, -i, --max-connections 4000, block size $BLOCK; the file: {size} bytes")
print("(4096 blocks). The viewer streams it once to fill a cache, then $ROUNDS rounds of: unattacked (the")
print(f"baseline), then while perf/hostile_attack.py holds a fresh set of {attack} connections")
print("(300 pipelined InfoRequests for the 4096-digest file, 100 LocateRequests, 100 one-block Gets,")
print("all never read; 100 slow readers; 100 Have/Holdings floods; 100 random bytes after Hello;")
print("100 crash frames; 100 half frames, single bytes or silence). VmRSS sampled every 100 ms;")
print(f"the bound is -M + 64 KiB x {attack} + 50 MiB = {bound / MiB:.1f} MiB; a node past $RSS_CAP is killed (PERF_RSS_CAP).")
print()
print("Viewer figures are medians over the rounds; each round's pair is listed below the table.")
print()
print("| role | peak VmRSS unattacked (MiB) | peak VmRSS attacked (MiB) | bound (MiB) | within | viewer unattacked (MB/s) | viewer attacked (MB/s) | attacked / unattacked | within 20% | bytes identical | node up, health during / after |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
details = []
pairs = []
def median(xs):
    if not xs:
        return 0.0
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
for role in roles:
    try:
        f = open(f"{raw}/{role}.tsv").read().split()
    except OSError:
        print(f"| {names[role]} | run failed | | | | | | | | | |")
        continue
    _, t_fill, same, alive, health_end, after = f
    rounds = [l.split() for l in open(f"{raw}/{role}-rounds") if l.strip()]
    pu, pa = peak(f"{raw}/{role}-rss-unattacked"), peak(f"{raw}/{role}-rss-attacked")
    import os
    killed = os.path.exists(f"{raw}/{role}-rss-attacked.killed") or os.path.exists(f"{raw}/{role}-rss-unattacked.killed")
    def rate(t):
        try:
            return size / float(t) / 1e6
        except ValueError:
            return 0.0
    base = sorted(rate(b) for b, _ in rounds)
    att = sorted(rate(a) for _, a in rounds)
    rb, ra = median(base), median(att)
    ratio = ra / rb if rb else 0.0
    pairs.append((role, [(rate(b), rate(a)) for b, a in rounds]))
    try:
        hs = [l.strip() for l in open(f"{raw}/{role}-health") if l.strip()]
    except OSError:
        hs = []
    bad = sum(1 for h in hs if h != "200")
    print(f"| {names[role]} | {pu / MiB:.1f} | {pa / MiB:.1f}{' (killed at the $RSS_CAP cap)' if killed else ''} | {bound / MiB:.1f} | {'yes' if pa <= bound else 'NO'} | {rb:.0f} | {ra:.0f} | {ratio:.2f} | {'yes' if ratio >= 0.8 else 'NO'} | {'yes' if same == 'yes' else 'NO'} | {alive}, {len(hs) - bad}/{len(hs)} probes 200 / {after} |")
    try:
        details.append((role, json.load(open(f"{raw}/{role}-attack.json"))))
    except (OSError, ValueError):
        details.append((role, None))
print()
print("Per round, viewer MB/s unattacked → attacked:")
print()
for role, ps in pairs:
    print(f"- {role}: " + "; ".join(f"{b:.0f} → {a:.0f}" for b, a in ps))
print()
print("What the attackers saw in the last round (per kind: connections opened, bytes of requests sent before the node stopped")
print("reading, crash frames answered, random-bytes connections closed by the node):")
print()
for role, d in details:
    if d is None:
        print(f"- {role}: no summary (the driver failed; see the logs)")
        continue
    parts = []
    for kind, v in sorted(d["kinds"].items()):
        parts.append(kind + " " + ", ".join(f"{k} {x}" for k, x in sorted(v.items())))
    print(f"- {role}: " + "; ".join(parts))
EOF
cat "$RESULT"
log "wrote $RESULT"
