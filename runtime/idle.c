/* idle.c — which workers sleep, which search, and who wakes whom.
 *
 * State: one atomic word, (num_unparked << 16) | num_searching, plus the
 * sleepers stack under `lock`, a spin lock (a few dozen instructions held;
 * as a pthread mutex, a parker and a notifier meeting on it slept in the
 * kernel: 3,400-5,600 futex calls per 1M round trips of a 2-worker
 * bench_chan_pingpong, 4 now).
 *   unparked   workers not in the sleepers stack (running or searching)
 *   searching  workers looking for work to steal; at most half of all
 *              workers may search at once (try_search), so an idle
 *              runtime does not burn every core on stealing attempts
 *
 * The wake-up rule ("the searcher relay", after Go's spinning Ms):
 *   - Whoever makes work runnable calls weft__idle_notify(). It wakes one
 *     sleeper only when nobody is searching and someone sleeps: a searcher
 *     will find the work anyway.
 *   - A woken worker starts as a searcher (the notifier counts it).
 *   - A searcher that finds work stops searching; if it was the last one,
 *     it notifies again, so the relay continues while work remains.
 *   - A worker that parks while it was the last searcher re-checks every
 *     queue after parking and notifies if it sees work (it may have missed
 *     some pushed while it gave up). So does the last worker to go to
 *     sleep, searcher or not, and it takes the work itself (nobody else
 *     is awake to). A lone worker never searches: before 2026-11-27 it
 *     never re-checked, and a plain thread's push (a cancel, a blocking
 *     call's result) made while it still counted as unparked waited for
 *     its next timer.
 *
 * No lost wake-up: a parker decrements `state` (seq_cst RMW) and then
 * re-reads the queues (seq_cst loads); a pusher publishes its queue with a
 * seq_cst operation (the deque CAS, the global queue's length store) and
 * then reads `state` with a seq_cst load. All four are in the single total
 * order of seq_cst operations, so either the pusher sees the parker gone
 * and wakes a sleeper, or the parker sees the work. No fences: TSan does
 * not model them. One exception, by choice: a worker's push to its own
 * queue while no thief is announced is a plain store (deque.c, "Owner
 * without locks"), so a parker may miss it and its pusher miss the
 * parker. Nothing is lost: the pusher is awake and runs the task before
 * it parks. Only the sharing waits: for the pusher's next push or wake,
 * which sees the sleeper and notifies, or, behind a fiber that hogs the
 * pusher, for the watcher's next look (~1 ms, sched.c "Quiet wakes"),
 * which finds the queue unchanged and steals. A wake sent to a worker
 * that has not entered its ring yet is a CQE already waiting for it: the
 * ring remembers what a condition variable would forget.
 */
#include <string.h>

#include "internal.h"

#define UNPARK_ONE (1u << 16)
#define SEARCH_MASK 0xffffu

static inline unsigned searching_of(uint32_t s) { return s & SEARCH_MASK; }
static inline unsigned unparked_of(uint32_t s) { return s >> 16; }

int weft__idle_init(struct weft__idle *id, unsigned n)
{
	atomic_init(&id->state, n * UNPARK_ONE);
	id->lock = 0;
	id->sleepers = calloc(n, sizeof(unsigned));
	id->nsleepers = 0;
	id->nworkers = n;
	return id->sleepers ? 0 : -ENOMEM;
}

void weft__idle_fini(struct weft__idle *id)
{
	free(id->sleepers);
	id->sleepers = NULL;
}

bool weft__idle_try_search(struct weft__idle *id)
{
	/* seq_cst: orders with the parkers' and notifiers' RMWs */
	uint32_t s = atomic_load(&id->state);
	if (2 * searching_of(s) >= id->nworkers)
		return false;
	atomic_fetch_add(&id->state, 1);
	return true;
}

/* Whether some worker is unparked; asked by a parked one, so the others.
 * A hint for the watcher's timeout (sched.c, "Quiet wakes"). */
