/* Description: fibers really run on every worker, and idle workers sleep.
 *
 * One fiber spawns CPU-bound fibers (they never yield); with W workers the
 * others must steal them, so every worker id shows up. An idle runtime
 * (every fiber asleep, no timers due for a while) must not spin: the
 * process CPU time over a 400 ms idle stretch stays far below wall time.
 * Quiet wakes (sched.c): two fibers woken by one reap of their worker's
 * ring, the first of which then hogs that worker for 400 ms without
 * yielding: the second must still run within 200 ms (another worker's
 * watcher steals it: ~1 ms), not after the hog. The same for a fiber woken
 * by an event alone in the queue of a worker whose waker then hogs it.
 */
#include <poll.h>
#include <pthread.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>
#include <weft.h>

#include "testutil.h"

#define MAXW 8

static _Atomic unsigned seen_mask;
static atomic_int overlap_max, running_now;

static void *spin(void *arg)
{
	(void)arg;
	int r = atomic_fetch_add(&running_now, 1) + 1;
	int m = atomic_load(&overlap_max);
	while (r > m && !atomic_compare_exchange_weak(&overlap_max, &m, r))
		;
	unsigned id = weft_worker_id();
	if (id < MAXW)
		atomic_fetch_or(&seen_mask, 1u << id);
	uint64_t end = weft_now() + 50 * 1000000ull; /* 50 ms of CPU */
	volatile uint64_t x = 0;
	while (weft_now() < end)
		x++;
	atomic_fetch_sub(&running_now, 1);
	return NULL;
}

static void *spawner(void *arg)
{
	unsigned n = (unsigned)(uintptr_t)arg;
	weft_task *t[4 * MAXW];
	for (unsigned i = 0; i < 4 * n; i++)
		t[i] = weft_spawn(spin, NULL);
	for (unsigned i = 0; i < 4 * n; i++)
		weft_join(t[i], NULL);
	return NULL;
}

static void run_spread(unsigned workers)
{
	const char *seed = getenv("WEFT_SEED");
	if (seed && *seed) { /* weft/sim.h: one thread simulates them all */
		print_message("  skipped under WEFT_SEED: OS threads running "
			      "at once\n");
		skip();
	}
	atomic_store(&seen_mask, 0);
	atomic_store(&overlap_max, 0);
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = workers;
	assert_int_equal(weft_run(&cfg, spawner, (void *)(uintptr_t)workers,
				  NULL),
			 0);
	assert_int_equal(atomic_load(&seen_mask), (1u << workers) - 1);
	/* on W workers, W of them ran at the same time at some point */
	assert_int_equal(atomic_load(&overlap_max), (int)workers);
}

static void test_every_worker_2(void **state) { (void)state; run_spread(2); }
static void test_every_worker_4(void **state) { (void)state; run_spread(4); }

