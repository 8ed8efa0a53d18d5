/* Description: fibers really run on every worker, and idle workers sleep.
 *
 * One fiber spawns CPU-bound fibers (they never yield); with W workers the
 * others must steal them, so every worker id shows up. An idle runtime
 * (every fiber asleep, no timers due for a while) must not spin: the
 * process CPU time over a 400 ms idle stretch stays far below wall time.
 */
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>
#include <weft.h>

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_worker_2),
		cmocka_unit_test(test_every_worker_4),
		cmocka_unit_test(test_idle_sleeps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
