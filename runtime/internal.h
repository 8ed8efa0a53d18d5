/* internal.h — the runtime's private types. Nothing here is exported.
 *
 * Vocabulary (docs/design.md has the map):
 *   fiber   = struct weft_task: a function, its stack and its park word.
 *   worker  = struct weft__worker: one OS thread, its run queue (deque +
 *             LIFO slot), stack and fiber caches, timer heap and io_uring.
 *   rt      = struct weft__rt: the one running runtime: workers, global
 *             injection queue, idle coordination, fiber slab.
 *
 * Ownership rule: a field is written only by the owning worker unless its
 * comment says otherwise; cross-thread fields are _Atomic and each access
 * names its ordering and its partner.
 */
#ifndef WEFT_INTERNAL_H
#define WEFT_INTERNAL_H

#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "weft.h"

#define WEFT__HIDDEN __attribute__((visibility("hidden")))
#define WEFT__NOINLINE __attribute__((noinline))
#define WEFT__LIKELY(x) __builtin_expect(!!(x), 1)
#define WEFT__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define WEFT__CACHELINE 64

static inline void weft__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/* ---- compile-time knobs (tests shrink them) ---------------------------- */
#ifndef WEFT_DEQUE_CAP
#define WEFT_DEQUE_CAP 256 /* per-worker ring; power of two, >= 4 */
#endif
#ifndef WEFT_GLOBAL_INTERVAL
#define WEFT_GLOBAL_INTERVAL 61 /* ticks between global-queue polls */
#endif
#ifndef WEFT_TIMER_STEAL_NS
#define WEFT_TIMER_STEAL_NS 2000000ull /* others fire a heap 2 ms overdue */
#endif
#ifndef WEFT_EVENT_INTERVAL
#define WEFT_EVENT_INTERVAL 61 /* ticks between ring/timer polls */
#endif
#ifndef WEFT_FAIR_INTERVAL
#define WEFT_FAIR_INTERVAL 31 /* ticks between looks at the oldest task */
#endif
#ifndef WEFT_FAIR_AGE
#define WEFT_FAIR_AGE 4096 /* ticks a woken task may wait before it goes first */
#endif
#ifndef WEFT_SPIN_NS
#define WEFT_SPIN_NS 30000 /* how long a searcher looks before parking */
#endif
#ifndef WEFT_QUIET_NS
#define WEFT_QUIET_NS 20000 /* fibers woken by a reap wait this long for their
                               own worker before an idle one is woken */
