/* Description: weft_metrics_get counts a scripted scenario exactly —
 * spawns and completions, I/O operations, queue lengths, timers, the
 * blocking pool — and its rough counters (polls, steals, parks, busy time)
 * move when they should. Fibers record; asserts run after weft_run. */
#include <fcntl.h>
#include <pthread.h>
#include <string.h>

#include "testutil.h"

static weft_metrics m0, m1, m2;
static int r0, r1;

/* ---- misuse ---------------------------------------------------------------- */

static void metrics_outside(void **state)
{
	(void)state;
	weft_metrics m;
	assert_int_equal(weft_metrics_get(&m), -ESRCH);
	assert_int_equal(weft_metrics_get(NULL), -EINVAL);
}

/* ---- spawn / complete ------------------------------------------------------- */

#define NSPAWN 200

static void *nop(void *arg) { return arg; }

static void *spawn_join_main(void *arg)
{
	(void)arg;
	static weft_task *t[NSPAWN];
	r0 = weft_metrics_get(&m0);
	for (int i = 0; i < NSPAWN; i++)
		CHECK((t[i] = weft_spawn(nop, NULL)) != NULL);
	for (int i = 0; i < NSPAWN; i++)
		CHECK_EQ(weft_join(t[i], NULL), 0);
	r1 = weft_metrics_get(&m1);
	return NULL;
}

static void metrics_spawn_join(void **state)
{
	(void)state;
	run(2, spawn_join_main, NULL);
	assert_int_equal(r0, 0);
	assert_int_equal(r1, 0);
	/* main itself is the first spawn, and still alive */
	assert_int_equal(m0.spawned, 1);
	assert_int_equal(m0.completed, 0);
	assert_int_equal(m0.alive, 1);
	assert_int_equal(m1.spawned, NSPAWN + 1);
	assert_int_equal(m1.completed, NSPAWN);
	assert_int_equal(m1.alive, 1);
	assert_int_equal(m1.workers, 2);
	assert_int_equal(m1.nworker, 2);
	uint64_t sp = 0, done = 0, polls = 0;
	for (unsigned i = 0; i < m1.nworker; i++) {
		sp += m1.worker[i].spawned;
		done += m1.worker[i].completed;
		polls += m1.worker[i].polls;
	}
	assert_int_equal(sp, m1.spawned);
	assert_int_equal(done, m1.completed);
	assert_int_equal(polls, m1.polls);
	/* every fiber ran at least once; main resumed after each join that
	 * parked */
	assert_true(m1.polls >= NSPAWN + 1);
	assert_true(m1.uptime_ns > 0);
}

/* ---- I/O ------------------------------------------------------------------------ */

#define NIO 20

static void *io_main(void *arg)
{
	const char *path = arg;
	char buf[64];
	r0 = weft_metrics_get(&m0);
	int fd = weft_open(path, O_RDWR | O_CREAT | O_TRUNC, 0600); /* 1 */
	CHECK(fd >= 0);
	for (int i = 0; i < NIO; i++) /* NIO */
		CHECK_EQ(weft_write(fd, "0123456789", 10, i * 10), 10);
	CHECK_EQ(weft_fsync(fd), 0); /* 1 */
	for (int i = 0; i < NIO; i++) /* NIO */
		CHECK_EQ(weft_read(fd, buf, 10, i * 10), 10);
	CHECK_EQ(weft_close(fd), 0); /* 1 */
	r1 = weft_metrics_get(&m1);
	return NULL;
}

static void metrics_io_exact(void **state)
{
	(void)state;
	char path[] = "/tmp/weft-metrics-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	run(1, io_main, path);
	unlink(path);
	assert_int_equal(r0 | r1, 0);
	assert_int_equal(m1.io_submitted - m0.io_submitted, 2 * NIO + 3);
	assert_int_equal(m1.io_completed - m0.io_completed, 2 * NIO + 3);
	assert_int_equal(m1.io_inflight, 0);
	assert_int_equal(m1.worker[0].io_submitted, m1.io_submitted);
}

/* an op in flight: a read of an empty pipe */
static int pipefd[2];
static void *reader(void *arg)
{
	(void)arg;
	char c;
	CHECK_EQ(weft_read(pipefd[0], &c, 1, -1), 1);
	return NULL;
}

static void *inflight_main(void *arg)
{
	(void)arg;
	weft_task *t = weft_spawn(reader, NULL);
	for (int i = 0; i < 100; i++)
		weft_yield(); /* the reader runs and parks in its read */
	weft_sleep(20 * MS);
	r0 = weft_metrics_get(&m0);
	CHECK_EQ(write(pipefd[1], "x", 1), 1);
	CHECK_EQ(weft_join(t, NULL), 0);
	r1 = weft_metrics_get(&m1);
	return NULL;
}

