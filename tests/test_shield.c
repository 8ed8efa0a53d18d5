/* Description: shield scopes (weft_shield_push / weft_shield_pop,
 * weft/deadline.h): cleanup that finishes in a cancelled fiber.
 *
 * - a cancelled fiber: under a shield, sleep, a channel
 *   receive, a contended mutex, a pipe read, a blocking-pool call, a join
 *   and a TCP send and receive all succeed; nested shields; the last pop
 *   returns -ECANCELED and the next wait fails again;
 * - a cancel that comes while the fiber waits under a shield does not end
 *   the wait (sleep runs its full time; a channel receive and a socket
 *   receive get what is sent after the cancel); it takes effect after the
 *   pop;
 * - deadlines: a shield hides the deadline scopes pushed before it (and
 *   restores them at its pop), a scope pushed inside applies;
 * - shutdown: main_fn returns while a fiber sleeps; cancelled, it runs a
 *   shielded cleanup (sleep, pipe write and read back) that weft_run waits
 *   for;
 * - a group: a failing child cancels its sibling, whose shielded cleanup
 *   completes before weft_group_wait returns the failure;
 * - misuse: NULL, outside a fiber, pop without push: -EINVAL; the runtime
 *   carries on;
 * - stress (2 workers): fibers open and close shields around short sleeps
 *   and channel hand-offs while a plain thread and a fiber cancel them at
 *   random moments: no shielded wait ever fails, no cancel is lost (every
 *   cancelled fiber's next unshielded wait fails, every pop after a cancel
 *   says so), every fiber ends.
 *
 * Fibers never call assert_* (cmocka longjmps): they record with CHECK and
 * the test checks after weft_run returns.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "testutil.h"

/* ---- waits under a shield in a cancelled fiber ------------------------------ */

static weft_chan *W_ch;
static weft_mutex W_mu;
static int W_pipe[2];

static void *w_helper(void *arg)
{
	(void)arg;
	/* holds the mutex, then feeds the channel and the pipe, each after
	 * the shielded fiber has had time to park on it */
	CHECK_EQ(weft_mutex_lock(&W_mu), 0);
	CHECK_EQ(weft_sleep(5 * MS), 0);
	CHECK_EQ(weft_mutex_unlock(&W_mu), 0);
	CHECK_EQ(weft_sleep(5 * MS), 0);
	long v = 77;
	CHECK_EQ(weft_chan_send(W_ch, &v), 0);
	CHECK_EQ(weft_sleep(5 * MS), 0);
	CHECK_EQ(weft_write(W_pipe[1], "shield", 6, -1), 6);
	return (void *)(uintptr_t)9;
}

static void *w_blocking(void *arg)
{
	return (void *)((uintptr_t)arg + 1);
}

static void *w_victim(void *arg)
{
	(void)arg;
	/* main cancels it just after the spawn (before or after it ran) */
	int r;
	while ((r = weft_sleep(1 * MS)) == 0)
		;
	CHECK_EQ(r, -ECANCELED);
	weft_shield s, inner;
	CHECK_EQ(weft_shield_push(&s), 0);
	/* a child spawned now is not cancelled; it grabs the mutex first */
	weft_task *h = weft_spawn(w_helper, NULL);
	CHECK(h != NULL);
	CHECK_EQ(weft_sleep(1 * MS), 0);
	/* each of these parks: the helper is 5 ms behind */
	CHECK_EQ(weft_mutex_lock(&W_mu), 0);
	CHECK_EQ(weft_mutex_unlock(&W_mu), 0);
	long v = 0;
	CHECK_EQ(weft_chan_recv(W_ch, &v), 0);
	CHECK_EQ(v, 77);
	char buf[8] = {0};
	CHECK_EQ(weft_read(W_pipe[0], buf, sizeof buf, -1), 6);
	CHECK(memcmp(buf, "shield", 6) == 0);
	uint64_t t0 = weft_now();
	CHECK_EQ(weft_sleep(10 * MS), 0);
	CHECK(weft_now() - t0 >= 10 * MS);
	void *res = NULL;
	CHECK_EQ(weft_blocking(w_blocking, (void *)(uintptr_t)41, &res), 0);
	CHECK_EQ((uintptr_t)res, 42);
	CHECK_EQ(weft_join(h, &res), 0);
	CHECK_EQ((uintptr_t)res, 9);
	int c = -1, sv = -1;
	CHECK_EQ(tcp_pair(&c, &sv), 0);
	if (c >= 0) {
		CHECK_EQ(weft_send(c, "bye", 3, 0), 3);
		CHECK_EQ(weft_recv(sv, buf, sizeof buf, 0), 3);
		CHECK_EQ(weft_close(c), 0);
		CHECK_EQ(weft_close(sv), 0);
	}
	/* nested: still shielded after the inner pop */
	CHECK_EQ(weft_shield_push(&inner), 0);
	CHECK_EQ(weft_shield_pop(&inner), 0);
	CHECK_EQ(weft_sleep(1 * MS), 0);
	CHECK_EQ(weft_shield_pop(&s), -ECANCELED);
	/* sticky: waits fail again */
	CHECK_EQ(weft_sleep(1 * MS), -ECANCELED);
	CHECK_EQ(weft_chan_recv(W_ch, &v), -ECANCELED);
	CHECK_EQ(weft_shield_pop(&s), -EINVAL); /* none open */
	return (void *)(uintptr_t)5;
}

