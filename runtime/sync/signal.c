/* signal.c — counting semaphore, wait group, one-shot event.
 *
 * Each is a counter or flag plus a waiter list under the list's spin lock
 * (waitq.c, the waitq rule). The counter is also read and changed without
 * the lock on fast paths (__atomic); every change that can make a parked
 * fiber runnable happens under the lock, so a waiter that checked the
 * counter under the lock and queued itself is always found.
 *
 * Semaphore: release hands units to parked waiters first (FIFO), and only
 * the rest go to the counter, where fibers arriving meanwhile may take
 * them (barging, as with the mutex). A waiter cancelled after a unit was
 * handed to it keeps the unit and reports success (success wins).
 */
#include <limits.h>

#include "waitq.h"

/* ---- semaphore ------------------------------------------------------------- */

void weft_sem_init(weft_sem *s, long count)
{
	if (s)
		*s = (weft_sem){._count = count < 0 ? 0 : count};
}

static bool take_unit(weft_sem *s)
{
	long c = __atomic_load_n(&s->_count, __ATOMIC_RELAXED);
	while (c > 0)
		/* acquire: pairs with release's add */
		if (__atomic_compare_exchange_n(&s->_count, &c, c - 1, false,
						__ATOMIC_ACQUIRE,
						__ATOMIC_RELAXED))
			return true;
	return false;
}

int weft_sem_try_acquire(weft_sem *s)
{
	weft__sim_point();
	if (!s)
		return -EINVAL;
	if (!take_unit(s))
		return -EAGAIN;
	/* the releaser may not have unlocked yet: the last touch (waitq.c) */
	weft__spin_wait_free(&s->_q._lock);
	return 0;
}

int weft_sem_acquire(weft_sem *s)
{
	weft__sim_point();
	weft_task *self = weft__self(NULL);
	if (!s || !self)
		return -EINVAL;
	if (weft_sem_try_acquire(s) == 0)
		return 0;
	struct weft__waiter me = {.f = self};
	weft__spin_lock(&s->_q._lock);
	if (take_unit(s)) {
		weft__spin_unlock(&s->_q._lock);
		return 0;
	}
	weft__wait_note(self, WEFT__W_SEM, 0, (uintptr_t)s);
	me.seq = weft__park_begin(self, true);
	weft__wl_push(weft__wq_list(&s->_q), &me);
	return weft__wl_wait(&s->_q._lock, weft__wq_list(&s->_q), &me);
}

int weft_sem_release(weft_sem *s, long n)
{
	weft__sim_point();
	if (!s || n < 1)
		return -EINVAL;
	weft__spin_lock(&s->_q._lock);
	/* waiters queue only while the count is 0, so a count that could
	 * overflow has none to take units first */
	if (__atomic_load_n(&s->_count, __ATOMIC_RELAXED) > LONG_MAX - n) {
		weft__spin_unlock(&s->_q._lock);
		return -EOVERFLOW;
	}
	struct weft__waiter *w;
	while (n > 0 && (w = weft__wl_claim(weft__wq_list(&s->_q)))) {
		weft__wake_held(w, 0);
		n--;
	}
	if (n)
		/* release: pairs with try_acquire's acquire CAS */
		__atomic_add_fetch(&s->_count, n, __ATOMIC_RELEASE);
	weft__spin_unlock(&s->_q._lock);
	return 0;
}

/* ---- wait group ------------------------------------------------------------ */

void weft_wg_init(weft_wg *wg)
{
	if (wg)
		*wg = (weft_wg){0};
}

