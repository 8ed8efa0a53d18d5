/* weft/task.h — fibers (asyncio.create_task / await / sleep).
 *
 * A fiber is a plain function void *fn(void *) run on its own stack. Any
 * call inside it may suspend (no async/await colouring). weft_join,
 * weft_sleep and weft_gather must be called from a fiber; weft_spawn,
 * weft_cancel and weft_detach from any thread; weft_yield returns at once
 * and weft_self_id returns 0 outside one.
 *
 * Cancellation is sticky: once weft_cancel(t) is called, t's current wait and
 * every later one that has to park return -ECANCELED at once (sleep and I/O
 * fail at once even when they would not park, weft_close excepted: it
 * always closes; a channel or lock operation
 * that can complete without waiting still completes); t is expected to
 * clean up and return. A cancelled fiber still runs its function (so it
 * can release what arg owns).
 */
#ifndef WEFT_TASK_H
#define WEFT_TASK_H

#include "common.h"

WEFT_BEGIN_DECLS

typedef struct weft_task weft_task;

/* Start fn(arg) as a new fiber. From a fiber it goes first on the caller's
 * worker; from another thread (while weft_run runs) into the global queue.
 * The fiber owns no stack until it first runs.
 * Returns the task, to be joined or detached exactly once; NULL if no
 * runtime is running (from another thread: also once main_fn has
 * returned), fn is NULL, or memory is exhausted. */
WEFT_API weft_task *weft_spawn(void *(*fn)(void *), void *arg);

/* Wait for t to finish; *result (if non-NULL) gets fn's return value. Frees
 * t, even on -ECANCELED (not on -ETIMEDOUT or -EINVAL). If the caller is
 * cancelled while waiting, the cancellation is passed on to t (as asyncio
 * does) and join keeps waiting for t to finish. Joining t while another
 * fiber waits on it in weft_wait_any aborts with a message.
 * Returns 0 when t finished and was never cancelled, or
 *   -ECANCELED  t was cancelled before it finished (*result still set);
 *   -ENOMEM     t never ran: no stack could be mapped for it; or, under
 *               a deadline scope, no memory for its timer: t is not
 *               freed, as for -ETIMEDOUT;
 *   -ETIMEDOUT  the caller's deadline scope expired first: t is NOT freed
 *               and may be joined (or detached, or cancelled) again;
 *   -EINVAL     t NULL or not a live task, t already joined or detached,
 *               t is the caller itself, or the caller is not a fiber. */
WEFT_API int weft_join(weft_task *t, void **result);

/* Let t run on its own; its memory is freed when it ends. Calling it on a
 * task already joined or detached, or while another fiber waits on t in
 * weft_wait_any, aborts with a message; NULL is ignored. */
WEFT_API void weft_detach(weft_task *t);

/* Ask t to stop: its current or next wait returns -ECANCELED (sticky).
 * Returns 0 if t was still running (or not yet started), -EALREADY if it
 * had already finished (joining it reports its real outcome), -EINVAL if t
 * is NULL or not a live task. Callable from any thread. */
WEFT_API int weft_cancel(weft_task *t);

/* Let the other runnable fibers run (asyncio.sleep(0)). Outside a fiber it
 * returns at once. */
WEFT_API void weft_yield(void);

/* Suspend the calling fiber for at least ns nanoseconds; never returns early.
 * Returns 0, -ECANCELED (cancelled, before or while sleeping), -ETIMEDOUT (a
 * deadline scope expired first), -ENOMEM (no memory for the timer) or
 * -EINVAL (not called from a fiber). */
WEFT_API int weft_sleep(uint64_t ns);

/* Join t[0..n-1] in order (asyncio.gather); results[i] (if results is not
 * NULL) gets t[i]'s return value. Every task is joined and freed, even when
 * one fails. Returns 0, or the first non-zero weft_join result in index
 * order (-ECANCELED, -ENOMEM, -ETIMEDOUT); -EINVAL if t is NULL with n > 0,
 * any t[i] is NULL (then no task is joined), or the caller is not a fiber.
 * If the caller's deadline scope expires (or no memory is left for its
 * timer), the tasks not yet joined are cancelled and joined all the same,
 * as weft_group_wait does. */
WEFT_API int weft_gather(weft_task *const *t, size_t n, void **results);

/* Id of the calling fiber (unique within one weft_run, from 1), 0 outside
 * a fiber; and the id of a task (0 for NULL). */
WEFT_API uint64_t weft_self_id(void);
WEFT_API uint64_t weft_task_id(const weft_task *t);

WEFT_END_DECLS

#endif
