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
 * A MSG_RING that fails posts the waker's CQE after all (TAG_WAKE_FAILED
 * + target): its reap writes the target's eventfd instead.
 *
 * user_data: the TAG_* values below 4096; anything else is a 15-bit
 * generation above a pointer (weft__io_new_ud): to a struct weft__op whose
 * completion the I/O layer handles (io/), or with bit 63 set to a multishot
 * op's struct weft__mshot (io/mshot.c).
 */

#include <limits.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

static void reap(struct weft__worker *w);
static void reap_n(struct weft__worker *w, unsigned room);
static void drain_cancels(struct weft__worker *w);

#define TAG_WAKE 1
#define TAG_EFD 2
#define TAG_IGNORE 3 /* linked timeouts, async cancels: no one waits */
/* TAG_WAKE_FAILED + i: the waker's own CQE of a MSG_RING to worker i,
 * posted only when it failed (IOSQE_CQE_SKIP_SUCCESS): wake i by its
 * eventfd instead. Workers are at most WEFT__MAX_WORKERS (1024). */
#define TAG_WAKE_FAILED 2048
_Static_assert(TAG_WAKE_FAILED + WEFT__MAX_WORKERS <= 4096,
	       "tags stay below 4096");

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
	/* address space only: pages appear for the fds used */
	void *fdops = mmap(NULL, WEFT__FDOPS_MAX * sizeof *w->fdops,
			   PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (fdops == MAP_FAILED) {
		io_uring_queue_exit(&w->ring);
		return -ENOMEM;
	}
	w->fdops = fdops;
	pthread_mutex_init(&w->cancel_lock, NULL);
	w->efd = eventfd(0, EFD_CLOEXEC);
	if (w->efd < 0) {
		r = -errno;
		pthread_mutex_destroy(&w->cancel_lock);
		munmap(w->fdops, WEFT__FDOPS_MAX * sizeof *w->fdops);
		io_uring_queue_exit(&w->ring);
		return r;
	}
	w->ring_ok = true;
	/* io_uring_enter by a registered index skips the fd table and the
	 * file's reference count (atomic in a multithreaded process) on each
	 * enter; per thread, at most 16 (seeded runs host every worker on
	 * one thread: not there). Optional: liburing falls back to the fd. */
	if (!w->sim)
		w->ring_fd_reg = io_uring_register_ring_fd(&w->ring) == 1;
	arm_efd(w);
	io_uring_submit(&w->ring);
	return 0;
}

/* On the worker's own thread, before it ends: the registration is the
 * thread's (weft__ring_fini may run on another). */
void weft__ring_thread_exit(struct weft__worker *w)
{
	if (w->ring_fd_reg) {
		io_uring_unregister_ring_fd(&w->ring);
		w->ring_fd_reg = false;
	}
}

void weft__ring_fini(struct weft__worker *w)
{
	if (!w->ring_ok)
		return;
	pthread_mutex_destroy(&w->cancel_lock);
	io_uring_queue_exit(&w->ring);
	weft__pbuf_fini(w); /* after the ring: the kernel has let go */
	munmap(w->fdops, WEFT__FDOPS_MAX * sizeof *w->fdops);
	close(w->efd);
	w->ring_ok = false;
}

