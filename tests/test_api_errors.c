/* Description: the documented error returns of the public API that no other
 * test checks (bad input, the wrong thread, use after close, the wrong
 * owner), grouped by header. From an audit that called every weft_ call
 * with bad input against docs/api/ and include/weft/; the checks the
 * other tests already make (test_misuse above all) are left out here.
 *
 * - runtime/task: weft_close outside a fiber (-EINVAL, the fd stays open);
 *   the 65,536th shield (-EOVERFLOW, the others pop); a task named and
 *   cancelled from a plain thread and from a pool thread;
 * - chan/select: a plain thread's send/recv/select that need not wait
 *   work, those that would -EINVAL; a closed channel's case is chosen by
 *   select with result -EPIPE, from a fiber and from a plain thread;
 * - sync/rwlock/once: plain threads are one owner, "no fiber" (a mutex or
 *   rwlock write hold one took another releases; a fiber gets -EPERM);
 *   cond_wait with a mutex another fiber holds -EPERM; the try-locks'
 *   NULL, a plain thread's wrlock; once's fn run by a plain thread
 *   calling it again -EBUSY;
 * - group/wait_any: group calls from a plain thread while a run goes on;
 *   wait_any on the caller itself, or from a plain thread, -EINVAL;
 * - io/net: the listen/bind conveniences from a plain thread (numeric
 *   hosts only), the fiber-only ones -EINVAL;
 * - conn/listener: close from a pool thread -EINVAL and frees nothing
 *   (the conn and the listener still work: ASan); a second close while
 *   the first waits for a send in flight -EBADF and frees nothing;
 * - signal/debug/metrics: every kind of number signal_watch refuses (and
 *   the ones signal_wait refuses that test_signal does not try), nothing
 *   installed; metrics and dump from a plain and a pool thread;
 *   weft_sim_report_get -ENOENT before any seeded run.
 *
 * Fibers never call assert_* (cmocka longjmps): CHECK / EXPECT record, and
 * run() asserts on the main stack once weft_run has returned.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sys/un.h>

#include "testutil.h"

static void *ret_fn(void *a) { return a; }
static int grp_ok(void *a) { (void)a; return 0; }

/* run fn(arg) on a new plain thread and wait for it (from a fiber this
 * blocks the worker for as long: keep fn short and free of fiber waits) */
static void *on_thread(void *(*fn)(void *), void *arg)
{
	pthread_t th;
	void *r = NULL;
	if (pthread_create(&th, NULL, fn, arg)) {
		note_fail(__LINE__, 0, 0);
		return NULL;
	}
	pthread_join(th, &r);
	return r;
}

/* a fiber parked on an event until set (or cancelled) */
static void *event_waiter(void *arg)
{
	return (void *)(intptr_t)weft_event_wait(arg);
}

/* ---- runtime / task ------------------------------------------------------ */

static weft_shield shields[65536];

/* from a plain thread or a pool thread: name and cancel a live task */
static void *name_and_cancel(void *arg)
{
	weft_task *t = arg;
	EXPECT(weft_task_set_name(t, "renamed"), 0);
	const char *n = weft_task_name(t);
	CHECK(n && !strcmp(n, "renamed"));
	EXPECT(weft_cancel(t), 0);
	return NULL;
}

