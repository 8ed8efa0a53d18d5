/* conn.c — weft_conn: a stream socket with one multishot receive armed.
 *
 * Buffers. Each worker owns one buffer ring (group 0 of its io_uring),
 * set up at its first weft_conn: rt->conn_buffers buffers of
 * rt->conn_buffer_size bytes. Only the owner writes the ring's tail
 * (io_uring_buf_ring_add/advance). A buffer the kernel filled belongs to
 * exactly one conn until its reader has copied it out; a reader on the
 * owner gives it back at once, a reader on another worker through the
 * owner's return list (ret, under ret_lock), which the owner drains at the
 * end of every reap.
 *
 * A conn is a multishot op (mshot.c: armed, waiter, cancel, stop) plus,
 * under the same lock:
 *   head..tail  filled buffers not yet read (linked through pb->next, a
 *               per-bid array of the pbuf of c->m.cop.w, the worker whose
 *               ring it is armed on), npend of them, off bytes of the head
 *               already read;
 *   eof, err    the receive saw the peer close / an error.
 * The reaper (that worker) appends and wakes the waiter; the reader copies
 * out. The closer frees c only after weft__mshot_stop.
 *
 * Arming. A reader that finds nothing to read and no receive armed arms
 * one on the ring of the worker it runs on (so a conn follows its fiber
 * when it was stolen). Only with nothing pending: all its buffers then
 * came from that worker.
 *
 * Back-pressure. When a conn holds CONN_HIWAT unread buffers the reaper
 * cancels its receive (deferred to the end of the reap through the cancel
 * list: it must not prepare SQEs mid-reap); the reader re-arms once it
 * has read them. A receive that found the pool empty ends with -ENOBUFS;
 * its reader then does one plain receive (weft_recv into its own buffer)
 * before it arms again, so a pool held by unread conns neither makes it
 * spin nor keeps its data from it.
 *
 * Sending (weft_conn_send) is a second op of the same kind, c->s, one
 * send at a time: the sender copies into c->sbuf, arms the send
 * (MSG_WAITALL: the kernel finishes a short send itself) on its worker's
 * ring and returns; the send goes to the kernel in the worker's next
 * batched submit, so a server echoing to 1,000 connections makes no
 * syscall per message (weft_send: one send(2) each). The CQE (send_cqe)
 * disarms it, records the first error (sticky) and wakes a sender or
 * closer waiting for it. A sender that finds a send in flight waits;
 * close lets it finish (weft__mshot_stop's drain), then closes the fd.
 *
 * Fixed files. With its buffer pool each worker registers a sparse table
 * of FIXED_FILES slots in its ring. A conn's first receive arming puts
 * its socket in a free slot of that worker's table (one io_uring_register
 * call, on the ring's own thread as SINGLE_ISSUER requires), and every
 * receive or send the conn arms on that worker names the slot
 * (IOSQE_FIXED_FILE): the kernel then skips the fd table and the file's
 * reference count, an atomic in a multithreaded process, per SQE (`fget`
 * was 2-2.5% of the echo server's CPU at 1,000 connections). On another
 * worker (the fiber was stolen) the conn uses its fd. The slot holds a
 * reference to the socket: close clears it before close(2), or, from
 * another worker, hands it to the owner (rel) and wakes it; the owner
 * clears it at the end of its next reap, and only then does the socket
 * close. A full table (more than FIXED_FILES conns on one worker) or a
 * kernel without sparse tables: the fd, as before.
 */
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../runtime/sync/waitq.h"
#include "io.h"
#include "weft/conn.h"
#include "weft/net.h"

#define CONN_HIWAT 16
#define NO_BID 0xffffu
#define FIXED_FILES 4096 /* slots of a worker's fixed-file table */

