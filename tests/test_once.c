/* Description: weft_once_call (weft/once.h).
 *
 * - many fibers on 2 workers call at once: fn runs exactly once, every
 *   call returns 0 and sees what fn wrote (a plain field), the callers that
 *   came during the run waited for it (parked: the run sleeps 20 ms);
 * - a failing fn: its error goes to the caller that ran it, a later call
 *   runs it again, and after a success it is done for good;
 * - a waiter cancelled, or whose deadline passes, returns -ECANCELED /
 *   -ETIMEDOUT while the run goes on and succeeds;
 * - misuse: NULL -EINVAL, a recursive call -EDEADLK, a plain thread -EBUSY
 *   while a fiber runs it (and 0 once done), a positive return counted as
 *   a failure;
 * - stress: rounds of fresh weft_once objects raced by fibers on 2 workers,
 *   some failing at random, some callers under tiny deadlines: at most one
 *   run at a time, exactly one success per object, every successful call
 *   sees the value.
 *
 * Fibers never call assert_* (cmocka longjmps): they record with CHECK and
 * the test checks after weft_run returns.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "testutil.h"

/* ---- exactly once --------------------------------------------------------------- */

static weft_once E = WEFT_ONCE_INIT;
static long e_value; /* plain: written by fn, read by the callers */
static _Atomic int e_runs, e_inside;

static int e_init(void *arg)
{
	atomic_fetch_add(&e_runs, 1);
	CHECK_EQ(atomic_fetch_add(&e_inside, 1), 0);
	weft_sleep(20 * MS); /* callers come meanwhile */
	e_value = (long)(uintptr_t)arg;
	atomic_fetch_sub(&e_inside, 1);
	return 0;
}

static void *e_caller(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_once_call(&E, e_init, (void *)(uintptr_t)4242), 0);
	CHECK_EQ(e_value, 4242);
	return NULL;
}

static void *e_main(void *arg)
{
	(void)arg;
	size_t n = scaled(200, 20);
	weft_task **t = calloc(n, sizeof *t);
	CHECK(t != NULL);
	for (size_t i = 0; i < n; i++)
		t[i] = weft_spawn(e_caller, NULL);
	for (size_t i = 0; i < n; i++)
		CHECK_EQ(weft_join(t[i], NULL), 0);
	free(t);
	/* done: later calls return at once */
	CHECK_EQ(weft_once_call(&E, e_init, NULL), 0);
	return NULL;
}

static void test_once_exactly_once(void **state)
{
	(void)state;
	for (unsigned workers = 1; workers <= 2; workers++) {
		E = (weft_once)WEFT_ONCE_INIT;
		e_value = 0;
		atomic_store(&e_runs, 0);
		run(workers, e_main, NULL);
		assert_int_equal(atomic_load(&e_runs), 1);
		assert_int_equal(e_value, 4242);
	}
}

/* ---- failure, then success -------------------------------------------------------- */

static weft_once F = WEFT_ONCE_INIT;
static _Atomic int f_runs;
static int f_fail_first; /* how many runs fail */

static int f_init(void *arg)
{
	(void)arg;
	int k = atomic_fetch_add(&f_runs, 1);
	weft_sleep(2 * MS);
	return k < f_fail_first ? -EIO : 0;
}

static int f_positive(void *arg)
{
	(void)arg;
	return 7;
}

static void *f_main(void *arg)
{
	(void)arg;
	f_fail_first = 2;
	CHECK_EQ(weft_once_call(&F, f_init, NULL), -EIO);
	CHECK_EQ(weft_once_call(&F, f_init, NULL), -EIO);
	CHECK_EQ(weft_once_call(&F, f_init, NULL), 0);
	CHECK_EQ(weft_once_call(&F, f_init, NULL), 0);
	CHECK_EQ(atomic_load(&f_runs), 3);
	/* a positive return: a failure, -EINVAL, and not done */
	weft_once p = WEFT_ONCE_INIT;
	CHECK_EQ(weft_once_call(&p, f_positive, NULL), -EINVAL);
	atomic_store(&f_runs, 0);
	f_fail_first = 0;
	CHECK_EQ(weft_once_call(&p, f_init, NULL), 0);
	CHECK_EQ(atomic_load(&f_runs), 1);
	return NULL;
}

