/* pthread_rwlock: the "rwlock" workload with OS threads — 8 pthreads share
 * one pthread_rwlock_t over 8 plain longs, N/8 operations each (N rounded
 * down to a multiple of 8); every 10th is a write (wrlock, bump all 8), the
 * rest reads (rdlock, sum all 8: they must agree); n = lock/unlock pairs.
 * At the end every field must equal the number of writes. The lock has the
 * default attributes (glibc: readers preferred, unlike weft's FIFO).
 * Timed: creating the threads through joining them, as in bench_rwlock.c.
 * WEFT_WORKERS does not apply: there are always 8 threads.
 *
 * Built by benches/run.sh:  cc -O2 -pthread pthread_rwlock.c -o pthread-rwlock
 * Usage: pthread-rwlock [N]    (default 1000000)
 * Prints: RESULT name=rwlock impl=pthread n=<N> secs=<S> */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define F 8      /* threads */
#define D 8      /* fields */
#define EVERY 10 /* one write in EVERY operations */

static unsigned long long N;
static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
static long data[D];
static _Atomic unsigned long long torn; /* reads that saw a half write */

static double now_secs(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *worker(void *arg)
{
	(void)arg;
	for (unsigned long long i = 0; i < N / F; i++) {
		if (i % EVERY == EVERY - 1) {
			if (pthread_rwlock_wrlock(&rw))
				abort();
			for (int k = 0; k < D; k++)
				data[k]++;
			pthread_rwlock_unlock(&rw);
		} else {
			long sum = 0;
			if (pthread_rwlock_rdlock(&rw))
				abort();
			for (int k = 0; k < D; k++)
				sum += data[k];
			if (sum != D * data[0])
				torn++;
			pthread_rwlock_unlock(&rw);
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t[F];
	int err;

	N = (argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000) / F * F;
	long writes = (long)(N / F / EVERY * F);
	double t0 = now_secs();
	for (int i = 0; i < F; i++) {
		if ((err = pthread_create(&t[i], NULL, worker, NULL))) {
			fprintf(stderr, "pthread_create: %s\n", strerror(err));
			return 1;
		}
	}
	for (int i = 0; i < F; i++)
		pthread_join(t[i], NULL);
	double secs = now_secs() - t0;
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
	printf("RESULT name=rwlock impl=pthread n=%llu secs=%.6f\n", N, secs);
	return 0;
}
