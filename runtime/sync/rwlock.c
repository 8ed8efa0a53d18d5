/* rwlock.c — reader-writer lock: a count and one FIFO of waiters under the
 * waitq's spin lock.
 *
 * State (all under l->_q._lock): _state = readers holding, -1 while a
 * writer holds, 0 free; _owner = the writer (written under the lock, read
 * racily by unlock's misuse check and the dump); the queue of waiters in
 * arrival order, each a reader or a writer.
 *
 * Invariants (after every operation, at the unlock of the spin lock)
 *   RW1  _state == 0 => the queue is empty (whoever frees the lock or
 *        takes a waiter off the queue grants the head: grant()).
 *   RW2  the head is a reader => _state == -1, or LONG_MAX readers hold
 *        (grant() lets readers at the head in while no writer holds).
 * So a lock is taken at once only if the queue is empty (for a reader:
 * and no writer holds; for a writer: and it is free): nobody overtakes a
 * waiter, and a waiting writer holds back every reader behind it.
 *
 * Waits follow the waitq rule (waitq.c): grant() claims a record, updates
 * the state for it (the waiter owns the lock from then on) and wakes it
 * under the lock (weft__wake_held: a grant may wake many readers), so the
 * woken waiter waits for the lock to be free before it returns ("the last
 * touch"). A waiter woken by cancel or deadline settles under the lock:
 * still queued, it leaves the queue and grants the new head (readers that
 * queued behind a writer that gave up may go now: RW2), then fails; already
 * claimed, it holds the lock and reports success.
 */
#include <limits.h>

#include "waitq.h"

#define WRITER (-1L)

static inline void set_owner(weft_rwlock *l, void *o)
{
	__atomic_store_n(&l->_owner, o, __ATOMIC_RELAXED);
}

void weft_rwlock_init(weft_rwlock *l)
{
	if (l)
		*l = (weft_rwlock)WEFT_RWLOCK_INIT;
}

/* Under the lock: let in the head of the queue while it can go (RW1,
 * RW2): a writer if the lock is free, readers while no writer holds. */
static void grant(weft_rwlock *l)
{
	struct weft__wlist *q = weft__wq_list(&l->_q);
	while (q->head) {
		struct weft__waiter *h = q->head;
		if (h->reader ? l->_state == WRITER || l->_state == LONG_MAX
			      : l->_state != 0)
			return;
		weft__wl_claim(q); /* takes h: no select records here */
		if (h->reader) {
			l->_state++;
		} else {
			l->_state = WRITER;
			set_owner(l, h->f);
		}
		weft__wake_held(h, 0);
		if (l->_state == WRITER)
			return;
	}
}

/* Under the lock, which this releases: queue and park; settle. */
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
	grant(l); /* we may have held back the readers behind us */
	weft__spin_unlock(&l->_q._lock);
	return weft__reason_err(r);
}

static int lock(weft_rwlock *l, bool reader, bool block)
{
	weft__sim_point();
	weft_task *self = weft__self(NULL);
	if (!l || (block && !self))
		return -EINVAL;
	weft__spin_lock(&l->_q._lock);
	bool empty = !l->_q._head;
	if (reader && empty && l->_state != WRITER && l->_state != LONG_MAX) {
		l->_state++;
		weft__spin_unlock(&l->_q._lock);
		return 0;
	}
	if (!reader && l->_state == 0) { /* RW1: the queue is empty */
		l->_state = WRITER;
		set_owner(l, self);
		weft__spin_unlock(&l->_q._lock);
		return 0;
	}
	int err = 0;
	if (!block)
		err = -EBUSY;
	else if (l->_state == WRITER && __atomic_load_n(&l->_owner,
							 __ATOMIC_RELAXED) ==
						self)
		err = -EDEADLK; /* it would wait for itself */
	else if (reader && l->_state == LONG_MAX && empty)
		err = -EAGAIN;
	else if (weft__cancelled(self))
		err = -ECANCELED;
	if (err) {
		weft__spin_unlock(&l->_q._lock);
		return err;
	}
	return wait_for(l, self, reader);
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

int weft_rwlock_unlock(weft_rwlock *l)
{
	/* no preemption point: the next lock (ours or another's) is one */
	if (!l)
		return -EINVAL;
	weft_task *self = weft__self(NULL);
	weft__spin_lock(&l->_q._lock);
	if (l->_state == 0 || (l->_state == WRITER && l->_owner != self)) {
		weft__spin_unlock(&l->_q._lock);
		return -EPERM;
	}
	if (l->_state == WRITER) {
		set_owner(l, NULL);
		l->_state = 0;
	} else {
		l->_state--;
	}
	grant(l);
	weft__spin_unlock(&l->_q._lock); /* our last touch */
	return 0;
}
