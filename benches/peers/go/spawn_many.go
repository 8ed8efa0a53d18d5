package main

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// rounds: spawn_many's ROUNDS argument (main.go); 1 unless given.
var rounds = 1

// spawnMany starts n goroutines, each storing 2*i into its slot, and waits
// for all of them; with rounds > 1 it does so rounds times and reports the
// median of rounds 2..rounds.
func spawnMany(n int, t *timer) (int, error) {
	results := make([]int, n)
	times := make([]time.Duration, rounds)
	for r := 0; r < rounds; r++ {
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
		times[r] = t.elapsed

		sum := 0
		for _, r := range results {
			sum += r
		}
		if want := n * (n - 1); sum != want {
			return n, fmt.Errorf("sum %d, want %d", sum, want)
		}
	}
	if rounds > 1 {
		warm := times[1:]
		sort.Slice(warm, func(i, j int) bool { return warm[i] < warm[j] })
		t.elapsed = warm[(len(warm)-1)/2]
	}
	return n, nil
}
