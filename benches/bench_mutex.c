/* mutex: 8 fibers take one weft_mutex N times in all and bump a plain
 * counter inside; n = acquisitions; the count must be exact. */
#include "bench.h"

#define F 8

static unsigned long long N, counter;
static double secs;
static weft_mutex mu = WEFT_MUTEX_INIT;

static void *worker(void *arg)
{
	(void)arg;
	for (unsigned long long i = 0; i < N / F; i++) {
		if (weft_mutex_lock(&mu))
			abort();
		counter++;
		weft_mutex_unlock(&mu);
	}
	return NULL;
}

static void *run(void *arg)
{
	(void)arg;
	secs = bench_fanout(worker, F);
	return NULL;
}

int main(int argc, char **argv)
{
	N = bench_arg(argc, argv, 1000000) / F * F;
	bench_run(run, NULL);
	if (counter != N) {
		fprintf(stderr, "mutex: count %llu, want %llu\n", counter, N);
		return 1;
	}
	bench_result("mutex", N, secs);
	return 0;
}
