/* Description: weft_blocking, the blocking pool (run_in_executor).
 *
 * - a 50 ms usleep runs off the workers: with workers=1 a fiber counting
 *   yields keeps counting during it; the result comes back;
 * - fn holds its pool thread until fibers on ALL workers have been running
 *   at once (workers 1, 2, 4): no worker is tied up by the call;
 * - results: fn's return reaches *result (NULL result allowed); fn may
 *   weft_spawn (its fiber joins the handle); fn calling weft_blocking gets
 *   -EINVAL (a pool thread is not a fiber);
 * - 200 concurrent calls with blocking_threads=4 all complete with their
 *   results, and at most 4 ran at once;
 * - saturation: blocking_queue=8, blocking_threads=1, fn held on a gate:
 *   the 10th concurrent call gets -EAGAIN (deterministic with workers=1;
 *   with workers=2, 19 racing callers: exactly 11 get -EAGAIN); after the
 *   gate opens everything completes;
 * - cancel while queued: -ECANCELED, fn never ran (workers 1 and 2);
 * - cancel while running: the fiber waits, gets 0 and the result, fn had
 *   completed; its next waits (sleep, blocking) fail with -ECANCELED;
 * - deadline while queued: -ETIMEDOUT after the deadline, fn never ran; a
 *   deadline already passed: -ETIMEDOUT at once; a deadline that expires
 *   while fn runs: waited for, 0;
 * - -EINVAL: outside a runtime, from a foreign pthread while one runs, fn
 *   NULL;
 * - threads: after a burst the pool holds exactly blocking_threads threads
 *   (counted in /proc/self/task); weft_run returns with every one of them
 *   joined, also on a second run. Retirement after idle is checked only
 *   when the library and this test are built with a short
 *   -DWEFT_BLOCKING_IDLE_MS (the default is 10 s);
 * - stress: thousands of calls cancelled (or timed out) at random moments:
 *   every call either returned 0 and its fn ran exactly once with its
 *   result, or returned -ECANCELED / -ETIMEDOUT and its fn never ran.
 *
 * Fibers never call assert_* (cmocka longjmps): they record into globals and
 * the test function checks after weft_run returns. Counts scale with env
 * WEFT_TEST_SCALE (default 1.0) for sanitizer builds.
 */
#include <string.h>
#include <stdbool.h>
#include <time.h>
#include <pthread.h>

#include "testutil.h"

static weft_config cfg(unsigned workers, unsigned threads, unsigned queue)
{
	weft_config c;
	weft_config_init(&c);
	c.workers = workers;
	c.blocking_threads = threads;
	c.blocking_queue = queue;
	return c;
}

/* threads of this process now */
static int count_tasks(void)
{
	return count_dir_entries("/proc/self/task");
}

/* After weft_run (not on a fiber): the thread count, once it is `want` or
 * after 2 s. A joined thread can still be listed for a moment: the kernel
 * wakes pthread_join when it clears the thread's tid, before it removes
 * the task (seen once in ~30 runs beside other tests: 2 != 1). */
static int count_tasks_settled(int want)
{
	int n = count_tasks();
	for (int i = 0; i < 2000 && n != want; i++) {
		usleep(1000);
		n = count_tasks();
	}
	return n;
}

/* From a fiber: wait (sleeping 1 ms at a time) until *flag >= v, at most
 * 5 s. True if it got there. */
static bool wait_for(_Atomic int *flag, int v)
{
	uint64_t until = weft_now() + 5 * SEC;
	while (atomic_load(flag) < v) {
		if (weft_now() > until)
			return false;
		weft_sleep(1 * MS);
	}
	return true;
}

/* ---- a gate that holds fn on its pool thread --------------------------------- */

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool open;
	_Atomic int started; /* fns that reached the gate */
} Gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0};

static void gate_reset(void)
{
	pthread_mutex_lock(&Gate.lock);
	Gate.open = false;
	pthread_mutex_unlock(&Gate.lock);
	atomic_store(&Gate.started, 0);
}

static void gate_open(void)
{
	pthread_mutex_lock(&Gate.lock);
	Gate.open = true;
	pthread_cond_broadcast(&Gate.cond);
	pthread_mutex_unlock(&Gate.lock);
}

/* fn: wait at the gate (at most 10 s), return arg */
static void *gate_fn(void *arg)
{
	atomic_fetch_add(&Gate.started, 1);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&Gate.lock);
	while (!Gate.open)
		if (pthread_cond_timedwait(&Gate.cond, &Gate.lock, &until))
			break;
	pthread_mutex_unlock(&Gate.lock);
	return arg;
}

/* fn that must never run */
static _Atomic int mark_ran;
static void *mark_fn(void *arg)
{
	atomic_fetch_add(&mark_ran, 1);
	return arg;
}

/* a fiber that calls weft_blocking(gate_fn, arg) and keeps what it got */
struct call {
	void *(*fn)(void *);
	void *arg;
	void *res;
	int ret;
	_Atomic int calling, done;
};