struct weft__pbuf {
	struct io_uring_buf_ring *br;
	size_t br_bytes;
	char *mem;
	size_t mem_bytes;
	unsigned n, size, mask;
	uint16_t *next; /* pending-list links, by bid (under the conn's lock) */
	uint32_t *len;  /* bytes filled, by bid (idem) */
	unsigned ret_lock; /* spin: ret, nret */
	uint16_t *ret;
	unsigned nret;
	_Atomic int has_ret; /* hint: nret > 0 */
	_Atomic int starved; /* a receive ended with -ENOBUFS */
	/* the ring's fixed-file table ("Fixed files" above): free slots
	 * (owner only; none if the table could not be registered), and
	 * slots that closers on other workers gave back (rel, under
	 * rel_lock) for the owner to clear */
	uint32_t *ft_free;
	unsigned ft_nfree;
	unsigned rel_lock;
	uint32_t *ft_rel;
	unsigned ft_nrel;
	_Atomic int has_rel; /* hint: ft_nrel > 0 */
};

struct weft_conn {
	struct weft__mshot m; /* first: the CQE dispatch casts to it */
	int fd;
	bool plain;    /* no buffer ring or multishot on this kernel: weft_recv */
	bool got_data; /* a receive has brought data (under m.lock) */
	bool nomulti;  /* the multishot receive was refused (under m.lock) */
	bool nobufs;   /* the last receive ended: the pool was empty (idem) */
	bool eof;
	int err;
	uint16_t head, tail;
	unsigned npend;
	uint32_t off;
	/* the send side (weft_conn_send), under s.lock: one send in flight
	 * (s.armed) of slen bytes from sbuf (scap allocated); serr the first
	 * send error, sticky; serr_told: a call has returned it */
	struct weft__mshot s;
	char *sbuf;
	size_t scap, slen;
	int serr;
	bool serr_told;
	bool s_checked; /* the fd was found to be a socket (first send) */
	/* the socket's slot in fw's fixed-file table; fw NULL: none. Set
	 * once, by the receive side's first arming (release: the send side
	 * reads it without the receive side's lock) */
	_Atomic(struct weft__worker *) fw;
	unsigned fslot;
};

/* ---- the buffer ring (owner only, except give_back) ---------------------- */

#define HUGE_2M (2u << 20)

/* The pool's memory: 2 MiB-aligned and in transparent huge pages where
 * it is that big. The kernel takes the buffers in ring order, so at 1,000
 * connections every message lands on another 4 KiB page: one TLB entry
 * per message, and a nested page walk on a VM (the copy into the buffer,
 * `_copy_to_iter`, went from 2.8% to 1.9% of the echo server's CPU).
 * Huge pages commit 2 MiB at a time; the pool is used whole anyway. */
static char *pool_map(size_t bytes)
{
	int fl = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	if (bytes < HUGE_2M) {
		void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, fl, -1, 0);
		return p == MAP_FAILED ? NULL : p;
	}
	char *p = mmap(NULL, bytes + HUGE_2M, PROT_READ | PROT_WRITE, fl, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	size_t lead = (HUGE_2M - ((uintptr_t)p & (HUGE_2M - 1))) & (HUGE_2M - 1);
	if (lead)
		munmap(p, lead);
	munmap(p + lead + bytes, HUGE_2M - lead);
	p += lead;
	madvise(p, bytes, MADV_HUGEPAGE); /* advice: EINVAL without THP */
	return p;
}

