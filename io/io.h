/* io.h — what every op family shares (internal). Each op validates its
 * arguments, preps its SQE and awaits through weft__io_submit_wait. */
#ifndef WEFT_IO_INTERNAL_H
#define WEFT_IO_INTERNAL_H

#include "../runtime/internal.h"

/* The common head of every op: fiber check, cancel/deadline check, an SQE
 * on this worker's ring. Sets *err and returns NULL when the op must not
 * be issued. */
static inline struct io_uring_sqe *weft__io_begin(struct weft__worker **wp,
						  weft_task **selfp, int *err)
{
	weft_task *self = weft__self(wp);
	*selfp = self;
	if (!self) {
		*err = -EINVAL;
		return NULL;
	}
	if ((*err = weft__io_check(self)))
		return NULL;
	/* an op and its linked timeout must go to the kernel in one submit,
	 * or the link is cut and the timeout stands alone */
	if (self->deadline && io_uring_sq_space_left(&(*wp)->ring) < 2)
		weft__io_flush_now(*wp);
	return weft__io_sqe(*wp);
}

/* An SQE's length is 32 bits: a longer request would wrap (4 GiB asks
 * for 0 bytes, and a receive of 0 reads as end of file). Ask for what
 * read(2) does at most; the caller sees a short transfer, as documented. */
#define WEFT__IO_MAX_LEN 0x7ffff000u
static inline size_t weft__io_len(size_t n)
{
	return n > WEFT__IO_MAX_LEN ? WEFT__IO_MAX_LEN : n;
}

/* like WEFT__IO, but stores the result in `out` instead of returning */
#define WEFT__IO_INTO(out, prep_stmt)                                       \
	do {                                                                \
		struct weft__worker *w_;                                    \
		weft_task *self_;                                           \
		struct io_uring_sqe *sqe = weft__io_begin(&w_, &self_, &(out)); \
		if (sqe) {                                                  \
			prep_stmt;                                          \
			struct weft__op op_;                                \
			(out) = weft__io_submit_wait(w_, self_, &op_, sqe); \
		}                                                           \
	} while (0)

#define WEFT__IO(prep_stmt)                                                 \
	do {                                                                \
		struct weft__worker *w_;                                    \
		weft_task *self_;                                           \
		int err_;                                                   \
		struct io_uring_sqe *sqe = weft__io_begin(&w_, &self_, &err_); \
		if (!sqe)                                                   \
			return err_;                                        \
		prep_stmt;                                                  \
		struct weft__op op_;                                        \
		return weft__io_submit_wait(w_, self_, &op_, sqe);          \
	} while (0)

/* ---- multishot ops (mshot.c): weft_conn, weft_listener -------------------
 * One multishot SQE armed on the ring of worker w; its CQEs go to the
 * object's cqe function on w (the reaper) while armed. The fields below
 * are guarded by lock; waiter is the one fiber waiting on the object. */
struct weft__mshot {
	void (*cqe)(struct weft__worker *w, struct weft__mshot *m,
		    struct io_uring_cqe *cqe);
	unsigned lock;
	bool armed;      /* in the kernel, until a CQE without F_MORE */
	bool cancelling; /* an ASYNC_CANCEL is on its way */
	weft_task *waiter;
	uint32_t wseq;
	/* closing wakes (mshot.c): fibers inside a call, and the closer */
	unsigned users;
	bool closing;      /* a close began: calls fail with -EBADF */
	bool waiter_plain; /* the waiter is in weft_recv, not parked on m */
	weft_task *closer; /* parked until users is 0 */
	uint32_t cseq;
	struct weft__op cop; /* w (cop.w), user_data, the cancel-list link */
};
/* lock held, !armed: mark m armed on me and return, with the lock
 * DROPPED, an SQE on me's ring carrying m's user_data and counted in
 * flight; the caller preps it (liburing's prep helpers leave user_data
 * alone) and takes the lock again */
struct io_uring_sqe *weft__mshot_arm(struct weft__mshot *m,
				     struct weft__worker *me) WEFT__HIDDEN;
/* the same without the look for a deferred cancel of an earlier arming
 * (two lock round trips): for an op that only weft__mshot_stop cancels,
 * after which nothing arms it (weft_conn_send's, once per message) */
struct io_uring_sqe *weft__mshot_arm_fresh(struct weft__mshot *m,
					   struct weft__worker *me) WEFT__HIDDEN;
/* reaper, lock held: a CQE seen; pressure: cancel now (back-pressure).
 * Returns the waiter to wake after unlocking (and its seq in *seq). */
weft_task *weft__mshot_seen(struct weft__mshot *m, bool more, bool pressure,
			    uint32_t *seq) WEFT__HIDDEN;
/* fiber, lock held: wait for the next CQE; returns the park reason with
 * the lock held again */
int weft__mshot_wait(struct weft__mshot *m, weft_task *self, unsigned op,
		     int fd) WEFT__HIDDEN;
/* fiber: enter a call on m. 0 with the lock held, or -EBADF (a close
 * has begun; the lock is not held) */
int weft__mshot_enter(struct weft__mshot *m) WEFT__HIDDEN;
/* fiber, lock held: leave the call, dropping the lock (and waking a
 * closer that waits for the last fiber to leave) */
void weft__mshot_leave(struct weft__mshot *m) WEFT__HIDDEN;
/* fiber, lock NOT held: wake the fibers inside a call on m (they return
 * -EBADF; a plain receive on fd is ended by shutdown(fd, SHUT_RD)) and
 * wait for them to leave; with drain, wait (cancellably, under the
 * caller's deadline) for the armed op to end by itself; then cancel and
 * wait (not cancellably) until !armed. Then nothing else touches m.
 * Returns 0, -EBADF if a close already began, or -ECANCELED / -ETIMEDOUT
 * / -ENOMEM if the drain was cut short (the op was cancelled). */
int weft__mshot_stop(struct weft__mshot *m, weft_task *self, int fd,
		     bool drain) WEFT__HIDDEN;

#endif
