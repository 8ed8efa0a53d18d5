/* Description: the reader-writer lock (weft/rwlock.h).
 *
 * - basics: readers share, a writer excludes; try-locks say -EBUSY; misuse
 *   (NULL, unlock of a free lock or of another fiber's write lock, a
 *   writer locking again) gives -EINVAL, -EPERM, -EDEADLK and leaves the
 *   lock usable; try-locks work from a plain thread;
 * - order: a writer's unlock lets in every reader that waited for it at
 *   once; then the next writer waits for them to leave, and a reader that
 *   comes meanwhile waits for that writer (no writer starves);
 * - a queued writer that is cancelled, or whose deadline passes, fails
 *   with nothing held and lets the readers behind it in;
 * - stress on 2 and 4 workers: fibers read and write a plain (non-atomic)
 *   record, some under tiny deadlines and some cancelled, checking that no
 *   writer ever overlaps anyone; the final count is exact and the lock is
 *   free at the end.
 *
 * Fibers never call assert_* (cmocka longjmps): they record with CHECK and
 * the test checks after weft_run returns.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "testutil.h"

/* ---- basics ------------------------------------------------------------------ */

static weft_rwlock B = WEFT_RWLOCK_INIT;
static _Atomic int b_readers_in, b_step;

static void *b_reader(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_rwlock_rdlock(&B), 0);
	atomic_fetch_add(&b_readers_in, 1);
	while (atomic_load(&b_step) == 0)
		weft_sleep(1 * MS);
	atomic_fetch_sub(&b_readers_in, 1);
	CHECK_EQ(weft_rwlock_unlock(&B), 0);
	return NULL;
}

static void *b_other_unlock(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_rwlock_unlock(&B), -EPERM); /* the writer is main */
	return NULL;
}

static void *b_thread(void *arg)
{
	(void)arg;
	/* a plain thread: try-locks only */
	CHECK_EQ(weft_rwlock_rdlock(&B), -EINVAL);
	CHECK_EQ(weft_rwlock_tryrdlock(&B), 0);
	CHECK_EQ(weft_rwlock_trywrlock(&B), -EBUSY);
	CHECK_EQ(weft_rwlock_unlock(&B), 0);
	CHECK_EQ(weft_rwlock_trywrlock(&B), 0);
	CHECK_EQ(weft_rwlock_unlock(&B), 0);
	return NULL;
}

static void *b_main(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_rwlock_rdlock(NULL), -EINVAL);
	CHECK_EQ(weft_rwlock_wrlock(NULL), -EINVAL);
	CHECK_EQ(weft_rwlock_unlock(NULL), -EINVAL);
	CHECK_EQ(weft_rwlock_unlock(&B), -EPERM); /* free */
	/* two readers hold it at once */
	weft_task *r1 = weft_spawn(b_reader, NULL);
	weft_task *r2 = weft_spawn(b_reader, NULL);
	uint64_t t0 = real_ns();
	while (atomic_load(&b_readers_in) < 2 && real_ns() - t0 < 10 * SEC)
		weft_sleep(1 * MS);
	CHECK_EQ(atomic_load(&b_readers_in), 2);
	CHECK_EQ(weft_rwlock_trywrlock(&B), -EBUSY);
	CHECK_EQ(weft_rwlock_tryrdlock(&B), 0); /* a third reader */
	CHECK_EQ(weft_rwlock_unlock(&B), 0);
	atomic_store(&b_step, 1);
	CHECK_EQ(weft_join(r1, NULL), 0);
	CHECK_EQ(weft_join(r2, NULL), 0);
	/* a writer excludes */
	CHECK_EQ(weft_rwlock_wrlock(&B), 0);
	CHECK_EQ(weft_rwlock_tryrdlock(&B), -EBUSY);
	CHECK_EQ(weft_rwlock_trywrlock(&B), -EBUSY);
	CHECK_EQ(weft_rwlock_wrlock(&B), -EDEADLK);
	CHECK_EQ(weft_rwlock_rdlock(&B), -EDEADLK);
	CHECK_EQ(weft_join(weft_spawn(b_other_unlock, NULL), NULL), 0);
	CHECK_EQ(weft_rwlock_unlock(&B), 0);
	CHECK_EQ(weft_rwlock_unlock(&B), -EPERM);
	/* from a plain thread */
	pthread_t th;
	CHECK_EQ(pthread_create(&th, NULL, b_thread, NULL), 0);
	pthread_join(th, NULL);
	/* still usable */
	CHECK_EQ(weft_rwlock_wrlock(&B), 0);
	CHECK_EQ(weft_rwlock_unlock(&B), 0);
	return NULL;
}

