/* Description: every documented misuse gets its documented answer, and the
 * runtime keeps working after it.
 *
 * - outside any fiber (main() before weft_run, or a foreign pthread while it
 *   runs): join / sleep / gather -> -EINVAL, spawn -> NULL, worker id ->
 *   WEFT_NO_WORKER, yield returns;
 * - weft_join(NULL), join twice, join self, join a detached task ->
 *   -EINVAL; weft_cancel(NULL) or of a joined task -> -EINVAL;
 *   weft_spawn(NULL fn) -> NULL;
 * - weft_run: NULL main -> -EINVAL, nested or concurrent -> -EBUSY, bad
 *   config fields -> -EINVAL (faults, pct too), malformed WEFT_WORKERS /
 *   WEFT_STACK_SIZE / WEFT_BLOCKING_THREADS -> -EINVAL (and nothing ran);
 *   explicit config fields win over the environment;
 * - weft_gather with a NULL entry -> -EINVAL and no task joined;
 * - weft_detach of a joined (or detached) task aborts with a message (in a
 *   fork()ed child);
 * - weft_strerror is never NULL and says something sensible;
 * - bad arguments to every public call (io, net, conn, chan, sync, group,
 *   blocking, metrics, debug, deadline, sim, weft_run's config), outside a
 *   fiber, from a pool thread: the documented errno, no fd left open;
 * - a weft_run that fails half-way (out of fds) leaves nothing behind;
 * - handles kept past their runtime: cancel / set_name -EINVAL, detach a
 *   no-op (they used to read unmapped memory).
 * After each misuse inside a run, a normal spawn/join must still work.
 *
 * Fibers never call assert_* (cmocka longjmps): they record into globals and
 * the test function checks after weft_run returns.
 */
#define _GNU_SOURCE
#include <string.h>
#include <limits.h>
#include <pthread.h>
#include <time.h>

#include <fcntl.h>

#include "testutil.h"

/* ---- helpers run inside fibers ------------------------------------------- */

static void *echo_fn(void *arg)
{
	return arg;
}

static void *sleep_fn(void *arg)
{
	weft_sleep((uint64_t)(uintptr_t)arg);
	return arg;
}

/* A normal spawn/join after a misuse: 1 if it worked. */
static int still_works(void)
{
	int ok = 1;
	for (uintptr_t i = 1; i <= 4; i++) {
		weft_task *t = weft_spawn(echo_fn, (void *)i);
		void *r = NULL;
		if (!t || weft_join(t, &r) != 0 || r != (void *)i)
			ok = 0;
	}
	weft_task *s = weft_spawn(sleep_fn, (void *)(uintptr_t)(1 * MS));
	if (!s || weft_join(s, NULL) != 0)
		ok = 0;
	return ok;
}

static _Atomic int ran_flag;

static void *flag_main(void *arg)
{
	atomic_store(&ran_flag, 1);
	return arg;
}

/* ---- outside any runtime --------------------------------------------------- */

static void test_outside_runtime(void **state)
{
	(void)state;
	weft_task *none[1] = {NULL};
	assert_int_equal(weft_join(NULL, NULL), -EINVAL);
	assert_int_equal(weft_sleep(0), -EINVAL);
	assert_int_equal(weft_sleep(1000), -EINVAL);
	assert_int_equal(weft_gather(NULL, 0, NULL), -EINVAL);
	assert_int_equal(weft_gather(none, 1, NULL), -EINVAL);
	assert_int_equal(weft_cancel(NULL), -EINVAL);
	atomic_store(&ran_flag, 0);
	assert_null(weft_spawn(flag_main, NULL));
	assert_null(weft_spawn(NULL, NULL));
	assert_int_equal(weft_worker_id(), WEFT_NO_WORKER);
	assert_int_equal(weft_worker_count(), 0);
	assert_int_equal(weft_self_id(), 0);
	weft_yield(); /* returns at once */
	weft_detach(NULL); /* ignored */
	uint64_t a = weft_now(), b = weft_now();
	assert_true(a > 0 && b >= a);
	/* the task refused above never runs, not even in a later runtime */
	assert_int_equal(weft_run(NULL, echo_fn, NULL, NULL), 0);
	assert_int_equal(atomic_load(&ran_flag), 0);
	/* and after that runtime ended: refused again */
	assert_null(weft_spawn(flag_main, NULL));
	assert_int_equal(weft_worker_id(), WEFT_NO_WORKER);
}

/* ---- weft_run arguments and config -------------------------------------------- */

static void expect_run_fails(const weft_config *c, int err)
{
	atomic_store(&ran_flag, 0);
	void *res = (void *)(uintptr_t)0x77;
	assert_int_equal(weft_run(c, flag_main, (void *)(uintptr_t)1, &res),
			 err);
	assert_int_equal(atomic_load(&ran_flag), 0); /* nothing ran */
	assert_ptr_equal(res, (void *)(uintptr_t)0x77);
	assert_int_equal(weft_worker_count(), 0);
}

static void expect_run_works(const weft_config *c)
{
	atomic_store(&ran_flag, 0);
	void *res = NULL;
	assert_int_equal(weft_run(c, flag_main, (void *)(uintptr_t)1, &res),
			 0);
	assert_int_equal(atomic_load(&ran_flag), 1);
	assert_ptr_equal(res, (void *)(uintptr_t)1);
}

static int works_ok;
static unsigned works_count;

static void *works_main(void *arg)
{
	(void)arg;
	works_ok = still_works();
	works_count = weft_worker_count();
	return NULL;
}

static void test_run_bad_args(void **state)
{
	(void)state;
	weft_config c;
	assert_int_equal(weft_run(NULL, NULL, NULL, NULL), -EINVAL);
	weft_config_init(&c);
	assert_int_equal(weft_run(&c, NULL, NULL, NULL), -EINVAL);

	c = cfg_workers(5000);
	expect_run_fails(&c, -EINVAL);
	c = cfg_workers(1025);
	expect_run_fails(&c, -EINVAL);

	weft_config_init(&c);
	c.stack_size = 1000;
	expect_run_fails(&c, -EINVAL);
	c.stack_size = 16 * 1024 - 1;
	expect_run_fails(&c, -EINVAL);
	c.stack_size = 2ull << 30;
	expect_run_fails(&c, -EINVAL);
	c.stack_size = (1ull << 30) + 1;
	expect_run_fails(&c, -EINVAL);

	weft_config_init(&c);
	c.ring_entries = 100000;
	expect_run_fails(&c, -EINVAL);
	c.ring_entries = 32769;
	expect_run_fails(&c, -EINVAL);

	weft_config_init(&c);
	c.blocking_threads = 4097;
	expect_run_fails(&c, -EINVAL);
	weft_config_init(&c);
	c.blocking_queue = (1u << 20) + 1;
	expect_run_fails(&c, -EINVAL);

	/* seeded runs (weft/sim.h): malformed faults, PCT too deep */
	weft_config_init(&c);
	c.seed = 1;
	c.faults = "short=2";
	expect_run_fails(&c, -EINVAL);
	c.faults = "bogus=0.1";
	expect_run_fails(&c, -EINVAL);
	c.faults = "short=0.1,";
	expect_run_fails(&c, -EINVAL);
	c.faults = "0.5x";
	expect_run_fails(&c, -EINVAL);
	c.faults = NULL;
	c.pct = 65;
	expect_run_fails(&c, -EINVAL);

	/* the smallest stack allowed works, fibers and all */
	weft_config_init(&c);
	c.stack_size = 16 * 1024;
	works_ok = 0;
	assert_int_equal(weft_run(&c, works_main, NULL, NULL), 0);
	assert_int_equal(works_ok, 1);
	/* and so does a default run after all those failures */
	expect_run_works(NULL);
}

/* ---- the environment ------------------------------------------------------------ */

/* Set (or with NULL unset) an env var; returns its old value (malloc'd). */
static char *env_swap(const char *name, const char *val)
{
	const char *old = getenv(name);
	char *saved = old ? strdup(old) : NULL;
	if (val)
		setenv(name, val, 1);
	else
		unsetenv(name);
	return saved;
}

static void env_restore(const char *name, char *saved)
{
	if (saved)
		setenv(name, saved, 1);
	else
		unsetenv(name);
	free(saved);
}

