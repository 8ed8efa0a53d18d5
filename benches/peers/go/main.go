// Command weft-go-peers runs the Go peer versions of the weft benchmarks.
//
//	weft-go-peers spawn_many|spawn_wg|yield|skynet|fib|fib_seq|chan_pingpong|chan_mpmc|mutex|rwlock|sleep_many [N]
//	weft-go-peers spawn_many N ROUNDS
//
// With ROUNDS (spawn_many only, 1..64) the workload runs ROUNDS times in one
// process and secs is the median of rounds 2..ROUNDS, as
// bench_spawn_many N ROUNDS does.
//
// Each run prints exactly one line to stdout:
//
//	RESULT name=<workload> impl=go n=<N> secs=<seconds>
//
// Extra information goes to stderr. The exit status is 1 if the workload's
// result check fails, 2 on usage errors. GOMAXPROCS defaults to all CPUs,
// or $WEFT_WORKERS if set; yield always uses 1.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

// A timer measures the part of a workload between start and stop, so that
// setup and result checks are not timed. time.Now carries a monotonic
// clock reading, which time.Sub uses.
type timer struct {
	t0      time.Time
	elapsed time.Duration
}

func (t *timer) start() { t.t0 = time.Now() }
func (t *timer) stop()  { t.elapsed = time.Since(t.t0) }

// A workload runs with parameter n, timing its measured part with t. It
// returns the n to report, or an error if its result check failed.
type workload struct {
	defaultN int
	run      func(n int, t *timer) (reported int, err error)
}

var workloads = map[string]workload{
	"spawn_many":    {1_000_000, spawnMany},
	"spawn_wg":      {1_000_000, spawnMany}, // weft's spawn_wg does what this does
	"yield":         {1_000_000, yield},
	"skynet":        {1_000_000, skynet},
	"fib":           {30, fibPar},
	"fib_seq":       {30, fibSeq},
	"chan_pingpong": {1_000_000, chanPingpong},
	"chan_mpmc":     {4_000_000, chanMPMC},
	"mutex":         {1_000_000, mutexBench},
	"rwlock":        {1_000_000, rwlockBench},
	"sleep_many":    {1_000_000, sleepMany},
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: weft-go-peers spawn_many|spawn_wg|yield|skynet|fib|fib_seq|chan_pingpong|chan_mpmc|mutex|rwlock|sleep_many [N]\n       weft-go-peers spawn_many N ROUNDS")
	os.Exit(2)
}

func main() {
	if len(os.Args) >= 2 && os.Args[1] == "echo_server" { // long-running server for benches/echo
		os.Exit(echoServer(os.Args[2:]))
	}
	if len(os.Args) >= 2 && os.Args[1] == "http_server" { // server, see http.go
		os.Exit(httpServer(os.Args[2:]))
	}
	if len(os.Args) < 2 || len(os.Args) > 4 {
		usage()
	}
	name := os.Args[1]
	w, ok := workloads[name]
	if !ok {
		usage()
	}
	n := w.defaultN
	if len(os.Args) == 4 {
		v, err := strconv.Atoi(os.Args[3])
		if name != "spawn_many" || err != nil || v < 1 || v > 64 {
			usage()
		}
		rounds = v
	}
	if len(os.Args) >= 3 {
		v, err := strconv.Atoi(os.Args[2])
		if err != nil || v < 0 {
			usage()
		}
		n = v
	}

	if s := os.Getenv("WEFT_WORKERS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			fmt.Fprintf(os.Stderr, "bad WEFT_WORKERS=%q\n", s)
			os.Exit(2)
		}
		runtime.GOMAXPROCS(v)
	}
	if name == "yield" {
		runtime.GOMAXPROCS(1) // two goroutines on one worker, by definition
	}
	fmt.Fprintf(os.Stderr, "go %s: GOMAXPROCS=%d n=%d\n", name, runtime.GOMAXPROCS(0), n)

	var t timer
	reported, err := w.run(n, &t)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go %s: FAILED: %v\n", name, err)
		os.Exit(1)
	}
	fmt.Printf("RESULT name=%s impl=go n=%d secs=%.6f\n", name, reported, t.elapsed.Seconds())
}
