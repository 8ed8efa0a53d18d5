/* deque.c — the per-worker run queue: a bounded ring, stealable by halves.
 *
 * Shape (after Tokio's multi-thread local queue; our own code):
 *
 *   buf[CAP]   tasks; slot i lives at buf[i & (CAP-1)], indices wrap at 2^32
 *   tail       next slot the owner writes. Written only by the owner.
 *   head       two 32-bit indices packed in one word, changed only by CAS:
 *                real  = next slot the owner (or a thief) takes
 *                steal = first slot still being copied by a thief;
 *                        steal == real when no steal is in flight
 *
 * Invariants
 *   I1  steal <= real <= tail (mod 2^32), and tail - steal <= CAP.
 *   I2  Slots [real, tail) hold runnable tasks nobody has claimed.
 *       Slots [steal, real) are claimed by the one thief in flight, which
 *       still reads them; the owner must not overwrite them (push checks
 *       tail - steal, not tail - real).
 *   I3  At most one thief at a time: a thief claims only when steal == real.
 *
 * Protocol
 *   push (owner): write buf[tail], then store tail+1 with release, so a thief
 *     that loads tail with acquire sees the task pointer it will copy.
 *     If full: when no thief is in flight, move half the ring to the global
 *     queue in one CAS of head (one lock round trip for CAP/2 tasks, not one
 *     per task); while a thief is in flight, the task alone goes there.
 *   pop (owner): FIFO from real, by CAS on head (thieves race for it).
 *   steal (thief): claim half of [real, tail) by CAS real forward (steal
 *     stays), copy the claimed slots into its own ring, then CAS steal up to
 *     real to release them. The owner may pop past the claimed range
 *     meanwhile; that only moves real.
 *
 * Orders: every CAS on head is acq_rel. Acquire: the owner's push must see
 * a thief's release of slots before reusing them (the thief's copy reads
 * happen-before the owner's overwrite). Release: a thief's claim orders its
 * earlier reads of its own ring. Thieves load tail with acquire, pairing
 * with the owner's release store in push.
 *
 * Rejected: Chase–Lev (Lê et al. 2013 gives its proof for weak memory).
 * Its owner end is LIFO, which makes weft_yield re-run the yielder and
 * starves the rest, and a batch steal there races with the owner's plain
 * pop of the last elements. We keep a FIFO ring for fairness and get the
 * fork-join locality of LIFO from the separate LIFO slot (sched.c).
 */
#include "internal.h"

#define MASK (WEFT_DEQUE_CAP - 1u)

static inline uint64_t pack(uint32_t steal, uint32_t real)
{
	return ((uint64_t)steal << 32) | real;
}
static inline uint32_t hi(uint64_t h) { return (uint32_t)(h >> 32); }
static inline uint32_t lo(uint64_t h) { return (uint32_t)h; }

void weft__dq_init(struct weft__deque *dq)
{
	atomic_init(&dq->head, 0);
	atomic_init(&dq->tail, 0);
}

/* Move CAP/2 tasks from the head plus t to the global queue. Fails (false)
 * when a thief got in first; the caller then retries the plain push. */
static bool push_overflow(struct weft__deque *dq, weft_task *t, uint32_t real,
			  uint32_t tail, struct weft__inject *q)
{
	const uint32_t n = WEFT_DEQUE_CAP / 2;
	uint64_t expect = pack(real, real);

	if (tail - real != WEFT_DEQUE_CAP)
		return false;
	/* acq_rel: claims the slots against thieves (pairs with their claim
	 * CAS); the slots were written by us, no acquire needed for them. */
	if (!atomic_compare_exchange_strong_explicit(&dq->head, &expect,
						     pack(real + n, real + n),
						     memory_order_acq_rel,
						     memory_order_acquire))
		return false;
	weft_task *first = dq->buf[real & MASK], *last = first;
	for (uint32_t i = 1; i < n; i++) {
		weft_task *x = dq->buf[(real + i) & MASK];
		last->next = x;
		last = x;
	}
	last->next = t;
	weft__inject_push(q, first, t, n + 1);
	return true;
}

