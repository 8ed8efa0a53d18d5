#!/usr/bin/env bash
# A/B one scheduler benchmark between two builds, alternated in pairs (the
# order flips every pair), for a noisy machine: what drifts between pairs
# (the host's load) cancels in the per-pair ratio.
#
#   benches/ab.sh OLD_BUILD NEW_BUILD BENCH PAIRS [ARGS...]
#
# Runs OLD_BUILD/benches/bench_BENCH and NEW_BUILD/benches/bench_BENCH
# (ARGS passed to both; WEFT_WORKERS from the environment) PAIRS times each
# and prints the medians of their secs= and the median and quartiles of
# new/old over the pairs. Build the old one in a worktree, e.g.
#   git worktree add /tmp/old HEAD~1 && cmake -S /tmp/old -B /tmp/old/b \
#       -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/old/b -j2
# Exit status 2 on usage errors, 1 if a run printed no RESULT.
set -u -o pipefail
export LC_ALL=C
[ $# -ge 4 ] || { echo "usage: $0 OLD_BUILD NEW_BUILD BENCH PAIRS [ARGS...]" >&2; exit 2; }
old=$1/benches/bench_$3 new=$2/benches/bench_$3 b=$3 n=$4
shift 4
for x in "$old" "$new"; do
    [ -x "$x" ] || { echo "ab.sh: no $x" >&2; exit 2; }
done
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "ab.sh: PAIRS must be a positive integer" >&2; exit 2; }
one() { local p=$1; shift; "$p" "$@" 2>/dev/null | grep -o 'secs=[0-9.]*' | cut -d= -f2; }
for i in $(seq "$n"); do
    if [ $((i % 2)) = 1 ]; then a=$(one "$old" "$@"); c=$(one "$new" "$@")
    else c=$(one "$new" "$@"); a=$(one "$old" "$@"); fi
    [ -n "$a" ] && [ -n "$c" ] || { echo "ab.sh: a run printed no RESULT" >&2; exit 1; }
    echo "$a $c"
done | awk -v b="$b" '
    function sort(v, k,   i, j, t) { for (i = 2; i <= k; i++) { t = v[i];
        for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t } }
    function med(v, k) { return k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2 }
    { o[NR] = $1; w[NR] = $2; r[NR] = $2 / $1 }
    END { k = NR; sort(o, k); sort(w, k); sort(r, k)
        printf "%s: old %.4f s, new %.4f s (medians); new/old median %.3f, quartiles %.3f-%.3f, %d pairs\n",
            b, med(o, k), med(w, k), med(r, k), r[int((k - 1) / 4) + 1], r[k - int((k - 1) / 4)], k }'