/* ---- operations: the op handshake ---------------------------------------------
 *
 * An operation is a struct weft__op on the issuing fiber's stack; its
 * address is the SQE's user_data. The fiber stays inside the call until
 * the CQE has been handled, so the op (and the caller's buffers) outlive
 * the kernel's use of them.
 *
 *   reaper (ring owner):   res = cqe; done := 1; seq := op->seq;
 *                          done := 2 (op no longer touched); wake(f, seq)
 *   fiber, first park:     op->seq = park_begin(cancellable); queue SQE;
 *                          park. WOKEN: done == 2, return res.
 *   fiber, cancelled:      (woken by weft_cancel, the op still in flight)
 *                          ask the ring owner for IORING_OP_ASYNC_CANCEL
 *                          (directly if this is the owner, else through
 *                          its cancel list and a wake-up), then re-park
 *                          non-cancellably: op->seq := new seq, and park
 *                          unless done != 0 (seq_cst on both sides: the
 *                          reaper stores done then loads seq, the fiber
 *                          stores seq then loads done, so either the
 *                          reaper wakes the new seq or the fiber sees
 *                          done). Before returning it waits for done == 2.
 * Deadlines are linked timeouts (IORING_OP_LINK_TIMEOUT, absolute
 * CLOCK_MONOTONIC): the kernel cancels the op; no timer of ours races it.
 *
 * Closing wakes (Go's Close, libuv's uv_close): an op in flight holds its
 * file, so close(2) alone would leave a fiber in weft_recv or weft_accept
 * waiting on a socket nobody can reach (a closed listener kept
 * listening). So each ring keeps its ops in flight on a list (ops_head)
 * and counted by fd (fdops[fd]); both are written by the ring's owner
 * only, at submit and at completion (no locked instruction on the hot
 * path). weft_close(fd) first revokes fd: for each worker whose count for
 * fd is not 0 (read relaxed: an op started before the close was decided
 * is seen; one started concurrently with it is the caller's race, as
 * with close(2)), the owner marks each of its ops on fd revoked and
 * cancels it by user_data; the closer does it itself for its own ring
 * (and for all of them in a seeded run), and otherwise hands the worker
 * a request (revoke_head, under cancel_lock, then a wake-up) and parks,
 * not cancellably, until that worker has submitted the cancels. Then it
 * closes. A revoked op that the cancel ended returns -EBADF; one that
 * completed first keeps its result. Cancelling by user_data rather than
 * by fd means a descriptor number reused after the close is never hit.
 * Multishot ops (weft_conn, weft_listener) are not tracked: their own
 * close functions stop them and wake their waiter (mshot.c, "stop").
 */

/* ---- closing wakes: the op registry (owner of the ring only) ---------- */

struct weft__revoke { /* on the closer's stack until it is woken */
	struct weft__revoke *next;
	int fd;
	weft_task *f;
	uint32_t seq;
};

static inline void fdops_add(struct weft__worker *w, int fd, uint32_t d)
{
	if ((unsigned)fd < WEFT__FDOPS_MAX)
		atomic_store_explicit(
			&w->fdops[fd],
			atomic_load_explicit(&w->fdops[fd],
					     memory_order_relaxed) + d,
			memory_order_relaxed);
}

/* The descriptor an op works on, or -1 for ops a close must not end (the
 * close itself, an open relative to a directory fd) and fixed files. */
static int op_fd(const struct io_uring_sqe *sqe)
{
	if ((sqe->flags & IOSQE_FIXED_FILE) || sqe->opcode == IORING_OP_CLOSE ||
	    sqe->opcode == IORING_OP_OPENAT)
		return -1;
	return sqe->fd >= 0 ? sqe->fd : -1;
}

static void ops_link(struct weft__worker *w, struct weft__op *op)
{
	op->revoked = false;
	op->iprev = NULL;
	op->inext = w->ops_head;
	if (op->inext)
		op->inext->iprev = op;
	w->ops_head = op;
	fdops_add(w, op->fd, 1);
}

static void ops_unlink(struct weft__worker *w, struct weft__op *op)
{
	if (op->iprev)
		op->iprev->inext = op->inext;
	else
		w->ops_head = op->inext;
	if (op->inext)
		op->inext->iprev = op->iprev;
	fdops_add(w, op->fd, (uint32_t)-1);
}

/* Could w have an op in flight on fd? */
static bool fd_busy(struct weft__worker *w, int fd)
{
	return (unsigned)fd >= WEFT__FDOPS_MAX ||
	       atomic_load_explicit(&w->fdops[fd], memory_order_relaxed);
}

static void prep_cancel_ud(struct weft__worker *w, uint64_t ud);