static void *w_main(void *arg)
{
	(void)arg;
	W_ch = weft_chan_new(0, sizeof(long));
	weft_mutex_init(&W_mu);
	CHECK_EQ(pipe(W_pipe), 0);
	weft_task *t = weft_spawn(w_victim, NULL);
	CHECK_EQ(weft_cancel(t), 0);
	void *res = NULL;
	CHECK_EQ(weft_join(t, &res), -ECANCELED);
	CHECK_EQ((uintptr_t)res, 5);
	weft_chan_free(W_ch);
	close(W_pipe[0]);
	close(W_pipe[1]);
	return NULL;
}

static void test_shield_waits_in_cancelled_fiber(void **state)
{
	(void)state;
	run(1, w_main, NULL);
	run(2, w_main, NULL);
}

/* ---- a cancel while parked under a shield ----------------------------------- */

static struct {
	_Atomic int in;
	int sleep_ret, pop_ret, after_ret, recv_ret, srecv_ret;
	uint64_t slept, after_ns;
	long got;
	char sbuf[4];
	weft_chan *ch;
	int sock[2];
} P;

static void *p_sleeper(void *arg)
{
	(void)arg;
	weft_shield s;
	CHECK_EQ(weft_shield_push(&s), 0);
	atomic_store(&P.in, 1);
	uint64_t t0 = weft_now();
	P.sleep_ret = weft_sleep(60 * MS);
	P.slept = weft_now() - t0;
	P.pop_ret = weft_shield_pop(&s);
	t0 = weft_now();
	P.after_ret = weft_sleep(10 * SEC);
	P.after_ns = weft_now() - t0;
	return NULL;
}

static void *p_receiver(void *arg)
{
	(void)arg;
	weft_shield s;
	CHECK_EQ(weft_shield_push(&s), 0);
	atomic_store(&P.in, 1);
	P.recv_ret = weft_chan_recv(P.ch, &P.got);
	P.srecv_ret = (int)weft_recv(P.sock[1], P.sbuf, sizeof P.sbuf, 0);
	CHECK_EQ(weft_shield_pop(&s), -ECANCELED);
	return NULL;
}

static void *p_main(void *arg)
{
	(void)arg;
	weft_task *t = weft_spawn(p_sleeper, NULL);
	CHECK_EQ(wait_flag(&P.in), 0);
	CHECK_EQ(weft_sleep(10 * MS), 0); /* it parks in its sleep */
	CHECK_EQ(weft_cancel(t), 0);
	CHECK_EQ(weft_join(t, NULL), -ECANCELED);

	/* a channel receive, then a socket receive (an SQE in the kernel
	 * that a cancel would have cancelled) */
	atomic_store(&P.in, 0);
	P.ch = weft_chan_new(0, sizeof(long));
	CHECK_EQ(tcp_pair(&P.sock[0], &P.sock[1]), 0);
	t = weft_spawn(p_receiver, NULL);
	CHECK_EQ(wait_flag(&P.in), 0);
	CHECK_EQ(weft_sleep(10 * MS), 0);
	CHECK_EQ(weft_cancel(t), 0);
	CHECK_EQ(weft_sleep(10 * MS), 0);
	long v = 31;
	CHECK_EQ(weft_chan_send(P.ch, &v), 0);
	CHECK_EQ(weft_sleep(10 * MS), 0); /* now parked in weft_recv */
	CHECK_EQ(weft_cancel(t), 0);
	CHECK_EQ(weft_sleep(10 * MS), 0);
	CHECK_EQ(weft_send(P.sock[0], "abc", 3, 0), 3);
	CHECK_EQ(weft_join(t, NULL), -ECANCELED);
	weft_chan_free(P.ch);
	weft_close(P.sock[0]);
	weft_close(P.sock[1]);
	return NULL;
}