static void test_once_failure_retries(void **state)
{
	(void)state;
	F = (weft_once)WEFT_ONCE_INIT;
	atomic_store(&f_runs, 0);
	run(1, f_main, NULL);
}

/* ---- waiters that give up ------------------------------------------------------------ */

static weft_once G = WEFT_ONCE_INIT;
static _Atomic int g_started, g_release;
static int g_ret[3];

static int g_init(void *arg)
{
	(void)arg;
	atomic_store(&g_started, 1);
	while (!atomic_load(&g_release))
		weft_sleep(1 * MS);
	return 0;
}

static void *g_runner(void *arg)
{
	(void)arg;
	g_ret[0] = weft_once_call(&G, g_init, NULL);
	return NULL;
}

static void *g_cancelled(void *arg)
{
	(void)arg;
	g_ret[1] = weft_once_call(&G, g_init, NULL);
	return NULL;
}

static void *g_deadline(void *arg)
{
	(void)arg;
	weft_deadline d;
	weft_deadline_push(&d, 20 * MS);
	g_ret[2] = weft_once_call(&G, g_init, NULL);
	weft_deadline_pop(&d);
	return NULL;
}

static void *g_main(void *arg)
{
	(void)arg;
	weft_task *r = weft_spawn(g_runner, NULL);
	CHECK_EQ(wait_flag(&g_started), 0);
	weft_task *c = weft_spawn(g_cancelled, NULL);
	weft_task *d = weft_spawn(g_deadline, NULL);
	weft_sleep(5 * MS); /* both parked on the run */
	CHECK_EQ(weft_cancel(c), 0);
	CHECK_EQ(weft_join(c, NULL), -ECANCELED);
	CHECK_EQ(weft_join(d, NULL), 0);
	atomic_store(&g_release, 1);
	CHECK_EQ(weft_join(r, NULL), 0);
	return NULL;
}

static void test_once_waiters_give_up(void **state)
{
	(void)state;
	for (unsigned workers = 1; workers <= 2; workers++) {
		G = (weft_once)WEFT_ONCE_INIT;
		atomic_store(&g_started, 0);
		atomic_store(&g_release, 0);
		run(workers, g_main, NULL);
		assert_int_equal(g_ret[0], 0);
		assert_int_equal(g_ret[1], -ECANCELED);
		assert_int_equal(g_ret[2], -ETIMEDOUT);
	}
}

/* ---- misuse ------------------------------------------------------------------------ */

static weft_once M = WEFT_ONCE_INIT;
static int m_inner;
static _Atomic int m_started, m_release;

static int m_recursive(void *arg)
{
	(void)arg;
	m_inner = weft_once_call(&M, m_recursive, NULL);
	return 0;
}

static int m_slow(void *arg)
{
	(void)arg;
	atomic_store(&m_started, 1);
	while (!atomic_load(&m_release))
		weft_sleep(1 * MS);
	return 0;
}

static void *m_thread(void *arg)
{
	weft_once *o = arg;
	while (!atomic_load(&m_started)) /* the fiber runs m_slow now */
		usleep(100);
	CHECK_EQ(weft_once_call(o, m_slow, NULL), -EBUSY); /* never waits */
	atomic_store(&m_release, 1);
	return NULL;
}

static void *m_main(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_once_call(NULL, m_slow, NULL), -EINVAL);
	CHECK_EQ(weft_once_call(&M, NULL, NULL), -EINVAL);
	CHECK_EQ(weft_once_call(&M, m_recursive, NULL), 0);
	CHECK_EQ(m_inner, -EDEADLK);
	/* a plain thread while a fiber runs it */
	static weft_once o = WEFT_ONCE_INIT;
	pthread_t th;
	CHECK_EQ(pthread_create(&th, NULL, m_thread, &o), 0);
	CHECK_EQ(weft_once_call(&o, m_slow, NULL), 0);
	pthread_join(th, NULL);
	return NULL;
}