static void *rt_main(void *arg)
{
	(void)arg;
	/* 65,535 shields open, the next refused; all of them pop */
	unsigned k = 0;
	int r = 0;
	while (k < 65536 && (r = weft_shield_push(&shields[k])) == 0)
		k++;
	EXPECT(r, -EOVERFLOW);
	EXPECT(k, 65535);
	int bad_pop = 0;
	while (k--)
		if (weft_shield_pop(&shields[k]) != 0)
			bad_pop++;
	EXPECT(bad_pop, 0);
	EXPECT(weft_shield_pop(&shields[0]), -EINVAL); /* none open */
	EXPECT(weft_sleep(1 * MS), 0);

	/* a live task named and cancelled from a plain thread, then from a
	 * pool thread */
	for (int pool = 0; pool < 2; pool++) {
		weft_event ev;
		weft_event_init(&ev);
		weft_task *t = weft_spawn(event_waiter, &ev);
		weft_task_set_name(t, "waiter");
		CHECK_EQ(wait_parked("waiter", "event"), 0);
		if (pool)
			EXPECT(weft_blocking(name_and_cancel, t, NULL), 0);
		else
			on_thread(name_and_cancel, t);
		void *res = NULL;
		EXPECT(weft_join(t, &res), -ECANCELED);
		EXPECT((intptr_t)res, -ECANCELED);
	}
	return NULL;
}

static void test_runtime_task_errors(void **state)
{
	(void)state;
	/* outside a fiber weft_close refuses, and the fd stays open */
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(weft_close(p[0]), -EINVAL);
	assert_true(fcntl(p[0], F_GETFD) >= 0);
	close(p[0]);
	close(p[1]);
	run(2, rt_main, NULL);
}

/* ---- chan / select -------------------------------------------------------- */

struct chans {
	weft_chan *buf;    /* buffered, capacity 2 */
	weft_chan *rz;     /* rendezvous, never served */
	weft_chan *closed; /* closed, drained */
};

/* a plain thread: what need not wait works, what would wait -EINVAL */
static void *chan_thread(void *arg)
{
	struct chans *c = arg;
	int x = 5, y = 0;
	EXPECT(weft_chan_send(c->buf, &x), 0); /* room: no wait */
	EXPECT(weft_chan_recv(c->buf, &y), 0); /* queued: no wait */
	EXPECT(y, 5);
	EXPECT(weft_chan_recv(c->buf, &y), -EINVAL); /* would wait */
	EXPECT(weft_chan_send(c->rz, &x), -EINVAL);
	EXPECT(weft_chan_send(c->closed, &x), -EPIPE);
	EXPECT(weft_chan_recv(c->closed, &y), -EPIPE);
	weft_select_case sc[2] = {{c->rz, WEFT_RECV, &y, 99},
				  {c->closed, WEFT_RECV, &y, 99}};
	EXPECT(weft_select(sc, 1, 0), -EINVAL);
	EXPECT(weft_select(sc, 2, 0), 1); /* the closed case proceeds */
	EXPECT(sc[1].result, -EPIPE);
	return NULL;
}

static void *chan_main(void *arg)
{
	(void)arg;
	struct chans c = {weft_chan_new(2, sizeof(int)),
			  weft_chan_new(0, sizeof(int)),
			  weft_chan_new(1, sizeof(int))};
	CHECK(c.buf && c.rz && c.closed);
	weft_chan_close(c.closed);
	on_thread(chan_thread, &c);
	/* in a fiber: a send on a closed channel and a recv on it, each
	 * beside a case that would wait, are chosen with -EPIPE */
	int x = 1, y = 0;
	weft_select_case sc[2] = {{c.rz, WEFT_RECV, &y, 99},
				  {c.closed, WEFT_SEND, &x, 99}};
	EXPECT(weft_select(sc, 2, 0), 1);
	EXPECT(sc[1].result, -EPIPE);
	EXPECT(sc[0].result, 99); /* only the chosen case's is set */
	sc[1] = (weft_select_case){c.closed, WEFT_RECV, &y, 99};
	EXPECT(weft_select(sc, 2, 1), 1);
	EXPECT(sc[1].result, -EPIPE);
	EXPECT(weft_chan_len(c.buf), 0);
	weft_chan_free(c.buf);
	weft_chan_free(c.rz);
	weft_chan_free(c.closed);
	return NULL;
}

static void test_chan_select_errors(void **state)
{
	(void)state;
	run(2, chan_main, NULL);
}

/* ---- sync / rwlock / once -------------------------------------------------- */

