#!/usr/bin/env bash
# Paired A/B of two echo servers for a noisy machine: many short rounds,
# the two servers back to back in each (their order alternating), and the
# ratio taken within each pair, so that what drifts between rounds (the
# host's load) cancels.
#
#   benches/echo/pairs.sh ROUNDS CONNS BUILD_DIR A B
#
# A and B are programs taking a port as their only argument (wrap a server
# that needs more in a two-line script ending in exec). Each run: 1 worker
# (WEFT_WORKERS=1), 64 B messages, 1 s warm-up, a 2 s window, server CPU
# from /proc/PID/stat as in run.sh. Prints, per pair, A's and B's server
# CPU per message (us) and B/A; then the median, quartiles and geometric
# mean of B/A.
set -u
export LC_ALL=C
[ $# -eq 5 ] || { echo "usage: $0 ROUNDS CONNS BUILD_DIR A B" >&2; exit 2; }
R=$1 C=$2 A=$4 B=$5
lg=$3/echo/loadgen
[ -x "$lg" ] || { echo "pairs.sh: no $lg (run benches/echo/run.sh first)" >&2; exit 2; }
# below the ephemeral range (32768-): a server port there can collide
# with the load generator's own connections of an earlier round
port=$((10000 + RANDOM % 10000))
tck=$(getconf CLK_TCK)
one() { port=$((port+1)); WEFT_WORKERS=1 "$1" $port >/dev/null 2>&1 & local pid=$!; sleep 0.3
  local out=$($lg -p $port -c $C -s 64 -d 2 -w 1 -P $pid 2>&1); kill $pid 2>/dev/null; wait $pid 2>/dev/null
  local st=$(echo "$out" | grep 'window end' | grep -o 'server_ticks=[0-9-]*' | cut -d= -f2)
  local m=$(echo "$out" | grep -o ' msgs=[0-9]*' | cut -d= -f2)
  awk -v t="$st" -v m="$m" -v k="$tck" 'BEGIN{ if (m>0) printf "%.3f", t*1e6/k/m; else printf "nan"}'; }
for i in $(seq $R); do
  if [ $((i%2)) = 1 ]; then a=$(one $A); b=$(one $B); else b=$(one $B); a=$(one $A); fi
  echo "$a $b $(awk -v a="$a" -v b="$b" 'BEGIN{if (a == "nan" || b == "nan") print "nan"; else printf "%.3f", b/a}')"
done | tee /dev/stderr | awk '$3 != "nan" {print $3}' | sort -n |
    awk '{a[NR] = $1; s += log($1)}
         END {if (NR) printf "pairs %d  B/A median %.3f  q1 %.3f  q3 %.3f  geomean %.3f\n",
                  NR, a[int((NR + 1) / 2)], a[int((NR + 3) / 4)], a[int((3 * NR + 1) / 4)], exp(s / NR)}'