static struct weft__pbuf *pbuf_get(struct weft__worker *w)
{
	if (w->pbuf || w->pbuf_failed)
		return w->pbuf;
	struct weft__pbuf *pb = calloc(1, sizeof *pb);
	if (!pb)
		return NULL; /* try again next time */
	pb->n = w->rt->conn_buffers;
	pb->size = w->rt->conn_buffer_size;
	pb->mask = (unsigned)io_uring_buf_ring_mask(pb->n);
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	pb->br_bytes = (pb->n * sizeof(struct io_uring_buf) + pg - 1) & ~(pg - 1);
	pb->mem_bytes = (size_t)pb->n * pb->size;
	pb->br = mmap(NULL, pb->br_bytes, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	pb->mem = pool_map(pb->mem_bytes);
	pb->next = malloc(pb->n * sizeof *pb->next);
	pb->len = malloc(pb->n * sizeof *pb->len);
	pb->ret = malloc(pb->n * sizeof *pb->ret);
	int r = -ENOMEM;
	if (pb->br != MAP_FAILED && pb->mem && pb->next &&
	    pb->len && pb->ret) {
		struct io_uring_buf_reg reg;
		memset(&reg, 0, sizeof reg);
		reg.ring_addr = (uint64_t)(uintptr_t)pb->br;
		reg.ring_entries = pb->n;
		reg.bgid = 0;
		r = io_uring_register_buf_ring(&w->ring, &reg, 0);
	}
	if (r) {
		if (pb->br != MAP_FAILED)
			munmap(pb->br, pb->br_bytes);
		if (pb->mem)
			munmap(pb->mem, pb->mem_bytes);
		free(pb->next);
		free(pb->len);
		free(pb->ret);
		free(pb);
		if (r != -ENOMEM)
			w->pbuf_failed = true; /* the kernel said no: for good */
		return NULL;
	}
	/* optional: without it, conns use their fds */
	pb->ft_free = malloc(FIXED_FILES * sizeof *pb->ft_free);
	pb->ft_rel = malloc(FIXED_FILES * sizeof *pb->ft_rel);
	if (pb->ft_free && pb->ft_rel &&
	    io_uring_register_files_sparse(&w->ring, FIXED_FILES) == 0) {
		for (unsigned i = 0; i < FIXED_FILES; i++)
			pb->ft_free[i] = FIXED_FILES - 1 - i; /* 0 first */
		pb->ft_nfree = FIXED_FILES;
	}
	io_uring_buf_ring_init(pb->br);
	for (unsigned i = 0; i < pb->n; i++)
		io_uring_buf_ring_add(pb->br, pb->mem + (size_t)i * pb->size,
				      pb->size, (unsigned short)i, (int)pb->mask,
				      (int)i);
	io_uring_buf_ring_advance(pb->br, (int)pb->n);
	w->pbuf = pb;
	return pb;
}

static void recycle(struct weft__pbuf *pb, const uint16_t *bids, unsigned k)
{
	for (unsigned i = 0; i < k; i++)
		io_uring_buf_ring_add(pb->br,
				      pb->mem + (size_t)bids[i] * pb->size,
				      pb->size, bids[i], (int)pb->mask, (int)i);
	/* release store of the tail: the kernel sees the entries first */
	io_uring_buf_ring_advance(pb->br, (int)k);
}

/* Give buffer bid of w's pool back, from worker me. */
static void give_back(struct weft__worker *w, uint16_t bid,
		      struct weft__worker *me)
{
	struct weft__pbuf *pb = w->pbuf;
	if (me == w) {
		recycle(pb, &bid, 1);
		return;
	}
	weft__spin_lock(&pb->ret_lock);
	pb->ret[pb->nret++] = bid;
	weft__spin_unlock(&pb->ret_lock);
	/* seq_cst RMW, then seq_cst load of starved: against the owner's
	 * seq_cst store of starved, then seq_cst load of has_ret (a Dekker
	 * pair: with weaker orders both could read the old value, on x86
	 * too, and the owner would sleep on an empty pool while buffers wait
	 * here); the RMW also releases the push above to the owner */
	if (!atomic_exchange(&pb->has_ret, 1) && atomic_load(&pb->starved))
		weft__ring_wake(w); /* it may be parked with an empty pool */
}

static void slot_clear(struct weft__worker *w, uint32_t slot)
{
	static const int none = -1;
	/* synchronous: a later registration may reuse the slot at once */
	io_uring_register_files_update(&w->ring, slot, (int *)&none, 1);
	w->pbuf->ft_free[w->pbuf->ft_nfree++] = slot;
}

/* The owner: clear the slots closers on other workers gave back. */
static void slots_drain(struct weft__worker *w, struct weft__pbuf *pb)
{
	atomic_store_explicit(&pb->has_rel, 0, memory_order_relaxed);
	for (;;) {
		uint32_t slot;
		weft__spin_lock(&pb->rel_lock);
		bool any = pb->ft_nrel != 0;
		if (any)
			slot = pb->ft_rel[--pb->ft_nrel];
		weft__spin_unlock(&pb->rel_lock);
		if (!any)
			break;
		slot_clear(w, slot);
	}
}

/* Give c's slot back (weft_conn_close, after both sides stopped). */
static void slot_release(weft_conn *c, struct weft__worker *me)
{
	struct weft__worker *w = atomic_load_explicit(&c->fw, memory_order_acquire);
	if (!w)
		return;
	if (w == me) {
		slot_clear(w, c->fslot);
		return;
	}
	struct weft__pbuf *pb = w->pbuf;
	weft__spin_lock(&pb->rel_lock);
	pb->ft_rel[pb->ft_nrel++] = c->fslot;
	weft__spin_unlock(&pb->rel_lock);
	/* seq_cst: the owner's reap loads it after our push; the wake-up
	 * makes a parked owner reap (the socket closes only then) */
	atomic_store(&pb->has_rel, 1);
	weft__ring_wake(w);
}

/* The slot for an SQE of c on me's ring, or -1 (use the fd). register:
 * the receive side's arming (one at a time), which may take a free slot. */
static int slot_get(weft_conn *c, struct weft__worker *me, bool register_)
{
	struct weft__worker *w = atomic_load_explicit(&c->fw, memory_order_acquire);
	if (w == me)
		return (int)c->fslot;
	struct weft__pbuf *pb = me->pbuf;
	if (w || !register_ || !pb || !pb->ft_nfree)
		return -1;
	uint32_t slot = pb->ft_free[pb->ft_nfree - 1];
	if (io_uring_register_files_update(&me->ring, slot, &c->fd, 1) != 1)
		return -1;
	pb->ft_nfree--;
	c->fslot = slot;
	atomic_store_explicit(&c->fw, me, memory_order_release);
	return (int)slot;
}

static void sqe_file(struct io_uring_sqe *sqe, int slot)
{
	if (slot >= 0) {
		sqe->fd = slot;
		sqe->flags |= IOSQE_FIXED_FILE;
	}
}

/* The owner, at the end of each reap: clear the slots other workers gave
 * back, and take back the buffers their readers read. */
void weft__pbuf_drain(struct weft__worker *w)
{
	struct weft__pbuf *pb = w->pbuf;
	if (atomic_load(&pb->has_rel))
		slots_drain(w, pb);
	/* seq_cst: the owner's half of the pair in give_back */
	if (!atomic_load(&pb->has_ret))
		return;
	atomic_store_explicit(&pb->has_ret, 0, memory_order_relaxed);
	uint16_t bids[64];
	for (;;) {
		unsigned k = 0;
		weft__spin_lock(&pb->ret_lock);
		while (pb->nret && k < 64)
			bids[k++] = pb->ret[--pb->nret];
		weft__spin_unlock(&pb->ret_lock);
		if (!k)
			break;
		recycle(pb, bids, k);
		atomic_store_explicit(&pb->starved, 0, memory_order_relaxed);
	}
}

/* After io_uring_queue_exit: the kernel no longer writes the buffers. */
void weft__pbuf_fini(struct weft__worker *w)
{
	struct weft__pbuf *pb = w->pbuf;
	w->pbuf = NULL;
	w->pbuf_failed = false;
	if (!pb)
		return;
	munmap(pb->br, pb->br_bytes);
	munmap(pb->mem, pb->mem_bytes);
	free(pb->next);
	free(pb->len);
	free(pb->ret);
	free(pb->ft_free);
	free(pb->ft_rel);
	free(pb);
}

/* ---- the reaper's side ----------------------------------------------------- */

static void conn_cqe(struct weft__worker *w, struct weft__mshot *m,
		     struct io_uring_cqe *cqe)
{
	struct weft_conn *c = (struct weft_conn *)m;
	struct weft__pbuf *pb = w->pbuf;
	int res = cqe->res;
	weft__spin_lock(&m->lock);
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		if (res > 0) {
			pb->len[bid] = (uint32_t)res;
			pb->next[bid] = NO_BID;
			if (c->npend++)
				pb->next[c->tail] = bid;
			else
				c->head = bid;
			c->tail = bid;
		} else {
			recycle(pb, &bid, 1);
		}
	}
	if (res == 0)
		c->eof = true;
	else if (res == -ENOBUFS) {
		/* seq_cst: then the drain's load of has_ret (give_back) */
		atomic_store(&pb->starved, 1);
		c->nobufs = true;
	}
	else if (res == -EINVAL && !c->got_data)
		c->nomulti = true; /* buffer rings, no multishot receive (5.19) */
	else if (res < 0 && res != -ECANCELED && !c->err)
		c->err = res;
	if (res > 0)
		c->got_data = true;
	uint32_t seq;
	weft_task *f = weft__mshot_seen(m, cqe->flags & IORING_CQE_F_MORE,
					c->npend >= CONN_HIWAT, &seq);
	weft__spin_unlock(&m->lock); /* the last touch of c */
	if (f)
		weft__wake_ex(f, seq, WEFT__R_WOKEN, true);
}