static void expect_env(const char *name, const char *val, int err)
{
	char *saved = env_swap(name, val);
	atomic_store(&ran_flag, 0);
	int r = weft_run(NULL, flag_main, NULL, NULL);
	int ran = atomic_load(&ran_flag);
	env_restore(name, saved);
	if (r != err)
		print_error("%s=\"%s\": weft_run returned %d, expected %d\n",
			    name, val, r, err);
	assert_int_equal(r, err);
	assert_int_equal(ran, err == 0);
}

static void test_env_bad(void **state)
{
	(void)state;
	/* other variables must not interfere */
	char *sw = env_swap("WEFT_WORKERS", NULL);
	char *ss = env_swap("WEFT_STACK_SIZE", NULL);
	char *sb = env_swap("WEFT_BLOCKING_THREADS", NULL);

	const char *bad_workers[] = {"abc", "0", "-1", "99999", "1025",
				     "2x", " 2", "2 ", "1.5"};
	for (size_t i = 0; i < sizeof bad_workers / sizeof *bad_workers; i++)
		expect_env("WEFT_WORKERS", bad_workers[i], -EINVAL);
	const char *bad_stack[] = {"12x", "abc", "-1", "1000", "8k",
				   "2g", "64 k"};
	for (size_t i = 0; i < sizeof bad_stack / sizeof *bad_stack; i++)
		expect_env("WEFT_STACK_SIZE", bad_stack[i], -EINVAL);
	const char *bad_blocking[] = {"abc", "0", "4097", "-3"};
	for (size_t i = 0; i < sizeof bad_blocking / sizeof *bad_blocking; i++)
		expect_env("WEFT_BLOCKING_THREADS", bad_blocking[i], -EINVAL);

	const char *bad_seed[] = {"abc", "0", "-1", "1x"};
	for (size_t i = 0; i < sizeof bad_seed / sizeof *bad_seed; i++)
		expect_env("WEFT_SEED", bad_seed[i], -EINVAL);
	expect_env("WEFT_PCT", "65", -EINVAL);
	expect_env("WEFT_PCT", "x", -EINVAL);
	expect_env("WEFT_FAULTS", "short=-1", -EINVAL);
	expect_env("WEFT_FAULTS", "nope=0.1", -EINVAL);

	/* well-formed values work and take effect */
	expect_env("WEFT_STACK_SIZE", "32k", 0);
	expect_env("WEFT_STACK_SIZE", "65536", 0);
	expect_env("WEFT_BLOCKING_THREADS", "3", 0);
	for (unsigned n = 1; n <= 3; n++) {
		char v[8];
		snprintf(v, sizeof v, "%u", n);
		char *s = env_swap("WEFT_WORKERS", v);
		works_ok = 0;
		works_count = 0;
		int r = weft_run(NULL, works_main, NULL, NULL);
		env_restore("WEFT_WORKERS", s);
		assert_int_equal(r, 0);
		assert_int_equal(works_ok, 1);
		assert_int_equal(works_count, n);
	}

	/* an explicit config field wins: the env var is not even parsed */
	char *s = env_swap("WEFT_WORKERS", "abc");
	weft_config c = cfg_workers(2);
	works_ok = 0;
	int r = weft_run(&c, works_main, NULL, NULL);
	env_restore("WEFT_WORKERS", s);
	assert_int_equal(r, 0);
	assert_int_equal(works_ok, 1);
	assert_int_equal(works_count, 2);

	s = env_swap("WEFT_STACK_SIZE", "12x");
	weft_config_init(&c);
	c.stack_size = 64 * 1024;
	works_ok = 0;
	r = weft_run(&c, works_main, NULL, NULL);
	env_restore("WEFT_STACK_SIZE", s);
	assert_int_equal(r, 0);
	assert_int_equal(works_ok, 1);

	env_restore("WEFT_WORKERS", sw);
	env_restore("WEFT_STACK_SIZE", ss);
	env_restore("WEFT_BLOCKING_THREADS", sb);
	/* back to the caller's environment: a run works */
	expect_run_works(NULL);
}

/* ---- nested and concurrent weft_run ------------------------------------------- */

static struct {
	int nested_ret;
	_Atomic int rt_up, thread_done;
	int thread_ret, wait_fail, ok;
} NR;

static void *nested_main(void *arg)
{
	(void)arg;
	atomic_store(&ran_flag, 0);
	NR.nested_ret = weft_run(NULL, flag_main, NULL, NULL);
	atomic_store(&NR.rt_up, 1);
	if (wait_flag(&NR.thread_done))
		NR.wait_fail = 1;
	NR.ok = still_works();
	return NULL;
}

static void *concurrent_thread(void *arg)
{
	(void)arg;
	for (int k = 0; k < 20000 && !atomic_load(&NR.rt_up); k++)
		nanosleep(&(struct timespec){0, 500000}, NULL);
	NR.thread_ret = weft_run(NULL, flag_main, NULL, NULL);
	atomic_store(&NR.thread_done, 1);
	return NULL;
}

static void test_nested_and_concurrent_run(void **state)
{
	(void)state;
	memset(&NR, 0, sizeof NR);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, concurrent_thread, NULL),
			 0);
	int r = weft_run(NULL, nested_main, NULL, NULL);
	pthread_join(th, NULL);
	assert_int_equal(r, 0);
	assert_int_equal(NR.nested_ret, -EBUSY);
	assert_int_equal(NR.thread_ret, -EBUSY);
	assert_int_equal(NR.wait_fail, 0);
	assert_int_equal(atomic_load(&ran_flag), 0); /* neither ran */
	assert_int_equal(NR.ok, 1);
	/* and the runtime can be started again afterwards */
	expect_run_works(NULL);
}

/* ---- join misuse -------------------------------------------------------------- */

static struct {
	int join_null, twice_first, twice_second, cancel_joined;
	int self_join, self_outer;
	void *self_result;
	int detached_join;
	int ok[5];
	_Atomic(weft_task *) self_handle;
} JM;

static void *self_joiner(void *arg)
{
	(void)arg;
	/* wait for our own handle, then try to join ourselves */
	uint64_t until = weft_now() + 10 * SEC;
	weft_task *me;
	while (!(me = atomic_load(&JM.self_handle)) && weft_now() < until)
		weft_sleep(1 * MS);
	JM.self_join = me ? weft_join(me, NULL) : 1;
	return (void *)(uintptr_t)99;
}

static void *join_misuse_main(void *arg)
{
	(void)arg;
	JM.join_null = weft_join(NULL, NULL);
	JM.ok[0] = still_works();

	weft_task *t = weft_spawn(echo_fn, (void *)(uintptr_t)5);
	JM.twice_first = weft_join(t, NULL);
	/* no spawn in between: t is a stale handle now */
	JM.twice_second = weft_join(t, NULL);
	JM.cancel_joined = weft_cancel(t);
	JM.ok[1] = still_works();

	weft_task *s = weft_spawn(self_joiner, NULL);
	atomic_store(&JM.self_handle, s);
	/* the failed self-join must leave the handle joinable */
	JM.self_outer = weft_join(s, &JM.self_result);
	JM.ok[2] = still_works();

	weft_task *d = weft_spawn(sleep_fn, (void *)(uintptr_t)(20 * MS));
	weft_detach(d);
	JM.detached_join = weft_join(d, NULL); /* still alive, detached */
	JM.ok[3] = still_works();
	weft_sleep(30 * MS); /* let it end */
	JM.ok[4] = still_works();
	return NULL;
}

static void test_join_misuse(void **state)
{
	(void)state;
	memset(&JM, 0, sizeof JM);
	assert_int_equal(weft_run(NULL, join_misuse_main, NULL, NULL), 0);
	assert_int_equal(JM.join_null, -EINVAL);
	assert_int_equal(JM.twice_first, 0);
	assert_int_equal(JM.twice_second, -EINVAL);
	assert_int_equal(JM.cancel_joined, -EINVAL);
	assert_int_equal(JM.self_join, -EINVAL);
	assert_int_equal(JM.self_outer, 0);
	assert_ptr_equal(JM.self_result, (void *)(uintptr_t)99);
	assert_int_equal(JM.detached_join, -EINVAL);
	for (int i = 0; i < 5; i++)
		assert_int_equal(JM.ok[i], 1);
}

/* ---- calls from a non-fiber thread while a runtime runs --------------------- */

static struct {
	_Atomic(weft_task *) handle;
	_Atomic int thread_done;
	int join_ret, sleep_ret, sleep0_ret, gather_ret, gather_null_ret;
	unsigned worker_id, worker_count;
	uint64_t self_id;
	int outer_join, wait_fail, ok, timed_out;
	void *result;
} FT;

