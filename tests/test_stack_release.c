/* Description: the memory of idle stacks goes back to the OS.
 *
 * A stack that sits in the runtime's shared free list, or at the bottom
 * of a worker's cache, through a whole period (WEFT_STACK_DECAY_MS) is
 * released with MADV_DONTNEED (stack.c, "Release"). Checked here:
 *   - after a burst of 2,000 fibers that each touched 32 KiB of stack, all
 *     but the 16 stacks each cache keeps are released, and the process's
 *     RSS falls by at least three quarters of what they held, within a
 *     few periods;
 *   - a second burst reuses the released stacks: the address space does
 *     not grow by new regions;
 *   - WEFT_STACK_DECAY_MS=0 releases nothing; malformed values are -EINVAL;
 *   - stress: bursts of fibers that write a pattern over their stacks,
 *     sleep, and check it, while releases run (period 10 ms) on 2 workers:
 *     a stack is never released under a live fiber, and some were released.
 * RSS figures are left out under the sanitizers (ASan moves frames to its
 * fake stack; TSan's shadow), the stress runs everywhere.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"
#include "testutil.h"


#define KIB 1024l
#define TOUCH (32 * KIB) /* stack bytes each fiber of a burst writes */
#define KEPT 16          /* stack.c CACHE_KEEP: a worker's cache keeps these */

/* field 0 (VmSize) or 1 (RSS) of /proc/self/statm, in KiB; -1 unreadable */
static long statm_kib(int field)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long v[2] = {-1, -1};
	if (!f)
		return -1;
	if (fscanf(f, "%ld %ld", &v[0], &v[1]) != 2)
		v[field] = -1;
	fclose(f);
	return v[field] < 0 ? -1 : v[field] * (sysconf(_SC_PAGESIZE) / KIB);
}

static size_t released(void)
{
	return atomic_load_explicit(&atomic_load(&weft__rt_cur)->stacks.released,
				    memory_order_relaxed);
}

/* ---- bursts ---------------------------------------------------------------- */

static weft_event go;
static _Atomic long filled;

/* Write a pattern over `bytes` of our own stack, wait, check it. A stack
 * released under us would read back zeros. */
static __attribute__((noinline)) void hold_stack(uint64_t id, size_t bytes,
						 uint64_t sleep_ns)
{
	volatile unsigned char buf[TOUCH];
	for (size_t i = 0; i < bytes; i += 64)
		buf[i] = pat(id, i);
	atomic_fetch_add(&filled, 1);
	if (sleep_ns == UINT64_MAX)
		CHECK_EQ(weft_event_wait(&go), 0);
	else
		weft_sleep(sleep_ns);
	for (size_t i = 0; i < bytes; i += 64)
		if (buf[i] != pat(id, i)) {
			CHECK_EQ(buf[i], pat(id, i));
			return;
		}
}

static void *burst_fiber(void *arg)
{
	hold_stack((uint64_t)(uintptr_t)arg, TOUCH, UINT64_MAX);
	return NULL;
}

/* n fibers, each holding TOUCH bytes of stack until all have; returns RSS
 * (KiB) while they all live */
static long burst(size_t n)
{
	weft_event_init(&go);
	atomic_store(&filled, 0);
	weft_task **t = calloc(n, sizeof *t);
	CHECK(t != NULL);
	if (!t)
		return -1;
	for (size_t i = 0; i < n; i++)
		CHECK((t[i] = weft_spawn(burst_fiber, (void *)(uintptr_t)(i + 1))));
	while ((size_t)atomic_load(&filled) < n)
		weft_sleep(1 * MS);
	long live = statm_kib(1);
	weft_event_set(&go);
	for (size_t i = 0; i < n; i++)
		if (t[i])
			CHECK_EQ(weft_join(t[i], NULL), 0);
	free(t);
	return live;
}

/* RSS (KiB) once it has fallen `drop` below `from` and released() has
 * reached `count`, polled for up to 5 s; *ms gets how long that took */
static long rss_after_drop(long from, long drop, size_t count, long *ms)
{
	uint64_t t0 = weft_now();
	long now = statm_kib(1);
	for (int i = 0; i < 250 && (from - now < drop || released() < count);
	     i++) {
		weft_sleep(20 * MS);
		now = statm_kib(1);
	}
	*ms = (long)((weft_now() - t0) / MS);
	return now;
}

#define BURST 2000
static struct {
	long live, after, vm_before, vm_after, live2, after2, ms, ms2;
	size_t released, released2;
} R;

static void *release_main(void *arg)
{
	(void)arg;
	/* what must go: every stack beyond what the two workers' caches
	 * keep (the caches decay too) */
	long want = (long)(BURST - 2 * KEPT) * (TOUCH / KIB) * 3 / 4;
	size_t must = BURST - 2 * KEPT;
	R.live = burst(BURST);
	R.after = rss_after_drop(R.live, want, must, &R.ms);
	R.released = released();
	R.vm_before = statm_kib(0);
	R.live2 = burst(BURST);
	R.vm_after = statm_kib(0);
	R.after2 = rss_after_drop(R.live2, want, R.released + must, &R.ms2);
	R.released2 = released();
	return NULL;
}