static void *call_fiber(void *p)
{
	struct call *c = p;
	atomic_store(&c->calling, 1);
	c->res = (void *)(uintptr_t)0xbad;
	c->ret = weft_blocking(c->fn, c->arg, &c->res);
	atomic_store(&c->done, 1);
	return NULL;
}

/* ---- off the workers: a yield counter keeps counting (workers=1) ----------- */

static struct {
	_Atomic uint64_t ticks;
	_Atomic int stop;
	uint64_t before, after, elapsed;
	int ret;
	void *res;
} P;

static void *sleep_fn(void *arg)
{
	usleep(50 * 1000);
	return (void *)((uintptr_t)arg ^ 0x5a5a);
}

static void *counter_fiber(void *arg)
{
	(void)arg;
	while (!atomic_load(&P.stop)) {
		atomic_fetch_add_explicit(&P.ticks, 1, memory_order_relaxed);
		weft_yield();
	}
	return NULL;
}

static void *progress_main(void *arg)
{
	(void)arg;
	weft_task *c = weft_spawn(counter_fiber, NULL);
	weft_sleep(2 * MS); /* the counter is running */
	P.before = atomic_load(&P.ticks);
	uint64_t t0 = weft_now();
	P.ret = weft_blocking(sleep_fn, (void *)(uintptr_t)0x1234, &P.res);
	P.elapsed = weft_now() - t0;
	P.after = atomic_load(&P.ticks);
	atomic_store(&P.stop, 1);
	weft_join(c, NULL);
	return NULL;
}

static void run_progress(unsigned workers)
{
	memset(&P, 0, sizeof P);
	weft_config c = cfg(workers, 0, 0);
	assert_int_equal(weft_run(&c, progress_main, NULL, NULL), 0);
	assert_int_equal(P.ret, 0);
	assert_ptr_equal(P.res, (void *)(uintptr_t)(0x1234 ^ 0x5a5a));
	assert_true(P.elapsed >= 50 * MS);
	/* the worker kept running fibers during the call: thousands of yields
	 * in 50 ms; 100 is a floor even under sanitizers */
	assert_true(P.after - P.before >= 100);
}

static void test_progress_workers1(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("pool threads running beside the workers (seeded, the master waits for the pool)");
	run_progress(1);
}

static void test_progress_workers2(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("pool threads running beside the workers (seeded, the master waits for the pool)");
	run_progress(2);
}

/* ---- off the workers: every worker runs a fiber during the call ------------ */

static struct {
	unsigned workers;
	_Atomic int arrived, all_met, fn_saw_all;
	_Atomic int on_worker[8];
	int ret, spawn_ok;
	void *res;
} R;

/* fn: hold the pool thread until the rendezvous happened (at most 5 s) */
static void *rendezvous_fn(void *arg)
{
	atomic_fetch_add(&Gate.started, 1);
	uint64_t until = weft_now() + 5 * SEC;
	while (!atomic_load(&R.all_met) && weft_now() < until)
		usleep(200);
	atomic_store(&R.fn_saw_all, atomic_load(&R.all_met));
	return arg;
}

/* spin without yielding until every worker holds one of us */
static void *rendezvous_fiber(void *arg)
{
	(void)arg;
	unsigned id = weft_worker_id();
	if (id < 8)
		atomic_fetch_add(&R.on_worker[id], 1);
	atomic_fetch_add(&R.arrived, 1);
	uint64_t until = weft_now() + 5 * SEC;
	for (unsigned i = 0; atomic_load(&R.arrived) < (int)R.workers; i++)
		if (i % 1024 == 0 && weft_now() > until)
			return NULL;
	atomic_store(&R.all_met, 1);
	return NULL;
}

static void *rendezvous_caller(void *arg)
{
	(void)arg;
	R.ret = weft_blocking(rendezvous_fn, (void *)(uintptr_t)77, &R.res);
	return NULL;
}

static void *rendezvous_main(void *arg)
{
	(void)arg;
	weft_task *caller = weft_spawn(rendezvous_caller, NULL);
	if (!wait_for(&Gate.started, 1)) {
		weft_join(caller, NULL);
		return NULL;
	}
	/* fn is running on its pool thread now */
	weft_task *t[8];
	unsigned n = R.workers;
	for (unsigned i = 0; i < n; i++)
		t[i] = weft_spawn(rendezvous_fiber, NULL);
	R.spawn_ok = 1;
	weft_gather(t, n, NULL);
	weft_join(caller, NULL);
	return NULL;
}