static double cpu_secs(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double idle_cpu, idle_wall;

static void *sleeper(void *arg)
{
	weft_sleep((uint64_t)(uintptr_t)arg);
	return NULL;
}

static void *idle_main(void *arg)
{
	(void)arg;
	/* a few fibers parked on far timers, spread over the workers */
	weft_task *t[8];
	for (int i = 0; i < 8; i++)
		t[i] = weft_spawn(sleeper, (void *)(uintptr_t)(600 * 1000000ull));
	weft_sleep(50 * 1000000ull); /* let everyone settle */
	double c0 = cpu_secs(), w0 = (double)weft_now() * 1e-9;
	weft_sleep(400 * 1000000ull);
	idle_cpu = cpu_secs() - c0;
	idle_wall = (double)weft_now() * 1e-9 - w0;
	for (int i = 0; i < 8; i++)
		weft_join(t[i], NULL);
	return NULL;
}

static void test_idle_sleeps(void **state)
{
	(void)state;
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 4;
	assert_int_equal(weft_run(&cfg, idle_main, NULL, NULL), 0);
	assert_true(idle_wall >= 0.4);
	/* 4 spinning workers would burn ~1.6 s here; allow 5% of one core */
	if (idle_cpu > 0.05 * idle_wall)
		fail_msg("idle runtime used %.3f s CPU in %.3f s", idle_cpu,
			 idle_wall);
}

/* A fiber asleep "forever" (weft_sleep(UINT64_MAX), until cancelled) on
 * worker 1: the parked worker 0 watches worker 1's timers, and used to see
 * that one as long overdue (its time plus the 2 ms grace wrapped around)
 * and spin at 100% (timer.c, steal_at). */
static _Atomic int forever_on1;

static void *forever_sleeper(void *arg)
{
	(void)arg;
	/* spin until one of us runs on worker 1 (the others steal us) */
	uint64_t until = weft_now() + 2000 * 1000000ull;
	while (!atomic_load(&forever_on1) && weft_worker_id() != 1 &&
	       weft_now() < until)
		; /* spin: keep this worker busy */
	if (weft_worker_id() != 1)
		return NULL;
	atomic_fetch_add(&forever_on1, 1);
	weft_sleep(UINT64_MAX); /* cancelled when main returns */
	return NULL;
}

static void *idle_forever_main(void *arg)
{
	(void)arg;
	for (int i = 0; i < 8; i++)
		weft_detach(weft_spawn(forever_sleeper, NULL));
	uint64_t until = weft_now() + 3000 * 1000000ull;
	while (!atomic_load(&forever_on1) && weft_now() < until)
		weft_sleep(1000000);
	weft_sleep(50 * 1000000ull); /* let everyone settle */
	double c0 = cpu_secs(), w0 = (double)weft_now() * 1e-9;
	weft_sleep(400 * 1000000ull);
	idle_cpu = cpu_secs() - c0;
	idle_wall = (double)weft_now() * 1e-9 - w0;
	return NULL;
}

static void test_idle_sleeps_forever(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("measures real CPU time");
	idle_wall = 0;
	weft_config cfg = cfg_workers(2);
	assert_int_equal(weft_run(&cfg, idle_forever_main, NULL, NULL), 0);
	if (!atomic_load(&forever_on1))
		fail_msg("setup: no sleeper ran on worker 1 in 2 s");
	assert_true(idle_wall >= 0.4);
	if (idle_cpu > 0.05 * idle_wall)
		fail_msg("idle runtime (a fiber asleep forever on worker 1) "
			 "used %.3f s CPU in %.3f s",
			 idle_cpu, idle_wall);
}

/* ---- quiet wakes behind a hog ------------------------------------------- */

static int qpipe[2];
static _Atomic unsigned q_wid[2];
static atomic_int q_ready, q_hog;
static _Atomic uint64_t q_woke_at[2];
static uint64_t q_write_at, q_late_ns;
static int q_attempts, q_setup_fail;

static void *q_poller(void *arg)
{
	int i = (int)(uintptr_t)arg;
	atomic_store(&q_wid[i], weft_worker_id());
	atomic_fetch_add(&q_ready, 1);
	int r = weft_poll(qpipe[0], POLLIN);
	uint64_t now = weft_now();
	atomic_store(&q_woke_at[i], now);
	int none = -1;
	if (atomic_compare_exchange_strong(&q_hog, &none, i)) {
		/* the first to run hogs its worker: no yield for 400 ms */
		volatile uint64_t x = 0;
		while (weft_now() < now + 400 * MS)
			x++;
	}
	return (void *)(intptr_t)r;
}

static atomic_int q_kicked;

static void *q_kick(void *arg)
{
	(void)arg;
	atomic_store(&q_kicked, 1);
	return NULL;
}

static void spin_ms(uint64_t ms)
{
	volatile uint64_t x = 0;
	uint64_t end = weft_now() + ms * MS;
	while (weft_now() < end)
		x++;
}

/* Placing fibers on our worker: while the other worker runs a spinner it
 * steals nothing, so what we spawn stays here. The spinner gets there by
 * a steal: we spin (our worker stays busy) until it runs, and the other
 * worker, woken by the spawn, takes it. Released by a flag; nobody joins
 * it (a join's wake would move us to the other worker), we sleep until
 * it has ended. Without this, under load (ctest -j2 under TSan, or two
 * CPU hogs) the other worker stole one of the pollers in all of 20
 * attempts about half the time. */
static atomic_int occ_run, occ_stop, occ_done;

static void *occupier(void *arg)
{
	(void)arg;
	atomic_store(&occ_run, 1);
	while (!atomic_load(&occ_stop))
		; /* no yield: the worker is ours until released */
	atomic_store(&occ_done, 1);
	return NULL;
}

/* 0 once the other worker runs the spinner; -1 if it never took it */
static int occupy_other(void)
{
	atomic_store(&occ_run, 0);
	atomic_store(&occ_stop, 0);
	atomic_store(&occ_done, 0);
	weft_task *t = weft_spawn(occupier, NULL);
	if (!t)
		return -1;
	weft_detach(t);
	for (int i = 0; i < 5000 && !atomic_load(&occ_run); i++)
		spin_ms(1);
	if (atomic_load(&occ_run))
		return 0;
	atomic_store(&occ_stop, 1); /* it runs after us, and ends at once */
	return -1;
}

static void release_other(void)
{
	atomic_store(&occ_stop, 1);
	for (int i = 0; i < 5000 && !atomic_load(&occ_done); i++)
		weft_sleep(1 * MS); /* our timer: we stay on our worker */
}

/* the byte from a plain thread, once both workers have long parked */
static void *q_writer(void *arg)
{
	(void)arg;
	struct timespec ts = {0, 30 * 1000000L};
	nanosleep(&ts, NULL);
	q_write_at = weft_now();
	char c = 'x';
	if (write(qpipe[1], &c, 1) != 1)
		q_setup_fail = 1; /* the writer thread's write */
	return NULL;
}

/* Both pollers and this fiber on one worker X; one byte wakes both polls
 * in one reap of X's ring. With arg (kick): the other worker must be
 * parked while X is awake, so it parks as the armed watcher and the reap's
 * quiet clock does not notify: a kick fiber it steals, then X stays busy
 * until it has parked again; the watcher's look rescues the second fiber.
 * Without: a plain thread writes once both workers have parked (nobody
 * watches: nobody was awake), so the clock's start notifies. */
static void *quiet_main(void *arg)
{
	bool kick = arg != NULL;
	for (q_attempts = 1; q_attempts <= 20; q_attempts++) {
		atomic_store(&q_ready, 0);
		atomic_store(&q_hog, -1);
		atomic_store(&q_kicked, 0);
		if (occupy_other()) {
			q_setup_fail = 5;
			return NULL;
		}
		weft_task *t[2];
		for (int i = 0; i < 2; i++)
			t[i] = weft_spawn(q_poller, (void *)(uintptr_t)i);
		/* let both reach their poll (no byte in the pipe yet) */
		while (atomic_load(&q_ready) < 2)
			weft_sleep(1 * MS);
		release_other();
		weft_sleep(10 * MS);
		unsigned me = weft_worker_id();
		bool same = atomic_load(&q_wid[0]) == me &&
			    atomic_load(&q_wid[1]) == me;
		if (same && kick) {
			weft_detach(weft_spawn(q_kick, NULL));
			for (int i = 0; i < 200 && !atomic_load(&q_kicked); i++)
				spin_ms(1);
			spin_ms(5); /* the other worker parks while we run */
			same = weft_worker_id() == me && atomic_load(&q_kicked);
		}
		char c = 'x';
		pthread_t th;
		if (kick) {
			q_write_at = weft_now();
			if (write(qpipe[1], &c, 1) != 1)
				q_setup_fail = 1; /* write */
		} else if (pthread_create(&th, NULL, q_writer, NULL)) {
			q_setup_fail = 2; /* pthread_create */
			return NULL;
		}
		void *r0, *r1;
		weft_join(t[0], &r0);
		weft_join(t[1], &r1);
		if (!kick)
			pthread_join(th, NULL);
		if (read(qpipe[0], &c, 1) != 1 || (intptr_t)r0 < 0 ||
		    (intptr_t)r1 < 0)
			q_setup_fail = 3; /* read back, or a poll failed */
		if (!same)
			continue; /* not all on one worker: again */
		int other = 1 - atomic_load(&q_hog);
		q_late_ns = atomic_load(&q_woke_at[other]) - q_write_at;
		return NULL;
	}
	q_setup_fail = 4; /* never all on one worker */
	return NULL;
}

static void quiet_run(bool kick)
{
	assert_int_equal(pipe(qpipe), 0);
	q_setup_fail = 0;
	q_late_ns = 0;
	run(2, quiet_main, kick ? qpipe : NULL);
	close(qpipe[0]);
	close(qpipe[1]);
	if (q_setup_fail)
		fail_msg("setup failed (%s, %s): %s", kick ? "kick" : "writer",
			 q_setup_fail == 4 ? "20 attempts" : "an attempt",
			 q_setup_fail == 1   ? "a write to the pipe"
			 : q_setup_fail == 2 ? "pthread_create"
			 : q_setup_fail == 3 ? "the read back or a poll"
			 : q_setup_fail == 5 ? "the other worker never took a "
					       "spinner in 5 s"
					     : "the pollers never all ran on one "
					       "worker");
	if (q_late_ns > 200 * MS)
		fail_msg("a fiber woken with the hog waited %.1f ms (attempt %d)",
			 (double)q_late_ns / 1e6, q_attempts);
}

static void test_quiet_wake_behind_hog(void **state)
{
	(void)state;
	/* the watcher and the quiet clock are the threaded scheduler's;
	 * seeded runs pick every next fiber themselves (and under some seeds
	 * never put both pollers on one worker in 20 attempts) */
	SKIP_IF_SEEDED("the threaded scheduler's quiet wakes");
	quiet_run(true);  /* the watcher's look */
	quiet_run(false); /* the clock's start notifies */
}

/* ---- a lone woken fiber behind a hog --------------------------------------- */

static weft_event l_ev;
static _Atomic unsigned l_wid;
static atomic_int l_ready;
static _Atomic uint64_t l_woke;

static void *l_waiter(void *arg)
{
	(void)arg;
	atomic_store(&l_wid, weft_worker_id());
	atomic_store(&l_ready, 1);
	weft_event_wait(&l_ev);
	atomic_store(&l_woke, weft_now());
	return NULL;
}

/* A fiber sets an event its worker's other fiber waits on (the woken one
 * is alone in the queue: no notify while a watcher is armed), then hogs
 * the worker for 400 ms. The watcher sees the queue unchanged between two
 * of its looks and steals the woken fiber. */
static void *lone_main(void *arg)
{
	(void)arg;
	/* placement is up to the scheduler (the other worker may steal the
	 * waiter at its spawn): failed attempts are cheap, so try often */
	for (q_attempts = 1; q_attempts <= 200; q_attempts++) {
		weft_event_init(&l_ev);
		atomic_store(&l_ready, 0);
		atomic_store(&q_kicked, 0);
		weft_task *t = weft_spawn(l_waiter, NULL);
		while (!atomic_load(&l_ready))
			weft_sleep(1 * MS);
		weft_sleep(10 * MS);
		unsigned me = weft_worker_id();
		bool same = atomic_load(&l_wid) == me;
		if (same) {
			weft_detach(weft_spawn(q_kick, NULL));
			for (int i = 0; i < 200 && !atomic_load(&q_kicked); i++)
				spin_ms(1);
			spin_ms(5); /* the other worker parks while we run */
			same = weft_worker_id() == me && atomic_load(&q_kicked);
		}
		if (!same) { /* not the setup wanted: no hog, next attempt */
			weft_event_set(&l_ev);
			weft_join(t, NULL);
			continue;
		}
		uint64_t set_at = weft_now();
		weft_event_set(&l_ev);
		spin_ms(400);
		weft_join(t, NULL);
		q_late_ns = atomic_load(&l_woke) - set_at;
		return NULL;
	}
	q_setup_fail = 1;
	return NULL;
}

static void test_lone_wake_behind_hog(void **state)
{
	(void)state;
	q_setup_fail = 0;
	q_late_ns = 0;
	run(2, lone_main, NULL);
	assert_int_equal(q_setup_fail, 0);
	if (q_late_ns > 200 * MS)
		fail_msg("a fiber woken before a hog waited %.1f ms (attempt %d)",
			 (double)q_late_ns / 1e6, q_attempts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_worker_2),
		cmocka_unit_test(test_every_worker_4),
		cmocka_unit_test(test_idle_sleeps),
		cmocka_unit_test(test_idle_sleeps_forever),
		cmocka_unit_test(test_quiet_wake_behind_hog),
		cmocka_unit_test(test_lone_wake_behind_hog),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
