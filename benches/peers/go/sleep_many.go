package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// sleepD is how long every sleep_many goroutine sleeps.
const sleepD = 5 * time.Second

// vmRSSKB returns VmRSS from /proc/self/status in kB, -1 if unreadable.
func vmRSSKB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "VmRSS:") {
			fs := strings.Fields(line[len("VmRSS:"):])
			if len(fs) > 0 {
				if v, err := strconv.ParseInt(fs[0], 10, 64); err == nil {
					return v
				}
			}
			break
		}
	}
	return -1
}

// sleepMany starts n goroutines that each increment started and sleep 5 s,
// waits (polling every 1 ms) until all have started, notes the time and
// the RSS, then waits for all. The reported time is the whole minus the
// 5 s sleep: spawning, starting, the timers, waking and waiting.
func sleepMany(n int, t *timer) (int, error) {
	var started, early, woken int64
	var wg sync.WaitGroup
	t.start()
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			atomic.AddInt64(&started, 1)
			s := time.Now()
			time.Sleep(sleepD)
			if time.Since(s) < sleepD {
				atomic.AddInt64(&early, 1)
			}
			atomic.AddInt64(&woken, 1)
			wg.Done()
		}()
	}
	for atomic.LoadInt64(&started) < int64(n) {
		time.Sleep(time.Millisecond)
	}
	startedIn := time.Since(t.t0)
	rss := vmRSSKB()
	wokenAtStart := atomic.LoadInt64(&woken)
	wg.Wait()
	t.stop()
	t.elapsed -= sleepD

	fmt.Fprintf(os.Stderr, "sleep_many: started all in %.3f s, rss %.0f MB at that point\n",
		startedIn.Seconds(), float64(rss)/1024)
	if wokenAtStart != 0 {
		fmt.Fprintf(os.Stderr, "sleep_many: %d of %d had already woken by then "+
			"(starting took longer than the sleep): fewer were suspended at once\n",
			wokenAtStart, n)
	}
	if early != 0 {
		return n, fmt.Errorf("%d goroutine(s) woke early", early)
	}
	return n, nil
}
