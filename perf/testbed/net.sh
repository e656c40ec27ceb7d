#!/usr/bin/env bash
# The emulated network of the testbed (issue 14), sourced by the scenario scripts. Root
# only. Every host is a network namespace `tb-<run>-<name>` with one interface, eth0
# (10.77.0.<n>/16), whose peer sits on a bridge in a core namespace `tb-<run>-core`:
#
#   host ns: eth0 --veth-- core ns: v-<name> -- br0 -- v-<other> --veth-- other ns: eth0
#
# A host's uplink is a token bucket (tc tbf) on its eth0, its downlink one on v-<name>
# (what the bridge sends towards it). This kernel has tbf and htb, no netem: delay and
# loss are not emulated; a silenced host's bridge port is down (everything to and from
# it is dropped without a word), a killed host's process is gone.
# Nothing touches the root namespace's interfaces or addresses; `tb_down` (and the
# EXIT trap the scenarios set) removes every namespace of the run.
#
#   tb_init RUN                 names this run's namespaces (letters, digits, '-')
#   tb_host NAME N UP DOWN      host NAME at 10.77.0.N, uplink UP, downlink DOWN
#                               (tc rates: 50mbit, 1gbit, ...)
#   tb_rate NAME up|down RATE   changes a link's rate while traffic runs
#   tb_silence NAME             drops everything to and from NAME (links kept up)
#   tb_exec NAME CMD...         runs CMD in NAME's namespace
#   tb_ip NAME                  prints NAME's address
#   tb_down                     removes every namespace of the run
#   tb_wait_started LOG         waits (10 s at most) for a node's startup line in LOG
#   tb_result KIND              prints the result file's path for scenario KIND:
#                               perf/results/<date>-<commit>[-dirty]-testbed-KIND.md
set -euo pipefail

TB_RUN=""
declare -A TB_IP=()

tb_init() {
    [ "$(id -u)" -eq 0 ] || { echo "the testbed needs root (network namespaces, tc)" >&2; exit 1; }
    command -v ip >/dev/null && command -v tc >/dev/null || {
        echo "the testbed needs iproute2 (ip, tc)" >&2
        exit 1
    }
    TB_RUN=$1
    ip netns add "tb-$TB_RUN-core"
    ip -n "tb-$TB_RUN-core" link add br0 type bridge
    ip -n "tb-$TB_RUN-core" link set br0 up
    ip -n "tb-$TB_RUN-core" link set lo up
}

# The burst of a token bucket at RATE: 10 ms worth, at least 96 KiB: a GSO segment (64 KiB)
# must fit, or after a rate cut the big segments a fast connection sends are dropped
# again and again (a connection cut from 200 to 10 Mbit/s sat at cwnd 1 for seconds).
tb_burst() {
    local rate=$1 bits
    bits=$(tb_bits "$rate")
    local b=$((bits / 8 / 100))
    [ "$b" -lt 98304 ] && b=98304
    echo "$b"
}

# A tc rate (50mbit, 1gbit, 800kbit, 12000bit) in bit/s.
tb_bits() {
    local r=${1,,}
    case $r in
        *gbit) echo $(( ${r%gbit} * 1000000000 )) ;;
        *mbit) echo $(( ${r%mbit} * 1000000 )) ;;
        *kbit) echo $(( ${r%kbit} * 1000 )) ;;
        *bit) echo "${r%bit}" ;;
        *) echo "tb: rate '$1' is not NNN{bit,kbit,mbit,gbit}" >&2; exit 1 ;;
    esac
}

# tb_shape NS DEV RATE: one token bucket on DEV's egress in NS (replacing any).
tb_shape() {
    local ns=$1 dev=$2 rate=$3
    tc -n "$ns" qdisc replace dev "$dev" root tbf rate "$rate" burst "$(tb_burst "$rate")" latency 200ms
}

tb_host() {
    local name=$1 n=$2 up=$3 down=$4 ns="tb-$TB_RUN-$1" core="tb-$TB_RUN-core"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "tbh$n-$TB_RUN" type veth peer name "tbc$n-$TB_RUN"
    ip link set "tbh$n-$TB_RUN" netns "$ns"
    ip link set "tbc$n-$TB_RUN" netns "$core"
    ip -n "$ns" link set "tbh$n-$TB_RUN" name eth0
    ip -n "$core" link set "tbc$n-$TB_RUN" name "v-$name"
    ip -n "$core" link set "v-$name" master br0
    ip -n "$core" link set "v-$name" up
    ip -n "$ns" addr add "10.77.0.$n/16" dev eth0
    ip -n "$ns" link set eth0 up
    tb_shape "$ns" eth0 "$up"
    tb_shape "$core" "v-$name" "$down"
    TB_IP[$name]="10.77.0.$n"
}

tb_rate() {
    local name=$1 dir=$2 rate=$3
    case $dir in
        up) tb_shape "tb-$TB_RUN-$name" eth0 "$rate" ;;
        down) tb_shape "tb-$TB_RUN-core" "v-$name" "$rate" ;;
        *) echo "tb_rate: up or down, not '$dir'" >&2; exit 1 ;;
    esac
}

tb_silence() {
    # Its bridge port goes down: frames to and from it are dropped, no reset or
    # unreachable comes back, its own interface stays up (a machine that froze, or a
    # path that black-holes).
    ip -n "tb-$TB_RUN-core" link set "v-$1" down
}

tb_exec() {
    local name=$1
    shift
    ip netns exec "tb-$TB_RUN-$name" "$@"
}

tb_ip() {
    echo "${TB_IP[$1]:-}"
}

tb_wait_started() {
    local _
    for _ in $(seq 100); do
        grep -q "publishing\|caching" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "testbed: no startup line in $1" >&2
    return 1
}

tb_result() {
    local commit
    commit=$(git rev-parse --short HEAD)
    [ -n "$(git status --porcelain)" ] && commit="$commit-dirty"
    echo "perf/results/$(date +%Y-%m-%d-%H%M)-$commit-testbed-$1.md"
}

tb_down() {
    [ -n "$TB_RUN" ] || return 0
    local ns
    for ns in $(ip netns list | awk '{print $1}' | grep "^tb-$TB_RUN-" || true); do
        # Processes still in it would keep it alive as an empty mount: end them first.
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
}
