package main

import (
	"fmt"
	"sync"
)

const mutexGoroutines = 8

// mutexBench has 8 goroutines take one sync.Mutex n/8 times each and bump
// a plain counter inside. n is rounded down to a multiple of 8 (and that is
// what is reported), as in weft.
func mutexBench(n int, t *timer) (int, error) {
	per := n / mutexGoroutines
	n = per * mutexGoroutines
	var mu sync.Mutex
	var wg sync.WaitGroup
	counter := 0
	t.start()
	wg.Add(mutexGoroutines)
	for g := 0; g < mutexGoroutines; g++ {
		go func() {
			for i := 0; i < per; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	t.stop()
	if counter != n {
		return n, fmt.Errorf("count %d, want %d", counter, n)
	}
	return n, nil
}
