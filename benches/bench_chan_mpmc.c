/* chan_mpmc: 4 producers and 4 consumers over one buffered channel
 * (capacity 1024); n = elements; every element is checked by sum.
 * An optional second argument W gives each side W multiply-adds of work
 * per element (a pipeline that computes; reported as chan_mpmc_wW). */
#include <stdatomic.h>

#include "bench.h"

#define P 4
#define C 4

static unsigned long long N;
static unsigned W; /* work per element on each side */

/* W dependent multiply-adds the compiler cannot drop */
static unsigned long long work(unsigned long long x)
{
	for (unsigned k = 0; k < W; k++)
		x = x * 6364136223846793005ull + 1442695040888963407ull;
	return x;
}
static _Atomic unsigned long long sink;
static double secs;
static weft_chan *ch;
static _Atomic unsigned long long got_sum, got_n;

static void *producer(void *arg)
{
	unsigned long long id = (uintptr_t)arg;
	unsigned long long z = 0;
	for (unsigned long long i = id; i < N; i += P) {
		z += work(i);
		if (weft_chan_send(ch, &i))
			abort();
	}
	atomic_fetch_add(&sink, z);
	return NULL;
}

static void *consumer(void *arg)
{
	(void)arg;
	unsigned long long x, s = 0, n = 0, z = 0;
	while (weft_chan_recv(ch, &x) == 0) {
		z += work(x);
		s += x;
		n++;
	}
	atomic_fetch_add(&sink, z);
	atomic_fetch_add(&got_sum, s);
	atomic_fetch_add(&got_n, n);
	return NULL;
}

static void *run(void *arg)
{
	(void)arg;
	ch = weft_chan_new(1024, sizeof(unsigned long long));
	weft_task *p[P], *c[C];
	double t0 = bench_secs();
	for (int i = 0; i < C; i++)
		c[i] = weft_spawn(consumer, NULL);
	for (int i = 0; i < P; i++)
		p[i] = weft_spawn(producer, (void *)(uintptr_t)i);
	for (int i = 0; i < P; i++)
		weft_join(p[i], NULL);
	weft_chan_close(ch);
	for (int i = 0; i < C; i++)
		weft_join(c[i], NULL);
	secs = bench_secs() - t0;
	weft_chan_free(ch);
	return NULL;
}

int main(int argc, char **argv)
{
	N = bench_arg(argc, argv, 4000000);
	W = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 0;
	bench_run(run, NULL);
	if (got_n != N || got_sum != N * (N - 1) / 2) {
		fprintf(stderr, "chan_mpmc: lost elements (%llu of %llu)\n",
			(unsigned long long)got_n, N);
		return 1;
	}
	char name[32];
	snprintf(name, sizeof name, W ? "chan_mpmc_w%u" : "chan_mpmc", W);
	bench_result(name, N, secs);
	return 0;
}
