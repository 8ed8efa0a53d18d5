/* weft/signal.h — wait for POSIX signals in a fiber (asyncio's
 * loop.add_signal_handler, Tokio's tokio::signal, Go's signal.Notify,
 * libuv's uv_signal_t).
 *
 *     static const int stop[] = {SIGINT, SIGTERM};
 *     weft_signal_watch(stop, 2);            // caught from now on
 *     ...
 *     int sig = weft_signal_wait(stop, 2);   // parks the fiber, not the worker
 *
 * weft_signal_watch, or the first wait, for a signal installs weft's
 * handler for it (a server watches before it announces itself: a SIGTERM
 * sent before would still kill it); from then
 * until weft_run returns (which restores what was there before), the
 * signal no longer has its default action. A delivery wakes every fiber
 * waiting for that signal; one that comes while none waits is kept (once:
 * deliveries coalesce, as the kernel's own pending signals do) for the
 * next wait that names it. Nothing else changes: signal masks are left as
 * they are, and the handler only notes the signal and wakes a worker.
 */
#ifndef WEFT_SIGNAL_H
#define WEFT_SIGNAL_H

#include <signal.h>

#include "common.h"

WEFT_BEGIN_DECLS

/* The number of a signal of sigs[0..n) that arrived (> 0; the lowest, if
 * several are pending). -EINVAL: sigs NULL or n 0; a number that is no
 * signal (<= 0, or past the last real-time one); a signal that cannot
 * be caught or reports a fault (SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGFPE,
 * SIGILL, SIGTRAP, SIGSYS) or that the C library reserves; a signal the
 * calling worker blocks (workers inherit the mask of weft_run's caller:
 * a signal blocked there would never reach the handler); or not called
 * from a fiber. -EBUSY: the list holds the runtime's dump signal
 * (weft/debug.h). -ECANCELED, -ETIMEDOUT (deadline scope; -ENOMEM under
 * one with no memory for its timer): the wait ended first, and a signal
 * that arrives later stays pending. A list of
 * numbers, not a sigset_t: ISO C's <signal.h> has SIGINT and SIGTERM but
 * no sigset_t, and this header compiles with -std=c11. */
WEFT_API int weft_signal_wait(const int *sigs, size_t n);

/* Install the handler for sigs[0..n) now, without waiting: deliveries from
 * here on are kept for the next wait. 0, or -EINVAL / -EBUSY as above. */
WEFT_API int weft_signal_watch(const int *sigs, size_t n);

WEFT_END_DECLS

#endif
