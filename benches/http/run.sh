#!/usr/bin/env bash
# HTTP plaintext benchmark: weft's examples/http_server vs nginx (1 worker)
# and Go net/http, loaded with wrk over 127.0.0.1 only.
#
#   benches/http/run.sh [BUILD_DIR]     (default: $BUILD_DIR, else <repo>/build)
#
# Environment:
#   ROUNDS       interleaved rounds (default 3); each round runs every impl once
#   DURATION     seconds of each measured wrk run (default 5)
#   CONNECTIONS  wrk connections (default 50); wrk always uses one thread
#   IMPLS        implementations to run (default "nginx go go2 weft weft2")
#   SERVER_CPUS, WRK_CPUS   optional `taskset -c` CPU lists for the server
#                and for wrk (default: unpinned)
#
# Implementations (each answers every request with "Hello, World!",
# text/plain, 13 bytes, on 127.0.0.1:<free port>):
#   nginx   nginx, worker_processes 1, access_log off (config: nginx.conf here)
#   go      weft-go-peers http_server PORT, WEFT_WORKERS=1 (GOMAXPROCS=1)
#   go2     the same with WEFT_WORKERS=2
#   weft    BUILD_DIR/examples/http_server PORT, WEFT_WORKERS=1
#   weft2   the same with WEFT_WORKERS=2      (weft: skipped if not built)
#   weftc   http_server PORT conn: a weft_listener + weft_conn instead of
#           weft_accept + weft_recv, answering with weft_conn_send (not in
#           the default IMPLS)
#   weftcs  http_server PORT connsys: weftc answering with weft_send (not
#           in the default IMPLS)
#
# Missing Debian packages (nginx, wrk, golang-go) are installed with apt-get
# (needs root). Per run: start the server (under `timeout`, so it dies by
# itself even if this script is killed), check it once per impl (body must be
# exactly "Hello, World!"; "GARBAGE\r\n\r\n" must get a 400 -- only noted for
# peers, a failure for weft), 1 s wrk warm-up, then
# `wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency`, while the server's CPU
# time (utime+stime from /proc/<pid>/stat, summed over its process tree:
# nginx master + worker) is sampled before and after. Prints one line per run
#   RESULT name=http_plaintext impl=<impl> n=<requests> secs=<D> cpu_us_per_req=<x> p99_us=<x>
# on stdout and a table of medians at the end. Server output and wrk output go
# to BUILD_DIR/http-bench.log.
#
# Exit status: 0 if all runs that were attempted succeeded (skips are fine),
# 1 if a run or a weft correctness check failed, 2 on usage/setup errors.
set -u
export LC_ALL=C

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-50}
IMPLS=${IMPLS:-"nginx go go2 weft weft2"}

die() { echo "http/run.sh: $*" >&2; exit 2; }
warn() { echo "http/run.sh: warning: $*" >&2; }
note() { echo "http/run.sh: $*" >&2; }

[ $# -le 1 ] || die "usage: benches/http/run.sh [BUILD_DIR]"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, got '$ROUNDS'"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer (seconds), got '$DURATION'"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive integer"
SERVER_CPUS=${SERVER_CPUS:-}
WRK_CPUS=${WRK_CPUS:-}
server_pin=() wrk_pin=()
[ -z "$SERVER_CPUS" ] || server_pin=(taskset -c "$SERVER_CPUS")
[ -z "$WRK_CPUS" ] || wrk_pin=(taskset -c "$WRK_CPUS")
for impl in $IMPLS; do
    case $impl in nginx | go | go2 | weft | weft2 | weftc | weftcs) ;; *) die "unknown impl '$impl' in IMPLS" ;; esac
done

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=${1:-${BUILD_DIR:-$repo/build}}
mkdir -p "$build/benches" || die "cannot create $build/benches"
build=$(cd "$build" && pwd)
log=$build/http-bench.log
: >"$log"
status=0

