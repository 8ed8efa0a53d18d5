/* rwlock.c — reader-writer lock: an atomic state word for the uncontended
 * paths, one FIFO of waiters under the waitq's spin lock for the rest.
 *
 * State (l->_state, atomic): WRITER | WAITERS | readers * RD. WAITERS is
 * set while the queue is non-empty and changes only under the queue lock.
 * _owner = the writer (written by it, or by the granter under the queue
 * lock before the wake; read by unlock's misuse checks).
 *
 * Fast paths (no queue lock), as mutex.c's:
 *   rdlock   CAS s -> s + RD while neither WRITER nor WAITERS is set;
 *   wrlock   CAS 0 -> WRITER;
 *   unlock   a reader: CAS s -> s - RD while WAITERS is clear; the writer:
 *            CAS exactly WRITER -> 0.
 * Everything else takes the queue lock. While WAITERS is set no fast path
 * changes the word (readers and writers see it, unlockers go slow), so
 * under the queue lock the word is ours to store.
 *
 * Invariants (at every release of the queue lock)
 *   RW1  WAITERS <=> the queue is non-empty.
 *   RW2  the queue is non-empty => the lock is held (whoever frees the
 *        lock, or takes a waiter off the queue, grants the head: grant()).
 *   RW3  the head is a reader => a writer holds (grant() lets readers at
 *        the head in while no writer holds).
 * So nobody overtakes a waiter, and a waiting writer holds back every
 * reader that comes after it (no writer starves).
 *
 * No lost wake-up: a locker sets WAITERS (under the queue lock) by a CAS
 * from a word in which the lock is held; from then on the holder's unlock
 * fails its fast CAS and takes the queue lock, where it finds the waiter.
 *
 * Waits follow the waitq rule (waitq.c): grant() claims a record, updates
 * the word for it (the waiter owns the lock from then on) and copies out
 * its wake, done after the queue unlock (a grant of more readers than fit
 * in the copy wakes the rest under the lock: weft__wake_held). A waiter
 * woken by cancel or deadline settles under the queue lock: still queued,
 * it leaves the queue and grants the new head (readers that queued behind
 * a writer that gave up may go now), then fails; already claimed, it holds
 * the lock and reports success.
 */
#include "waitq.h"

#define WRITER 1ul
#define WAITERS 2ul
#define RD 4ul
#define WAKE_MAX 32 /* wakes done after the queue unlock, per grant */

struct wakes {
	struct weft__wakeup k[WAKE_MAX];
	int n;
};

