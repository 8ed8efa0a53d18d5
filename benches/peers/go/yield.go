package main

import (
	"runtime"
	"sync"
)

// yield runs two goroutines that each call runtime.Gosched n times
// (GOMAXPROCS is forced to 1 by main). It reports the total number of
// yields, 2n.
func yield(n int, t *timer) (int, error) {
	var wg sync.WaitGroup
	t.start()
	wg.Add(2)
	for g := 0; g < 2; g++ {
		go func() {
			for i := 0; i < n; i++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	t.stop()
	return 2 * n, nil
}