/* A send's completion (the reaper of the worker it was armed on). With
 * MSG_WAITALL the kernel retries a short send itself: a result short of
 * slen means the connection failed after part of it (SO_ERROR says why). */
static void send_cqe(struct weft__worker *w, struct weft__mshot *m,
		     struct io_uring_cqe *cqe)
{
	(void)w;
	struct weft_conn *c =
		(struct weft_conn *)((char *)m - offsetof(struct weft_conn, s));
	int res = cqe->res;
	weft__spin_lock(&m->lock);
	if (res >= 0 && (size_t)res < c->slen) {
		int e = 0;
		socklen_t len = sizeof e;
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &len);
		res = e ? -e : -EPIPE;
	}
	if (res < 0 && !c->serr)
		c->serr = res; /* -ECANCELED only from weft_conn_close */
	uint32_t seq;
	weft_task *f = weft__mshot_seen(m, false, false, &seq);
	weft__spin_unlock(&m->lock); /* the last touch of c */
	if (f)
		weft__wake_ex(f, seq, WEFT__R_WOKEN, true);
}

/* ---- the API --------------------------------------------------------------- */

weft_conn *weft_conn_open(int fd, int *err)
{
	int e = 0;
	weft_conn *c = NULL;
	if (fd < 0)
		e = -EBADF;
	else if (!weft__self(NULL))
		e = -EINVAL;
	else if (!(c = calloc(1, sizeof *c)))
		e = -ENOMEM;
	if (err)
		*err = e;
	if (c) {
		c->m.cqe = conn_cqe;
		c->s.cqe = send_cqe;
		c->fd = fd;
	}
	return c;
}

