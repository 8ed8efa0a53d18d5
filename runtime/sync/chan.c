/* chan.c — channels: a ring buffer and two waiter lists under one lock.
 *
 * State (all under c->lock): buf[cap] holding count elements from head;
 * sendq (senders parked with a pointer to their element) and recvq
 * (receivers parked with a pointer to their buffer); closed.
 *
 * Invariants
 *   C1  recvq non-empty => count == 0 (a receiver parks only on an empty
 *       buffer, and every send first hands to a parked receiver).
 *   C2  sendq non-empty => count == cap (a sender parks only when full;
 *       every receive refills the buffer from the oldest parked sender).
 *   C3  closed => sendq empty, recvq empty (close completes them all with
 *       -EPIPE); receivers then drain the buffer.
 * So a rendezvous channel (cap 0) never buffers: a send hands its element
 * straight to a receiver's buffer, or parks until a receiver copies it out.
 *
 * Waits follow the waitq rule (waitq.c): a completer copies the element
 * while it holds the lock and claims the record, then wakes the fiber
 * after unlocking. A fiber woken by cancel or deadline whose record was
 * claimed meanwhile reports success: the element moved.
 *
 * select locks every distinct channel in address order (no deadlock
 * between selects sharing channels), tries the cases from a random start
 * (no case starves), and otherwise queues one record per case, all sharing
 * one claim (struct weft__sel): the first completer wins, the others find
 * the select done and drop its records.
 */
#include <string.h>

#include "waitq.h"

struct weft_chan {
	unsigned lock;
	bool closed;
	size_t cap, esz, head, count;
	struct weft__wlist sendq, recvq;
	char *buf;
};

#define SELECT_MAX 64

weft_chan *weft_chan_new(size_t capacity, size_t elem_size)
{
	if (elem_size == 0 || elem_size > 65536 || capacity > (1u << 24))
		return NULL;
	if (weft__fault(WEFT_FAULT_NOMEM))
		return NULL; /* seeded: as if calloc failed */
	weft_chan *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->cap = capacity;
	c->esz = elem_size;
	if (capacity && !(c->buf = malloc(capacity * elem_size))) {
		free(c);
		return NULL;
	}
	return c;
}

void weft_chan_free(weft_chan *c)
{
	if (!c)
		return;
	weft__spin_lock(&c->lock);
	bool busy = c->sendq.head || c->recvq.head;
	weft__spin_unlock(&c->lock);
	if (busy)
		weft__die("weft_chan_free: fibers still wait on channel %p",
			  (void *)c);
	free(c->buf);
	free(c);
}

size_t weft_chan_len(weft_chan *c)
{
	if (!c)
		return 0;
	weft__spin_lock(&c->lock);
	size_t n = c->count;
	weft__spin_unlock(&c->lock);
	return n;
}

/* the i-th element from head (i <= cap): a compare, not a division */
static inline char *slot(weft_chan *c, size_t i)
{
	size_t k = c->head + i;
	if (k >= c->cap)
		k -= c->cap;
	return c->buf + k * c->esz;
}

/* Elements of a word or two are copied inline, not through a call to
 * memcpy with a size it must branch on. */
static inline void copy_elem(weft_chan *c, void *dst, const void *src)
{
	switch (c->esz) {
	case 4:
		memcpy(dst, src, 4);
		break;
	case 8:
		memcpy(dst, src, 8);
		break;
	case 16:
		memcpy(dst, src, 16);
		break;
	default:
		memcpy(dst, src, c->esz);
	}
}

/* Under the lock. 0 sent, -EPIPE closed, -EAGAIN would block. *wk gets a
 * receiver to wake after unlocking. */
static inline __attribute__((always_inline)) int
send_locked(weft_chan *c, const void *elem, struct weft__wakeup *wk)
{
	if (c->closed)
		return -EPIPE;
	struct weft__waiter *r = c->recvq.head ? weft__wl_claim(&c->recvq)
					       : NULL;
	if (r) {
		copy_elem(c, r->data, elem);
		*wk = weft__complete(r, 0);
		return 0;
	}
	if (c->count < c->cap) {
		copy_elem(c, slot(c, c->count), elem);
		c->count++;
		return 0;
	}
	return -EAGAIN;
}

/* Under the lock. 0 received, -EPIPE closed and empty, -EAGAIN. */
static inline __attribute__((always_inline)) int
recv_locked(weft_chan *c, void *elem, struct weft__wakeup *wk)
{
	if (c->count) {
		copy_elem(c, elem, slot(c, 0));
		if (++c->head == c->cap)
			c->head = 0;
		c->count--;
		/* C2: refill from the oldest parked sender */
		struct weft__waiter *s =
			c->sendq.head ? weft__wl_claim(&c->sendq) : NULL;
		if (s) {
			copy_elem(c, slot(c, c->count), s->data);
			c->count++;
			*wk = weft__complete(s, 0);
		}
		return 0;
	}
	struct weft__waiter *s = weft__wl_claim(&c->sendq);
	if (s) {
		copy_elem(c, elem, s->data);
		*wk = weft__complete(s, 0);
		return 0;
	}
	return c->closed ? -EPIPE : -EAGAIN;
}

