/* 08_echo.c — the Python tour, finale 2: an echo server under load.
 *
 * The server is examples/echo_server.c's: one fiber per connection, recv
 * then send back, through each worker's io_uring. Its clients run in the
 * same process: C fibers, each keeping one 64-byte message in flight over
 * its own TCP connection to 127.0.0.1 for a few seconds. It prints the
 * round trips per second, the CPU the process used (in cores) and the
 * share of the echoes each worker served: every core is busy.
 *
 *     08_echo [SECONDS [CONNECTIONS]]      (default 2 s, 50 connections)
 */
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <weft.h>

#define MAX_WORKERS 64
#define MSG 64

static struct {
	atomic_ulong n;
	char pad[64 - sizeof(atomic_ulong)];
} echoed[MAX_WORKERS]; /* messages echoed, per worker */
static atomic_ulong round_trips, errors;
static uint16_t port;
static uint64_t deadline;
static unsigned nworkers;

/* the server side: examples/echo_server.c, counting */
static void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[4096];
	for (;;) {
		ssize_t n = weft_recv(fd, buf, sizeof buf, 0);
		if (n <= 0 || weft_send(fd, buf, (size_t)n, 0) != n)
			break;
		atomic_fetch_add_explicit(&echoed[weft_worker_id() % MAX_WORKERS].n,
					  1, memory_order_relaxed);
	}
	weft_close(fd);
	return NULL;
}

static void *acceptor(void *arg)
{
	int lfd = (int)(intptr_t)arg;
	for (;;) {
		int fd = weft_accept(lfd, NULL, NULL);
		if (fd < 0)
			break; /* cancelled: the run is over */
		weft_task *t = weft_spawn(serve, (void *)(intptr_t)fd);
		if (t)
			weft_detach(t);
		else
			close(fd);
	}
	return NULL;
}

/* a client: send a message, read the whole echo, check it, again; every
 * wait under a deadline scope one second past the run's end (asyncio's
 * `async with asyncio.timeout(...)`), so that a server that never answers
 * (its fiber could not start) is an error, not a hang */
static void *client(void *arg)
{
	char out[MSG], in[MSG];
	unsigned long n = 0;
	weft_deadline d;
	weft_deadline_push_at(&d, deadline + 1000000000ull);
	const char *what = "connect";
	ssize_t r = weft_tcp_connect("127.0.0.1", port);
	int fd = (int)r;
	if (fd < 0)
		goto fail;
	while (weft_now() < deadline) {
		memset(out, (int)(n & 0xff), sizeof out);
		what = "send";
		if ((r = weft_send(fd, out, MSG, 0)) != MSG)
			goto fail;
		what = "recv";
		for (size_t got = 0; got < MSG; got += (size_t)r)
			if ((r = weft_recv(fd, in + got, MSG - got, 0)) <= 0)
				goto fail;
		what = "echo";
		if (memcmp(in, out, MSG)) {
			r = 0; /* not what was sent */
			goto fail;
		}
		n++;
	}
	atomic_fetch_add(&round_trips, n);
	weft_close(fd);
	weft_deadline_pop(&d);
	return NULL;
fail: /* r: a negative errno, 0 (the server closed) or a short count */
	fprintf(stderr, "client %s: %s\n", what,
		r < 0 ? weft_strerror((int)r) : "the server closed or sent garbage");
	atomic_fetch_add(&errors, 1);
	atomic_fetch_add(&round_trips, n);
	if (fd >= 0)
		weft_close(fd);
	weft_deadline_pop(&d);
	return NULL;
}

static double secs_arg = 2;
static long conns = 50;

static void *main_fiber(void *arg)
{
	nworkers = weft_worker_count();
	int lfd = weft_tcp_listen("127.0.0.1", 0, 4096);
	if (lfd < 0) {
		fprintf(stderr, "listen: %s\n", weft_strerror(lfd));
		return (void *)1;
	}
	struct sockaddr_in sa;
	socklen_t len = sizeof sa;
	getsockname(lfd, (struct sockaddr *)&sa, &len);
	port = ntohs(sa.sin_port);
	void *ret = NULL;
	weft_task *acc = weft_spawn(acceptor, (void *)(intptr_t)lfd);
	weft_task **cl = calloc((size_t)conns, sizeof *cl);
	if (!acc || !cl) {
		fprintf(stderr, "%s: out of memory\n", acc ? "calloc" : "weft_spawn");
		ret = (void *)1;
		goto out;
	}
	deadline = weft_now() + (uint64_t)(secs_arg * 1e9);
	long i;
	for (i = 0; i < conns; i++)
		if (!(cl[i] = weft_spawn(client, NULL)))
			break;
	if (i < conns) {
		fprintf(stderr, "weft_spawn: out of memory\n");
		ret = (void *)1;
	}
	int r = weft_gather(cl, (size_t)i, NULL); /* the clients that started */
	if (r < 0) { /* e.g. -ENOMEM: a client never ran */
		fprintf(stderr, "weft_gather: %s\n", weft_strerror(r));
		ret = (void *)1;
	}
out:
	free(cl);
	if (acc) {
		weft_cancel(acc); /* its accept returns -ECANCELED */
		weft_join(acc, NULL);
	}
	weft_close(lfd);
	return ret;
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		secs_arg = strtod(argv[1], NULL);
	if (argc > 2)
		conns = strtol(argv[2], NULL, 10);
	if (!(secs_arg > 0 && secs_arg <= 600) || conns < 1 || conns > 10000) {
		fprintf(stderr, "usage: 08_echo [SECONDS [CONNECTIONS]]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	double c0 = cpu_s(), t0 = (double)weft_now() * 1e-9;
	void *res = NULL;
	int r = weft_run(NULL, main_fiber, NULL, &res);
	double wall = (double)weft_now() * 1e-9 - t0, cpu = cpu_s() - c0;
	if (r < 0)
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
	if (r < 0 || res) /* res: main_fiber said why */
		return 1;
	unsigned long total = 0, rt = atomic_load(&round_trips);
	for (unsigned w = 0; w < MAX_WORKERS; w++)
		total += atomic_load(&echoed[w].n);
	printf("echo: %ld connections, %d-byte messages, %.1f s, server and "
	       "clients in this process\n", conns, MSG, secs_arg);
	printf("  %u workers: %lu round trips/s, CPU busy %.2f cores, errors "
	       "%lu; echoes served per worker:", nworkers,
	       (unsigned long)(rt / secs_arg), cpu / wall,
	       atomic_load(&errors));
	for (unsigned w = 0; w < nworkers && w < MAX_WORKERS; w++)
		printf(" %.0f%%", total ? 100.0 * (double)atomic_load(&echoed[w].n) /
					  (double)total : 0.0);
	printf("\n");
	return atomic_load(&errors) != 0 || rt == 0;
}
