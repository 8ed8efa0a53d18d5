/* Description: weft_signal_wait (weft/signal.h).
 *
 * - a fiber waits for SIGUSR1, another fiber sends it (kill): it returns
 *   SIGUSR1; a signal sent by a plain thread wakes it too;
 * - a delivery wakes every fiber waiting for that signal (three on SIGUSR1)
 *   and none waiting only for another (SIGUSR2), which a later delivery
 *   wakes;
 * - a delivery while nobody waits is kept, once: the next wait returns at
 *   once, the one after waits (two deliveries coalesce); a watched signal
 *   never waited for yet is kept too;
 * - cancellation and deadlines: -ECANCELED / -ETIMEDOUT, and a signal that
 *   comes afterwards is kept for the next wait (nothing lost);
 * - misuse (wait and watch): NULL, n 0, numbers out of range, SIGKILL,
 *   SIGSEGV -> -EINVAL; a
 *   plain thread -> -EINVAL; a signal the workers block -> -EINVAL; the
 *   runtime's dump signal -> -EBUSY; and the runtime keeps working;
 * - weft_run restores what was installed before: a handler of the
 *   program's own runs again after weft_run returns;
 * - stress: a plain thread sends SIGUSR1 again and again, each time once
 *   the waiting fiber (2 workers, moving between them) has counted the
 *   last one: every delivery is seen, none is lost.
 *
 * Fibers never call assert_* (cmocka longjmps): they record with CHECK and
 * the test checks after weft_run returns.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static const int usr1[] = {SIGUSR1};
static const int usr2[] = {SIGUSR2};

static void *wait_usr1(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)weft_signal_wait(usr1, 1);
}

static void *wait_usr2(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)weft_signal_wait(usr2, 1);
}

/* sig's handler now (SIG_DFL, the program's own, or weft's) */
static void *handler_of(int sig)
{
	struct sigaction sa;
	sigaction(sig, NULL, &sa);
	return (void *)sa.sa_handler;
}

/* From a fiber: wait (1 ms steps, at most 10 s) until sig's handler is no
 * longer `before`, i.e. a waiter's first wait has installed weft's: a
 * signal sent earlier would take the old action (SIGUSR1's kills) */
static void await_installed(int sig, void *before)
{
	for (int i = 0; i < 10000 && handler_of(sig) == before; i++)
		weft_sleep(1 * MS);
	CHECK(handler_of(sig) != before);
}

/* join t and return its weft_signal_wait result */
static int result_of(weft_task *t)
{
	void *r = NULL;
	CHECK_EQ(weft_join(t, &r), 0);
	return (int)(intptr_t)r;
}

/* ---- one delivery, from a fiber and from a thread -------------------------- */

static void *send_usr1_thread(void *arg)
{
	(void)arg;
	usleep(20000);
	kill(getpid(), SIGUSR1);
	return NULL;
}

static void *basic_main(void *arg)
{
	(void)arg;
	void *before = handler_of(SIGUSR1);
	weft_task *t = weft_spawn(wait_usr1, NULL);
	await_installed(SIGUSR1, before);
	weft_sleep(20 * MS); /* it waits */
	CHECK_EQ(kill(getpid(), SIGUSR1), 0);
	CHECK_EQ(result_of(t), SIGUSR1);

	t = weft_spawn(wait_usr1, NULL);
	pthread_t th;
	CHECK_EQ(pthread_create(&th, NULL, send_usr1_thread, NULL), 0);
	CHECK_EQ(result_of(t), SIGUSR1);
	pthread_join(th, NULL);
	return NULL;
}

static void test_signal_basic(void **state)
{
	(void)state;
	run(1, basic_main, NULL);
	run(2, basic_main, NULL);
}

/* ---- every waiter of that signal, no other -------------------------------- */