static void run_rendezvous(unsigned workers)
{
	memset(&R, 0, sizeof R);
	gate_reset();
	R.workers = workers;
	weft_config c = cfg(workers, 0, 0);
	assert_int_equal(weft_run(&c, rendezvous_main, NULL, NULL), 0);
	assert_int_equal(R.spawn_ok, 1);
	assert_int_equal(R.ret, 0);
	assert_ptr_equal(R.res, (void *)(uintptr_t)77);
	assert_int_equal(atomic_load(&R.all_met), 1);
	assert_int_equal(atomic_load(&R.fn_saw_all), 1);
	for (unsigned i = 0; i < workers; i++)
		assert_int_equal(atomic_load(&R.on_worker[i]), 1);
}

static void test_all_workers_free_1(void **state)
{
	(void)state;
	run_rendezvous(1);
}

static void test_all_workers_free_2(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("pool threads running beside the workers (seeded, the master waits for the pool)");
	run_rendezvous(2);
}

static void test_all_workers_free_4(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("pool threads running beside the workers (seeded, the master waits for the pool)");
	run_rendezvous(4);
}

/* ---- results; fn may spawn; a pool thread is not a fiber ------------------ */

static struct {
	int ret_plain, ret_null_result, ret_spawn, join_ret, ret_nested;
	int nested_inner, ret_fn_null;
	void *res_plain, *join_res;
	_Atomic int child_ran, null_result_ran;
	int worker_in_fn; /* weft_worker_id() inside fn */
} X;

static void *double_fn(void *arg)
{
	X.worker_in_fn = (int)weft_worker_id();
	return (void *)((uintptr_t)arg * 2);
}

static void *null_result_fn(void *arg)
{
	(void)arg;
	atomic_fetch_add(&X.null_result_ran, 1);
	return (void *)(uintptr_t)1;
}

static void *spawned_child(void *arg)
{
	atomic_fetch_add(&X.child_ran, 1);
	return (void *)((uintptr_t)arg + 1);
}

static void *spawn_fn(void *arg)
{
	return weft_spawn(spawned_child, arg); /* global queue */
}

static void *nested_fn(void *arg)
{
	(void)arg;
	X.nested_inner = weft_blocking(mark_fn, NULL, NULL);
	return NULL;
}

static void *results_main(void *arg)
{
	(void)arg;
	X.ret_plain = weft_blocking(double_fn, (void *)(uintptr_t)21,
				    &X.res_plain);
	X.ret_null_result = weft_blocking(null_result_fn, NULL, NULL);
	void *h = NULL;
	X.ret_spawn = weft_blocking(spawn_fn, (void *)(uintptr_t)41, &h);
	X.join_ret = h ? weft_join(h, &X.join_res) : -999;
	X.ret_nested = weft_blocking(nested_fn, NULL, NULL);
	void *untouched = (void *)(uintptr_t)0x77;
	X.ret_fn_null = weft_blocking(NULL, NULL, &untouched);
	if (untouched != (void *)(uintptr_t)0x77)
		X.ret_fn_null = -999;
	return NULL;
}

static void test_results(void **state)
{
	(void)state;
	memset(&X, 0, sizeof X);
	atomic_store(&mark_ran, 0);
	weft_config c = cfg(2, 0, 0);
	assert_int_equal(weft_run(&c, results_main, NULL, NULL), 0);
	assert_int_equal(X.ret_plain, 0);
	assert_ptr_equal(X.res_plain, (void *)(uintptr_t)42);
	assert_int_equal(X.worker_in_fn, (int)WEFT_NO_WORKER);
	assert_int_equal(X.ret_null_result, 0);
	assert_int_equal(atomic_load(&X.null_result_ran), 1);
	assert_int_equal(X.ret_spawn, 0);
	assert_int_equal(X.join_ret, 0);
	assert_ptr_equal(X.join_res, (void *)(uintptr_t)42);
	assert_int_equal(atomic_load(&X.child_ran), 1);
	assert_int_equal(X.ret_nested, 0);
	assert_int_equal(X.nested_inner, -EINVAL);
	assert_int_equal(X.ret_fn_null, -EINVAL);
	assert_int_equal(atomic_load(&mark_ran), 0);
}

/* ---- -EINVAL outside a fiber ------------------------------------------------ */

static struct {
	_Atomic int foreign_ret, foreign_done;
} E;

static void *foreign_thread(void *arg)
{
	(void)arg;
	atomic_store(&E.foreign_ret, weft_blocking(mark_fn, NULL, NULL));
	atomic_store(&E.foreign_done, 1);
	return NULL;
}

static void *einval_main(void *arg)
{
	(void)arg;
	pthread_t th;
	if (pthread_create(&th, NULL, foreign_thread, NULL) == 0) {
		wait_for(&E.foreign_done, 1);
		pthread_join(th, NULL);
	}
	return NULL;
}