static weft_mutex mx;
static weft_rwlock rw;

static void *mx_trylock(void *a) { (void)a; return (void *)(intptr_t)weft_mutex_trylock(&mx); }
static void *mx_unlock(void *a) { (void)a; return (void *)(intptr_t)weft_mutex_unlock(&mx); }
static void *rw_trywr(void *a) { (void)a; return (void *)(intptr_t)weft_rwlock_trywrlock(&rw); }
static void *rw_unlock(void *a) { (void)a; return (void *)(intptr_t)weft_rwlock_unlock(&rw); }
static void *rw_wrlock(void *a) { (void)a; return (void *)(intptr_t)weft_rwlock_wrlock(&rw); }

static weft_once once_plain = WEFT_ONCE_INIT;
static int once_inner = 1;
static int once_recurse(void *a)
{
	(void)a;
	once_inner = weft_once_call(&once_plain, once_recurse, NULL);
	return 0;
}

struct holder {
	weft_mutex m;
	weft_event release;
	_Atomic int locked;
};

static void *mutex_holder(void *arg)
{
	struct holder *h = arg;
	CHECK_EQ(weft_mutex_lock(&h->m), 0);
	atomic_store(&h->locked, 1);
	CHECK_EQ(weft_event_wait(&h->release), 0);
	CHECK_EQ(weft_mutex_unlock(&h->m), 0);
	return NULL;
}

static void *sync_main(void *arg)
{
	(void)arg;
	/* holds that plain threads took (before the run): "no fiber" */
	EXPECT(weft_mutex_unlock(&mx), -EPERM);
	EXPECT(weft_mutex_trylock(&mx), -EBUSY);
	weft_cond cv;
	weft_cond_init(&cv);
	EXPECT(weft_cond_wait(&cv, &mx), -EPERM);
	EXPECT(weft_rwlock_unlock(&rw), -EPERM);
	EXPECT(weft_rwlock_trywrlock(&rw), -EBUSY);
	EXPECT(weft_rwlock_tryrdlock(&rw), -EBUSY);
	/* a mutex another fiber holds: cond_wait -EPERM, and it is not
	 * released by it */
	static struct holder h;
	weft_mutex_init(&h.m);
	weft_event_init(&h.release);
	atomic_store(&h.locked, 0);
	weft_task *t = weft_spawn(mutex_holder, &h);
	await_at_least(&h.locked, 1);
	EXPECT(weft_cond_wait(&cv, &h.m), -EPERM);
	EXPECT(weft_mutex_trylock(&h.m), -EBUSY);
	weft_event_set(&h.release);
	EXPECT(weft_join(t, NULL), 0);
	/* the try-locks' NULL */
	weft_rwlock l = WEFT_RWLOCK_INIT;
	EXPECT(weft_rwlock_tryrdlock(NULL), -EINVAL);
	EXPECT(weft_rwlock_trywrlock(NULL), -EINVAL);
	EXPECT(weft_rwlock_trywrlock(&l), 0);
	EXPECT(weft_rwlock_unlock(&l), 0);
	return NULL;
}

static void test_sync_rwlock_once_errors(void **state)
{
	(void)state;
	/* plain threads are one owner: thread A's hold, thread B releases */
	weft_mutex_init(&mx);
	weft_rwlock_init(&rw);
	assert_int_equal((intptr_t)on_thread(mx_trylock, NULL), 0);
	assert_int_equal((intptr_t)on_thread(mx_unlock, NULL), 0);
	assert_int_equal((intptr_t)on_thread(rw_trywr, NULL), 0);
	assert_int_equal((intptr_t)on_thread(rw_unlock, NULL), 0);
	assert_int_equal((intptr_t)on_thread(rw_wrlock, NULL), -EINVAL);
	assert_int_equal(weft_rwlock_unlock(&rw), -EPERM); /* free */
	/* held by a plain thread across a run: its fibers get -EPERM */
	assert_int_equal((intptr_t)on_thread(mx_trylock, NULL), 0);
	assert_int_equal((intptr_t)on_thread(rw_trywr, NULL), 0);
	run(2, sync_main, NULL);
	assert_int_equal(weft_mutex_unlock(&mx), 0);
	assert_int_equal(weft_rwlock_unlock(&rw), 0);
	/* fn run by a plain thread calls it again: -EBUSY, not -EDEADLK */
	once_inner = 1;
	assert_int_equal(weft_once_call(&once_plain, once_recurse, NULL), 0);
	assert_int_equal(once_inner, -EBUSY);
	assert_int_equal(weft_once_call(&once_plain, once_recurse, NULL), 0);
}

