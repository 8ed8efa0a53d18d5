#!/usr/bin/env bash
# tour.sh — the Python tour: weft for asyncio users, part by part
# (`make demo` runs it; docs/python.md shows each part's asyncio program
# beside its C program and explains the output).
#
#   examples/python/tour.sh [BUILD_DIR]        (default: build)
#
# Runs the programs of examples/python/ from BUILD_DIR/examples/python/,
# about 10 s in all: parts a-g, then a fork-join and an echo server under
# load on every core.
set -euo pipefail

dir=${1:-build}/examples/python
start=$(date +%s.%N)

part() {
    local title=$1 prog=$2
    shift 2
    printf '\n== %s\n   (examples/python/%s.c; asyncio: examples/python/%s.py)\n' \
        "$title" "$prog" "$prog"
    if [ ! -x "$dir/$prog" ]; then
        echo "   (skipped: $dir/$prog is not built)"
        return 0
    fi
    "$dir/$prog" "$@" 2>&1
}

echo "weft: the Python tour on $(nproc) CPU(s); read along in docs/python.md"
part "a. fetch two things one after the other, then both at once" 01_fetch
part "b. two counters that yield every 1,000 counts: one worker, then two" 02_counters
part "c. gather returns every result in order" 03_gather
part "d. a task nobody joins: reported at shutdown" 04_forgotten
part "e. a blocking call in a fiber: one worker freezes, the watchdog names it" 05_blocking
part "f. a shared counter without a lock, on two workers" 06_race
part "g. stop on a signal: SIGTERM caught, waited for in a fiber" 09_signal
part "fork-join: fib with a fiber per call, one worker then all" 07_fork_join 32
part "an echo server and 50 clients in one process" 08_echo 2

printf '\ntour done in %.1f s\n' "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')"