static void test_einval(void **state)
{
	(void)state;
	atomic_store(&mark_ran, 0);
	atomic_store(&E.foreign_done, 0);
	atomic_store(&E.foreign_ret, 1);
	/* no runtime */
	assert_int_equal(weft_blocking(mark_fn, NULL, NULL), -EINVAL);
	assert_int_equal(weft_blocking(NULL, NULL, NULL), -EINVAL);
	weft_config c = cfg(2, 0, 0);
	assert_int_equal(weft_run(&c, einval_main, NULL, NULL), 0);
	assert_int_equal(atomic_load(&E.foreign_done), 1);
	assert_int_equal(atomic_load(&E.foreign_ret), -EINVAL);
	assert_int_equal(atomic_load(&mark_ran), 0);
}

/* ---- 200 concurrent calls on 4 threads --------------------------------------- */

#define CN 200

static struct {
	_Atomic int cur, max, ran;
	int ret[CN];
	void *res[CN];
	int threads_base, threads_during;
} C;

static void *conc_fn(void *arg)
{
	int c = atomic_fetch_add(&C.cur, 1) + 1;
	int m = atomic_load(&C.max);
	while (c > m && !atomic_compare_exchange_weak(&C.max, &m, c))
		;
	usleep(1000);
	atomic_fetch_sub(&C.cur, 1);
	atomic_fetch_add(&C.ran, 1);
	return (void *)((uintptr_t)arg + 1000);
}

static void *conc_fiber(void *arg)
{
	size_t i = (size_t)(uintptr_t)arg;
	C.ret[i] = weft_blocking(conc_fn, arg, &C.res[i]);
	return NULL;
}

static void *conc_main(void *arg)
{
	(void)arg;
	C.threads_base = count_tasks();
	weft_task *t[CN];
	for (size_t i = 0; i < CN; i++)
		t[i] = weft_spawn(conc_fiber, (void *)(uintptr_t)i);
	weft_gather(t, CN, NULL);
	C.threads_during = count_tasks(); /* idle pool threads stay 10 s */
	return NULL;
}

static void test_concurrent_200_on_4(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("pool threads running beside the workers (seeded, the master waits for the pool)");
	memset(&C, 0, sizeof C);
	int before = count_tasks();
	weft_config c = cfg(2, 4, 0);
	assert_int_equal(weft_run(&c, conc_main, NULL, NULL), 0);
	for (size_t i = 0; i < CN; i++) {
		assert_int_equal(C.ret[i], 0);
		assert_ptr_equal(C.res[i], (void *)(uintptr_t)(i + 1000));
	}
	assert_int_equal(atomic_load(&C.ran), CN);
	assert_true(atomic_load(&C.max) <= 4);
	assert_true(atomic_load(&C.max) >= 2);
	assert_true(C.threads_during > C.threads_base);
	assert_true(C.threads_during <= C.threads_base + 4);
	assert_int_equal(count_tasks_settled(before), before);
}

/* ---- saturation: the queue holds 8 ----------------------------------------------- */

#define SQ 8

static struct {
	struct call held;      /* on the one pool thread */
	struct call q[20];     /* queued behind it, or refused */
	int tenth_ret;         /* workers=1: main's own call */
	_Atomic int eagain;    /* workers=2: refused racers */
	int eagain_settled;    /* ... counted again 20 ms later */
	bool ok;
} S;

static void *sat_racer(void *p)
{
	struct call *c = p;
	call_fiber(c);
	if (c->ret == -EAGAIN)
		atomic_fetch_add(&S.eagain, 1);
	return NULL;
}

/* workers=1: every fiber runs until it parks, so the order is exact */
static void *sat_main_w1(void *arg)
{
	(void)arg;
	S.held.fn = gate_fn;
	S.held.arg = (void *)(uintptr_t)100;
	weft_task *h = weft_spawn(call_fiber, &S.held);
	if (!wait_for(&Gate.started, 1)) {
		gate_open();
		weft_join(h, NULL);
		return NULL;
	}
	weft_task *t[SQ];
	for (int i = 0; i < SQ; i++) {
		S.q[i].fn = gate_fn;
		S.q[i].arg = (void *)(uintptr_t)(101 + i);
		t[i] = weft_spawn(call_fiber, &S.q[i]);
	}
	weft_yield(); /* behind all eight: each queued its call and parked */
	int calling = 0;
	for (int i = 0; i < SQ; i++)
		calling += atomic_load(&S.q[i].calling);
	S.ok = calling == SQ;
	/* 1 running + 8 queued: the 10th call is refused */
	S.tenth_ret = weft_blocking(mark_fn, NULL, NULL);
	gate_open();
	weft_gather(t, SQ, NULL);
	weft_join(h, NULL);
	return NULL;
}

static void test_saturation_workers1(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("pool threads running beside the workers (seeded, the master waits for the pool)");
	memset(&S, 0, sizeof S);
	gate_reset();
	atomic_store(&mark_ran, 0);
	weft_config c = cfg(1, 1, SQ);
	assert_int_equal(weft_run(&c, sat_main_w1, NULL, NULL), 0);
	assert_true(S.ok);
	assert_int_equal(S.tenth_ret, -EAGAIN);
	assert_int_equal(atomic_load(&mark_ran), 0);
	assert_int_equal(S.held.ret, 0);
	assert_ptr_equal(S.held.res, (void *)(uintptr_t)100);
	for (int i = 0; i < SQ; i++) {
		assert_int_equal(S.q[i].ret, 0);
		assert_ptr_equal(S.q[i].res, (void *)(uintptr_t)(101 + i));
	}
	assert_int_equal(atomic_load(&Gate.started), SQ + 1);
}