static void *ft_thread(void *arg)
{
	(void)arg;
	weft_task *t = NULL;
	for (int k = 0; k < 20000 && !(t = atomic_load(&FT.handle)); k++)
		nanosleep(&(struct timespec){0, 500000}, NULL);
	if (!t) {
		FT.timed_out = 1;
	} else {
		FT.join_ret = weft_join(t, NULL); /* not a fiber */
		weft_task *arr[1] = {t};
		FT.gather_ret = weft_gather(arr, 1, NULL);
		FT.gather_null_ret = weft_gather(NULL, 0, NULL);
	}
	FT.sleep_ret = weft_sleep(1 * MS);
	FT.sleep0_ret = weft_sleep(0);
	FT.worker_id = weft_worker_id();
	FT.worker_count = weft_worker_count();
	FT.self_id = weft_self_id();
	weft_yield(); /* returns */
	atomic_store(&FT.thread_done, 1);
	return NULL;
}

static void *ft_main(void *arg)
{
	(void)arg;
	weft_task *t = weft_spawn(sleep_fn, (void *)(uintptr_t)(20 * MS));
	atomic_store(&FT.handle, t);
	if (wait_flag(&FT.thread_done))
		FT.wait_fail = 1;
	/* the foreign join and gather did not take the handle */
	FT.outer_join = weft_join(t, &FT.result);
	FT.ok = still_works();
	return NULL;
}

static void test_calls_from_foreign_thread(void **state)
{
	(void)state;
	memset(&FT, 0, sizeof FT);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, ft_thread, NULL), 0);
	weft_config c = cfg_workers(2);
	int r = weft_run(&c, ft_main, NULL, NULL);
	pthread_join(th, NULL);
	assert_int_equal(r, 0);
	assert_int_equal(FT.timed_out, 0);
	assert_int_equal(FT.wait_fail, 0);
	assert_int_equal(FT.join_ret, -EINVAL);
	assert_int_equal(FT.gather_ret, -EINVAL);
	assert_int_equal(FT.gather_null_ret, -EINVAL);
	assert_int_equal(FT.sleep_ret, -EINVAL);
	assert_int_equal(FT.sleep0_ret, -EINVAL);
	assert_int_equal(FT.worker_id, WEFT_NO_WORKER);
	assert_int_equal(FT.worker_count, 2); /* the running runtime's */
	assert_int_equal(FT.self_id, 0);
	assert_int_equal(FT.outer_join, 0);
	assert_ptr_equal(FT.result, (void *)(uintptr_t)(20 * MS));
	assert_int_equal(FT.ok, 1);
}

/* ---- gather and spawn misuse -------------------------------------------------- */

static struct {
	int null_arr, null_entry, empty, ok[3];
	int join_a, join_b;
	void *res_a, *res_b;
	void *results[3];
	int spawn_null_fn, null_fn_ok;
	unsigned id_in_fiber, count_in_fiber;
} GM;

static void *gather_misuse_main(void *arg)
{
	(void)arg;
	void *res[2] = {0};
	GM.null_arr = weft_gather(NULL, 2, res);
	GM.empty = weft_gather(NULL, 0, NULL);
	GM.ok[0] = still_works();

	weft_task *a = weft_spawn(echo_fn, (void *)(uintptr_t)11);
	weft_task *b = weft_spawn(sleep_fn, (void *)(uintptr_t)(2 * MS));
	weft_task *arr[3] = {a, NULL, b};
	GM.results[0] = GM.results[2] = (void *)(uintptr_t)0x77;
	GM.null_entry = weft_gather(arr, 3, GM.results);
	/* no task was joined: both still can be */
	GM.join_a = weft_join(a, &GM.res_a);
	GM.join_b = weft_join(b, &GM.res_b);
	GM.ok[1] = still_works();

	GM.spawn_null_fn = weft_spawn(NULL, (void *)(uintptr_t)1) == NULL;
	GM.ok[2] = still_works();
	GM.id_in_fiber = weft_worker_id();
	GM.count_in_fiber = weft_worker_count();
	return NULL;
}

static void test_gather_and_spawn_misuse(void **state)
{
	(void)state;
	memset(&GM, 0, sizeof GM);
	assert_int_equal(weft_run(NULL, gather_misuse_main, NULL, NULL), 0);
	assert_int_equal(GM.null_arr, -EINVAL);
	assert_int_equal(GM.empty, 0); /* n == 0 in a fiber: nothing to do */
	assert_int_equal(GM.null_entry, -EINVAL);
	assert_int_equal(GM.join_a, 0);
	assert_ptr_equal(GM.res_a, (void *)(uintptr_t)11);
	assert_int_equal(GM.join_b, 0);
	assert_ptr_equal(GM.res_b, (void *)(uintptr_t)(2 * MS));
	assert_int_equal(GM.spawn_null_fn, 1);
	assert_true(GM.count_in_fiber >= 1);
	assert_true(GM.id_in_fiber < GM.count_in_fiber);
	for (int i = 0; i < 3; i++)
		assert_int_equal(GM.ok[i], 1);
}

/* ---- weft_detach of a joined or detached task aborts -------------------------- */

static void *detach_joined_main(void *arg)
{
	weft_task *t = weft_spawn(echo_fn, NULL);
	weft_join(t, NULL);
	if (arg) { /* detach twice instead (the task still sleeps) */
		t = weft_spawn(sleep_fn, (void *)(uintptr_t)(50 * MS));
		weft_detach(t);
	}
	weft_detach(t); /* must abort */
	return NULL;
}

static void detach_case(void *arg)
{
	weft_config c = cfg_workers(1);
	weft_run(&c, detach_joined_main, arg, NULL);
}

static void test_detach_joined_aborts(void **state)
{
	(void)state;
	for (uintptr_t k = 0; k < 2; k++) {
		char err[4096];
		int st = run_in_child(detach_case, (void *)k, err, sizeof err);
		if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT ||
		    !strstr(err, "already joined or detached"))
			print_error("case %d: status %#x, stderr: %s\n", (int)k,
				    st, err);
		assert_true(WIFSIGNALED(st));
		assert_int_equal(WTERMSIG(st), SIGABRT);
		assert_non_null(strstr(err, "already joined or detached"));
	}
}

/* ---- a join or detach of a task that another fiber waits on (wait_any) ------- */

/* The task's one waiter slot is the wait_any's: a detach used to free the
 * still-running task (the next spawn got its memory); now it aborts, as a
 * join does. */
static weft_task *wa_target;
static atomic_int wa_waiting;

static void *wa_waiter(void *arg)
{
	(void)arg;
	atomic_store(&wa_waiting, 1);
	weft_wait_any(&wa_target, 1);
	return NULL;
}

static void *wa_conflict_main(void *arg)
{
	wa_target = weft_spawn(sleep_fn, (void *)(uintptr_t)(500 * MS));
	weft_task *w = weft_spawn(wa_waiter, NULL);
	while (!atomic_load(&wa_waiting))
		weft_yield();
	weft_sleep(20 * MS); /* it is parked on wa_target now */
	if (arg)
		weft_join(wa_target, NULL); /* must abort */
	else
		weft_detach(wa_target); /* must abort */
	weft_join(w, NULL);
	return NULL;
}

static void wa_conflict_case(void *arg)
{
	weft_config c = cfg_workers(1);
	weft_run(&c, wa_conflict_main, arg, NULL);
	_exit(0); /* not aborted */
}

static void test_wait_any_conflicts_abort(void **state)
{
	(void)state;
	static const char *const want[2] = {
		"weft_detach: task", "weft_join: task"};
	for (uintptr_t k = 0; k < 2; k++) {
		char err[4096];
		int st = run_in_child(wa_conflict_case, (void *)k, err,
				      sizeof err);
		int ok = WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT &&
			  strstr(err, want[k]) != NULL &&
			  strstr(err, "waited on by weft_wait_any") != NULL;
		if (!ok)
			print_error("case %d: status %#x, stderr: %s\n",
				    (int)k, st, err);
		assert_true(ok);
	}
}

/* ---- weft_strerror ------------------------------------------------------------ */

static void strerror_int_min(void *arg)
{
	(void)arg;
	const char *s = weft_strerror(INT_MIN);
	if (!s || strcmp(s, "unknown error") != 0)
		_exit(3);
}

