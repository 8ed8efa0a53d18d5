/* deque.c — the per-worker run queue: a bounded ring whose three indices
 * live in one atomic word, stealable by halves.
 *
 *   buf[CAP]   slot i lives at buf[i & (CAP-1)]; indices count modulo 2^21
 *   word       three 21-bit indices, changed only by CAS of the whole word:
 *                steal  first slot a thief is still copying (== real when
 *                       no steal is in flight)
 *                real   oldest queued task (the front)
 *                tail   one past the newest queued task (the back)
 *
 * Invariants
 *   I1  steal <= real <= tail and tail - steal <= CAP (modular distances).
 *   I2  [real, tail) are queued tasks nobody has claimed; [steal, real) are
 *       claimed by the one thief in flight, which is still copying them.
 *   I3  A slot is read only after the CAS that grants it (owner pop, thief
 *       claim) and written only before the CAS that publishes it (push), and
 *       only while nobody may read it (outside [steal, tail)).
 *   I4  At most one thief at a time (a claim needs steal == real).
 *
 * Operations (all one CAS on word, retried on any change)
 *   push_back   owner   write buf[tail]; tail+1          (spawn, wake)
 *   pop_back    owner   tail-1; read buf[tail-1]         (LIFO: run newest)
 *   push_front  owner   write buf[real-1]; steal=real=real-1  (yield: after
 *                       everything queued; needs no thief in flight)
 *   pop_front   owner   real+1; read buf[real]           (fairness: oldest)
 *   steal       thief   claim real += ceil(n/2); copy; then steal = real
 * Because the thief computes its half from the same word it swaps, a
 * concurrent pop_back by the owner makes the claim fail and retry: the
 * claim can never cover a slot the owner took. That race is why the
 * Chase–Lev deque (Lê et al. 2013) was rejected here: its owner pops
 * without a CAS, which is only safe when thieves take one task at a time,
 * and it cannot put a yielder at the front.
 *
 * Solo: a runtime of one worker has no thieves, and only the owner ever
 * writes its ring (other threads push to the global queue). There the CAS
 * is a plain compare and release store (dq->solo, set at start): the same
 * results, step for step, without the locked instruction that dominated a
 * yield (35 -> 25 ns per weft_yield on the 2-core CI machine, where an
 * uncontended lock cmpxchg costs ~5 ns). The compare stays: push_slow
 * retries a spill with the word it read before, and must see it fail.
 *
 * Orders: each CAS is acq_rel. Release publishes slot writes (push) and the
 * end of a thief's reads (its final CAS); acquire makes a claimant see the
 * pushes it claims and lets the owner reuse slots a thief has released.
 * All CASes on one word form one release sequence, so a claimant
 * synchronizes with every earlier push, whoever did the CASes in between.
 *
 * Fairness: each push stamps the task with the owner's tick; the scheduler
 * runs the front task first when it has run before (woken or yielded, not
 * a fresh spawn) and has waited WEFT_FAIR_AGE ticks. So a pair of fibers
 * waking each other at the back delays the rest by a bounded time (like
 * the time slice Go's runnext shares), while fork-join keeps its
 * depth-first order: its waiting work is fresh spawns, which wait for the
 * back to drain or for a thief (running them early would only start more
 * subtrees at once and hold more stacks).
 *
 * Lone tasks: a thief leaves a queue holding a single task alone unless it
 * has seen the very same queue word and pop count on an earlier look (the
 * owner has not popped since, so the task has waited; the count defeats
 * the ABA of a pop and a push that restore the word): a task just woken or spawned is usually run by
 * its owner within a microsecond, and stealing it would only move a
 * ping-pong pair apart (after Go's runnext, stolen only after ~3 us).
 *
 * The LIFO back gives fork-join its depth-first order (a join finds its
 * child next, and live stacks stay few); the front gives yields and thieves
 * the oldest work.
 */
#include "internal.h"

#define MASK (WEFT_DEQUE_CAP - 1u)
#define IBITS 21
#define IMASK ((1u << IBITS) - 1)

_Static_assert(WEFT_DEQUE_CAP <= (1u << (IBITS - 2)), "WEFT_DEQUE_CAP too big");

struct idx {
	uint32_t steal, real, tail;
};