/* workers=2: 19 callers race for 8 slots while the thread is held */
#define SR 19
static void *sat_main_w2(void *arg)
{
	(void)arg;
	S.held.fn = gate_fn;
	weft_task *h = weft_spawn(call_fiber, &S.held);
	if (!wait_for(&Gate.started, 1)) {
		gate_open();
		weft_join(h, NULL);
		return NULL;
	}
	weft_task *t[SR];
	for (int i = 0; i < SR; i++) {
		S.q[i].fn = gate_fn;
		S.q[i].arg = (void *)(uintptr_t)(200 + i);
		t[i] = weft_spawn(sat_racer, &S.q[i]);
	}
	S.ok = wait_for(&S.eagain, SR - SQ);
	weft_sleep(20 * MS);
	S.eagain_settled = atomic_load(&S.eagain);
	gate_open();
	weft_gather(t, SR, NULL);
	weft_join(h, NULL);
	return NULL;
}

static void test_saturation_workers2(void **state)
{
	(void)state;
	memset(&S, 0, sizeof S);
	gate_reset();
	weft_config c = cfg(2, 1, SQ);
	assert_int_equal(weft_run(&c, sat_main_w2, NULL, NULL), 0);
	assert_true(S.ok);
	assert_int_equal(S.eagain_settled, SR - SQ);
	assert_int_equal(S.held.ret, 0);
	int ok = 0, again = 0;
	for (int i = 0; i < SR; i++) {
		if (S.q[i].ret == 0) {
			ok++;
			assert_ptr_equal(S.q[i].res,
					 (void *)(uintptr_t)(200 + i));
		} else {
			assert_int_equal(S.q[i].ret, -EAGAIN);
			again++;
		}
	}
	assert_int_equal(ok, SQ);
	assert_int_equal(again, SR - SQ);
	assert_int_equal(atomic_load(&Gate.started), SQ + 1);
}

/* ---- cancel while queued --------------------------------------------------------- */

static struct {
	struct call held, victim;
	int victim_join;
	uint64_t victim_wait; /* cancel -> victim returned */
} K;

static void *cancel_queued_main(void *arg)
{
	(void)arg;
	K.held.fn = gate_fn;
	weft_task *h = weft_spawn(call_fiber, &K.held);
	if (!wait_for(&Gate.started, 1)) {
		gate_open();
		weft_join(h, NULL);
		return NULL;
	}
	K.victim.fn = mark_fn;
	weft_task *v = weft_spawn(call_fiber, &K.victim);
	wait_for(&K.victim.calling, 1);
	weft_sleep(5 * MS); /* it has queued its call and parked */
	uint64_t t0 = weft_now();
	weft_cancel(v);
	K.victim_join = weft_join(v, NULL);
	K.victim_wait = weft_now() - t0;
	gate_open();
	weft_join(h, NULL);
	return NULL;
}

static void run_cancel_queued(unsigned workers)
{
	memset(&K, 0, sizeof K);
	gate_reset();
	atomic_store(&mark_ran, 0);
	weft_config c = cfg(workers, 1, 0);
	assert_int_equal(weft_run(&c, cancel_queued_main, NULL, NULL), 0);
	assert_int_equal(K.victim.ret, -ECANCELED);
	assert_ptr_equal(K.victim.res, (void *)(uintptr_t)0xbad); /* untouched */
	assert_int_equal(K.victim_join, -ECANCELED);
	assert_true(K.victim_wait < 2 * SEC); /* it did not wait for the gate */
	assert_int_equal(atomic_load(&mark_ran), 0); /* pool joined: final */
	assert_int_equal(K.held.ret, 0);
}

static void test_cancel_queued_workers1(void **state)
{
	(void)state;
	run_cancel_queued(1);
}

static void test_cancel_queued_workers2(void **state)
{
	(void)state;
	run_cancel_queued(2);
}

/* ---- cancel while running ----------------------------------------------------------- */

static struct {
	_Atomic int started, finished;
	int ret, fin_at_return, sleep_after, blocking_after, join_ret;
	void *res;
	uint64_t elapsed;
} U;

static void *slow_fn(void *arg)
{
	atomic_store(&U.started, 1);
	usleep(50 * 1000);
	atomic_store(&U.finished, 1);
	return arg;
}