static void test_strerror(void **state)
{
	(void)state;
	const char *inval = weft_strerror(-EINVAL);
	assert_non_null(inval);
	assert_non_null(strstr(inval, "invalid"));
	assert_string_equal(weft_strerror(EINVAL), inval); /* either sign */
	const char *canc = weft_strerror(-ECANCELED);
	assert_non_null(canc);
	assert_non_null(strstr(canc, "cancel"));
	assert_string_equal(weft_strerror(-12345), "unknown error");
	assert_string_equal(weft_strerror(12345), "unknown error");
	assert_string_equal(weft_strerror(INT_MAX), "unknown error");
	/* INT_MIN cannot be negated: in a child, so that a sanitizer
	 * abort there fails this test only */
	char err[4096];
	int st = run_in_child(strerror_int_min, NULL, err, sizeof err);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		print_error("weft_strerror(INT_MIN): status %#x, stderr: %s\n",
			    st, err);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	const int known[] = {0, EINVAL, ECANCELED, ETIMEDOUT, ENOMEM, EBUSY,
			     EALREADY, ENOTSUP, EPIPE, EAGAIN};
	for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
		const char *s = weft_strerror(-known[i]);
		assert_non_null(s);
		assert_true(strlen(s) > 0);
		assert_string_not_equal(s, "unknown error");
		for (size_t j = 0; j < i; j++) /* distinct messages */
			assert_string_not_equal(s, weft_strerror(-known[j]));
	}
}

/* weft_run out of descriptors: io_uring_setup (or the eventfd, or the
 * monitor's pipe) fails with EMFILE, and weft_run passes it on (runtime.h
 * lists it); nothing is left behind: with the limit raised again it runs.
 * In a child: the limit is per process. */
static void *emfile_main(void *arg)
{
	(void)arg;
	return (void *)7;
}

static void emfile_case(void *arg)
{
	(void)arg;
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		_exit(10);
	close(fd); /* every descriptor from fd on is free */
	int fds = count_dir_entries("/proc/self/fd");
	struct rlimit old;
	getrlimit(RLIMIT_NOFILE, &old);
	struct rlimit rl = {(rlim_t)fd, old.rlim_max};
	if (setrlimit(RLIMIT_NOFILE, &rl))
		_exit(11);
	weft_config c;
	weft_config_init(&c);
	c.workers = 2;
	void *res = NULL;
	int r = weft_run(&c, emfile_main, NULL, &res);
	if (r != -EMFILE || res) {
		fprintf(stderr, "weft_run at the fd limit: %d\n", r);
		_exit(12);
	}
	setrlimit(RLIMIT_NOFILE, &old);
	if (count_dir_entries("/proc/self/fd") != fds) {
		fprintf(stderr, "fds: %d before, %d after\n", fds,
			count_dir_entries("/proc/self/fd"));
		_exit(14);
	}
	r = weft_run(&c, emfile_main, NULL, &res);
	if (r != 0 || res != (void *)7) {
		fprintf(stderr, "weft_run after: %d\n", r);
		_exit(13);
	}
	_exit(0);
}

