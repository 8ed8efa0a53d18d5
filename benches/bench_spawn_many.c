/* spawn_many: spawn N fibers that each store 2*i, then join them all.
 * bench_spawn_many [N [ROUNDS]]: with ROUNDS > 1 the same is done ROUNDS
 * times in one run and secs is the median of rounds 2..ROUNDS: spawns that
 * reuse the tasks the joins freed (a server's bursts), not fresh memory. */
#include <string.h>

#include "bench.h"

static unsigned long long N, ROUNDS;
static unsigned long long *out;
static weft_task **tasks;
static double secs;

static void *leaf(void *arg)
{
	unsigned long long i = (unsigned long long)(uintptr_t)arg;
	out[i] = 2 * i;
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static void *run(void *arg)
{
	(void)arg;
	double t[64];
	for (unsigned long long r = 0; r < ROUNDS; r++) {
		double t0 = bench_secs();
		for (unsigned long long i = 0; i < N; i++)
			if (!(tasks[i] = weft_spawn(leaf, (void *)(uintptr_t)i)))
				abort();
		for (unsigned long long i = 0; i < N; i++)
			if (weft_join(tasks[i], NULL))
				abort();
		t[r] = bench_secs() - t0;
	}
	if (ROUNDS == 1) {
		secs = t[0];
	} else {
		qsort(t + 1, ROUNDS - 1, sizeof t[0], cmp_double);
		secs = t[1 + (ROUNDS - 2) / 2];
	}
	return NULL;
}

int main(int argc, char **argv)
{
	N = bench_arg(argc, argv, 1000000);
	ROUNDS = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
	if (ROUNDS < 1 || ROUNDS > 64) {
		fprintf(stderr, "spawn_many: ROUNDS must be 1..64\n");
		return 2;
	}
	out = calloc(N, sizeof *out);
	tasks = calloc(N, sizeof *tasks);
	/* the handle array is harness (Go's WaitGroup needs none): fault it
	 * in before timing; `out` is left cold, as Go's results slice is */
	memset(tasks, 0, N * sizeof *tasks);
	bench_run(run, NULL);
	return bench_report_doubles("spawn_many", out, N, secs);
}
