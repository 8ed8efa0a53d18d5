package main

import (
	"fmt"
	"sync"
	"sync/atomic"
)

const (
	rwlockGoroutines = 8
	rwlockFields     = 8
	rwlockEvery      = 10 // one write in rwlockEvery operations
)

// rwlockBench has 8 goroutines share one sync.RWMutex over 8 plain
// int64s, n/8 operations each: every 10th a write (Lock, bump all 8), the
// rest reads (RLock, sum all 8, which must agree). n is rounded down to a
// multiple of 8 (and that is what is reported), as in weft; at the end
// every field must equal the number of writes.
func rwlockBench(n int, t *timer) (int, error) {
	per := n / rwlockGoroutines
	n = per * rwlockGoroutines
	writes := int64(per / rwlockEvery * rwlockGoroutines)
	var mu sync.RWMutex
	var wg sync.WaitGroup
	var data [rwlockFields]int64
	var torn atomic.Uint64 // reads that saw a half write
	t.start()
	wg.Add(rwlockGoroutines)
	for g := 0; g < rwlockGoroutines; g++ {
		go func() {
			for i := 0; i < per; i++ {
				if i%rwlockEvery == rwlockEvery-1 {
					mu.Lock()
					for k := range data {
						data[k]++
					}
					mu.Unlock()
				} else {
					var sum int64
					mu.RLock()
					for k := range data {
						sum += data[k]
					}
					if sum != rwlockFields*data[0] {
						torn.Add(1)
					}
					mu.RUnlock()
				}
			}
			wg.Done()
		}()
	}
	wg.Wait()
	t.stop()
	if c := torn.Load(); c != 0 {
		return n, fmt.Errorf("%d torn reads", c)
	}
	for k, v := range data {
		if v != writes {
			return n, fmt.Errorf("field %d is %d, want %d", k, v, writes)
		}
	}
	return n, nil
}