int weft_conn_fd(const weft_conn *c)
{
	return c ? c->fd : -EINVAL;
}

/* Arm the multishot receive on me's ring. Called with the lock held, not
 * armed and nothing pending; returns with it held. false: no buffer ring
 * here (c->plain is set if the kernel refused it for good). */
static bool arm(weft_conn *c, struct weft__worker *me)
{
	if (!pbuf_get(me)) {
		if (me->pbuf_failed)
			c->plain = true;
		return false;
	}
	struct io_uring_sqe *sqe = weft__mshot_arm(&c->m, me);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe_file(sqe, slot_get(c, me, true));
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 0;
	weft__spin_lock(&c->m.lock);
	return true;
}

/* Copy up to n pending bytes into buf (lock held, npend > 0). */
static size_t take(weft_conn *c, char *buf, size_t n, struct weft__worker *me)
{
	struct weft__worker *w = c->m.cop.w;
	struct weft__pbuf *pb = w->pbuf;
	size_t got = 0;
	while (c->npend && got < n) {
		uint16_t bid = c->head;
		size_t k = pb->len[bid] - c->off;
		if (k > n - got)
			k = n - got;
		memcpy(buf + got, pb->mem + (size_t)bid * pb->size + c->off, k);
		got += k;
		c->off += (uint32_t)k;
		if (c->off == pb->len[bid]) {
			c->head = pb->next[bid];
			c->npend--;
			c->off = 0;
			give_back(w, bid, me);
		}
	}
	return got;
}