#endif
#ifndef WEFT_WATCH_NS
#define WEFT_WATCH_NS 1000000 /* the parked watcher's look at busy workers'
                                 quiet work (a hog's bound) */
#endif
#define WEFT__STACK_DEFAULT (64u * 1024)
#define WEFT__STACK_MIN (16u * 1024)
#define WEFT__STACK_MAX (1024u * 1024 * 1024)
#define WEFT__MAX_WORKERS 1024

_Static_assert((WEFT_DEQUE_CAP & (WEFT_DEQUE_CAP - 1)) == 0 && WEFT_DEQUE_CAP >= 4,
	       "WEFT_DEQUE_CAP must be a power of two >= 4");

/* ---- sanitizer detection ----------------------------------------------- */
#if defined(__SANITIZE_ADDRESS__)
#define WEFT__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT__ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define WEFT__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT__TSAN 1
#endif
#endif

struct weft__worker;
struct weft__rt;

/* ---- contexts ------------------------------------------------------------ */
/* A context is a suspended stack: the saved stack pointer plus what the
 * sanitizers need to follow a switch onto it. */
struct weft__ctx {
	void *sp;
	void *stack_lo; /* usable bottom (just above the guard page) */
#ifdef WEFT__ASAN
	size_t stack_size;
	void *asan_fake; /* ASan fake-stack handle of this context */
#endif
#ifdef WEFT__TSAN
	void *tsan_fiber; /* TSan fiber of this context */
#endif
};

void *weft__ctx_switch(void **save_sp, void *load_sp, void *arg) WEFT__HIDDEN;
void weft__ctx_entry(void) WEFT__HIDDEN;
void *weft__ctx_make(void *top, void (*entry)(void *, void *),
		     void *arg) WEFT__HIDDEN;
/* The same with the given FP control (weft__ctx_fpctl's encoding) instead
 * of the caller's: the runtime starts fibers from whatever context runs
 * (another fiber's, at its switch-out), whose mode must not leak. */
void *weft__ctx_make_fp(void *top, void (*entry)(void *, void *), void *arg,
			uint64_t fpctl) WEFT__HIDDEN;
/* The calling thread's FP control (x86-64: MXCSR | x87 control word << 32,
 * the frame's first slot; aarch64: FPCR) */
uint64_t weft__ctx_fpctl(void) WEFT__HIDDEN;

/* ---- fibers -------------------------------------------------------------- */
/* The park word: seq (32) | reason (8) | cancellable (8) | state (8).
 * seq grows by one at every park and is never reset, not even when the
 * struct is reused: a waker holding an old seq can never wake a later wait
 * (see "the park handshake" in sched.c). */
enum weft__pstate {
	WEFT__RUNNING = 0,  /* on a worker, or about to be */
	WEFT__PARKING = 1,  /* announced a wait, still on its stack */
	WEFT__PARKED = 2,   /* off its stack, waiting for a waker */
	WEFT__NOTIFIED = 3, /* woken while PARKING: its switch-out requeues it */
	WEFT__RUNNABLE = 4, /* woken: queued somewhere, about to run */
};
enum weft__reason {
	WEFT__R_NONE = 0,
	WEFT__R_WOKEN = 1,  /* the awaited event happened */
	WEFT__R_TIMER = 2,  /* its timer fired */
	WEFT__R_CANCEL = 3, /* weft_cancel */
	WEFT__R_NOMEM = 4,  /* no memory for the deadline's timer */
};
#define WEFT__PW(seq, reason, canc, st)                                     \
	(((uint64_t)(seq) << 32) | ((uint64_t)(reason) << 16) |             \
	 ((uint64_t)(canc) << 8) | (uint64_t)(st))
#define WEFT__PW_SEQ(w) ((uint32_t)((w) >> 32))
#define WEFT__PW_REASON(w) ((int)(((w) >> 16) & 0xff))
#define WEFT__PW_CANC(w) ((int)(((w) >> 8) & 0xff))
#define WEFT__PW_ST(w) ((int)((w)&0xff))

/* flags: who may still touch the task (fiber.c, "the handle protocol") */
enum {
	WEFT__F_ALLOC = 1u << 0,    /* a live task (set at spawn, cleared at free) */
	WEFT__F_JOINING = 1u << 1,  /* weft_join took it */
	WEFT__F_DETACHED = 1u << 2, /* weft_detach gave it up */
	WEFT__F_EXITED = 1u << 3,   /* finished, off its stack */
	WEFT__F_CANCEL = 1u << 4,   /* cancelled: its waits fail (sticky) */
	WEFT__F_MAIN = 1u << 5,     /* the fiber running main_fn */
	WEFT__F_NOMEM = 1u << 6,    /* ended without running: no stack */
};

/* join_word values (fiber.c, "the handle protocol"); above them, a joiner */
#define WEFT__JOIN_DONE ((uintptr_t)1)      /* done; still touched by the exit */
#define WEFT__DETACH_MARK ((uintptr_t)2)
#define WEFT__JOIN_DONE_FREE ((uintptr_t)3) /* done, no longer touched */
#define WEFT__JOIN_IS_DONE(j) \
	((j) == WEFT__JOIN_DONE || (j) == WEFT__JOIN_DONE_FREE)
#define WEFT__JOIN_IS_FIBER(j) ((j) > WEFT__JOIN_DONE_FREE)

struct weft_task {
	struct weft__ctx ctx;
	struct weft_task *next; /* link: inject queue, free lists (owner of list) */
	_Atomic uint64_t park;  /* the park word */
	_Atomic uint32_t flags;
	_Atomic uint16_t last_worker; /* dump.c: the worker it last ran on
	                                 (line 0: a resume writes only it) */
	/* shield scopes open (weft_shield_push): written by the fiber only,
	 * atomic for the dump; while > 0 its waits are not cancellable */
	_Atomic uint16_t shield;
	void *(*fn)(void *);
	void *arg;
	void *result;
	_Atomic uintptr_t join_word; /* 0, JOIN_DONE(_FREE), DETACH_MARK, a joiner */
	uint32_t join_seq;           /* joiner's park seq; written before it
	                                publishes itself in join_word */
	/* timer: owned by timer_w's heap lock while heap_idx >= 0 */
	int32_t heap_idx;
	_Atomic uint32_t qtick; /* tick of its last push (deque.c fairness) */
	_Atomic uint32_t wait_ms; /* dump.c: coarse ms clock at its last wait */
	uint64_t id;
	struct weft__worker *timer_w;
	uint64_t deadline; /* innermost deadline scope, 0: none */
	const char *name;
	/* dump.c: what its last wait waits on (weft__wait_note) */
	_Atomic uint64_t wait;
} __attribute__((aligned(WEFT__CACHELINE)));

/* ---- slab (slab.c) -------------------------------------------------------- */
struct weft__slab {
	pthread_mutex_t lock;
	size_t isz, link_off;
	size_t hdr_off; /* a free batch's header (slab.c) */
	size_t side_sz; /* bytes of side data per item (weft__slab_side) */
	void *chunks; /* newest first; the newest is being carved */
	void *depot;  /* stack of free batches, under lock */
};
/* slab.c: items a cache gives to, or takes from, the depot at once (a
 * cache holds at most two such chains), and items carved at once */
#define WEFT__SLAB_BATCH 128
#define WEFT__SLAB_REFILL 64
struct weft__slab_cache { /* per worker, owner only (slab.c) */
	void *head; /* the chain taken from and freed onto */
	size_t n;
	void *full; /* a spare chain, or NULL */
	size_t nfull;
};
/* link_off: where a free item links to the next; hdr_off: two words a
 * free item may hold for the slab. Neither may be read while it is free. */
void weft__slab_init(struct weft__slab *s, size_t isz, size_t link_off,
		     size_t hdr_off, size_t side_sz) WEFT__HIDDEN;
void weft__slab_fini(struct weft__slab *s) WEFT__HIDDEN;
void *weft__slab_get(struct weft__slab *s,
		     struct weft__slab_cache *c) WEFT__HIDDEN;
void weft__slab_put(struct weft__slab *s, struct weft__slab_cache *c,
		    void *p) WEFT__HIDDEN;
void weft__slab_walk(struct weft__slab *s, void (*fn)(void *, void *),
		     void *ctx) WEFT__HIDDEN;
/* Side data: each chunk holds its items and then, apart, side_sz bytes per
 * item for cold data (a fiber's spawn site), so the items stay small. The
 * layout is fixed by these constants, so with constant isz and side_sz this
 * is a mask, a shift and an add. */
#define WEFT__SLAB_CHUNK (2u << 20)
#define WEFT__SLAB_HDR WEFT__CACHELINE
static inline void *weft__slab_side(void *item, size_t isz, size_t side_sz)
{
	uintptr_t c = (uintptr_t)item & ~(uintptr_t)(WEFT__SLAB_CHUNK - 1);
	size_t cap = (WEFT__SLAB_CHUNK - WEFT__SLAB_HDR) / (isz + side_sz);
	size_t idx = ((uintptr_t)item - c - WEFT__SLAB_HDR) / isz;
	return (char *)c + WEFT__SLAB_HDR + cap * isz + idx * side_sz;
}

/* ---- deque: the per-worker stealable ring (deque.c) ---------------------- */
struct weft__deque {
	/* steal | real | tail, 21 bits each; CAS only (deque.c) */
	_Atomic uint64_t word __attribute__((aligned(WEFT__CACHELINE)));
	uint32_t tick; /* owner's scheduler tick, stamped on pushes */
	_Atomic uint32_t pops; /* owner's pop count: thieves tell a lone task
	                          that waited from a new one (deque.c) */
	bool solo; /* no thief can exist (one worker): plain stores (deque.c) */
	bool lazy; /* owner stores plainly while no thief is announced (deque.c,
	              "Owner without locks"); needs membarrier */
	_Atomic uint32_t in_op; /* owner: inside a plain-capable operation */
	_Atomic uint32_t ack;   /* owner: the last thief request it saw */
	_Atomic uint32_t guarded; /* owner: CAS only until it sees no thief for
	                             a while ("guarded", deque.c) */
	bool guarded_own;         /* owner's own copy of guarded */
	uint32_t calm;            /* owner: operations since it saw a thief */
	/* the runtime's idle state, and its bits that count searching
	 * workers (thieves now) */
	_Atomic uint32_t *idle_state;
	uint32_t search_mask;
	/* thieves' line: announced thieves, and their request count */
	_Atomic uint32_t thieves __attribute__((aligned(WEFT__CACHELINE)));
	_Atomic uint32_t req;
	weft_task *buf[WEFT_DEQUE_CAP] __attribute__((aligned(WEFT__CACHELINE)));
};
extern unsigned weft__dq_ack_spins WEFT__HIDDEN;

struct weft__inject;
void weft__dq_init(struct weft__deque *dq) WEFT__HIDDEN;
void weft__dq_push(struct weft__deque *dq, weft_task *t,
		   struct weft__inject *overflow) WEFT__HIDDEN;
weft_task *weft__dq_pop(struct weft__deque *dq) WEFT__HIDDEN;
weft_task *weft__dq_pop_front(struct weft__deque *dq) WEFT__HIDDEN;
bool weft__dq_push_front(struct weft__deque *dq, weft_task *t) WEFT__HIDDEN;
weft_task *weft__dq_steal(struct weft__deque *src, struct weft__deque *dst,
			  const uint64_t *single) WEFT__HIDDEN;
uint64_t weft__dq_word(struct weft__deque *dq) WEFT__HIDDEN;
unsigned weft__dq_word_len(uint64_t word) WEFT__HIDDEN;
unsigned weft__dq_len(struct weft__deque *dq) WEFT__HIDDEN;
bool weft__dq_empty_sc(struct weft__deque *dq) WEFT__HIDDEN;
uint32_t weft__dq_front_age(struct weft__deque *dq) WEFT__HIDDEN;

/* ---- global injection queue (inject.c) ----------------------------------- */
struct weft__inject {
	pthread_mutex_t lock;
	weft_task *head, *tail; /* under lock */
	_Atomic size_t len; /* written under lock (seq_cst: idle handshake),
	                       read lock-free as a hint */
};
void weft__inject_init(struct weft__inject *q) WEFT__HIDDEN;
void weft__inject_fini(struct weft__inject *q) WEFT__HIDDEN;
void weft__inject_push(struct weft__inject *q, weft_task *first,
		       weft_task *last, size_t n) WEFT__HIDDEN;
void weft__inject_push_head(struct weft__inject *q, weft_task *t) WEFT__HIDDEN;
weft_task *weft__inject_pop(struct weft__inject *q) WEFT__HIDDEN;
weft_task *weft__inject_pop_batch(struct weft__inject *q,
				  struct weft__deque *dq, size_t max,
				  bool *rest_back) WEFT__HIDDEN;
static inline bool weft__inject_empty(struct weft__inject *q)
{
	/* relaxed: a hint; the lock orders the real access */
	return atomic_load_explicit(&q->len, memory_order_relaxed) == 0;
}

/* ---- stacks (stack.c) ---------------------------------------------------- */
struct weft__stack_region {
	struct weft__stack_region *next;
	void *base;
	size_t len;
};
struct weft__stacks {
	pthread_mutex_t lock;
	size_t usable, guard, slot; /* bytes */
	bool use_mprotect;          /* MADV_GUARD_INSTALL unsupported here */
	struct weft__stack_region *regions;
	char *carve, *carve_end;    /* unused part of the newest region */
	void *free_list;            /* stacks returned by workers (link at top) */
	size_t free_count;
	size_t mapped;              /* stacks ever carved */
	/* release (stack.c, "Release"): under lock unless said otherwise */
	uint32_t decay_ms;          /* the period; 0: never release (set once) */
	_Atomic uint32_t period_end; /* coarse ms it ends (odd); 0: none runs
	                                (written under lock, read without) */
	_Atomic size_t debt;        /* free_list stacks to release now (same) */
	size_t free_low;            /* least free_count in this period */
	void **clean;               /* released stacks: taken before fresh ones */
	size_t nclean, clean_cap;
	_Atomic size_t released;    /* stacks released so far (relaxed; tests) */
};
int weft__stacks_init(struct weft__stacks *s, size_t usable,
		      uint32_t decay_ms) WEFT__HIDDEN;
void weft__stacks_fini(struct weft__stacks *s) WEFT__HIDDEN;
void *weft__stack_get(struct weft__worker *w) WEFT__HIDDEN; /* lo or NULL */
void weft__stack_put(struct weft__worker *w, void *lo) WEFT__HIDDEN;
void weft__stack_prepare(void *lo, size_t size) WEFT__HIDDEN;
void weft__stacks_tick(struct weft__worker *w) WEFT__HIDDEN;
uint64_t weft__stacks_next(struct weft__stacks *s) WEFT__HIDDEN;
uint64_t weft__stacks_cache_next(struct weft__worker *w) WEFT__HIDDEN;
int weft__guard_handler_install(void) WEFT__HIDDEN;
int weft__altstack_push(void **save) WEFT__HIDDEN;
void weft__altstack_pop(void *save) WEFT__HIDDEN;

/* ---- timers (timer.c) ---------------------------------------------------- */
struct weft__timer_ent {
	uint64_t when;
	weft_task *f;
	uint32_t seq;
};
struct weft__timers {
	atomic_flag lock; /* spin: owner fires, any worker may remove */
	struct weft__timer_ent *heap;
	uint32_t len, cap;
	/* heap[0].when, UINT64_MAX if empty: stored under the lock, read
	 * without it by workers looking for overdue timers to steal */
	_Atomic uint64_t next_when;
};
void weft__timers_init(struct weft__timers *t) WEFT__HIDDEN;
void weft__timers_fini(struct weft__timers *t) WEFT__HIDDEN;
int weft__timer_add(struct weft__worker *w, weft_task *f, uint64_t when,
		    uint32_t seq) WEFT__HIDDEN;
void weft__timer_del(weft_task *f) WEFT__HIDDEN;
uint64_t weft__timers_fire(struct weft__worker *w, uint64_t now) WEFT__HIDDEN;
uint64_t weft__timers_next(struct weft__worker *w) WEFT__HIDDEN;
uint64_t weft__timers_steal(struct weft__worker *w, uint64_t now) WEFT__HIDDEN;
uint64_t weft__timers_steal_next(struct weft__worker *w) WEFT__HIDDEN;

/* ---- worker -------------------------------------------------------------- */
struct weft__worker {
	struct weft__deque dq; /* first: cache-line aligned */

	/* owner-only from here */
	unsigned index;
	struct weft__rt *rt;
	/* scheduler tick: w->dq.tick (the deque stamps pushes with it) */
	struct weft__ctx sched; /* the scheduler context (thread stack) */
#ifdef WEFT__TSAN
	/* signals blocked across a fiber switch (sched.c, ctx_jump) */
	bool tsan_masked;
	sigset_t tsan_mask;
#endif
	weft_task *cur;         /* fiber running now, NULL in the scheduler */
	weft_task *prev;        /* the fiber that just switched out ... */
	int prev_action;        /* ... and what to do with it (sched.c) */
	/* observability: written at every switch, so on the line of cur
	 * (metrics.c, dump.c; see the observability block below) */
	_Atomic uint64_t m_polls;      /* fibers resumed (and lone yields) */
	_Atomic(weft_task *) running;  /* cur, for other threads */
	uint64_t rng;
	bool searching;
	uint64_t next_id;
	/* a lone task seen on a victim: (victim, its queue word and pops) */
	unsigned lone_victim;
	uint64_t lone_word;
	uint32_t lone_pops;

	void *stack_cache; /* stacks, linked through their top word */
	size_t stack_cached;
	/* the cache's decay (stack.c, "Release"): owner only */
	uint32_t cache_end; /* coarse ms its period ends (odd); 0: none */
	size_t cache_low;   /* least stack_cached in this period */
	void *doomed;       /* detached from the cache, to release */
	size_t ndoomed;
	struct weft__slab_cache fcache; /* free fibers */

	struct weft__timers timers;

	struct io_uring ring;
	bool ring_ok;
	bool ring_fd_reg; /* io_uring_register_ring_fd by this thread (uring.c) */
	bool reaping; /* in reap_n: wakes leave the notify to reap_notify */
	/* weft__clock() when reaped work first waited unannounced (sched.c,
	 * "Quiet wakes"), 0 if none; the owner writes, the watcher reads */
	_Atomic uint64_t quiet_since;
	/* the watcher's last look at this worker's queue (word, pop count):
	 * unchanged and not empty at its next look means the owner has not
	 * popped for a watch period (sched.c, "Quiet wakes") */
	_Atomic uint64_t seen_word;
	_Atomic uint32_t seen_pops;
	int efd;           /* eventfd: wake-ups from non-worker threads */
	uint64_t efd_buf;
	unsigned inflight; /* ops in the ring awaiting a CQE (not efd read) */
	unsigned sim_sure; /* seeded: of those, ops sure to complete alone */
	bool io_dirty;     /* SQEs queued since the last submit */
	bool sim;          /* deterministic mode: the master picks (sim.c) */
	uint16_t op_gen;   /* high bits of op user_data (owner only) */
	struct weft__pbuf *pbuf; /* weft_conn's buffer ring, lazily (conn.c) */
	bool pbuf_failed;        /* the kernel refused it: plain receives */
	/* ASYNC_CANCEL requests from fibers now on other workers */
	pthread_mutex_t cancel_lock;
	struct weft__op *cancel_head; /* under cancel_lock */
	struct weft__revoke *revoke_head; /* under cancel_lock (uring.c) */
	_Atomic int cancel_len; /* hint: cancel_head or revoke_head non-empty */
	/* "Closing wakes" (io/uring.c): the ops in flight on this ring, all
	 * of them (owner only) and counted by fd (the owner writes, a closer
	 * on any worker reads) */
	struct weft__op *ops_head;
	_Atomic uint32_t *fdops; /* [WEFT__FDOPS_MAX] */

	_Atomic int notified; /* set by a notifier under idle.lock */
	_Atomic int asleep;   /* in its park wait (a hint: timer_watcher) */
	bool parked;          /* in idle.sleepers (under idle.lock) */

	/* counters, written by the owner (release), summed by anyone */
	_Atomic uint64_t spawned, exited;

	/* ---- observability (metrics.c, dump.c) ----------------------------
	 * Counters written by the owner only, as a relaxed load + store
	 * (WEFT__BUMP: no RMW, no bus lock on the hot path), read by anyone
	 * with relaxed loads: weft_metrics_get sums them, the watchdog
	 * samples m_polls. `running` is the fiber it runs now, NULL in its
	 * scheduler: a release store at each switch, paired with the acquire
	 * loads of the watchdog and the dump. */
	/* m_polls and running: next to cur, above */
	_Atomic uint64_t m_steals;  /* successful steals from other workers */
	_Atomic uint64_t m_stolen;  /* fibers those steals moved here */
	_Atomic uint64_t m_parks;   /* times it went to sleep (park) */
	_Atomic uint64_t m_unparks; /* times another thread woke it */
	_Atomic uint64_t m_io_sub, m_io_done; /* ring ops submitted, reaped */
	_Atomic uint64_t m_busy_ns;    /* time awake before m_busy_since */
	_Atomic uint64_t m_busy_since; /* weft__clock() when it woke, 0 asleep */

	pthread_t thread;
	int start_err;
	void *altstack_save;
} __attribute__((aligned(WEFT__CACHELINE)));

/* ---- idle coordination (idle.c) ------------------------------------------ */
/* A spin lock for critical sections of a few dozen instructions, taken by
 * workers and other threads alike (sync/waitq.c: looks far apart when
 * contended, yields the thread after ~90 us). The free case is inline: a
 * relaxed look (a lock seen held is not pulled away from its holder by an
 * exchange), then the exchange; the unlock is a release store. As calls
 * they cost a channel round trip 12% (benches/bench_chan_pingpong, 0.149
 * -> 0.131 s, medians of 10 alternated pairs; chan_mpmc -5%, -14% on one
 * worker). */
void weft__spin_lock_slow(unsigned *l) WEFT__HIDDEN;
static inline void weft__spin_lock(unsigned *l)
{
	/* acquire: pairs with the release in unlock */
	if (__builtin_expect(!__atomic_load_n(l, __ATOMIC_RELAXED) &&
			     !__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE), 1))
		return;
	weft__spin_lock_slow(l);
}
static inline void weft__spin_unlock(unsigned *l)
{
	__atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

struct weft__idle {
	/* (num_unparked << 16) | num_searching; see idle.c */
	_Atomic uint32_t state;
	unsigned lock; /* weft__spin_lock: never sleeps in the kernel */
	unsigned *sleepers; /* stack of worker indices, under lock */
	unsigned nsleepers;
	unsigned nworkers;
};
int weft__idle_init(struct weft__idle *id, unsigned n) WEFT__HIDDEN;
void weft__idle_fini(struct weft__idle *id) WEFT__HIDDEN;
bool weft__idle_try_search(struct weft__idle *id) WEFT__HIDDEN;
bool weft__idle_others_awake(struct weft__idle *id) WEFT__HIDDEN;
bool weft__idle_end_search(struct weft__idle *id) WEFT__HIDDEN;
enum { WEFT__PARK_LAST_SEARCHER = 1, WEFT__PARK_LAST_AWAKE = 2 };
unsigned weft__idle_to_parked(struct weft__rt *rt, struct weft__worker *w,
			      bool searching) WEFT__HIDDEN;
bool weft__idle_from_parked(struct weft__rt *rt,
			    struct weft__worker *w) WEFT__HIDDEN;
void weft__idle_notify(struct weft__rt *rt) WEFT__HIDDEN;
void weft__idle_notify_all(struct weft__rt *rt) WEFT__HIDDEN;

/* ---- runtime -------------------------------------------------------------- */
struct weft__rt {
	unsigned nworkers;
	unsigned ring_entries;
	struct weft__worker *workers;
	struct weft__inject inject;
	struct weft__idle idle;
	/* a parked watcher will look at quiet work within WEFT_WATCH_NS
	 * (sched.c, "Quiet wakes") */
	_Atomic unsigned watch_armed;
	struct weft__stacks stacks;
	/* FP control every fiber starts with: weft_run's caller's */
	uint64_t fpctl;

	struct weft__slab fibers; /* slab.c */

	_Atomic int shutdown;  /* main_fn returned: cancel everything */
	/* membarrier(2) PRIVATE_EXPEDITED is registered: the shutdown pair
	 * is an asymmetric fence (weft__begin_shutdown); set before any
	 * worker or spawner can see rt */
	bool membarrier;
	_Atomic int terminate; /* every fiber finished: workers exit */
	/* spawns from non-worker threads; counted before the spawn looks at
	 * shutdown (so it drops back by one when that spawn gives up:
	 * sched.c, weft__try_terminate) */
	_Atomic uint64_t ext_spawned;
	_Atomic uint64_t ext_ids;
	struct weft__blocking *blocking; /* the blocking pool (blocking.c) */
	unsigned blocking_threads, blocking_queue;
	unsigned conn_buffers, conn_buffer_size; /* weft_conn (io/conn.c) */
	pthread_mutex_t gate_lock; /* the start gate (runtime.c) */
	pthread_cond_t gate_cond;
	unsigned gate_arrived, gate_expected;
	void *main_result;
	bool main_nostack; /* main_fn never ran: no stack for it (fiber.c) */

	/* ---- observability (dump.c), set by weft_run before any worker */
	unsigned slow_ms;          /* slow-fiber watchdog threshold, 0: off */
	int dump_signal;           /* the signal that dumps, 0: none */
	bool unjoined_report;      /* report never-joined tasks at the end */
	uint64_t start_ns;         /* weft__clock() at start */
	struct weft__monitor *mon; /* watchdog / dump-signal thread, or NULL */
	struct weft__sim *sim;     /* deterministic mode (sim.c), or NULL */
};

/* the one running runtime (NULL when none); set by weft_run */
extern struct weft__rt *_Atomic weft__rt_cur WEFT__HIDDEN;

/* Calls from threads that are not workers (spawn, cancel, wakes) hold
 * this count while they use the runtime; weft_run's teardown clears
 * weft__rt_cur and waits for it to drop to 0 before it frees anything
 * (runtime.c, "foreign callers"). Enter before loading weft__rt_cur. */
extern _Atomic unsigned weft__foreign_busy WEFT__HIDDEN;
static inline void weft__foreign_enter(void)
{
	atomic_fetch_add(&weft__foreign_busy, 1); /* seq_cst */
}
static inline void weft__foreign_exit(void)
{
	atomic_fetch_sub(&weft__foreign_busy, 1);
}

/* current worker of the calling thread; non-inlined: see "Migration" in
 * docs/design.md — a fiber may resume on another thread, so the TLS address
 * must be recomputed after every suspension. */
struct weft__worker *weft__worker_self(void) WEFT__NOINLINE WEFT__HIDDEN;
void weft__worker_set(struct weft__worker *w) WEFT__HIDDEN;

/* fiber.c */
void weft__cancel_all(struct weft__rt *rt) WEFT__HIDDEN;
void weft__fiber_finish(struct weft__worker *w, weft_task *f) WEFT__HIDDEN;
bool weft__fiber_start(struct weft__worker *w, weft_task *f) WEFT__HIDDEN;
weft_task *weft__spawn_flags(void *(*fn)(void *), void *arg, uint32_t extra,
			     const void *site) WEFT__HIDDEN;

/* sched.c: parking ("the park handshake") */
uint32_t weft__park_begin(weft_task *self, bool cancellable) WEFT__HIDDEN;
int weft__park_commit(weft_task *self) WEFT__HIDDEN;
void weft__park_abort(weft_task *self) WEFT__HIDDEN;
int weft__park_wait(weft_task *self) WEFT__HIDDEN;
/* the calling fiber, or NULL (and *wp the worker, NULL off-runtime) */
static inline weft_task *weft__self(struct weft__worker **wp)
{
	struct weft__worker *w = weft__worker_self();
	if (wp)
		*wp = w;
	return w ? w->cur : NULL;
}
/* self's waits fail with -ECANCELED: it was cancelled and no shield
 * scope is open (fiber.c). The seq_cst load of flags is the second half
 * of the cancel pair (sched.c) wherever a wait looks before parking. */
static inline bool weft__cancelled(weft_task *self)
{
	return (atomic_load(&self->flags) & WEFT__F_CANCEL) &&
	       !atomic_load_explicit(&self->shield, memory_order_relaxed);
}
/* map a park reason to the errno a wait returns */
static inline int weft__reason_err(int r)
{
	return r == WEFT__R_CANCEL  ? -ECANCELED
	       : r == WEFT__R_TIMER ? -ETIMEDOUT
	       : r == WEFT__R_NOMEM ? -ENOMEM
				    : 0;
}
bool weft__wake(weft_task *f, uint32_t seq, int reason) WEFT__HIDDEN;
/* group.c: a group child's fiber function, and its end when it got no stack */
void *weft__group_child_main(void *arg) WEFT__HIDDEN;
void weft__group_child_nostack(void *arg) WEFT__HIDDEN;
bool weft__wake_ex(weft_task *f, uint32_t seq, int reason,
		   bool fifo) WEFT__HIDDEN;
/* front: 0 the back of the queue, WEFT__FRONT the front (a completion, in
 * order), WEFT__FRONT_YIELD the front for a yielder (sim.c tells the two
 * apart; the threaded runtime does not) */
#define WEFT__FRONT 1
#define WEFT__FRONT_YIELD 2
void weft__reap_notify(struct weft__worker *w) WEFT__HIDDEN;
void weft__schedule(struct weft__worker *w, weft_task *f,
		    int front) WEFT__HIDDEN;
void weft__schedule_rt(struct weft__rt *held, struct weft__worker *w,
		       weft_task *f, int front) WEFT__HIDDEN;
void weft__worker_loop(struct weft__worker *w) WEFT__HIDDEN;
void weft__switch_out(struct weft__worker *w, weft_task *self,
		      int action) WEFT__HIDDEN;
void weft__after_switch(struct weft__worker *w) WEFT__HIDDEN;
uint64_t weft__live_count(struct weft__rt *rt) WEFT__HIDDEN;
bool weft__try_terminate(struct weft__rt *rt) WEFT__HIDDEN;
void weft__begin_shutdown(struct weft__rt *rt) WEFT__HIDDEN;

enum { WEFT__ACT_NONE, WEFT__ACT_YIELD, WEFT__ACT_PARK, WEFT__ACT_EXIT };

/* blocking.c */
struct weft__blocking;
int weft__blocking_init(struct weft__rt *rt) WEFT__HIDDEN;
void weft__blocking_fini(struct weft__rt *rt) WEFT__HIDDEN;

/* io/uring.c: one in-flight operation, on the issuing fiber's stack */
struct weft__op {
	weft_task *f;
	struct weft__worker *w; /* the ring it was queued on */
	_Atomic uint32_t seq;   /* f's current park seq (the op handshake) */
	_Atomic int done;       /* 0 in flight, 1 completing, 2 completed */
	int32_t res;
	uint32_t cflags;
	struct __kernel_timespec ts; /* the linked timeout's deadline */
	struct weft__op *cancel_next;
	uint64_t ud; /* user_data: generation << 48 | address */
	bool listed; /* on w's cancel list (under w->cancel_lock) */
	bool revoked; /* a weft_close of fd cancelled it (owner of w) */
	int fd;       /* the descriptor it works on, -1: not tracked */
	struct weft__op *inext, *iprev; /* w->ops_head, while fd >= 0 */
	bool sure;   /* seeded runs: completes without a peer (sim.c) */
	bool held;   /* seeded runs: reaped, its completion held back */
};
struct io_uring_sqe *weft__io_sqe(struct weft__worker *w) WEFT__HIDDEN;
int weft__io_submit_wait(struct weft__worker *w, weft_task *self,
			 struct weft__op *op,
			 struct io_uring_sqe *sqe) WEFT__HIDDEN;
int weft__io_check(weft_task *self) WEFT__HIDDEN;
void weft__io_flush(struct weft__worker *w) WEFT__HIDDEN;
void weft__io_flush_now(struct weft__worker *w) WEFT__HIDDEN;
void weft__io_request_cancel(struct weft__op *op) WEFT__HIDDEN;
void weft__io_unlist(struct weft__op *op) WEFT__HIDDEN;
/* weft_close: end every op in flight on fd, on every ring, with -EBADF */
void weft__io_revoke(struct weft__worker *me, weft_task *self,
		     int fd) WEFT__HIDDEN;
#define WEFT__FDOPS_MAX (1u << 20) /* fds counted per ring; above: assumed busy */
void weft__io_defer_cancel(struct weft__op *op) WEFT__HIDDEN;
uint64_t weft__io_new_ud(struct weft__worker *w, void *p) WEFT__HIDDEN;
/* io/mshot.c: multishot ops (weft_conn, weft_listener): user_data bit 63 */
#define WEFT__UD_MSHOT (1ull << 63)
#define WEFT__UD_ADDR ((1ull << 48) - 1)
void weft__mshot_cqe(struct weft__worker *w, struct io_uring_cqe *cqe) WEFT__HIDDEN;
void weft__pbuf_drain(struct weft__worker *w) WEFT__HIDDEN;
void weft__pbuf_fini(struct weft__worker *w) WEFT__HIDDEN;
/* io/signal.c: bit s-1 set by the handler of signal s; a reap that sees
 * any dispatches them to the waiting fibers */
extern _Atomic uint64_t weft__sig_pending WEFT__HIDDEN;
/* handlers of ours installed: WEFT__SIG_WAITS (weft_signal_*, signal.c),
 * WEFT__SIG_DUMP (the dump signal's, dump.c). TSan builds read it: while
 * nonzero they block signals across fiber switches (sched.c, ctx_jump) */
extern _Atomic int weft__sig_installed WEFT__HIDDEN;
#define WEFT__SIG_WAITS 1
#define WEFT__SIG_DUMP 2
void weft__signal_dispatch(void) WEFT__HIDDEN;
void weft__signal_fini(void) WEFT__HIDDEN;
/* no handler of weft's may take s (1..64): SIGKILL, SIGSTOP, the fault
 * signals (a handler that returns runs the faulting instruction again,
 * forever) and the C library's own (weft_signal_*, the dump signal) */
bool weft__signal_refused(int s) WEFT__HIDDEN;
void weft__signal_tsan_point(void) WEFT__HIDDEN;

/* io/uring.c */
int weft__ring_init(struct weft__worker *w) WEFT__HIDDEN;
void weft__ring_fini(struct weft__worker *w) WEFT__HIDDEN;
void weft__ring_thread_exit(struct weft__worker *w) WEFT__HIDDEN;
int weft__ring_wait(struct weft__worker *w, uint64_t timeout_ns) WEFT__HIDDEN;
void weft__ring_poll(struct weft__worker *w) WEFT__HIDDEN;
void weft__ring_wake(struct weft__worker *target) WEFT__HIDDEN;
void weft__ring_wake_efd(struct weft__worker *target) WEFT__HIDDEN;

uint64_t weft__clock(void) WEFT__HIDDEN;
uint64_t weft__clock_real(void) WEFT__HIDDEN;

static inline uint64_t weft__rand(struct weft__worker *w)
{
	/* xorshift64*: cheap, per worker, good enough for victim choice */
	uint64_t x = w->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	w->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

void weft__die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2))) WEFT__HIDDEN;

