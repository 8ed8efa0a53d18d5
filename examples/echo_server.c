/* echo_server.c — a TCP echo server: one fiber per connection.
 *
 *     echo_server [PORT [conn|connsys|recv]]  (default 7000 conn; port 0
 *                                  picks a free one; WEFT_WORKERS picks
 *                                  the workers)
 *
 * conn: connections come from a weft_listener (multishot accept), each is
 * a weft_conn (one multishot receive into the worker's buffer ring, armed
 * once) and answers with weft_conn_send (batched into the worker's next
 * submit: no syscall per message); connsys: the same, answering with
 * weft_send (a send(2) each; kept for benches/echo/ab.sh); recv:
 * weft_accept, and plain weft_recv and weft_send per message.
 *
 * Python's asyncio version is the same shape (start_server + a coroutine
 * per client); here the handler is a plain function and the fibers run on
 * every worker. SIGINT or SIGTERM stops it cleanly: a fiber waits for the
 * signal (weft_signal_wait); the main fiber waits for it or for the acceptor
 * to fail, cancels both and returns, and weft_run cancels the
 * connections' fibers, which close their sockets, before it returns
 * (asyncio.run cancels the remaining tasks the same way).
 * tests/test_examples.c drives this program and http_server.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <weft.h>

static int use_conn = 1, use_connsys;

static void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[16 * 1024]; /* fiber stacks are 64 KiB by default */
	if (!use_conn) {
		for (;;) {
			ssize_t n = weft_recv(fd, buf, sizeof buf, 0);
			if (n <= 0 || weft_send(fd, buf, (size_t)n, 0) != n)
				break;
		}
		weft_close(fd);
		return NULL;
	}
	int err;
	weft_conn *c = weft_conn_open(fd, &err);
	if (!c) {
		weft_close(fd);
		return NULL;
	}
	for (;;) {
		ssize_t n = weft_conn_recv(c, buf, sizeof buf);
		if (n <= 0 || (use_connsys ? weft_send(fd, buf, (size_t)n, 0)
					   : weft_conn_send(c, buf, (size_t)n)) != n)
			break;
	}
	weft_conn_close(c);
	return NULL;
}

/* Accept until cancelled; each connection gets a detached fiber. */
static void *accept_loop(void *arg)
{
	int lfd = (int)(intptr_t)arg;
	weft_listener *l = use_conn ? weft_listener_open(lfd, NULL) : NULL;
	for (;;) {
		int fd = l ? weft_listener_accept(l, NULL, NULL)
			   : weft_accept(lfd, NULL, NULL);
		if (fd == -EMFILE || fd == -ENFILE) {
			weft_sleep(10 * 1000000); /* out of fds: wait, go on */
			continue;
		}
		if (fd < 0)
			break; /* cancelled (a stop signal), or the listener died */
		weft_task *t = weft_spawn(serve, (void *)(intptr_t)fd);
		if (t)
			weft_detach(t);
		else
			close(fd);
	}
	if (l)
		weft_listener_close(l); /* closes lfd */
	else
		close(lfd);
	return NULL;
}

/* SIGINT and SIGTERM stop the server (asyncio's add_signal_handler,
 * tokio::signal): caught from main_fiber's weft_signal_watch on, waited
 * for by a fiber of their own. */
static const int stop_signals[] = {SIGINT, SIGTERM};

static void *stop_waiter(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)weft_signal_wait(stop_signals, 2);
}

static void *main_fiber(void *arg)
{
	uint16_t port = (uint16_t)(uintptr_t)arg;
	int lfd = weft_tcp_listen(NULL, port, 4096);
	if (lfd < 0) {
		fprintf(stderr, "listen: %s\n", weft_strerror(lfd));
		return (void *)1;
	}
	struct sockaddr_storage sa; /* port 0 picked a free port: which? */
	socklen_t len = sizeof sa;
	if (getsockname(lfd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.ss_family == AF_INET6
				     ? ((struct sockaddr_in6 *)&sa)->sin6_port
				     : ((struct sockaddr_in *)&sa)->sin_port);
	/* before the port is announced: a SIGTERM from then on stops us */
	int w = weft_signal_watch(stop_signals, 2);
	if (w < 0) {
		fprintf(stderr, "weft_signal_watch: %s\n", weft_strerror(w));
		close(lfd);
		return (void *)1;
	}
	fprintf(stderr, "echo_server: port %u, %u workers\n", port,
		weft_worker_count());
	weft_task *t[2] = {weft_spawn(accept_loop, (void *)(intptr_t)lfd),
			   weft_spawn(stop_waiter, NULL)};
	if (!t[0])
		close(lfd);
	/* whichever ends first (asyncio.wait FIRST_COMPLETED): a stop
	 * signal, or the acceptor, whose listener failed */
	int first = t[0] && t[1] ? weft_wait_any(t, 2) : -ENOMEM;
	void *sig = (void *)(intptr_t)-ENOMEM;
	for (int i = 0; i < 2; i++) {
		if (!t[i])
			continue;
		weft_cancel(t[i]);
		weft_join(t[i], i ? &sig : NULL);
	}
	/* the connections' fibers are cancelled when this function returns
	 * (weft_run): they close their sockets and end */
	if (first != 1 || (intptr_t)sig < 0) {
		fprintf(stderr, "echo_server: %s\n",
			first == 0 ? "the listener failed"
				   : weft_strerror((int)(intptr_t)sig));
		return (void *)1;
	}
	fprintf(stderr, "echo_server: %s, stopped\n",
		strsignal((int)(intptr_t)sig));
	return NULL;
}

int main(int argc, char **argv)
{
	char *end = NULL;
	long port = argc > 1 ? strtol(argv[1], &end, 10) : 7000;
	if (argc > 2) {
		use_conn = strcmp(argv[2], "recv") != 0;
		use_connsys = strcmp(argv[2], "connsys") == 0;
	}
	if ((end && (end == argv[1] || *end)) || port < 0 || port > 65535 ||
	    (argc > 2 && strcmp(argv[2], "recv") && strcmp(argv[2], "conn") &&
	     strcmp(argv[2], "connsys"))) {
		fprintf(stderr, "usage: echo_server [PORT [conn|connsys|recv]]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	void *res = NULL;
	int r = weft_run(NULL, main_fiber, (void *)(uintptr_t)port, &res);
	if (r < 0)
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
	return r < 0 || res;
}
