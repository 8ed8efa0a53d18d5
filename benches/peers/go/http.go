package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"time"
)

// httpServer implements
//
//	weft-go-peers http_server PORT
//
// the Go peer of weft's examples/http_server for benches/http/run.sh: a
// net/http server on 127.0.0.1:PORT that answers every request with
// "Hello, World!" (Content-Type: text/plain, 13 bytes). Unlike the other
// workloads it prints no RESULT line and runs until it is killed (the
// harness measures it from outside). GOMAXPROCS is $WEFT_WORKERS, or 1 if
// unset, to match a single nginx worker. Malformed requests get net/http's
// own "400 Bad Request". It returns the exit status: 2 on usage errors, 1 if
// it cannot listen.
func httpServer(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: weft-go-peers http_server PORT")
		return 2
	}
	port, err := strconv.Atoi(args[0])
	if err != nil || port < 1 || port > 65535 {
		fmt.Fprintf(os.Stderr, "go http_server: bad PORT %q\n", args[0])
		return 2
	}
	procs := 1
	if s := os.Getenv("WEFT_WORKERS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			fmt.Fprintf(os.Stderr, "bad WEFT_WORKERS=%q\n", s)
			return 2
		}
		procs = v
	}
	runtime.GOMAXPROCS(procs)

	body := []byte("Hello, World!")
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{"13"}
		w.Write(body)
	})

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "go http_server: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "go http_server: GOMAXPROCS=%d listening on %s\n",
		runtime.GOMAXPROCS(0), ln.Addr())
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	err = srv.Serve(ln)
	fmt.Fprintf(os.Stderr, "go http_server: %v\n", err)
	return 1
}