/* ---- observability (metrics.c, dump.c) ------------------------------------ */

/* An owner-only counter: a relaxed load and store, not an RMW (readers
 * sum with relaxed loads; a count may lag, never tear). */
#define WEFT__BUMP(a, n)                                                    \
	atomic_store_explicit(                                              \
		&(a), atomic_load_explicit(&(a), memory_order_relaxed) + (n), \
		memory_order_relaxed)

/* ms of CLOCK_MONOTONIC_COARSE, low 32 bits (wraps after 49 days; only
 * differences are used). ~3 ns: no clock read, one vDSO variable. In a
 * seeded run, virtual ms (a dump then replays exactly). */
extern _Atomic int weft__sim_on WEFT__HIDDEN;
extern _Atomic uint64_t weft__vclock WEFT__HIDDEN;
static inline uint32_t weft__coarse_ms(void)
{
	if (__builtin_expect(atomic_load_explicit(&weft__sim_on,
						  memory_order_relaxed), 0))
		return (uint32_t)(atomic_load_explicit(&weft__vclock,
						       memory_order_relaxed) /
				  1000000u);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint32_t)((uint64_t)ts.tv_sec * 1000u +
			  (uint64_t)ts.tv_nsec / 1000000u);
}

/* The wait notes' clock: weft__coarse_ms as the workers last read it.
 * A clock read per park cost 7% of a channel ping-pong and of fork-join
 * fib (5 ns of each park: the vDSO call and glibc's wrapper), so the
 * workers read it between fibers instead (sched.c, maintenance: every
 * WEFT_EVENT_INTERVAL ticks and after every park of the worker; as often
 * in a lone fiber's yields, fiber.c; and at weft_run's start), and a park
 * loads this variable. It lags the clock by the time since a worker last
 * ticked: microseconds while fibers come and go, but a fiber that ran N ms
 * without giving its worker up, while no other worker ticked, notes its
 * next wait up to N ms early (the dump shows that wait N ms too long; the
 * slow-fiber watchdog names such a fiber). Workers store it racily
 * (relaxed; only when it changed, so the line stays shared): it may step
 * back by a tick (a few ms) for a moment, never past the true clock. In a
 * seeded run, virtual ms, as the clock. */
