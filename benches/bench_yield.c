/* yield: two fibers on one worker each yield N times; n = total yields. */
#include "bench.h"

static unsigned long long N;
static double secs;

static void *yielder(void *arg)
{
	for (unsigned long long i = 0; i < N; i++)
		weft_yield();
	return NULL;
}

static void *run(void *arg)
{
	(void)arg;
	double t0 = bench_secs();
	weft_task *a = weft_spawn(yielder, NULL);
	weft_task *b = weft_spawn(yielder, NULL);
	weft_join(a, NULL);
	weft_join(b, NULL);
	secs = bench_secs() - t0;
	return NULL;
}

int main(int argc, char **argv)
{
	N = bench_arg(argc, argv, 1000000);
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 1; /* a yield between two fibers on one worker */
	if (weft_run(&cfg, run, NULL, NULL) < 0)
		return 1;
	bench_result("yield", 2 * N, secs);
	return 0;
}