void weft__dq_push(struct weft__deque *dq, weft_task *t,
		   struct weft__inject *overflow)
{
	for (;;) {
		/* acquire: pairs with a thief's release of [steal, real) */
		uint64_t h = atomic_load_explicit(&dq->head,
						  memory_order_acquire);
		/* relaxed: only we write tail */
		uint32_t tail = atomic_load_explicit(&dq->tail,
						     memory_order_relaxed);
		if (tail - hi(h) < WEFT_DEQUE_CAP) {
			dq->buf[tail & MASK] = t;
			/* release: pairs with the thief's acquire load of tail
			 * in steal; publishes buf[tail] */
			atomic_store_explicit(&dq->tail, tail + 1,
					      memory_order_release);
			return;
		}
		if (hi(h) != lo(h)) {
			/* a thief is copying: it will free room, but we
			 * cannot wait for it */
			t->next = NULL;
			weft__inject_push(overflow, t, t, 1);
			return;
		}
		if (push_overflow(dq, t, lo(h), tail, overflow))
			return;
	}
}

weft_task *weft__dq_pop(struct weft__deque *dq)
{
	/* acquire: pairs with thieves' acq_rel CAS (we read their updates
	 * of real/steal to stay off claimed slots) */
	uint64_t h = atomic_load_explicit(&dq->head, memory_order_acquire);
	for (;;) {
		uint32_t steal = hi(h), real = lo(h);
		uint32_t tail = atomic_load_explicit(&dq->tail,
						     memory_order_relaxed);
		if (real == tail)
			return NULL;
		uint32_t nreal = real + 1;
		uint64_t next = steal == real ? pack(nreal, nreal)
					      : pack(steal, nreal);
		/* acq_rel: races with thieves' claim CAS */
		if (atomic_compare_exchange_weak_explicit(
			    &dq->head, &h, next, memory_order_acq_rel,
			    memory_order_acquire))
			return dq->buf[real & MASK];
	}
}

weft_task *weft__dq_steal(struct weft__deque *src, struct weft__deque *dst)
{
	/* relaxed: dst is ours */
	uint32_t dtail = atomic_load_explicit(&dst->tail, memory_order_relaxed);
	uint64_t dh = atomic_load_explicit(&dst->head, memory_order_acquire);
	if (dtail - hi(dh) > WEFT_DEQUE_CAP / 2)
		return NULL; /* no room for half a ring */

	/* acquire: pairs with other thieves' release of their claim */
	uint64_t prev = atomic_load_explicit(&src->head, memory_order_acquire);
	uint32_t steal, real, n;
	for (;;) {
		steal = hi(prev);
		real = lo(prev);
		if (steal != real)
			return NULL; /* another thief is in flight (I3) */
		/* acquire: pairs with the owner's release store in push, so
		 * buf[real .. tail) are visible */
		uint32_t stail = atomic_load_explicit(&src->tail,
						      memory_order_acquire);
		n = stail - real;
		n -= n / 2;
		if (n > WEFT_DEQUE_CAP / 2)
			n = WEFT_DEQUE_CAP / 2;
		if (n == 0)
			return NULL;
		/* acq_rel: the claim; pairs with the owner's pop CAS */
		if (atomic_compare_exchange_weak_explicit(
			    &src->head, &prev, pack(steal, real + n),
			    memory_order_acq_rel, memory_order_acquire))
			break;
	}
	for (uint32_t i = 0; i < n; i++)
		dst->buf[(dtail + i) & MASK] = src->buf[(steal + i) & MASK];

	/* release the claimed slots: steal catches up with real */
	prev = pack(steal, real + n);
	for (;;) {
		uint32_t r = lo(prev);
		/* acq_rel, release half: our reads of buf above happen-before
		 * the owner reuses those slots (its push loads head with
		 * acquire) */
		if (atomic_compare_exchange_weak_explicit(
			    &src->head, &prev, pack(r, r),
			    memory_order_acq_rel, memory_order_acquire))
			break;
		if (hi(prev) != steal)
			weft__die("deque: steal index changed under a thief");
	}

	n--;
	weft_task *ret = dst->buf[(dtail + n) & MASK];
	if (n)
		/* release: pairs with thieves stealing from dst */
		atomic_store_explicit(&dst->tail, dtail + n,
				      memory_order_release);
	return ret;
}

unsigned weft__dq_len(struct weft__deque *dq)
{
	/* relaxed snapshot: a hint for idle checks and metrics */
	uint64_t h = atomic_load_explicit(&dq->head, memory_order_relaxed);
	uint32_t tail = atomic_load_explicit(&dq->tail, memory_order_relaxed);
	return tail - lo(h);
}
