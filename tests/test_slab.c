/* Description: the slab behind every task (runtime/slab.c): free items move
 * between per-worker caches and the shared depot in batches, with no walk.
 * Items freed on one cache are taken again on another (no new memory while
 * freed ones wait), threads without a cache take and free one at a time
 * and reuse them too, the slab writes only an item's link and batch header
 * (a "flags" word elsewhere survives every move: tasks are type-stable),
 * and a stress with threads handing items to each other: no item is ever
 * held twice, none is lost, and the carved total stays within what is
 * live plus what the caches may hold.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

/* what one cache may hold (head + spare), and what a carve adds */
#define CACHE_HOLD (2 * WEFT__SLAB_BATCH)
#define REFILL WEFT__SLAB_REFILL

struct item {
	void *link;           /* link_off */
	_Atomic uint32_t flags; /* the slab must never write it */
	_Atomic uint32_t owner; /* the stress: who holds it (0: free) */
	void *hdr[2];         /* hdr_off */
	char pad[32];
};

static void slab_new(struct weft__slab *s)
{
	weft__slab_init(s, sizeof(struct item), offsetof(struct item, link),
			offsetof(struct item, hdr), 0);
}

static void count_one(void *p, void *ctx)
{
	(void)p;
	(*(size_t *)ctx)++;
}

static size_t carved(struct weft__slab *s)
{
	size_t n = 0;
	weft__slab_walk(s, count_one, &n);
	return n;
}

static void flag_check(void *p, void *ctx)
{
	struct item *it = p;
	uint32_t f = atomic_load(&it->flags);
	if (f != 0 && (f & 0xffff0000u) != 0x5a5a0000u)
		(*(size_t *)ctx)++;
}

#define N 10000

static void *got[N];

static void reuse_across_caches(void **state)
{
	(void)state;
	struct weft__slab s;
	slab_new(&s);
	struct weft__slab_cache a = {0}, b = {0}, c = {0};
	for (size_t i = 0; i < N; i++) {
		got[i] = weft__slab_get(&s, &a);
		assert_non_null(got[i]);
		struct item *it = got[i];
		assert_int_equal(atomic_load(&it->flags), 0); /* fresh */
		atomic_store(&it->flags, 0x5a5a0000u | (uint32_t)(i & 0xffff));
		atomic_store(&it->owner, 1);
	}
	size_t first = carved(&s);
	assert_true(first >= N && first < N + REFILL);
	/* all freed on another cache: beyond what b keeps, to the depot */
	for (size_t i = 0; i < N; i++) {
		atomic_store(&((struct item *)got[i])->owner, 0);
		weft__slab_put(&s, &b, got[i]);
	}
	/* a third cache takes as many: freed items, no fresh ones, until
	 * only the ones a and b keep are missing */
	for (size_t i = 0; i < N; i++) {
		struct item *it = weft__slab_get(&s, &c);
		assert_non_null(it);
		assert_int_equal(atomic_load(&it->owner), 0);
		atomic_store(&it->owner, 1);
		got[i] = it;
	}
	assert_true(carved(&s) <= first + CACHE_HOLD + REFILL);
	/* each once: the owner marks above would have caught a repeat, and
	 * the flags words are what we wrote (or 0 for the fresh ones) */
	size_t bad = 0;
	weft__slab_walk(&s, flag_check, &bad);
	assert_int_equal(bad, 0);
	weft__slab_fini(&s);
}

static void foreign_one_at_a_time(void **state)
{
	(void)state;
	struct weft__slab s;
	slab_new(&s);
	struct weft__slab_cache w = {0};
	/* a thread without a cache: take, free, take ... reuses one item */
	for (int i = 0; i < 1000; i++) {
		void *p = weft__slab_get(&s, NULL);
		assert_non_null(p);
		weft__slab_put(&s, NULL, p);
	}
	assert_int_equal(carved(&s), 1);
	/* items a worker freed in batches, taken one at a time without a
	 * cache (each take puts the rest of its batch back) */
	for (size_t i = 0; i < N; i++)
		assert_non_null(got[i] = weft__slab_get(&s, &w));
	size_t before = carved(&s);
	for (size_t i = 0; i < N; i++)
		weft__slab_put(&s, &w, got[i]);
	for (size_t i = 0; i < N - CACHE_HOLD; i++) {
		struct item *it = weft__slab_get(&s, NULL);
		assert_non_null(it);
		assert_int_equal(atomic_load(&it->owner), 0);
		atomic_store(&it->owner, 1);
	}
	assert_int_equal(carved(&s), before);
	/* and items freed one at a time without a cache, taken by a cache */
	for (int i = 0; i < 500; i++)
		weft__slab_put(&s, NULL, weft__slab_get(&s, NULL));
	weft__slab_fini(&s);
}