static void test_rwlock_basics(void **state)
{
	(void)state;
	weft_rwlock_init(&B);
	atomic_store(&b_readers_in, 0);
	atomic_store(&b_step, 0);
	run(2, b_main, NULL);
}

/* ---- order --------------------------------------------------------------------- */

/* Each fiber locks, logs its letter, holds the lock until `release` is
 * set for it, unlocks. */
static weft_rwlock O;
static char o_log[32];
static _Atomic int o_len, o_holding;
static _Atomic int o_max_readers; /* most readers holding at once */
static _Atomic int o_release;     /* bit i: fiber i may unlock */
static int o_ret[16];

struct ofib {
	int i;
	bool reader;
	char letter;
	uint64_t deadline_ns; /* 0: none */
};

static void *o_fiber(void *arg)
{
	struct ofib *f = arg;
	weft_deadline d;
	if (f->deadline_ns)
		weft_deadline_push(&d, f->deadline_ns);
	int r = f->reader ? weft_rwlock_rdlock(&O) : weft_rwlock_wrlock(&O);
	if (f->deadline_ns)
		weft_deadline_pop(&d);
	o_ret[f->i] = r;
	if (r)
		return NULL;
	o_log[atomic_fetch_add(&o_len, 1)] = f->letter;
	int h = atomic_fetch_add(&o_holding, 1) + 1;
	if (f->reader) {
		int m = atomic_load(&o_max_readers);
		while (h > m && !atomic_compare_exchange_weak(&o_max_readers,
							      &m, h))
			;
	}
	uint64_t t0 = real_ns();
	while (!(atomic_load(&o_release) & (1 << f->i)) &&
	       real_ns() - t0 < 10 * SEC)
		weft_sleep(1 * MS);
	atomic_fetch_sub(&o_holding, 1);
	CHECK_EQ(weft_rwlock_unlock(&O), 0);
	return NULL;
}

/* o_log with the letters from..to-1 sorted: readers let in together run
 * in any order */
static const char *o_sorted(int from, int to)
{
	static char buf[32];
	memcpy(buf, o_log, sizeof buf);
	for (int i = from; i < to; i++)
		for (int j = i + 1; j < to; j++)
			if (buf[j] < buf[i]) {
				char c = buf[i];
				buf[i] = buf[j];
				buf[j] = c;
			}
	return buf;
}

static void o_reset(void)
{
	weft_rwlock_init(&O);
	memset(o_log, 0, sizeof o_log);
	atomic_store(&o_len, 0);
	atomic_store(&o_holding, 0);
	atomic_store(&o_max_readers, 0);
	atomic_store(&o_release, 0);
	memset(o_ret, 0x7f, sizeof o_ret);
}

/* spawn the fibers of fs one after another, each given time to queue */
static void o_spawn(struct ofib *fs, int n, weft_task **t)
{
	for (int i = 0; i < n; i++) {
		t[i] = weft_spawn(o_fiber, &fs[i]);
		weft_sleep(3 * MS);
	}
}

static void o_release_all(int n)
{
	for (int i = 0; i < n; i++) {
		atomic_fetch_or(&o_release, 1 << i);
		weft_sleep(3 * MS);
	}
}

static struct ofib ORD[] = {
	{0, false, 'W', 0}, /* holds first */
	{1, true, 'a', 0},  {2, true, 'b', 0},	{3, true, 'c', 0},
	{4, false, 'X', 0}, {5, true, 'd', 0},
};