# --- packages ------------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v go >/dev/null 2>&1 || need+=(golang-go)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        note "installing ${need[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >>"$log" 2>&1 || warn "apt-get update failed (see $log)"
        apt-get install -y -qq --no-install-recommends "${need[@]}" >>"$log" 2>&1 ||
            warn "apt-get install ${need[*]} failed (see $log)"
    else
        warn "missing ${need[*]} and not root (or no apt-get): cannot install"
    fi
fi
PATH=$PATH:/usr/sbin:/sbin
command -v wrk >/dev/null 2>&1 || die "wrk not found"
have_nginx=1
command -v nginx >/dev/null 2>&1 || { have_nginx=0; warn "nginx not found: no nginx numbers"; }

# --- Go peer -------------------------------------------------------------------
gobin=$build/benches/weft-go-peers
have_go=0
if [[ " $IMPLS " == *" go"* ]]; then
    if command -v go >/dev/null 2>&1; then
        note "building Go peers -> $gobin ($(go version))"
        if (cd "$repo/benches/peers/go" &&
            GOCACHE=$build/gocache GOPATH=$build/gopath GO111MODULE=on \
            GOPROXY=off GOFLAGS='' go build -o "$gobin" .) >>"$log" 2>&1; then
            have_go=1
        else
            echo "http/run.sh: FAILED: go build of the Go peers (see $log)" >&2
            status=1
        fi
    else
        warn "go not found: no Go numbers"
    fi
fi
weftbin=$build/examples/http_server

tmp=$(mktemp -d /tmp/weft-http.XXXXXX) || die "mktemp failed"
srv=""   # pid of the `timeout` wrapping the running server
cleanup() {
    [ -n "$srv" ] && stop_server
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

clk_tck=$(getconf CLK_TCK 2>/dev/null || echo 100)

# --- helpers ---------------------------------------------------------------------
# free_port: a port on 127.0.0.1 that refuses connections (nobody listens),
# below the ephemeral range, so that an outgoing connection cannot take it
# between the check and the listen (seen: "Address already in use").
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768+): a client port cannot hold it
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# tree_ticks PID: utime+stime (clock ticks) of PID and all its descendants.
tree_ticks() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v root="$1" '
        {
            pid = $1
            if (!match($0, /^.*\) /)) next       # comm may contain ") "
            split(substr($0, RLENGTH + 1), f, " ")
            pp[pid] = f[2]; t[pid] = f[12] + f[13]   # fields 4, 14, 15
        }
        END {
            in_tree[root] = 1
            do {
                changed = 0
                for (p in pp) if (!(p in in_tree) && (pp[p] in in_tree)) { in_tree[p] = 1; changed = 1 }
            } while (changed)
            s = 0
            for (p in in_tree) s += t[p]
            print s
        }'
}

# box_snap: "busy total" clock ticks of the whole machine, from /proc/stat.
box_snap() {
    awk '$1 == "cpu" { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6; exit }' /proc/stat
}

# server_cmd IMPL PORT: print the command line, one word per line.
server_cmd() {
    local impl=$1 port=$2 d
    case $impl in
    nginx)
        d=$tmp/nginx-$port
        mkdir -p "$d" || return 1
        sed -e "s|@DIR@|$d|g" -e "s|@PORT@|$port|g" "$here/nginx.conf" >"$d/nginx.conf" || return 1
        printf '%s\n' nginx -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" ;;
    go) printf '%s\n' env WEFT_WORKERS=1 "$gobin" http_server "$port" ;;
    go2) printf '%s\n' env WEFT_WORKERS=2 "$gobin" http_server "$port" ;;
    weft) printf '%s\n' env WEFT_WORKERS=1 "$weftbin" "$port" ;;
    weft2) printf '%s\n' env WEFT_WORKERS=2 "$weftbin" "$port" ;;
    weftc) printf '%s\n' env WEFT_WORKERS=1 "$weftbin" "$port" conn ;;
    weftcs) printf '%s\n' env WEFT_WORKERS=1 "$weftbin" "$port" connsys ;;
    esac
}

