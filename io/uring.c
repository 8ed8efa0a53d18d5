/* uring.c — one io_uring per worker: setup, park, wake, reap.
 *
 * Ownership: a ring is created, submitted to and reaped only by its worker
 * thread (IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN when the kernel has
 * them, else COOP_TASKRUN, else plain). Other threads never touch it: they
 * reach it by messages.
 *
 * Waking a parked worker
 *   from a worker:      IORING_OP_MSG_RING on the waker's own ring posts a
 *                       CQE (user_data TAG_WAKE) on the target's ring; the
 *                       waker's CQE is skipped (IOSQE_CQE_SKIP_SUCCESS).
 *   from other threads: write(2) to the target's eventfd; the target keeps
 *                       one IORING_OP_READ on it (TAG_EFD), re-armed after
 *                       each completion.
 * A wake that arrives before the target waits is a CQE already in its
 * queue, so the wait returns at once: no lost wake-up.
 *
 * Parking: io_uring_submit_and_wait_timeout() up to the earliest timer
 * (EXT_ARG: no timeout SQE), which also flushes SQEs prepared this tick.
 *
 * user_data: TAG_WAKE and TAG_EFD below 4096; anything else is a pointer to
 * a struct weft__op whose completion the I/O layer handles (io/).
 */

#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

#define TAG_WAKE 1
#define TAG_EFD 2

static void arm_efd(struct weft__worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	if (!sqe) {
		io_uring_submit(&w->ring);
		sqe = io_uring_get_sqe(&w->ring);
		if (!sqe)
			weft__die("ring: no SQE for the eventfd read");
	}
	io_uring_prep_read(sqe, w->efd, &w->efd_buf, sizeof w->efd_buf, 0);
	io_uring_sqe_set_data64(sqe, TAG_EFD);
}

int weft__ring_init(struct weft__worker *w)
{
	static const unsigned flag_sets[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int r = -ENOSYS;
	for (size_t i = 0; i < sizeof flag_sets / sizeof *flag_sets; i++) {
		struct io_uring_params p;
		memset(&p, 0, sizeof p);
		p.flags = flag_sets[i] | IORING_SETUP_SUBMIT_ALL;
		r = io_uring_queue_init_params(w->rt->ring_entries, &w->ring,
					       &p);
		if (r == 0)
			break;
		if (r != -EINVAL)
			return r;
	}
	if (r != 0)
		return r;
	w->efd = eventfd(0, EFD_CLOEXEC);
	if (w->efd < 0) {
		r = -errno;
		io_uring_queue_exit(&w->ring);
		return r;
	}
	w->ring_ok = true;
	arm_efd(w);
	io_uring_submit(&w->ring);
	return 0;
}

void weft__ring_fini(struct weft__worker *w)
{
	if (!w->ring_ok)
		return;
	io_uring_queue_exit(&w->ring);
	close(w->efd);
	w->ring_ok = false;
}

static void reap(struct weft__worker *w)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	bool rearm = false;
	io_uring_for_each_cqe(&w->ring, head, cqe)
	{
		uint64_t ud = cqe->user_data;
		n++;
		if (ud == TAG_WAKE) {
			/* nothing to do: the wait returned */
		} else if (ud == TAG_EFD) {
			rearm = true;
		} else if (ud >= 4096) {
			/* I/O completions: io/ (issue 3) */
			w->inflight--;
		}
	}
	io_uring_cq_advance(&w->ring, n);
	if (rearm)
		arm_efd(w);
}

/* Sleep in the ring until a CQE arrives or timeout_ns passes (UINT64_MAX:
 * no timeout). */
int weft__ring_wait(struct weft__worker *w, uint64_t timeout_ns)
{
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts, *tsp = NULL;
	if (timeout_ns != UINT64_MAX) {
		ts.tv_sec = (long long)(timeout_ns / 1000000000ull);
		ts.tv_nsec = (long long)(timeout_ns % 1000000000ull);
		tsp = &ts;
	}
	int r = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, tsp, NULL);
	reap(w);
	return r < 0 && r != -ETIME && r != -EINTR ? r : 0;
}

/* Between fibers: flush prepared SQEs and reap what completed. */
void weft__ring_poll(struct weft__worker *w)
{
	if (io_uring_sq_ready(&w->ring) || w->inflight)
		io_uring_submit_and_get_events(&w->ring);
	reap(w);
}

void weft__ring_wake(struct weft__worker *t)
{
	struct weft__worker *self = weft__worker_self();
	if (self && self->rt == t->rt && self != t) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);
		if (!sqe) {
			io_uring_submit(&self->ring);
			sqe = io_uring_get_sqe(&self->ring);
		}
		if (sqe) {
			io_uring_prep_msg_ring(sqe, t->ring.ring_fd, 0,
					       TAG_WAKE, 0);
			io_uring_sqe_set_data64(sqe, 0);
			sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
			if (io_uring_submit(&self->ring) >= 0)
				return;
		}
		/* fall through to the eventfd */
	}
	uint64_t one = 1;
	ssize_t r = write(t->efd, &one, sizeof one);
	(void)r; /* EAGAIN: the counter is already non-zero, a wake pends */
}