/* w's owner (or the seeded master): cancel w's ops on fd, as revoked */
static void revoke_local(struct weft__worker *w, int fd)
{
	if (!fd_busy(w, fd))
		return;
	/* the user_data first, then the cancels (as drain_cancels does):
	 * preparing one can reap (a full SQ with a CQ overflow pending,
	 * weft__io_flush_now), and the reap unlinks ops this walk would go
	 * on from, whose fibers may have returned meanwhile. A cancel for an
	 * op that completed finds nothing (a fresh user_data per op). */
	for (;;) {
		uint64_t uds[64];
		int n = 0;
		for (struct weft__op *op = w->ops_head; op && n < 64;
		     op = op->inext)
			if (op->fd == fd && !op->revoked) {
				op->revoked = true;
				uds[n++] = op->ud;
			}
		for (int i = 0; i < n; i++)
			prep_cancel_ud(w, uds[i]);
		if (n < 64)
			return;
	}
}

void weft__io_revoke(struct weft__worker *me, weft_task *self, int fd)
{
	struct weft__rt *rt = me->rt;
	for (unsigned i = 0; i < rt->nworkers; i++) {
		struct weft__worker *t = &rt->workers[i];
		if (!fd_busy(t, fd))
			continue;
		if (t == me || me->sim) { /* seeded: one thread owns all */
			revoke_local(t, fd);
			io_uring_submit(&t->ring);
			continue;
		}
		struct weft__revoke rq = {.fd = fd, .f = self};
		rq.seq = weft__park_begin(self, false);
		pthread_mutex_lock(&t->cancel_lock);
		rq.next = t->revoke_head;
		t->revoke_head = &rq;
		atomic_store_explicit(&t->cancel_len, 1, memory_order_release);
		pthread_mutex_unlock(&t->cancel_lock);
		weft__ring_wake(t);
		/* woken only by t's drain_cancels, after its submit */
		weft__park_commit(self);
		me = weft__worker_self(); /* maybe another worker now */
	}
}

void weft__io_complete(struct weft__op *op, int res, unsigned flags)
{
	weft_task *f = op->f;
	if (op->fd >= 0)
		ops_unlink(op->w, op);
	op->res = res;
	op->cflags = flags;
	/* seq_cst: first half of the op handshake */
	atomic_store(&op->done, 1);
	uint32_t seq = atomic_load(&op->seq);
	/* release: res is published; after this the op is the fiber's */
	atomic_store_explicit(&op->done, 2, memory_order_release);
	weft__wake_ex(f, seq, WEFT__R_WOKEN, true); /* completion order */
}

/* Submit everything queued now (ring full, or room needed for a link). */
void weft__io_flush_now(struct weft__worker *w)
{
	while (io_uring_sq_ready(&w->ring)) {
		int r = io_uring_submit(&w->ring);
		if (r == -EBUSY) /* CQ overflow pending: reap all first */
			reap_n(w, UINT_MAX);
		else if (r < 0 && r != -EINTR && r != -EAGAIN)
			weft__die("ring: io_uring_submit failed");
	}
}

struct io_uring_sqe *weft__io_sqe(struct weft__worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	while (!sqe) {
		/* ring full: hand what is queued to the kernel */
		weft__io_flush_now(w);
		sqe = io_uring_get_sqe(&w->ring);
	}
	return sqe;
}

static void prep_cancel_ud(struct weft__worker *w, uint64_t ud)
{
	struct io_uring_sqe *sqe = weft__io_sqe(w);
	io_uring_prep_cancel64(sqe, ud, 0);
	io_uring_sqe_set_data64(sqe, TAG_IGNORE);
}

static void prep_cancel(struct weft__worker *w, struct weft__op *op)
{
	prep_cancel_ud(w, op->ud);
}