static inline struct idx unpack(uint64_t w)
{
	return (struct idx){(uint32_t)(w >> (2 * IBITS)) & IMASK,
			    (uint32_t)(w >> IBITS) & IMASK, (uint32_t)w & IMASK};
}
static inline uint64_t pack(uint32_t steal, uint32_t real, uint32_t tail)
{
	return ((uint64_t)(steal & IMASK) << (2 * IBITS)) |
	       ((uint64_t)(real & IMASK) << IBITS) | (tail & IMASK);
}
static inline uint32_t dist(uint32_t from, uint32_t to)
{
	return (to - from) & IMASK;
}
static inline bool cas(struct weft__deque *dq, uint64_t *old, uint64_t nw)
{
	if (dq->solo) { /* one thread only: the same, without the lock */
		uint64_t cur = atomic_load_explicit(&dq->word,
						    memory_order_relaxed);
		if (cur != *old) {
			*old = cur;
			return false;
		}
		atomic_store_explicit(&dq->word, nw, memory_order_release);
		return true;
	}
	/* acq_rel would do for the queue itself (see "Orders"); seq_cst makes
	 * a push one half of the idle handshake (idle.c). On x86-64 both are
	 * the same lock cmpxchg. */
	return atomic_compare_exchange_weak_explicit(&dq->word, old, nw,
						     memory_order_seq_cst,
						     memory_order_acquire);
}

/* Fairness stamp: the owner's tick, and whether the task has run before
 * (top bit). Relaxed: a hint read by weft__dq_front_age. The pusher owns t,
 * so reading its stack pointer here is not a race. */
static inline void stamp(struct weft__deque *dq, weft_task *t)
{
	uint32_t started = t->ctx.stack_lo ? 1u << 31 : 0;
	atomic_store_explicit(&t->qtick, (dq->tick & ~(1u << 31)) | started,
			      memory_order_relaxed);
}

void weft__dq_init(struct weft__deque *dq) { atomic_init(&dq->word, 0); }

/* Move CAP/2 of the oldest tasks to the global queue (owner, ring full). */
static bool spill(struct weft__deque *dq, uint64_t old,
		  struct weft__inject *q)
{
	struct idx i = unpack(old);
	const uint32_t n = WEFT_DEQUE_CAP / 2;
	if (i.steal != i.real ||
	    !cas(dq, &old, pack(i.real + n, i.real + n, i.tail)))
		return false;
	weft_task *first = dq->buf[i.real & MASK], *last = first;
	for (uint32_t k = 1; k < n; k++) {
		weft_task *x = dq->buf[(i.real + k) & MASK];
		last->next = x;
		last = x;
	}
	weft__inject_push(q, first, last, n);
	return true;
}

/* A push whose first CAS failed (a thief moved the word) or that found
 * the ring full: out of line, so the common push saves no registers. */
static WEFT__NOINLINE __attribute__((cold)) void
push_slow(struct weft__deque *dq, weft_task *t, struct weft__inject *overflow,
	  uint64_t old)
{
	for (int waited = 0;;) {
		struct idx i = unpack(old);
		if (dist(i.steal, i.tail) < WEFT_DEQUE_CAP) {
			dq->buf[i.tail & MASK] = t;
			if (cas(dq, &old, pack(i.steal, i.real, i.tail + 1)))
				return;
			continue;
		}
		if (i.steal != i.real) {
			/* full and a thief is copying: its copy takes well under
			 * a microsecond and frees half the ring, so wait a
			 * little; if it was preempted, this one goes global
			 * (one lock per task would contend with every thief
			 * taking from the global queue) */
			if (++waited < 256) {
				weft__cpu_relax();
				old = atomic_load_explicit(
					&dq->word, memory_order_acquire);
				continue;
			}
			if (t->ctx.stack_lo) {
				weft__inject_push_head(overflow, t);
			} else {
				t->next = NULL;
				weft__inject_push(overflow, t, t, 1);
			}
			return;
		}
		if (!spill(dq, old, overflow))
			old = atomic_load_explicit(&dq->word,
						   memory_order_acquire);
	}
}

void weft__dq_push(struct weft__deque *dq, weft_task *t,
		   struct weft__inject *overflow)
{
	stamp(dq, t);
	/* acquire: a thief's release of [steal, real) before we reuse it */
	uint64_t old = atomic_load_explicit(&dq->word, memory_order_acquire);
	struct idx i = unpack(old);
	if (__builtin_expect(dist(i.steal, i.tail) < WEFT_DEQUE_CAP, 1)) {
		dq->buf[i.tail & MASK] = t;
		if (cas(dq, &old, pack(i.steal, i.real, i.tail + 1)))
			return;
	}
	push_slow(dq, t, overflow, old);
}

bool weft__dq_push_front(struct weft__deque *dq, weft_task *t)
{
	stamp(dq, t);
	uint64_t old = atomic_load_explicit(&dq->word, memory_order_acquire);
	for (;;) {
		struct idx i = unpack(old);
		if (i.steal != i.real || dist(i.steal, i.tail) >= WEFT_DEQUE_CAP)
			return false;
		dq->buf[(i.real - 1) & MASK] = t;
		if (cas(dq, &old, pack(i.real - 1, i.real - 1, i.tail)))
			return true;
	}
}

