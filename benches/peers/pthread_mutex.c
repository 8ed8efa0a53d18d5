/* pthread_mutex: the "mutex" workload with OS threads — 8 pthreads take one
 * pthread_mutex_t N times in all and bump a plain counter inside; n =
 * acquisitions (rounded down to a multiple of 8); the count must be exact.
 * Timed: creating the threads through joining them, as in bench_mutex.c.
 * WEFT_WORKERS does not apply: there are always 8 threads.
 *
 * Built by benches/run.sh:  cc -O2 -pthread pthread_mutex.c -o pthread-mutex
 * Usage: pthread-mutex [N]    (default 1000000)
 * Prints: RESULT name=mutex impl=pthread n=<N> secs=<S> */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define F 8

static unsigned long long N, counter;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

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
		if (pthread_mutex_lock(&mu))
			abort();
		counter++;
		pthread_mutex_unlock(&mu);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t[F];
	int err;

	N = (argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000) / F * F;
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
	if (counter != N) {
		fprintf(stderr, "mutex: count %llu, want %llu\n", counter, N);
		return 1;
	}
	printf("RESULT name=mutex impl=pthread n=%llu secs=%.6f\n", N, secs);
	return 0;
}
