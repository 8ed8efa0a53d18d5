/* weft/deadline.h — deadline scopes (asyncio.timeout, Trio move_on_after).
 *
 *     weft_deadline d;
 *     weft_deadline_push(&d, 50 * 1000000);   // 50 ms from now
 *     r = weft_chan_recv(c, &x);              // -ETIMEDOUT after 50 ms
 *     weft_deadline_pop(&d);
 *
 * Under a scope every wait of the calling fiber — sleep, join, channels,
 * locks, I/O — returns -ETIMEDOUT once the deadline has passed (a wait
 * started after it fails at once). Scopes nest; the earliest deadline wins.
 * Pop in reverse order of push. A scope belongs to one fiber. A wait that
 * must park under a scope and finds no memory for the deadline's timer
 * returns -ENOMEM at once (nothing happened, as with -ETIMEDOUT).
 */
#ifndef WEFT_DEADLINE_H
#define WEFT_DEADLINE_H

#include "common.h"

WEFT_BEGIN_DECLS

typedef struct weft_deadline {
	uint64_t _prev;
} weft_deadline;

/* 0, or -EINVAL (d NULL, or not called from a fiber). */
WEFT_API int weft_deadline_push(weft_deadline *d, uint64_t ns_from_now);
/* Same, with an absolute weft_now() time. */
WEFT_API int weft_deadline_push_at(weft_deadline *d, uint64_t when);
/* Restore the deadline in force before the matching push. */
WEFT_API void weft_deadline_pop(weft_deadline *d);
/* The calling fiber's deadline (weft_now() time), 0 if none. */
WEFT_API uint64_t weft_deadline_current(void);

WEFT_END_DECLS

#endif