static void test_shield_cancel_while_parked(void **state)
{
	(void)state;
	for (unsigned workers = 1; workers <= 2; workers++) {
		memset(&P, 0, sizeof P);
		run(workers, p_main, NULL);
		assert_int_equal(P.sleep_ret, 0);
		assert_true(P.slept >= 60 * MS); /* never early, not cut short */
		assert_int_equal(P.pop_ret, -ECANCELED);
		assert_int_equal(P.after_ret, -ECANCELED);
		assert_true(P.after_ns < 2 * SEC);
		assert_int_equal(P.recv_ret, 0);
		assert_int_equal(P.got, 31);
		assert_int_equal(P.srecv_ret, 3);
		assert_memory_equal(P.sbuf, "abc", 3);
	}
}

/* ---- deadlines --------------------------------------------------------------- */

static void *d_main(void *arg)
{
	(void)arg;
	weft_chan *ch = weft_chan_new(0, sizeof(long));
	weft_deadline outer, inner;
	weft_shield s;
	CHECK_EQ(weft_deadline_push(&outer, 10 * MS), 0);
	uint64_t dl = weft_deadline_current();
	CHECK(dl != 0);
	CHECK_EQ(weft_shield_push(&s), 0);
	CHECK_EQ(weft_deadline_current(), 0); /* the outer one is hidden */
	CHECK_EQ(weft_sleep(30 * MS), 0);     /* past the outer deadline */
	CHECK_EQ(weft_deadline_push(&inner, 10 * MS), 0);
	uint64_t t0 = weft_now();
	long v;
	CHECK_EQ(weft_chan_recv(ch, &v), -ETIMEDOUT); /* the inner one holds */
	CHECK(weft_now() - t0 >= 10 * MS);
	weft_deadline_pop(&inner);
	CHECK_EQ(weft_deadline_current(), 0);
	CHECK_EQ(weft_shield_pop(&s), 0); /* never cancelled */
	CHECK_EQ(weft_deadline_current(), dl);
	CHECK_EQ(weft_sleep(1 * MS), -ETIMEDOUT); /* the outer one, passed */
	weft_deadline_pop(&outer);
	CHECK_EQ(weft_sleep(1 * MS), 0);
	weft_chan_free(ch);
	return NULL;
}

static void test_shield_deadlines(void **state)
{
	(void)state;
	run(1, d_main, NULL);
}

/* ---- shutdown ------------------------------------------------------------------ */

static struct {
	_Atomic int asleep;
	int sleep_ret, clean_ret, wr, rd, pop_ret;
	uint64_t clean_ns;
	char buf[8];
} S;

static void *s_server(void *arg)
{
	(void)arg;
	atomic_store(&S.asleep, 1);
	S.sleep_ret = weft_sleep(3600 * SEC); /* cancelled by the shutdown */
	weft_shield s;
	CHECK_EQ(weft_shield_push(&s), 0);
	weft_deadline d; /* bounded cleanup */
	CHECK_EQ(weft_deadline_push(&d, 5 * SEC), 0);
	uint64_t t0 = weft_now();
	S.clean_ret = weft_sleep(30 * MS);
	S.clean_ns = weft_now() - t0;
	int p[2];
	CHECK_EQ(pipe(p), 0);
	S.wr = (int)weft_write(p[1], "flushed", 7, -1);
	S.rd = (int)weft_read(p[0], S.buf, sizeof S.buf, -1);
	CHECK_EQ(weft_close(p[0]), 0);
	CHECK_EQ(weft_close(p[1]), 0);
	weft_deadline_pop(&d);
	S.pop_ret = weft_shield_pop(&s);
	return NULL;
}

static void *s_main(void *arg)
{
	(void)arg;
	weft_detach(weft_spawn(s_server, NULL));
	CHECK_EQ(wait_flag(&S.asleep), 0);
	CHECK_EQ(weft_sleep(5 * MS), 0);
	return NULL; /* the server is cancelled; weft_run waits for it */
}

