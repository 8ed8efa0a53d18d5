/* mutex.c — fiber mutex and condition variable.
 *
 * Mutex state (m->_state, atomic): LOCKED | WAITERS. WAITERS is set while
 * the waiter list is non-empty and changes only under the list lock.
 *
 * Policy (after Go's sync.Mutex): lock is a CAS, then a short spin while
 * other workers run (a few looks, far apart), then a park. Unlock clears
 * LOCKED and wakes the oldest waiter, which then competes with fibers
 * arriving meanwhile ("barging": the lock is never idle while a woken
 * fiber is on its way). A waiter that loses goes back to the head of the
 * list. When the oldest waiter has waited more than 1 ms, unlock hands
 * the lock to it directly instead (LOCKED stays set, owner changes): no
 * fiber starves.
 *
 * No lost wake-up: a locker sets WAITERS (under the list lock) only by a
 * CAS that also sees LOCKED set; an unlocker's fast path is a CAS from
 * exactly LOCKED to 0, which fails once WAITERS is set, so it takes the
 * slow path and the list lock, where it finds the waiter.
 *
 * A waiter woken to compete tries the lock once more even if it has been
 * cancelled meanwhile: it either takes the lock (and reports success) or
 * finds it held, in which case the holder's unlock wakes the next waiter,
 * so the wake it consumed is not lost. One handed the lock keeps it and
 * reports success (waitq rule: success wins).
 */
#include "waitq.h"

#define LOCKED 1u
#define WAITERS 2u
#define HANDOFF_NS 1000000ull /* 1 ms */
#define ST_RETRY 1
#define ST_OWNER 2

/* _owner: written by the owner (or, at a hand-over, by the unlocker under
 * the list lock); read by unlock and cond_wait to catch misuse. Relaxed:
 * the lock itself orders it for every correct caller. */
static inline void set_owner(weft_mutex *m, void *o)
{
	__atomic_store_n(&m->_owner, o, __ATOMIC_RELAXED);
}
static inline void *owner(weft_mutex *m)
{
	return __atomic_load_n(&m->_owner, __ATOMIC_RELAXED);
}

