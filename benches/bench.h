/* bench.h — shared by the weft benchmarks: timing and the RESULT line. */
#ifndef WEFT_BENCH_H
#define WEFT_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <weft.h>

static inline double bench_secs(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void bench_result(const char *name, unsigned long long n,
				double secs)
{
	printf("RESULT name=%s impl=weft n=%llu secs=%.6f\n", name, n, secs);
	fflush(stdout);
}

/* spawn_many, spawn_wg: every fiber i stored 2*i in out[i]; report the
 * result line if so. Returns main's exit status. */
static inline int bench_report_doubles(const char *name,
				       const unsigned long long *out,
				       unsigned long long n, double secs)
{
	unsigned long long sum = 0;
	for (unsigned long long i = 0; i < n; i++)
		sum += out[i];
	if (sum != n * (n - 1)) {
		fprintf(stderr, "%s: wrong sum %llu\n", name, sum);
		return 1;
	}
	bench_result(name, n, secs);
	return 0;
}

static inline unsigned long long bench_arg(int argc, char **argv,
					   unsigned long long def)
{
	return argc > 1 ? strtoull(argv[1], NULL, 10) : def;
}

/* run main_fn under the default config (WEFT_WORKERS respected) */
static inline void bench_run(void *(*main_fn)(void *), void *arg)
{
	int r = weft_run(NULL, main_fn, arg, NULL);
	if (r < 0) {
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
		exit(1);
	}
}

/* From a fiber: run fn(NULL) in n fibers (n <= 64) at once; returns the
 * seconds from the first spawn to the last join. */
static inline double bench_fanout(void *(*fn)(void *), int n)
{
	weft_task *t[64];
	double t0 = bench_secs();
	for (int i = 0; i < n && i < 64; i++)
		if (!(t[i] = weft_spawn(fn, NULL)))
			abort();
	for (int i = 0; i < n && i < 64; i++)
		weft_join(t[i], NULL);
	return bench_secs() - t0;
}

#endif
