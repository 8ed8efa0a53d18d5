/* chan_pingpong: two fibers bounce a counter over two rendezvous channels;
 * n = round trips. */
#include "bench.h"

static unsigned long long N;
static double secs;
static weft_chan *ping, *pong;

static void *ponger(void *arg)
{
	(void)arg;
	unsigned long long x;
	while (weft_chan_recv(ping, &x) == 0) {
		x++;
		if (weft_chan_send(pong, &x))
			break;
	}
	return NULL;
}

static void *run(void *arg)
{
	(void)arg;
	ping = weft_chan_new(0, sizeof(unsigned long long));
	pong = weft_chan_new(0, sizeof(unsigned long long));
	weft_task *t = weft_spawn(ponger, NULL);
	unsigned long long x = 0;
	double t0 = bench_secs();
	for (unsigned long long i = 0; i < N; i++) {
		if (weft_chan_send(ping, &x) || weft_chan_recv(pong, &x))
			abort();
	}
	secs = bench_secs() - t0;
	if (x != N)
		abort();
	weft_chan_close(ping);
	weft_join(t, NULL);
	weft_chan_free(ping);
	weft_chan_free(pong);
	return NULL;
}

int main(int argc, char **argv)
{
	N = bench_arg(argc, argv, 1000000);
	bench_run(run, NULL);
	bench_result("chan_pingpong", N, secs);
	return 0;
}