static void *broadcast_main(void *arg)
{
	(void)arg;
	weft_deadline d;
	void *b1 = handler_of(SIGUSR1), *b2 = handler_of(SIGUSR2);
	weft_task *a[3], *b = weft_spawn(wait_usr2, NULL);
	for (int i = 0; i < 3; i++)
		a[i] = weft_spawn(wait_usr1, NULL);
	await_installed(SIGUSR1, b1);
	await_installed(SIGUSR2, b2);
	weft_sleep(20 * MS);
	CHECK_EQ(kill(getpid(), SIGUSR1), 0);
	weft_deadline_push(&d, 5 * SEC); /* a waiter left behind: fail, not hang */
	for (int i = 0; i < 3; i++)
		CHECK_EQ(result_of(a[i]), SIGUSR1);
	weft_deadline_pop(&d);
	weft_sleep(20 * MS);
	/* the SIGUSR2 waiter is still parked: a join under a 1 ms
	 * deadline times out */
	weft_deadline_push(&d, 1 * MS);
	CHECK_EQ(weft_join(b, NULL), -ETIMEDOUT);
	weft_deadline_pop(&d);
	CHECK_EQ(kill(getpid(), SIGUSR2), 0);
	CHECK_EQ(result_of(b), SIGUSR2);
	return NULL;
}

static void test_signal_broadcast(void **state)
{
	(void)state;
	run(2, broadcast_main, NULL);
}

/* ---- kept while nobody waits, once ----------------------------------------- */

static void *pending_main(void *arg)
{
	(void)arg;
	weft_deadline d;
	/* watched, never waited for yet: the delivery is kept (and does
	 * not kill us, as SIGUSR1's default action would) */
	CHECK_EQ(weft_signal_watch(usr1, 1), 0);
	kill(getpid(), SIGUSR1);
	weft_sleep(20 * MS);
	weft_task *t = weft_spawn(wait_usr1, NULL);
	CHECK_EQ(result_of(t), SIGUSR1);

	/* two deliveries while nobody waits: kept as one */
	kill(getpid(), SIGUSR1);
	kill(getpid(), SIGUSR1);
	weft_sleep(20 * MS); /* dispatched meanwhile */
	weft_deadline_push(&d, 2 * SEC);
	CHECK_EQ(weft_signal_wait(usr1, 1), SIGUSR1); /* at once */
	weft_deadline_pop(&d);
	weft_deadline_push(&d, 30 * MS);
	CHECK_EQ(weft_signal_wait(usr1, 1), -ETIMEDOUT); /* consumed */
	weft_deadline_pop(&d);

	/* two signals pending: the lowest first, then the other */
	static const int both[] = {SIGUSR2, SIGUSR1};
	void *b2 = handler_of(SIGUSR2);
	weft_task *u = weft_spawn(wait_usr2, NULL); /* installs SIGUSR2 */
	await_installed(SIGUSR2, b2);
	kill(getpid(), SIGUSR2);
	CHECK_EQ(result_of(u), SIGUSR2);
	kill(getpid(), SIGUSR2);
	kill(getpid(), SIGUSR1);
	weft_sleep(20 * MS);
	int lo = SIGUSR1 < SIGUSR2 ? SIGUSR1 : SIGUSR2;
	int hi = SIGUSR1 < SIGUSR2 ? SIGUSR2 : SIGUSR1;
	CHECK_EQ(weft_signal_wait(both, 2), lo);
	CHECK_EQ(weft_signal_wait(both, 2), hi);
	return NULL;
}

static void test_signal_pending(void **state)
{
	(void)state;
	run(2, pending_main, NULL);
}

/* ---- cancellation and deadlines ---------------------------------------------- */