extern _Atomic uint32_t weft__wait_clock WEFT__HIDDEN;
static inline void weft__wait_clock_tick(void)
{
	uint32_t now = weft__coarse_ms();
	if (atomic_load_explicit(&weft__wait_clock, memory_order_relaxed) !=
	    now)
		atomic_store_explicit(&weft__wait_clock, now,
				      memory_order_relaxed);
}
static inline uint32_t weft__wait_clock_ms(void)
{
	if (__builtin_expect(atomic_load_explicit(&weft__sim_on,
						  memory_order_relaxed), 0))
		return weft__coarse_ms();
	return atomic_load_explicit(&weft__wait_clock, memory_order_relaxed);
}

/* What a parked fiber waits on (dump.c prints it). */
enum weft__wait_kind {
	WEFT__W_NONE = 0,
	WEFT__W_SLEEP,     /* obj: the sleep's length in ms */
	WEFT__W_JOIN,      /* obj: id of the task joined */
	WEFT__W_WAIT_ANY,  /* obj: number of tasks */
	WEFT__W_CHAN_SEND, /* obj: the channel */
	WEFT__W_CHAN_RECV,
	WEFT__W_SELECT,    /* obj: number of cases */
	WEFT__W_MUTEX,     /* obj: the object, for these five */
	WEFT__W_COND,
	WEFT__W_SEM,
	WEFT__W_WG,
	WEFT__W_EVENT,
	WEFT__W_GROUP,
	WEFT__W_BLOCKING,  /* obj: the function run on the pool */
	WEFT__W_IO,        /* op: io_uring opcode, obj: the fd */
	WEFT__W_RWLOCK,    /* op: 1 to write, 0 to read; obj: the lock */
	WEFT__W_ONCE,      /* obj: the weft_once */
	WEFT__W_SIGNAL,    /* op: how many signals, obj: the first */
	WEFT__W_NKINDS
};
/* Record what f (the caller) is about to wait on, and since when (the
 * wait clock, above): called before every park_begin. Relaxed: the dump
 * reads it racily and says so. */
