#!/usr/bin/env bash
# Compare TCP echo servers (hand-written epoll and io_uring, libuv, Go, weft)
# on 127.0.0.1.
#
#   benches/echo/run.sh [BUILD_DIR]      (default: $BUILD_DIR, else build)
#
# Environment:
#   ROUNDS      rounds per server and scenario (default 3); servers are
#               interleaved within a round, order reversed every other round
#   DURATION    measured seconds per run (default 5)
#   WARMUP      warm-up seconds before the window (default 1)
#   SERVERS     default "epoll uring uv go go2 weft weft2"
#                 epoll  BUILD_DIR/echo/epoll_echo   (epoll_echo.c)
#                 uv     BUILD_DIR/echo/uv_echo      (uv_echo.c, libuv)
#                 uring  BUILD_DIR/echo/uring_echo   (uring_echo.c, liburing)
#                 go     weft-go-peers echo_server, WEFT_WORKERS=1 (GOMAXPROCS=1)
#                 go2    the same with WEFT_WORKERS=2
#                 weft   BUILD_DIR/examples/echo_server, WEFT_WORKERS=1
#                 weft2  the same with WEFT_WORKERS=2
#                 weftr  weft with plain weft_recv per message instead of a
#                        weft_conn (multishot receive), WEFT_WORKERS=1
#               (weft/weft2/weftr are skipped with a note if the binary is missing)
#   SCENARIOS   "CONNSxSIZE ..." (default "50x64 50x4096 1000x64 1000x4096")
#   LG_THREADS  load generator threads (default: 1; see README.md)
#   CC          C compiler (default cc)
#
# Builds loadgen, epoll_echo, uv_echo and (if SERVERS has uring) uring_echo
# (-luring) with `$CC -O2` into BUILD_DIR/echo/,
# the Go peer into BUILD_DIR/echo/weft-go-peers (offline, like benches/run.sh),
# installing libuv1-dev / golang-go / pkg-config with apt-get first if they are
# missing and we are root. Every run starts the server on a free port, waits
# for it to listen, runs loadgen (WARMUP + DURATION seconds) with -P <server
# pid>, so that loadgen reads the server's and its own CPU time (utime+stime
# from /proc/PID/stat, in ticks; converted here with getconf CLK_TCK) exactly
# at the window boundaries, and then kills the server.
#
# Output: one line per run on stdout,
#   RESULT name=echo_c<C>_s<S> impl=<server> n=<msgs> secs=<D> cpu_us_per_msg=<x> p99_us=<x>
#          msgs_per_s=<x> srv_cpu_pct=<x> lg_cpu_pct=<x> other_cpu_pct=<x>
# (also saved in BUILD_DIR/echo/echo-results.txt), then a table of medians with
# ratios vs epoll. Servers' and loadgen's stderr go to BUILD_DIR/echo/echo-stderr.log.
#
# Exit status: 0 if every run succeeded, 1 if any run or build failed,
# 2 on usage errors or if nothing could be run.
set -u
export LC_ALL=C

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
SERVERS=${SERVERS:-"epoll uring uv go go2 weft weft2"}
SCENARIOS=${SCENARIOS:-"50x64 50x4096 1000x64 1000x4096"}
LG_THREADS=${LG_THREADS:-1}

die() { echo "echo/run.sh: $*" >&2; exit 2; }
warn() { echo "echo/run.sh: warning: $*" >&2; }
note() { echo "echo/run.sh: $*" >&2; }

[ $# -le 1 ] || die "usage: benches/echo/run.sh [BUILD_DIR]"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, got '$ROUNDS'"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer (seconds), got '$DURATION'"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer (seconds), got '$WARMUP'"
[[ $LG_THREADS =~ ^[1-9][0-9]*$ ]] || die "LG_THREADS must be a positive integer, got '$LG_THREADS'"
for s in $SERVERS; do
    case $s in epoll | uv | uring | go | go2 | weft | weft2 | weftr) ;; *) die "unknown server '$s' in SERVERS" ;; esac
