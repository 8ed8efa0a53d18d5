package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"time"
)

// echoServer implements
//
//	weft-go-peers echo_server PORT
//
// a plain Go TCP echo server for benches/echo: it listens on 127.0.0.1:PORT
// and serves until killed, one goroutine per connection, each running a
// read/write loop over its own 64 KiB buffer (like io.Copy, but without
// io.Copy's splice fast path, so every server does read + write). Go sets
// TCP_NODELAY on accepted connections by default. GOMAXPROCS is $WEFT_WORKERS
// if set, else all CPUs. It prints nothing to stdout; it returns 2 on usage
// errors and 1 if it cannot listen.
func echoServer(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: weft-go-peers echo_server PORT")
		return 2
	}
	port, err := strconv.Atoi(args[0])
	if err != nil || port < 1 || port > 65535 {
		fmt.Fprintln(os.Stderr, "usage: weft-go-peers echo_server PORT")
		return 2
	}
	if s := os.Getenv("WEFT_WORKERS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			fmt.Fprintf(os.Stderr, "bad WEFT_WORKERS=%q\n", s)
			return 2
		}
		runtime.GOMAXPROCS(v)
	}
	ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "go echo_server: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "go echo_server: listening on %s, GOMAXPROCS=%d\n", ln.Addr(), runtime.GOMAXPROCS(0))
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return 1
			}
			// e.g. EMFILE: back off briefly, as net/http does
			fmt.Fprintf(os.Stderr, "go echo_server: accept: %v\n", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go echoConn(c)
	}
}

func echoConn(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