static inline void weft__wait_note(weft_task *f, unsigned kind, unsigned op,
				   uint64_t obj)
{
	atomic_store_explicit(&f->wait,
			      (uint64_t)kind << 56 | (uint64_t)(op & 0xff) << 48 |
				      (obj & 0xffffffffffffull),
			      memory_order_relaxed);
	atomic_store_explicit(&f->wait_ms, weft__wait_clock_ms(),
			      memory_order_relaxed);
}
#define WEFT__WAIT_KIND(w) ((unsigned)((w) >> 56))
#define WEFT__WAIT_OP(w) ((unsigned)((w) >> 48) & 0xff)
#define WEFT__WAIT_OBJ(w) ((w)&0xffffffffffffull)

/* io/uring.c's one-line hooks: an op queued by f on w's ring (counted,
 * and noted as f's wait), an op's completion reaped */
#define WEFT__M_IO_SUBMIT(w, f, sqe)                                        \
	(WEFT__BUMP((w)->m_io_sub, 1),                                      \
	 weft__wait_note((f), WEFT__W_IO, (sqe)->opcode, (uint32_t)(sqe)->fd))
#define WEFT__M_IO_DONE(w) WEFT__BUMP((w)->m_io_done, 1)

/* a fiber's cold data, in its slab chunk's side area (slab.c) */
struct weft__task_side {
	const void *spawn_site; /* return address of the spawn call */
	uint64_t sim_prio;      /* sim.c: PCT priority, 0 until first queued */
};
static inline struct weft__task_side *weft__task_side(weft_task *t)
{
	return weft__slab_side(t, sizeof(weft_task),
			       sizeof(struct weft__task_side));
}

