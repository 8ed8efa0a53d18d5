package main

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// chanPingpong bounces a counter between two goroutines over two unbuffered
// channels, n round trips. As in weft, the ponger is started before the
// timer and stopped (close + wait) after it.
func chanPingpong(n int, t *timer) (int, error) {
	ping := make(chan uint64)
	pong := make(chan uint64)
	done := make(chan struct{})
	go func() {
		for x := range ping {
			pong <- x + 1
		}
		close(done)
	}()
	var x uint64
	t.start()
	for i := 0; i < n; i++ {
		ping <- x
		x = <-pong
	}
	t.stop()
	close(ping)
	<-done
	if x != uint64(n) {
		return n, fmt.Errorf("counter %d, want %d", x, n)
	}
	return n, nil
}

const (
	mpmcProducers = 4
	mpmcConsumers = 4
	mpmcCap       = 1024
)

// chanMPMC sends 0..n-1 from 4 producers (producer p sends p, p+4, ...)
// through one channel buffered to 1024 to 4 consumers; the channel is
// closed once the producers are done. The timed part includes starting the
// goroutines and waiting for all of them, as in weft.
func chanMPMC(n int, t *timer) (int, error) {
	ch := make(chan uint64, mpmcCap)
	var gotSum, gotN atomic.Uint64
	var prod, cons sync.WaitGroup
	t.start()
	cons.Add(mpmcConsumers)
	for c := 0; c < mpmcConsumers; c++ {
		go func() {
			var s, k uint64
			for x := range ch {
				s += x
				k++
			}
			gotSum.Add(s)
			gotN.Add(k)
			cons.Done()
		}()
	}
	prod.Add(mpmcProducers)
	for p := 0; p < mpmcProducers; p++ {
		go func(id int) {
			for i := uint64(id); i < uint64(n); i += mpmcProducers {
				ch <- i
			}
			prod.Done()
		}(p)
	}
	prod.Wait()
	close(ch)
	cons.Wait()
	t.stop()
	un := uint64(n)
	var want uint64
	if n > 0 {
		want = un * (un - 1) / 2
	}
	if gotN.Load() != un || gotSum.Load() != want {
		return n, fmt.Errorf("got %d elements summing to %d, want %d summing to %d",
			gotN.Load(), gotSum.Load(), un, want)
	}
	return n, nil
}