done
for sc in $SCENARIOS; do
    [[ $sc =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || die "bad scenario '$sc' (want CONNSxSIZE)"
done

src=$(cd "$(dirname "$0")" && pwd)
build=${1:-${BUILD_DIR:-build}}
mkdir -p "$build/echo" || die "cannot create $build/echo"
build=$(cd "$build" && pwd)
bdir=$build/echo
results=$bdir/echo-results.txt
log=$bdir/echo-stderr.log
: >"$results"
: >"$log"
status=0
hz=$(getconf CLK_TCK) || die "getconf CLK_TCK failed"
tmp=$(mktemp -d) || die "mktemp failed"

srv_pid=''
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    if [ -n "$srv_pid" ]; then
        kill -9 "$srv_pid" 2>/dev/null
        { wait "$srv_pid"; } 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- packages ------------------------------------------------------------------
missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists libuv 2>/dev/null || missing+=(libuv1-dev)
need_go=0
[[ " $SERVERS " == *" go"* ]] && need_go=1
[ "$need_go" = 1 ] && ! command -v go >/dev/null 2>&1 && missing+=(golang-go)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        note "installing ${missing[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        if ! timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
            timeout 600 apt-get update -q >>"$log" 2>&1
            timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1 ||
                warn "apt-get install ${missing[*]} failed (see $log)"
        fi
    else
        warn "missing ${missing[*]} and not root (or no apt-get): not installing"
    fi
fi

# --- build -----------------------------------------------------------------------
cc=${CC:-cc}
declare -A HAVE
build_c() {   # build_c NAME EXTRA_FLAGS...
    local name=$1
    shift
    if "$cc" -O2 -Wall -o "$bdir/$name" "$src/$name.c" "$@" 2>>"$log"; then
        HAVE[$name]=1
    else
        echo "echo/run.sh: FAILED: build of $name.c (see $log)" >&2
        status=1
    fi
}
want_uring=0
[[ " $SERVERS " == *" uring "* ]] && want_uring=1
note "building loadgen, epoll_echo, uv_echo$([ "$want_uring" = 1 ] && echo ", uring_echo") -> $bdir ($cc -O2)"
build_c loadgen -pthread
[ -n "${HAVE[loadgen]:-}" ] || die "cannot build the load generator"
build_c epoll_echo
if pkg-config --exists libuv 2>/dev/null; then
    # shellcheck disable=SC2046
    build_c uv_echo $(pkg-config --cflags libuv) $(pkg-config --libs libuv)
else
    warn "libuv not found: skipping uv"
fi
if [ "$want_uring" = 1 ]; then
    build_c uring_echo -luring
fi

gobin=$bdir/weft-go-peers
if [ "$need_go" = 1 ]; then
    if ! command -v go >/dev/null 2>&1; then
        warn "go not found: skipping go"
    elif [ -x "$gobin" ] && [ -z "$(find "$src/../peers/go" -newer "$gobin" \( -name '*.go' -o -name go.mod \) 2>/dev/null)" ]; then
        HAVE[go]=1
    else
        note "building Go peers -> $gobin ($(go version))"
        if (cd "$src/../peers/go" &&
            GOCACHE=$build/gocache GOPATH=$build/gopath GO111MODULE=on \
            GOPROXY=off GOFLAGS='' go build -o "$gobin" .) 2>>"$log"; then
            HAVE[go]=1
        else
            echo "echo/run.sh: FAILED: go build of the Go peers (see $log)" >&2
            status=1
        fi
    fi
fi

weftbin=$build/examples/echo_server
if [[ " $SERVERS " == *" weft"* ]] && ! [ -x "$weftbin" ]; then
    note "note: $weftbin not found: skipping weft and weft2"
fi

# server_cmd IMPL PORT: print the command, one word per line; fail if unavailable.
server_cmd() {
    case $1 in
    epoll) [ -n "${HAVE[epoll_echo]:-}" ] && printf '%s\n' "$bdir/epoll_echo" "$2" ;;
    uv) [ -n "${HAVE[uv_echo]:-}" ] && printf '%s\n' "$bdir/uv_echo" "$2" ;;
    uring) [ -n "${HAVE[uring_echo]:-}" ] && printf '%s\n' "$bdir/uring_echo" "$2" ;;
    go) [ -n "${HAVE[go]:-}" ] && printf '%s\n' env WEFT_WORKERS=1 "$gobin" echo_server "$2" ;;
    go2) [ -n "${HAVE[go]:-}" ] && printf '%s\n' env WEFT_WORKERS=2 "$gobin" echo_server "$2" ;;
    weft) [ -x "$weftbin" ] && printf '%s\n' env WEFT_WORKERS=1 "$weftbin" "$2" ;;
    weft2) [ -x "$weftbin" ] && printf '%s\n' env WEFT_WORKERS=2 "$weftbin" "$2" ;;
    weftr) [ -x "$weftbin" ] && printf '%s\n' env WEFT_WORKERS=1 "$weftbin" "$2" recv ;;
    *) false ;;
    esac
}

impls=""
for s in $SERVERS; do
    if server_cmd "$s" 1 >/dev/null; then impls+="$s "; fi
done
impls=${impls% }
[ -n "$impls" ] || die "no server available"

