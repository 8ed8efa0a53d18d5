/* fib: fork-join fib(n): spawn fib(n-1), compute fib(n-2) inline, join. */
#include "bench.h"

static void *fib(void *arg)
{
	uintptr_t n = (uintptr_t)arg;
	if (n < 2)
		return (void *)n;
	weft_task *t = weft_spawn(fib, (void *)(n - 1));
	if (!t)
		abort();
	uintptr_t b = (uintptr_t)fib((void *)(n - 2));
	void *a;
	if (weft_join(t, &a))
		abort();
	return (void *)((uintptr_t)a + b);
}

static unsigned long long N, res;
static double secs;

static void *run(void *arg)
{
	(void)arg;
	double t0 = bench_secs();
	res = (uintptr_t)fib((void *)(uintptr_t)N);
	secs = bench_secs() - t0;
	return NULL;
}

static unsigned long long fib_iter(unsigned long long n)
{
	unsigned long long a = 0, b = 1;
	while (n--) {
		unsigned long long c = a + b;
		a = b;
		b = c;
	}
	return a;
}

int main(int argc, char **argv)
{
	N = bench_arg(argc, argv, 30);
	bench_run(run, NULL);
	if (res != fib_iter(N)) {
		fprintf(stderr, "fib: wrong result %llu\n", res);
		return 1;
	}
	bench_result("fib", N, secs);
	return 0;
}
