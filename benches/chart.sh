#!/usr/bin/env bash
# chart.sh — draw docs/benchmarks.png (weft vs its peers) from the tables in
# docs/benchmarks.md, so the chart is redrawn whenever the tables change:
#
#   benches/chart.sh [BENCHMARKS_MD [OUT_PNG]]
#
# Four panels, every bar a ratio taken from the tables as they stand (1 is
# the peer's level; above 1, weft does better):
#   scheduler   go/weft ratio (Go's time / weft's) per workload, log scale
#   TCP echo    msgs/s relative to the epoll loop (msgs/s/ep), per scenario
#   HTTP        req/s relative to nginx
#   file reads  IOPS relative to fio (weft/fio)
# Needs gnuplot (Debian: apt-get install gnuplot-nox); CI does not run this.
set -euo pipefail

cd "$(dirname "$0")/.."
md=${1:-docs/benchmarks.md}
png=${2:-docs/benchmarks.png}
command -v gnuplot >/dev/null || {
    echo "chart.sh: needs gnuplot (apt-get install gnuplot-nox)" >&2
    exit 1
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# table MUST_HAVE_COLUMN KEY_COLUMN VALUE_COLUMN [SERIES_COLUMN]: print
# "key value" (or "key series value") for each row of the first markdown
# table in $md whose header has MUST_HAVE_COLUMN; a value's trailing "x" is
# dropped. Columns are named by their header text.
table() {
    awk -F'|' -v must="$1" -v kc="$2" -v vc="$3" -v sc="${4:-}" '
        function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
        /^\|/ {
            if (!intable) {                 # a header row
                intable = 1; hdr = 1; want = 0
                for (i = 2; i < NF; i++) {
                    h = trim($i)
                    if (h == must && !done) want = 1
                    if (h == kc && !k) k = i
                    if (h == sc && !s) s = i
                    if (h == vc && !v) v = i   # the first column of that name
                }
                if (!want) { k = s = v = 0 }
                next
            }
            if (!want || trim($2) ~ /^-+$/) next
            val = trim($v); sub(/x$/, "", val)
            if (s) print trim($k), trim($s), val
            else print trim($k), val
            next
        }
        { if (intable && want) done = 1; intable = 0 }
    ' "$md"
}

table 'go/weft ratio' workload 'go/weft ratio' >"$tmp/sched"
table 'msgs/s/ep' scenario 'msgs/s/ep' server >"$tmp/echo.long"
table 'req/s' impl 'vs nginx' >"$tmp/http"
table 'weft/fio' mode 'weft/fio' >"$tmp/fio"
for f in sched echo.long http fio; do
    [ -s "$tmp/$f" ] || { echo "chart.sh: no '$f' table found in $md" >&2; exit 1; }
done

# echo: one row per scenario, one column per server (in table order)
awk '{ if (!($2 in col)) { col[$2] = ++nc; name[nc] = $2 }
       if (!($1 in row)) { row[$1] = ++nr; key[nr] = $1 }
       v[row[$1], col[$2]] = $3 }
     END { printf "scenario"; for (c = 1; c <= nc; c++) printf " %s", name[c]; print ""
           for (r = 1; r <= nr; r++) { printf "%s", key[r]
               for (c = 1; c <= nc; c++) printf " %s", v[r, c]; print "" } }' \
    "$tmp/echo.long" >"$tmp/echo"
necho=$(awk 'NR == 1 { print NF - 1 }' "$tmp/echo")
dated=$(tr '\n' ' ' <"$md" | grep -oE 'Dated +[0-9-]+' | head -1 || true)
dated=${dated#Dated}
dated=${dated// /}

gnuplot <<GP
set terminal pngcairo size 1400,900 font "DejaVu Sans,11"
set output "$png"
set termoption noenhanced
set multiplot layout 2,2 title "weft vs its peers: ratios from docs/benchmarks.md${dated:+ ($dated)}; above 1, weft does better" font ",13"
set style data histograms
set style fill solid 0.85 border -1
set boxwidth 0.8
set grid ytics
set key top left
set xtics nomirror rotate by -25 left
set yrange [0:*]

set title "Scheduler and sync: Go's time / weft's time"
set logscale y 2
set yrange [0.25:32]
set key top right
set ytics ("0.25" 0.25, "0.5" 0.5, "1" 1, "2" 2, "4" 4, "8" 8, "16" 16, "32" 32)
set style histogram clustered gap 1
plot "$tmp/sched" using 2:xtic(1) title "weft vs Go (1 worker per core)" lc rgb "#2a7ab9", \
     "" using 0:2:(sprintf("%.2f", \$2)) with labels offset 0,0.8 notitle, \
     1 with lines lc rgb "black" dt 2 notitle
unset logscale y
set ytics auto
set yrange [0:*]

set title "TCP echo: messages/s relative to a hand-written epoll loop (weft2: 2 workers)"
set style histogram clustered gap 1
set yrange [0:1.5]
set key top left horizontal
plot for [c=2:$necho+1] "$tmp/echo" using c:xtic(1) title columnheader(c), \
     1 with lines lc rgb "black" dt 2 notitle

set title "HTTP plaintext: requests/s relative to nginx (go2, weft2: 2 workers)"
set yrange [0:1.3]
set key top right
plot "$tmp/http" using 2:xtic(1) title "req/s vs nginx" lc rgb "#3b9a57", \
     "" using 0:2:(sprintf("%.2f", \$2)) with labels offset 0,0.8 notitle, \
     1 with lines lc rgb "black" dt 2 notitle

set title "File random reads, 4 KiB, iodepth 32: IOPS relative to fio (io_uring)"
set yrange [0:1.8]
set key top left
plot "$tmp/fio" using 2:xtic(1) title "weft / fio" lc rgb "#c0603a", \
     "" using 0:2:(sprintf("%.2f", \$2)) with labels offset 0,0.8 notitle, \
     1 with lines lc rgb "black" dt 2 notitle
unset multiplot
GP
echo "chart.sh: wrote $png"
