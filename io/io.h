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

#endif
