/* mshot.c — multishot ops: the shared state machine, and weft_listener.
 *
 * A multishot SQE (accept, recv) stays in the kernel and completes many
 * times: every CQE but the last has IORING_CQE_F_MORE. weft keeps one
 * armed per object, on the ring of the worker that armed it (m->cop.w),
 * and the object queues what its CQEs bring for the fiber that asks:
 *
 *   reaper (w):  lock; queue the result; weft__mshot_seen: armed := more,
 *                maybe cancel (back-pressure), take the waiter; unlock
 *                (its last touch); wake the waiter.
 *   fiber:       lock; take from the queue, or: not armed -> arm on this
 *                worker (weft__mshot_arm), then wait (weft__mshot_wait:
 *                the waitq rule of runtime/sync/waitq.c, one waiter).
 *                A cancel or deadline only ends the wait: what arrives
 *                later stays queued.
 *   stop:        mark closing, wake the fibers inside a call (the waiter
 *                parked on m directly; one in a plain weft_recv by
 *                shutdown(fd, SHUT_RD), which ends that receive and every
 *                later one at once), and wait until the last of them has
 *                left (users, counted by enter/leave: a fiber the reaper
 *                has just woken is still inside, and freeing m under it
 *                was a use after free); then cancel (IORING_OP_ASYNC_CANCEL
 *                by user_data, through the owner's cancel list if we run
 *                elsewhere) and wait, not cancellably, for the last CQE;
 *                then the object is ours. Calls then, and the woken
 *                ones, return -EBADF: closing wakes, as weft_close does.
 *
 * user_data is weft__io_new_ud(w, m) | WEFT__UD_MSHOT: a fresh generation
 * per arming, so a late cancel aimed at an earlier arming misses. Back-
 * pressure cancels from the reaper are deferred to the end of the reap
 * (weft__io_defer_cancel): no SQE is prepared mid-reap. An armed multishot
 * counts in w->inflight until its last CQE.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include "../runtime/sync/waitq.h"
#include "io.h"
#include "weft/conn.h"

void weft__mshot_cqe(struct weft__worker *w, struct io_uring_cqe *cqe)
{
	struct weft__mshot *m =
		(struct weft__mshot *)(uintptr_t)(cqe->user_data & WEFT__UD_ADDR);
	m->cqe(w, m, cqe);
}

struct io_uring_sqe *weft__mshot_arm(struct weft__mshot *m,
				     struct weft__worker *me)
{
	/* an old deferred cancel must not hit the new arming. Under the
	 * lock (the reaper's weft__io_defer_cancel nests the same two): with
	 * it dropped here, a second caller found nothing armed and no waiter
	 * and armed too, on its own worker's ring, instead of getting -EBUSY:
	 * two multishots behind one m (tests/test_conn.c, two_readers) */
	if (m->cop.w)
		weft__io_unlist(&m->cop);
	return weft__mshot_arm_fresh(m, me);
}

struct io_uring_sqe *weft__mshot_arm_fresh(struct weft__mshot *m,
					   struct weft__worker *me)
{
	m->armed = true;
	m->cancelling = false;
	m->cop.w = me;
	m->cop.ud = weft__io_new_ud(me, m) | WEFT__UD_MSHOT;
	uint64_t ud = m->cop.ud;
	weft__spin_unlock(&m->lock);
	/* no CQE can come before the next submit, which is ours or later */
	struct io_uring_sqe *sqe = weft__io_sqe(me);
	io_uring_sqe_set_data64(sqe, ud);
	me->inflight++;
	WEFT__BUMP(me->m_io_sub, 1); /* metrics: one submission, many CQEs */
	me->io_dirty = true;
	return sqe;
}

weft_task *weft__mshot_seen(struct weft__mshot *m, bool more, bool pressure,
			    uint32_t *seq)
{
	if (!more) {
		m->armed = false;
		m->cancelling = false;
	} else if (pressure && !m->cancelling) {
		m->cancelling = true;
		weft__io_defer_cancel(&m->cop);
	}
	weft_task *f = m->waiter;
	*seq = m->wseq;
	m->waiter = NULL;
	return f;
}

