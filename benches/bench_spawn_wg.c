/* spawn_wg: spawn_many as Go's peer does it: N detached fibers that each
 * store 2*i and count down a wait group, which the spawner waits on. No
 * join handles: a fiber's task is recycled as it ends, as Go recycles a
 * goroutine (spawn_many keeps all N tasks until they are joined). */
#include "bench.h"

static unsigned long long N;
static unsigned long long *out;
static weft_wg wg;
static double secs;

static void *leaf(void *arg)
{
	unsigned long long i = (unsigned long long)(uintptr_t)arg;
	out[i] = 2 * i;
	weft_wg_done(&wg);
	return NULL;
}

static void *run(void *arg)
{
	(void)arg;
	double t0 = bench_secs();
	weft_wg_init(&wg);
	if (weft_wg_add(&wg, (long)N))
		abort();
	for (unsigned long long i = 0; i < N; i++) {
		weft_task *t = weft_spawn(leaf, (void *)(uintptr_t)i);
		if (!t)
			abort();
		weft_detach(t);
	}
	if (weft_wg_wait(&wg))
		abort();
	secs = bench_secs() - t0;
	return NULL;
}

int main(int argc, char **argv)
{
	N = bench_arg(argc, argv, 1000000);
	out = calloc(N, sizeof *out);
	bench_run(run, NULL);
	return bench_report_doubles("spawn_wg", out, N, secs);
}
