/* 07_fork_join.c — the Python tour, finale 1: fork-join on every core.
 *
 * fib(n) the naive way, one fiber per call: spawn fib(n-1), compute
 * fib(n-2) here, join. Millions of fibers; the idle worker steals half of
 * the busy one's queue, and both cores stay busy. Run on one worker, then
 * on all of them (one per CPU; WEFT_WORKERS overrides), with the time, the
 * speed-up, how many cores' worth of CPU time the process used, and the
 * share of the calls each worker ran. asyncio cannot do this: one thread, one core, and a
 * task costs microseconds, not nanoseconds.
 *
 *     07_fork_join [N]                     (default 30)
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <weft.h>

#define MAX_WORKERS 64

/* one counter per worker, each on its own cache line */
static struct {
	atomic_ulong fibers;
	char pad[64 - sizeof(atomic_ulong)];
} ran_on[MAX_WORKERS];

/* the first error of a run (a negative errno), 0 if none */
static atomic_int fib_err;

/* the benchmark's fib (benches/bench_fib.c), counting who ran each call;
 * a spawn or join that fails (out of memory) is recorded in fib_err */
static void *fib(void *arg)
{
	uintptr_t n = (uintptr_t)arg;
	atomic_fetch_add_explicit(&ran_on[weft_worker_id() % MAX_WORKERS].fibers,
				  1, memory_order_relaxed);
	if (n < 2)
		return (void *)n;
	weft_task *t = weft_spawn(fib, (void *)(n - 1));
	int err = t ? 0 : -ENOMEM;
	uintptr_t b = (uintptr_t)fib((void *)(n - 2));
	void *a = NULL;
	if (t)
		err = weft_join(t, &a);
	if (err < 0) {
		int none = 0;
		atomic_compare_exchange_strong(&fib_err, &none, err);
	}
	return (void *)((uintptr_t)a + b);
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static uintptr_t n, result;
static unsigned nworkers;

static void *main_fiber(void *arg)
{
	nworkers = weft_worker_count();
	result = (uintptr_t)fib((void *)n);
	return NULL;
}

/* returns the wall time, or -1 */
static double run(unsigned workers)
{
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = workers;
	for (int w = 0; w < MAX_WORKERS; w++)
		atomic_store(&ran_on[w].fibers, 0);
	atomic_store(&fib_err, 0);
	double c0 = cpu_s(), t0 = (double)weft_now() * 1e-9;
	int r = weft_run(&cfg, main_fiber, NULL, NULL);
	double wall = (double)weft_now() * 1e-9 - t0, cpu = cpu_s() - c0;
	if (r < 0) {
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
		return -1;
	}
	if (atomic_load(&fib_err) < 0) { /* a call did not run: no result */
		fprintf(stderr, "fib: %s\n", weft_strerror(atomic_load(&fib_err)));
		return -1;
	}
	unsigned long total = 0;
	for (int w = 0; w < MAX_WORKERS; w++)
		total += atomic_load(&ran_on[w].fibers);
	printf("  %u worker%s: fib(%u) = %lu in %.3f s, CPU busy %.2f cores; "
	       "calls run per worker:", nworkers,
	       nworkers > 1 ? "s" : " ", (unsigned)n, (unsigned long)result,
	       wall, cpu / wall);
	for (unsigned w = 0; w < nworkers && w < MAX_WORKERS; w++)
		printf(" %.0f%%", 100.0 * (double)atomic_load(&ran_on[w].fibers) /
					  (double)total);
	printf("\n");
	return wall;
}

int main(int argc, char **argv)
{
	n = argc > 1 ? strtoul(argv[1], NULL, 10) : 30;
	if (n < 2 || n > 40) {
		fprintf(stderr, "usage: 07_fork_join [N], 2 <= N <= 40\n");
		return 2;
	}
	uintptr_t fn = 0, fn1 = 1; /* fib(n), fib(n+1) */
	for (uintptr_t k = 0; k < n; k++) {
		uintptr_t f = fn + fn1;
		fn = fn1;
		fn1 = f;
	}
	/* calls: 2 fib(n+1) - 1; spawns (calls with n >= 2): fib(n+1) - 1 */
	printf("fork-join: fib(%u), %lu calls, %lu of them spawned as fibers\n",
	       (unsigned)n, (unsigned long)(2 * fn1 - 1),
	       (unsigned long)(fn1 - 1));
	double one = run(1);
	if (one < 0)
		return 1;
	if (result != fn)
		goto wrong;
	double all = run(0);
	if (all < 0)
		return 1;
	if (result != fn)
		goto wrong;
	printf("  speed-up with %u workers: %.2fx\n", nworkers, one / all);
	return 0;
wrong:
	fprintf(stderr, "fib(%u): got %lu, want %lu\n", (unsigned)n,
		(unsigned long)result, (unsigned long)fn);
	return 1;
}