static void test_run_emfile(void **state)
{
	(void)state;
	char err[4096];
	int st = run_in_child(emfile_case, NULL, err, sizeof err);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		print_error("status %#x, stderr: %s\n", st, err);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- bad arguments to every public call: a clear errno, nothing broken ---- */

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <netinet/in.h>

static void *ret_fn(void *a) { return a; }
static int grp_ok(void *a) { (void)a; return 0; }

static void *io_args_main(void *arg)
{
	(void)arg;
	int p[2];
	CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
	char buf[16] = "abc";
	struct iovec iov = {buf, sizeof buf};
	EXPECT(weft_read(-1, buf, 1, -1), -EBADF);
	EXPECT(weft_read(INT_MIN, buf, 1, -1), -EBADF);
	EXPECT(weft_read(p[0], NULL, 1, -1), -EFAULT);
	EXPECT(weft_read(p[0], NULL, 0, -1), 0);
	EXPECT(weft_read(p[1], buf, 1, -1), -EBADF); /* write end */
	EXPECT(weft_read(1000000, buf, 1, -1), -EBADF);
	EXPECT(weft_readv(-1, &iov, 1, -1), -EBADF);
	EXPECT(weft_readv(p[0], &iov, -1, -1), -EINVAL);
	EXPECT(weft_readv(p[0], &iov, INT_MIN, -1), -EINVAL);
	EXPECT(weft_readv(p[0], &iov, 1025, -1), -EINVAL);
	EXPECT(weft_readv(p[0], NULL, 1, -1), -EINVAL);
	EXPECT(weft_readv(p[0], NULL, 0, -1), 0);
	EXPECT(weft_writev(-1, &iov, 1, -1), -EBADF);
	EXPECT(weft_writev(p[1], &iov, -1, -1), -EINVAL);
	EXPECT(weft_writev(p[1], &iov, 1025, -1), -EINVAL);
	EXPECT(weft_writev(p[1], NULL, 2, -1), -EINVAL);
	EXPECT(weft_writev(p[1], NULL, 0, -1), 0);
	struct iovec big = {buf, (size_t)SSIZE_MAX + 1};
	EXPECT(weft_writev(p[1], &big, 1, -1), -EINVAL);
	EXPECT(weft_readv(p[0], &big, 1, -1), -EINVAL);
	EXPECT(weft_write(-1, buf, 1, -1), -EBADF);
	EXPECT(weft_write(p[1], NULL, 1, -1), -EFAULT);
	EXPECT(weft_write(p[1], NULL, 0, -1), 0);
	EXPECT(weft_write(p[1], buf, 1, INT64_MAX), -EINVAL);
	EXPECT(weft_write(p[1], buf, SIZE_MAX, 0), -EINVAL);
	EXPECT(weft_write(p[0], buf, 1, -1), -EBADF); /* read end */
	EXPECT(weft_write(p[1], buf, 3, -1), 3);
	EXPECT(weft_read(p[0], buf, sizeof buf, -1), 3);
	EXPECT(weft_write(p[1], buf, 3, -7), 3); /* any negative: position */
	EXPECT(weft_read(p[0], buf, 3, -7), 3);
	EXPECT(weft_open(NULL, O_RDONLY, 0), -EFAULT);
	EXPECT(weft_open("", O_RDONLY, 0), -ENOENT);
	EXPECT(weft_open("/nonexistent/x", O_RDONLY, 0), -ENOENT);
	EXPECT(weft_open("/tmp", O_WRONLY, 0), -EISDIR);
	EXPECT(weft_close(-1), -EBADF);
	EXPECT(weft_close(1000000), -EBADF);
	EXPECT(weft_fsync(-1), -EBADF);
	EXPECT(weft_fsync(1000000), -EBADF);
	EXPECT(weft_poll(-1, POLLIN), -EBADF);
	EXPECT(weft_poll(p[0], 0), -EINVAL);
	EXPECT(weft_poll(1000000, POLLIN), -EBADF);
	EXPECT(weft_poll(p[1], POLLOUT), POLLOUT);
	EXPECT(weft_poll(p[1], (short)0xffff) > 0, 1);
	CHECK(still_works());
	EXPECT(weft_close(p[0]), 0);
	EXPECT(weft_close(p[1]), 0);
	EXPECT(weft_close(p[1]), -EBADF);
	return NULL;
}

/* run fn on 2 workers; no descriptor is left open after it */
static void run_no_fd_leak(void *(*fn)(void *))
{
	int fds = count_dir_entries("/proc/self/fd");
	run(2, fn, NULL);
	assert_int_equal(count_dir_entries("/proc/self/fd"), fds);
}

static void test_io_bad_args(void **state)
{
	(void)state;
	run_no_fd_leak(io_args_main);
}

static void *net_args_main(void *arg)
{
	(void)arg;
	int sv[2];
	CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	int p[2];
	CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
	char buf[16] = "xyz";
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	struct sockaddr_in sin = {.sin_family = AF_INET};
	EXPECT(weft_accept(-1, NULL, NULL), -EBADF);
	EXPECT(weft_accept(sv[0], (struct sockaddr *)&ss, NULL), -EFAULT);
	EXPECT(weft_accept(sv[0], NULL, NULL), -EINVAL); /* not listening */
	EXPECT(weft_accept(p[0], NULL, NULL), -ENOTSOCK);
	EXPECT(weft_connect(-1, (struct sockaddr *)&sin, sizeof sin), -EBADF);
	EXPECT(weft_connect(sv[0], NULL, 0), -EFAULT);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	EXPECT(weft_connect(s, (struct sockaddr *)&sin, 0), -EINVAL);
	EXPECT(weft_connect(s, (struct sockaddr *)&sin, 1), -EINVAL);
	EXPECT(weft_connect(s, (struct sockaddr *)&ss, 100000), -EINVAL);
	EXPECT(weft_connect(p[0], (struct sockaddr *)&sin, sizeof sin), -ENOTSOCK);
	close(s);
	EXPECT(weft_recv(-1, buf, 1, 0), -EBADF);
	EXPECT(weft_recv(sv[0], NULL, 1, 0), -EFAULT);
	{
		weft_deadline dl;
		weft_deadline_push(&dl, 200 * MS);
		EXPECT(weft_recv(sv[0], buf, 1, MSG_DONTWAIT), -EAGAIN);
		weft_deadline_pop(&dl);
	}
	{
		/* recv(2) fails at once on a pipe or a listening socket;
		 * weft_recv used to wait (a poll armed first) until the fd
		 * became readable: forever here. The scope bounds the test. */
		weft_deadline dl;
		weft_deadline_push(&dl, 500 * MS);
		EXPECT(weft_recv(p[0], buf, 1, 0), -ENOTSOCK);
		int lfd = weft_tcp_listen("127.0.0.1", 0, 0);
		CHECK(lfd >= 0);
		EXPECT(weft_recv(lfd, buf, 1, 0), -ENOTCONN);
		close(lfd);
		weft_deadline_pop(&dl);
	}
	EXPECT(weft_send(-1, buf, 1, 0), -EBADF);
	EXPECT(weft_send(sv[0], NULL, 1, 0), -EFAULT);
	EXPECT(weft_send(sv[0], NULL, 0, 0), 0);
	EXPECT(weft_send(p[1], buf, 1, 0), -ENOTSOCK);
	EXPECT(weft_send(sv[0], buf, 3, 0), 3);
	EXPECT(weft_recv(sv[1], buf, sizeof buf, 0), 3);
	EXPECT(weft_sendto(-1, buf, 1, 0, NULL, 0), -EBADF);
	EXPECT(weft_sendto(sv[0], NULL, 1, 0, NULL, 0), -EFAULT);
	EXPECT(weft_sendto(p[1], buf, 1, 0, NULL, 0), -ENOTSOCK);
	EXPECT(weft_sendto(sv[0], buf, (size_t)SSIZE_MAX + 1, 0, NULL, 0), -EINVAL);
	int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	EXPECT(weft_sendto(u, buf, 1, 0, (struct sockaddr *)&sin, 1), -EINVAL);
	EXPECT(weft_sendto(u, buf, 1, 0, (struct sockaddr *)&sin, 100000), -EINVAL);
	EXPECT(weft_recvfrom(-1, buf, 1, 0, NULL, NULL), -EBADF);
	EXPECT(weft_recvfrom(u, NULL, 1, 0, NULL, NULL), -EFAULT);
	EXPECT(weft_recvfrom(u, buf, 1, 0, (struct sockaddr *)&ss, NULL), -EFAULT);
	len = (socklen_t)-1;
	EXPECT(weft_recvfrom(u, buf, 1, MSG_DONTWAIT, (struct sockaddr *)&ss, &len), -EINVAL);
	EXPECT(weft_recvfrom(p[0], buf, 1, 0, NULL, NULL), -ENOTSOCK);
	close(u);
	/* conveniences */
	char longhost[300];
	memset(longhost, 'a', sizeof longhost - 1);
	longhost[sizeof longhost - 1] = 0;
	EXPECT(weft_tcp_listen(longhost, 0, 0), -EINVAL);
	EXPECT(weft_tcp_connect(NULL, 80), -EINVAL);
	EXPECT(weft_tcp_connect("", 80), -EINVAL);
	EXPECT(weft_tcp_connect("no such host.invalid", 80), -ENOENT);
	EXPECT(weft_tcp_connect(longhost, 80), -EINVAL);
	EXPECT(weft_udp_bind(longhost, 0), -EINVAL);
	EXPECT(weft_udp_bind("1.2.3.4.5.6", 0), -ENOENT);
	EXPECT(weft_unix_listen(NULL, 0), -EINVAL);
	EXPECT(weft_unix_listen("", 0), -EINVAL);
	char longpath[200];
	memset(longpath, 'b', sizeof longpath - 1);
	longpath[sizeof longpath - 1] = 0;
	EXPECT(weft_unix_listen(longpath, 0), -ENAMETOOLONG);
	EXPECT(weft_unix_connect(NULL), -EINVAL);
	EXPECT(weft_unix_connect(""), -EINVAL);
	EXPECT(weft_unix_connect(longpath), -ENAMETOOLONG);
	EXPECT(weft_unix_connect("/nonexistent/sock"), -ENOENT);
	int l = weft_tcp_listen("127.0.0.1", 0, -5);
	CHECK(l >= 0);
	if (l >= 0)
		weft_close(l);
	l = weft_tcp_listen("127.0.0.1", 0, INT_MAX);
	CHECK(l >= 0);
	if (l >= 0)
		weft_close(l);
	CHECK(still_works());
	close(sv[0]);
	close(sv[1]);
	close(p[0]);
	close(p[1]);
	return NULL;
}

static void test_net_bad_args(void **state)
{
	(void)state;
	run_no_fd_leak(net_args_main);
}

static void *conn_args_main(void *arg)
{
	(void)arg;
	int err = 1;
	char buf[8];
	EXPECT(weft_conn_open(-1, &err) == NULL, 1);
	EXPECT(err, -EBADF);
	EXPECT(weft_conn_open(-1, NULL) == NULL, 1);
	EXPECT(weft_conn_recv(NULL, buf, 1), -EINVAL);
	EXPECT(weft_conn_send(NULL, buf, 1), -EINVAL);
	EXPECT(weft_conn_fd(NULL), -EINVAL);
	EXPECT(weft_conn_close(NULL), -EINVAL);
	EXPECT(weft_listener_open(-1, &err) == NULL, 1);
	EXPECT(err, -EBADF);
	EXPECT(weft_listener_accept(NULL, NULL, NULL), -EINVAL);
	EXPECT(weft_listener_fd(NULL), -EINVAL);
	EXPECT(weft_listener_close(NULL), -EINVAL);
	/* a conn on a pipe (not a socket): the error once, then 0 */
	int p[2];
	CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
	weft_conn *c = weft_conn_open(p[0], &err);
	CHECK(c != NULL);
	EXPECT(err, 0);
	if (c) {
		EXPECT(weft_conn_recv(c, NULL, 1), -EFAULT);
		EXPECT(weft_conn_recv(c, buf, 0), 0);
		EXPECT(weft_conn_recv(c, buf, 1), -ENOTSOCK);
		EXPECT(weft_conn_recv(c, buf, 1), 0);
		EXPECT(weft_conn_send(c, NULL, 1), -EFAULT);
		EXPECT(weft_conn_send(c, buf, 0), 0);
		/* at once, as send(2), and at every later call */
		EXPECT(weft_conn_send(c, buf, 1), -ENOTSOCK);
		EXPECT(weft_conn_send(c, buf, 1), -ENOTSOCK);
		EXPECT(weft_conn_close(c), 0);
	}
	close(p[1]);
	/* a conn on an fd that is not open */
	c = weft_conn_open(1000000, &err);
	if (c) {
		EXPECT(weft_conn_recv(c, buf, 1), -EBADF);
		EXPECT(weft_conn_send(c, buf, 1), -EBADF);
		EXPECT(weft_conn_close(c), -EBADF);
	}
	/* a listener on a socket that does not listen, then on a pipe */
	int sv[2];
	CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	weft_listener *l = weft_listener_open(sv[0], &err);
	CHECK(l != NULL);
	if (l) {
		struct sockaddr_storage ss;
		EXPECT(weft_listener_accept(l, (struct sockaddr *)&ss, NULL), -EFAULT);
		EXPECT(weft_listener_accept(l, NULL, NULL), -EINVAL);
		EXPECT(weft_listener_close(l), 0);
	}
	close(sv[1]);
	CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
	l = weft_listener_open(p[0], &err);
	if (l) {
		EXPECT(weft_listener_accept(l, NULL, NULL), -ENOTSOCK);
		EXPECT(weft_listener_close(l), 0);
	}
	close(p[1]);
	CHECK(still_works());
	return NULL;
}

static void test_conn_bad_args(void **state)
{
	(void)state;
	run_no_fd_leak(conn_args_main);
}

static void *chan_args_main(void *arg)
{
	(void)arg;
	int x = 7;
	EXPECT(weft_chan_new(0, 0) == NULL, 1);
	EXPECT(weft_chan_new(1, 0) == NULL, 1);
	EXPECT(weft_chan_new(1, 65537) == NULL, 1);
	EXPECT(weft_chan_new((1u << 24) + 1, 1) == NULL, 1);
	EXPECT(weft_chan_new(SIZE_MAX, SIZE_MAX) == NULL, 1);
	EXPECT(weft_chan_new(SIZE_MAX, 4) == NULL, 1);
	weft_chan *c = weft_chan_new(1, sizeof x);
	weft_chan *r = weft_chan_new(0, sizeof x);
	EXPECT(weft_chan_send(NULL, &x), -EINVAL);
	EXPECT(weft_chan_send(c, NULL), -EINVAL);
	EXPECT(weft_chan_recv(NULL, &x), -EINVAL);
	EXPECT(weft_chan_recv(c, NULL), -EINVAL);
	EXPECT(weft_chan_try_send(NULL, &x), -EINVAL);
	EXPECT(weft_chan_try_send(c, NULL), -EINVAL);
	EXPECT(weft_chan_try_recv(NULL, &x), -EINVAL);
	EXPECT(weft_chan_try_recv(c, NULL), -EINVAL);
	EXPECT(weft_chan_len(NULL), 0);
	weft_chan_close(NULL);
	weft_chan_free(NULL);
	/* select */
	weft_select_case sc[65];
	for (int i = 0; i < 65; i++)
		sc[i] = (weft_select_case){c, WEFT_RECV, &x, 99};
	EXPECT(weft_select(NULL, 1, 1), -EINVAL);
	EXPECT(weft_select(sc, 0, 1), -EINVAL);
	EXPECT(weft_select(sc, 65, 1), -EINVAL);
	EXPECT(weft_select(sc, SIZE_MAX, 1), -EINVAL);
	EXPECT(weft_select(sc, 64, 1), -EAGAIN);
	sc[1].op = 0;
	EXPECT(weft_select(sc, 2, 1), -EINVAL);
	sc[1].op = 3;
	EXPECT(weft_select(sc, 2, 1), -EINVAL);
	sc[1].op = -1;
	EXPECT(weft_select(sc, 2, 1), -EINVAL);
	sc[1] = (weft_select_case){NULL, WEFT_RECV, &x, 0};
	EXPECT(weft_select(sc, 2, 1), -EINVAL);
	sc[1] = (weft_select_case){c, WEFT_SEND, NULL, 0};
	EXPECT(weft_select(sc, 2, 1), -EINVAL);
	/* a rendezvous channel cannot meet itself in one select */
	sc[0] = (weft_select_case){r, WEFT_SEND, &x, 99};
	sc[1] = (weft_select_case){r, WEFT_RECV, &x, 99};
	EXPECT(weft_select(sc, 2, 1), -EAGAIN);
	weft_deadline d;
	weft_deadline_push(&d, 5 * MS);
	EXPECT(weft_select(sc, 2, 0), -ETIMEDOUT);
	weft_deadline_pop(&d);
	/* send + recv on the same buffered channel: fine */
	sc[0] = (weft_select_case){c, WEFT_SEND, &x, 99};
	sc[1] = (weft_select_case){c, WEFT_RECV, &x, 99};
	int k = weft_select(sc, 2, 0);
	CHECK(k == 0 || k == 1);
	/* closed */
	weft_chan_close(c);
	weft_chan_close(c);
	EXPECT(weft_chan_send(c, &x), -EPIPE);
	EXPECT(weft_chan_try_send(c, &x), -EPIPE);
	weft_chan_free(c);
	weft_chan_free(r);
	CHECK(still_works());
	return NULL;
}

static void test_chan_bad_args(void **state)
{
	(void)state;
	run(2, chan_args_main, NULL);
}

static void *sync_args_main(void *arg)
{
	(void)arg;
	weft_mutex m = WEFT_MUTEX_INIT;
	weft_cond cv;
	weft_cond_init(&cv);
	weft_sem s;
	weft_wg wg;
	weft_event e;
	EXPECT(weft_mutex_lock(NULL), -EINVAL);
	EXPECT(weft_mutex_trylock(NULL), -EINVAL);
	EXPECT(weft_mutex_unlock(NULL), -EINVAL);
	EXPECT(weft_mutex_unlock(&m), -EPERM);
	EXPECT(weft_cond_wait(NULL, &m), -EINVAL);
	EXPECT(weft_cond_wait(&cv, NULL), -EINVAL);
	EXPECT(weft_cond_wait(&cv, &m), -EPERM);
	weft_cond_signal(NULL);
	weft_cond_broadcast(NULL);
	weft_sem_init(&s, -5);
	EXPECT(weft_sem_try_acquire(&s), -EAGAIN);
	EXPECT(weft_sem_acquire(NULL), -EINVAL);
	EXPECT(weft_sem_try_acquire(NULL), -EINVAL);
	EXPECT(weft_sem_release(NULL, 1), -EINVAL);
	EXPECT(weft_sem_release(&s, 0), -EINVAL);
	EXPECT(weft_sem_release(&s, -1), -EINVAL);
	EXPECT(weft_sem_release(&s, LONG_MIN), -EINVAL);
	EXPECT(weft_sem_release(&s, 1), 0);
	EXPECT(weft_sem_release(&s, LONG_MAX), -EOVERFLOW);
	EXPECT(weft_sem_try_acquire(&s), 0);
	EXPECT(weft_sem_try_acquire(&s), -EAGAIN);
	weft_sem_init(&s, LONG_MAX);
	EXPECT(weft_sem_release(&s, 1), -EOVERFLOW);
	weft_wg_init(&wg);
	EXPECT(weft_wg_add(NULL, 1), -EINVAL);
	EXPECT(weft_wg_done(NULL), -EINVAL);
	EXPECT(weft_wg_wait(NULL), -EINVAL);
	EXPECT(weft_wg_done(&wg), -EINVAL);
	EXPECT(weft_wg_add(&wg, LONG_MIN), -EINVAL);
	EXPECT(weft_wg_add(&wg, LONG_MAX), 0);
	EXPECT(weft_wg_add(&wg, 1), -EOVERFLOW);
	EXPECT(weft_wg_add(&wg, LONG_MIN), -EINVAL);
	EXPECT(weft_wg_add(&wg, -LONG_MAX), 0);
	EXPECT(weft_wg_wait(&wg), 0);
	weft_event_init(&e);
	weft_event_set(NULL);
	EXPECT(weft_event_is_set(NULL), 0);
	EXPECT(weft_event_wait(NULL), -EINVAL);
	CHECK(still_works());
	return NULL;
}

static void test_sync_bad_args(void **state)
{
	(void)state;
	run(2, sync_args_main, NULL);
}

static void *group_args_main(void *arg)
{
	(void)arg;
	weft_group *g = weft_group_new();
	EXPECT(weft_group_spawn(NULL, grp_ok, NULL), -EINVAL);
	EXPECT(weft_group_spawn(g, NULL, NULL), -EINVAL);
	EXPECT(weft_group_wait(NULL), -EINVAL);
	weft_group_cancel(NULL);
	weft_group_free(NULL);
	EXPECT(weft_group_wait(g), 0);
	weft_group_free(g);
	weft_task *t[2] = {weft_spawn(ret_fn, NULL), NULL};
	EXPECT(weft_wait_any(NULL, 1), -EINVAL);
	EXPECT(weft_wait_any(t, 0), -EINVAL);
	EXPECT(weft_wait_any(t, 2), -EINVAL);
	EXPECT(weft_wait_any(NULL, 0), -EINVAL);
	t[1] = t[0];
	/* listed twice: finished first, or -EINVAL */
	int k = weft_wait_any(t, 2);
	CHECK(k == 0 || k == -EINVAL);
	EXPECT(weft_join(t[0], NULL), 0);
	/* joined: not live */
	EXPECT(weft_wait_any(t, 1), -EINVAL);
	weft_task *me_list[1] = {NULL};
	(void)me_list;
	/* blocking */
	EXPECT(weft_blocking(NULL, NULL, NULL), -EINVAL);
	/* metrics */
	EXPECT(weft_metrics_get(NULL), -EINVAL);
	/* debug */
	EXPECT(weft_dump(NULL), -EINVAL);
	FILE *full = fopen("/dev/full", "w");
	if (full) {
		setvbuf(full, NULL, _IONBF, 0);
		EXPECT(weft_dump(full), -EIO);
		fclose(full);
	}
	EXPECT(weft_task_set_name(t[0], "x"), -EINVAL); /* joined */
	EXPECT(weft_task_set_name(NULL, "me"), 0);
	CHECK(weft_task_name(NULL) && !strcmp(weft_task_name(NULL), "me"));
	EXPECT(weft_task_set_name(NULL, NULL), 0);
	EXPECT(weft_task_name(NULL) == NULL, 1);
	/* deadline */
	EXPECT(weft_deadline_push(NULL, 1), -EINVAL);
	EXPECT(weft_deadline_push_at(NULL, 1), -EINVAL);
	weft_deadline_pop(NULL);
	weft_deadline d;
	EXPECT(weft_deadline_push(&d, UINT64_MAX), 0);
	EXPECT(weft_sleep(1 * MS), 0);
	weft_deadline_pop(&d);
	EXPECT(weft_deadline_current(), 0);
	EXPECT(weft_deadline_push_at(&d, 0), 0);
	EXPECT(weft_sleep(1 * MS), -ETIMEDOUT);
	weft_deadline_pop(&d);
	EXPECT(weft_deadline_current(), 0);
	/* sim */
	EXPECT(weft_sim_report_get(NULL), -EINVAL);
	EXPECT(weft_sim_explore(NULL, 1, 1, 0, ret_fn, NULL), -EBUSY);
	/* task */
	EXPECT(weft_task_id(NULL), 0);
	EXPECT(weft_gather(NULL, 1, NULL), -EINVAL);
	EXPECT(weft_gather(NULL, 0, NULL), 0);
	CHECK(still_works());
	return NULL;
}

static void test_group_misc_bad_args(void **state)
{
	(void)state;
	run(2, group_args_main, NULL);
}

static void *sleeper_forever(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)weft_sleep(UINT64_MAX);
}