static void drain_cancels(struct weft__worker *w)
{
	/* closers waiting for us (weft__io_revoke) */
	pthread_mutex_lock(&w->cancel_lock);
	struct weft__revoke *rv = w->revoke_head;
	w->revoke_head = NULL;
	pthread_mutex_unlock(&w->cancel_lock);
	for (struct weft__revoke *r = rv; r; r = r->next)
		revoke_local(w, r->fd);
	for (;;) {
		uint64_t uds[64];
		int n = 0;
		pthread_mutex_lock(&w->cancel_lock);
		struct weft__op *op = w->cancel_head;
		while (op && n < 64) {
			uds[n++] = op->ud;
			op->listed = false;
			op = op->cancel_next;
		}
		w->cancel_head = op;
		if (!op && !w->revoke_head) /* a new revoke keeps the hint */
			atomic_store_explicit(&w->cancel_len, 0, memory_order_release);
		pthread_mutex_unlock(&w->cancel_lock);
		for (int k = 0; k < n; k++)
			prep_cancel_ud(w, uds[k]);
		if (!op)
			break;
	}
	io_uring_submit(&w->ring);
	while (rv) { /* the cancels are in: the closers may close */
		struct weft__revoke *next = rv->next;
		weft__wake(rv->f, rv->seq, WEFT__R_WOKEN); /* rv's last touch */
		rv = next;
	}
}

void weft__io_unlist(struct weft__op *op)
{
	struct weft__worker *w = op->w;
	pthread_mutex_lock(&w->cancel_lock);
	if (op->listed) {
		struct weft__op **pp = &w->cancel_head;
		while (*pp && *pp != op)
			pp = &(*pp)->cancel_next;
		if (*pp)
			*pp = op->cancel_next;
		op->listed = false;
	}
	pthread_mutex_unlock(&w->cancel_lock);
}

/* Ask op->w to cancel op (ASYNC_CANCEL by op->ud): directly when that is
 * this worker, else through its cancel list and a wake-up. */
void weft__io_request_cancel(struct weft__op *op)
{
	struct weft__worker *me = weft__worker_self(), *w = op->w;
	if (me == w || (me && me->sim)) { /* seeded: one thread owns all */
		prep_cancel(w, op);
		io_uring_submit(&w->ring);
		return;
	}
	weft__io_defer_cancel(op);
	weft__ring_wake(w);
}

/* List op on op->w's cancel list, handled at the end of its next reap
 * (the reaper itself uses this: it must not prepare SQEs mid-reap). */
void weft__io_defer_cancel(struct weft__op *op)
{
	struct weft__worker *w = op->w;
	pthread_mutex_lock(&w->cancel_lock);
	op->listed = true;
	op->cancel_next = w->cancel_head;
	w->cancel_head = op;
	atomic_store_explicit(&w->cancel_len, 1, memory_order_release);
	pthread_mutex_unlock(&w->cancel_lock);
}

/* user_data for an op or a multishot: a 15-bit generation (bits 48-62)
 * above the address; bit 63 marks a weft_conn's multishot receive. */
uint64_t weft__io_new_ud(struct weft__worker *w, void *p)
{
	w->op_gen = (uint16_t)((w->op_gen + 1) & 0x7fff);
	return ((uint64_t)w->op_gen << 48) | (uint64_t)(uintptr_t)p;
}

