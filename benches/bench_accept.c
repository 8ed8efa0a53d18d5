/* accept: connection churn on 127.0.0.1. 16 client fibers connect, wait
 * for the server to close, close, and go again; the server accepts and
 * closes at once, with weft_accept (one SQE per connection) or a
 * weft_listener (one multishot accept). n = connections.
 *
 *     bench_accept [N [accept|listener]]     (default 20000, both)
 *
 * Prints one RESULT line per mode, name=accept_oneshot / accept_multishot,
 * plus the process CPU time per connection (both ends run here). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

#define CLIENTS 16

static unsigned long long N;
static int use_listener;
static int lfd;
static uint16_t port;
static _Atomic unsigned long long started;
static double secs;

static void *client(void *arg)
{
	(void)arg;
	char b;
	while (atomic_fetch_add(&started, 1) < N) {
		int fd = weft_tcp_connect("127.0.0.1", port);
		if (fd < 0) {
			fprintf(stderr, "connect: %s\n", weft_strerror(fd));
			abort();
		}
		weft_recv(fd, &b, 1, 0); /* 0: the server closed */
		close(fd);
	}
	return NULL;
}

static void *server(void *arg)
{
	(void)arg;
	weft_listener *l = use_listener ? weft_listener_open(dup(lfd), NULL)
					: NULL;
	for (unsigned long long i = 0; i < N; i++) {
		int fd = l ? weft_listener_accept(l, NULL, NULL)
			   : weft_accept(lfd, NULL, NULL);
		if (fd < 0) {
			fprintf(stderr, "accept: %s\n", weft_strerror(fd));
			abort();
		}
		close(fd);
	}
	if (l)
		weft_listener_close(l);
	return NULL;
}

static void *run(void *arg)
{
	(void)arg;
	lfd = weft_tcp_listen("127.0.0.1", 0, 4096);
	struct sockaddr_in sa;
	socklen_t len = sizeof sa;
	getsockname(lfd, (struct sockaddr *)&sa, &len);
	port = ntohs(sa.sin_port);
	atomic_store(&started, 0);
	double t0 = bench_secs();
	weft_task *s = weft_spawn(server, NULL);
	weft_task *c[CLIENTS];
	for (int i = 0; i < CLIENTS; i++)
		c[i] = weft_spawn(client, NULL);
	weft_gather(c, CLIENTS, NULL);
	weft_join(s, NULL);
	secs = bench_secs() - t0;
	close(lfd);
	return NULL;
}

static double cpu_secs(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

int main(int argc, char **argv)
{
	N = bench_arg(argc, argv, 20000);
	const char *mode = argc > 2 ? argv[2] : "both";
	for (int m = 0; m < 2; m++) {
		if (strcmp(mode, "both") && strcmp(mode, m ? "listener" : "accept"))
			continue;
		use_listener = m;
		double c0 = cpu_secs();
		bench_run(run, NULL);
		double cpu = cpu_secs() - c0;
		bench_result(m ? "accept_multishot" : "accept_oneshot", N, secs);
		printf("# %s: %.2f us CPU per connection (both ends)\n",
		       m ? "multishot" : "oneshot", cpu * 1e6 / (double)N);
	}
	return 0;
}
