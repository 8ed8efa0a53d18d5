/* waitq.c — the one parking primitive: a list of waiters under a lock.
 *
 * Every synchronization object (channel, mutex, cond, semaphore, wait
 * group, event, task group) is some state plus one or two waiter lists,
 * guarded by one spin lock of its own. A waiter is a record on the waiting
 * fiber's stack.
 *
 * The waitq rule
 *   waiter:    lock; check the state; if it must wait: seq = park_begin,
 *              fill the record (fiber, seq), push it; unlock; park_wait.
 *   completer: lock; claim a record (weft__wl_claim takes it off the list);
 *              do the operation for it (copy the element, hand over the
 *              lock or the unit) and set its status; copy (fiber, seq) out;
 *              unlock; weft__wake(fiber, seq, WOKEN).
 *   settling:  a waiter woken by WOKEN returns its status. A waiter woken
 *              by its cancellation or deadline takes the lock: if its record
 *              is still queued it removes it and fails; if not, a completer
 *              claimed it first and the operation has happened — it returns
 *              the status (success wins: no element or unit is lost).
 * The completer never touches a record after unlocking (the fiber may
 * have returned and its stack moved on), only the (fiber, seq) it copied;
 * fibers are type-stable and a stale seq makes the wake a no-op. That
 * holds while the run lasts: a plain thread that completes counts itself
 * a foreign caller from its claim to its wake (weft__complete), or the
 * fiber could settle by its cancel, the run end and its teardown free the
 * fibers' memory before the wake's CAS.
 *
 * Select: the records of one weft_select share a struct weft__sel; claiming
 * one sets sel->done by CAS, and records of a select already done are
 * dropped by claim. The selecting fiber settles by taking all its
 * channels' locks and claiming sel itself (see chan.c).
 *
 * The last touch: a fiber that returns from a wait may free the object at
 * once (a wait group on its stack, an event it malloc'd). So a completer's
 * last access to the object is its unlock, and no waiter may return
 * success before that unlock. A completer that wakes after unlocking
 * ensures it (the unlock precedes the wake, which uses only the (fiber,
 * seq) copied out under the lock). One that wakes under the lock (close,
 * broadcasts: weft__wake_held marks the record) does not, so its waiter
 * first sees the lock free (weft__spin_wait_free), as do the fast paths
 * that succeed without parking (signal.c). (glibc fixed the same hole in
 * sem_post: bug 12674.)
 *
 * The lock spins with pause (looks far apart: see weft__spin_lock), then
 * yields the thread: critical sections are a few dozen instructions, but
 * the holder's thread can be preempted.
 */
#include <errno.h>
#include <sched.h>
#include <time.h>

#include "waitq.h"

_Atomic unsigned weft__test_wake_delay_us, weft__test_wake_delayed;

void weft__test_wake_delay(void)
{
	atomic_fetch_add(&weft__test_wake_delayed, 1);
	unsigned us = atomic_load_explicit(&weft__test_wake_delay_us,
					   memory_order_relaxed);
	struct timespec ts = {us / 1000000u, (long)(us % 1000000u) * 1000};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* The lock seen held (weft__spin_lock, internal.h, tried it inline).
 * Aligned to a cache line: on this machine's EPYC the same build ran
 * benches/bench_chan_mpmc 3x slower (0.24 s vs 0.08 s) whenever the
 * linker happened to place this function 48 bytes into a line (entries
 * at 0, 16 or 32 were all fast), so any change elsewhere in the library
 * could flip the benchmark. */
__attribute__((aligned(64))) void weft__spin_lock_slow(unsigned *l)
{
	if (!__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
		return;
	/* contended: look again only after a long pause (32 pauses, ~0.8 us
	 * here, doubling up to 256), as Go's runtime lock does (30): each look
	 * pulls the line from the holder's core, and a waiter that looks at
	 * once wins the lock at its first release, so under load the lock
	 * and the object it guards cross cores at every operation. Far-apart
	 * looks give the holder's core runs of uncontended operations
	 * (benches/bench_chan_mpmc, 4 producers and 4 consumers on 2 workers:
	 * 1.5x Go's throughput with looks 1-64 pauses apart, 1.9-2.4x with
	 * 32-256; one worker, never contended: 2.2x). Yield the thread after
	 * 16 looks (~90 us): the holder's thread may have been preempted. */
	for (unsigned looks = 0, backoff = 32;; looks++) {
		for (unsigned i = 0; i < backoff; i++)
			weft__cpu_relax();
		if (backoff < 256)
			backoff <<= 1;
		if (!__atomic_load_n(l, __ATOMIC_RELAXED) &&
		    !__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
			return;
		if (looks > 16)
			sched_yield();
	}
}

void weft__spin_wait_free(unsigned *l)
{
	/* acquire: pairs with the holder's unlock, its last touch */
	while (__atomic_load_n(l, __ATOMIC_ACQUIRE))
		weft__cpu_relax();
}

void weft__wl_push(struct weft__wlist *l, struct weft__waiter *w)
{
	w->next = NULL;
	w->prev = l->tail;
	if (l->tail)
		l->tail->next = w;
	else
		l->head = w;
	l->tail = w;
	w->queued = true;
}

void weft__wl_push_head(struct weft__wlist *l, struct weft__waiter *w)
{
	w->prev = NULL;
	w->next = l->head;
	if (l->head)
		l->head->prev = w;
	else
		l->tail = w;
	l->head = w;
	w->queued = true;
}

void weft__wl_remove(struct weft__wlist *l, struct weft__waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		l->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		l->tail = w->prev;
	w->next = w->prev = NULL;
	w->queued = false;
}

struct weft__waiter *weft__wl_claim(struct weft__wlist *l)
{
	struct weft__waiter *w;
	while ((w = l->head)) {
		weft__wl_remove(l, w);
		if (!w->sel)
			return w;
		int zero = 0;
		/* acq_rel: one claim per select (pairs with other channels'
		 * claims and with the selector's own settle) */
		if (atomic_compare_exchange_strong_explicit(
			    &w->sel->done, &zero, 1, memory_order_acq_rel,
			    memory_order_acquire)) {
			w->sel->index = w->sel_index;
			return w;
		}
		/* that select finished elsewhere: drop its record */
	}
	return NULL;
}

int weft__wl_wait(unsigned *lock, struct weft__wlist *l,
		  struct weft__waiter *w)
{
	weft__spin_unlock(lock);
	int r = weft__park_wait(w->f);
	if (r == WEFT__R_WOKEN) {
		/* a completer that woke us under the lock (a broadcast) may
		 * still hold it: let it finish before our caller may free the
		 * object ("the last touch"). One that woke us after unlocking
		 * is done with it; waiting for the lock then would wait for
		 * whoever took it since, and under load its line would be
		 * pulled from that holder at every look. */
		if (w->held)
			weft__spin_wait_free(lock);
		return w->status;
	}
	weft__spin_lock(lock);
	if (w->queued) {
		weft__wl_remove(l, w);
		weft__spin_unlock(lock);
		return weft__reason_err(r);
	}
	weft__spin_unlock(lock);
	return w->status;
}
