package main

import (
	"fmt"
	"sync"
)

// spawnMany starts n goroutines, each storing 2*i into its slot, and waits
// for all of them.
func spawnMany(n int, t *timer) (int, error) {
	results := make([]int, n)
	var wg sync.WaitGroup
	t.start()
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func(i int) {
			results[i] = i * 2
			wg.Done()
		}(i)
	}
	wg.Wait()
	t.stop()

	sum := 0
	for _, r := range results {
		sum += r
	}
	if want := n * (n - 1); sum != want {
		return n, fmt.Errorf("sum %d, want %d", sum, want)
	}
	return n, nil
}
