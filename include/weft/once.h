/* weft/once.h — one-time initialization (Go's sync.Once, Tokio's
 * OnceCell::get_or_try_init, pthread_once without blocking the worker).
 *
 *     static weft_once cfg_once = WEFT_ONCE_INIT;
 *     int r = weft_once_call(&cfg_once, load_config, path);
 *
 * The first caller runs fn(arg); callers that come while it runs park (the
 * fiber, never the worker) until it ends; once fn has returned 0, every
 * call returns 0 at once, and sees what fn wrote. pthread_once would block
 * the worker's thread instead, and the initializing fiber, parked in its
 * own I/O, might never run again on it.
 *
 * fn returns 0 for success or a negative errno: after a failure nothing is
 * done, and the next caller (one of those parked, woken by the failure)
 * runs fn again (as Tokio's get_or_try_init; Go's Once counts a failed run
 * as done). A value type: zero-initialize it; no free needed.
 */
#ifndef WEFT_ONCE_H
#define WEFT_ONCE_H

#include "common.h"
#include "sync.h"

WEFT_BEGIN_DECLS

typedef struct weft_once {
	unsigned _state; /* 0 not done, 1 running, 2 done */
	void *_runner;   /* the caller running fn */
	weft_waitq_ _q;
} weft_once;
#define WEFT_ONCE_INIT {0, NULL, {0, NULL, NULL}}

/* 0 done (by this call or an earlier one); fn's own negative return to
 * the caller that ran it; -ECANCELED / -ETIMEDOUT / -ENOMEM a caller that
 * gave up waiting (the run goes on); -EDEADLK fn called weft_once_call on
 * the same o; -EBUSY a plain thread (not a fiber) while fn runs (it never
 * waits; plain threads are not told apart, so fn run by a plain thread
 * that calls it again on o gets -EBUSY too); -EINVAL o or fn NULL, or fn returned a positive value
 * (counted as a failure). */
WEFT_API int weft_once_call(weft_once *o, int (*fn)(void *), void *arg);

WEFT_END_DECLS

#endif
