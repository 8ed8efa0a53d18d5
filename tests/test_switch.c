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
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"
#include "testutil.h"

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


/* ---- FP control per fiber, through the runtime ------------------------- */

#if defined(__x86_64__)
/* MXCSR's control bits in the low 32 bits, x87 control word above */
static uint64_t fpctl(void)
{
	uint16_t cw;
	__asm__ volatile("fnstcw %0" : "=m"(cw));
	return (uint64_t)cw << 32 | (_mm_getcsr() & ~0x3fu);
}
static void fp_odd_mode(void)
{
	uint16_t cw;
	_MM_SET_ROUNDING_MODE(_MM_ROUND_TOWARD_ZERO);
	_MM_SET_EXCEPTION_MASK(_MM_MASK_MASK & ~_MM_MASK_DIV_ZERO);
	__asm__ volatile("fnstcw %0" : "=m"(cw));
	cw = (cw & ~0x0c00) | 0x0c00; /* x87 RC = toward zero */
	__asm__ volatile("fldcw %0" : : "m"(cw));
}

static uint64_t fp_main, fp_b_seen, fp_a_set;

static void *fp_b(void *arg)
{
	(void)arg;
	fp_b_seen = fpctl();
	return NULL;
}

static void *fp_a(void *arg)
{
	(void)arg;
	fp_odd_mode();
	fp_a_set = fpctl();
	return NULL; /* exits with its odd mode: B is started from here */
}

static void *fp_leak_main(void *arg)
{
	(void)arg;
	fp_main = fpctl();
	/* one worker, owner LIFO: a runs first; b, spawned by us with our
	 * mode, is first run when a switches off (its exit hands over) */
	weft_task *b = weft_spawn(fp_b, NULL);
	weft_task *a = weft_spawn(fp_a, NULL);
	CHECK_EQ(weft_join(a, NULL), 0);
	CHECK_EQ(weft_join(b, NULL), 0);
	CHECK_EQ(fpctl(), fp_main);
	return NULL;
}

/* A fiber's FP control (rounding, exception masks) is its own: one that
 * changed it must not hand it to the next fiber its worker starts. */
static void test_fp_no_leak_to_new_fiber(void **state)
{
	(void)state;
	run(1, fp_leak_main, NULL);
	assert_int_not_equal(fp_a_set, fp_main);
	assert_int_equal(fp_b_seen, fp_main);
}

static atomic_int fs_moved, fs_stop;

static void *fs_spinner(void *arg)
{
	(void)arg;
	/* other fibers on the workers see the default mode */
	uint64_t mine = fpctl();
	while (!atomic_load(&fs_stop)) {
		CHECK_EQ(fpctl(), mine);
		weft_yield();
	}
	return NULL;
}

static void *fs_odd(void *arg)
{
	uint64_t base = *(uint64_t *)arg;
	CHECK_EQ(fpctl(), base);
	fp_odd_mode();
	uint64_t mine = fpctl();
	unsigned first = weft_worker_id();
	for (int i = 0; i < 200000 && !atomic_load(&fs_moved); i++) {
		weft_yield();
		CHECK_EQ(fpctl(), mine);
		if (weft_worker_id() != first)
			atomic_store(&fs_moved, 1);
	}
	CHECK_EQ(fpctl(), mine);
	return NULL;
}

static void *fp_steal_main(void *arg)
{
	(void)arg;
	uint64_t base = fpctl();
	weft_task *sp[1], *odd[4];
	sp[0] = weft_spawn(fs_spinner, NULL);
	for (int i = 0; i < 4; i++)
		odd[i] = weft_spawn(fs_odd, &base);
	for (int i = 0; i < 4; i++)
		CHECK_EQ(weft_join(odd[i], NULL), 0);
	atomic_store(&fs_stop, 1);
	CHECK_EQ(weft_join(sp[0], NULL), 0);
	CHECK_EQ(fpctl(), base);
	return NULL;
}

/* ... and it keeps it across switches and when stolen by another worker */
static void test_fp_kept_across_steal(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("needs two real workers to steal");
	run(2, fp_steal_main, NULL);
	if (!atomic_load(&fs_moved))
		print_message("  (no fiber moved worker this time)\n");
}
#endif

/* ---- entry alignment and deep recursion through the runtime ------------ */