int weft__mshot_wait(struct weft__mshot *m, weft_task *self, unsigned op,
		     int fd)
{
	weft__wait_note(self, WEFT__W_IO, op, (uint32_t)fd); /* for the dump */
	m->wseq = weft__park_begin(self, true);
	m->waiter = self;
	weft__spin_unlock(&m->lock);
	int r = weft__park_wait(self);
	/* the reaper's unlock was its last touch: take the lock ourselves */
	weft__spin_lock(&m->lock);
	if (r != WEFT__R_WOKEN && m->waiter == self)
		m->waiter = NULL;
	return r;
}

int weft__mshot_enter(struct weft__mshot *m)
{
	weft__spin_lock(&m->lock);
	if (m->closing) {
		weft__spin_unlock(&m->lock);
		return -EBADF;
	}
	m->users++;
	return 0;
}

void weft__mshot_leave(struct weft__mshot *m)
{
	weft_task *c = NULL;
	uint32_t seq = 0;
	if (--m->users == 0 && m->closer) {
		c = m->closer;
		seq = m->cseq;
		m->closer = NULL;
	}
	weft__spin_unlock(&m->lock); /* our last touch of m */
	if (c)
		weft__wake(c, seq, WEFT__R_WOKEN);
}

int weft__mshot_stop(struct weft__mshot *m, weft_task *self, int fd,
		     bool drain)
{
	weft__spin_lock(&m->lock);
	if (m->closing) {
		weft__spin_unlock(&m->lock);
		return -EBADF;
	}
	m->closing = true;
	weft_task *f = NULL;
	uint32_t fseq = 0;
	if (m->waiter && m->waiter_plain) {
		/* state, not an op: a receive not yet issued ends too */
		shutdown(fd, SHUT_RD);
	} else if (m->waiter) {
		f = m->waiter;
		fseq = m->wseq;
		m->waiter = NULL;
	}
	while (m->users) {
		m->closer = self;
		m->cseq = weft__park_begin(self, false);
		weft__spin_unlock(&m->lock);
		if (f) {
			weft__wake(f, fseq, WEFT__R_WOKEN);
			f = NULL;
		}
		weft__park_commit(self);
		weft__spin_lock(&m->lock);
	}
	int cut = 0;
	while (drain && m->armed) {
		/* a send in flight (the one op drained: weft_conn_send's): let
		 * it finish, cancellably; its call returned its bytes as sent,
		 * and close(2) would keep them too */
		int r = weft__mshot_wait(m, self, IORING_OP_SEND, fd);
		if (r != WEFT__R_WOKEN) {
			cut = weft__reason_err(r);
			break;
		}
	}
	bool cancel = m->armed && !m->cancelling;
	if (cancel)
		m->cancelling = true;
	weft__spin_unlock(&m->lock);
	if (cancel)
		weft__io_request_cancel(&m->cop);
	weft__spin_lock(&m->lock);
	while (m->armed) {
		/* not cancellable: the kernel must let go of m first */
		m->wseq = weft__park_begin(self, false);
		m->waiter = self;
		weft__spin_unlock(&m->lock);
		weft__park_commit(self);
		weft__spin_lock(&m->lock);
	}
	weft__spin_unlock(&m->lock);
	if (m->cop.w)
		weft__io_unlist(&m->cop);
	return cut;
}

/* ---- weft_listener: multishot accept ------------------------------------- */

#define LST_HIWAT 64 /* queued connections before the accept is paused */

struct weft_listener {
	struct weft__mshot m; /* first: the CQE dispatch casts to it */
	int lfd;
	int err;  /* an accept error, reported once */
	int *q;   /* accepted fds, a ring of cap (grows) */
	unsigned qh, qn, cap;
};

