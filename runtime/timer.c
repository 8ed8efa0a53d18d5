/* timer.c — per-worker timers: a binary min-heap of deadlines.
 *
 * Each worker owns one heap. A fiber that waits with a deadline (sleep, a
 * deadline scope) adds itself to the heap of the worker it runs on and
 * records that worker in f->timer_w and its slot in f->heap_idx. The owner
 * fires due entries between fibers (every WEFT_EVENT_INTERVAL ticks and
 * before it parks) and sleeps in its ring no longer than its earliest
 * deadline. 100k sleepers cost O(log n) each, not O(n).
 *
 * Who touches what
 *   The heap is guarded by a spin lock: the owner adds and fires; a fiber
 *   woken early (cancelled) removes its own entry, and by then it may be
 *   running on another worker, hence the lock (rarely contended: the
 *   common sleep is fired by the owner and removes nothing).
 *   f->heap_idx and f->timer_w change only under the lock of timer_w.
 *
 * Stuck owners. A fiber that computes (or makes a blocking call) without
 * yielding keeps its worker from firing its heap. Other workers therefore
 * fire a heap whose earliest entry is overdue by more than
 * WEFT_TIMER_STEAL_NS (weft__timers_steal: from the search loop, and from
 * the park of the one idle worker that watches, see sched.c), as Go's Ps
 * run each other's timers; the woken fibers go to the thief's queue. The
 * grace keeps them off a healthy owner's heap, which fires at its next
 * tick. (A stuck worker's ring cannot be reaped by others: its fibers
 * waiting on I/O wait for it.)
 *
 * Firing calls weft__wake(f, seq, TIMER): if the fiber was woken otherwise
 * in between, its park seq no longer matches and the wake is a no-op, so a
 * timer can never wake a later wait (see "the park handshake", sched.c).
 *
 * Rejected: a hierarchical wheel (cheaper inserts, but coarse ticks make
 * "never early, rarely late" harder and cost a tick thread or busy ticks
 * while idle); an IORING_OP_TIMEOUT per sleep (a kernel hrtimer and an SQE
 * per sleep, and cancellation needs another SQE).
 */
#include <string.h>
#include <time.h>

#include "internal.h"

uint64_t weft__clock(void)
{
	/* virtual in a seeded run (sim.c) */
	if (__builtin_expect(atomic_load_explicit(&weft__sim_on,
						  memory_order_relaxed), 0))
		return atomic_load_explicit(&weft__vclock,
					    memory_order_relaxed);
	return weft__clock_real();
}

uint64_t weft__clock_real(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void lock(struct weft__timers *t)
{
	while (atomic_flag_test_and_set_explicit(&t->lock,
						 memory_order_acquire))
		weft__cpu_relax();
}
static void unlock(struct weft__timers *t)
{
	atomic_flag_clear_explicit(&t->lock, memory_order_release);
}

void weft__timers_init(struct weft__timers *t)
{
	atomic_flag_clear(&t->lock);
	t->heap = NULL;
	t->len = t->cap = 0;
	atomic_store_explicit(&t->next_when, UINT64_MAX, memory_order_relaxed);
}

/* under the lock, after any change of heap[0] (relaxed: a hint for
 * thieves; the lock orders the heap itself) */
static void publish(struct weft__timers *t)
{
	atomic_store_explicit(&t->next_when,
			      t->len ? t->heap[0].when : UINT64_MAX,
			      memory_order_relaxed);
}

void weft__timers_fini(struct weft__timers *t)
{
	free(t->heap);
	t->heap = NULL;
	t->len = t->cap = 0;
}

static inline void place(struct weft__timers *t, uint32_t i,
			 struct weft__timer_ent e)
{
	t->heap[i] = e;
	e.f->heap_idx = (int32_t)i;
}

static void sift_up(struct weft__timers *t, uint32_t i)
{
	struct weft__timer_ent e = t->heap[i];
	while (i > 0) {
		uint32_t p = (i - 1) / 2;
		if (t->heap[p].when <= e.when)
			break;
		place(t, i, t->heap[p]);
		i = p;
	}
	place(t, i, e);
}

static void sift_down(struct weft__timers *t, uint32_t i)
{
	struct weft__timer_ent e = t->heap[i];
	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= t->len)
			break;
		if (c + 1 < t->len && t->heap[c + 1].when < t->heap[c].when)
			c++;
		if (e.when <= t->heap[c].when)
			break;
		place(t, i, t->heap[c]);
		i = c;
	}
	place(t, i, e);
}