/* ---- group / wait_any ------------------------------------------------------ */

struct gx {
	weft_group *g, *gc;
	weft_task *live;
};

static void *group_thread(void *arg)
{
	struct gx *x = arg;
	EXPECT(weft_group_spawn(x->g, grp_ok, NULL), 0);
	EXPECT(weft_group_spawn(x->g, NULL, NULL), -EINVAL);
	EXPECT(weft_group_wait(x->g), -EINVAL); /* not a fiber */
	weft_group_cancel(x->gc);
	EXPECT(weft_group_spawn(x->gc, grp_ok, NULL), -ECANCELED);
	weft_task *list[1] = {x->live};
	EXPECT(weft_wait_any(list, 1), -EINVAL); /* not a fiber */
	return NULL;
}

static _Atomic(weft_task *) self_handle;
static void *wait_any_self(void *arg)
{
	weft_task *other = arg;
	weft_task *me;
	uint64_t t0 = real_ns();
	while (!(me = atomic_load(&self_handle)) && real_ns() - t0 < 10 * SEC)
		weft_sleep(100 * US);
	CHECK(me != NULL);
	weft_task *l1[1] = {me};
	EXPECT(weft_wait_any(l1, 1), -EINVAL);
	/* beside a task that runs on: refused, not a wait (the scope
	 * bounds the test if it did wait) */
	weft_task *l2[2] = {other, me};
	weft_deadline d;
	weft_deadline_push(&d, 2 * SEC);
	EXPECT(weft_wait_any(l2, 2), -EINVAL);
	weft_deadline_pop(&d);
	return (void *)1;
}

static void *group_main(void *arg)
{
	(void)arg;
	weft_event ev;
	weft_event_init(&ev);
	struct gx x = {weft_group_new(), weft_group_new(),
		       weft_spawn(event_waiter, &ev)};
	CHECK(x.g && x.gc && x.live);
	on_thread(group_thread, &x);
	EXPECT(weft_group_wait(x.g), 0);
	EXPECT(weft_group_wait(x.gc), -ECANCELED);
	weft_group_free(x.g);
	weft_group_free(x.gc);

	weft_task *s = weft_spawn(wait_any_self, x.live);
	atomic_store(&self_handle, s);
	void *r = NULL;
	EXPECT(weft_join(s, &r), 0);
	EXPECT((intptr_t)r, 1);
	weft_event_set(&ev);
	EXPECT(weft_join(x.live, NULL), 0);
	return NULL;
}

static void test_group_wait_any_errors(void **state)
{
	(void)state;
	atomic_store(&self_handle, NULL);
	run(2, group_main, NULL);
}

/* ---- io / net -------------------------------------------------------------- */

