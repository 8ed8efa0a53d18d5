/* weft/rwlock.h — reader-writer lock (Go's sync.RWMutex, Tokio's RwLock).
 *
 * Many readers or one writer. A value type: zero-initialize it (or
 * weft_rwlock_init); no free needed. Waiting parks the fiber, never the
 * worker; any worker may release.
 *
 * Policy (Go's sync.RWMutex): readers enter at once unless a writer holds
 * the lock or waits for it, so a stream of readers cannot starve a writer;
 * a writer's unlock lets in every reader that waited for it, all at once,
 * before the next writer. Writers queue for each other as on a weft_mutex
 * (the oldest is handed the lock once it has waited 1 ms).
 *
 * Waits return -ECANCELED when the fiber is cancelled and -ETIMEDOUT when
 * its deadline scope expires (-ENOMEM: no memory for that deadline's
 * timer); nothing was acquired then, and the readers a writer that gave up
 * held back go ahead. A lock that is free is still taken by a cancelled
 * fiber (as weft_mutex_lock).
 */
#ifndef WEFT_RWLOCK_H
#define WEFT_RWLOCK_H

#include "common.h"
#include "sync.h"

WEFT_BEGIN_DECLS

typedef struct weft_rwlock {
	unsigned long _state; /* readers, a writer, waiters: rwlock.c */
	void *_owner;         /* the writer */
	void *_drain;         /* the writer waiting for readers to leave */
	weft_mutex _w;        /* held by the writer that pends or holds */
	weft_waitq_ _q;       /* readers waiting */
} weft_rwlock;
#define WEFT_RWLOCK_INIT {0, NULL, NULL, WEFT_MUTEX_INIT, {0, NULL, NULL}}

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