int weft__io_submit_wait(struct weft__worker *w, weft_task *self,
			 struct weft__op *op, struct io_uring_sqe *sqe)
{
	op->f = self;
	op->w = w;
	atomic_store_explicit(&op->done, 0, memory_order_relaxed);
	op->listed = false;
	/* A fresh user_data even when this stack slot held the last op: a
	 * late cancel aimed at the last one (its linked timeout firing as it
	 * completed, an ASYNC_CANCEL) must not hit this one. The kernel
	 * matches cancels by user_data within this ring, and only this
	 * worker numbers ops on it. */
	op->ud = weft__io_new_ud(w, op);
	io_uring_sqe_set_data64(sqe, op->ud);
	op->fd = op_fd(sqe);
	op->revoked = false; /* read below for every op, linked or not */
	if (op->fd >= 0)
		ops_link(w, op);
	uint64_t dl = self->deadline;
	if (dl && !w->sim) { /* seeded: a virtual-time timer instead */
		sqe->flags |= IOSQE_IO_LINK;
		op->ts.tv_sec = (long long)(dl / 1000000000ull);
		op->ts.tv_nsec = (long long)(dl % 1000000000ull);
		struct io_uring_sqe *t = weft__io_sqe(w);
		io_uring_prep_link_timeout(t, &op->ts, IORING_TIMEOUT_ABS);
		io_uring_sqe_set_data64(t, TAG_IGNORE);
	}
	w->inflight++;
	op->held = false;
	op->sure = w->sim && weft__sim_sure(sqe);
	w->sim_sure += op->sure;
	WEFT__M_IO_SUBMIT(w, self, sqe); /* metrics and dump (internal.h) */
	w->io_dirty = true;
	atomic_store(&op->seq, weft__park_begin(self, true));
	/* seeded: park_wait adds the deadline's timer (virtual time) */
	int r = w->sim ? weft__park_wait(self) : weft__park_commit(self);
	if (r != WEFT__R_WOKEN &&
	    atomic_load_explicit(&op->done, memory_order_acquire) == 0) {
		weft__io_request_cancel(op);
		if (w->sim && !op->sure && !op->held) {
			/* the kernel ends it now (sim.c) */
			op->sure = true;
			w->sim_sure++;
		}
		/* re-park until the CQE, not cancellable */
		uint32_t seq = weft__park_begin(self, false);
		atomic_store(&op->seq, seq); /* seq_cst: the op handshake */
		if (atomic_load(&op->done))
			weft__park_abort(self);
		else
			weft__park_commit(self);
	}
	while (atomic_load_explicit(&op->done, memory_order_acquire) != 2)
		weft__cpu_relax(); /* the reaper is between two stores */
	if (r != WEFT__R_WOKEN)
		weft__io_unlist(op);
	int res = op->res;
	/* a cancelled op running in io-wq (a blocking file or pipe read) ends
	 * with -EINTR rather than -ECANCELED, and a blocking open (a FIFO
	 * with O_CREAT waits there for its other end) with the kernel's own
	 * -ERESTARTSYS (512) .. -ERESTART_RESTARTBLOCK (516), which are no
	 * errno of ours to hand on */
	if (res <= -512 && res >= -516)
		res = -EINTR;
	if (res == -ECANCELED || res == -EINTR) {
		if (weft__cancelled(self))
			return -ECANCELED;
		if (op->revoked) /* its fd was closed (weft_close) */
			return -EBADF;
		if (dl && weft__clock() >= dl)
			return -ETIMEDOUT;
		/* seeded: no memory for the deadline's timer ended the wait;
		 * nobody cancelled the fiber (weft/deadline.h: -ENOMEM) */
		if (r == WEFT__R_NOMEM)
			return -ENOMEM;
	}
	return res;
}

/* Before issuing: a cancelled fiber or a passed deadline fails at once. */
int weft__io_check(weft_task *self)
{
	if (weft__cancelled(self))
		return -ECANCELED;
	if (self->deadline && weft__clock() >= self->deadline)
		return -ETIMEDOUT;
	return 0;
}

/* Hand queued SQEs to the kernel (one io_uring_enter for the batch). */
void weft__io_flush(struct weft__worker *w)
{
	if (w->io_dirty) {
		w->io_dirty = false;
		if (io_uring_sq_ready(&w->ring))
			io_uring_submit(&w->ring);
	}
}

/* Take completions only while the local queue has room for the fibers
 * they wake: the rest wait in the CQ, in order, for the next reap. (A burst
 * beyond the queue would spill to the global queue and lose its order:
 * seen as a 160 ms p99 with 1,000 echo connections on one worker.) */
static void reap(struct weft__worker *w)
{
	reap_n(w, WEFT_DEQUE_CAP - weft__dq_len(&w->dq));
}

/* room: how many op completions to take (UINT_MAX when the kernel refuses
 * submissions until the CQ drains: the overflow then goes to the global
 * queue) */
