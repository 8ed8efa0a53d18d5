/* rwlock: 8 fibers share one weft_rwlock over 8 plain longs, n/8
 * operations each; every 10th is a write (wrlock, bump all 8), the rest
 * reads (rdlock, sum all 8: they must agree); n = lock/unlock pairs. At
 * the end every field must equal the number of writes. */
#include <stdatomic.h>

#include "bench.h"

#define F 8      /* fibers */
#define D 8      /* fields */
#define EVERY 10 /* one write in EVERY operations */

static unsigned long long N;
static double secs;
static weft_rwlock rw = WEFT_RWLOCK_INIT;
static long data[D];
static _Atomic unsigned long long torn; /* reads that saw a half write */

static void *worker(void *arg)
{
	(void)arg;
	for (unsigned long long i = 0; i < N / F; i++) {
		if (i % EVERY == EVERY - 1) {
			if (weft_rwlock_wrlock(&rw))
				abort();
			for (int k = 0; k < D; k++)
				data[k]++;
			weft_rwlock_unlock(&rw);
		} else {
			long sum = 0;
			if (weft_rwlock_rdlock(&rw))
				abort();
			for (int k = 0; k < D; k++)
				sum += data[k];
			if (sum != D * data[0])
				torn++;
			weft_rwlock_unlock(&rw);
		}
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
	long writes = (long)(N / F / EVERY * F);
	bench_run(run, NULL);
	if (torn) {
		fprintf(stderr, "rwlock: %llu torn reads\n",
			(unsigned long long)torn);
		return 1;
	}
	for (int k = 0; k < D; k++)
		if (data[k] != writes) {
			fprintf(stderr, "rwlock: field %d is %ld, want %ld\n",
				k, data[k], writes);
			return 1;
		}
	bench_result("rwlock", N, secs);
	return 0;
}