# start_server IMPL PORT: start it (sets srv), wait until it answers.
start_server() {
    local impl=$1 port=$2 i cmd
    mapfile -t cmd < <(server_cmd "$impl" "$port")
    [ ${#cmd[@]} -gt 0 ] || return 1
    echo "### start $impl: ${cmd[*]}" >>"$log"
    # The server's whole life is bounded: warm-up + run + checks + slack.
    timeout -k 5 $((DURATION + 90)) "${server_pin[@]}" "${cmd[@]}" </dev/null >>"$log" 2>&1 &
    srv=$!
    for ((i = 0; i < 100; i++)); do
        kill -0 "$srv" 2>/dev/null || { wait "$srv"; srv=""; return 1; }
        if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then return 0; fi
        sleep 0.1
    done
    stop_server
    return 1
}

stop_server() {
    [ -n "$srv" ] || return 0
    kill -TERM "$srv" 2>/dev/null   # timeout forwards it; -k 5 then kills
    wait "$srv" 2>/dev/null
    srv=""
}

declare -A CHECKED SKIP FAILED RPS P99 CPU WRKCPU BUSY OTHER
# check_server IMPL PORT: correctness checks; returns 1 if the body is wrong
# (or, for weft, the malformed request does not get a 400).
check_server() {
    local impl=$1 port=$2 code line ok=0
    code=$(curl -s --max-time 3 -o "$tmp/body" -w '%{http_code} %{content_type}' "http://127.0.0.1:$port/")
    if [ "$(cat "$tmp/body" 2>/dev/null)" = "Hello, World!" ] && [ "$(wc -c <"$tmp/body")" = 13 ] &&
        [[ $code == "200 "* ]]; then
        note "check $impl: GET / -> $code, body 'Hello, World!' (13 bytes): ok"
    else
        echo "http/run.sh: FAILED check $impl: GET / -> '$code', body '$(head -c 100 "$tmp/body" 2>/dev/null)'" >&2
        ok=1
    fi
    [[ $code == *" text/plain"* ]] || warn "check $impl: Content-Type is not text/plain ('$code')"
    line=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GARBAGE\r\n\r\n" >&3
        IFS= read -r -t 3 l <&3; printf "%s" "$l"' _ "$port")
    line=${line%$'\r'}
    if [[ $line =~ ^HTTP/1\.[01]\ 400 ]]; then
        note "check $impl: 'GARBAGE\\r\\n\\r\\n' -> '$line': ok"
    elif [[ $impl == weft* ]]; then
        echo "http/run.sh: FAILED check $impl: 'GARBAGE\\r\\n\\r\\n' -> '${line:-<no answer>}', want 400" >&2
        ok=1
    else
        note "NOTE: peer $impl answers 'GARBAGE\\r\\n\\r\\n' with '${line:-<no answer>}', not 400"
    fi
    return $ok
}

# to_us VALUE_WITH_UNIT (wrk: 812.00us, 1.23ms, 1.01s, 2.00m)
to_us() {
    awk -v v="$1" 'BEGIN {
        if (match(v, /us$/)) m = 1; else if (match(v, /ms$/)) m = 1e3
        else if (match(v, /m$/)) m = 60e6; else if (match(v, /s$/)) m = 1e6; else { print "-"; exit }
        printf "%.1f\n", substr(v, 1, RSTART - 1) * m }'
}

# run_wrk SECS OUT PORT: wrk into OUT; its user+sys seconds into OUT.time.
run_wrk() {
    local TIMEFORMAT='%R %U %S'
    { time timeout $(($1 + 30)) "${wrk_pin[@]}" wrk -t1 -c"$CONNECTIONS" -d"$1"s --latency \
        "http://127.0.0.1:$3/" >"$2" 2>&1; } 2>"$2.time"
}

median() {   # median of whitespace-separated numbers, "-" if none
    printf '%s\n' "$1" | tr ' ' '\n' | sort -g | awk 'NF { a[++n] = $1 }
        END { if (n) printf "%.2f\n", (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2; else print "-" }'
}

# run_one IMPL ROUND
run_one() {
    local impl=$1 r=$2 port t0 t1 b0 b1 out reqs secs rps p99 cpu wrkcpu busy other non2xx sockerr
    [ -z "${SKIP[$impl]:-}" ] && [ -z "${FAILED[$impl]:-}" ] || return 0
    port=$(free_port) || { echo "http/run.sh: FAILED: no free port" >&2; status=1; return 1; }
    if ! start_server "$impl" "$port"; then
        echo "http/run.sh: FAILED: $impl did not start or answer on port $port (see $log)" >&2
        tail -n 5 "$log" | sed 's/^/    | /' >&2
        FAILED[$impl]=1; status=1; return 1
    fi
    if [ -z "${CHECKED[$impl]:-}" ]; then
        CHECKED[$impl]=1
        if ! check_server "$impl" "$port"; then
            FAILED[$impl]=1; status=1; stop_server; return 1
        fi
    fi
    out=$tmp/wrk-$impl-$r
    run_wrk 1 "$out.warm" "$port"
    t0=$(tree_ticks "$srv")
    b0=$(box_snap)
    run_wrk "$DURATION" "$out" "$port"
    b1=$(box_snap)
    t1=$(tree_ticks "$srv")
    kill -0 "$srv" 2>/dev/null || warn "$impl died during the run"
    stop_server
    { echo "### wrk $impl round $r (port $port)"; cat "$out"; } >>"$log"

    read -r reqs secs < <(awk '/ requests in / { s = $4; sub(/,$/, "", s); print $1, s }' "$out")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    sockerr=$(awk '/Socket errors:/ { sub(/^ *Socket errors: */, ""); print }' "$out")
    if ! [[ ${reqs:-} =~ ^[0-9]+$ ]] || [ "$reqs" = 0 ] || [ -z "$rps" ] || [ -z "$p99" ]; then
        echo "http/run.sh: FAILED: $impl round $r: cannot parse wrk output:" >&2
        sed 's/^/    | /' "$out" >&2
        FAILED[$impl]=1; status=1; return 1
    fi
    [ -z "$non2xx" ] || { warn "$impl round $r: $non2xx non-2xx/3xx responses"; status=1; }
    [ -z "$sockerr" ] || warn "$impl round $r: socket errors: $sockerr"
    secs=$(to_us "$secs" | awk '{ printf "%.2f\n", $1 / 1e6 }')
    p99=$(to_us "$p99")
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$clk_tck" -v n="$reqs" 'BEGIN { printf "%.2f\n", (b - a) * 1e6 / hz / n }')
    wrkcpu=$(awk -v d="$DURATION" '{ printf "%.0f\n", ($2 + $3) * 100 / d }' "$out.time")
    # other: machine busy time not charged to the server or wrk, i.e. other
    # processes disturbing the run (% of the whole machine). With tick-based
    # accounting (no CONFIG_IRQ_TIME_ACCOUNTING, as here) softirq work is
    # charged to the task it interrupted, so loopback TCP work is mostly in
    # the server's and wrk's times already.
    read -r busy other < <(awk -v a="$b0" -v b="$b1" -v s=$((t1 - t0)) -v hz="$clk_tck" '{
        split(a, x, " "); split(b, y, " "); tot = y[2] - x[2]
        if (tot <= 0) { print 0, 0; exit }
        o = (y[1] - x[1]) - s - ($2 + $3) * hz
        printf "%.0f %.0f\n", (y[1] - x[1]) * 100 / tot, (o > 0 ? o : 0) * 100 / tot }' "$out.time")
    RPS[$impl]+="$rps "; P99[$impl]+="$p99 "; CPU[$impl]+="$cpu "; WRKCPU[$impl]+="$wrkcpu "; BUSY[$impl]+="$busy "; OTHER[$impl]+="$other "
    echo "RESULT name=http_plaintext impl=$impl n=$reqs secs=$secs cpu_us_per_req=$cpu p99_us=$p99"
    note "  $impl round $r: $rps req/s, p99 ${p99} us, server ${cpu} us CPU/req, wrk CPU ${wrkcpu}%, machine ${busy}% busy (${other}% other processes)"
    [ "$other" -lt 10 ] || warn "$impl round $r: other processes used ${other}% of the machine: numbers disturbed"
}

# --- availability ----------------------------------------------------------------
for impl in $IMPLS; do
    case $impl in
    nginx) [ "$have_nginx" = 1 ] || SKIP[$impl]="nginx not installed" ;;
    go | go2) [ "$have_go" = 1 ] || SKIP[$impl]="Go peer not built" ;;
    weft | weft2 | weftc | weftcs) [ -x "$weftbin" ] || SKIP[$impl]="$weftbin not found (build examples/http_server)" ;;
    esac
    [ -z "${SKIP[$impl]:-}" ] || note "skipping $impl: ${SKIP[$impl]}"
