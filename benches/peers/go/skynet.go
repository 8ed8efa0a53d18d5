package main

import "fmt"

const skynetDiv = 10

// skynetNode sums the leaf numbers num..num+size-1, spawning one goroutine
// per child and collecting the children's sums through a channel.
func skynetNode(out chan<- int, num, size int) {
	if size == 1 {
		out <- num
		return
	}
	rc := make(chan int, skynetDiv)
	sub := size / skynetDiv
	for i := 0; i < skynetDiv; i++ {
		go skynetNode(rc, num+i*sub, sub)
	}
	sum := 0
	for i := 0; i < skynetDiv; i++ {
		sum += <-rc
	}
	out <- sum
}

// skynet is the classic skynet benchmark with n leaves (n must be a power
// of 10); the result must be n*(n-1)/2.
func skynet(n int, t *timer) (int, error) {
	if n < 1 {
		return n, fmt.Errorf("n=%d: need at least one leaf", n)
	}
	for s := n; s > 1; s /= skynetDiv {
		if s%skynetDiv != 0 {
			return n, fmt.Errorf("n=%d is not a power of %d", n, skynetDiv)
		}
	}
	out := make(chan int, 1)
	t.start()
	go skynetNode(out, 0, n)
	sum := <-out
	t.stop()
	if want := n * (n - 1) / 2; sum != want {
		return n, fmt.Errorf("sum %d, want %d", sum, want)
	}
	return n, nil
}
