/* weft/chan.h — channels (asyncio.Queue, Go chan): bounded, MPMC, fixed
 * element size. Capacity 0 is a rendezvous: a send completes when a
 * receiver takes the element. Elements are copied (memcpy of elem_size).
 *
 * A call that has to wait must come from a fiber (elsewhere it returns
 * -EINVAL); it parks the fiber, never the worker, and returns -ECANCELED
 * (fiber cancelled) or -ETIMEDOUT (deadline scope expired) without having
 * sent or received anything. A call that can complete at once does so,
 * from any thread, cancelled or not.
 */
#ifndef WEFT_CHAN_H
#define WEFT_CHAN_H

#include "common.h"

WEFT_BEGIN_DECLS

typedef struct weft_chan weft_chan;

/* NULL if elem_size is 0 or > 65536, capacity > 2^24, or out of memory. */
WEFT_API weft_chan *weft_chan_new(size_t capacity, size_t elem_size);

/* 0 sent; -EPIPE closed (before or while waiting); -ECANCELED; -ETIMEDOUT;
 * -EINVAL (NULL argument, or not a fiber and it would have to wait);
 * -ENOMEM (it had to wait under a deadline scope and found no memory for
 * the deadline's timer: nothing was sent, weft/deadline.h). */
WEFT_API int weft_chan_send(weft_chan *c, const void *elem);
/* 0 received; -EPIPE closed and drained; -ECANCELED; -ETIMEDOUT; -EINVAL;
 * -ENOMEM (as for send). */
WEFT_API int weft_chan_recv(weft_chan *c, void *elem);

/* Never block; callable from any thread. 0; -EAGAIN (full / no waiting
 * receiver; empty / no waiting sender); -EPIPE; -EINVAL. */
WEFT_API int weft_chan_try_send(weft_chan *c, const void *elem);
WEFT_API int weft_chan_try_recv(weft_chan *c, void *elem);

/* Close: every parked sender gets -EPIPE, receivers drain what is buffered
 * and then get -EPIPE. Closing twice, or NULL, does nothing. */
WEFT_API void weft_chan_close(weft_chan *c);
/* Free a channel no fiber is inside a call on any more (a receiver woken
 * by close still is, until it returns); aborts with a message if fibers
 * still wait on it. NULL does nothing. */
WEFT_API void weft_chan_free(weft_chan *c);
/* Elements buffered now (a snapshot). */
WEFT_API size_t weft_chan_len(weft_chan *c);

/* Go's select: wait until one case can proceed, do it, return its index. */
enum { WEFT_SEND = 1, WEFT_RECV = 2 };
typedef struct weft_select_case {
	weft_chan *chan;
	int op;     /* WEFT_SEND or WEFT_RECV */
	void *elem; /* element to send / buffer to receive into */
	int result; /* out: 0, or -EPIPE if the case completed by a close */
} weft_select_case;
/* Ready cases are chosen at random (no case starves). With nowait != 0 it
 * is select-with-default: -EAGAIN when no case is ready. Returns the index,
 * or -EAGAIN, -ECANCELED, -ETIMEDOUT, -EINVAL (n == 0 or > 64, a NULL chan
 * or elem, a bad op, or not a fiber when it would block), -ENOMEM (as for
 * send: no case happened). */
WEFT_API int weft_select(weft_select_case *cases, size_t n, int nowait);

WEFT_END_DECLS

#endif