done

note "$(nproc) CPU(s), $(uname -r); $(nginx -v 2>&1 | head -1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
note "load: wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency (after a 1 s warm-up), $ROUNDS round(s)${SERVER_CPUS:+, server on CPUs $SERVER_CPUS}${WRK_CPUS:+, wrk on CPUs $WRK_CPUS}"

# --- rounds ------------------------------------------------------------------------
for ((r = 1; r <= ROUNDS; r++)); do
    order=$IMPLS
    if ! ((r % 2)); then order=""; for impl in $IMPLS; do order="$impl $order"; done; fi
    note "== round $r/$ROUNDS: $order"
    for impl in $order; do run_one "$impl" "$r"; done
done

# --- table -------------------------------------------------------------------------
echo
echo "HTTP plaintext, median of $ROUNDS round(s), wrk -t1 -c$CONNECTIONS -d${DURATION}s, $(nproc) CPU(s)"
row() { printf '| %-6s | %7s | %10s | %8s | %10s | %12s | %8s | %8s | %6s | %7s |\n' "$@"; }
row impl workers "req/s" "vs nginx" "p99 us" "cpu us/req" "vs nginx" "wrk cpu%" "busy %" "other %"
row ------ ------- ---------- -------- ---------- ------------ -------- -------- ------ -------
ngx_rps=$(median "${RPS[nginx]:-}")
ngx_cpu=$(median "${CPU[nginx]:-}")
for impl in $IMPLS; do
    case $impl in nginx | go | weft | weftc | weftcs) w=1 ;; *) w=2 ;; esac
    if [ -n "${SKIP[$impl]:-}" ]; then row "$impl" "$w" skipped - - - - - - -; continue; fi
    if [ -n "${FAILED[$impl]:-}" ] && [ -z "${RPS[$impl]:-}" ]; then row "$impl" "$w" FAILED - - - - - - -; continue; fi
    rps=$(median "${RPS[$impl]:-}")
    cpu=$(median "${CPU[$impl]:-}")
    read -r rr cr < <(awk -v a="$rps" -v b="$ngx_rps" -v c="$cpu" -v d="$ngx_cpu" 'BEGIN {
        isnum = "^[0-9]+(\\.[0-9]*)?$"
        printf "%s %s\n", (a ~ isnum && b ~ isnum && b > 0) ? sprintf("%.2fx", a / b) : "-",
                          (c ~ isnum && d ~ isnum && d > 0) ? sprintf("%.2fx", c / d) : "-" }')
    row "$impl" "$w" "$rps" "$rr" "$(median "${P99[$impl]:-}")" "$cpu" "$cr" "$(median "${WRKCPU[$impl]:-}")" "$(median "${BUSY[$impl]:-}")" "$(median "${OTHER[$impl]:-}")"
done
echo "(req/s vs nginx > 1: more throughput than nginx; cpu us/req vs nginx < 1: cheaper than nginx."
echo " cpu us/req = server utime+stime over the measured run / requests (includes kernel TCP"
echo " work done in the server's context). wrk cpu% = wrk's user+sys / duration;"
echo " busy % = whole machine, from /proc/stat: near 100 means the box (server + wrk + softirq)"
echo " is saturated and req/s says little: compare cpu us/req then. other % = busy time of"
echo " the machine not charged to server or wrk: > ~10 means other load disturbed the run.)"
for impl in $IMPLS; do
    [ -z "${SKIP[$impl]:-}" ] || echo "note: $impl skipped: ${SKIP[$impl]}"
done
note "log: $log"
[ "$status" = 0 ] || echo "http/run.sh: some runs or checks FAILED (see above)" >&2
exit "$status"