weft_task *weft__dq_pop(struct weft__deque *dq)
{
	uint64_t old = atomic_load_explicit(&dq->word, memory_order_acquire);
	for (;;) {
		struct idx i = unpack(old);
		if (i.real == i.tail)
			return NULL;
		if (cas(dq, &old, pack(i.steal, i.real, i.tail - 1))) {
			/* relaxed: a hint for thieves ("Lone tasks") */
			atomic_store_explicit(
				&dq->pops,
				atomic_load_explicit(&dq->pops,
						     memory_order_relaxed) + 1,
				memory_order_relaxed);
			return dq->buf[(i.tail - 1) & MASK];
		}
	}
}

weft_task *weft__dq_pop_front(struct weft__deque *dq)
{
	uint64_t old = atomic_load_explicit(&dq->word, memory_order_acquire);
	for (;;) {
		struct idx i = unpack(old);
		if (i.real == i.tail)
			return NULL;
		uint32_t steal = i.steal == i.real ? i.real + 1 : i.steal;
		if (cas(dq, &old, pack(steal, i.real + 1, i.tail)))
			return dq->buf[i.real & MASK];
	}
}

weft_task *weft__dq_steal(struct weft__deque *src, struct weft__deque *dst,
			  const uint64_t *single)
{
	uint64_t dold = atomic_load_explicit(&dst->word, memory_order_acquire);
	struct idx d = unpack(dold);
	if (dist(d.steal, d.tail) > WEFT_DEQUE_CAP / 2)
		return NULL; /* no room for half a ring */

	uint64_t old = atomic_load_explicit(&src->word, memory_order_acquire);
	struct idx i;
	uint32_t n;
	for (;;) {
		i = unpack(old);
		if (i.steal != i.real)
			return NULL; /* another thief is in flight (I4) */
		n = dist(i.real, i.tail);
		/* a lone task is the owner's next (see "Lone tasks") */
		if (n == 1 && (!single || *single != old))
			return NULL;
		n -= n / 2;
		if (n == 0)
			return NULL;
		if (cas(src, &old, pack(i.real, i.real + n, i.tail)))
			break;
		if (single)
			return NULL; /* the word moved: not lone any more */
	}
	/* [i.real, i.real + n) are ours to read (I3); the oldest runs now,
	 * the rest go to the back of our ring in order */
	weft_task *ret = src->buf[i.real & MASK];
	for (uint32_t k = 1; k < n; k++) {
		weft_task *x = src->buf[(i.real + k) & MASK];
		stamp(dst, x);
		dst->buf[(d.tail + k - 1) & MASK] = x;
	}

	/* release the claim: steal catches up with real */
	old = pack(i.real, i.real + n, i.tail);
	for (;;) {
		struct idx c = unpack(old);
		if (c.steal != i.real)
			weft__die("deque: steal index moved under a thief");
		if (cas(src, &old, pack(c.real, c.real, c.tail)))
			break;
	}
	if (n > 1) {
		/* publish the copies: only we move dst's tail; its thieves
		 * may move steal/real meanwhile, hence the CAS loop */
		for (;;) {
			d = unpack(dold);
			if (cas(dst, &dold, pack(d.steal, d.real,
						 d.tail + n - 1)))
				break;
		}
	}
	return ret;
}

/* Owner only: ticks the oldest queued task has waited, if it has run
 * before (0 if none, or if it is a fresh spawn: see "Fairness"). */
uint32_t weft__dq_front_age(struct weft__deque *dq)
{
	struct idx i = unpack(atomic_load_explicit(&dq->word,
						   memory_order_acquire));
	if (i.real == i.tail)
		return 0;
	/* the slot is ours to read: only we write slots (I3); the task may
	 * be claimed by a thief meanwhile, which only makes the hint stale */
	weft_task *t = dq->buf[i.real & MASK];
	uint32_t q = atomic_load_explicit(&t->qtick, memory_order_relaxed);
	if (!(q & (1u << 31)))
		return 0;
	return (dq->tick - q) & ~(1u << 31);
}

uint64_t weft__dq_word(struct weft__deque *dq)
{
	return atomic_load_explicit(&dq->word, memory_order_acquire);
}

unsigned weft__dq_word_len(uint64_t word)
{
	struct idx i = unpack(word);
	return dist(i.real, i.tail);
}

/* seq_cst: the parker's re-check in the idle handshake (idle.c) */
bool weft__dq_empty_sc(struct weft__deque *dq)
{
	struct idx i = unpack(atomic_load(&dq->word));
	return i.real == i.tail;
}

unsigned weft__dq_len(struct weft__deque *dq)
{
	/* relaxed snapshot: a hint for idle checks and metrics */
	struct idx i = unpack(atomic_load_explicit(&dq->word,
						   memory_order_relaxed));
	return dist(i.real, i.tail);
}