static inline unsigned long ld(weft_rwlock *l)
{
	return __atomic_load_n(&l->_state, __ATOMIC_ACQUIRE);
}
static inline bool cas(weft_rwlock *l, unsigned long *old, unsigned long nw)
{
	/* acquire: a hold starts; release: a hold ends */
	return __atomic_compare_exchange_n(&l->_state, old, nw, false,
					   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
/* under the queue lock with WAITERS set (or being cleared): ours alone */
static inline void st(weft_rwlock *l, unsigned long v)
{
	__atomic_store_n(&l->_state, v, __ATOMIC_RELEASE);
}
static inline void set_owner(weft_rwlock *l, void *o)
{
	__atomic_store_n(&l->_owner, o, __ATOMIC_RELAXED);
}
static inline void *owner(weft_rwlock *l)
{
	return __atomic_load_n(&l->_owner, __ATOMIC_RELAXED);
}

void weft_rwlock_init(weft_rwlock *l)
{
	if (l)
		*l = (weft_rwlock)WEFT_RWLOCK_INIT;
}

static inline bool try_fast(weft_rwlock *l, bool reader, void *self)
{
	unsigned long s = ld(l);
	if (reader) {
		while (!(s & (WRITER | WAITERS)))
			if (cas(l, &s, s + RD))
				return true;
		return false;
	}
	if (s == 0 && cas(l, &s, WRITER)) {
		set_owner(l, self);
		return true;
	}
	return false;
}

/* Under the queue lock: let in the head of the queue while it can go
 * (RW2, RW3), then keep RW1. */
static void grant(weft_rwlock *l, struct wakes *wk)
{
	struct weft__wlist *q = weft__wq_list(&l->_q);
	unsigned long s = ld(l);
	while (q->head) {
		struct weft__waiter *h = q->head;
		if (h->reader ? (s & WRITER) : (s & WRITER) || s >= RD)
			break;
		weft__wl_claim(q); /* takes h: no select records here */
		if (h->reader) {
			s += RD;
		} else {
			s |= WRITER;
			set_owner(l, h->f);
		}
		if (wk->n < WAKE_MAX)
			wk->k[wk->n++] = weft__complete(h, 0);
		else
			weft__wake_held(h, 0);
		if (s & WRITER)
			break;
	}
	st(l, q->head ? s | WAITERS : s & ~WAITERS);
}

static void wake_all(struct wakes *wk)
{
	for (int i = 0; i < wk->n; i++)
		weft__wakeup_do(wk->k[i]);
}

/* Under the queue lock, which this releases: queue and park; settle. */
static int wait_for(weft_rwlock *l, weft_task *self, bool reader)
{
	struct weft__wlist *q = weft__wq_list(&l->_q);
	struct weft__waiter me = {.f = self, .reader = reader};
	weft__wait_note(self, WEFT__W_RWLOCK, !reader, (uintptr_t)l);
	me.seq = weft__park_begin(self, true);
	weft__wl_push(q, &me);
	weft__spin_unlock(&l->_q._lock);
	int r = weft__park_wait(self);
	if (r == WEFT__R_WOKEN) {
		if (me.held) /* granted under the lock: let it go first */
			weft__spin_wait_free(&l->_q._lock);
		return 0;
	}
	weft__spin_lock(&l->_q._lock);
	if (!me.queued) { /* granted meanwhile: success wins */
		weft__spin_unlock(&l->_q._lock);
		return 0;
	}
	weft__wl_remove(q, &me);
	struct wakes wk = {.n = 0};
	grant(l, &wk); /* we may have held back the readers behind us */
	weft__spin_unlock(&l->_q._lock);
	wake_all(&wk);
	return weft__reason_err(r);
}

static int lock_slow(weft_rwlock *l, weft_task *self, bool reader)
{
	weft__spin_lock(&l->_q._lock);
	unsigned long s = ld(l);
	for (;;) {
		bool can = reader ? !(s & (WRITER | WAITERS)) : s == 0;
		if (can) {
			if (cas(l, &s, reader ? s + RD : WRITER)) {
				if (!reader)
					set_owner(l, self);
				weft__spin_unlock(&l->_q._lock);
				return 0;
			}
			continue;
		}
		if ((s & WRITER) && owner(l) == self) {
			weft__spin_unlock(&l->_q._lock);
			return -EDEADLK; /* it would wait for itself */
		}
		if (weft__cancelled(self)) {
			weft__spin_unlock(&l->_q._lock);
			return -ECANCELED;
		}
		/* the lock is held (RW2 if WAITERS is already set): queue */
		if ((s & WAITERS) || cas(l, &s, s | WAITERS))
			return wait_for(l, self, reader);
	}
}

static int lock(weft_rwlock *l, bool reader, bool block)
{
	weft__sim_point();
	weft_task *self = weft__self(NULL);
	if (!l || (block && !self))
		return -EINVAL;
	if (try_fast(l, reader, self))
		return 0;
	if (!block)
		return -EBUSY;
	return lock_slow(l, self, reader);
}

int weft_rwlock_rdlock(weft_rwlock *l)
{
	return lock(l, true, true);
}
int weft_rwlock_wrlock(weft_rwlock *l)
{
	return lock(l, false, true);
}
int weft_rwlock_tryrdlock(weft_rwlock *l)
{
	return lock(l, true, false);
}
int weft_rwlock_trywrlock(weft_rwlock *l)
{
	return lock(l, false, false);
}

/* Unlock with waiters: out of line, so the common unlock saves no
 * registers. */
static WEFT__NOINLINE void unlock_slow(weft_rwlock *l, bool writer)
{
	weft__spin_lock(&l->_q._lock);
	unsigned long s = ld(l);
	/* a reader's fast unlock may still run until WAITERS is set */
	while (!cas(l, &s, writer ? s & ~WRITER : s - RD))
		;
	struct wakes wk = {.n = 0};
	grant(l, &wk);
	weft__spin_unlock(&l->_q._lock); /* our last touch of l */
	wake_all(&wk);
}

int weft_rwlock_unlock(weft_rwlock *l)
{
	/* no preemption point: the next lock (ours or another's) is one */
	if (!l)
		return -EINVAL;
	unsigned long s = ld(l);
	if (s & WRITER) {
		if (owner(l) != weft__self(NULL))
			return -EPERM;
		set_owner(l, NULL);
		if (s == WRITER && cas(l, &s, 0))
			return 0;
		unlock_slow(l, true);
		return 0;
	}
	for (;;) {
		if (s < RD)
			return -EPERM; /* nobody holds it */
		if (s & WAITERS) {
			unlock_slow(l, false);
			return 0;
		}
		if (cas(l, &s, s - RD))
			return 0;
	}
}