static void test_shield_shutdown(void **state)
{
	(void)state;
	for (unsigned workers = 1; workers <= 2; workers++) {
		memset(&S, 0, sizeof S);
		run(workers, s_main, NULL);
		assert_int_equal(S.sleep_ret, -ECANCELED);
		assert_int_equal(S.clean_ret, 0);
		assert_true(S.clean_ns >= 30 * MS);
		assert_int_equal(S.wr, 7);
		assert_int_equal(S.rd, 7);
		assert_memory_equal(S.buf, "flushed", 7);
		assert_int_equal(S.pop_ret, -ECANCELED);
	}
}

/* ---- a group --------------------------------------------------------------------- */

static _Atomic int G_cleaned;

static int g_fails(void *arg)
{
	(void)arg;
	weft_sleep(5 * MS);
	return -EIO;
}

static int g_sibling(void *arg)
{
	(void)arg;
	int r = weft_sleep(3600 * SEC);
	CHECK_EQ(r, -ECANCELED);
	weft_shield s;
	CHECK_EQ(weft_shield_push(&s), 0);
	CHECK_EQ(weft_sleep(20 * MS), 0);
	atomic_store(&G_cleaned, 1);
	CHECK_EQ(weft_shield_pop(&s), -ECANCELED);
	return r;
}

static void *g_main(void *arg)
{
	(void)arg;
	weft_group *g = weft_group_new();
	CHECK(g != NULL);
	CHECK_EQ(weft_group_spawn(g, g_sibling, NULL), 0);
	CHECK_EQ(weft_group_spawn(g, g_fails, NULL), 0);
	CHECK_EQ(weft_group_wait(g), -EIO);
	CHECK_EQ(atomic_load(&G_cleaned), 1); /* finished before the wait */
	weft_group_free(g);
	return NULL;
}

static void test_shield_group(void **state)
{
	(void)state;
	atomic_store(&G_cleaned, 0);
	run(2, g_main, NULL);
}

/* ---- misuse ---------------------------------------------------------------------- */

static void *m_child(void *arg)
{
	return arg;
}

static void *m_main(void *arg)
{
	(void)arg;
	weft_shield s;
	CHECK_EQ(weft_shield_push(NULL), -EINVAL);
	CHECK_EQ(weft_shield_pop(NULL), -EINVAL);
	CHECK_EQ(weft_shield_pop(&s), -EINVAL); /* none open */
	CHECK_EQ(weft_shield_push(&s), 0);
	CHECK_EQ(weft_shield_pop(NULL), -EINVAL); /* still open */
	CHECK_EQ(weft_shield_pop(&s), 0);
	CHECK_EQ(weft_shield_pop(&s), -EINVAL);
	/* the runtime carries on */
	void *res = NULL;
	weft_task *t = weft_spawn(m_child, (void *)(uintptr_t)3);
	CHECK_EQ(weft_join(t, &res), 0);
	CHECK_EQ((uintptr_t)res, 3);
	CHECK_EQ(weft_sleep(1 * MS), 0);
	return NULL;
}

static void test_shield_misuse(void **state)
{
	(void)state;
	weft_shield s;
	assert_int_equal(weft_shield_push(&s), -EINVAL); /* not a fiber */
	assert_int_equal(weft_shield_pop(&s), -EINVAL);
	run(1, m_main, NULL);
}

/* ---- stress ---------------------------------------------------------------------- */

#define ST_ROUNDS 40

static struct {
	size_t n;
	weft_task **t;
	_Atomic int started, ended, cancelled_seen, stop;
	_Atomic int pop_cancelled; /* cancels that came under a shield */
	_Atomic long shielded_waits;
	weft_chan *ch; /* buffered: the shielded hand-offs */
} ST;

