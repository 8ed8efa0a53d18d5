#!/usr/bin/env bash
# Run the weft benchmarks against their Go peers and print a comparison table.
#
#   benches/run.sh [BUILD_DIR]          (default: build)
#
# Environment:
#   ROUNDS         runs per implementation and workload (default 5)
#   BENCHES        workloads to run (default "spawn_many spawn_wg yield
#                  skynet fib fib_seq chan_pingpong chan_mpmc mutex rwlock
#                  sleep_many"; spawn_wg's Go peer is spawn_many's)
#   BENCH_TIMEOUT  seconds before a single run is killed (default 300)
#   WEFT_WORKERS   passed through to both sides (worker count / GOMAXPROCS)
#   CC             C compiler for the pthread peers (default cc)
#
# Weft binaries are expected at BUILD_DIR/benches/bench_<workload>; the Go peer
# is built into BUILD_DIR/benches/weft-go-peers if `go` is installed, and, for
# `mutex` and `rwlock` if among BENCHES, their pthread peers into
# BUILD_DIR/benches/pthread-<workload> with `$CC -O2 -pthread`. Every binary
# prints one line "RESULT name=<w> impl=<weft|go|pthread> n=<N> secs=<S>".
# Raw RESULT lines go to BUILD_DIR/bench-results.txt, the benchmarks' stderr to
# BUILD_DIR/bench-stderr.log, and the table to stdout.
#
# Exit status: 0 if every run succeeded, 1 if any run failed (nonzero exit,
# timeout or malformed output) or the Go build failed, 2 on usage errors or
# if no benchmark could be run at all.
set -u
export LC_ALL=C   # "." decimal point for sort -g and awk

ROUNDS=${ROUNDS:-5}
BENCHES=${BENCHES:-"spawn_many spawn_wg yield skynet fib fib_seq chan_pingpong chan_mpmc mutex rwlock sleep_many"}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}

die() { echo "run.sh: $*" >&2; exit 2; }
warn() { echo "run.sh: warning: $*" >&2; }