static void test_io_net_errors(void **state)
{
	(void)state;
	/* outside a fiber: the listen/bind conveniences with a numeric or
	 * empty host work; a name, or a connect, -EINVAL */
	int fds = count_dir_entries("/proc/self/fd");
	int l = weft_tcp_listen("127.0.0.1", 0, 4);
	assert_true(l >= 0);
	int l6 = weft_tcp_listen(NULL, 0, 4);
	assert_true(l6 >= 0);
	int u = weft_udp_bind("127.0.0.1", 0);
	assert_true(u >= 0);
	char path[64];
	snprintf(path, sizeof path, "/tmp/weft_api_errors_%d.sock",
		 (int)getpid());
	unlink(path);
	int ul = weft_unix_listen(path, 4);
	assert_true(ul >= 0);
	assert_int_equal(weft_tcp_listen("localhost", 0, 4), -EINVAL);
	assert_int_equal(weft_udp_bind("localhost", 0), -EINVAL);
	assert_int_equal(weft_tcp_connect("127.0.0.1", port_of(l)), -EINVAL);
	assert_int_equal(weft_unix_connect(path), -EINVAL);
	struct sockaddr_in sa;
	socklen_t len = sizeof sa;
	assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &len), 0);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	assert_int_equal(weft_connect(s, (struct sockaddr *)&sa, len), -EINVAL);
	close(s);
	close(l);
	close(l6);
	close(u);
	close(ul);
	unlink(path);
	assert_int_equal(count_dir_entries("/proc/self/fd"), fds);
}

/* ---- conn / listener ------------------------------------------------------- */

struct cl {
	weft_conn *c;
	weft_listener *l;
};

static void *close_from_pool(void *arg)
{
	struct cl *x = arg;
	EXPECT(weft_conn_close(x->c), -EINVAL);
	EXPECT(weft_listener_close(x->l), -EINVAL);
	return NULL;
}

static void *closer(void *arg)
{
	return (void *)(intptr_t)weft_conn_close(arg);
}

static void *conn_main(void *arg)
{
	(void)arg;
	/* close from a pool thread: -EINVAL, nothing freed (ASan) */
	int sv[2];
	CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	int lfd = weft_tcp_listen("127.0.0.1", 0, 4);
	CHECK(lfd >= 0);
	int err = 1;
	struct cl x = {weft_conn_open(sv[0], &err), NULL};
	EXPECT(err, 0);
	x.l = weft_listener_open(lfd, &err);
	EXPECT(err, 0);
	CHECK(x.c && x.l);
	if (!x.c || !x.l)
		return NULL;
	EXPECT(weft_blocking(close_from_pool, &x, NULL), 0);
	EXPECT(weft_conn_fd(x.c), sv[0]);
	EXPECT(weft_listener_fd(x.l), lfd);
	char b[4];
	EXPECT(weft_conn_send(x.c, "hi", 2), 2);
	EXPECT(weft_recv(sv[1], b, 2, MSG_WAITALL), 2);
	EXPECT(weft_send(sv[1], "yo", 2, 0), 2);
	EXPECT(weft_conn_recv(x.c, b, 2), 2);
	int c = weft_tcp_connect("127.0.0.1", port_of(lfd));
	CHECK(c >= 0);
	int a = weft_listener_accept(x.l, NULL, NULL);
	CHECK(a >= 0);
	close(a);
	close(c);
	EXPECT(weft_conn_close(x.c), 0);
	EXPECT(weft_listener_close(x.l), 0);
	close(sv[1]);

	/* a second close while the first waits for a send in flight (the
	 * peer reads nothing): -EBADF, nothing freed, nothing done */
	CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	weft_conn *cn = weft_conn_open(sv[0], NULL);
	CHECK(cn != NULL);
	if (!cn)
		return NULL;
	size_t big = 4u << 20;
	char *data = calloc(1, big);
	weft_deadline d;
	weft_deadline_push(&d, 50 * MS);
	ssize_t took = weft_conn_send(cn, data, big);
	weft_deadline_pop(&d);
	free(data);
	CHECK(took > 0 && (size_t)took < big); /* the socket filled up */
	weft_task *t = weft_spawn(closer, cn);
	weft_task_set_name(t, "closer");
	EXPECT(wait_parked("closer", "io send"), 0);
	EXPECT(weft_conn_close(cn), -EBADF);
	/* the peer drains: the send finishes, the first close ends */
	size_t got = 0;
	char *sink = malloc(64 << 10);
	ssize_t n;
	while ((n = weft_recv(sv[1], sink, 64 << 10, 0)) > 0)
		got += (size_t)n;
	free(sink);
	EXPECT(n, 0);
	CHECK(got >= (size_t)took); /* the bytes it took were sent */
	void *r = (void *)1;
	EXPECT(weft_join(t, &r), 0);
	EXPECT((intptr_t)r, 0);
	close(sv[1]);
	return NULL;
}