static void remove_at(struct weft__timers *t, uint32_t i)
{
	t->heap[i].f->heap_idx = -1;
	t->len--;
	if (i == t->len)
		return;
	t->heap[i] = t->heap[t->len];
	t->heap[i].f->heap_idx = (int32_t)i;
	if (i > 0 && t->heap[(i - 1) / 2].when > t->heap[i].when)
		sift_up(t, i);
	else
		sift_down(t, i);
}

int weft__timer_add(struct weft__worker *w, weft_task *f, uint64_t when,
		    uint32_t seq)
{
	struct weft__timers *t = &w->timers;
	lock(t);
	if (t->len == t->cap) {
		uint32_t ncap = t->cap ? t->cap * 2 : 64;
		void *nh = realloc(t->heap, ncap * sizeof(*t->heap));
		if (!nh) {
			unlock(t);
			return -ENOMEM;
		}
		t->heap = nh;
		t->cap = ncap;
	}
	f->timer_w = w;
	t->heap[t->len] = (struct weft__timer_ent){when, f, seq};
	t->len++;
	sift_up(t, t->len - 1);
	publish(t);
	unlock(t);
	return 0;
}

void weft__timer_del(weft_task *f)
{
	struct weft__worker *w = f->timer_w;
	if (!w)
		return;
	lock(&w->timers);
	if (f->heap_idx >= 0) {
		remove_at(&w->timers, (uint32_t)f->heap_idx);
		publish(&w->timers);
	}
	f->timer_w = NULL;
	unlock(&w->timers);
}

/* Wake every fiber whose deadline is <= now. Returns how many. */
uint64_t weft__timers_fire(struct weft__worker *w, uint64_t now)
{
	struct weft__timers *t = &w->timers;
	uint64_t n = 0;
	lock(t);
	while (t->len && t->heap[0].when <= now) {
		struct weft__timer_ent e = t->heap[0];
		remove_at(t, 0);
		weft__wake_ex(e.f, e.seq, WEFT__R_TIMER, true);
		n++;
	}
	publish(t);
	unlock(t);
	return n;
}

/* When w may fire v's heap: its earliest deadline plus the grace
 * (UINT64_MAX: never, as things stand, or v is w). */
static uint64_t steal_at(struct weft__worker *w, struct weft__worker *v)
{
	uint64_t when = atomic_load_explicit(&v->timers.next_when,
					     memory_order_relaxed);
	/* saturate: a sleep "forever" is at UINT64_MAX - 1, and a wrapped
	 * sum would read as long overdue (the watcher would spin) */
	return v == w || when > UINT64_MAX - WEFT_TIMER_STEAL_NS
		       ? UINT64_MAX
		       : when + WEFT_TIMER_STEAL_NS;
}

/* Fire the heaps of other workers whose earliest entry is overdue by more
 * than WEFT_TIMER_STEAL_NS (their owner is stuck in a fiber). The woken
 * fibers go to w's queue. Returns how many. */
uint64_t weft__timers_steal(struct weft__worker *w, uint64_t now)
{
	struct weft__rt *rt = w->rt;
	uint64_t n = 0;
	for (unsigned i = 0; i < rt->nworkers; i++)
		if (steal_at(w, &rt->workers[i]) <= now)
			n += weft__timers_fire(&rt->workers[i], now);
	return n;
}

/* When weft__timers_steal would next find something (UINT64_MAX: never,
 * as things stand). */
uint64_t weft__timers_steal_next(struct weft__worker *w)
{
	struct weft__rt *rt = w->rt;
	uint64_t next = UINT64_MAX;
	for (unsigned i = 0; i < rt->nworkers; i++) {
		uint64_t at = steal_at(w, &rt->workers[i]);
		next = at < next ? at : next;
	}
	return next;
}

/* Earliest deadline of w's own heap, UINT64_MAX if none: the published
 * copy, without the lock. Only the owner adds to its heap (sleep and
 * park_wait add to the caller's worker), so the owner never reads a value
 * later than the truth; others only remove (a cancelled fiber, a thief),
 * which at worst leaves an earlier value: one wake-up or fire that finds
 * nothing. */
uint64_t weft__timers_next(struct weft__worker *w)
{
	return atomic_load_explicit(&w->timers.next_when, memory_order_relaxed);
}

/* Timers pending in w's heap (weft_metrics_get, any thread). */
uint32_t weft__timers_len(struct weft__worker *w)
{
	struct weft__timers *t = &w->timers;
	lock(t);
	uint32_t n = t->len;
	unlock(t);
	return n;
}