bool weft__idle_others_awake(struct weft__idle *id)
{
	return unparked_of(atomic_load(&id->state)) != 0;
}

/* A searcher found work. Returns true if it was the last searcher: the
 * caller must then notify (the relay). */
bool weft__idle_end_search(struct weft__idle *id)
{
	uint32_t prev = atomic_fetch_sub(&id->state, 1);
	return searching_of(prev) == 1;
}

/* Enter the sleepers. Returns who must look at the queues again (the
 * parker's half of "no lost wake-up"): WEFT__PARK_LAST_SEARCHER if w was
 * the last searcher, WEFT__PARK_LAST_AWAKE if every other worker sleeps
 * (always so for a lone worker, which never searches). */
unsigned weft__idle_to_parked(struct weft__rt *rt, struct weft__worker *w,
			      bool searching)
{
	struct weft__idle *id = &rt->idle;
	weft__spin_lock(&id->lock);
	uint32_t dec = UNPARK_ONE + (searching ? 1u : 0u);
	/* seq_cst RMW: the parker's half of "no lost wake-up" */
	uint32_t prev = atomic_fetch_sub(&id->state, dec);
	id->sleepers[id->nsleepers++] = w->index;
	w->parked = true;
	weft__spin_unlock(&id->lock);
	return (searching && searching_of(prev) == 1
			? WEFT__PARK_LAST_SEARCHER
			: 0) |
	       (unparked_of(prev) == 1 ? WEFT__PARK_LAST_AWAKE : 0);
}

/* Leave the sleepers on our own (a timer or a completion woke us). Returns
 * false if a notifier already took us out: then we are counted as a
 * searcher and must behave as one. */
bool weft__idle_from_parked(struct weft__rt *rt, struct weft__worker *w)
{
	struct weft__idle *id = &rt->idle;
	bool self = false;
	weft__spin_lock(&id->lock);
	if (w->parked) {
		for (unsigned i = 0; i < id->nsleepers; i++) {
			if (id->sleepers[i] == w->index) {
				id->sleepers[i] = id->sleepers[--id->nsleepers];
				break;
			}
		}
		w->parked = false;
		atomic_fetch_add(&id->state, UNPARK_ONE);
		self = true;
	}
	weft__spin_unlock(&id->lock);
	return self;
}

static bool should_wake(struct weft__idle *id)
{
	/* seq_cst load: the pusher's half of "no lost wake-up". A load, not
	 * an RMW: while every worker is busy the line stays shared in every
	 * cache instead of bouncing on each spawn. */
	uint32_t s = atomic_load(&id->state);
	return searching_of(s) == 0 && unparked_of(s) < id->nworkers;
}

void weft__idle_notify(struct weft__rt *rt)
{
	struct weft__idle *id = &rt->idle;
	if (!should_wake(id))
		return;
	weft__spin_lock(&id->lock);
	struct weft__worker *t = NULL;
	if (should_wake(id) && id->nsleepers) {
		unsigned i = id->sleepers[--id->nsleepers];
		t = &rt->workers[i];
		t->parked = false;
		/* it wakes as a searcher */
		atomic_fetch_add(&id->state, UNPARK_ONE + 1);
		/* relaxed: read by t under this lock or after the ring wake */
		atomic_store_explicit(&t->notified, 1, memory_order_release);
	}
	weft__spin_unlock(&id->lock);
	if (t)
		weft__ring_wake(t);
}

/* Shutdown and termination: every worker must look again. By eventfd,
 * not MSG_RING: the terminating worker leaves without reaping its ring
 * again, so a MSG_RING that failed would be lost with its CQE (uring.c);
 * once per run, the cost does not matter. */
void weft__idle_notify_all(struct weft__rt *rt)
{
	for (unsigned i = 0; i < rt->nworkers; i++) {
		struct weft__worker *t = &rt->workers[i];
		if (t != weft__worker_self())
			weft__ring_wake_efd(t);
	}
}