static void test_release_after_burst(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("release is off in seeded runs (coarse clock ticks)");
	setenv("WEFT_STACK_DECAY_MS", "100", 1);
	run(2, release_main, NULL);
	unsetenv("WEFT_STACK_DECAY_MS");
	long want = (long)(BURST - 2 * KEPT) * (TOUCH / KIB) * 3 / 4;
	print_message("  RSS live %ld KiB, %ld KiB %ld ms after (%zu stacks "
		      "released); again: live %ld, %ld after %ld ms (%zu); "
		      "VmSize %ld -> %ld KiB\n",
		      R.live, R.after, R.ms, R.released, R.live2, R.after2,
		      R.ms2, R.released2, R.vm_before, R.vm_after);
	/* at least the stacks beyond what the caches keep, in both bursts */
	assert_true(R.released >= BURST - 2 * KEPT);
	assert_true(R.released2 >= R.released + (BURST - 2 * KEPT));
	if (UNDER_SANITIZER || R.live < 0)
		return;
	assert_true(R.live - R.after >= want);
	assert_true(R.live2 - R.after2 >= want);
	/* the second burst took released stacks: no new regions (a region
	 * per 64 stacks of 64 KiB + 64 KiB guard; 2,000 would be ~250 MiB) */
	assert_true(R.vm_after - R.vm_before < 16 * 1024);
}

static long off_live, off_after;
static size_t off_released;

static void *off_main(void *arg)
{
	(void)arg;
	off_live = burst(BURST);
	weft_sleep(400 * MS);
	off_after = statm_kib(1);
	off_released = released();
	return NULL;
}

static void test_decay_off_and_bad_values(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("release is off in seeded runs anyway");
	setenv("WEFT_STACK_DECAY_MS", "0", 1);
	run(2, off_main, NULL);
	assert_int_equal(off_released, 0);
	if (!UNDER_SANITIZER && off_live > 0)
		assert_true(off_live - off_after <
			    (long)BURST * (TOUCH / KIB) / 10);
	static const char *bad[] = {"abc", "5k", "-1", "86400001", "1.5"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		setenv("WEFT_STACK_DECAY_MS", bad[i], 1);
		weft_config c = cfg_workers(1);
		assert_int_equal(weft_run(&c, off_main, NULL, NULL), -EINVAL);
	}
	unsetenv("WEFT_STACK_DECAY_MS");
}

/* ---- stress ----------------------------------------------------------------- */

static void *stress_fiber(void *arg)
{
	uint64_t id = (uint64_t)(uintptr_t)arg;
	uint64_t s = id * 0x9E3779B97F4A7C15ull | 1;
	/* 4-16 KiB of stack, held for 0-8 ms */
	hold_stack(id, (size_t)(4 + rnd(&s) % 13) * KIB, rnd(&s) % (8 * MS));
	return NULL;
}

static size_t stress_released;

static void *stress_main(void *arg)
{
	(void)arg;
	size_t n = scaled(1500, 600), rounds = scaled(30, 6);
	weft_task **t = calloc(n, sizeof *t);
	CHECK(t != NULL);
	if (!t)
		return NULL;
	uint64_t s = 12345;
	for (size_t r = 0; r < rounds; r++) {
		/* a varying share of the burst, so the list rises and falls */
		size_t k = n / 3 + (size_t)(rnd(&s) % (2 * n / 3 + 1));
		for (size_t i = 0; i < k; i++)
			CHECK((t[i] = weft_spawn(
				       stress_fiber,
				       (void *)(uintptr_t)(r * n + i + 1))));
		for (size_t i = 0; i < k; i++)
			if (t[i])
				CHECK_EQ(weft_join(t[i], NULL), 0);
		weft_sleep(rnd(&s) % (25 * MS));
	}
	/* and a burst that fills the shared list (~600 stacks at once, the
	 * spawns take well under the fibers' sleeps, overflow two caches of
	 * 256), then up to 1 s: the stress cannot pass without releasing */
	size_t k = 600; /* <= n */
	for (size_t i = 0; i < k; i++)
		CHECK((t[i] = weft_spawn(stress_fiber,
					 (void *)(uintptr_t)(rounds * n + i + 1))));
	for (size_t i = 0; i < k; i++)
		if (t[i])
			CHECK_EQ(weft_join(t[i], NULL), 0);
	for (int i = 0; i < 100 && !released(); i++)
		weft_sleep(10 * MS);
	free(t);
	stress_released = released();
	return NULL;
}

static void test_stress_release_under_load(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("release is off in seeded runs");
	setenv("WEFT_STACK_DECAY_MS", "10", 1);
	run(2, stress_main, NULL);
	unsetenv("WEFT_STACK_DECAY_MS");
	print_message("  %zu stacks released during the stress\n",
		      stress_released);
	assert_true(stress_released > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_release_after_burst),
		cmocka_unit_test(test_decay_off_and_bad_values),
		cmocka_unit_test(test_stress_release_under_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