/* the calling fiber resumed on w (sched.c, at every switch to a fiber) */
static inline void weft__m_resume(struct weft__worker *w, weft_task *t)
{
	WEFT__BUMP(w->m_polls, 1);
	atomic_store_explicit(&t->last_worker, (uint16_t)w->index,
			      memory_order_relaxed);
	atomic_store_explicit(&w->running, t, memory_order_release);
}

/* dump.c */
int weft__monitor_start(struct weft__rt *rt) WEFT__HIDDEN;
void weft__monitor_stop(struct weft__rt *rt) WEFT__HIDDEN;
void weft__report_unjoined(struct weft__rt *rt) WEFT__HIDDEN;
/* timer.c: timers pending in w's heap, read under its lock */
uint32_t weft__timers_len(struct weft__worker *w) WEFT__HIDDEN;
/* blocking.c: the pool's gauges, read under its lock */
void weft__blocking_stats(struct weft__rt *rt, unsigned *threads,
			  unsigned *idle, unsigned *queued) WEFT__HIDDEN;

/* ---- deterministic simulation (sim.c) ------------------------------------ */
#define WEFT__SIM_WORKERS 4 /* a seeded run's workers when none are asked for */
struct weft__op;
/* virtual time is on (weft__clock reads weft__vclock) */
extern _Atomic int weft__sim_on WEFT__HIDDEN;
extern _Atomic uint64_t weft__vclock WEFT__HIDDEN;
int weft__sim_new(struct weft__rt *rt, uint64_t seed, const char *faults,
		  unsigned pct) WEFT__HIDDEN;