static void *cancel_running_fiber(void *arg)
{
	(void)arg;
	uint64_t t0 = weft_now();
	U.ret = weft_blocking(slow_fn, (void *)(uintptr_t)0x42, &U.res);
	U.elapsed = weft_now() - t0;
	U.fin_at_return = atomic_load(&U.finished);
	U.sleep_after = weft_sleep(1 * MS);                 /* sticky */
	U.blocking_after = weft_blocking(mark_fn, NULL, NULL); /* sticky */
	return NULL;
}

static void *cancel_running_main(void *arg)
{
	(void)arg;
	weft_task *t = weft_spawn(cancel_running_fiber, NULL);
	wait_for(&U.started, 1);
	weft_cancel(t);
	U.join_ret = weft_join(t, NULL);
	return NULL;
}

static void test_cancel_running(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("pool threads running beside the workers (seeded, the master waits for the pool)");
	memset(&U, 0, sizeof U);
	atomic_store(&mark_ran, 0);
	weft_config c = cfg(2, 1, 0);
	assert_int_equal(weft_run(&c, cancel_running_main, NULL, NULL), 0);
	assert_int_equal(U.ret, 0);
	assert_ptr_equal(U.res, (void *)(uintptr_t)0x42);
	assert_int_equal(U.fin_at_return, 1);
	assert_true(U.elapsed >= 50 * MS);
	assert_int_equal(U.sleep_after, -ECANCELED);
	assert_int_equal(U.blocking_after, -ECANCELED);
	assert_int_equal(atomic_load(&mark_ran), 0);
	assert_int_equal(U.join_ret, -ECANCELED);
}

/* ---- deadlines ----------------------------------------------------------------------- */

static struct {
	struct call held;
	int queued_ret, passed_ret, running_ret, sleep_after_running;
	uint64_t queued_elapsed, passed_elapsed, running_elapsed;
	void *running_res;
} D;

static void *dl_queued_fiber(void *arg)
{
	(void)arg;
	weft_deadline d;
	weft_deadline_push(&d, 20 * MS);
	uint64_t t0 = weft_now();
	D.queued_ret = weft_blocking(mark_fn, NULL, NULL);
	D.queued_elapsed = weft_now() - t0;
	weft_deadline_pop(&d);
	return NULL;
}

static void *dl_passed_fiber(void *arg)
{
	(void)arg;
	weft_deadline d;
	weft_deadline_push_at(&d, weft_now() - 1);
	uint64_t t0 = weft_now();
	D.passed_ret = weft_blocking(mark_fn, NULL, NULL);
	D.passed_elapsed = weft_now() - t0;
	weft_deadline_pop(&d);
	return NULL;
}

static void *dl_running_fiber(void *arg)
{
	(void)arg;
	weft_deadline d;
	weft_deadline_push(&d, 10 * MS);
	uint64_t t0 = weft_now();
	D.running_ret = weft_blocking(slow_fn, (void *)(uintptr_t)9,
				      &D.running_res);
	D.running_elapsed = weft_now() - t0;
	D.sleep_after_running = weft_sleep(1 * MS); /* deadline has passed */
	weft_deadline_pop(&d);
	return NULL;
}

static void *deadline_main(void *arg)
{
	(void)arg;
	D.held.fn = gate_fn;
	weft_task *h = weft_spawn(call_fiber, &D.held);
	if (wait_for(&Gate.started, 1)) {
		weft_join(weft_spawn(dl_queued_fiber, NULL), NULL);
		weft_join(weft_spawn(dl_passed_fiber, NULL), NULL);
	}
	gate_open();
	weft_join(h, NULL);
	weft_join(weft_spawn(dl_running_fiber, NULL), NULL);
	return NULL;
}

static void test_deadline(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("pool threads running beside the workers (seeded, the master waits for the pool)");
	memset(&D, 0, sizeof D);
	memset(&U, 0, sizeof U);
	gate_reset();
	atomic_store(&mark_ran, 0);
	weft_config c = cfg(2, 1, 0);
	assert_int_equal(weft_run(&c, deadline_main, NULL, NULL), 0);
	assert_int_equal(D.queued_ret, -ETIMEDOUT);
	assert_true(D.queued_elapsed >= 20 * MS);
	assert_true(D.queued_elapsed < 2 * SEC);
	assert_int_equal(D.passed_ret, -ETIMEDOUT);
	assert_true(D.passed_elapsed < 1 * SEC);
	assert_int_equal(atomic_load(&mark_ran), 0);
	assert_int_equal(D.held.ret, 0);
	assert_int_equal(D.running_ret, 0);
	assert_ptr_equal(D.running_res, (void *)(uintptr_t)9);
	assert_true(D.running_elapsed >= 50 * MS);
	assert_int_equal(D.sleep_after_running, -ETIMEDOUT);
}

/* ---- pool threads: bounded, joined by weft_run ------------------------------------- */

#ifdef WEFT_BLOCKING_IDLE_MS
#define RETIRE_CHECK 1
#else
#define RETIRE_CHECK 0
#endif