static void metrics_io_inflight(void **state)
{
	(void)state;
	assert_int_equal(pipe(pipefd), 0);
	run(1, inflight_main, NULL);
	close(pipefd[0]);
	close(pipefd[1]);
	assert_int_equal(r0 | r1, 0);
	assert_int_equal(m0.io_inflight, 1);
	assert_int_equal(m1.io_inflight, 0);
	assert_int_equal(m1.io_completed - m0.io_completed, 1);
}

/* ---- gauges: local queue, timers ------------------------------------------------ */

static void *sleeper(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_sleep(60 * SEC), -ECANCELED);
	return NULL;
}

static void *gauges_main(void *arg)
{
	(void)arg;
	weft_task *t[10];
	/* one worker, no yield: all ten wait in its queue */
	for (int i = 0; i < 10; i++)
		t[i] = weft_spawn(sleeper, NULL);
	r0 = weft_metrics_get(&m0);
	/* let them run: each parks in its sleep (a timer each) */
	for (int i = 0; i < 20; i++)
		weft_yield();
	r1 = weft_metrics_get(&m1);
	for (int i = 0; i < 10; i++)
		weft_cancel(t[i]);
	for (int i = 0; i < 10; i++)
		CHECK_EQ(weft_join(t[i], NULL), -ECANCELED);
	weft_metrics_get(&m2);
	return NULL;
}

static void metrics_gauges(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("the threaded scheduler's queue order (seeded, weft_spawn may switch)");
	run(1, gauges_main, NULL);
	assert_int_equal(r0 | r1, 0);
	assert_int_equal(m0.local_queue, 10);
	assert_int_equal(m0.worker[0].local_queue, 10);
	assert_int_equal(m0.global_queue, 0);
	assert_int_equal(m0.alive, 11);
	assert_int_equal(m1.local_queue, 0);
	assert_int_equal(m1.timers, 10);
	assert_int_equal(m1.worker[0].timers, 10);
	assert_int_equal(m2.timers, 0);
	assert_int_equal(m2.alive, 1);
}

/* ---- the blocking pool ------------------------------------------------------------ */

static atomic_int release_pool, pool_running;

static void *hold(void *arg)
{
	(void)arg;
	atomic_fetch_add(&pool_running, 1);
	while (!atomic_load(&release_pool))
		usleep(1000);
	return NULL;
}

static void *caller(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_blocking(hold, NULL, NULL), 0);
	return NULL;
}

static void *blocking_main(void *arg)
{
	(void)arg;
	weft_task *a = weft_spawn(caller, NULL);
	await_at_least(&pool_running, 1);
	weft_task *b = weft_spawn(caller, NULL); /* queued behind a */
	for (int i = 0; i < 1000; i++) {
		weft_metrics_get(&m0);
		if (m0.blocking_queue == 1)
			break;
		weft_sleep(1 * MS);
	}
	r0 = weft_metrics_get(&m0);
	atomic_store(&release_pool, 1);
	CHECK_EQ(weft_join(a, NULL), 0);
	CHECK_EQ(weft_join(b, NULL), 0);
	r1 = weft_metrics_get(&m1);
	return NULL;
}

static void metrics_blocking(void **state)
{
	(void)state;
	reset_fails();
	weft_config c = cfg_workers(1);
	c.blocking_threads = 1;
	assert_int_equal(weft_run(&c, blocking_main, NULL, NULL), 0);
	assert_no_fails();
	assert_int_equal(r0 | r1, 0);
	assert_int_equal(m0.blocking_threads, 1);
	assert_int_equal(m0.blocking_idle, 0);
	assert_int_equal(m0.blocking_queue, 1);
	assert_int_equal(m1.blocking_queue, 0);
	assert_int_equal(m1.blocking_threads, 1);
}

/* ---- rough counters: polls, steals, parks, busy time ---------------------------- */

static void *spin_ms(void *arg)
{
	uint64_t until = weft_now() + (uint64_t)(uintptr_t)arg * MS;
	while (weft_now() < until)
		;
	return NULL;
}

static void *yielder(void *arg)
{
	for (int i = 0; i < 1000; i++)
		weft_yield();
	return arg;
}

static void *rough_main(void *arg)
{
	(void)arg;
	weft_task *t[16];
	r0 = weft_metrics_get(&m0);
	/* a yielder alone on its worker still counts its yields */
	weft_task *y = weft_spawn(yielder, NULL);
	CHECK_EQ(weft_join(y, NULL), 0);
	weft_metrics_get(&m2);
	/* sixteen 5 ms spinners queued on one worker: the other steals */
	for (int i = 0; i < 16; i++)
		t[i] = weft_spawn(spin_ms, (void *)(uintptr_t)5);
	for (int i = 0; i < 16; i++)
		CHECK_EQ(weft_join(t[i], NULL), 0);
	weft_sleep(20 * MS); /* both workers idle: they park */
	r1 = weft_metrics_get(&m1);
	return NULL;
}