/* One plain receive into buf (weft_recv), with nothing armed. Called
 * inside the call (weft__mshot_enter) with the lock held; leaves it. The
 * reader is marked as c's waiter meanwhile (waiter_plain), so that a
 * second reader gets -EBUSY as it does while one waits on the multishot
 * receive (with nothing armed no completion can come to take the mark),
 * and weft_conn_close ends this receive by shutdown(2) (mshot.c). */
static ssize_t plain_recv(weft_conn *c, weft_task *self, void *buf, size_t n)
{
	if (c->m.waiter) {
		weft__mshot_leave(&c->m);
		return -EBUSY;
	}
	c->m.waiter = self;
	c->m.waiter_plain = true;
	weft__spin_unlock(&c->m.lock);
	ssize_t got = weft_recv(c->fd, buf, n, 0);
	weft__spin_lock(&c->m.lock);
	c->m.waiter = NULL;
	c->m.waiter_plain = false;
	if (got <= 0 && c->m.closing)
		got = -EBADF; /* its end of file was the close's shutdown */
	weft__mshot_leave(&c->m);
	return got;
}

ssize_t weft_conn_recv(weft_conn *c, void *buf, size_t n)
{
	struct weft__worker *me;
	weft_task *self = weft__self(&me);
	if (!c || !self)
		return -EINVAL;
	if (!buf && n)
		return -EFAULT;
	int e;
	if (c->plain) {
		if ((e = weft__mshot_enter(&c->m)))
			return e;
		return plain_recv(c, self, buf, n);
	}
	if ((e = weft__io_check(self)))
		return e;
	if (!n)
		return 0;
	if ((e = weft__mshot_enter(&c->m)))
		return e;
	for (;;) {
		if (c->m.closing) { /* woken by weft_conn_close */
			weft__mshot_leave(&c->m);
			return -EBADF;
		}
		if (c->npend) {
			size_t got = take(c, buf, n, me);
			weft__mshot_leave(&c->m);
			return (ssize_t)got;
		}
		if (c->err) {
			e = c->err;
			c->err = 0;
			c->eof = true; /* as recv(2): the error once, then 0 */
			weft__mshot_leave(&c->m);
			return e;
		}
		if (c->eof) {
			weft__mshot_leave(&c->m);
			return 0;
		}
		if (c->m.waiter) {
			weft__mshot_leave(&c->m);
			return -EBUSY;
		}
		if (c->nomulti && !c->m.armed) {
			c->plain = true; /* from now on: weft_recv */
			return plain_recv(c, self, buf, n);
		}
		if (!c->m.armed && c->nobufs) {
			/* The last receive found the pool empty (other conns
			 * hold every buffer unread). Arming again would end
			 * the same way at once, before any data comes (the
			 * kernel picks a buffer first): a reader spun so, 60k+
			 * submissions in 200 ms. One plain receive into buf
			 * instead: it waits for data without a pool buffer,
			 * and however long the others keep theirs; the next
			 * call arms again. */
			c->nobufs = false;
			return plain_recv(c, self, buf, n);
		}
		if (!c->m.armed) {
			if (!arm(c, me)) /* no buffer ring (for now) */
				return plain_recv(c, self, buf, n);
			continue; /* the lock was dropped: look again */
		}
		int r = weft__mshot_wait(&c->m, self, IORING_OP_RECV, c->fd);
		if (r != WEFT__R_WOKEN) {
			weft__mshot_leave(&c->m);
			return weft__reason_err(r); /* data stays queued */
		}
		me = weft__worker_self(); /* we may have moved */
	}
}

#define SBUF_MIN 256
#define SBUF_MAX (64 * 1024) /* a longer send goes in pieces of this */

/* Copy the next piece of buf into c's send buffer and arm its send on me's
 * ring (lock held, !s.armed; dropped around the SQE and taken again, as
 * weft__mshot_arm does). Returns the bytes taken, or -ENOMEM. */
