#!/usr/bin/env bash
# A/B two (or more) echo server binaries, alternated within each round, on
# one scenario: median server CPU per message and messages per second.
#
#   benches/echo/ab.sh [-r ROUNDS] [-c CONNS] [-s SIZE] [-w WORKERS] BUILD_DIR SERVER...
#
# Each SERVER is a binary taking a port as its only argument (e.g. two
# builds of examples/echo_server: before and after a change), run with
# WEFT_WORKERS=WORKERS. BUILD_DIR must hold echo/loadgen (benches/echo/run.sh
# builds it). Defaults: 7 rounds, 50 connections, 64 B, 2 workers; each run
# 1 s of warm-up and 4 s measured, CPU from /proc/PID/stat as in run.sh.
# Prints one line per server: cpu_us_per_msg, msgs_per_s (medians) and the
# per-round CPU figures.
set -u
export LC_ALL=C
R=7 C=50 S=64 W=2
while getopts r:c:s:w: o; do
    case $o in
    r) R=$OPTARG ;; c) C=$OPTARG ;; s) S=$OPTARG ;; w) W=$OPTARG ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || { echo "usage: $0 [-r R] [-c C] [-s S] [-w W] BUILD_DIR SERVER..." >&2; exit 2; }
lg=$1/echo/loadgen
shift
[ -x "$lg" ] || { echo "ab.sh: no $lg (run benches/echo/run.sh first)" >&2; exit 2; }
port=$((20000 + RANDOM % 20000))
declare -a cpu mps
for _ in $(seq "$R"); do
    i=0
    for b in "$@"; do
        port=$((port + 1))
        WEFT_WORKERS=$W "$b" "$port" >/dev/null 2>&1 &
        pid=$!
        sleep 0.3
        out=$("$lg" -p "$port" -c "$C" -s "$S" -d 4 -w 1 -P "$pid" 2>&1)
        kill "$pid"
        wait "$pid" 2>/dev/null
        st=$(echo "$out" | grep 'window end' | grep -o 'server_ticks=[0-9-]*' | cut -d= -f2)
        m=$(echo "$out" | grep -o ' msgs=[0-9]*' | cut -d= -f2)
        if ! [[ $st =~ ^[0-9]+$ && $m =~ ^[1-9][0-9]*$ ]]; then
            echo "ab.sh: $b: run failed, left out: $(echo "$out" | tail -1)" >&2
            i=$((i + 1))
            continue
        fi
        tck=$(getconf CLK_TCK)
        cpu[i]="${cpu[i]:-} $(awk -v t="$st" -v m="$m" -v k="$tck" 'BEGIN{printf "%.3f", t*1e6/k/m}')"
        mps[i]="${mps[i]:-} $(awk -v m="$m" 'BEGIN{printf "%d", m/4}')"
        i=$((i + 1))
    done
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
i=0
for b in "$@"; do
    # shellcheck disable=SC2086
    echo "cpu_us_per_msg $(med ${cpu[i]}) msgs_per_s $(med ${mps[i]})  $b  [${cpu[i]} ]"
    i=$((i + 1))
done