static inline unsigned ld(weft_mutex *m)
{
	return __atomic_load_n(&m->_state, __ATOMIC_ACQUIRE);
}
static inline bool cas(weft_mutex *m, unsigned *old, unsigned nw)
{
	/* acquire on success: the critical section starts; release: for the
	 * WAITERS/unlock transitions */
	return __atomic_compare_exchange_n(&m->_state, old, nw, false,
					   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

void weft_mutex_init(weft_mutex *m)
{
	if (m)
		*m = (weft_mutex)WEFT_MUTEX_INIT;
}

int weft_mutex_trylock(weft_mutex *m)
{
	weft__sim_point();
	if (!m)
		return -EINVAL;
	unsigned s = ld(m);
	while (!(s & LOCKED))
		if (cas(m, &s, s | LOCKED)) {
			set_owner(m, weft__self(NULL));
			return 0;
		}
	return -EBUSY;
}

/* Wake the oldest waiter (list lock held): hand over or let it compete.
 * Called with LOCKED set by the unlocking owner. */
static struct weft__wakeup release_locked(weft_mutex *m)
{
	struct weft__wlist *l = weft__wq_list(&m->_q);
	struct weft__waiter *w = weft__wl_claim(l);
	if (!w) {
		/* the waiters left (cancel, deadline): LOCKED stays, the
		 * caller unlocks after the list unlock (its last touch) */
		__atomic_and_fetch(&m->_state, ~WAITERS, __ATOMIC_RELAXED);
		return (struct weft__wakeup){0};
	}
	if (!l->head)
		__atomic_and_fetch(&m->_state, ~WAITERS, __ATOMIC_RELAXED);
	if (weft__clock() - w->since > HANDOFF_NS) {
		set_owner(m, w->f); /* LOCKED stays: the lock changes hands */
		return weft__complete(w, ST_OWNER);
	}
	/* Clear LOCKED before the list unlock. Were it cleared after, w
	 * could be woken by its cancel or deadline in between, settle (under
	 * the list lock), find ST_RETRY, retry, find LOCKED still set, queue
	 * again and give up: the next waiter would never be woken, the one
	 * wake of this unlock spent on w. The list unlock is still a safe
	 * last touch: w is inside its lock call until after it, and nobody
	 * may free a mutex a fiber is locking. */
	__atomic_and_fetch(&m->_state, ~LOCKED, __ATOMIC_RELEASE);
	return weft__complete(w, ST_RETRY);
}

static int lock_slow(weft_mutex *m, weft_task *self, bool cancellable)
{
	struct weft__wlist *l = weft__wq_list(&m->_q);
	struct weft__waiter me = {.f = self, .since = weft__clock()};
	bool requeue = false;
	for (;;) {
		weft__spin_lock(&m->_q._lock);
		unsigned s = ld(m);
		for (;;) {
			if (!(s & LOCKED)) {
				if (cas(m, &s, s | LOCKED)) {
					weft__spin_unlock(&m->_q._lock);
					set_owner(m, self);
					return 0;
				}
			} else if ((s & WAITERS) || cas(m, &s, s | WAITERS)) {
				break;
			}
		}
		weft__wait_note(self, WEFT__W_MUTEX, 0, (uintptr_t)m);
		me.seq = weft__park_begin(self, cancellable);
		if (requeue)
			weft__wl_push_head(l, &me);
		else
			weft__wl_push(l, &me);
		int r;
		if (cancellable) {
			r = weft__wl_wait(&m->_q._lock, l, &me);
		} else {
			weft__spin_unlock(&m->_q._lock);
			weft__park_commit(self);
			r = me.status;
		}
		if (r == ST_OWNER)
			return 0; /* handed over; _owner set by the unlocker */
		if (r == ST_RETRY) {
			requeue = true;
			continue;
		}
		/* cancelled or timed out while still queued */
		weft__spin_lock(&m->_q._lock);
		if (!l->head)
			__atomic_and_fetch(&m->_state, ~WAITERS,
					   __ATOMIC_RELAXED);
		weft__spin_unlock(&m->_q._lock);
		return r;
	}
}

static int mutex_lock_nocancel(weft_mutex *m, weft_task *self)
{
	unsigned s = 0;
	if (cas(m, &s, LOCKED)) {
		set_owner(m, self);
		return 0;
	}
	return lock_slow(m, self, false);
}

int weft_mutex_lock(weft_mutex *m)
{
	weft__sim_point();
	struct weft__worker *w;
	weft_task *self = weft__self(&w);
	if (!m || !self)
		return -EINVAL;
	unsigned s = 0;
	if (cas(m, &s, LOCKED)) {
		set_owner(m, self);
		return 0;
	}
	/* spin briefly while another worker may be about to unlock: a few
	 * looks, far apart (waitq.h) */
	if (weft__may_spin(w)) {
		for (int i = 0; i < WEFT__SPIN_LOOKS; i++) {
			weft__spin_gap();
			s = ld(m);
			if (!(s & LOCKED) && cas(m, &s, s | LOCKED)) {
				set_owner(m, self);
				return 0;
			}
		}
	}
	/* a cancelled fiber too: lock_slow's first look takes a lock that
	 * is free (an unlock that woke a waiter to compete leaves WAITERS
	 * set, which the CAS above does not take), and only a wait fails
	 * (its park returns at once, and the record is taken off) */
	return lock_slow(m, self, true);
}

/* Unlock with waiters (WAITERS set): out of line, so the common unlock
 * saves no registers. */
static WEFT__NOINLINE void unlock_slow(weft_mutex *m)
{
	for (;;) {
		weft__spin_lock(&m->_q._lock);
		struct weft__wakeup wk = release_locked(m);
		weft__spin_unlock(&m->_q._lock);
		if (wk.f) { /* handed over, or LOCKED cleared for w to retry */
			/* seeded runs: w's cancel or deadline may come now
			 * (tests/test_sync.c, the unlock's wake vs cancel) */
			weft__sim_point();
			weft__wakeup_do(wk);
			return;
		}
		/* nobody waited after all: the fast unlock, our last touch
		 * (once LOCKED is clear a barger may lock, unlock and free
		 * the mutex). A locker that queued meanwhile set WAITERS
		 * again: then round again, to wake it. */
		unsigned s = LOCKED;
		if (cas(m, &s, 0))
			return;
	}
}

int weft_mutex_unlock(weft_mutex *m)
{
	/* no preemption point: the next lock (ours or another's) is one */
	if (!m)
		return -EINVAL;
	weft_task *self = weft__self(NULL);
	if (owner(m) != self || !(ld(m) & LOCKED))
		return -EPERM;
	set_owner(m, NULL);
	unsigned s = LOCKED;
	/* release: the critical section ends */
	if (cas(m, &s, 0))
		return 0;
	unlock_slow(m);
	return 0;
}

/* ---- condition variable ------------------------------------------------------ */

void weft_cond_init(weft_cond *c)
{
	if (c)
		*c = (weft_cond){{0}};
}

int weft_cond_wait(weft_cond *c, weft_mutex *m)
{
	weft_task *self = weft__self(NULL);
	if (!c || !m || !self)
		return -EINVAL;
	if (owner(m) != self)
		return -EPERM;
	if (weft__fault(WEFT_FAULT_SPURIOUS)) {
		/* seeded runs: a wake-up with no signal, as the API allows */
		weft_mutex_unlock(m);
		weft_yield();
		mutex_lock_nocancel(m, self);
		return 0;
	}
	struct weft__wlist *l = weft__wq_list(&c->_q);
	struct weft__waiter me = {.f = self};
	weft__spin_lock(&c->_q._lock);
	weft__wait_note(self, WEFT__W_COND, 0, (uintptr_t)c);
	me.seq = weft__park_begin(self, true);
	weft__wl_push(l, &me);
	weft__spin_unlock(&c->_q._lock);
	/* unlock m only once we are on the list: a signal sent after m is
	 * free cannot miss us (a wake before we park finds us PARKING) */
	weft_mutex_unlock(m);
	weft__spin_lock(&c->_q._lock);
	int r = weft__wl_wait(&c->_q._lock, l, &me);
	mutex_lock_nocancel(m, self);
	return r;
}

void weft_cond_signal(weft_cond *c)
{
	weft__sim_point();
	if (!c)
		return;
	weft__spin_lock(&c->_q._lock);
	struct weft__waiter *w = weft__wl_claim(weft__wq_list(&c->_q));
	struct weft__wakeup wk = w ? weft__complete(w, 0)
				   : (struct weft__wakeup){0};
	weft__spin_unlock(&c->_q._lock);
	weft__wakeup_do(wk);
}

void weft_cond_broadcast(weft_cond *c)
{
	weft__sim_point();
	if (!c)
		return;
	weft__spin_lock(&c->_q._lock);
	struct weft__waiter *w;
	while ((w = weft__wl_claim(weft__wq_list(&c->_q))))
		weft__wake_held(w, 0);
	weft__spin_unlock(&c->_q._lock);
}