static struct {
	int base, after_burst, after_idle, after_burst2, after_idle2;
	_Atomic int errs, running, met;
} T;

/* fn: hold the thread until 4 calls run at once (so no thread goes idle
 * and every submit starts one), at most 5 s */
static void *burst_fn(void *arg)
{
	if (atomic_fetch_add(&T.running, 1) + 1 >= 4)
		atomic_store(&T.met, 1);
	uint64_t until = weft_now() + 5 * SEC;
	while (!atomic_load(&T.met) && weft_now() < until)
		usleep(100);
	if (!atomic_load(&T.met))
		atomic_fetch_add(&T.errs, 1);
	atomic_fetch_sub(&T.running, 1);
	return arg;
}

static void *burst_fiber(void *arg)
{
	void *r = NULL;
	if (weft_blocking(burst_fn, arg, &r) != 0 || r != arg)
		atomic_fetch_add(&T.errs, 1);
	return NULL;
}

static void burst(void)
{
	atomic_store(&T.met, 0);
	weft_task *t[8];
	for (uintptr_t i = 0; i < 8; i++)
		t[i] = weft_spawn(burst_fiber, (void *)(i + 1));
	weft_gather(t, 8, NULL);
}

static void *threads_main(void *arg)
{
	(void)arg;
	T.base = count_tasks();
	burst();
	T.after_burst = count_tasks();
#if RETIRE_CHECK
	weft_sleep((uint64_t)WEFT_BLOCKING_IDLE_MS * 2 * MS + 200 * MS);
	T.after_idle = count_tasks();
	burst(); /* threads start again, and retire again (the chain) */
	T.after_burst2 = count_tasks();
	weft_sleep((uint64_t)WEFT_BLOCKING_IDLE_MS * 2 * MS + 200 * MS);
	T.after_idle2 = count_tasks();
#endif
	return NULL;
}

static void test_threads_bounded_and_joined(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("pool threads running beside the workers (seeded, the master waits for the pool)");
	int before = count_tasks();
	assert_true(before >= 1);
	for (int run = 0; run < 2; run++) {
		memset(&T, 0, sizeof T);
		weft_config c = cfg(2, 4, 0);
		assert_int_equal(weft_run(&c, threads_main, NULL, NULL), 0);
		assert_int_equal(atomic_load(&T.errs), 0);
		/* 8 overlapping calls, 4 threads allowed: exactly 4 started,
		 * and they stay while idle */
		assert_int_equal(T.after_burst, T.base + 4);
#if RETIRE_CHECK
		assert_int_equal(T.after_idle, T.base);
		assert_int_equal(T.after_burst2, T.base + 4);
		assert_int_equal(T.after_idle2, T.base);
#endif
		/* weft_run joined every pool thread (and worker) */
		assert_int_equal(count_tasks_settled(before), before);
	}
}

/* ---- stress: cancel and deadline at random moments ---------------------------------- */

#define BATCH 32

static struct {
	size_t n;
	bool by_deadline;
	_Atomic unsigned char *ran;
	int *ret;
	void **res;
	_Atomic int cur, max;
	size_t ok, stopped; /* counted on the main stack */
} Z;

static uint64_t zrand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *stress_fn(void *arg)
{
	size_t i = (size_t)(uintptr_t)arg;
	atomic_fetch_add(&Z.ran[i], 1);
	int c = atomic_fetch_add(&Z.cur, 1) + 1;
	int m = atomic_load(&Z.max);
	while (c > m && !atomic_compare_exchange_weak(&Z.max, &m, c))
		;
	uint64_t until = weft_now() + (i * 7919 % 40) * 1000;
	while (weft_now() < until)
		;
	atomic_fetch_sub(&Z.cur, 1);
	return (void *)(uintptr_t)(i + 1);
}

static void *stress_fiber(void *arg)
{
	size_t i = (size_t)(uintptr_t)arg;
	weft_deadline d;
	if (Z.by_deadline)
		weft_deadline_push(&d, (i * 2654435761u) % 120 * 1000);
	Z.ret[i] = weft_blocking(stress_fn, arg, &Z.res[i]);
	if (Z.by_deadline)
		weft_deadline_pop(&d);
	return NULL;
}

static void *stress_main(void *arg)
{
	(void)arg;
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	for (size_t base = 0; base < Z.n; base += BATCH) {
		size_t k = Z.n - base < BATCH ? Z.n - base : BATCH;
		weft_task *t[BATCH];
		for (size_t j = 0; j < k; j++)
			t[j] = weft_spawn(stress_fiber,
					  (void *)(uintptr_t)(base + j));
		if (!Z.by_deadline) {
			/* cancel in a random order at random moments */
			for (size_t j = k; j > 1; j--) {
				size_t r = zrand(&seed) % j;
				weft_task *x = t[j - 1];
				t[j - 1] = t[r];
				t[r] = x;
			}
			for (size_t j = 0; j < k; j++) {
				unsigned y = zrand(&seed) % 4;
				for (unsigned q = 0; q < y; q++)
					weft_yield();
				if (zrand(&seed) % 8 == 0)
					weft_sleep(zrand(&seed) % 50 * 1000);
				weft_cancel(t[j]);
			}
		}
		weft_gather(t, k, NULL);
	}
	return NULL;
}

