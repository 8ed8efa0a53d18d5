#!/usr/bin/env bash
# File random-read benchmark: weft's benches/bench_file_randread vs fio, both
# over io_uring, 4 KiB random reads of a 1 GiB file, with O_DIRECT (the disk)
# and without (the page cache, after a warm read of the whole file).
#
#   benches/fio/run.sh [BUILD_DIR]     (default: $BUILD_DIR, else <repo>/build)
#
# Environment:
#   FIO_DIR    directory for the 1 GiB test file (default: a new temp dir
#              under /var/tmp). The file (and a temp dir made here) is
#              deleted at the end. Skipped if the filesystem has < 3 GiB free.
#   ROUNDS     interleaved rounds (default 3)
#   DURATION   seconds per run (default 10)
#   MODES      "direct cached" (default) or either one
#
# Per round and mode, in alternating order:
#   fio --ioengine=io_uring --iodepth=32 --rw=randread --bs=4k --direct=0|1
#       --norandommap --randrepeat=0 --invalidate=0 --time_based --runtime=DURATION
#   BUILD_DIR/benches/bench_file_randread FILE 0|1 DURATION   (weft; skipped
#       with a note if not built), which prints
#   RESULT name=file_randread_<direct|cached> impl=weft n=<ios> secs=<s> iops=<x>
# (--invalidate=0: fio would otherwise drop the file's pages from the page
# cache before each job, and "cached" would measure the disk.)
# fio's results are printed as the same kind of RESULT line (impl=fio). The
# table gives median IOPS, weft/fio, and CPU time (user+sys of the whole
# process, from the shell's `time`) per I/O. fio is installed with apt-get if
# missing (needs root). fio's output goes to BUILD_DIR/fio-bench.log.
#
# Exit status: 0 if every attempted run succeeded (skips are fine, including
# the low-disk-space skip), 1 if a run failed, 2 on usage/setup errors.
set -u
export LC_ALL=C

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
MODES=${MODES:-"direct cached"}
SIZE_MB=1024
NEED_KB=$((3 * 1024 * 1024))

die() { echo "fio/run.sh: $*" >&2; exit 2; }
warn() { echo "fio/run.sh: warning: $*" >&2; }
note() { echo "fio/run.sh: $*" >&2; }

[ $# -le 1 ] || die "usage: benches/fio/run.sh [BUILD_DIR]"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, got '$ROUNDS'"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer (seconds), got '$DURATION'"
for m in $MODES; do case $m in direct | cached) ;; *) die "unknown mode '$m' in MODES" ;; esac; done

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=${1:-${BUILD_DIR:-$repo/build}}
mkdir -p "$build" || die "cannot create $build"
build=$(cd "$build" && pwd)
log=$build/fio-bench.log
: >"$log"
weftbin=$build/benches/bench_file_randread
status=0

# --- disk space ----------------------------------------------------------------
if [ -n "${FIO_DIR:-}" ]; then
    [ -d "$FIO_DIR" ] || die "FIO_DIR=$FIO_DIR is not a directory"
    where=$FIO_DIR
else
    where=/var/tmp
fi
avail_kb=$(df -Pk "$where" | awk 'NR == 2 { print $4 }')
if ! [[ ${avail_kb:-} =~ ^[0-9]+$ ]]; then
    die "cannot read free space of $where from df"
fi
if [ "$avail_kb" -lt "$NEED_KB" ]; then
    echo "fio/run.sh: SKIPPED: only $((avail_kb / 1024)) MiB free on $where ($(df -P "$where" | awk 'NR == 2 { print $6 }')), need 3 GiB; set FIO_DIR to a roomier directory" >&2
    exit 0
fi

# --- fio -----------------------------------------------------------------------
if ! command -v fio >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        note "installing fio with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >>"$log" 2>&1 || warn "apt-get update failed (see $log)"
        apt-get install -y -qq --no-install-recommends fio >>"$log" 2>&1 || warn "apt-get install fio failed (see $log)"
    fi
    command -v fio >/dev/null 2>&1 || die "fio not found and could not be installed"
fi

# --- test file -------------------------------------------------------------------
if [ -n "${FIO_DIR:-}" ]; then
    dir=$(cd "$FIO_DIR" && pwd)
    madedir=""
else
    dir=$(mktemp -d /var/tmp/weft-fio.XXXXXX) || die "mktemp failed"
    madedir=$dir