static void *order_main(void *arg)
{
	(void)arg;
	weft_task *t[6];
	o_spawn(ORD, 6, t);
	/* W holds; a, b, c, X, d wait in that order */
	CHECK_EQ(atomic_load(&o_len), 1);
	CHECK_EQ(weft_rwlock_tryrdlock(&O), -EBUSY);
	/* W unlocks: every reader that waited for it gets in at once (d
	 * too: as in Go, readers that came during a write go first) */
	atomic_fetch_or(&o_release, 1 << 0);
	uint64_t t0 = real_ns();
	while (atomic_load(&o_len) < 5 && real_ns() - t0 < 10 * SEC)
		weft_sleep(1 * MS);
	weft_sleep(5 * MS); /* X must still wait */
	CHECK_EQ(atomic_load(&o_len), 5);
	CHECK_EQ(atomic_load(&o_max_readers), 4);
	/* readers hold it, but X waits: a new reader may not overtake it */
	int tr = weft_rwlock_tryrdlock(&O);
	CHECK_EQ(tr, -EBUSY);
	if (tr == 0) /* it did: let the test go on to fail */
		weft_rwlock_unlock(&O);
	o_release_all(6);
	for (int i = 0; i < 6; i++)
		CHECK_EQ(weft_join(t[i], NULL), 0);
	return NULL;
}

static void test_rwlock_order(void **state)
{
	(void)state;
	for (unsigned workers = 1; workers <= 2; workers++) {
		o_reset();
		run(workers, order_main, NULL);
		/* a, b, c and d together (any order), then X */
		assert_string_equal(o_sorted(1, 5), "WabcdX");
		for (int i = 0; i < 6; i++)
			assert_int_equal(o_ret[i], 0);
	}
}

/* A reader holds; a writer queues, then readers behind it. The writer
 * gives up (cancel, or its deadline): the readers behind it get in while
 * the first reader still holds. */
static struct ofib GIVEUP[] = {
	{0, true, 'r', 0},
	{1, false, 'W', 0},
	{2, true, 's', 0},
	{3, true, 't', 0},
};
static bool giveup_by_deadline;

static void *giveup_main(void *arg)
{
	(void)arg;
	weft_task *t[4];
	GIVEUP[1].deadline_ns = giveup_by_deadline ? 100 * MS : 0;
	o_spawn(GIVEUP, 4, t);
	CHECK_EQ(atomic_load(&o_len), 1); /* only r: s and t behind W */
	if (!giveup_by_deadline)
		CHECK_EQ(weft_cancel(t[1]), 0);
	uint64_t t0 = real_ns();
	while (atomic_load(&o_len) < 3 && real_ns() - t0 < 10 * SEC)
		weft_sleep(1 * MS);
	CHECK_EQ(atomic_load(&o_len), 3);
	CHECK_EQ(atomic_load(&o_max_readers), 3); /* r still holds */
	o_release_all(4);
	for (int i = 0; i < 4; i++) {
		int r = weft_join(t[i], NULL);
		CHECK(r == 0 || (i == 1 && r == -ECANCELED));
	}
	/* nothing left held */
	CHECK_EQ(weft_rwlock_trywrlock(&O), 0);
	CHECK_EQ(weft_rwlock_unlock(&O), 0);
	return NULL;
}

static void test_rwlock_writer_gives_up(void **state)
{
	(void)state;
	for (int by_deadline = 0; by_deadline <= 1; by_deadline++)
		for (unsigned workers = 1; workers <= 2; workers++) {
			o_reset();
			giveup_by_deadline = by_deadline;
			run(workers, giveup_main, NULL);
			assert_string_equal(o_sorted(1, 3), "rst");
			assert_int_equal(o_ret[1], by_deadline ? -ETIMEDOUT
							       : -ECANCELED);
		}
}

/* ---- stress ---------------------------------------------------------------------- */

#define ST_OPS 300

static struct {
	weft_rwlock l;
	/* the record: plain fields, written by writers only */
	long count, mirror;
	_Atomic int readers_in, writers_in;
	_Atomic long writes, reads, gave_up;
	size_t n;
	weft_task **t;
	_Atomic int stop, ended;
} S;