static void test_once_misuse(void **state)
{
	(void)state;
	/* outside a fiber, not yet done: a plain thread runs fn itself */
	weft_once o = WEFT_ONCE_INIT;
	atomic_store(&f_runs, 0);
	f_fail_first = 0;
	assert_int_equal(weft_once_call(&o, f_positive, NULL), -EINVAL);
	assert_int_equal(weft_once_call(&o, f_init, NULL), 0);
	assert_int_equal(weft_once_call(&o, f_init, NULL), 0);
	assert_int_equal(atomic_load(&f_runs), 1);
	M = (weft_once)WEFT_ONCE_INIT;
	run(2, m_main, NULL);
}

/* ---- stress ------------------------------------------------------------------------ */

#define ST_OBJS 64

static struct {
	weft_once o[ST_OBJS];
	long value[ST_OBJS];
	_Atomic int running[ST_OBJS], successes[ST_OBJS];
	_Atomic long calls_ok, gave_up, failed;
	size_t n;
} S;

static int st_init(void *arg)
{
	uintptr_t i = (uintptr_t)arg;
	CHECK_EQ(atomic_fetch_add(&S.running[i], 1), 0);
	uint64_t seed = i * 77 + (uint64_t)atomic_load(&S.failed) + 1;
	if (rnd(&seed) % 4 == 0)
		weft_yield();
	bool fail = rnd(&seed) % 3 == 0;
	if (!fail) {
		S.value[i] = (long)i + 1000;
		atomic_fetch_add(&S.successes[i], 1);
	}
	atomic_fetch_sub(&S.running[i], 1);
	return fail ? -EAGAIN : 0;
}

static void *st_fiber(void *arg)
{
	uint64_t seed = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 3;
	for (int k = 0; k < 64; k++) {
		uintptr_t i = rnd(&seed) % ST_OBJS;
		bool bounded = rnd(&seed) % 8 == 0;
		weft_deadline d;
		if (bounded)
			weft_deadline_push(&d, rnd(&seed) % (20 * US));
		int r = weft_once_call(&S.o[i], st_init, (void *)i);
		if (bounded)
			weft_deadline_pop(&d);
		if (r == 0) {
			CHECK_EQ(S.value[i], (long)i + 1000);
			atomic_fetch_add(&S.calls_ok, 1);
		} else if (r == -ETIMEDOUT) {
			CHECK(bounded);
			atomic_fetch_add(&S.gave_up, 1);
		} else {
			CHECK_EQ(r, -EAGAIN);
			atomic_fetch_add(&S.failed, 1);
		}
	}
	return NULL;
}

static void *st_main(void *arg)
{
	(void)arg;
	weft_task **t = calloc(S.n, sizeof *t);
	CHECK(t != NULL);
	for (size_t i = 0; i < S.n; i++)
		t[i] = weft_spawn(st_fiber, (void *)(uintptr_t)(i + 1));
	for (size_t i = 0; i < S.n; i++)
		CHECK_EQ(weft_join(t[i], NULL), 0);
	free(t);
	/* finish every object: each ends done, exactly one success */
	for (uintptr_t i = 0; i < ST_OBJS; i++) {
		int r;
		while ((r = weft_once_call(&S.o[i], st_init, (void *)i)) ==
		       -EAGAIN)
			;
		CHECK_EQ(r, 0);
		CHECK_EQ(atomic_load(&S.successes[i]), 1);
	}
	return NULL;
}

static void test_once_stress(void **state)
{
	(void)state;
	memset(&S, 0, sizeof S);
	S.n = scaled(256, 16);
	run(2, st_main, NULL);
	print_message("  %ld calls ok, %ld failed runs seen, %ld gave up\n",
		      atomic_load(&S.calls_ok), atomic_load(&S.failed),
		      atomic_load(&S.gave_up));
	assert_true(atomic_load(&S.failed) > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_once_exactly_once),
		cmocka_unit_test(test_once_failure_retries),
		cmocka_unit_test(test_once_waiters_give_up),
		cmocka_unit_test(test_once_misuse),
		cmocka_unit_test(test_once_stress),
	};
	apply_test_filters();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