static inline __attribute__((always_inline)) int
chan_op(weft_chan *c, void *elem, bool send, bool block)
{
	weft__sim_point(); /* seeded runs: another fiber may get in first */
	if (!c || !elem)
		return -EINVAL;
	struct weft__wakeup wk = {0};
	weft__spin_lock(&c->lock);
	int r = send ? send_locked(c, elem, &wk) : recv_locked(c, elem, &wk);
	if (r != -EAGAIN || !block) {
		weft__spin_unlock(&c->lock);
		weft__wakeup_do(wk);
		return r;
	}
	weft_task *self = weft__self(NULL);
	if (!self) {
		weft__spin_unlock(&c->lock);
		return -EINVAL;
	}
	struct weft__waiter me = {.f = self, .data = elem};
	weft__wait_note(self, send ? WEFT__W_CHAN_SEND : WEFT__W_CHAN_RECV, 0,
			(uintptr_t)c);
	me.seq = weft__park_begin(self, true);
	weft__wl_push(send ? &c->sendq : &c->recvq, &me);
	return weft__wl_wait(&c->lock, send ? &c->sendq : &c->recvq, &me);
}

int weft_chan_send(weft_chan *c, const void *elem)
{
	return chan_op(c, (void *)elem, true, true);
}
int weft_chan_recv(weft_chan *c, void *elem)
{
	return chan_op(c, elem, false, true);
}
int weft_chan_try_send(weft_chan *c, const void *elem)
{
	return chan_op(c, (void *)elem, true, false);
}
int weft_chan_try_recv(weft_chan *c, void *elem)
{
	return chan_op(c, elem, false, false);
}

void weft_chan_close(weft_chan *c)
{
	weft__sim_point();
	if (!c)
		return;
	weft__spin_lock(&c->lock);
	if (!c->closed) {
		c->closed = true;
		/* C3; waking under the lock: close is rare, the lists long */
		struct weft__waiter *w;
		while ((w = weft__wl_claim(&c->recvq)))
			weft__wake_held(w, -EPIPE);
		while ((w = weft__wl_claim(&c->sendq)))
			weft__wake_held(w, -EPIPE);
	}
	weft__spin_unlock(&c->lock);
}

/* ---- select ---------------------------------------------------------------- */

static size_t lock_all(weft_select_case *cs, size_t n, weft_chan **ord)
{
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		weft_chan *c = cs[i].chan;
		size_t j = m;
		bool dup = false;
		for (size_t k = 0; k < m; k++)
			if (ord[k] == c)
				dup = true;
		if (dup)
			continue;
		while (j > 0 && ord[j - 1] > c) {
			ord[j] = ord[j - 1];
			j--;
		}
		ord[j] = c;
		m++;
	}
	for (size_t k = 0; k < m; k++)
		weft__spin_lock(&ord[k]->lock);
	return m;
}

static void unlock_all(weft_chan **ord, size_t m)
{
	for (size_t k = m; k-- > 0;)
		weft__spin_unlock(&ord[k]->lock);
}

int weft_select(weft_select_case *cs, size_t n, int nowait)
{
	weft__sim_point();
	if (!cs || n == 0 || n > SELECT_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!cs[i].chan || !cs[i].elem ||
		    (cs[i].op != WEFT_SEND && cs[i].op != WEFT_RECV))
			return -EINVAL;
	struct weft__worker *w;
	weft_task *self = weft__self(&w);
	weft_chan *ord[SELECT_MAX];
	size_t m = lock_all(cs, n, ord);

	static _Atomic unsigned outside_rng; /* select from a plain thread */
	size_t start = w ? (size_t)(weft__rand(w) % n)
			 : atomic_fetch_add(&outside_rng, 1) % n;
	for (size_t k = 0; k < n; k++) {
		size_t i = (start + k) % n;
		struct weft__wakeup wk = {0};
		int r = cs[i].op == WEFT_SEND
				? send_locked(cs[i].chan, cs[i].elem, &wk)
				: recv_locked(cs[i].chan, cs[i].elem, &wk);
		if (r != -EAGAIN) {
			unlock_all(ord, m);
			weft__wakeup_do(wk);
			cs[i].result = r;
			return (int)i;
		}
	}
	if (nowait || !self) {
		unlock_all(ord, m);
		return nowait ? -EAGAIN : -EINVAL;
	}

	struct weft__sel sel = {0};
	struct weft__waiter rec[SELECT_MAX];
	weft__wait_note(self, WEFT__W_SELECT, 0, n);
	uint32_t seq = weft__park_begin(self, true);
	for (size_t i = 0; i < n; i++) {
		rec[i] = (struct weft__waiter){.f = self, .seq = seq,
					       .data = cs[i].elem, .sel = &sel,
					       .sel_index = (int)i};
		weft__wl_push(cs[i].op == WEFT_SEND ? &cs[i].chan->sendq
						    : &cs[i].chan->recvq,
			      &rec[i]);
	}
	unlock_all(ord, m);
	int r = weft__park_wait(self);

	/* settle: take our records off every list; the claim decides */
	m = lock_all(cs, n, ord);
	for (size_t i = 0; i < n; i++)
		if (rec[i].queued)
			weft__wl_remove(cs[i].op == WEFT_SEND
						? &cs[i].chan->sendq
						: &cs[i].chan->recvq,
					&rec[i]);
	int zero = 0;
	/* acq_rel: against the completers' claims (waitq.c) */
	bool unclaimed = atomic_compare_exchange_strong_explicit(
		&sel.done, &zero, 1, memory_order_acq_rel,
		memory_order_acquire);
	unlock_all(ord, m);
	/* unclaimed and WOKEN cannot be: only a completer that claimed sel
	 * knows our seq (-EINTR would say a wake-up lost its claim) */
	if (unclaimed)
		return r == WEFT__R_WOKEN ? -EINTR : weft__reason_err(r);
	cs[sel.index].result = rec[sel.index].status;
	return sel.index;
}
