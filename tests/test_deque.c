/* Description: the per-worker run queue (runtime/deque.c) at capacity 4.
 *
 * Built against a runtime compiled with WEFT_DEQUE_CAP=4, so every few
 * pushes overflow to the global queue and every steal races the owner.
 * Single-threaded (with locked CASes, and in the one-worker mode without):
 * LIFO back, yield to the front, oldest from the front,
 * spill of half the ring when full, steal of half into another ring,
 * batches from the global queue.
 * Multi-threaded: one thread produces, every thread pops its own ring and
 * steals from the others and takes from the global queue one at a time or
 * in batches (put back what does not fit); each task must be taken exactly
 * once. Again with owners storing plainly while no thief is announced
 * (deque.c, "Owner without locks"): thieves acknowledged at the owner's
 * next operation, and thieves that never wait (every steal forces the
 * owner with membarrier). And an owner that stops operating with work
 * queued (a fiber running long): thieves must still take all of it.
 */
#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

_Static_assert(WEFT_DEQUE_CAP == 4, "build this test with WEFT_DEQUE_CAP=4");

static weft_task *mk(size_t n)
{
	weft_task *t;
	if (posix_memalign((void **)&t, 64, n * sizeof *t))
		abort();
	memset(t, 0, n * sizeof *t);
	return t;
}

static size_t inject_drain(struct weft__inject *q, weft_task **out)
{
	size_t n = 0;
	weft_task *t;
	while ((t = weft__inject_pop(q)))
		out[n++] = t;
	return n;
}

