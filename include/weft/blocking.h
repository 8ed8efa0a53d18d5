/* weft/blocking.h — run a blocking call off the workers
 * (loop.run_in_executor): a legacy library call, getaddrinfo, hashing.
 *
 * fn runs on a bounded pool of threads while the calling fiber parks; the
 * fiber's worker goes on running other fibers. Pool threads start on demand
 * (up to weft_config.blocking_threads), retire after 10 s idle, and are all
 * joined before weft_run returns; the queue holds weft_config.blocking_queue
 * calls that wait for a thread. Calls run in FIFO order.
 *
 * fn runs on a pool thread, not in a fiber: it may call weft_spawn,
 * weft_cancel and weft_now, but not the calls that need a fiber (they
 * return -EINVAL there, weft_blocking included).
 */
#ifndef WEFT_BLOCKING_H
#define WEFT_BLOCKING_H

#include "common.h"

WEFT_BEGIN_DECLS

/* *result (if non-NULL) gets fn's return value. Returns
 *   0           fn ran;
 *   -EAGAIN     the queue is full, or no pool thread exists and none could
 *               be started (fn did not run);
 *   -ECANCELED  the fiber was cancelled before the call or while it was
 *               still queued (fn did not run). Once fn has started it
 *               cannot be interrupted: the fiber waits for it and gets 0
 *               (cancellation is sticky: its next wait fails);
 *   -ETIMEDOUT  the deadline scope expired before the call or while it was
 *               queued (fn did not run); a running fn is waited for, as
 *               for -ECANCELED;
 *   -ENOMEM     under a deadline scope, no memory for the deadline's
 *               timer while the call was queued (fn did not run);
 *   -EINVAL     fn NULL, or not called from a fiber. */
WEFT_API int weft_blocking(void *(*fn)(void *), void *arg, void **result);

WEFT_END_DECLS

#endif
