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
 * Owner without locks (dq->lazy: several workers, membarrier available).
 * Thieves are rare next to the owner's pushes and pops (a fork-join tree
 * steals a few hundred times and pushes millions), so the owner stores
 * plainly, as Solo does, whenever no thief has announced itself, and a
 * thief first makes sure the owner has stopped doing so:
 *   owner   each operation: in_op = 1; look at `thieves`: 0 -> plain
 *           stores; else acknowledge (ack = req, release) and use the CAS;
 *           in_op = 0 (release) at the end.
 *   thief   thieves += 1, t = ++req; wait a few microseconds for ack >= t
 *           (the owner's next operation gives it); if none comes (the
 *           owner runs a long fiber, or sleeps), membarrier() and then
 *           wait for in_op == 0; now CAS as before; thieves -= 1 after its
 *           last CAS on the word.
 *   O1  An operation that read thieves == 0 finishes before a thief's
 *       first CAS: an acknowledgement is given at the start of a later
 *       operation (program order, release/acquire), and a forced thief
 *       waits out the one operation that can straddle its barrier.
 *   O2  After the barrier every new operation sees thieves > 0: membarrier
 *       runs a full barrier on each CPU running one of our threads between
 *       the thief's increment and its loads, which orders the owner's
 *       in_op store before its load of `thieves` (a compiler barrier is
 *       all the owner pays). Either the owner's load follows the barrier
 *       and sees the thief, or its in_op = 1 precedes it and the thief
 *       waits for the 0.
 * Guarded: an owner that has seen a thief, or sees a worker searching (a
 * thief now), stays with the CAS (guarded = 1) until no worker searches
 * and 1,024 of its operations have passed without a thief; a thief that
 * finds it guarded goes ahead at once. Else thieves that come often (an
 * I/O server on 2 workers: a steal every ~150 us while the owner sits in
 * io_uring_enter) would each wait or force: 26,000 membarrier calls in 4 s
 * of a 2-worker echo server, ~30-60 guarded. Parked workers do not count:
 * with them counted, a 2-worker channel ping-pong (its second worker
 * parked) paid the CAS throughout (0.193 -> 0.172 s without them, medians
 * of 8 alternated runs).
 *   O3  Leaving: guarded = 0, then look at thieves (seq_cst both); a
 *       thief increments thieves, then looks at guarded (seq_cst both).
 *       Either the owner sees the thief and stays, or the thief sees 0
 *       and waits for an acknowledgement as above.
 * Cost: the fib(30) profile on 2 workers had 20% of its samples in the
 * locked pushes and pops, 5% after (0.097 -> 0.083 s); a handful of
 * membarrier calls per run (four or five for fib(30)). The parking half
 * of the idle handshake cannot rely on a plain push (see idle.c): a
 * worker that parks while its peer pushes plainly may miss that push,
 * which its owner runs anyway; the watcher bounds how long it may sit
 * behind a hog.
 *
 * Orders: each CAS is acq_rel. Release publishes slot writes (push) and the
 * end of a thief's reads (its final CAS); acquire makes a claimant see the
 * pushes it claims and lets the owner reuse slots a thief has released.
 * All CASes on one word form one release sequence, so a claimant
 * synchronizes with every earlier push, whoever did the CASes in between;
 * a plain store (release) is the owner's own, after it acquired the
 * thieves' last CASes (O1), so the chain holds through it.
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
#include <errno.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

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
static inline bool cas(struct weft__deque *dq, bool plain, uint64_t *old,
		       uint64_t nw)
{
	if (plain) { /* no thief can act: the same, without the lock */
		/* acquire: a thief that finished since *old was read (its
		 * release CAS) before we reuse the slots it read */
		uint64_t cur = atomic_load_explicit(&dq->word,
						    memory_order_acquire);
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

/* ---- owner without locks ---------------------------------------------------- */

unsigned weft__dq_ack_spins = 200; /* ~5 us of pauses on the CI machine */
/* operations without a thief before a guarded owner stores plainly again */
#define WEFT__DQ_CALM 1024

/* Owner: acknowledge the thieves' requests seen so far (O1). */
static inline void own_ack(struct weft__deque *dq)
{
	uint32_t r = atomic_load_explicit(&dq->req, memory_order_relaxed);
	/* release: our earlier plain stores before the acknowledgement */
	if (r != atomic_load_explicit(&dq->ack, memory_order_relaxed))
		atomic_store_explicit(&dq->ack, r, memory_order_release);
}

/* Whether no worker is searching (a thief now). Parked workers do not
 * count: one that wakes searches first, and the guard follows. Relaxed:
 * a hint; thieves announce themselves. */
static inline bool none_searching(struct weft__deque *dq)
{
	return !dq->idle_state ||
	       !(atomic_load_explicit(dq->idle_state, memory_order_relaxed) &
		 dq->search_mask);
}

/* Leave guarded mode unless a thief is there: seq_cst store, then seq_cst
 * load, against thief_enter's increment, then load of guarded (O3). */
static WEFT__NOINLINE bool own_unguard(struct weft__deque *dq)
{
	if (!none_searching(dq)) {
		dq->calm = 0;
		return false;
	}
	atomic_store(&dq->guarded, 0);
	if (atomic_load(&dq->thieves)) {
		atomic_store(&dq->guarded, 1);
		dq->calm = 0;
		return false;
	}
	dq->guarded_own = false;
	return true;
}

/* Owner: an operation begins. True if it may use plain stores: no thief
 * is announced and none came lately. Else it acknowledges the thieves'
 * requests it sees. */
static inline bool own_begin(struct weft__deque *dq)
{
	if (dq->solo)
		return true;
	if (!dq->lazy)
		return false;
	/* guarded: thieves go ahead (they see guarded); only leaving needs
	 * a look at them */
	if (dq->guarded_own &&
	    (++dq->calm < WEFT__DQ_CALM || !own_unguard(dq)))
		return false;
	atomic_store_explicit(&dq->in_op, 1, memory_order_relaxed);
	/* the store before the load: the compiler keeps the order, a forced
	 * thief's membarrier makes the CPU keep it (O2) */
	atomic_signal_fence(memory_order_seq_cst);
	/* acquire: a thief that has left (its release) is done with word */
	if (!atomic_load_explicit(&dq->thieves, memory_order_acquire) &&
	    none_searching(dq))
		return true;
	/* a thief, or a searching worker about to be one: CAS from now on,
	 * until none searches and no thief has come for a while (seq_cst:
	 * O3) */
	atomic_store(&dq->guarded, 1);
	dq->guarded_own = true;
	dq->calm = 0;
	own_ack(dq);
	/* release: no plain operation in flight any more (guarded ones
	 * leave in_op at 0) */
	atomic_store_explicit(&dq->in_op, 0, memory_order_release);
	return false;
}

static inline void own_end(struct weft__deque *dq, bool plain)
{
	/* release: a forced thief that sees 0 sees this operation's stores */
	if (plain && dq->lazy)
		atomic_store_explicit(&dq->in_op, 0, memory_order_release);
}

/* A thief announces itself to v and returns once v's owner will not store
 * plainly until thief_exit: acknowledged, or forced (O1, O2). */
static void thief_enter(struct weft__deque *v)
{
	if (!v->lazy)
		return;
	atomic_fetch_add(&v->thieves, 1);
	/* seq_cst: the owner is guarded and will see us before it leaves
	 * (O3); its plain stores before it became guarded are ours to see */
	if (atomic_load(&v->guarded))
		return;
	uint32_t t = atomic_fetch_add(&v->req, 1) + 1;
	for (unsigned i = 0; i < weft__dq_ack_spins; i++) {
		/* acquire: pairs with own_begin's release of ack; guarded
		 * since (seq_cst, O3): it will see us before it leaves */
		if ((int32_t)(atomic_load_explicit(&v->ack,
						   memory_order_acquire) -
			      t) >= 0 ||
		    atomic_load(&v->guarded))
			return;
		weft__cpu_relax();
	}
	/* the owner runs a long fiber (or sleeps): a barrier on its CPU,
	 * then wait out an operation that straddled it */
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0))
		weft__die("deque: membarrier failed (errno %d)", errno);
	/* acquire: pairs with own_end's release */
	for (unsigned i = 0;
	     atomic_load_explicit(&v->in_op, memory_order_acquire); i++) {
		weft__cpu_relax();
		if (i > 4096)
			sched_yield(); /* its thread was preempted mid-op */
	}
}