static void test_conn_listener_errors(void **state)
{
	(void)state;
	int fds = count_dir_entries("/proc/self/fd");
	run(2, conn_main, NULL);
	assert_int_equal(count_dir_entries("/proc/self/fd"), fds);
}

/* ---- signal / debug / metrics ---------------------------------------------- */

static void *observe(void *arg)
{
	(void)arg;
	weft_metrics m;
	EXPECT(weft_metrics_get(&m), 0);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	CHECK(f != NULL);
	if (f) {
		EXPECT(weft_dump(f) >= 1, 1); /* the fibers listed */
		fclose(f);
		CHECK(buf && strstr(buf, "\"main\"") != NULL);
		free(buf);
	}
	return NULL;
}

static void *signal_main(void *arg)
{
	(void)arg;
	static const int usr1[] = {SIGUSR1};
	/* every kind of number watch refuses (test_signal tries some with
	 * wait only), and wait's that it does not try; each also beside a
	 * good one: nothing installed */
	const int bad[] = {0,       65,      -1,      INT_MAX, SIGKILL,
			   SIGSTOP, SIGSEGV, SIGBUS,  SIGFPE,  SIGILL,
			   SIGTRAP, SIGSYS,  32,      33};
	/* a wait that is not refused would wait: the scope ends it */
	weft_deadline d;
	weft_deadline_push(&d, 20 * MS);
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		const int one[1] = {bad[i]}, two[2] = {SIGUSR1, bad[i]};
		EXPECT(weft_signal_watch(one, 1), -EINVAL);
		EXPECT(weft_signal_watch(two, 2), -EINVAL);
		EXPECT(weft_signal_wait(one, 1), -EINVAL);
		EXPECT(weft_signal_wait(two, 2), -EINVAL);
	}
	weft_deadline_pop(&d);
	EXPECT(weft_signal_watch(usr1, 0), -EINVAL);
	struct sigaction cur;
	CHECK_EQ(sigaction(SIGUSR1, NULL, &cur), 0);
	CHECK(cur.sa_handler == SIG_DFL);
	/* metrics and dump from a plain thread and from a pool thread */
	weft_task_set_name(NULL, "main");
	on_thread(observe, NULL);
	EXPECT(weft_blocking(observe, NULL, NULL), 0);
	return NULL;
}

static void test_signal_debug_metrics_errors(void **state)
{
	(void)state;
	/* no seeded run yet in this process (under WEFT_SEED every run of
	 * the tests before is one) */
	weft_sim_report rep;
	if (!seeded())
		assert_int_equal(weft_sim_report_get(&rep), -ENOENT);
	run(2, signal_main, NULL);
	weft_config c = cfg_workers(1);
	c.seed = 5;
	assert_int_equal(weft_run(&c, ret_fn, NULL, NULL), 0);
	assert_int_equal(weft_sim_report_get(&rep), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signal_debug_metrics_errors),
		cmocka_unit_test(test_runtime_task_errors),
		cmocka_unit_test(test_chan_select_errors),
		cmocka_unit_test(test_sync_rwlock_once_errors),
		cmocka_unit_test(test_group_wait_any_errors),
		cmocka_unit_test(test_io_net_errors),
		cmocka_unit_test(test_conn_listener_errors),
	};
	apply_test_filters();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
