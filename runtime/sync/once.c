/* once.c — one-time initialization: a state word and the callers waiting
 * for a run, under the waitq's spin lock.
 *
 * _state (atomic): IDLE, RUNNING (by _runner) or DONE. DONE is stored with
 * release after fn returned 0 and read with acquire by the fast path, so
 * whoever sees it sees what fn wrote. RUNNING and IDLE change only under
 * the lock.
 *
 * Invariants (at every release of the lock)
 *   O1  waiters queued => RUNNING (a run's end wakes every waiter).
 *   O2  DONE is final.
 * A run's end (under the lock) stores DONE or IDLE and wakes every waiter
 * (weft__wake_held: they see the lock free before they return, the last
 * touch of waitq.c); each goes round again: DONE returns 0, IDLE makes one
 * of them the next runner. A waiter woken by cancel or deadline that is
 * still queued leaves and fails; the run goes on.
 */
#include "waitq.h"

#define IDLE 0u
#define RUNNING 1u
#define DONE 2u

int weft_once_call(weft_once *o, int (*fn)(void *), void *arg)
{
	if (!o || !fn)
		return -EINVAL;
	/* acquire: pairs with the release of DONE, what fn wrote */
	if (__atomic_load_n(&o->_state, __ATOMIC_ACQUIRE) == DONE)
		return 0;
	weft__sim_point();
	weft_task *self = weft__self(NULL);
	struct weft__wlist *q = weft__wq_list(&o->_q);
	for (;;) {
		weft__spin_lock(&o->_q._lock);
		unsigned s = __atomic_load_n(&o->_state, __ATOMIC_ACQUIRE);
		if (s == DONE) {
			weft__spin_unlock(&o->_q._lock);
			return 0;
		}
		if (s == IDLE) {
			__atomic_store_n(&o->_state, RUNNING, __ATOMIC_RELAXED);
			/* a plain thread runs it as itself: _runner NULL */
			o->_runner = self ? (void *)self : (void *)o;
			weft__spin_unlock(&o->_q._lock);
			int r = fn(arg);
			if (r > 0)
				r = -EINVAL;
			weft__spin_lock(&o->_q._lock);
			o->_runner = NULL;
			/* release: what fn wrote, for the fast path (O2) */
			__atomic_store_n(&o->_state, r ? IDLE : DONE,
					 __ATOMIC_RELEASE);
			struct weft__waiter *w;
			while ((w = weft__wl_claim(q))) /* O1 */
				weft__wake_held(w, 0);
			weft__spin_unlock(&o->_q._lock);
			return r;
		}
		/* RUNNING */
		if (o->_runner == (self ? (void *)self : (void *)o)) {
			weft__spin_unlock(&o->_q._lock);
			return self ? -EDEADLK : -EBUSY;
		}
		if (!self) {
			weft__spin_unlock(&o->_q._lock);
			return -EBUSY; /* a plain thread never waits */
		}
		if (weft__cancelled(self)) {
			weft__spin_unlock(&o->_q._lock);
			return -ECANCELED;
		}
		struct weft__waiter me = {.f = self};
		weft__wait_note(self, WEFT__W_ONCE, 0, (uintptr_t)o);
		me.seq = weft__park_begin(self, true);
		weft__wl_push(q, &me);
		int r = weft__wl_wait(&o->_q._lock, q, &me);
		if (r < 0)
			return r; /* gave up; the run goes on */
		/* the run ended: done, or our turn to try */
	}
}
