/* Description: the context switch itself (runtime/arch) and stack reuse.
 *
 * Drives weft__ctx_make / weft__ctx_switch directly on malloc'd stacks:
 * values live in callee-saved registers survive a round trip, the word
 * handed across a switch arrives, each context keeps its own MXCSR and x87
 * control word, and the entry frame is ABI-aligned. Then through the
 * runtime: 10,000 fibers run one after another reuse a handful of stacks,
 * and a reused stack starts clean.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

static void *main_sp, *co_sp;
static volatile long co_seen;
static uintptr_t co_align;
static uint32_t co_mxcsr;

static void co_entry(void *arg, void *from)
{
	long acc = (long)(intptr_t)arg;
	co_align = (uintptr_t)__builtin_frame_address(0);
	/* many live values, so some sit in callee-saved registers */
	long a = acc * 3, b = acc * 5, c = acc * 7, d = acc * 11, e = acc * 13;
	for (int i = 0; i < 1000; i++) {
		void *got = weft__ctx_switch(&co_sp, main_sp,
					     (void *)(intptr_t)(a + b + c + d +
								e + i));
		co_seen = (long)(intptr_t)got;
		a++, b++, c++, d++, e++;
	}
#if defined(__x86_64__)
	_MM_SET_ROUNDING_MODE(_MM_ROUND_TOWARD_ZERO);
	co_mxcsr = _mm_getcsr();
#endif
	weft__ctx_switch(&co_sp, main_sp, (void *)-1);
	abort(); /* never resumed */
}

static void test_round_trips(void **state)
{
	(void)state;
	size_t sz = 64 * 1024;
	char *stk = aligned_alloc(4096, sz);
	assert_non_null(stk);
	co_sp = weft__ctx_make(stk + sz, co_entry, (void *)(intptr_t)1);
	long m1 = 17, m2 = 19, m3 = 23; /* live across the switches */
	long expect_a = 3, expect_b = 5, expect_c = 7, expect_d = 11,
	     expect_e = 13;
#if defined(__x86_64__)
	unsigned int before = _mm_getcsr();
#endif
	for (int i = 0; i < 1000; i++) {
		void *got = weft__ctx_switch(&main_sp, co_sp,
					     (void *)(intptr_t)(i * 2));
		long sum = expect_a + expect_b + expect_c + expect_d +
			   expect_e + i;
		assert_int_equal((long)(intptr_t)got, sum);
		if (i > 0)
			assert_int_equal(co_seen, i * 2);
		expect_a++, expect_b++, expect_c++, expect_d++, expect_e++;
		m1 += i, m2 ^= i, m3 -= i;
	}
	/* the last resume runs to the MXCSR change and switches back */
	void *got = weft__ctx_switch(&main_sp, co_sp, (void *)(intptr_t)1998);
	assert_ptr_equal(got, (void *)-1);
	assert_int_equal(m1, 17 + 999 * 1000 / 2);
	assert_int_equal(m3, 23 - 999 * 1000 / 2);
	/* entry frame: SysV wants (rsp + 8) % 16 == 0 at function entry, so
	 * the frame address (after push rbp) is 16-aligned */
	assert_int_equal(co_align % 16, 0);
#if defined(__x86_64__)
	/* the coroutine changed its rounding mode; ours is untouched */
	assert_int_equal(_mm_getcsr(), before);
	assert_int_equal(co_mxcsr & _MM_ROUND_MASK, _MM_ROUND_TOWARD_ZERO);
#endif
	(void)m2;
	free(stk);
}

/* ---- through the runtime ------------------------------------------------ */

static size_t mapped_after;
static int dirty_seen;

static void *leaf(void *arg)
{
	/* a reused stack must not leak the last fiber's locals into ours in
	 * a way that matters: fill a buffer, check it is ours */
	volatile char buf[4096];
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (char)(uintptr_t)arg;
	for (size_t i = 0; i < sizeof buf; i++)
		if (buf[i] != (char)(uintptr_t)arg)
			dirty_seen = 1;
	return arg;
}

static void *reuse_main(void *arg)
{
	(void)arg;
	for (uintptr_t i = 0; i < 10000; i++) {
		weft_task *t = weft_spawn(leaf, (void *)i);
		void *r = NULL;
		if (!t || weft_join(t, &r) || r != (void *)i)
			dirty_seen = 2;
	}
	mapped_after = atomic_load(&weft__rt_cur)->stacks.mapped;
	return NULL;
}

static void test_stack_reuse(void **state)
{
	(void)state;
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 1;
	assert_int_equal(weft_run(&cfg, reuse_main, NULL, NULL), 0);
	assert_int_equal(dirty_seen, 0);
	/* 10,000 fibers, one at a time: a refill batch of stacks at most */
	assert_true(mapped_after > 0);
	assert_true(mapped_after <= 16);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trips),
		cmocka_unit_test(test_stack_reuse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