void weft__sim_free(struct weft__rt *rt) WEFT__HIDDEN;
int weft__sim_faults_check(const char *spec) WEFT__HIDDEN; /* 0, -EINVAL */
int weft__sim_parse_seed(const char *e, uint64_t *out) WEFT__HIDDEN;
/* fibers queued on worker i (metrics; from any thread) */
size_t weft__sim_queued(struct weft__rt *rt, unsigned i) WEFT__HIDDEN;
void weft__sim_loop(struct weft__rt *rt) WEFT__HIDDEN;
int weft__sim_result(struct weft__rt *rt) WEFT__HIDDEN; /* 0 or -EDEADLK */
/* make f runnable (weft__schedule in sim mode); yield: it gave way */
void weft__sim_push(struct weft__rt *rt, struct weft__worker *w, weft_task *f,
		    bool yield) WEFT__HIDDEN;
/* whether an op completes with no peer acting (file ops): the clock
 * must not jump while one is in flight */
bool weft__sim_sure(const struct io_uring_sqe *sqe) WEFT__HIDDEN;
/* hold an I/O completion back (WEFT_FAULT_DELAY); false: deliver it now */
bool weft__sim_delay(struct weft__worker *w, struct weft__op *op, int res,
		     unsigned flags) WEFT__HIDDEN;