static void *huge_sleep_main(void *arg)
{
	(void)arg;
	weft_task *t = weft_spawn(sleeper_forever, NULL);
	weft_sleep(10 * MS);
	EXPECT(weft_cancel(t), 0);
	void *r = NULL;
	EXPECT(weft_join(t, &r), -ECANCELED);
	EXPECT((intptr_t)r, -ECANCELED);
	return NULL;
}

static void test_huge_sleep(void **state)
{
	(void)state;
	run(2, huge_sleep_main, NULL);
}

static void test_outside_fiber_all(void **state)
{
	(void)state;
	char buf[4];
	int err = 1;
	weft_mutex m = WEFT_MUTEX_INIT;
	weft_cond cv = {0};
	weft_sem s = {0};
	weft_wg wg = {0};
	weft_event e = {0};
	weft_deadline d;
	weft_metrics mt;
	assert_int_equal(weft_read(0, buf, 1, -1), -EINVAL);
	assert_int_equal(weft_readv(0, NULL, 0, -1), -EINVAL);
	assert_int_equal(weft_write(1, buf, 0, -1), -EINVAL);
	assert_int_equal(weft_writev(1, NULL, 0, -1), -EINVAL);
	assert_int_equal(weft_open("/", O_RDONLY, 0), -EINVAL);
	assert_int_equal(weft_fsync(1), -EINVAL);
	assert_int_equal(weft_poll(0, POLLIN), -EINVAL);
	assert_int_equal(weft_accept(0, NULL, NULL), -EINVAL);
	assert_int_equal(weft_recv(0, buf, 1, 0), -EINVAL);
	assert_int_equal(weft_conn_send(NULL, buf, 1), -EINVAL);
	assert_int_equal(weft_send(1, buf, 1, 0), -EINVAL);
	assert_int_equal(weft_sendto(1, buf, 1, 0, NULL, 0), -EINVAL);
	assert_int_equal(weft_recvfrom(0, buf, 1, 0, NULL, NULL), -EINVAL);
	assert_int_equal(weft_tcp_connect("localhost", 1), -EINVAL);
	assert_null(weft_conn_open(0, &err));
	assert_int_equal(err, -EINVAL);
	assert_null(weft_listener_open(0, &err));
	assert_int_equal(err, -EINVAL);
	assert_int_equal(weft_blocking(ret_fn, NULL, NULL), -EINVAL);
	assert_int_equal(weft_mutex_lock(&m), -EINVAL);
	assert_int_equal(weft_mutex_trylock(&m), 0);
	assert_int_equal(weft_mutex_unlock(&m), 0);
	assert_int_equal(weft_cond_wait(&cv, &m), -EINVAL);
	assert_int_equal(weft_sem_acquire(&s), -EINVAL);
	assert_int_equal(weft_wg_wait(&wg), -EINVAL);
	assert_int_equal(weft_wg_add(&wg, 1), 0);
	assert_int_equal(weft_wg_wait(&wg), -EINVAL);
	assert_int_equal(weft_event_wait(&e), -EINVAL);
	assert_int_equal(weft_deadline_push(&d, 1), -EINVAL);
	assert_int_equal(weft_deadline_current(), 0);
	weft_deadline_pop(&d);
	assert_int_equal(weft_metrics_get(&mt), -ESRCH);
	assert_int_equal(weft_metrics_get(NULL), -EINVAL);
	assert_int_equal(weft_dump(stderr), -ESRCH);
	assert_int_equal(weft_dump(NULL), -EINVAL);
	assert_int_equal(weft_task_set_name(NULL, "x"), -EINVAL);
	assert_null(weft_task_name(NULL));
	assert_int_equal(weft_group_spawn(NULL, grp_ok, NULL), -EINVAL);
	weft_group *g = weft_group_new();
	assert_non_null(g);
	assert_int_equal(weft_group_spawn(g, grp_ok, NULL), -ENOMEM);
	assert_int_equal(weft_group_wait(g), -EINVAL);
	weft_group_free(g);
	weft_task *t[1] = {NULL};
	assert_int_equal(weft_wait_any(t, 1), -EINVAL);
	weft_chan *c = weft_chan_new(0, 4);
	assert_int_equal(weft_chan_send(c, buf), -EINVAL);
	assert_int_equal(weft_chan_recv(c, buf), -EINVAL);
	weft_select_case sc = {c, WEFT_RECV, buf, 0};
	assert_int_equal(weft_select(&sc, 1, 0), -EINVAL);
	assert_int_equal(weft_select(&sc, 1, 1), -EAGAIN);
	weft_chan_free(c);
	/* sim explore argument checks */
	assert_int_equal(weft_sim_explore(NULL, 1, 1, 0, NULL, NULL), -EINVAL);
	assert_int_equal(weft_sim_explore(NULL, 0, 1, 0, ret_fn, NULL), -EINVAL);
	assert_int_equal(weft_sim_explore(NULL, 1, 0, 0, ret_fn, NULL), -EINVAL);
	assert_int_equal(weft_sim_explore(NULL, UINT64_MAX, 2, 0, ret_fn, NULL), -EINVAL);
	assert_int_equal(weft_sim_explore(NULL, (1ull << 63) - 1, 2, 0, ret_fn, NULL), -EINVAL);
	assert_int_equal(weft_sim_explore(NULL, 1, UINT64_MAX, 0, ret_fn, NULL), -EINVAL);
	weft_config c2;
	weft_config_init(&c2);
	c2.pct = 65;
	assert_int_equal(weft_sim_explore(&c2, 1, 1, 0, ret_fn, NULL), -EINVAL);
	weft_config_init(&c2);
	c2.faults = "bogus=1";
	assert_int_equal(weft_sim_explore(&c2, 1, 1, 0, ret_fn, NULL), -EINVAL);
	/* nothing broken */
	assert_int_equal(weft_run(NULL, works_main, NULL, NULL), 0);
	assert_int_equal(works_ok, 1);
}