/* the lazy owner's forced path needs membarrier registered */
static bool membarrier_ok(void)
{
	return syscall(SYS_membarrier,
		       MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

/* solo: the one-worker mode, plain stores instead of locked CASes; every
 * step must give the same result (a stale word must still fail the
 * "CAS": the spill below retries with the word it read before). lazy:
 * the same with no thief announced, until a steal forces the owner. */
static void single_thread(bool solo, bool lazy)
{
	struct weft__deque a, b;
	struct weft__inject q;
	weft__dq_init(&a);
	weft__dq_init(&b);
	a.solo = b.solo = solo;
	a.lazy = b.lazy = lazy;
	weft__inject_init(&q);
	weft_task *t = mk(16);

	assert_null(weft__dq_pop(&a));
	assert_null(weft__dq_pop_front(&a));
	/* LIFO back */
	weft__dq_push(&a, &t[0], &q);
	weft__dq_push(&a, &t[1], &q);
	weft__dq_push(&a, &t[2], &q);
	assert_int_equal(weft__dq_len(&a), 3);
	assert_ptr_equal(weft__dq_pop(&a), &t[2]);
	/* front: oldest; push_front goes behind everything */
	assert_true(weft__dq_push_front(&a, &t[3]));
	assert_ptr_equal(weft__dq_pop_front(&a), &t[3]);
	assert_ptr_equal(weft__dq_pop_front(&a), &t[0]);
	assert_ptr_equal(weft__dq_pop(&a), &t[1]);
	assert_null(weft__dq_pop(&a));
	assert_int_equal(weft__dq_len(&a), 0);

	/* full ring: the 5th push spills the two oldest to the global queue */
	for (int i = 0; i < 5; i++)
		weft__dq_push(&a, &t[i], &q);
	assert_int_equal(weft__dq_len(&a), 3);
	weft_task *g[16];
	assert_int_equal(inject_drain(&q, g), 2);
	assert_ptr_equal(g[0], &t[0]);
	assert_ptr_equal(g[1], &t[1]);
	/* push_front on a full ring refuses */
	weft__dq_push(&a, &t[5], &q);
	assert_false(weft__dq_push_front(&a, &t[6]));
	assert_int_equal(weft__dq_len(&a), 4);

	/* steal half: returns the oldest, moves the rest to b, in order */
	weft_task *s = weft__dq_steal(&a, &b, NULL);
	assert_ptr_equal(s, &t[2]);
	assert_int_equal(weft__dq_len(&a), 2);
	assert_int_equal(weft__dq_len(&b), 1);
	assert_ptr_equal(weft__dq_pop(&b), &t[3]);
	assert_ptr_equal(weft__dq_pop(&a), &t[5]);
	assert_ptr_equal(weft__dq_pop(&a), &t[4]);
	assert_null(weft__dq_steal(&a, &b, NULL));

	/* wrap-around: many cycles through the 21-bit indices' low bits */
	for (int r = 0; r < 100000; r++) {
		weft__dq_push(&a, &t[r % 3], &q);
		if (r % 2)
			assert_true(weft__dq_push_front(&a, &t[3]));
		weft_task *x = weft__dq_pop(&a);
		assert_ptr_equal(x, &t[r % 3]);
		if (r % 2)
			assert_ptr_equal(weft__dq_pop(&a), &t[3]);
	}
	assert_int_equal(inject_drain(&q, g), 0);

	/* a batch from the global queue: the first returned, the next ones
	 * on the ring, the rest put back at the head, in order */
	bool back;
	assert_null(weft__inject_pop_batch(&q, &a, 3, &back));
	assert_false(back);
	for (int i = 0; i < 9; i++)
		t[i].next = &t[i + 1];
	weft__inject_push(&q, &t[0], &t[9], 10);
	assert_ptr_equal(weft__inject_pop_batch(&q, &a, 3, &back), &t[0]);
	assert_true(back);
	assert_int_equal(atomic_load(&q.len), 7);
	assert_ptr_equal(weft__dq_pop_front(&a), &t[1]);
	assert_ptr_equal(weft__dq_pop_front(&a), &t[2]);
	assert_null(weft__dq_pop(&a));
	weft__inject_push(&q, &t[10], &t[10], 1);
	assert_ptr_equal(weft__inject_pop_batch(&q, &a, 3, &back), &t[3]);
	assert_true(back);
	assert_ptr_equal(weft__dq_pop_front(&a), &t[4]);
	assert_ptr_equal(weft__dq_pop_front(&a), &t[5]);
	assert_int_equal(inject_drain(&q, g), 5);
	for (int i = 0; i < 4; i++)
		assert_ptr_equal(g[i], &t[6 + i]);
	assert_ptr_equal(g[4], &t[10]);
	/* all of it: nothing put back */
	t[0].next = &t[1];
	weft__inject_push(&q, &t[0], &t[1], 2);
	assert_ptr_equal(weft__inject_pop_batch(&q, &a, 3, &back), &t[0]);
	assert_false(back);
	assert_int_equal(atomic_load(&q.len), 0);
	assert_ptr_equal(weft__dq_pop(&a), &t[1]);
	assert_null(weft__inject_pop(&q));

	weft__inject_fini(&q);
	free(t);
}

/* ---- stress ---------------------------------------------------------------- */

#define THREADS 4
#define TASKS 400000

static struct weft__deque dqs[THREADS];
static struct weft__inject gq;
static weft_task *tasks;
static _Atomic unsigned char *taken;
static atomic_size_t done_count;
static atomic_int dup_found;

static void consume(weft_task *t)
{
	size_t i = (size_t)(t - tasks);
	if (atomic_fetch_add(&taken[i], 1) != 0)
		atomic_store(&dup_found, 1);
	atomic_fetch_add(&done_count, 1);
}

static bool stop_owner; /* thread 0 stops operating after producing */

static void *stress_thread(void *arg)
{
	unsigned me = (unsigned)(uintptr_t)arg;
	uint64_t rng = me * 7919 + 1;
	size_t next = 0;
	/* a lost task would spin the others for ever: give up after 60 s
	 * (the counts then fail the test) */
	time_t give_up = time(NULL) + 60;
	for (unsigned it = 0; atomic_load(&done_count) < TASKS; it++) {
		if (it % 4096 == 0 && time(NULL) > give_up)
			break;
		/* thread 0 produces in bursts, also to the front */
		if (me == 0 && next < TASKS) {
			for (int k = 0; k < 3 && next < TASKS; k++) {
				weft_task *t = &tasks[next++];
				if (next % 5 == 0 &&
				    weft__dq_push_front(&dqs[0], t))
					continue;
				weft__dq_push(&dqs[0], t, &gq);
			}
		}
		if (me == 0 && stop_owner && next == TASKS)
			break; /* the rest is for the thieves */
		weft_task *t = (rng & 8) ? weft__dq_pop_front(&dqs[me])
					 : weft__dq_pop(&dqs[me]);
		if (!t) {
			rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
			unsigned v = (unsigned)(rng % THREADS);
			if (v != me)
				{
				uint64_t wd = weft__dq_word(&dqs[v]);
				t = weft__dq_steal(&dqs[v], &dqs[me], (rng & 16) ? &wd : NULL);
			}
		}
		if (!t && (rng & 32)) {
			t = weft__inject_pop(&gq);
		} else if (!t) {
			/* own ring empty (its pop failed): room for a batch */
			bool back;
			t = weft__inject_pop_batch(&gq, &dqs[me],
						   1 + (rng >> 6) % 3, &back);
		}
		if (t)
			consume(t);
		else
			weft__cpu_relax();
	}
	return NULL;
}

static void test_single_thread(void **state)
{
	(void)state;
	single_thread(false, false);
}

/* lazy: plain stores while no thief is announced; the steals below find
 * the owner idle and force it (membarrier) */
static void test_single_thread_lazy(void **state)
{
	(void)state;
	if (!membarrier_ok())
		skip();
	single_thread(false, true);
}

static void test_single_thread_solo(void **state)
{
	(void)state;
	single_thread(true, false);
}

static void steal_stress(bool lazy, unsigned spins, bool stop)
{
	if (lazy && !membarrier_ok())
		skip(); /* no membarrier here: the runtime never goes lazy */
	weft__dq_ack_spins = spins;
	stop_owner = stop;
	atomic_store(&done_count, 0);
	tasks = mk(TASKS);
	taken = calloc(TASKS, 1);
	weft__inject_init(&gq);
	for (int i = 0; i < THREADS; i++) {
		weft__dq_init(&dqs[i]);
		dqs[i].lazy = lazy;
	}
	pthread_t th[THREADS];
	for (uintptr_t i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, stress_thread,
						(void *)i),
				 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&dup_found), 0);
	assert_int_equal(atomic_load(&done_count), TASKS);
	for (size_t i = 0; i < TASKS; i++)
		if (taken[i] != 1)
			fail_msg("task %zu taken %d times", i, taken[i]);
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(weft__dq_len(&dqs[i]), 0);
		assert_int_equal(atomic_load(&dqs[i].thieves), 0);
	}
	weft__inject_fini(&gq);
	free((void *)taken);
	free(tasks);
}

static void test_steal_stress(void **state)
{
	(void)state;
	steal_stress(false, 200, false);
}

static void test_steal_stress_lazy(void **state)
{
	(void)state;
	steal_stress(true, 200, false);
}

static void test_steal_stress_lazy_forced(void **state)
{
	(void)state;
	steal_stress(true, 0, false);
}

/* the owner produces, then stops with its ring full: thieves must take
 * the rest without its acknowledgement */
static void test_steal_stopped_owner(void **state)
{
	(void)state;
	steal_stress(true, 200, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_single_thread),
		cmocka_unit_test(test_single_thread_solo),
		cmocka_unit_test(test_single_thread_lazy),
		cmocka_unit_test(test_steal_stress),
		cmocka_unit_test(test_steal_stress_lazy),
		cmocka_unit_test(test_steal_stress_lazy_forced),
		cmocka_unit_test(test_steal_stopped_owner),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