static void *st_fiber(void *arg)
{
	uint64_t seed = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 7;
	for (int k = 0; k < ST_OPS; k++) {
		uint64_t x = rnd(&seed);
		bool writer = x % 4 == 0;
		bool bounded = (x >> 8) % 8 == 0;
		weft_deadline d;
		if (bounded)
			weft_deadline_push(&d, (x >> 16) % (50 * US));
		int r = writer ? weft_rwlock_wrlock(&S.l)
			       : weft_rwlock_rdlock(&S.l);
		if (bounded)
			weft_deadline_pop(&d);
		if (r == -ETIMEDOUT) {
			CHECK(bounded);
			atomic_fetch_add(&S.gave_up, 1);
			continue;
		}
		if (r == -ECANCELED) {
			atomic_fetch_add(&S.gave_up, 1);
			break;
		}
		CHECK_EQ(r, 0);
		if (r)
			break;
		if (writer) {
			CHECK_EQ(atomic_fetch_add(&S.writers_in, 1), 0);
			CHECK_EQ(atomic_load(&S.readers_in), 0);
			long c = S.count;
			if ((x >> 24) % 4 == 0)
				weft_yield(); /* hold it across a switch */
			S.count = c + 1;
			S.mirror = -S.count;
			atomic_fetch_sub(&S.writers_in, 1);
			atomic_fetch_add(&S.writes, 1);
		} else {
			atomic_fetch_add(&S.readers_in, 1);
			CHECK_EQ(atomic_load(&S.writers_in), 0);
			long c = S.count;
			if ((x >> 24) % 4 == 0)
				weft_yield();
			CHECK_EQ(S.mirror, -c); /* no torn write seen */
			atomic_fetch_sub(&S.readers_in, 1);
			atomic_fetch_add(&S.reads, 1);
		}
		CHECK_EQ(weft_rwlock_unlock(&S.l), 0);
	}
	atomic_fetch_add(&S.ended, 1);
	return NULL;
}

static void *st_canceller(void *arg)
{
	(void)arg;
	uint64_t seed = 99;
	while (!atomic_load(&S.stop)) {
		weft_cancel(S.t[rnd(&seed) % S.n]);
		weft_sleep(rnd(&seed) % (2 * MS));
	}
	return NULL;
}

static void *st_main(void *arg)
{
	(void)arg;
	for (size_t i = 0; i < S.n; i++)
		CHECK((S.t[i] = weft_spawn(st_fiber, (void *)(uintptr_t)i)));
	weft_task *c = weft_spawn(st_canceller, NULL);
	await_at_least(&S.ended, (int)S.n);
	atomic_store(&S.stop, 1);
	CHECK_EQ(weft_join(c, NULL), 0);
	for (size_t i = 0; i < S.n; i++) {
		int r = weft_join(S.t[i], NULL);
		CHECK(r == 0 || r == -ECANCELED);
	}
	/* free at the end: nothing held, nobody queued */
	CHECK_EQ(weft_rwlock_trywrlock(&S.l), 0);
	CHECK_EQ(weft_rwlock_unlock(&S.l), 0);
	return NULL;
}

static void stress(unsigned workers)
{
	memset(&S, 0, sizeof S);
	S.n = scaled(200, 8);
	S.t = calloc(S.n, sizeof *S.t);
	assert_non_null(S.t);
	run(workers, st_main, NULL);
	assert_int_equal(S.count, atomic_load(&S.writes));
	assert_int_equal(S.mirror, -S.count);
	print_message("  %u workers: %ld writes, %ld reads, %ld gave up\n",
		      workers, atomic_load(&S.writes), atomic_load(&S.reads),
		      atomic_load(&S.gave_up));
	assert_true(atomic_load(&S.writes) > 0 && atomic_load(&S.reads) > 0);
	free(S.t);
}

static void test_rwlock_stress(void **state)
{
	(void)state;
	stress(2);
	stress(4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rwlock_basics),
		cmocka_unit_test(test_rwlock_order),
		cmocka_unit_test(test_rwlock_writer_gives_up),
		cmocka_unit_test(test_rwlock_stress),
	};
	apply_test_filters();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