static void *giveup_main(void *arg)
{
	(void)arg;
	weft_deadline d;
	weft_task *t = weft_spawn(wait_usr1, NULL);
	weft_sleep(10 * MS);
	CHECK_EQ(weft_cancel(t), 0);
	void *r = NULL;
	CHECK_EQ(weft_join(t, &r), -ECANCELED); /* a cancelled task's join */
	CHECK_EQ((int)(intptr_t)r, -ECANCELED); /* what its wait returned */

	uint64_t t0 = weft_now();
	weft_deadline_push(&d, 30 * MS);
	CHECK_EQ(weft_signal_wait(usr1, 1), -ETIMEDOUT);
	weft_deadline_pop(&d);
	CHECK(weft_now() - t0 >= 30 * MS);

	/* arrives after both gave up: kept for the next wait */
	kill(getpid(), SIGUSR1);
	weft_sleep(20 * MS);
	weft_deadline_push(&d, 2 * SEC);
	CHECK_EQ(weft_signal_wait(usr1, 1), SIGUSR1);
	weft_deadline_pop(&d);
	return NULL;
}

static void test_signal_cancel_deadline(void **state)
{
	(void)state;
	run(1, giveup_main, NULL);
	run(2, giveup_main, NULL);
}

/* ---- misuse ---------------------------------------------------------------------- */

static _Atomic int thread_result;

static void *plain_thread(void *arg)
{
	(void)arg;
	atomic_store(&thread_result, weft_signal_wait(usr1, 1) == -EINVAL &&
					     weft_signal_watch(usr1, 1) == -EINVAL
				     ? -EINVAL
				     : 0);
	return NULL;
}

static void *misuse_main(void *arg)
{
	(void)arg;
	static const int bad_kill[] = {SIGUSR1, SIGKILL};
	static const int bad_segv[] = {SIGSEGV};
	static const int zero[] = {0}, big[] = {65}, neg[] = {-3};
	static const int dump[] = {SIGUSR2};
	static const int blocked[] = {SIGWINCH};
	CHECK_EQ(weft_signal_wait(NULL, 1), -EINVAL);
	CHECK_EQ(weft_signal_wait(usr1, 0), -EINVAL);
	CHECK_EQ(weft_signal_wait(bad_kill, 2), -EINVAL);
	CHECK_EQ(weft_signal_wait(bad_segv, 1), -EINVAL);
	CHECK_EQ(weft_signal_wait(zero, 1), -EINVAL);
	CHECK_EQ(weft_signal_wait(big, 1), -EINVAL);
	CHECK_EQ(weft_signal_wait(neg, 1), -EINVAL);
	CHECK_EQ(weft_signal_wait(dump, 1), -EBUSY); /* the dump signal */
	CHECK_EQ(weft_signal_wait(blocked, 1), -EINVAL);
	CHECK_EQ(weft_signal_watch(NULL, 1), -EINVAL);
	CHECK_EQ(weft_signal_watch(bad_kill, 2), -EINVAL);
	CHECK_EQ(weft_signal_watch(dump, 1), -EBUSY);
	CHECK_EQ(weft_signal_watch(blocked, 1), -EINVAL);
	/* SIGRTMIN - 1: the C library's; refused before SIGUSR1 is touched */
	const int mixed[] = {SIGUSR1, SIGRTMIN - 1};
	CHECK_EQ(weft_signal_watch(mixed, 2), -EINVAL);
	struct sigaction cur;
	CHECK_EQ(sigaction(SIGUSR1, NULL, &cur), 0);
	CHECK(cur.sa_handler == SIG_DFL); /* nothing installed */
	pthread_t th;
	CHECK_EQ(pthread_create(&th, NULL, plain_thread, NULL), 0);
	pthread_join(th, NULL);
	CHECK_EQ(atomic_load(&thread_result), -EINVAL);
	/* none of them installed anything: SIGUSR1 still works */
	void *b1 = handler_of(SIGUSR1);
	weft_task *t = weft_spawn(wait_usr1, NULL);
	await_installed(SIGUSR1, b1);
	kill(getpid(), SIGUSR1);
	CHECK_EQ(result_of(t), SIGUSR1);
	return NULL;
}

