/* weft/sync.h — mutex, condition variable, semaphore, wait group, event.
 *
 * Value types: zero-initialize them (or use the _init calls); no free
 * needed. Waiting parks the fiber, never the worker; any worker may
 * release. Waits return -ECANCELED when the fiber is cancelled and
 * -ETIMEDOUT when its deadline scope expires (-ENOMEM when, under a scope,
 * no memory was left for the deadline's timer); nothing was acquired then.
 * Calling a waiting function outside a fiber returns -EINVAL.
 *
 * Mutex policy (as Go's sync.Mutex): an unlock wakes the oldest waiter,
 * which competes with running fibers (throughput); a waiter that has
 * waited over 1 ms is handed the lock directly, so none can starve.
 */
#ifndef WEFT_SYNC_H
#define WEFT_SYNC_H

#include "common.h"

WEFT_BEGIN_DECLS

/* internal: a wait queue under a spin lock */
typedef struct weft_waitq_ {
	unsigned _lock;
	void *_head, *_tail;
} weft_waitq_;

typedef struct weft_mutex {
	unsigned _state;
	void *_owner;
	weft_waitq_ _q;
} weft_mutex;
/* every member spelled out: g++ -Wextra warns about {0} */
#define WEFT_MUTEX_INIT {0, NULL, {0, NULL, NULL}}
WEFT_API void weft_mutex_init(weft_mutex *m);
WEFT_API int weft_mutex_lock(weft_mutex *m);    /* 0 -ECANCELED -ETIMEDOUT -ENOMEM -EINVAL */
WEFT_API int weft_mutex_trylock(weft_mutex *m); /* 0 -EBUSY -EINVAL */
WEFT_API int weft_mutex_unlock(weft_mutex *m);  /* 0; -EPERM not held by caller; -EINVAL */

typedef struct weft_cond {
	weft_waitq_ _q;
} weft_cond;
WEFT_API void weft_cond_init(weft_cond *c);
/* Unlock m, wait for a signal, lock m again (always, even on error).
 * May return 0 without a signal (a spurious wake-up, as with pthreads;
 * WEFT_FAULTS=spurious=p makes them happen): wait in a loop on your
 * condition. 0, -ECANCELED, -ETIMEDOUT, -EINVAL, -EPERM (m not held). */
WEFT_API int weft_cond_wait(weft_cond *c, weft_mutex *m);
WEFT_API void weft_cond_signal(weft_cond *c);
WEFT_API void weft_cond_broadcast(weft_cond *c);

typedef struct weft_sem {
	long _count;
	weft_waitq_ _q;
} weft_sem;
WEFT_API void weft_sem_init(weft_sem *s, long count);
WEFT_API int weft_sem_acquire(weft_sem *s);     /* 0 -ECANCELED -ETIMEDOUT -ENOMEM -EINVAL */
WEFT_API int weft_sem_try_acquire(weft_sem *s); /* 0 -EAGAIN -EINVAL */
/* 0; -EINVAL n < 1; -EOVERFLOW count + n > LONG_MAX (nothing changes) */
WEFT_API int weft_sem_release(weft_sem *s, long n);

typedef struct weft_wg {
	long _count;
	weft_waitq_ _q;
} weft_wg;
WEFT_API void weft_wg_init(weft_wg *wg);
/* 0; -EINVAL if the counter would go negative, -EOVERFLOW past LONG_MAX
 * (nothing changes). */
WEFT_API int weft_wg_add(weft_wg *wg, long delta);
WEFT_API int weft_wg_done(weft_wg *wg);         /* weft_wg_add(wg, -1) */
WEFT_API int weft_wg_wait(weft_wg *wg);         /* 0 -ECANCELED -ETIMEDOUT -ENOMEM -EINVAL */

typedef struct weft_event {
	int _set;
	weft_waitq_ _q;
} weft_event;
WEFT_API void weft_event_init(weft_event *e);
WEFT_API void weft_event_set(weft_event *e);    /* wakes all; later waits return at once */
WEFT_API int weft_event_is_set(weft_event *e);
WEFT_API int weft_event_wait(weft_event *e);    /* 0 -ECANCELED -ETIMEDOUT -ENOMEM -EINVAL */

WEFT_END_DECLS

#endif
