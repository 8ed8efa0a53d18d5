/* spawn_many: spawn N fibers that each store 2*i, then join them all. */
#include <string.h>

#include "bench.h"

static unsigned long long N;
static unsigned long long *out;
static weft_task **tasks;
static double secs;

static void *leaf(void *arg)
{
	unsigned long long i = (unsigned long long)(uintptr_t)arg;
	out[i] = 2 * i;
	return NULL;
}

static void *run(void *arg)
{
	(void)arg;
	double t0 = bench_secs();
	for (unsigned long long i = 0; i < N; i++)
		if (!(tasks[i] = weft_spawn(leaf, (void *)(uintptr_t)i)))
			abort();
	for (unsigned long long i = 0; i < N; i++)
		if (weft_join(tasks[i], NULL))
			abort();
	secs = bench_secs() - t0;
	return NULL;
}

int main(int argc, char **argv)
{
	N = bench_arg(argc, argv, 1000000);
	out = calloc(N, sizeof *out);
	tasks = calloc(N, sizeof *tasks);
	/* the handle array is harness (Go's WaitGroup needs none): fault it
	 * in before timing; `out` is left cold, as Go's results slice is */
	memset(tasks, 0, N * sizeof *tasks);
	bench_run(run, NULL);
	return bench_report_doubles("spawn_many", out, N, secs);
}
