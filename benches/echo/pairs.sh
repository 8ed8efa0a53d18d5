#!/usr/bin/env bash
# Paired A/B of two echo servers for a noisy machine: many short windows,
# the two servers measured back to back in each pair (their order
# alternating), and the ratio taken within each pair, so that what drifts
# between pairs (the host's load) cancels.
#
#   benches/echo/pairs.sh ROUNDS CONNS BUILD_DIR A B
#
# A and B are programs taking a port as their only argument (wrap a server
# that needs more in a two-line script ending in exec). Both are started
# once, with WEFT_WORKERS=1, and run throughout; each window: the load
# generator connects CONNS connections, warms up 0.3 s, measures WINDOW s
# (default 1) of SIZE-byte messages (default 64), server CPU from
# /proc/PID/stat as in run.sh. Prints, per pair, A's and B's server CPU per
# message (us) and B/A; then the median, quartiles and geometric mean of
# B/A, and the mean of each column. ~2.8 s a pair with the defaults.
set -u
export LC_ALL=C
[ $# -eq 5 ] || { echo "usage: $0 ROUNDS CONNS BUILD_DIR A B" >&2; exit 2; }
R=$1 C=$2 A=$4 B=$5
WINDOW=${WINDOW:-1} SIZE=${SIZE:-64}
lg=$3/echo/loadgen
[ -x "$lg" ] || { echo "pairs.sh: no $lg (run benches/echo/run.sh first)" >&2; exit 2; }
# below the ephemeral range (32768-): a server port there can collide
# with the load generator's own connections
pa=$((10000 + RANDOM % 10000)); pb=$((pa + 1))
WEFT_WORKERS=1 "$A" $pa >/dev/null 2>&1 & ia=$!
WEFT_WORKERS=1 "$B" $pb >/dev/null 2>&1 & ib=$!
trap 'kill $ia $ib 2>/dev/null; wait $ia $ib 2>/dev/null' EXIT
sleep 0.5
tck=$(getconf CLK_TCK)
one() { # port pid -> server CPU us per message in the window, or nan
  local out=$($lg -p $1 -c $C -s $SIZE -d $WINDOW -w 0.3 -P $2 2>&1)
  local s0=$(echo "$out" | grep 'window start' | grep -o 'server_ticks=[0-9-]*' | cut -d= -f2)
  local s1=$(echo "$out" | grep 'window end' | grep -o 'server_ticks=[0-9-]*' | cut -d= -f2)
  local m=$(echo "$out" | grep -o ' msgs=[0-9]*' | cut -d= -f2)
  awk -v t="$(( ${s1:-0} - ${s0:-0} ))" -v m="${m:-0}" -v k="$tck" \
      'BEGIN{ if (m > 0) printf "%.3f", t * 1e6 / k / m; else printf "nan"}'; }
for i in $(seq $R); do
  if [ $((i % 2)) = 1 ]; then a=$(one $pa $ia); b=$(one $pb $ib); else b=$(one $pb $ib); a=$(one $pa $ia); fi
  echo "$a $b $(awk -v a="$a" -v b="$b" 'BEGIN{if (a == "nan" || b == "nan") print "nan"; else printf "%.3f", b / a}')"
done | tee /dev/stderr | awk '$3 != "nan"' | sort -k3,3n |
    awk '{r[NR] = $3; s += log($3); ma += $1; mb += $2}
         END {if (NR) printf "pairs %d  B/A median %.3f  q1 %.3f  q3 %.3f  geomean %.3f  mean A %.3f  mean B %.3f us/msg\n",
                  NR, r[int((NR + 1) / 2)], r[int((NR + 3) / 4)], r[int((3 * NR + 1) / 4)], exp(s / NR), ma / NR, mb / NR}'
