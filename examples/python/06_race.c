/* 06_race.c — the Python tour, part f: a shared counter on two workers.
 *
 * Two fibers each add 1 to a shared counter N times. Under asyncio this is
 * always exact: one thread runs one coroutine at a time and `counter += 1`
 * has no await in it. Here the two fibers run at the same time on two
 * cores, and `counter++` (load, add, store) from both loses updates: a real
 * data race, undefined behaviour in C. Guard shared data with a weft_mutex
 * (asyncio.Lock, but it excludes other cores too), an atomic, or keep it in
 * one fiber and send it messages over a channel.
 *
 * A ThreadSanitizer build would rightly report the race and stop, so there
 * the racy part is left out.
 *
 *     06_race [N]                          (default 2,000,000 per fiber)
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

static long n_per_fiber = 2000000;
#ifndef UNDER_TSAN
static volatile long racy;        /* plain memory: the data race */
#endif
static long locked;               /* only touched under `lock` */
static weft_mutex lock = WEFT_MUTEX_INIT;
static atomic_long atomic_count;

struct adder {
	void (*add)(void);
	unsigned workers; /* bit w: ran on worker w */
};

#ifndef UNDER_TSAN
static void add_racy(void)
{
	racy++; /* load, add, store: the other core's store can fall between */
}
#endif

static void add_locked(void)
{
	if (weft_mutex_lock(&lock) < 0)
		return; /* cancelled: not counted (nothing cancels it here) */
	locked++;
	weft_mutex_unlock(&lock);
}

static void add_atomic(void)
{
	atomic_fetch_add_explicit(&atomic_count, 1, memory_order_relaxed);
}

static void *adder(void *arg)
{
	struct adder *a = arg;
	for (long i = 0; i < n_per_fiber; i++) {
		if (i % 65536 == 0)
			a->workers |= 1u << (weft_worker_id() & 31);
		a->add();
	}
	return NULL;
}

/* two fibers run add() n_per_fiber times each; returns the workers used,
 * or a negative errno (out of memory: a fiber did not run) */
static int run_pair(void (*add)(void))
{
	struct adder a[2] = {{add, 0}, {add, 0}};
	weft_task *t[2] = {weft_spawn(adder, &a[0]), weft_spawn(adder, &a[1])};
	if (!t[0] || !t[1]) {
		if (t[0] || t[1])
			weft_join(t[0] ? t[0] : t[1], NULL);
		return -ENOMEM;
	}
	int r = weft_gather(t, 2, NULL);
	return r < 0 ? r : (int)(a[0].workers | a[1].workers);
}

/* returns 0, or -1 when w is an error (reported) */
static int report(const char *what, long got, int w)
{
	if (w < 0) {
		fprintf(stderr, "%s %s\n", what, weft_strerror(w));
		return -1;
	}
	unsigned workers = (unsigned)w;
	long want = 2 * n_per_fiber;
	printf("  %-13s %9ld of %ld (%s; workers used: %d)\n", what, got, want,
	       got == want ? "exact" : "lost updates",
	       __builtin_popcount(workers));
	return 0;
}

static void *main_fiber(void *arg)
{
	int w;
#ifdef UNDER_TSAN
	printf("  no lock:      skipped (ThreadSanitizer would report the race)\n");
#else
	w = run_pair(add_racy);
	if (report("no lock:", racy, w) < 0)
		return (void *)1;
#endif
	w = run_pair(add_locked);
	if (report("weft_mutex:", locked, w) < 0)
		return (void *)1;
	w = run_pair(add_atomic);
	if (report("atomic:", atomic_load(&atomic_count), w) < 0)
		return (void *)1;
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		n_per_fiber = strtol(argv[1], NULL, 10);
	if (n_per_fiber <= 0) {
		fprintf(stderr, "usage: 06_race [N]\n");
		return 2;
	}
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 2;
	printf("two fibers add 1 to a shared counter %ld times each, on %u "
	       "workers:\n", n_per_fiber, cfg.workers);
	void *res = NULL;
	int r = weft_run(&cfg, main_fiber, NULL, &res);
	if (r < 0)
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
	return r < 0 || res;
}