static void *st_fiber(void *arg)
{
	uint64_t seed = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
	atomic_fetch_add(&ST.started, 1);
	bool cancelled = false;
	for (int round = 0; round < ST_ROUNDS && !cancelled; round++) {
		weft_shield s;
		CHECK_EQ(weft_shield_push(&s), 0);
		/* shielded: none of these may fail, cancelled or not */
		uint64_t ns = rnd(&seed) % (300 * US);
		uint64_t t0 = weft_now();
		CHECK_EQ(weft_sleep(ns), 0);
		CHECK(weft_now() - t0 >= ns);
		long v = round;
		CHECK_EQ(weft_chan_send(ST.ch, &v), 0);
		CHECK_EQ(weft_chan_recv(ST.ch, &v), 0);
		weft_yield();
		atomic_fetch_add(&ST.shielded_waits, 1);
		int pr = weft_shield_pop(&s);
		/* unshielded: a cancel seen by the pop fails the next wait */
		int r = weft_sleep(rnd(&seed) % (200 * US));
		if (pr == -ECANCELED) {
			atomic_fetch_add(&ST.pop_cancelled, 1);
			CHECK_EQ(r, -ECANCELED);
		}
		else
			CHECK_EQ(pr, 0);
		if (r == -ECANCELED)
			cancelled = true;
		else
			CHECK_EQ(r, 0);
	}
	if (cancelled)
		atomic_fetch_add(&ST.cancelled_seen, 1);
	atomic_fetch_add(&ST.ended, 1);
	return NULL;
}

static uint64_t st_cancel_some(uint64_t *seed, size_t how_many)
{
	uint64_t done = 0;
	for (size_t k = 0; k < how_many; k++) {
		size_t i = rnd(seed) % ST.n;
		if (weft_cancel(ST.t[i]) == 0)
			done++;
	}
	return done;
}

static void *st_thread(void *arg)
{
	(void)arg;
	uint64_t seed = 12345;
	while (!atomic_load(&ST.stop)) {
		st_cancel_some(&seed, 1);
		struct timespec ts = {0, 200 * 1000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static void *st_canceller(void *arg)
{
	(void)arg;
	uint64_t seed = 777;
	while (!atomic_load(&ST.stop)) {
		st_cancel_some(&seed, 2);
		weft_sleep(rnd(&seed) % (500 * US));
	}
	return NULL;
}

static void *st_main(void *arg)
{
	(void)arg;
	ST.ch = weft_chan_new(ST.n * 2, sizeof(long));
	for (size_t i = 0; i < ST.n; i++) {
		ST.t[i] = weft_spawn(st_fiber, (void *)(uintptr_t)(i + 1));
		CHECK(ST.t[i] != NULL);
	}
	weft_task *c = weft_spawn(st_canceller, NULL);
	pthread_t th;
	bool thread = !seeded(); /* a plain thread's cancels need real time */
	if (thread)
		CHECK_EQ(pthread_create(&th, NULL, st_thread, NULL), 0);
	/* the cancellers stop before the joins free the handles */
	await_at_least(&ST.ended, (int)ST.n);
	atomic_store(&ST.stop, 1);
	if (thread)
		pthread_join(th, NULL);
	CHECK_EQ(weft_join(c, NULL), 0);
	for (size_t i = 0; i < ST.n; i++) {
		int r = weft_join(ST.t[i], NULL);
		CHECK(r == 0 || r == -ECANCELED);
	}
	CHECK_EQ(weft_chan_len(ST.ch), 0);
	weft_chan_free(ST.ch);
	return NULL;
}

static void test_shield_stress(void **state)
{
	(void)state;
	memset(&ST, 0, sizeof ST);
	ST.n = scaled(400, 16);
	ST.t = calloc(ST.n, sizeof *ST.t);
	assert_non_null(ST.t);
	run(2, st_main, NULL);
	assert_int_equal(atomic_load(&ST.started), (int)ST.n);
	assert_int_equal(atomic_load(&ST.ended), (int)ST.n);
	/* cancels landed, some on fibers inside their shields */
	assert_true(atomic_load(&ST.cancelled_seen) > 0);
	assert_true(atomic_load(&ST.pop_cancelled) > 0);
	print_message("  %d of %zu fibers cancelled (%d inside a shield), "
		      "%ld shielded rounds\n",
		      atomic_load(&ST.cancelled_seen), ST.n,
		      atomic_load(&ST.pop_cancelled),
		      atomic_load(&ST.shielded_waits));
	free(ST.t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shield_waits_in_cancelled_fiber),
		cmocka_unit_test(test_shield_cancel_while_parked),
		cmocka_unit_test(test_shield_deadlines),
		cmocka_unit_test(test_shield_shutdown),
		cmocka_unit_test(test_shield_group),
		cmocka_unit_test(test_shield_misuse),
		cmocka_unit_test(test_shield_stress),
	};
	apply_test_filters();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