int weft_wg_add(weft_wg *wg, long delta)
{
	weft__sim_point();
	if (!wg)
		return -EINVAL;
	/* Without the lock while the count stays above 0 on both sides: only
	 * a change to or from 0 concerns a waiter (wait looks at the count
	 * under the lock, and the step to 0 wakes under it). One CAS where
	 * the lock took two RMWs and its line twice: N fibers counting down
	 * one group from both workers (benches/bench_spawn_wg.c) */
	long c = __atomic_load_n(&wg->_count, __ATOMIC_RELAXED), nc;
	for (;;) {
		while (c > 0 && !__builtin_add_overflow(c, delta, &nc) && nc > 0)
			/* release: as the CAS below */
			if (__atomic_compare_exchange_n(&wg->_count, &c, nc,
							true, __ATOMIC_RELEASE,
							__ATOMIC_RELAXED))
				return 0;
		weft__spin_lock(&wg->_q._lock);
		c = __atomic_load_n(&wg->_count, __ATOMIC_RELAXED);
		bool ovf = __builtin_add_overflow(c, delta, &nc); /* c >= 0 */
		if (ovf || nc < 0) {
			weft__spin_unlock(&wg->_q._lock);
			return ovf ? -EOVERFLOW : -EINVAL;
		}
		/* release: work done before weft_wg_done is visible to
		 * waiters (pairs with wait's acquire load); a CAS, not a
		 * store: the path above changes the count without the lock */
		if (__atomic_compare_exchange_n(&wg->_count, &c, nc, false,
						__ATOMIC_RELEASE,
						__ATOMIC_RELAXED))
			break;
		weft__spin_unlock(&wg->_q._lock); /* it moved: look again */
	}
	if (nc == 0) {
		struct weft__waiter *w;
		while ((w = weft__wl_claim(weft__wq_list(&wg->_q))))
			weft__wake_held(w, 0);
	}
	weft__spin_unlock(&wg->_q._lock);
	return 0;
}

int weft_wg_done(weft_wg *wg) { return weft_wg_add(wg, -1); }

int weft_wg_wait(weft_wg *wg)
{
	weft__sim_point();
	weft_task *self = weft__self(NULL);
	if (!wg || !self)
		return -EINVAL;
	/* count 0 and the lock free: the last weft_wg_done has let go of
	 * the object (the last touch, waitq.c) */
	if (__atomic_load_n(&wg->_count, __ATOMIC_ACQUIRE) == 0 &&
	    !__atomic_load_n(&wg->_q._lock, __ATOMIC_ACQUIRE))
		return 0;
	struct weft__waiter me = {.f = self};
	weft__spin_lock(&wg->_q._lock);
	if (__atomic_load_n(&wg->_count, __ATOMIC_ACQUIRE) == 0) {
		weft__spin_unlock(&wg->_q._lock);
		return 0;
	}
	weft__wait_note(self, WEFT__W_WG, 0, (uintptr_t)wg);
	me.seq = weft__park_begin(self, true);
	weft__wl_push(weft__wq_list(&wg->_q), &me);
	return weft__wl_wait(&wg->_q._lock, weft__wq_list(&wg->_q), &me);
}

/* ---- event ----------------------------------------------------------------- */

void weft_event_init(weft_event *e)
{
	if (e)
		*e = (weft_event){0};
}

void weft_event_set(weft_event *e)
{
	weft__sim_point();
	if (!e)
		return;
	weft__spin_lock(&e->_q._lock);
	/* release: pairs with is_set / wait's acquire load */
	__atomic_store_n(&e->_set, 1, __ATOMIC_RELEASE);
	struct weft__waiter *w;
	while ((w = weft__wl_claim(weft__wq_list(&e->_q))))
		weft__wake_held(w, 0);
	weft__spin_unlock(&e->_q._lock);
}

int weft_event_is_set(weft_event *e)
{
	return e && __atomic_load_n(&e->_set, __ATOMIC_ACQUIRE);
}

int weft_event_wait(weft_event *e)
{
	weft__sim_point();
	weft_task *self = weft__self(NULL);
	if (!e || !self)
		return -EINVAL;
	if (weft_event_is_set(e) &&
	    !__atomic_load_n(&e->_q._lock, __ATOMIC_ACQUIRE))
		return 0; /* set, and the setter has let go (waitq.c) */
	struct weft__waiter me = {.f = self};
	weft__spin_lock(&e->_q._lock);
	if (weft_event_is_set(e)) {
		weft__spin_unlock(&e->_q._lock);
		return 0;
	}
	weft__wait_note(self, WEFT__W_EVENT, 0, (uintptr_t)e);
	me.seq = weft__park_begin(self, true);
	weft__wl_push(weft__wq_list(&e->_q), &me);
	return weft__wl_wait(&e->_q._lock, weft__wq_list(&e->_q), &me);
}