# --- file descriptors --------------------------------------------------------------
maxconns=0
for sc in $SCENARIOS; do c=${sc%x*}; [ "$c" -gt "$maxconns" ] && maxconns=$c; done
want_fds=$((maxconns + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 65536 ]; then
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
fi
fds=$(ulimit -n)
if [ "$fds" != unlimited ] && [ "$fds" -lt "$want_fds" ]; then
    warn "ulimit -n is $fds, below $want_fds: scenarios with more connections will fail"
fi

# --- helpers ---------------------------------------------------------------------------
port_used() {   # any TCP socket (v4 or v6, any state) bound to local port $1?
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p="$hex" 'FNR > 1 { split($2, a, ":"); if (a[2] == p) { f = 1; exit } } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

listening() {   # is some socket LISTENing on port $1?
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p="$hex" 'FNR > 1 && $4 == "0A" { split($2, a, ":"); if (a[2] == p) { f = 1; exit } } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

free_port() {   # below the ephemeral range, so client ports can't collide
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        port_used "$p" || { echo "$p"; return 0; }
    done
    return 1
}

stop_server() {
    local i
    [ -n "$srv_pid" ] || return 0
    kill "$srv_pid" 2>/dev/null
    for ((i = 0; i < 30; i++)); do
        kill -0 "$srv_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$srv_pid" 2>/dev/null
    { wait "$srv_pid"; } 2>/dev/null
    srv_pid=
}

median() {   # median FORMAT NUMBERS: median of whitespace-separated numbers, "" if none
    printf '%s\n' "$2" | tr ' ' '\n' | sort -g | awk -v f="$1" 'NF { a[++n] = $1 }
        END { if (n) printf f "\n", (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }'
}

declare -A RATE P99 CPM SPCT LPCT OPCT FAILED
ran=0

fail_run() {   # fail_run KEY MESSAGE
    echo "echo/run.sh: FAILED: $1: $2 (see $log)" >&2
    FAILED[$1]=1
    status=1
}

# run_one IMPL CONNS SIZE
run_one() {
    local impl=$1 conns=$2 size=$3
    local key="c${conns}_s${size}/$impl" port cmd i line s0 s1 l0 l1 m0 m1 rc out v why logstart alive=1
    [ -z "${FAILED[$key]:-}" ] || return 1   # don't re-run a failing server
    ran=1
    port=$(free_port) || { fail_run "$key" "no free port"; return 1; }
    mapfile -t cmd < <(server_cmd "$impl" "$port")
    echo "### $key round $r: ${cmd[*]}" >>"$log"
    logstart=$(wc -l <"$log")
    "${cmd[@]}" >>"$log" 2>&1 &
    srv_pid=$!
    for ((i = 0; i < 100; i++)); do   # up to 10 s
        kill -0 "$srv_pid" 2>/dev/null || break
        listening "$port" && break
        sleep 0.1
    done
    if ! kill -0 "$srv_pid" 2>/dev/null || ! listening "$port"; then
        stop_server
        fail_run "$key" "server did not listen on 127.0.0.1:$port"
        tail -n +$((logstart + 1)) "$log" | tail -n 5 | awk '{ print "    | " $0 }' >&2
        return 1
    fi

    # loadgen samples the server's and its own utime+stime (/proc/PID/stat)
    # itself at the window boundaries: a sample taken here would be late by
    # this shell's wake-up delay on a machine that the run keeps busy.
    timeout -k 5 $((WARMUP + DURATION + 30)) "$bdir/loadgen" -p "$port" -c "$conns" -s "$size" \
        -d "$DURATION" -w "$WARMUP" -t "$LG_THREADS" -P "$srv_pid" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    kill -0 "$srv_pid" 2>/dev/null || alive=0
    stop_server
    out=$(cat "$tmp/out")
    cat "$tmp/err" >>"$log"
    printf '%s\n' "$out" >>"$log"
    read -r s0 l0 m0 < <(awk '/^loadgen: window start / { sub(/.*server_ticks=/, ""); sub(/ self_ticks=/, " "); sub(/ busy_ticks=/, " "); print }' "$tmp/err")
    read -r s1 l1 m1 < <(awk '/^loadgen: window end / { sub(/.*server_ticks=/, ""); sub(/ self_ticks=/, " "); sub(/ busy_ticks=/, " "); print }' "$tmp/err")
    if [ "$rc" -ne 0 ] || [ "$alive" = 0 ]; then
        why="loadgen exit status $rc"
        [ "$rc" = 124 ] && why+=" (timeout)"
        [ "$alive" = 0 ] && why+=", server died"
        fail_run "$key" "$why"
        tail -n 5 "$tmp/err" | awk '{ print "    | " $0 }' >&2
        return 1
    fi
    for v in "$s0" "$s1" "$l0" "$l1" "$m0" "$m1"; do
        [[ $v =~ ^[0-9]+$ ]] || { fail_run "$key" "no CPU samples from loadgen"; return 1; }
    done
    local fields
    fields=$(printf '%s\n' "$out" | awk '/^LOAD / {
        for (i = 2; i <= NF; i++) { p = index($i, "="); v[substr($i, 1, p - 1)] = substr($i, p + 1) }
        print v["msgs"], v["msgs_per_s"], v["p99_us"] }')
    local msgs rate p99
    read -r msgs rate p99 <<<"$fields"
    if ! [[ ${msgs:-} =~ ^[1-9][0-9]*$ ]] || [ -z "${rate:-}" ] || [ -z "${p99:-}" ]; then
        fail_run "$key" "malformed loadgen output: $out"
        return 1
    fi
    local cpm spct lpct opct
    read -r cpm spct lpct opct < <(awk -v s=$((s1 - s0)) -v l=$((l1 - l0)) -v m=$((m1 - m0)) -v hz="$hz" -v n="$msgs" -v d="$DURATION" \
        'BEGIN { o = m - s - l; if (o < 0) o = 0
                 printf "%.3f %.1f %.1f %.1f\n", s / hz / n * 1e6, 100 * s / hz / d, 100 * l / hz / d, 100 * o / hz / d }')
    line="RESULT name=echo_c${conns}_s${size} impl=$impl n=$msgs secs=$DURATION cpu_us_per_msg=$cpm p99_us=$p99 msgs_per_s=$rate srv_cpu_pct=$spct lg_cpu_pct=$lpct other_cpu_pct=$opct"
    printf '%s\n' "$line" | tee -a "$results"
    RATE[$key]+="$rate "
    P99[$key]+="$p99 "
    CPM[$key]+="$cpm "
    SPCT[$key]+="$spct "
    LPCT[$key]+="$lpct "
    OPCT[$key]+="$opct "
}

# --- main loop ---------------------------------------------------------------------------
note "servers: $impls; scenarios: $SCENARIOS; $ROUNDS round(s) of ${WARMUP}s warm-up + ${DURATION}s; loadgen threads: $LG_THREADS"
for sc in $SCENARIOS; do
    conns=${sc%x*} size=${sc#*x}
    note "== $conns connections x $size bytes"
    for ((r = 1; r <= ROUNDS; r++)); do
        order=$impls
        if ! ((r % 2)); then order=""; for s in $impls; do order="$s $order"; done; fi
        for s in $order; do run_one "$s" "$conns" "$size"; done
    done
done
[ "$ran" = 1 ] || die "nothing was run"

# --- table -----------------------------------------------------------------------------------
cell() {   # cell ARRAY KEY FORMAT
    local -n arr=$1
    if [ -n "${FAILED[$2]:-}" ]; then echo FAILED
    elif [ -n "${arr[$2]:-}" ]; then median "$3" "${arr[$2]}"
    else echo -; fi
}
echo
echo "echo servers on 127.0.0.1: median of $ROUNDS round(s), ${DURATION}s window after ${WARMUP}s warm-up, $(nproc) CPU(s), loadgen threads $LG_THREADS"
row() { printf '| %-11s | %-6s | %8s | %9s | %10s | %8s | %7s | %10s | %9s | %6s |\n' "$@"; }
row scenario server msgs/s "p99 us" "cpu us/msg" "srv cpu%" "lg cpu%" "other cpu%" "msgs/s/ep" "cpu/ep"
row ----------- ------ -------- --------- ---------- -------- ------- ---------- --------- ------
for sc in $SCENARIOS; do
    conns=${sc%x*} size=${sc#*x}
    base="c${conns}_s${size}/epoll"
    erate=$(cell RATE "$base" %.0f)
    ecpm=$(cell CPM "$base" %.3f)
    for s in $impls; do
        key="c${conns}_s${size}/$s"
        rate=$(cell RATE "$key" %.0f)
        cpm=$(cell CPM "$key" %.3f)
        read -r rr cr < <(awk -v r="$rate" -v er="$erate" -v c="$cpm" -v ec="$ecpm" 'BEGIN {
            isnum = "^[0-9]+(\\.[0-9]*)?([eE][-+]?[0-9]+)?$"
            a = (r ~ isnum && er ~ isnum && er > 0) ? sprintf("%.2f", r / er) : "-"
            b = (c ~ isnum && ec ~ isnum && ec > 0) ? sprintf("%.2f", c / ec) : "-"
            print a, b }')
        row "c${conns}_s${size}" "$s" "$rate" "$(cell P99 "$key" %.1f)" "$cpm" "$(cell SPCT "$key" %.1f)" "$(cell LPCT "$key" %.1f)" "$(cell OPCT "$key" %.1f)" "$rr" "$cr"
    done
done
echo "(cpu us/msg = server CPU time in the window / messages echoed; srv/lg/other cpu% = % of one core used"
echo " in the window by the server / the load generator / everything else (of $(nproc)00%); msgs/s/ep > 1: more"
echo " throughput than epoll; cpu/ep < 1: less server CPU per message than epoll)"

echo >&2
note "raw results: $results   stderr: $log"
[ "$status" = 0 ] || note "some runs or builds FAILED (see above)"
exit "$status"