static void metrics_rough(void **state)
{
	(void)state;
	run(2, rough_main, NULL);
	assert_int_equal(r0 | r1, 0);
	assert_true(m2.polls - m0.polls >= 1000);
	assert_true(m1.steals >= 1);
	assert_true(m1.stolen >= m1.steals);
	if (!seeded()) /* simulated workers never park */
		assert_true(m1.parks >= 1);
	assert_true(m1.worker[0].busy_ns > 0 || m1.worker[1].busy_ns > 0);
	/* 16 x 5 ms of spinning happened, and a worker is busy no longer
	 * than the runtime has been up */
	if (!seeded()) /* seeded, the spinners overlap in virtual time */
		assert_true(m1.busy_ns >= 80 * MS);
	for (unsigned i = 0; i < m1.nworker; i++)
		assert_true(m1.worker[i].busy_ns <= m1.uptime_ns + 10 * MS);
}

/* ---- from another thread ----------------------------------------------------------- */

static atomic_int thread_done;
static void *foreign(void *arg)
{
	(void)arg;
	weft_task *t = weft_spawn(nop, NULL);
	weft_detach(t);
	r0 = weft_metrics_get(&m0);
	atomic_store(&thread_done, 1);
	return NULL;
}

static void *foreign_main(void *arg)
{
	(void)arg;
	pthread_t th;
	CHECK_EQ(pthread_create(&th, NULL, foreign, NULL), 0);
	await_at_least(&thread_done, 1);
	weft_sleep(10 * MS);
	r1 = weft_metrics_get(&m1);
	pthread_join(th, NULL);
	return NULL;
}

static void metrics_foreign(void **state)
{
	(void)state;
	run(2, foreign_main, NULL);
	assert_int_equal(r0 | r1, 0);
	assert_true(m0.spawned >= 2);
	assert_int_equal(m1.spawned, 2); /* main and the foreign spawn */
	assert_int_equal(m1.completed, 1);
}

/* ---- from other threads, racing the end of weft_run ---------------------------- */

/* weft_run freed the blocking pool (its mutex included) before it shut
 * out plain-thread callers: a weft_metrics_get that got in just before
 * locked freed memory and hung (gdb: the reader in weft__blocking_stats,
 * weft_run waiting for it to leave). Two readers loop while runs start
 * and end; a watchdog turns a hang into a failure. */
static atomic_int mr_stop, mr_done;
static atomic_long mr_reads;

static void *mr_reader(void *arg)
{
	(void)arg;
	weft_metrics m;
	while (!atomic_load(&mr_stop))
		if (weft_metrics_get(&m) == 0)
			atomic_fetch_add(&mr_reads, 1);
	return NULL;
}

static void *mr_watchdog(void *arg)
{
	(void)arg;
	for (int i = 0; i < 600 && !atomic_load(&mr_done); i++)
		usleep(100 * 1000);
	if (!atomic_load(&mr_done)) {
		fprintf(stderr, "metrics_foreign_vs_end: hung for 60 s\n");
		_exit(1);
	}
	return NULL;
}

static void *mr_blocking_fn(void *arg) { return arg; }

static void *mr_main(void *arg)
{
	(void)arg;
	weft_blocking(mr_blocking_fn, NULL, NULL); /* the pool exists */
	return NULL;
}

static void metrics_foreign_vs_end(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("plain threads on a real-time schedule");
	pthread_t th[2], wd;
	assert_int_equal(pthread_create(&wd, NULL, mr_watchdog, NULL), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, mr_reader, NULL),
				 0);
	weft_config c = cfg_workers(1);
	int bad = 0;
	size_t runs = scaled(300, 30);
	for (size_t i = 0; i < runs; i++)
		bad += weft_run(&c, mr_main, NULL, NULL) != 0;
	atomic_store(&mr_stop, 1);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	atomic_store(&mr_done, 1);
	pthread_join(wd, NULL);
	assert_int_equal(bad, 0);
	assert_true(atomic_load(&mr_reads) > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(metrics_outside),
		cmocka_unit_test(metrics_spawn_join),
		cmocka_unit_test(metrics_io_exact),
		cmocka_unit_test(metrics_io_inflight),
		cmocka_unit_test(metrics_gauges),
		cmocka_unit_test(metrics_blocking),
		cmocka_unit_test(metrics_rough),
		cmocka_unit_test(metrics_foreign),
		cmocka_unit_test(metrics_foreign_vs_end),
	};
	apply_test_filters();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