/* ---- threads handing items to each other -------------------------------- */

#define THREADS 4
#define OPS 200000
#define RING 4096

static struct weft__slab ss;
static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static void *ring[RING];
static size_t ring_n;
static _Atomic int twice, lost_get;
static _Atomic size_t live, live_max;

static void own(struct item *it, uint32_t me)
{
	uint32_t zero = 0;
	if (!atomic_compare_exchange_strong(&it->owner, &zero, me))
		atomic_store(&twice, 1);
	size_t l = atomic_fetch_add(&live, 1) + 1, m = atomic_load(&live_max);
	while (l > m && !atomic_compare_exchange_weak(&live_max, &m, l))
		;
}

static void disown(struct item *it, uint32_t me)
{
	if (atomic_exchange(&it->owner, 0) != me)
		atomic_store(&twice, 1);
	atomic_fetch_sub(&live, 1);
}

static void *stress_thread(void *arg)
{
	uint32_t me = (uint32_t)(uintptr_t)arg;
	/* the last thread has no cache: a plain thread's spawns and joins */
	struct weft__slab_cache cache = {0}, *c = me == THREADS ? NULL : &cache;
	uint64_t rng = 0x9E3779B97F4A7C15ull * me;
	void *mine[64];
	size_t nmine = 0;
	for (int op = 0; op < OPS; op++) {
		rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
		unsigned r = (unsigned)(rng >> 32) % 8;
		if (r < 3 && nmine < 64) { /* take */
			struct item *it = weft__slab_get(&ss, c);
			if (!it) {
				atomic_store(&lost_get, 1);
				break;
			}
			own(it, me);
			mine[nmine++] = it;
		} else if (r < 5 && nmine) { /* free one of ours */
			struct item *it = mine[--nmine];
			disown(it, me);
			weft__slab_put(&ss, c, it);
		} else if (r < 6 && nmine) { /* hand one to whoever */
			struct item *it = mine[--nmine];
			disown(it, me);
			pthread_mutex_lock(&ring_lock);
			if (ring_n < RING) {
				ring[ring_n++] = it;
				it = NULL;
			}
			pthread_mutex_unlock(&ring_lock);
			if (it) /* ring full: free it here */
				weft__slab_put(&ss, c, it);
		} else { /* free one someone handed over */
			pthread_mutex_lock(&ring_lock);
			struct item *it = ring_n ? ring[--ring_n] : NULL;
			pthread_mutex_unlock(&ring_lock);
			if (it)
				weft__slab_put(&ss, c, it);
		}
	}
	while (nmine) {
		struct item *it = mine[--nmine];
		disown(it, me);
		weft__slab_put(&ss, c, it);
	}
	return NULL;
}

static void threads_hand_over(void **state)
{
	(void)state;
	slab_new(&ss);
	pthread_t t[THREADS + 1];
	for (uintptr_t i = 0; i <= THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, stress_thread,
						(void *)(i + 1)),
				 0);
	for (int i = 0; i <= THREADS; i++)
		pthread_join(t[i], NULL);
	while (ring_n) /* what was handed over last: freed by nobody yet */
		weft__slab_put(&ss, NULL, ring[--ring_n]);
	assert_int_equal(atomic_load(&twice), 0);
	assert_int_equal(atomic_load(&lost_get), 0);
	assert_int_equal(atomic_load(&live), 0);
	/* what was ever carved: at most the most held at once (by the
	 * threads and in the ring), what the caches may keep, and a carve
	 * per cache */
	size_t bound = atomic_load(&live_max) + RING + (THREADS + 1) *
							     (CACHE_HOLD + REFILL);
	size_t n = carved(&ss);
	print_message("  carved %zu items, most held at once %zu\n", n,
		      atomic_load(&live_max));
	assert_true(n <= bound);
	weft__slab_fini(&ss);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(reuse_across_caches),
		cmocka_unit_test(foreign_one_at_a_time),
		cmocka_unit_test(threads_hand_over),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