static inline void thief_exit(struct weft__deque *v)
{
	if (v->lazy)
		atomic_fetch_sub_explicit(&v->thieves, 1, memory_order_release);
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

void weft__dq_init(struct weft__deque *dq)
{
	atomic_init(&dq->word, 0);
	dq->tick = 0;
	atomic_init(&dq->pops, 0);
	dq->solo = dq->lazy = false; /* the caller chooses (runtime.c) */
	atomic_init(&dq->guarded, 0);
	dq->guarded_own = false;
	dq->calm = 0;
	dq->idle_state = NULL; /* the runtime sets both (runtime.c) */
	dq->search_mask = 0;
	atomic_init(&dq->in_op, 0);
	atomic_init(&dq->ack, 0);
	atomic_init(&dq->thieves, 0);
	atomic_init(&dq->req, 0);
}

/* Move CAP/2 of the oldest tasks to the global queue (owner, ring full). */
static bool spill(struct weft__deque *dq, bool plain, uint64_t old,
		  struct weft__inject *q)
{
	struct idx i = unpack(old);
	const uint32_t n = WEFT_DEQUE_CAP / 2;
	if (i.steal != i.real ||
	    !cas(dq, plain, &old, pack(i.real + n, i.real + n, i.tail)))
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
push_slow(struct weft__deque *dq, bool plain, weft_task *t,
	  struct weft__inject *overflow, uint64_t old)
{
	for (int waited = 0;;) {
		struct idx i = unpack(old);
		if (dist(i.steal, i.tail) < WEFT_DEQUE_CAP) {
			dq->buf[i.tail & MASK] = t;
			if (cas(dq, plain, &old,
				pack(i.steal, i.real, i.tail + 1)))
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
		if (!spill(dq, plain, old, overflow))
			old = atomic_load_explicit(&dq->word,
						   memory_order_acquire);
	}
}

void weft__dq_push(struct weft__deque *dq, weft_task *t,
		   struct weft__inject *overflow)
{
	stamp(dq, t);
	bool plain = own_begin(dq);
	/* acquire: a thief's release of [steal, real) before we reuse it */
	uint64_t old = atomic_load_explicit(&dq->word, memory_order_acquire);
	struct idx i = unpack(old);
	if (__builtin_expect(dist(i.steal, i.tail) < WEFT_DEQUE_CAP, 1)) {
		dq->buf[i.tail & MASK] = t;
		if (cas(dq, plain, &old, pack(i.steal, i.real, i.tail + 1))) {
			own_end(dq, plain);
			return;
		}
	}
	push_slow(dq, plain, t, overflow, old);
	own_end(dq, plain);
}

bool weft__dq_push_front(struct weft__deque *dq, weft_task *t)
{
	stamp(dq, t);
	bool plain = own_begin(dq), ok;
	uint64_t old = atomic_load_explicit(&dq->word, memory_order_acquire);
	for (;;) {
		struct idx i = unpack(old);
		if (i.steal != i.real ||
		    dist(i.steal, i.tail) >= WEFT_DEQUE_CAP) {
			ok = false;
			break;
		}
		dq->buf[(i.real - 1) & MASK] = t;
		if (cas(dq, plain, &old, pack(i.real - 1, i.real - 1, i.tail))) {
			ok = true;
			break;
		}
	}
	own_end(dq, plain);
	return ok;
}

weft_task *weft__dq_pop(struct weft__deque *dq)
{
	uint64_t old = atomic_load_explicit(&dq->word, memory_order_acquire);
	if (unpack(old).real == unpack(old).tail)
		return NULL; /* empty: no operation to begin */
	bool plain = own_begin(dq);
	weft_task *t = NULL;
	for (;;) {
		struct idx i = unpack(old);
		if (i.real == i.tail)
			break;
		if (cas(dq, plain, &old, pack(i.steal, i.real, i.tail - 1))) {
			/* relaxed: a hint for thieves ("Lone tasks") */
			atomic_store_explicit(
				&dq->pops,
				atomic_load_explicit(&dq->pops,
						     memory_order_relaxed) + 1,
				memory_order_relaxed);
			t = dq->buf[(i.tail - 1) & MASK];
			break;
		}
	}
	own_end(dq, plain);
	return t;
}

weft_task *weft__dq_pop_front(struct weft__deque *dq)
{
	uint64_t old = atomic_load_explicit(&dq->word, memory_order_acquire);
	if (unpack(old).real == unpack(old).tail)
		return NULL;
	bool plain = own_begin(dq);
	weft_task *t = NULL;
	for (;;) {
		struct idx i = unpack(old);
		if (i.real == i.tail)
			break;
		uint32_t steal = i.steal == i.real ? i.real + 1 : i.steal;
		if (cas(dq, plain, &old, pack(steal, i.real + 1, i.tail))) {
			t = dq->buf[i.real & MASK];
			break;
		}
	}
	own_end(dq, plain);
	return t;
}

weft_task *weft__dq_steal(struct weft__deque *src, struct weft__deque *dst,
			  const uint64_t *single)
{
	uint64_t dold = atomic_load_explicit(&dst->word, memory_order_acquire);
	struct idx d = unpack(dold);
	if (dist(d.steal, d.tail) > WEFT_DEQUE_CAP / 2)
		return NULL; /* no room for half a ring */

	uint64_t old = atomic_load_explicit(&src->word, memory_order_acquire);
	struct idx i = unpack(old);
	uint32_t n = dist(i.real, i.tail);
	if (i.steal != i.real || n == 0 || (n == 1 && (!single || *single != old)))
		return NULL; /* nothing for us: no need to announce ourselves */
	thief_enter(src);
	old = atomic_load_explicit(&src->word, memory_order_acquire);
	for (;;) {
		i = unpack(old);
		if (i.steal != i.real) {
			thief_exit(src);
			return NULL; /* another thief is in flight (I4) */
		}
		n = dist(i.real, i.tail);
		/* a lone task is the owner's next (see "Lone tasks") */
		if (n == 0 || (n == 1 && (!single || *single != old))) {
			thief_exit(src);
			return NULL;
		}
		n -= n / 2;
		if (cas(src, false, &old, pack(i.real, i.real + n, i.tail)))
			break;
		if (single) {
			thief_exit(src);
			return NULL; /* the word moved: not lone any more */
		}
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
		if (cas(src, false, &old, pack(c.real, c.real, c.tail)))
			break;
	}
	thief_exit(src);
	if (n > 1) {
		/* publish the copies: only we move dst's tail; its thieves
		 * may move steal/real meanwhile, hence the CAS loop */
		for (;;) {
			d = unpack(dold);
			if (cas(dst, false, &dold, pack(d.steal, d.real,
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
