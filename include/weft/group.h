/* weft/group.h — structured concurrency: task groups (asyncio.TaskGroup,
 * Trio nurseries) and waiting for the first of several tasks.
 *
 * A child reports failure by returning a negative errno from its function
 * (0 is success). The first failure cancels every sibling; weft_group_wait
 * joins all children and returns that first failure. A group is never left
 * with children running: weft_group_free cancels and joins any that are.
 */
#ifndef WEFT_GROUP_H
#define WEFT_GROUP_H

#include "common.h"
#include "task.h"

WEFT_BEGIN_DECLS

typedef struct weft_group weft_group;

/* NULL when out of memory. */
WEFT_API weft_group *weft_group_new(void);

/* Start fn(arg) as a child. 0; -ECANCELED (the group has failed or was
 * cancelled: fn is not started); -ENOMEM; -EINVAL (g or fn NULL, or the
 * group is being freed). */
WEFT_API int weft_group_spawn(weft_group *g, int (*fn)(void *), void *arg);

/* Join every child, including ones spawned while waiting. Returns 0, the
 * first child failure (negative), -ECANCELED if the group was cancelled
 * (weft_group_cancel, or the waiting fiber was: the cancellation is passed
 * to every child, and the wait still joins them all), -ETIMEDOUT if the
 * waiter's deadline passed (the group is cancelled and joined the same
 * way), -ENOMEM if, under a deadline scope, there was no memory for the
 * deadline's timer (cancelled and joined the same way), or -EINVAL. */
WEFT_API int weft_group_wait(weft_group *g);

/* Cancel every child now and every later spawn. Any thread. */
WEFT_API void weft_group_cancel(weft_group *g);

/* Cancel and join the children still running (from a fiber), then free. */
WEFT_API void weft_group_free(weft_group *g);

/* asyncio.wait(FIRST_COMPLETED): wait until one of t[0..n-1] has finished
 * and return its index (the tasks stay unjoined; join them as usual, once
 * this call has returned: a join or detach of a task while another fiber
 * waits on it here aborts with a message, as does waiting on a detached
 * task). -EINVAL (n == 0, a NULL task, not a fiber, or a task listed twice:
 * noticed when the call has to wait), -ECANCELED, -ETIMEDOUT, -ENOMEM (no
 * room for the deadline's timer). */
WEFT_API int weft_wait_any(weft_task *const *t, size_t n);

WEFT_END_DECLS

#endif