static void test_signal_misuse(void **state)
{
	(void)state;
	/* SIGWINCH blocked before weft_run: the workers inherit the mask */
	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, SIGWINCH);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	reset_fails();
	weft_config c = cfg_workers(2);
	c.dump_signal = SIGUSR2;
	assert_int_equal(weft_run(&c, misuse_main, NULL, NULL), 0);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	assert_no_fails();
	assert_int_equal(weft_signal_wait(usr1, 1), -EINVAL); /* no runtime */
}

/* ---- restored when weft_run returns ------------------------------------------------ */

static volatile sig_atomic_t own_handler_runs;

static void own_handler(int sig)
{
	(void)sig;
	own_handler_runs++;
}

static void test_signal_restore(void **state)
{
	(void)state;
	struct sigaction sa, cur;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = own_handler;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGUSR1, &sa, NULL), 0);
	run(2, basic_main, NULL); /* weft's handler in between */
	assert_int_equal(sigaction(SIGUSR1, NULL, &cur), 0);
	assert_ptr_equal(cur.sa_handler, own_handler);
	own_handler_runs = 0;
	raise(SIGUSR1);
	assert_int_equal(own_handler_runs, 1);
	signal(SIGUSR1, SIG_DFL);
}

/* ---- a handler still writing when the run ends ----------------------------------------- *
 * A handler loads the fd it signals through (the signal eventfd, the dump
 * signal's pipe), then writes it. One preempted between the two while the
 * run ended wrote into whatever file reused that descriptor number (found
 * by a review; now the teardown waits for handlers inside). Here a
 * `write` of our own (INTERPOSE: the static libweft calls it) sleeps 300
 * ms on one plain thread, which signals itself while the run is live;
 * the run ends meanwhile, then main opens files: none may get a byte. */
#if INTERPOSE
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

static _Thread_local bool slow_writer;
static _Atomic int hs_go;

ssize_t write(int fd, const void *buf, size_t n)
{
	static ssize_t (*real)(int, const void *, size_t);
	if (slow_writer) {
		struct timespec ts = {0, 300 * 1000 * 1000};
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
	}
	if (!real)
		real = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT,
								     "write");
	return real(fd, buf, n);
}

static void *hs_thread(void *arg)
{
	slow_writer = true;
	while (!atomic_load(&hs_go))
		usleep(1000);
	pthread_kill(pthread_self(), (int)(intptr_t)arg);
	return NULL;
}

static void *hs_main(void *arg)
{
	static const int usr2[] = {SIGUSR2};
	if ((intptr_t)arg == SIGUSR2)
		CHECK_EQ(weft_signal_watch(usr2, 1), 0);
	atomic_store(&hs_go, 1);
	weft_sleep(100 * MS); /* the handler sleeps in its write meanwhile */
	return NULL;
}

static void handler_outlives(int sig)
{
	atomic_store(&hs_go, 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, hs_thread,
					(void *)(intptr_t)sig), 0);
	reset_fails();
	weft_config c = cfg_workers(1);
	if (sig == SIGUSR1)
		c.dump_signal = SIGUSR1;
	assert_int_equal(weft_run(&c, hs_main, (void *)(intptr_t)sig, NULL), 0);
	assert_no_fails();
	int fd[8];
	char path[8][64];
	for (int i = 0; i < 8; i++) {
		snprintf(path[i], sizeof path[i], "/tmp/weft_test_hs_%d_%d",
			 (int)getpid(), i);
		fd[i] = open(path[i], O_RDWR | O_CREAT | O_TRUNC, 0600);
		assert_true(fd[i] >= 0);
	}
	pthread_join(th, NULL);
	off_t got = 0;
	for (int i = 0; i < 8; i++) {
		struct stat st;
		assert_int_equal(fstat(fd[i], &st), 0);
		got += st.st_size;
		close(fd[i]);
		unlink(path[i]);
	}
	assert_int_equal(got, 0);
}
#endif

static void test_signal_handler_outlives_run(void **state)
{
	(void)state;
#if INTERPOSE
	SKIP_IF_SEEDED("a plain thread's timing against the run's end");
	handler_outlives(SIGUSR2); /* the eventfd of weft_signal_* */
	handler_outlives(SIGUSR1); /* the dump signal's pipe */
#else
	skip(); /* the sanitizers' runtimes intercept write themselves */
#endif
}