static void listener_cqe(struct weft__worker *w, struct weft__mshot *m,
			 struct io_uring_cqe *cqe)
{
	(void)w;
	struct weft_listener *l = (struct weft_listener *)m;
	int res = cqe->res;
	weft__spin_lock(&m->lock);
	if (res >= 0) {
		if (l->qn == l->cap) {
			/* the kernel went on before the pause took effect */
			unsigned ncap = l->cap * 2;
			int *nq = malloc(ncap * sizeof *nq);
			if (nq) {
				for (unsigned i = 0; i < l->qn; i++)
					nq[i] = l->q[(l->qh + i) % l->cap];
				free(l->q);
				l->q = nq;
				l->qh = 0;
				l->cap = ncap;
			}
		}
		if (l->qn < l->cap)
			l->q[(l->qh + l->qn++) % l->cap] = res;
		else
			close(res); /* out of memory: the peer sees a reset */
	} else if (res != -ECANCELED && !l->err) {
		l->err = res; /* -EMFILE, -ENFILE, ...: ends the multishot */
	}
	uint32_t seq;
	weft_task *f = weft__mshot_seen(m, cqe->flags & IORING_CQE_F_MORE,
					l->qn >= LST_HIWAT, &seq);
	weft__spin_unlock(&m->lock); /* the last touch of l */
	if (f)
		weft__wake_ex(f, seq, WEFT__R_WOKEN, true);
}

weft_listener *weft_listener_open(int lfd, int *err)
{
	int e = 0;
	weft_listener *l = NULL;
	if (lfd < 0)
		e = -EBADF;
	else if (!weft__self(NULL))
		e = -EINVAL;
	else if (!(l = calloc(1, sizeof *l)) ||
		 !(l->q = malloc(LST_HIWAT * 2 * sizeof *l->q))) {
		free(l);
		l = NULL;
		e = -ENOMEM;
	}
	if (err)
		*err = e;
	if (l) {
		l->m.cqe = listener_cqe;
		l->lfd = lfd;
		l->cap = LST_HIWAT * 2;
	}
	return l;
}

int weft_listener_fd(const weft_listener *l)
{
	return l ? l->lfd : -EINVAL;
}

int weft_listener_accept(weft_listener *l, struct sockaddr *sa,
			 socklen_t *len)
{
	struct weft__worker *me;
	weft_task *self = weft__self(&me);
	if (!l || !self)
		return -EINVAL;
	if (sa && !len)
		return -EFAULT;
	int e = weft__io_check(self);
	if (e)
		return e;
	struct weft__mshot *m = &l->m;
	if ((e = weft__mshot_enter(m)))
		return e;
	for (;;) {
		if (m->closing) { /* woken by weft_listener_close */
			weft__mshot_leave(m);
			return -EBADF;
		}
		if (l->qn) {
			int fd = l->q[l->qh];
			l->qh = (l->qh + 1) % l->cap;
			l->qn--;
			weft__mshot_leave(m);
			/* as weft_accept: no Nagle delay (harmless on Unix) */
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
			if (sa && getpeername(fd, sa, len))
				*len = 0;
			return fd;
		}
		if (l->err) {
			e = l->err;
			l->err = 0;
			weft__mshot_leave(m);
			return e;
		}
		if (m->waiter) {
			weft__mshot_leave(m);
			return -EBUSY;
		}
		if (!m->armed) {
			io_uring_prep_multishot_accept(weft__mshot_arm(m, me),
						       l->lfd, NULL, NULL,
						       SOCK_CLOEXEC);
			weft__spin_lock(&m->lock);
			continue; /* the lock was dropped: look again */
		}
		int r = weft__mshot_wait(m, self, IORING_OP_ACCEPT, l->lfd);
		if (r != WEFT__R_WOKEN) {
			weft__mshot_leave(m);
			return weft__reason_err(r); /* a connection stays queued */
		}
		me = weft__worker_self(); /* we may have moved */
	}
}

int weft_listener_close(weft_listener *l)
{
	weft_task *self = weft__self(NULL);
	if (!l || !self)
		return -EINVAL;
	int r = weft__mshot_stop(&l->m, self, l->lfd, false);
	if (r)
		return r;
	for (; l->qn; l->qn--, l->qh = (l->qh + 1) % l->cap)
		close(l->q[l->qh]);
	r = close(l->lfd) ? -errno : 0;
	free(l->q);
	free(l);
	return r;
}