static void reap_n(struct weft__worker *w, unsigned room)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	bool rearm = false;
	w->reaping = true;
	io_uring_for_each_cqe(&w->ring, head, cqe)
	{
		uint64_t ud = cqe->user_data;
		if (ud >= 4096 && room-- == 0)
			break;
		n++;
		if (ud == TAG_WAKE) {
			/* nothing to do: the wait returned */
		} else if (ud == TAG_EFD) {
			rearm = true;
		} else if (ud >= TAG_WAKE_FAILED &&
			   ud < TAG_WAKE_FAILED + w->rt->nworkers) {
			/* a MSG_RING wake failed (the target's CQ could not
			 * take it: -EOVERFLOW, -ENOMEM): it must not be lost */
			uint64_t one = 1;
			struct weft__worker *t =
				&w->rt->workers[ud - TAG_WAKE_FAILED];
			ssize_t r = write(t->efd, &one, sizeof one);
			(void)r; /* EAGAIN: a wake already pends */
		} else if (ud >= 4096) {
			if (!(ud & WEFT__UD_MSHOT) || !(cqe->flags & IORING_CQE_F_MORE)) {
				w->inflight--;
				WEFT__M_IO_DONE(w); /* metrics (internal.h) */
			}
			struct weft__op *op =
				(struct weft__op *)(uintptr_t)(ud & WEFT__UD_ADDR);
			if (!(ud & WEFT__UD_MSHOT) && op->sure)
				w->sim_sure--; /* seeded runs (sim.c) */
			if (ud & WEFT__UD_MSHOT)
				weft__mshot_cqe(w, cqe);
			else if (!w->sim || !weft__sim_delay(w, op, cqe->res,
							     cqe->flags))
				weft__io_complete(op, cqe->res, cqe->flags);
		}
	}
	w->reaping = false;
	if (n)
		weft__reap_notify(w);
	io_uring_cq_advance(&w->ring, n);
	if (rearm)
		arm_efd(w);
	if (atomic_load_explicit(&w->cancel_len, memory_order_acquire))
		drain_cancels(w);
	if (w->pbuf)
		weft__pbuf_drain(w);
#ifdef WEFT__TSAN
	if (atomic_load_explicit(&weft__sig_installed, memory_order_relaxed))
		weft__signal_tsan_point(); /* see weft__ring_wait */
#endif
	/* a signal arrived (io/signal.c; its handler woke worker 0's
	 * eventfd, but any reap may hand it over) */
	if (atomic_load_explicit(&weft__sig_pending, memory_order_relaxed))
		weft__signal_dispatch();
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
#ifdef WEFT__TSAN
	/* TSan runs a signal handler only when the thread next enters a
	 * function it intercepts; a worker parked in io_uring_enter (a raw
	 * system call, restarted after the signal) never does, and a
	 * weft_signal_wait would wait for ever. While weft has handlers
	 * installed, wake every 20 ms and let TSan run what it holds
	 * (weft__signal_tsan_point; test builds only) */
	if (atomic_load_explicit(&weft__sig_installed, memory_order_relaxed) &&
	    timeout_ns > 20000000ull) {
		ts.tv_sec = 0;
		ts.tv_nsec = 20000000;
		tsp = &ts;
	}
#endif
	int r = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, tsp, NULL);
	reap(w);
	return r < 0 && r != -ETIME && r != -EINTR ? r : 0;
}

/* Between fibers: flush prepared SQEs and reap what completed. */
void weft__ring_poll(struct weft__worker *w)
{
	w->io_dirty = false;
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
#ifdef WEFT_TEST_MSG_RING_FAIL
			/* tests: every MSG_RING fails (the target is no ring:
			 * -EBADFD), so every wake takes the fallback */
			int to = t->efd;
#else
			int to = t->ring.ring_fd;
#endif
			io_uring_prep_msg_ring(sqe, to, 0, TAG_WAKE, 0);
			io_uring_sqe_set_data64(sqe, TAG_WAKE_FAILED + t->index);
			sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
			if (io_uring_submit(&self->ring) >= 0)
				return;
		}
		/* fall through to the eventfd */
	}
	weft__ring_wake_efd(t);
}

/* By t's eventfd only: for a waker that may reap its ring no more (the
 * worker that terminates the runtime and leaves), where a failed MSG_RING's
 * CQE, the fallback above, would never be reaped. */
void weft__ring_wake_efd(struct weft__worker *t)
{
	uint64_t one = 1;
	ssize_t r = write(t->efd, &one, sizeof one);
	(void)r; /* EAGAIN: the counter is already non-zero, a wake pends */
}
