package main

import "fmt"

// parFib is fork-join fib: the child computes fib(n-1) in a new goroutine
// while the parent computes fib(n-2) inline, then joins through a channel.
func parFib(n int) int {
	if n < 2 {
		return n
	}
	c := make(chan int, 1)
	go func() { c <- parFib(n - 1) }()
	y := parFib(n - 2)
	return <-c + y
}

func seqFib(n int) int {
	if n < 2 {
		return n
	}
	return seqFib(n-1) + seqFib(n-2)
}

// iterFib is the reference used to check the results.
func iterFib(n int) int {
	a, b := 0, 1
	for i := 0; i < n; i++ {
		a, b = b, a+b
	}
	return a
}

func checkFib(n, got int) error {
	if want := iterFib(n); got != want {
		return fmt.Errorf("fib(%d) = %d, want %d", n, got, want)
	}
	return nil
}

func fibPar(n int, t *timer) (int, error) {
	t.start()
	r := parFib(n)
	t.stop()
	return n, checkFib(n, r)
}

func fibSeq(n int, t *timer) (int, error) {
	t.start()
	r := seqFib(n)
	t.stop()
	return n, checkFib(n, r)
}