[ $# -le 1 ] || die "usage: benches/run.sh [BUILD_DIR]"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, got '$ROUNDS'"
[[ $BENCH_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "BENCH_TIMEOUT must be a positive integer"
for wl in $BENCHES; do
    case $wl in spawn_many | spawn_wg | yield | skynet | fib | fib_seq | chan_pingpong | chan_mpmc | mutex | rwlock | sleep_many) ;;
    *) die "unknown workload '$wl' in BENCHES" ;; esac
done

src=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
mkdir -p "$build/benches" || die "cannot create $build/benches"
build=$(cd "$build" && pwd)
results=$build/bench-results.txt
log=$build/bench-stderr.log
: >"$results"
: >"$log"
status=0

# --- Go peer ---------------------------------------------------------------
gobin=$build/benches/weft-go-peers
have_go=0
if command -v go >/dev/null 2>&1; then
    echo "building Go peers -> $gobin ($(go version))" >&2
    if (cd "$src/peers/go" &&
        GOCACHE=$build/gocache GOPATH=$build/gopath GO111MODULE=on \
        GOPROXY=off GOFLAGS='' go build -o "$gobin" .); then
        have_go=1
    else
        echo "run.sh: FAILED: go build of the Go peers" >&2
        status=1
    fi
else
    warn "go not found: running weft benchmarks only"
fi

# --- pthread peers (mutex, rwlock) ------------------------------------------
PTHREAD_WLS="mutex rwlock"   # workloads with an OS-thread peer
declare -A have_pthread      # keyed by workload: 1 once its peer is built
for wl in $PTHREAD_WLS; do
    [[ " $BENCHES " == *" $wl "* ]] || continue
    ptbin=$build/benches/pthread-$wl
    cc=${CC:-cc}
    if command -v "$cc" >/dev/null 2>&1; then
        echo "building pthread $wl peer -> $ptbin ($cc -O2 -pthread)" >&2
        if "$cc" -O2 -pthread -o "$ptbin" "$src/peers/pthread_$wl.c"; then
            have_pthread[$wl]=1
        else
            echo "run.sh: FAILED: build of the pthread $wl peer" >&2
            status=1
        fi
    else
        warn "$cc not found: no pthread numbers for $wl"
    fi
done

timeout_cmd=()
if command -v timeout >/dev/null 2>&1; then
    timeout_cmd=(timeout "$BENCH_TIMEOUT")
fi

# --- running one benchmark -------------------------------------------------
declare -A SECS NS FAILED   # keyed by "<workload>/<impl>[/w<workers>]"
ran=0

# run_one KEY WORKLOAD IMPL TAG CMD... : run once, validate the RESULT line,
# record it. TAG ("" or e.g. "workers=1") is appended to the saved line.
run_one() {
    local key=$1 wl=$2 impl=$3 tag=$4
    shift 4
    local out rc line nlines fields logstart
    [ -z "${FAILED[$key]:-}" ] || return 1   # don't re-run a failed binary
    logstart=$(wc -l <"$log")
    echo "### $key: $*" >>"$log"
    out=$("${timeout_cmd[@]}" "$@" 2>>"$log")
    rc=$?
    ran=1
    line=$(printf "%s\n" "$out" | awk '/^RESULT /')
    nlines=$(printf "%s\n" "$out" | awk '/^RESULT / { c++ } END { print c + 0 }')
    if [ "$rc" -ne 0 ] || [ "$nlines" -ne 1 ]; then
        [ "$rc" -eq 124 ] && rc="124 (timeout after ${BENCH_TIMEOUT}s)"
        echo "run.sh: FAILED: $key: exit status $rc, $nlines RESULT line(s); see $log" >&2
        tail -n +$((logstart + 2)) "$log" | tail -n 10 | awk '{ print "    | " $0 }' >&2
        FAILED[$key]=1
        status=1
        return 1
    fi
    # fields: name impl n secs
    fields=$(printf '%s\n' "$line" | awk '{
        for (i = 2; i <= NF; i++) { p = index($i, "="); v[substr($i, 1, p - 1)] = substr($i, p + 1) }
        print v["name"], v["impl"], v["n"], v["secs"] }')
    local f_name f_impl f_n f_secs
    read -r f_name f_impl f_n f_secs <<<"$fields"
    if [ "$f_name" != "$wl" ] || [ "$f_impl" != "$impl" ] ||
        ! [[ $f_n =~ ^[0-9]+$ ]] || ! [[ $f_secs =~ ^[0-9]+(\.[0-9]*)?$ ]]; then
        echo "run.sh: FAILED: $key: malformed result line: $line" >&2
        FAILED[$key]=1
        status=1
        return 1
    fi
    printf '%s%s\n' "$line" "${tag:+ $tag}" >>"$results"
    SECS[$key]+="$f_secs "
    NS[$key]=$f_n
    printf '  %-22s %s s\n' "$key" "$f_secs" >&2
}

# cmd_for WORKLOAD IMPL: print the command (one word per line); fail if absent.
cmd_for() {
    case $2 in
    weft) [ -x "$build/benches/bench_$1" ] && printf '%s\n' "$build/benches/bench_$1" ;;
    go) [ "$have_go" = 1 ] && printf '%s\n%s\n' "$gobin" "$1" ;;
    pthread) [ "${have_pthread[$1]:-}" = 1 ] && printf '%s\n' "$build/benches/pthread-$1" ;;
    esac
}