static ssize_t send_arm(weft_conn *c, struct weft__worker *me,
			const char *buf, size_t n)
{
	size_t k = n < SBUF_MAX ? n : SBUF_MAX;
	if (k > c->scap) {
		size_t cap = c->scap ? c->scap : SBUF_MIN;
		while (cap < k)
			cap *= 2;
		char *nb = realloc(c->sbuf, cap);
		if (!nb)
			return -ENOMEM;
		c->sbuf = nb;
		c->scap = cap;
	}
	memcpy(c->sbuf, buf, k);
	c->slen = k;
	struct io_uring_sqe *sqe = weft__mshot_arm_fresh(&c->s, me);
	/* liburing's prep leaves user_data alone; it goes in the worker's
	 * next batched submit */
	io_uring_prep_send(sqe, c->fd, c->sbuf, k, MSG_NOSIGNAL | MSG_WAITALL);
	sqe_file(sqe, slot_get(c, me, false));
	weft__spin_lock(&c->s.lock);
	return (ssize_t)k;
}

ssize_t weft_conn_send(weft_conn *c, const void *buf, size_t n)
{
	struct weft__worker *me;
	weft_task *self = weft__self(&me);
	if (!c || !self)
		return -EINVAL;
	if (!buf && n)
		return -EFAULT;
	if (weft__fault(WEFT_FAULT_RESET)) /* seeded runs (weft/sim.h) */
		return -ECONNRESET;
	int e = weft__io_check(self);
	if (e)
		return e;
	struct weft__mshot *m = &c->s;
	if ((e = weft__mshot_enter(m)))
		return e;
	if (!c->s_checked && n) {
		/* once per conn: a send that fails at once (not a socket, fd
		 * not open) says so now, as send(2) would, not after returning
		 * the count (the error stays, as any send error) */
		int type;
		socklen_t len = sizeof type;
		if (getsockopt(c->fd, SOL_SOCKET, SO_TYPE, &type, &len) && !c->serr)
			c->serr = -errno;
		c->s_checked = true;
	}
	size_t done = 0;
	ssize_t r = 0;
	for (;;) {
		if (m->closing) { /* woken by weft_conn_close */
			r = -EBADF;
			break;
		}
		if (c->serr) { /* sticky, like a broken pipe */
			r = c->serr;
			c->serr_told = true;
			break;
		}
		if (done == n)
			break;
		if (!m->armed) {
			if ((r = send_arm(c, me, (const char *)buf + done,
					  n - done)) < 0)
				break;
			done += (size_t)r;
			r = 0;
			continue; /* the lock was dropped: look again */
		}
		if (m->waiter) { /* another sender waits for this send */
			r = -EBUSY;
			break;
		}
		int pr = weft__mshot_wait(m, self, IORING_OP_SEND, c->fd);
		if (pr != WEFT__R_WOKEN) {
			r = weft__reason_err(pr);
			break;
		}
		me = weft__worker_self(); /* we may have moved */
	}
	weft__mshot_leave(m);
	/* what was taken is sent (or its failure reported later) */
	return done ? (ssize_t)done : r;
}

int weft_conn_close(weft_conn *c)
{
	struct weft__worker *me;
	weft_task *self = weft__self(&me);
	if (!c || !self)
		return -EINVAL;
	/* a reader inside weft_conn_recv returns -EBADF (mshot.c, "stop") */
	int r = weft__mshot_stop(&c->m, self, c->fd, false);
	if (r)
		return r;
	/* a sender inside weft_conn_send returns; the send in flight is
	 * let finish (cut short only if we are cancelled or time out) */
	int cut = weft__mshot_stop(&c->s, self, c->fd, true);
	me = weft__worker_self();
	struct weft__worker *w = c->m.cop.w;
	for (; c->npend; c->npend--) {
		uint16_t bid = c->head;
		c->head = w->pbuf->next[bid];
		give_back(w, bid, me);
	}
	slot_release(c, me); /* before close(2): the slot holds the socket */
	r = close(c->fd) ? -errno : 0;
	if (cut)
		r = cut;
	else if (c->serr && !c->serr_told)
		r = c->serr; /* a send failed after its call returned */
	free(c->sbuf);
	free(c);
	return r;
}