bool weft__sim_fault_slow(int kind) __attribute__((cold)) WEFT__HIDDEN;
/* a seeded fault of this kind (weft/sim.h) hits the caller now; only on a
 * simulated worker, never on another thread */
static inline bool weft__fault(int kind)
{
	if (__builtin_expect(!atomic_load_explicit(&weft__sim_on,
						   memory_order_relaxed), 1))
		return false;
	return weft__sim_fault_slow(kind);
}
/* WEFT_FAULT_SHORT: n, or (a seeded fault hit) a shorter length, on
 * descriptors where a short transfer is legal */
size_t weft__sim_short(int fd, size_t n) __attribute__((cold)) WEFT__HIDDEN;
static inline size_t weft__fault_short(int fd, size_t n)
{
	if (__builtin_expect(!atomic_load_explicit(&weft__sim_on,
						   memory_order_relaxed), 1))
		return n;
	return weft__sim_short(fd, n);
}
void weft__sim_preempt(void) __attribute__((cold)) WEFT__HIDDEN;
/* seeded runs: a point where the seed may switch fibers (sim.c) */
static inline void weft__sim_point(void)
{
	if (__builtin_expect(atomic_load_explicit(&weft__sim_on,
						  memory_order_relaxed), 0))
		weft__sim_preempt();
}
/* seeded draw in [0, n) for a fault's size (sim only) */
uint64_t weft__sim_rand(uint64_t n) WEFT__HIDDEN;
/* sched.c: run t on w until it gives w up (worker loop and sim master) */
void weft__run_on(struct weft__worker *w, weft_task *t) WEFT__HIDDEN;
/* io/uring.c: deliver an op's completion (what the reaper does) */
void weft__io_complete(struct weft__op *op, int res, unsigned flags) WEFT__HIDDEN;
/* blocking.c: wait up to ms until no call is queued or running (sim
 * master); true if none is */
bool weft__blocking_quiesce(struct weft__rt *rt, unsigned ms) WEFT__HIDDEN;
/* sim.c: weft_blocking in a seeded run waits for the pool there (pool_sync) */
void weft__sim_pool_sync(struct weft__rt *rt) WEFT__HIDDEN;

#endif