/* ---- stress: every delivery seen ------------------------------------------------------ */

static struct {
	_Atomic int acks, stop, done;
	int rounds;
} S;

static void *stress_sender(void *arg)
{
	(void)arg;
	for (int i = 0; i < S.rounds && !atomic_load(&S.stop); i++) {
		kill(getpid(), SIGUSR1);
		/* one delivery per round: wait for its ack (bounded) */
		uint64_t t0 = real_ns();
		while (atomic_load(&S.acks) <= i && real_ns() - t0 < 5 * SEC)
			usleep(50);
		if (atomic_load(&S.acks) <= i) {
			/* lost: say so, then free the waiter (it looks at
			 * stop after each wait) so that the run can end */
			note_fail(__LINE__, atomic_load(&S.acks), i);
			atomic_store(&S.stop, 1);
			for (int k = 0; k < 500 && !atomic_load(&S.done); k++) {
				kill(getpid(), SIGUSR1);
				usleep(10000);
			}
			break;
		}
	}
	return NULL;
}

/* busy fibers on both workers, so the waiter moves and the handler runs
 * on a worker in the middle of a fiber */
static void *spinner(void *arg)
{
	(void)arg;
	while (!atomic_load(&S.stop))
		weft_yield();
	return NULL;
}

static void *stress_waiter(void *arg)
{
	(void)arg;
	for (int i = 0; i < S.rounds && !atomic_load(&S.stop); i++) {
		/* no deadline: in seeded runs the clock would jump to it while
		 * the sender thread sleeps (the sender bounds each round) */
		int r = weft_signal_wait(usr1, 1);
		if (r != SIGUSR1) {
			CHECK_EQ(r, SIGUSR1);
			break;
		}
		atomic_fetch_add(&S.acks, 1);
	}
	atomic_store(&S.stop, 1);
	atomic_store(&S.done, 1);
	return NULL;
}

static void *stress_main(void *arg)
{
	weft_task *sp[4];
	for (int i = 0; i < 4; i++)
		sp[i] = arg ? weft_spawn(churn_fibers, (void *)&S.stop)
			    : weft_spawn(spinner, NULL);
	void *b1 = handler_of(SIGUSR1);
	weft_task *w = weft_spawn(stress_waiter, NULL);
	await_installed(SIGUSR1, b1);
	pthread_t th;
	CHECK_EQ(pthread_create(&th, NULL, stress_sender, NULL), 0);
	CHECK_EQ(weft_join(w, NULL), 0);
	atomic_store(&S.stop, 1);
	pthread_join(th, NULL);
	for (int i = 0; i < 4; i++)
		CHECK_EQ(weft_join(sp[i], NULL), 0);
	return NULL;
}

static void test_signal_stress(void **state)
{
	(void)state;
	memset(&S, 0, sizeof S);
	S.rounds = (int)scaled(2000, 100);
	run(2, stress_main, NULL);
	assert_int_equal(atomic_load(&S.acks), S.rounds);
}

/* the same while fibers start and end on both workers */
static void test_signal_stress_churn(void **state)
{
	(void)state;
	memset(&S, 0, sizeof S);
	S.rounds = (int)scaled(2000, 100);
	run(2, stress_main, (void *)1);
	assert_int_equal(atomic_load(&S.acks), S.rounds);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signal_basic),
		cmocka_unit_test(test_signal_broadcast),
		cmocka_unit_test(test_signal_pending),
		cmocka_unit_test(test_signal_cancel_deadline),
		cmocka_unit_test(test_signal_misuse),
		cmocka_unit_test(test_signal_restore),
		cmocka_unit_test(test_signal_handler_outlives_run),
		cmocka_unit_test(test_signal_stress),
		cmocka_unit_test(test_signal_stress_churn),
	};
	apply_test_filters();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
