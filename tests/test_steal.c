/* Description: the whole runtime with a run queue of 4 (WEFT_DEQUE_CAP=4).
 *
 * Every few spawns overflow to the global queue and every steal races the
 * owner. Trees of fibers that spawn, yield, sleep and join, on 4 workers
 * over 2 cores: each fiber must run exactly once and every sum must add up.
 */
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>
#include <weft.h>

static double scale(void)
{
	const char *s = getenv("WEFT_TEST_SCALE");
	double v = s ? atof(s) : 1.0;
	return v > 0 ? v : 1.0;
}

#define MAXN 200000
static _Atomic unsigned char ran[MAXN];
static atomic_int errors;
static unsigned nleaves;

struct range {
	unsigned lo, hi;
};

static void *tree(void *arg)
{
	struct range *r = arg;
	unsigned n = r->hi - r->lo;
	if (n == 1) {
		if (atomic_fetch_add(&ran[r->lo], 1))
			atomic_fetch_add(&errors, 1);
		if (r->lo % 7 == 0)
			weft_yield();
		if (r->lo % 101 == 0)
			weft_sleep(1000 * (r->lo % 5));
		return (void *)(uintptr_t)r->lo;
	}
	/* up to 5 children, spawned and joined out of order */
	unsigned k = n < 5 ? n : 5;
	struct range kids[5];
	weft_task *t[5];
	uint64_t sum = 0;
	for (unsigned i = 0; i < k; i++) {
		kids[i].lo = r->lo + (unsigned)((uint64_t)n * i / k);
		kids[i].hi = r->lo + (unsigned)((uint64_t)n * (i + 1) / k);
		t[i] = weft_spawn(tree, &kids[i]);
		if (!t[i])
			atomic_fetch_add(&errors, 1);
	}
	if (r->lo % 3 == 0)
		weft_yield();
	for (unsigned i = k; i-- > 0;) {
		void *res;
		if (weft_join(t[i], &res))
			atomic_fetch_add(&errors, 1);
		sum += (uintptr_t)res;
	}
	/* sum of lo..hi-1 */
	uint64_t want = ((uint64_t)r->lo + r->hi - 1) * n / 2;
	if (sum != want)
		atomic_fetch_add(&errors, 1);
	return (void *)(uintptr_t)sum;
}

static void *tree_main(void *arg)
{
	(void)arg;
	struct range all = {0, nleaves};
	return tree(&all);
}

static void test_tree_cap4(void **state)
{
	(void)state;
	nleaves = (unsigned)(MAXN * scale());
	if (nleaves < 1000)
		nleaves = 1000;
	for (int round = 0; round < 3; round++) {
		for (unsigned i = 0; i < nleaves; i++)
			atomic_store(&ran[i], 0);
		weft_config cfg;
		weft_config_init(&cfg);
		cfg.workers = 4;
		void *res = NULL;
		assert_int_equal(weft_run(&cfg, tree_main, NULL, &res), 0);
		assert_int_equal(atomic_load(&errors), 0);
		assert_int_equal((uintptr_t)res,
				 (uint64_t)nleaves * (nleaves - 1) / 2);
		for (unsigned i = 0; i < nleaves; i++)
			if (atomic_load(&ran[i]) != 1)
				fail_msg("leaf %u ran %d times", i, ran[i]);
	}
}

/* many independent fibers spawned at once from one fiber: the ring
 * overflows into the global queue over and over */
static atomic_long flat_sum;

static void *flat_leaf(void *arg)
{
	if ((uintptr_t)arg % 3 == 0)
		weft_yield();
	atomic_fetch_add(&flat_sum, (long)(uintptr_t)arg);
	return NULL;
}

static void *flat_main(void *arg)
{
	unsigned n = (unsigned)(uintptr_t)arg;
	weft_task **t = malloc(n * sizeof *t);
	for (unsigned i = 0; i < n; i++)
		t[i] = weft_spawn(flat_leaf, (void *)(uintptr_t)i);
	int r = weft_gather(t, n, NULL);
	free(t);
	return (void *)(intptr_t)r;
}

static void test_flat_cap4(void **state)
{
	(void)state;
	unsigned n = (unsigned)(100000 * scale());
	/* and on one worker, whose ring has no thieves and takes the
	 * lock-free path (deque.c "solo") through every spill */
	static const unsigned workers[] = {3, 1};
	for (size_t k = 0; k < 2; k++) {
		atomic_store(&flat_sum, 0);
		weft_config cfg;
		weft_config_init(&cfg);
		cfg.workers = workers[k];
		void *res = (void *)1;
		assert_int_equal(weft_run(&cfg, flat_main,
					  (void *)(uintptr_t)n, &res),
				 0);
		assert_null(res);
		assert_int_equal(atomic_load(&flat_sum), (long)n * (n - 1) / 2);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tree_cap4),
		cmocka_unit_test(test_flat_cap4),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