median() {   # median of whitespace-separated numbers, "" if none
    printf '%s\n' "$1" | tr ' ' '\n' | sort -g | awk 'NF { a[++n] = $1 }
        END { if (n) printf "%.6f\n", (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }'
}

# --- main comparison ---------------------------------------------------------
for wl in $BENCHES; do
    [ -x "$build/benches/bench_$wl" ] ||
        warn "$build/benches/bench_$wl not found: no weft numbers for $wl"
    echo "== $wl" >&2
    impls="weft go"
    [[ " $PTHREAD_WLS " == *" $wl "* ]] && impls="weft go pthread"   # OS threads too
    for ((r = 1; r <= ROUNDS; r++)); do
        # Alternate the order, so drift and warm-up hit all sides alike.
        order=$impls
        if ! ((r % 2)); then order=""; for impl in $impls; do order="$impl $order"; done; fi
        for impl in $order; do
            mapfile -t cmd < <(cmd_for "$wl" "$impl")
            [ ${#cmd[@]} -gt 0 ] && run_one "$wl/$impl" "$wl" "$impl" "" "${cmd[@]}"
        done
    done
done

# --- worker scaling ------------------------------------------------------------
# fib: work-stealing speedup. chan_pingpong: on few cores the time depends on
# whether the pair stays on one worker, so show 1 worker vs 2 as well.
scaled=""
for wl in fib chan_pingpong; do
    [[ " $BENCHES " == *" $wl "* ]] || continue
    scaled+="$wl "
    echo "== $wl scaling (WEFT_WORKERS=1 vs 2)" >&2
    for ((r = 1; r <= ROUNDS; r++)); do
        for impl in weft go; do
            mapfile -t cmd < <(cmd_for "$wl" "$impl")
            [ ${#cmd[@]} -gt 0 ] || continue
            for w in 1 2; do
                run_one "$wl/$impl/w$w" "$wl" "$impl" "workers=$w" env WEFT_WORKERS=$w "${cmd[@]}"
            done
        done
    done
done

# --- spawn_many, warm ----------------------------------------------------------
# The spawn_many row is one round in a fresh process: 128 MiB of new tasks,
# paid for in page faults (bimodal on this VM, docs/benchmarks.md). A server
# spawns in bursts over memory its joins freed: the same spawns and joins,
# 9 rounds in one process, the median of rounds 2-9 (bench_spawn_many N 9,
# weft-go-peers spawn_many N 9).
warm=0
if [[ " $BENCHES " == *" spawn_many "* ]]; then
    warm=1
    echo "== spawn_many warm (rounds 2-9 of 9 in one process)" >&2
    for ((r = 1; r <= ROUNDS; r++)); do
        for impl in weft go; do
            mapfile -t cmd < <(cmd_for spawn_many "$impl")
            [ ${#cmd[@]} -gt 0 ] && run_one "spawn_many/$impl/warm" spawn_many "$impl" "rounds=9" "${cmd[@]}" 1000000 9
        done
    done
fi

[ "$ran" = 1 ] || { echo "run.sh: no benchmark binary was found or run" >&2; exit 2; }

# --- table ---------------------------------------------------------------------
# ns/op divides the weft median by the number of operations: n for spawn_many
# and spawn_wg (spawns), yield (yields), skynet (leaves), chan_pingpong (round trips),
# chan_mpmc (elements), mutex and rwlock (lock/unlock pairs; for rwlock reads
# and writes together), sleep_many (sleeping fibers, the 2 s sleep not
# counted); for fib and fib_seq n is the argument, so the operation is one
# call and ops = 2*fib(n+1)-1.
ops_for() {
    case $1 in
    fib | fib_seq) awk -v n="$2" 'BEGIN { a = 0; b = 1; for (i = 0; i <= n; i++) { t = a + b; a = b; b = t } printf "%d\n", 2 * a - 1 }' ;;
    *) echo "$2" ;;
    esac
}

cell() {   # cell WORKLOAD IMPL: median seconds, or why there is none
    local key=$1/$2
    if [ -n "${FAILED[$key]:-}" ]; then echo FAILED
    elif [ -n "${SECS[$key]:-}" ]; then median "${SECS[$key]}"
    else echo -; fi
}

echo
echo "weft vs Go: median of $ROUNDS round(s), $(nproc 2>/dev/null || echo '?') CPU(s)${WEFT_WORKERS:+, WEFT_WORKERS=$WEFT_WORKERS}"
row() { printf '| %-13s | %7s | %8s | %13s | %13s | %13s | %11s |\n' "$@"; }
row workload n ops "weft median s" "go median s" "go/weft ratio" "weft ns/op"
row ------------- ------- -------- ------------- ------------- ------------- -----------
for wl in $BENCHES; do
    n=${NS[$wl/weft]:-${NS[$wl/go]:-}}
    if [ -n "${NS[$wl/weft]:-}" ] && [ -n "${NS[$wl/go]:-}" ] && [ "${NS[$wl/weft]}" != "${NS[$wl/go]}" ]; then
        warn "$wl: weft n=${NS[$wl/weft]} but go n=${NS[$wl/go]}; the ratio compares different sizes"
    fi
    ops=-
    [ -n "$n" ] && ops=$(ops_for "$wl" "$n")
    tw=$(cell "$wl" weft)
    tg=$(cell "$wl" go)
    read -r ratio nsop < <(awk -v w="$tw" -v g="$tg" -v ops="$ops" 'BEGIN {
        isnum = "^[0-9]+(\\.[0-9]*)?$"
        r = (w ~ isnum && g ~ isnum && w > 0) ? sprintf("%.2fx", g / w) : "-"
        p = (w ~ isnum && ops ~ /^[0-9]+$/ && ops > 0) ? sprintf("%.1f", w * 1e9 / ops) : "-"
        print r, p }')
    row "$wl" "${n:--}" "$ops" "$tw" "$tg" "$ratio" "$nsop"
done
echo "(go/weft ratio > 1 means weft is faster; ops = n, except fib/fib_seq where ops = calls = 2*fib(n+1)-1)"

extra=0
for wl in $PTHREAD_WLS; do
    [[ " $BENCHES " == *" $wl "* ]] || continue
    [ "$extra" = 1 ] || echo
    extra=1
    tw=$(cell "$wl" weft)
    tp=$(cell "$wl" pthread)
    if [ -n "${NS[$wl/weft]:-}" ] && [ -n "${NS[$wl/pthread]:-}" ] && [ "${NS[$wl/weft]}" != "${NS[$wl/pthread]}" ]; then
        warn "$wl: weft n=${NS[$wl/weft]} but pthread n=${NS[$wl/pthread]}; the ratio compares different sizes"
    fi
    awk -v w="$tw" -v p="$tp" -v l="$wl" 'BEGIN {
        isnum = "^[0-9]+(\\.[0-9]*)?$"
        if (w ~ isnum && p ~ isnum && w > 0) printf "%s: weft vs pthread %.2fx (pthread/weft; weft %.6f s, pthread %.6f s)\n", l, p / w, w, p
        else printf "%s: weft vs pthread n/a (weft: %s, pthread: %s)\n", l, w, p }'
done

for wl in $scaled; do
    [ "$extra" = 1 ] || echo
    extra=1
    for impl in weft go; do
        t1=$(cell "$wl" "$impl/w1")
        t2=$(cell "$wl" "$impl/w2")
        [ "$t1" = - ] && [ "$t2" = - ] && continue
        label="$wl 2 workers vs 1"
        [ "$impl" = go ] && label="go $label"
        awk -v a="$t1" -v b="$t2" -v l="$label" 'BEGIN {
            isnum = "^[0-9]+(\\.[0-9]*)?$"
            if (a ~ isnum && b ~ isnum && b > 0) printf "%s: %.2fx (%.6f s -> %.6f s)\n", l, a / b, a, b
            else printf "%s: n/a (1 worker: %s, 2 workers: %s)\n", l, a, b }'
    done
done

if [ "$warm" = 1 ]; then
    [ "$extra" = 1 ] || echo
    tw=$(cell spawn_many weft/warm)
    tg=$(cell spawn_many go/warm)
    awk -v w="$tw" -v g="$tg" 'BEGIN {
        isnum = "^[0-9]+(\\.[0-9]*)?$"
        if (w ~ isnum && g ~ isnum && w > 0) printf "spawn_many warm (rounds 2-9 of 9 in one process): %.2fx Go (weft %.6f s, go %.6f s)\n", g / w, w, g
        else printf "spawn_many warm: n/a (weft: %s, go: %s)\n", w, g }'
fi

echo
echo "raw results: $results   benchmark stderr: $log" >&2
[ "$status" = 0 ] || echo "run.sh: some runs FAILED (see above)" >&2
exit "$status"