static void test_run_config_edges(void **state)
{
	(void)state;
	weft_config c;
	weft_config_init(&c);
	c.ring_entries = 1; /* min 4 */
	expect_run_works(&c);
	c.ring_entries = 5;
	expect_run_works(&c);
	c.ring_entries = 32769;
	expect_run_fails(&c, -EINVAL);
	c.ring_entries = UINT_MAX;
	expect_run_fails(&c, -EINVAL);
	weft_config_init(&c);
	c.stack_size = 16 * 1024 + 1; /* unaligned */
	c.workers = 1;
	assert_int_equal(weft_run(&c, works_main, NULL, NULL), 0);
	assert_int_equal(works_ok, 1);
	c.stack_size = SIZE_MAX;
	expect_run_fails(&c, -EINVAL);
	weft_config_init(&c);
	c.workers = UINT_MAX;
	expect_run_fails(&c, -EINVAL);
	weft_config_init(&c);
	c.conn_buffers = 3;
	expect_run_fails(&c, -EINVAL);
	c.conn_buffers = 65536;
	expect_run_fails(&c, -EINVAL);
	c.conn_buffers = 1u << 31;
	expect_run_fails(&c, -EINVAL);
	weft_config_init(&c);
	c.conn_buffer_size = (1u << 20) + 1;
	expect_run_fails(&c, -EINVAL);
	c.conn_buffer_size = UINT_MAX;
	expect_run_fails(&c, -EINVAL);
	weft_config_init(&c);
	c.blocking_threads = 4097;
	expect_run_fails(&c, -EINVAL);
	weft_config_init(&c);
	c.blocking_queue = (1u << 20) + 1;
	expect_run_fails(&c, -EINVAL);
	weft_config_init(&c);
	c.dump_signal = -2;
	expect_run_fails(&c, -EINVAL);
	c.dump_signal = SIGKILL;
	expect_run_fails(&c, -EINVAL);
	c.dump_signal = 65;
	expect_run_fails(&c, -EINVAL);
	c.dump_signal = INT_MAX;
	expect_run_fails(&c, -EINVAL);
	weft_config_init(&c);
	c.unjoined_report = 2;
	expect_run_fails(&c, -EINVAL);
	weft_config_init(&c);
	c.pct = 65;
	expect_run_fails(&c, -EINVAL);
	weft_config_init(&c);
	c.faults = "";
	expect_run_works(&c);
	weft_config_init(&c);
	assert_int_equal(weft_run(&c, works_main, NULL, NULL), 0);
	assert_int_equal(works_ok, 1);
}

