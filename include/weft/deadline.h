/* weft/deadline.h — deadline scopes (asyncio.timeout, Trio move_on_after)
 * and shield scopes (asyncio.shield, Trio CancelScope(shield=True)).
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

/* A shield lets cleanup finish in a fiber that was cancelled or whose
 * deadline passed (a last reply, a flush, an fsync, at weft_run's shutdown
 * too). Until the matching pop its waits ignore weft_cancel and the
 * deadline scopes pushed before the shield; scopes pushed inside apply, so
 * bound the cleanup with one (weft_run waits for a shielded fiber):
 *
 *     weft_shield s;
 *     weft_shield_push(&s);
 *     weft_deadline d;
 *     weft_deadline_push(&d, 100 * 1000000);  // at most 100 ms of cleanup
 *     weft_send(fd, bye, len, 0);
 *     weft_deadline_pop(&d);
 *     weft_shield_pop(&s);                    // -ECANCELED: was cancelled
 *
 * A cancel that comes meanwhile is kept (cancellation is sticky): after
 * the last pop the fiber's waits fail again. Shields nest with deadline
 * scopes; pop in reverse order of push. */
typedef struct weft_shield {
	uint64_t _prev;
} weft_shield;

/* 0; -EINVAL (s NULL, or not called from a fiber); -EOVERFLOW (65,535
 * shields already open). */
WEFT_API int weft_shield_push(weft_shield *s);
/* Close the shield and restore the deadline in force at its push. 0;
 * -ECANCELED if the fiber was cancelled and no shield is left open (its
 * next wait fails); -EINVAL (s NULL, no shield open, or not a fiber). */
WEFT_API int weft_shield_pop(weft_shield *s);

WEFT_END_DECLS

#endif