static void run_stress(bool by_deadline)
{
	memset(&Z, 0, sizeof Z);
	Z.n = scaled(20000, 400);
	Z.by_deadline = by_deadline;
	Z.ran = calloc(Z.n, sizeof *Z.ran);
	Z.ret = calloc(Z.n, sizeof *Z.ret);
	Z.res = calloc(Z.n, sizeof *Z.res);
	assert_non_null(Z.ran);
	assert_non_null(Z.ret);
	assert_non_null(Z.res);
	weft_config c = cfg(2, 4, 0);
	assert_int_equal(weft_run(&c, stress_main, NULL, NULL), 0);
	int want_err = by_deadline ? -ETIMEDOUT : -ECANCELED;
	size_t bad = 0;
	for (size_t i = 0; i < Z.n; i++) {
		unsigned ran = atomic_load(&Z.ran[i]);
		if (Z.ret[i] == 0 && ran == 1 &&
		    Z.res[i] == (void *)(uintptr_t)(i + 1))
			Z.ok++;
		else if (Z.ret[i] == want_err && ran == 0 && !Z.res[i])
			Z.stopped++;
		else
			bad++;
	}
	print_message("stress (%s): %zu calls, %zu done, %zu stopped\n",
		      by_deadline ? "deadline" : "cancel", Z.n, Z.ok,
		      Z.stopped);
	assert_int_equal(bad, 0);
	assert_int_equal(Z.ok + Z.stopped, Z.n);
	assert_true(atomic_load(&Z.max) <= 4);
	free((void *)Z.ran);
	free(Z.ret);
	free(Z.res);
}

static void test_stress_cancel(void **state)
{
	(void)state;
	run_stress(false);
}

static void test_stress_deadline(void **state)
{
	(void)state;
	run_stress(true);
}

/* ---- a call a thread is coming for is not "queued" -------------------------- */

/* 4 threads, a queue of 1: of 6 calls at once, 4 get a thread (started on
 * demand), one waits in the queue, only the last is refused. The queue
 * used to count calls a thread just started (or idle) was about to take:
 * 3 of the 4 were refused. workers=1: the callers run one by one, each
 * until its call parks, before any pool thread need have come up. */
#define FQ 6
static struct call fq[FQ];

static void *fq_main(void *arg)
{
	(void)arg;
	weft_task *t[FQ];
	for (int i = 0; i < FQ; i++) {
		fq[i].fn = gate_fn;
		fq[i].arg = (void *)(uintptr_t)(300 + i);
		t[i] = weft_spawn(call_fiber, &fq[i]);
	}
	weft_yield(); /* behind all six: each called and parked (or not) */
	wait_for(&Gate.started, 4);
	gate_open();
	weft_gather(t, FQ, NULL);
	return NULL;
}

static void test_threads_to_start_are_not_queue(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("pool threads running beside the workers (seeded, the master waits for the pool)");
	memset(fq, 0, sizeof fq);
	gate_reset();
	weft_config c = cfg(1, 4, 1);
	assert_int_equal(weft_run(&c, fq_main, NULL, NULL), 0);
	int ok = 0, again = 0;
	for (int i = 0; i < FQ; i++) {
		if (fq[i].ret == 0) {
			ok++;
			assert_ptr_equal(fq[i].res,
					 (void *)(uintptr_t)(300 + i));
		} else {
			assert_int_equal(fq[i].ret, -EAGAIN);
			again++;
		}
	}
	assert_int_equal(ok, FQ - 1); /* 4 on threads, 1 queued */
	assert_int_equal(again, 1);
	assert_int_equal(atomic_load(&Gate.started), FQ - 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_progress_workers1),
		cmocka_unit_test(test_progress_workers2),
		cmocka_unit_test(test_all_workers_free_1),
		cmocka_unit_test(test_all_workers_free_2),
		cmocka_unit_test(test_all_workers_free_4),
		cmocka_unit_test(test_results),
		cmocka_unit_test(test_einval),
		cmocka_unit_test(test_concurrent_200_on_4),
		cmocka_unit_test(test_saturation_workers1),
		cmocka_unit_test(test_saturation_workers2),
		cmocka_unit_test(test_threads_to_start_are_not_queue),
		cmocka_unit_test(test_cancel_queued_workers1),
		cmocka_unit_test(test_cancel_queued_workers2),
		cmocka_unit_test(test_cancel_running),
		cmocka_unit_test(test_deadline),
		cmocka_unit_test(test_threads_bounded_and_joined),
		cmocka_unit_test(test_stress_cancel),
		cmocka_unit_test(test_stress_deadline),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