static void *align_fiber(void *arg)
{
	(void)arg;
	CHECK_EQ((uintptr_t)__builtin_frame_address(0) % 16, 0);
#if defined(__x86_64__)
	__m128 v[2];
	v[0] = _mm_set1_ps(1.5f);
	v[1] = _mm_add_ps(v[0], v[0]); /* movaps to the stack */
	CHECK_EQ((uintptr_t)&v[0] % 16, 0);
	float out[4];
	_mm_storeu_ps(out, *(volatile __m128 *)&v[1]);
	CHECK(out[0] == 3.0f);
#endif
	return NULL;
}

static void *align_main(void *arg)
{
	(void)arg;
	align_fiber(NULL);
	for (int i = 0; i < 100; i++)
		CHECK_EQ(weft_join(weft_spawn(align_fiber, NULL), NULL), 0);
	return NULL;
}

static void test_entry_aligned(void **state)
{
	(void)state;
	run(2, align_main, NULL);
}

static char *deep_lo;

static size_t __attribute__((noinline)) deep_rec(size_t left)
{
	volatile char pad[256];
	pad[0] = (char)left;
	char *sp = (char *)__builtin_frame_address(0);
	if ((size_t)(sp - deep_lo) < left)
		return pad[0];
	return deep_rec(left) + pad[0];
}

static void *deep_fiber(void *arg)
{
	deep_lo = weft__worker_self()->cur->ctx.stack_lo;
	deep_rec((size_t)(uintptr_t)arg);
	return arg;
}

static void *deep_main(void *arg)
{
	(void)arg;
	/* down to 1 KiB above the guard, several times on reused stacks */
	for (int i = 0; i < 4; i++) {
		void *r = NULL;
		CHECK_EQ(weft_join(weft_spawn(deep_fiber, (void *)1024), &r), 0);
		CHECK_EQ((uintptr_t)r, 1024);
	}
	return NULL;
}

static void test_deep_recursion(void **state)
{
	(void)state;
	run(1, deep_main, NULL);
}


/* ---- a signal handler runs on a fiber's stack --------------------------- */

/* A program's signal handler (no SA_ONSTACK) runs on whatever stack the
 * worker is on: a fiber's. With a few KiB of its own frame it must not
 * disturb the fiber, and the runtime must ride over the interrupted
 * system calls (io_uring_enter, futex waits). */
static atomic_int sig_seen, sig_stop;

static void __attribute__((noinline)) sig_handler(int sig)
{
	volatile char buf[8192];
	for (size_t i = 0; i < sizeof buf; i += 64)
		buf[i] = (char)sig;
	if (buf[0] == (char)sig)
		atomic_fetch_add(&sig_seen, 1);
}

static long __attribute__((noinline)) sig_work(long n)
{
	volatile long pad[32];
	pad[n % 32] = n;
	return n <= 0 ? 0 : n + sig_work(n - 1) + pad[n % 32] - n;
}

static void *sig_fiber(void *arg)
{
	long i = (long)(intptr_t)arg;
	for (int k = 0; k < 20000; k++) {
		CHECK_EQ(sig_work(100 + i), (100 + i) * (101 + i) / 2);
		if (k % 100 == 0)
			weft_sleep(100 * US);
		else
			weft_yield();
	}
	return NULL;
}

static void *sig_sender(void *arg)
{
	(void)arg;
	sigset_t m; /* for the workers, not us */
	sigemptyset(&m);
	sigaddset(&m, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &m, NULL);
	while (!atomic_load(&sig_stop)) {
		kill(getpid(), SIGUSR1);
		usleep(20);
	}
	return NULL;
}

static void *sig_main(void *arg)
{
	(void)arg;
	weft_task *t[16];
	for (int i = 0; i < 16; i++)
		t[i] = weft_spawn(sig_fiber, (void *)(intptr_t)i);
	for (int i = 0; i < 16; i++)
		CHECK_EQ(weft_join(t[i], NULL), 0);
	return NULL;
}

static void test_signal_on_fiber_stack(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("real threads and signals");
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = sig_handler;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, sig_sender, NULL), 0);
	run(2, sig_main, NULL);
	atomic_store(&sig_stop, 1);
	pthread_join(th, NULL);
	sigaction(SIGUSR1, &old, NULL);
	print_message("  %d signals handled\n", atomic_load(&sig_seen));
	assert_true(atomic_load(&sig_seen) > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trips),
		cmocka_unit_test(test_stack_reuse),
#if defined(__x86_64__)
		cmocka_unit_test(test_fp_no_leak_to_new_fiber),
		cmocka_unit_test(test_fp_kept_across_steal),
#endif
		cmocka_unit_test(test_entry_aligned),
		cmocka_unit_test(test_deep_recursion),
		cmocka_unit_test(test_signal_on_fiber_stack),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
