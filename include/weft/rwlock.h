/* weft/rwlock.h — reader-writer lock (Go's sync.RWMutex, Tokio's RwLock).
 *
 * Many readers or one writer. A value type: zero-initialize it (or
 * weft_rwlock_init); no free needed. Waiting parks the fiber, never the
 * worker; any worker may release.
 *
 * Policy: fair, in arrival order (as Tokio's RwLock). A lock that must
 * wait queues behind every waiter before it; while a writer waits, new
 * readers queue too, so a stream of readers cannot starve a writer (Go's
 * rule). An unlock that frees the lock grants the head of the queue: a
 * writer, or every reader up to the next writer, all at once.
 *
 * Waits return -ECANCELED when the fiber is cancelled and -ETIMEDOUT when
 * its deadline scope expires (-ENOMEM: no memory for that deadline's
 * timer); nothing was acquired then, and readers queued behind a writer
 * that gave up go ahead if they can. A lock that is free is still taken by
 * a cancelled fiber (as weft_mutex_lock).
 */
#ifndef WEFT_RWLOCK_H
#define WEFT_RWLOCK_H

#include "common.h"
#include "sync.h"

WEFT_BEGIN_DECLS

typedef struct weft_rwlock {
	unsigned long _state; /* readers, a writer, waiters: rwlock.c */
	void *_owner;  /* the writer */
	weft_waitq_ _q;
} weft_rwlock;
#define WEFT_RWLOCK_INIT {0, NULL, {0, NULL, NULL}}

WEFT_API void weft_rwlock_init(weft_rwlock *l);
/* 0; -ECANCELED, -ETIMEDOUT, -ENOMEM (see above); -EINVAL (l NULL or not
 * a fiber); -EDEADLK (the caller holds it for writing). */
WEFT_API int weft_rwlock_rdlock(weft_rwlock *l);
/* 0; -ECANCELED, -ETIMEDOUT, -ENOMEM; -EINVAL (l NULL or not a fiber);
 * -EDEADLK (the caller holds it for writing). */
WEFT_API int weft_rwlock_wrlock(weft_rwlock *l);
/* Never wait, from any thread: 0, or -EBUSY (it would wait), -EINVAL. */
WEFT_API int weft_rwlock_tryrdlock(weft_rwlock *l);
WEFT_API int weft_rwlock_trywrlock(weft_rwlock *l);
/* Release the caller's hold, read or write (as pthread_rwlock_unlock).
 * 0; -EPERM (not held; or held for writing by another fiber); -EINVAL. */
WEFT_API int weft_rwlock_unlock(weft_rwlock *l);

WEFT_END_DECLS

#endif