static void *pool_probe(void *arg)
{
	(void)arg;
	char buf[4];
	weft_deadline d;
	weft_mutex m = WEFT_MUTEX_INIT;
	weft_task *t = weft_spawn(ret_fn, NULL);
	CHECK(t != NULL);
	EXPECT(weft_blocking(ret_fn, NULL, NULL), -EINVAL);
	EXPECT(weft_sleep(1), -EINVAL);
	EXPECT(weft_join(t, NULL), -EINVAL);
	EXPECT(weft_read(0, buf, 1, -1), -EINVAL);
	EXPECT(weft_close(-1), -EBADF);
	EXPECT(weft_deadline_push(&d, 1), -EINVAL);
	EXPECT(weft_mutex_lock(&m), -EINVAL);
	EXPECT(weft_worker_id(), WEFT_NO_WORKER);
	EXPECT(weft_self_id(), 0);
	EXPECT(weft_task_set_name(NULL, "x"), -EINVAL);
	weft_yield();
	return t;
}

static void *pool_main(void *arg)
{
	(void)arg;
	void *r = NULL;
	EXPECT(weft_blocking(pool_probe, NULL, &r), 0);
	if (r)
		EXPECT(weft_join(r, NULL), 0);
	CHECK(still_works());
	return NULL;
}

static void test_from_pool_thread(void **state)
{
	(void)state;
	run(2, pool_main, NULL);
}

/* weft_run failing half-way (a worker gets no ring: out of fds) leaves
 * nothing behind and the next run works */
/* threads of this process less io_uring's own workers (iou-wrk-*: the
 * kernel's, which leave a little after their ring is closed) */
static int own_threads(void)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[64], comm[32] = "";
		snprintf(path, sizeof path, "/proc/self/task/%.20s/comm",
			 e->d_name);
		FILE *f = fopen(path, "r");
		if (f) {
			if (!fgets(comm, sizeof comm, f))
				comm[0] = 0;
			fclose(f);
		}
		if (strncmp(comm, "iou-", 4))
			n++;
	}
	closedir(d);
	return n;
}

static void test_run_fails_midway(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("real worker threads");
	/* a first run starts whatever a process keeps once it has had
	 * threads (ThreadSanitizer's background thread) before we count */
	assert_int_equal(weft_run(NULL, works_main, NULL, NULL), 0);
	struct rlimit old;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	int fds = count_dir_entries("/proc/self/fd");
	int threads = own_threads();
	for (int extra = 0; extra < 12; extra++) {
		struct rlimit lim = {(rlim_t)(fds + extra), old.rlim_max};
		assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
		weft_config c = cfg_workers(4);
		atomic_store(&ran_flag, 0);
		int r = weft_run(&c, flag_main, NULL, NULL);
		assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
		if (r != 0) {
			assert_true(r == -EMFILE || r == -ENFILE);
			assert_int_equal(atomic_load(&ran_flag), 0);
		}
		assert_int_equal(count_dir_entries("/proc/self/fd"), fds);
		/* none left behind (one there before may have ended) */
		assert_true(own_threads() <= threads);
		assert_int_equal(weft_worker_count(), 0);
	}
	works_ok = 0;
	assert_int_equal(weft_run(NULL, works_main, NULL, NULL), 0);
	assert_int_equal(works_ok, 1);
}

/* A handle kept past its runtime (a foreign thread that cancels, names or
 * detaches a task late): weft_cancel and weft_task_set_name say -EINVAL
 * (not a live task), weft_detach has nothing left to free. They used to
 * read the task's memory, unmapped when weft_run returned. */
static weft_task *stale_joined, *stale_unjoined;

static void *stale_main(void *arg)
{
	(void)arg;
	stale_joined = weft_spawn(ret_fn, NULL);
	CHECK(stale_joined != NULL);
	CHECK_EQ(weft_join(stale_joined, NULL), 0);
	/* spawned, then left for a foreign thread to detach too late */
	stale_unjoined = weft_spawn(ret_fn, NULL);
	CHECK(stale_unjoined != NULL);
	return NULL;
}

static void stale_child(void *arg)
{
	(void)arg;
	int a = weft_cancel(stale_joined);
	int b = weft_task_set_name(stale_joined, "x");
	int c = weft_cancel(stale_unjoined);
	weft_detach(stale_unjoined);
	_exit(a == -EINVAL && b == -EINVAL && c == -EINVAL ? 0 : 1);
}

static void test_stale_handle_after_run(void **state)
{
	(void)state;
	reset_fails();
	weft_config c = cfg_workers(1);
	c.unjoined_report = -1;
	assert_int_equal(weft_run(&c, stale_main, NULL, NULL), 0);
	assert_no_fails();
	/* in a child: a crash is a failure, not the end of the suite */
	char err[512] = "";
	int st = run_in_child(stale_child, NULL, err, sizeof err);
	if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
		fail_msg("child status %#x: %s", st, err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_outside_runtime),
		cmocka_unit_test(test_run_bad_args),
		cmocka_unit_test(test_env_bad),
		cmocka_unit_test(test_nested_and_concurrent_run),
		cmocka_unit_test(test_join_misuse),
		cmocka_unit_test(test_calls_from_foreign_thread),
		cmocka_unit_test(test_gather_and_spawn_misuse),
		cmocka_unit_test(test_detach_joined_aborts),
		cmocka_unit_test(test_wait_any_conflicts_abort),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_run_emfile),
		cmocka_unit_test(test_io_bad_args),
		cmocka_unit_test(test_net_bad_args),
		cmocka_unit_test(test_conn_bad_args),
		cmocka_unit_test(test_chan_bad_args),
		cmocka_unit_test(test_sync_bad_args),
		cmocka_unit_test(test_group_misc_bad_args),
		cmocka_unit_test(test_huge_sleep),
		cmocka_unit_test(test_outside_fiber_all),
		cmocka_unit_test(test_run_config_edges),
		cmocka_unit_test(test_from_pool_thread),
		cmocka_unit_test(test_run_fails_midway),
		cmocka_unit_test(test_stale_handle_after_run),
	};
	apply_test_filters();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
