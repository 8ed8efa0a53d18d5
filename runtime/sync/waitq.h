/* waitq.h — the one parking primitive under every channel, lock, signal and
 * group (waitq.c has the protocol). Internal. */
#ifndef WEFT_WAITQ_H
#define WEFT_WAITQ_H

#include "../internal.h"

/* select: records of one select share this; the first claim wins */
struct weft__sel {
	_Atomic int done;
	int index;
};

/* A waiter, on the waiting fiber's stack: valid while it is queued, and
 * until the fiber has settled after its park. */
struct weft__waiter {
	struct weft__waiter *next, *prev;
	weft_task *f;
	uint32_t seq;  /* f's park seq for this wait */
	bool queued;   /* in a list; changed only under the list's lock */
	bool held;     /* woken while the completer held the lock (below) */
	int status;    /* written by the completer, under the lock */
	void *data;    /* channels: the element to send / buffer to fill */
	struct weft__sel *sel; /* select, or NULL */
	int sel_index;
	uint64_t since; /* mutex: when the wait began */
	bool reader;    /* rwlock: waits to read */
};

struct weft__wlist {
	struct weft__waiter *head, *tail;
};

/* weft__spin_lock, weft__spin_unlock: internal.h */

/* The spin of a contended wait (mutex.c, rwlock.c): before it parks, a
 * waiter looks again WEFT__SPIN_LOOKS times, WEFT__SPIN_GAP pauses apart
 * (~0.8 us on this machine's EPYC, where a pause is 25 ns), and only
 * while another worker can be running the holder (weft__may_spin).
 * Far-apart looks matter more than their number: every look pulls the
 * line away from the holder's core, and a spinner that looks every pause
 * takes the lock at the holder's first unlock, so the lock and the data
 * it guards cross cores at every acquisition (benches/bench_mutex, 8
 * fibers on 2 workers: 64 looks 1 pause apart took 35-55 ms, 4 looks 32
 * apart 15 ms; one worker, no spin: 13 ms). Go spins alike: 4 rounds of
 * 30 pauses. */
#define WEFT__SPIN_LOOKS 4
static inline void weft__spin_gap(void)
{
	for (int j = 0; j < 32; j++)
		weft__cpu_relax();
}
static inline bool weft__may_spin(struct weft__worker *w)
{
	return w && w->rt->nworkers > 1 && !w->sim;
}
void weft__spin_wait_free(unsigned *l) WEFT__HIDDEN;

void weft__wl_push(struct weft__wlist *l, struct weft__waiter *w) WEFT__HIDDEN;
void weft__wl_push_head(struct weft__wlist *l,
			struct weft__waiter *w) WEFT__HIDDEN;
void weft__wl_remove(struct weft__wlist *l, struct weft__waiter *w) WEFT__HIDDEN;
struct weft__waiter *weft__wl_claim(struct weft__wlist *l) WEFT__HIDDEN;

/* a completed waiter's wake, captured under the lock, done after it */
struct weft__wakeup {
	weft_task *f;
	uint32_t seq;
	bool foreign; /* completed by a plain thread: entered (below) */
};
/* tests only: a plain thread's wake waits this long after its unlock
 * (tests/test_chan.c, the foreign completer at the end of a run), and
 * counts the waits it began */
extern _Atomic unsigned weft__test_wake_delay_us WEFT__HIDDEN;
extern _Atomic unsigned weft__test_wake_delayed WEFT__HIDDEN;
void weft__test_wake_delay(void) __attribute__((cold)) WEFT__HIDDEN;

/* Under the lock. A plain thread (not a worker) that completes a waiter
 * counts itself a foreign caller from here to its wake (weft__wakeup_do):
 * once it unlocks, the waiter's fiber may be woken by its cancel instead,
 * settle, end, and the run with it, and weft_run's teardown frees every
 * fiber's memory once no foreign caller is inside (runtime.c); the wake's
 * CAS on the fiber's park word would then touch freed memory. Here the
 * fiber is live (it waits on the record), so the run has not ended. */
static inline struct weft__wakeup weft__complete(struct weft__waiter *w,
						 int status)
{
	w->status = status;
	bool fe = !weft__worker_self();
	if (fe)
		weft__foreign_enter();
	return (struct weft__wakeup){w->f, w->seq, fe};
}
static inline void weft__wakeup_do(struct weft__wakeup k)
{
	if (k.foreign &&
	    atomic_load_explicit(&weft__test_wake_delay_us, memory_order_relaxed))
		weft__test_wake_delay();
	if (k.f)
		weft__wake(k.f, k.seq, WEFT__R_WOKEN);
	if (k.foreign)
		weft__foreign_exit();
}
/* Complete and wake w at once, under the lock (close, broadcast, the
 * wakes that release many): w->held tells the waiter to let the lock go
 * free before it returns ("the last touch", waitq.c). */
static inline void weft__wake_held(struct weft__waiter *w, int status)
{
	w->held = true;
	weft__wakeup_do(weft__complete(w, status));
}

/* Park on a waiter already queued under `lock` (which the caller holds and
 * this releases), then settle: returns the completer's status, or -ECANCELED
 * / -ETIMEDOUT if the waiter was still queued when the fiber woke. */
int weft__wl_wait(unsigned *lock, struct weft__wlist *l,
		  struct weft__waiter *w) WEFT__HIDDEN;

/* the public weft_waitq_ as a lock + list */
static inline struct weft__wlist *weft__wq_list(weft_waitq_ *q)
{
	return (struct weft__wlist *)&q->_head;
}

#endif
