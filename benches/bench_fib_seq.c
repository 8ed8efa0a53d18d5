/* fib_seq: plain recursive fib(n) in C, the baseline for fib. */
#include "bench.h"

static unsigned long long __attribute__((noinline)) fib(unsigned long long n)
{
	return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

int main(int argc, char **argv)
{
	unsigned long long n = bench_arg(argc, argv, 30);
	volatile unsigned long long vn = n;
	double t0 = bench_secs();
	unsigned long long r = fib(vn);
	double secs = bench_secs() - t0;
	if (r != 832040 && n == 30)
		return 1;
	bench_result("fib_seq", n, secs);
	return 0;
}