fi
file=$dir/weft-fio-randread.$$.dat
cleanup() {
    rm -f "$file"
    [ -z "$madedir" ] || rm -rf "$madedir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fstype=$(df -PT "$dir" 2>/dev/null | awk 'NR == 2 { print $2 }')
note "$(nproc) CPU(s), $(uname -r), $(fio --version); file $file on $fstype ($((avail_kb / 1024 / 1024)) GiB free)"
note "writing ${SIZE_MB} MiB of random data"
if ! dd if=/dev/urandom of="$file" bs=1M count=$SIZE_MB conv=fsync status=none 2>>"$log"; then
    echo "fio/run.sh: FAILED: cannot write $file" >&2
    exit 1
fi

direct_ok=1
if ! dd if="$file" of=/dev/null bs=4096 count=1 iflag=direct status=none 2>>"$log"; then
    direct_ok=0
    note "NOTE: $fstype at $dir does not support O_DIRECT: skipping the direct mode"
fi

# --- helpers ---------------------------------------------------------------------
declare -A IOPS CPU FAILED
have_weft=1
[ -x "$weftbin" ] || { have_weft=0; note "skipping weft: $weftbin not found (build benches/bench_file_randread)"; }

# timed OUT CMD...: run CMD, stdout+stderr to OUT, its user+sys seconds to OUT.time.
timed() {
    local out=$1 TIMEFORMAT='%U %S'
    shift
    { time timeout $((DURATION + 60)) "$@" >"$out" 2>&1; } 2>"$out.time"
}

median() {   # median of whitespace-separated numbers, "-" if none
    printf '%s\n' "$1" | tr ' ' '\n' | sort -g | awk 'NF { a[++n] = $1 }
        END { if (n) printf "%.0f\n", (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2; else print "-" }'
}
median2() {
    printf '%s\n' "$1" | tr ' ' '\n' | sort -g | awk 'NF { a[++n] = $1 }
        END { if (n) printf "%.2f\n", (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2; else print "-" }'
}

fail() {   # fail KEY MESSAGE OUTFILE
    echo "fio/run.sh: FAILED: $1: $2" >&2
    [ -z "${3:-}" ] || tail -n 10 "$3" | sed 's/^/    | /' >&2
    FAILED[$1]=1
    status=1
}

# run_fio MODE
run_fio() {
    local mode=$1 d=0 out=$tmpd/fio.out n secs iops cpu line
    [ "$mode" = direct ] && d=1
    [ -z "${FAILED[$mode/fio]:-}" ] || return 1
    timed "$out" fio --name=randread --filename="$file" --size=${SIZE_MB}M \
        --ioengine=io_uring --iodepth=32 --rw=randread --bs=4k --direct=$d \
        --norandommap --randrepeat=0 --invalidate=0 --time_based --runtime="$DURATION" \
        --output-format=terse --terse-version=3
    local rc=$?
    { echo "### fio $mode"; cat "$out"; } >>"$log"
    line=$(grep '^3;' "$out" | tail -n 1)
    if [ $rc -ne 0 ] || [ -z "$line" ]; then fail "$mode/fio" "exit status $rc" "$out"; return 1; fi
    # terse v3: 5 error, 6 read_kb, 8 read_iops, 9 read_runtime_ms
    read -r err n secs iops < <(awk -F';' '{ printf "%s %d %.3f %.0f\n", $5, $6 / 4, $9 / 1000, $8 }' <<<"$line")
    if [ "$err" != 0 ] || [ "$n" -le 0 ]; then fail "$mode/fio" "fio error $err, $n I/Os" "$out"; return 1; fi
    cpu=$(awk -v n="$n" '{ printf "%.2f\n", ($1 + $2) * 1e6 / n }' "$out.time")
    IOPS[$mode/fio]+="$iops "
    CPU[$mode/fio]+="$cpu "
    echo "RESULT name=file_randread_$mode impl=fio n=$n secs=$secs iops=$iops"
    note "  fio  $mode: $iops IOPS, $cpu us CPU/IO"
}

# run_weft MODE
run_weft() {
    local mode=$1 d=0 out=$tmpd/weft.out line nl n secs iops cpu
    [ "$mode" = direct ] && d=1
    [ "$have_weft" = 1 ] && [ -z "${FAILED[$mode/weft]:-}" ] || return 1
    timed "$out" "$weftbin" "$file" $d "$DURATION"
    local rc=$?
    { echo "### weft $mode"; cat "$out"; } >>"$log"
    nl=$(grep -c '^RESULT ' "$out")
    line=$(grep '^RESULT ' "$out")
    if [ $rc -ne 0 ] || [ "$nl" != 1 ]; then fail "$mode/weft" "exit status $rc, $nl RESULT line(s)" "$out"; return 1; fi
    read -r name impl n secs iops < <(awk '{
        for (i = 2; i <= NF; i++) { p = index($i, "="); v[substr($i, 1, p - 1)] = substr($i, p + 1) }
        print v["name"], v["impl"], v["n"], v["secs"], v["iops"] }' <<<"$line")
    if [ "$name" != "file_randread_$mode" ] || [ "$impl" != weft ] || ! [[ $n =~ ^[0-9]+$ ]] ||
        [ "$n" = 0 ] || ! [[ $secs =~ ^[0-9]+(\.[0-9]*)?$ ]]; then
        fail "$mode/weft" "malformed result line: $line"; return 1
    fi
    [[ $iops =~ ^[0-9]+(\.[0-9]*)?$ ]] || iops=$(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f\n", n / s }')
    cpu=$(awk -v n="$n" '{ printf "%.2f\n", ($1 + $2) * 1e6 / n }' "$out.time")
    IOPS[$mode/weft]+="$iops "
    CPU[$mode/weft]+="$cpu "
    echo "$line"
    note "  weft $mode: $iops IOPS, $cpu us CPU/IO"
}

tmpd=$(mktemp -d /tmp/weft-fio-out.XXXXXX) || die "mktemp failed"
cleanup2() { rm -rf "$tmpd"; cleanup; }
trap cleanup2 EXIT

# --- rounds ------------------------------------------------------------------------
for ((r = 1; r <= ROUNDS; r++)); do
    order="fio weft"
    ((r % 2)) || order="weft fio"
    for mode in $MODES; do
        if [ "$mode" = direct ] && [ "$direct_ok" = 0 ]; then continue; fi
        if [ "$mode" = cached ]; then cat "$file" >/dev/null; fi   # warm the page cache
        note "== round $r/$ROUNDS, $mode: $order"
        for impl in $order; do "run_$impl" "$mode"; done
    done
done

# --- table -------------------------------------------------------------------------
echo
echo "file random read, 4 KiB, iodepth 32, 1 GiB file on $fstype, median of $ROUNDS round(s) x ${DURATION}s, $(nproc) CPU(s)"
row() { printf '| %-6s | %10s | %10s | %9s | %11s | %12s |\n' "$@"; }
row mode "fio IOPS" "weft IOPS" "weft/fio" "fio us/IO" "weft us/IO"
row ------ ---------- ---------- --------- ----------- ------------
cell() {   # cell KEY FN
    if [ -n "${FAILED[$1]:-}" ] && [ -z "${IOPS[$1]:-}" ]; then echo FAILED
    elif [ "$2" = iops ]; then median "${IOPS[$1]:-}"
    else median2 "${CPU[$1]:-}"; fi
}
for mode in $MODES; do
    if [ "$mode" = direct ] && [ "$direct_ok" = 0 ]; then row "$mode" "no O_DIRECT" - - - -; continue; fi
    f=$(cell "$mode/fio" iops)
    w=$(cell "$mode/weft" iops)
    [ "$have_weft" = 1 ] || w=skipped
    ratio=$(awk -v f="$f" -v w="$w" 'BEGIN { print (f ~ /^[0-9]+$/ && w ~ /^[0-9]+$/ && f > 0) ? sprintf("%.2fx", w / f) : "-" }')
    wc=$(cell "$mode/weft" cpu)
    [ "$have_weft" = 1 ] || wc=-
    row "$mode" "$f" "$w" "$ratio" "$(cell "$mode/fio" cpu)" "$wc"
done
echo "(weft/fio > 1: weft does more IOPS. us/IO = CPU time (user+sys) of the whole process / I/Os.)"
[ "$have_weft" = 1 ] || echo "note: weft skipped: $weftbin not found"
note "log: $log"
[ "$status" = 0 ] || echo "fio/run.sh: some runs FAILED (see above)" >&2
exit "$status"
