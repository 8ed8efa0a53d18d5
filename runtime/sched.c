/* sched.c — the worker loop: pick, run, steal, park; and the park handshake.
 *
 * A worker runs fibers one at a time on its OS thread. When a fiber gives
 * up the worker (yield, park, exit) it picks the next local fiber itself
 * and switches straight to it ("direct hand-off": one switch, not two);
 * only when nothing local is runnable does it switch to the worker's
 * scheduler context, which steals, polls the ring and parks.
 *
 * Picking order (pick_local), per tick:
 *   1. every WEFT_EVENT_INTERVAL ticks, fire due timers and reap the ring
 *      (before anything else: a busy global queue must not starve them);
 *   2. every WEFT_GLOBAL_INTERVAL ticks, the global queue first (fairness);
 *   3. every WEFT_FAIR_INTERVAL ticks, the oldest local task if it has
 *      run before and waited WEFT_FAIR_AGE ticks (so a pair of fibers waking each other
 *      cannot starve the rest; see deque.c "Fairness");
 *   4. the newest local task (LIFO: a spawned or just-woken fiber runs
 *      next; fork-join goes depth-first and keeps few stacks live);
 *   5. a batch from the global queue.
 * A yielder goes to the front of the ring, behind everything queued.
 * Then (scheduler context only): timers and ring once more, steal half of
 * a random victim's ring if fewer than half the workers are searching
 * (spinning a few rounds first), and finally park (idle.c, "the searcher
 * relay").
 *
 * The after-switch rule: a fiber that switches out must not be made
 * runnable before its registers are saved, or another worker could resume
 * a half-saved context. So the outgoing fiber only records what should
 * happen to it (w->prev, w->prev_action) and the incoming context does it
 * right after the switch, in weft__after_switch: requeue a yielder, finish
 * parking a parker, free the stack of an exited fiber.
 *
 * The park handshake (every wait in weft goes through it)
 *   waiter:  seq = park_begin()      park word := (seq+1, PARKING)
 *            register (seq) wherever the wake will come from
 *            park_commit()           switch out; after_switch does
 *                                    CAS PARKING -> PARKED
 *   waker:   wake(f, seq, reason)    CAS PARKED -> RUNNABLE, then queue f;
 *                                    or CAS PARKING -> NOTIFIED, and the
 *                                    after_switch CAS fails and queues f.
 *   Exactly one CAS wins, so a fiber is queued exactly once per wait; a
 *   waker with an old seq (the fiber has moved on) fails its CAS. The
 *   reason travels in the park word, so the woken fiber learns why without
 *   another shared field.
 *   Cancellation ("the cancel pair"): weft_cancel sets F_CANCEL (an RMW)
 *   and then reads the park word; after_switch's CAS PARKING -> PARKED is
 *   followed by a read of F_CANCEL. All seq_cst, so at least one side sees
 *   the other: either the canceller's read sees PARKING or PARKED and it
 *   wakes the fiber, or it read the word before that CAS, so the CAS and
 *   the read after it come later and see F_CANCEL: after_switch wakes the
 *   fiber itself. park_begin's store is relaxed: it needs no fence of its
 *   own (a seq_cst store is an xchg on x86, two per channel round trip),
 *   and park_commit's look at F_CANCEL before switching out is only a
 *   shortcut.
 */

#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/membarrier.h>

#include "internal.h"

#ifdef WEFT__ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef WEFT__TSAN
#include <sanitizer/tsan_interface.h>
#endif

static _Thread_local struct weft__worker *tls_worker;

#if defined(__GNUC__) && !defined(__clang__)
__attribute__((noipa))
#endif
struct weft__worker *weft__worker_self(void)
{
	return tls_worker;
}

void weft__worker_set(struct weft__worker *w) { tls_worker = w; }

void weft__die(const char *fmt, ...)
{
	va_list ap;
	fputs("weft: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* ---- switching ------------------------------------------------------------ */

/* Switch from the context `from` (the caller) to `to`. Returns when `from`
 * is resumed, possibly on another worker; not at all if from_exiting. */
static inline void ctx_jump(struct weft__worker *w, struct weft__ctx *from,
			    struct weft__ctx *to, bool from_exiting)
{
	(void)w;
#ifdef WEFT__ASAN
	__sanitizer_start_switch_fiber(from_exiting ? NULL : &from->asan_fake,
				       to->stack_lo, to->stack_size);
#endif
#ifdef WEFT__TSAN
	/* TSan keeps a signal that arrives in a thread for the fiber whose
	 * state is current, and runs its handler when that fiber next enters
	 * an intercepted function. One that arrived just as a fiber parked
	 * waited for that fiber to run again, which, when the fiber was the
	 * one waiting for that signal (weft_signal_wait), was never
	 * (test_signal_stress: 2 hangs in 300 runs). While weft has handlers
	 * installed (weft_signal_*, the dump signal's: weft__sig_installed),
	 * signals are blocked across the switch (this call runs
	 * what is pending, for the fiber leaving) and unblocked by the
	 * fiber resumed, in weft__after_switch. TSan builds only. */
	if (atomic_load_explicit(&weft__sig_installed, memory_order_relaxed)) {
		sigset_t all;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &w->tsan_mask);
		w->tsan_masked = true;
	}
	__tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
	(void)from_exiting;
	weft__ctx_switch(&from->sp, to->sp, NULL);
#ifdef WEFT__ASAN
	__sanitizer_finish_switch_fiber(from->asan_fake, NULL, NULL);
#endif
}

/* ---- queues ---------------------------------------------------------------- */

/* Make f runnable. From a worker of rt: the back of its ring (it runs
 * next: a woken or spawned fiber is hot in cache), or for a yield the front
 * (it runs after everything queued); from anywhere else, or when the front
 * is busy, the global queue. Then wake an idle worker if one should come
 * and help (idle.c). */
void weft__schedule(struct weft__worker *w, weft_task *f, int front)
{
	weft__schedule_rt(NULL, w, f, front);
}

/* The same, for a caller that already holds the runtime (a spawn from
 * another thread): weft_run's teardown may clear weft__rt_cur while that
 * caller is still inside (counted in weft__foreign_busy), so reloading it
 * here could read NULL. */
void weft__schedule_rt(struct weft__rt *held, struct weft__worker *w,
		       weft_task *f, int front)
{
	struct weft__rt *rt;
	if (w && w->sim) { /* deterministic mode: the master picks (sim.c) */
		weft__sim_push(w->rt, w, f, front == WEFT__FRONT_YIELD);
		return;
	}
	/* read before the push: once queued, f may run (and end) elsewhere */
	bool woken = f->ctx.stack_lo && !front;
	if (!w)
		weft__foreign_enter();
	if (w && !front) {
		rt = w->rt;
		weft__dq_push(&w->dq, f, &rt->inject);
	} else if (w && weft__dq_push_front(&w->dq, f)) {
		rt = w->rt;
	} else {
		rt = w      ? w->rt
		     : held ? held
			    : atomic_load_explicit(&weft__rt_cur,
						   memory_order_acquire);
		if (!w && rt->sim) { /* another thread, seeded run: inbox */
			weft__sim_push(rt, NULL, f, false);
			weft__foreign_exit();
			return;
		}
		if (woken) {
			weft__inject_push_head(&rt->inject, f);
		} else {
			f->next = NULL;
			weft__inject_push(&rt->inject, f, f, 1);
		}
	}
	/* from outside, even a lone worker may be asleep in its ring; a
	 * worker reaping its ring decides after the batch (reap_notify); a
	 * woken fiber alone in our queue runs next, unless the current one
	 * hogs us, which the watcher notices ("Quiet wakes": the push, then
	 * the token's seq_cst load; a look of the watcher's that missed a
	 * plain push, deque.c, is followed by another while it holds the
	 * token) */
	if (!w || (rt->nworkers > 1 && !w->reaping &&
		   !(woken && weft__dq_len(&w->dq) == 1 &&
		     atomic_load(&rt->watch_armed))))
		weft__idle_notify(rt);
	if (!w)
		weft__foreign_exit();
}

static void maintenance(struct weft__worker *w)
{
	weft__wait_clock_tick(); /* the wait notes' clock (internal.h) */
	if (weft__timers_next(w) != UINT64_MAX)
		weft__timers_fire(w, weft__clock());
	weft__ring_poll(w);
	weft__stacks_tick(w); /* a batch of idle stacks' memory */
}

/* A batch from the global queue; if it put tasks back, that was a push:
 * notify (inject.c, weft__inject_pop_batch). */
static weft_task *inject_take(struct weft__worker *w, size_t max)
{
	bool rest_back;
	weft_task *t = weft__inject_pop_batch(&w->rt->inject, &w->dq, max,
					      &rest_back);
	if (rest_back && w->rt->nworkers > 1)
		weft__idle_notify(w->rt);
	return t;
}

/* Quiet wakes. Fibers woken by a worker's reap of its ring (I/O
 * completions) wake no idle worker at once. The reaping worker runs them
 * itself, newest first, from the next pick on; a burst a single worker
 * clears in a few microseconds is no reason to wake another (each wake is
 * a syscall on both sides, and the woken worker steals fibers whose next
 * I/O completes on this ring again, so they bounce between cores: a
 * 2-worker echo server, 50 connections, 64 B, spent about twice the CPU
 * per message of a 1-worker one when every completion notified). Instead:
 *   - after the batch, anything spilled to the global queue notifies at
 *     once; two or more fibers in the local queue start the quiet clock;
 *   - each pick (pick_local) looks at it: the queue down to one stops it,
 *     WEFT_QUIET_NS (20 us) of backlog notifies, as a push would have;
 *   - a fiber that hogs its worker stops the picks, so a parked watcher
 *     (the one holding the token rt->watch_armed, see watch_arm) wakes
 *     every WEFT_WATCH_NS (1 ms) while some worker is awake and, if a
 *     quiet clock has run past WEFT_QUIET_NS, leaves its park to steal:
 *     reaped fibers wait at most ~1 ms behind a hog (Go preempts a hog
 *     after 10 ms). An idle runtime parks without a timeout as before.
 * The same holds for a fiber woken (not spawned) by a fiber of this
 * worker while a watcher holds the token: alone in the queue it runs at
 * the next pick, so it notifies nobody (a 2-worker channel ping-pong
 * woke the idle worker ~3,400 times per million round trips: 6,800
 * io_uring_enter calls, now ~150; 141 -> 131 ms). Behind a hog, the
 * watcher sees that queue's word and pop count unchanged between two of
 * its looks and steals it (Go's runnext is stolen after ~3 us; Tokio's
 * LIFO slot had no such bound, its issue #4941).
 * No work is lost: it sits in the queue of a worker that is awake and
 * runs it before it parks; the clock only decides when to share it. */
void weft__reap_notify(struct weft__worker *w)
{
	struct weft__rt *rt = w->rt;
	if (rt->nworkers < 2 || w->sim)
		return;
	if (!weft__inject_empty(&rt->inject)) {
		weft__idle_notify(rt);
	} else if (weft__dq_len(&w->dq) >= 2 &&
		   !atomic_load_explicit(&w->quiet_since,
					 memory_order_relaxed)) {
		/* seq_cst store, then load: against watch_arm's store, then
		 * loads. Either the watcher sees this clock and keeps its
		 * timeout, or we see it unarmed and notify as before. */
		atomic_store(&w->quiet_since, weft__clock());
		if (!atomic_load(&rt->watch_armed))
			weft__idle_notify(rt);
	}
}

static void quiet_check(struct weft__worker *w)
{
	uint64_t since =
		atomic_load_explicit(&w->quiet_since, memory_order_relaxed);
	if (!since)
		return;
	if (weft__dq_len(&w->dq) < 2) {
		atomic_store_explicit(&w->quiet_since, 0, memory_order_relaxed);
	} else if (weft__clock() - since >= WEFT_QUIET_NS) {
		atomic_store_explicit(&w->quiet_since, 0, memory_order_relaxed);
		weft__idle_notify(w->rt);
	}
}

/* The quiet watcher: at most one parked worker holds rt->watch_armed (its
 * index + 1) and wakes every WEFT_WATCH_NS to look at quiet clocks.
 * Giving the token up is a seq_cst RMW followed by seq_cst loads of the
 * clocks, against reap_notify's seq_cst store of a clock followed by a
 * load of the token: either the holder sees the clock and keeps watching,
 * or the reaper sees no watcher and notifies as before. */
static bool any_quiet(struct weft__rt *rt)
{
	for (unsigned i = 0; i < rt->nworkers; i++)
		if (atomic_load(&rt->workers[i].quiet_since))
			return true;
	return false;
}

static void watch_release(struct weft__worker *w)
{
	unsigned me = w->index + 1;
	/* relaxed look first: only the holder writes its own index there, so
	 * a non-holder parking does not pull the token's line with a CAS */
	if (atomic_load_explicit(&w->rt->watch_armed, memory_order_relaxed) ==
	    me)
		atomic_compare_exchange_strong(&w->rt->watch_armed, &me, 0);
}

static bool any_work_visible(struct weft__rt *rt);

/* Before each park: hold the token (and wake within WEFT_WATCH_NS) while
 * some worker is awake (it may reap, then hog) or a quiet clock runs, and
 * nobody else holds it. Returns whether w holds it. */
static bool watch_arm(struct weft__worker *w)
{
	struct weft__rt *rt = w->rt;
	watch_release(w);
	if (!weft__idle_others_awake(&rt->idle) && !any_quiet(rt) &&
	    !any_work_visible(rt))
		return false;
	unsigned none = 0;
	return atomic_compare_exchange_strong(&rt->watch_armed, &none,
					      w->index + 1);
}

/* For the watcher: some other worker's quiet clock ran out, or its queue
 * holds work and its word and pop count are what they were at our last
 * look (the owner has not popped since: a hog). Records this look. */
static bool quiet_stale(struct weft__worker *w, uint64_t now)
{
	struct weft__rt *rt = w->rt;
	bool stale = false;
	for (unsigned i = 0; i < rt->nworkers; i++) {
		struct weft__worker *v = &rt->workers[i];
		if (v == w)
			continue;
		uint64_t since =
			atomic_load_explicit(&v->quiet_since, memory_order_relaxed);
		if (since && now - since >= WEFT_QUIET_NS)
			stale = true;
		/* a lone woken fiber: the owner has not popped since our
		 * last look */
		uint32_t pops =
			atomic_load_explicit(&v->dq.pops, memory_order_relaxed);
		uint64_t word = weft__dq_word(&v->dq);
		if (weft__dq_word_len(word) &&
		    word == atomic_load_explicit(&v->seen_word,
						 memory_order_relaxed) &&
		    pops == atomic_load_explicit(&v->seen_pops,
						 memory_order_relaxed))
			stale = true;
		atomic_store_explicit(&v->seen_word, word, memory_order_relaxed);
		atomic_store_explicit(&v->seen_pops, pops, memory_order_relaxed);
	}
	return stale;
}

static weft_task *pick_local(struct weft__worker *w)
{
	struct weft__rt *rt = w->rt;
	weft_task *t;
	w->dq.tick++;
	quiet_check(w);
	/* timers and the ring first: they must not wait behind the queues */
	if (w->dq.tick % WEFT_EVENT_INTERVAL == 0)
		maintenance(w);
	else if (w->io_dirty && (w->dq.tick & 7) == 0)
		weft__io_flush(w); /* batched: one enter for many fibers' SQEs */
	/* A queue that ran dry is not flushed here: find_work's maintenance
	 * follows at once, and its one io_uring_enter both submits and takes
	 * the completions (a flush of its own made that two: 0.79 enters per
	 * echoed message at 1,000 connections, 0.43 without) */
	if (w->dq.tick % WEFT_GLOBAL_INTERVAL == 0 &&
	    (t = weft__inject_pop(&rt->inject)))
		return t;
	if (w->dq.tick % WEFT_FAIR_INTERVAL == 0 &&
	    weft__dq_front_age(&w->dq) > WEFT_FAIR_AGE &&
	    (t = weft__dq_pop_front(&w->dq)))
		return t;
	if ((t = weft__dq_pop(&w->dq)))
		return t;
	size_t max = atomic_load_explicit(&rt->inject.len,
					  memory_order_relaxed) /
			     rt->nworkers +
		     1;
	if (max > WEFT_DEQUE_CAP / 2)
		max = WEFT_DEQUE_CAP / 2;
	return inject_take(w, max);
}

static bool local_has_work(struct weft__worker *w)
{
	return weft__dq_len(&w->dq) != 0;
}

/* A fiber that could not get a stack ends without running. */
static void fail_nostack(struct weft__worker *w, weft_task *t)
{
	atomic_fetch_or(&t->flags, WEFT__F_NOMEM);
	/* A joiner learns -ENOMEM; a detached fiber has none, and what it
	 * was to do (close its connection, ...) silently never happens:
	 * say so, for the first few (not in seeded runs: injected faults) */
	static _Atomic unsigned told;
	if (!w->sim && t->fn != weft__group_child_main && /* its group says */
	    atomic_load_explicit(&t->join_word, memory_order_acquire) ==
		    WEFT__DETACH_MARK &&
	    atomic_fetch_add(&told, 1) < 10)
		fprintf(stderr,
			"weft: detached fiber %llu%s%s%s got no stack (out of "
			"memory or map entries): it never ran\n",
			(unsigned long long)t->id, t->name ? " \"" : "",
			t->name ? t->name : "", t->name ? "\"" : "");
	if (t->fn == weft__group_child_main) /* a group child: leave the group */
		weft__group_child_nostack(t->arg);
	weft__fiber_finish(w, t);
}

/* Next local fiber that is ready to run (has a stack), or NULL. */
static weft_task *next_ready(struct weft__worker *w)
{
	for (;;) {
		weft_task *t = pick_local(w);
		if (!t || t->ctx.stack_lo || weft__fiber_start(w, t))
			return t;
		fail_nostack(w, t);
	}
}

/* ---- giving up the worker ------------------------------------------------- */

void weft__switch_out(struct weft__worker *w, weft_task *self, int action)
{
	w->prev = self;
	w->prev_action = action;
	/* seeded: back to the master, which picks (no direct hand-off) */
	weft_task *next = w->sim ? NULL : next_ready(w);
	struct weft__ctx *to = next ? &next->ctx : &w->sched;
	w->cur = next;
	if (next)
		weft__m_resume(w, next);
	else /* release: pairs with the watchdog's acquire (dump.c) */
		atomic_store_explicit(&w->running, NULL, memory_order_release);
	ctx_jump(w, &self->ctx, to, action == WEFT__ACT_EXIT);
	/* resumed, maybe on another worker: re-read the TLS */
	weft__after_switch(weft__worker_self());
}

static inline void finish_prev(struct weft__worker *w);

void weft__after_switch(struct weft__worker *w)
{
	finish_prev(w);
#ifdef WEFT__TSAN
	/* ctx_jump blocked signals for the switch; they stay blocked until
	 * the fiber left is dealt with: its exit destroys its TSan state,
	 * which for that call is the thread's current one, and a signal
	 * TSan took in that window was kept for a state about to be freed,
	 * and lost (test_signal_stress_churn: every run, before) */
	if (w->tsan_masked) {
		w->tsan_masked = false;
		pthread_sigmask(SIG_SETMASK, &w->tsan_mask, NULL);
	}
#endif
}

/* The fiber that switched to us: requeue it, finish parking it, or end it. */
static inline void finish_prev(struct weft__worker *w)
{
	weft_task *p = w->prev;
	if (!p)
		return;
	w->prev = NULL;
	switch (w->prev_action) {
	case WEFT__ACT_YIELD:
		weft__schedule(w, p, WEFT__FRONT_YIELD);
		break;
	case WEFT__ACT_PARK: {
		/* acquire (here and on CAS failure): a waker that found p
		 * PARKING wrote what it hands over before its CAS to NOTIFIED;
		 * p must see it when it runs */
		uint64_t s = atomic_load_explicit(&p->park,
						  memory_order_acquire);
		for (;;) {
			if (WEFT__PW_ST(s) == WEFT__PARKING) {
				/* release: the saved context (sp) is visible
				 * to the waker that CASes PARKED -> RUNNABLE
				 * (acquire) and queues p */
				if (atomic_compare_exchange_weak_explicit(
					    &p->park, &s,
					    (s & ~0xffull) | WEFT__PARKED,
					    memory_order_seq_cst,
					    memory_order_acquire)) {
					/* seq_cst, then the seq_cst load of
					 * flags: second half of the cancel
					 * pair (file header). A cancel that
					 * saw us before PARKING wakes us
					 * here (the wake is a no-op if p
					 * was woken meanwhile). */
					if (WEFT__PW_CANC(s) &&
					    (atomic_load(&p->flags) &
					     WEFT__F_CANCEL))
						weft__wake(p, WEFT__PW_SEQ(s),
							   WEFT__R_CANCEL);
					break;
				}
			} else { /* NOTIFIED: the waker left the queuing to us */
				atomic_store_explicit(
					&p->park, (s & ~0xffull) | WEFT__RUNNABLE,
					memory_order_relaxed);
				weft__schedule(w, p, false);
				break;
			}
		}
		break;
	}
	case WEFT__ACT_EXIT:
		weft__fiber_finish(w, p);
		break;
	}
}

/* ---- the park handshake --------------------------------------------------- */

uint32_t weft__park_begin(weft_task *self, bool cancellable)
{
	/* under a shield scope no wait is cancellable (fiber.c) */
	cancellable = cancellable &&
		      !atomic_load_explicit(&self->shield, memory_order_relaxed);
	uint64_t s = atomic_load_explicit(&self->park, memory_order_relaxed);
	uint32_t seq = WEFT__PW_SEQ(s) + 1;
	/* relaxed: a waker learns seq through whatever it synchronizes with
	 * (a lock, op->seq, join_word); the cancel pair is ordered by
	 * after_switch's CAS, not by this store (file header) */
	atomic_store_explicit(&self->park,
			      WEFT__PW(seq, 0, cancellable, WEFT__PARKING),
			      memory_order_relaxed);
	return seq;
}

/* Back out of a park that will not happen (the awaited thing was already
 * there, or the deadline had passed). Any waker that already holds our seq
 * may have marked us NOTIFIED meanwhile and its wake is dropped here: so a
 * caller must settle its registration after an abort exactly as after a
 * cancel (the waitq rule), and F_CANCEL is sticky anyway. */
void weft__park_abort(weft_task *self)
{
	uint64_t s = atomic_load_explicit(&self->park, memory_order_relaxed);
	atomic_store(&self->park, WEFT__PW(WEFT__PW_SEQ(s), 0, 0, WEFT__RUNNING));
}

int weft__park_commit(weft_task *self)
{
	/* acquire: a waker that already marked us NOTIFIED handed over what
	 * it wrote for us (a status, an element) before its CAS */
	uint64_t s = atomic_load_explicit(&self->park, memory_order_acquire);
	uint32_t seq = WEFT__PW_SEQ(s);
	if (WEFT__PW_ST(s) == WEFT__PARKING && WEFT__PW_CANC(s) &&
	    /* a cancel already seen: do not switch out at all (one that
	     * comes later is caught by after_switch, the cancel pair) */
	    (atomic_load_explicit(&self->flags, memory_order_relaxed) &
	     WEFT__F_CANCEL)) {
		uint64_t prev = atomic_exchange(
			&self->park, WEFT__PW(seq, 0, 0, WEFT__RUNNING));
		return WEFT__PW_ST(prev) == WEFT__NOTIFIED
			       ? WEFT__PW_REASON(prev)
			       : WEFT__R_CANCEL;
	}
	if (WEFT__PW_ST(s) == WEFT__PARKING) {
		weft__switch_out(weft__worker_self(), self, WEFT__ACT_PARK);
		/* acquire: pairs with the waker's CAS */
		s = atomic_load_explicit(&self->park, memory_order_acquire);
	}
	/* NOTIFIED before we left, or RUNNABLE after */
	atomic_store_explicit(&self->park, WEFT__PW(seq, 0, 0, WEFT__RUNNING),
			      memory_order_relaxed);
	/* the wait is over: a later park without a note reads "unknown" in
	 * the dump, not this one (relaxed: the dump reads it racily) */
	atomic_store_explicit(&self->wait, 0, memory_order_relaxed);
	return WEFT__PW_REASON(s);
}

/* Commit a park whose wake-ups are registered, bounded by the fiber's
 * deadline scope: adds a timer for the deadline if there is one. Returns
 * WEFT__R_WOKEN, WEFT__R_CANCEL or WEFT__R_TIMER (the deadline passed).
 * Callers must still settle their registration: a waker may have
 * completed it concurrently with a cancel or the deadline (each wait's
 * comment says how). */
int weft__park_wait(weft_task *self)
{
	uint64_t dl = self->deadline;
	if (dl) {
		uint64_t s = atomic_load_explicit(&self->park,
						  memory_order_relaxed);
		uint32_t seq = WEFT__PW_SEQ(s);
		if (dl <= weft__clock()) {
			weft__park_abort(self);
			/* a cancel wins over a passed deadline, as in the waits
			 * that look before parking (sleep, I/O, blocking,
			 * mutex): cancellation is sticky, every later wait
			 * returns -ECANCELED (task.md) */
			return WEFT__PW_CANC(s) && (atomic_load(&self->flags) &
						    WEFT__F_CANCEL)
				       ? WEFT__R_CANCEL
				       : WEFT__R_TIMER;
		}
		if (weft__timer_add(weft__worker_self(), self, dl, seq)) {
			weft__park_abort(self);
			return WEFT__R_NOMEM;
		}
	}
	int r = weft__park_commit(self);
	if (dl && r != WEFT__R_TIMER)
		weft__timer_del(self);
	return r;
}

bool weft__wake(weft_task *f, uint32_t seq, int reason)
{
	return weft__wake_ex(f, seq, reason, false);
}

/* A fiber woken by the reaper or a timer runs after the rest of its batch,
 * and its stack was cold: the switch to it stalled on its saved frame and
 * the frames above (weft__ctx_switch was 3.7% of a 1-worker echo server's
 * CPU at 1,000 connections, nearly all on its first loads). Prefetch them
 * now: server CPU per message 5.53 -> 4.94 us (benches/echo/ab.sh -r 9
 * -c 1000 -w 1, medians; 3 lines gave 5.14). PARKED: sp is settled. Hot
 * hand-offs between fibers (LIFO) skip it. */
static inline void prefetch_frames(weft_task *f)
{
	const char *sp = f->ctx.sp;
	for (int k = 0; k < 8; k++)
		__builtin_prefetch(sp + 64 * k);
}

/* fifo: queue the woken fiber at the front (behind everything queued).
 * The reaper and the timers use it: completions then run in the order
 * they completed, and a burst of new ones cannot starve older ones
 * (LIFO is for hand-offs between fibers, where the woken one is hot). */
bool weft__wake_ex(weft_task *f, uint32_t seq, int reason, bool fifo)
{
	/* acquire: pairs with after_switch's release (PARKED) */
	uint64_t s = atomic_load_explicit(&f->park, memory_order_acquire);
	for (;;) {
		if (WEFT__PW_SEQ(s) != seq)
			return false;
		int st = WEFT__PW_ST(s);
		if (reason == WEFT__R_CANCEL && !WEFT__PW_CANC(s))
			return false;
		int to;
		if (st == WEFT__PARKED)
			to = WEFT__RUNNABLE;
		else if (st == WEFT__PARKING)
			to = WEFT__NOTIFIED;
		else
			return false;
		/* acq_rel: acquire the parked context, release our reason */
		if (atomic_compare_exchange_weak_explicit(
			    &f->park, &s,
			    WEFT__PW(seq, reason, WEFT__PW_CANC(s), to),
			    memory_order_acq_rel, memory_order_acquire)) {
			if (to == WEFT__RUNNABLE) {
				if (fifo) /* a reaped batch (prefetch_frames) */
					prefetch_frames(f);
				weft__schedule(weft__worker_self(), f, fifo);
			}
			return true;
		}
	}
}

/* ---- the scheduler context ------------------------------------------------- */

/* A steal moved t, and what is now in w's (empty before) ring, to w. */
static weft_task *stolen(struct weft__worker *w, weft_task *t)
{
	WEFT__BUMP(w->m_steals, 1);
	WEFT__BUMP(w->m_stolen, 1 + weft__dq_len(&w->dq));
	return t;
}

static weft_task *steal_any(struct weft__worker *w)
{
	struct weft__rt *rt = w->rt;
	unsigned n = rt->nworkers;
	unsigned start = (unsigned)(weft__rand(w) % n);
	size_t max = WEFT_DEQUE_CAP / 2;
	weft_task *t = inject_take(w, max);
	if (t)
		return t;
	for (unsigned i = 0; i < n; i++) {
		unsigned vi = (start + i) % n;
		struct weft__worker *v = &rt->workers[vi];
		if (v == w)
			continue;
		/* relaxed: a hint; the steal's CAS on the word decides */
		uint32_t pops = atomic_load_explicit(&v->dq.pops,
						     memory_order_relaxed);
		uint64_t word = weft__dq_word(&v->dq);
		unsigned len = weft__dq_word_len(word);
		if (len >= 2 && (t = weft__dq_steal(&v->dq, &w->dq, NULL)))
			return stolen(w, t);
		if (len == 1) {
			/* a lone task: only once it has sat there since our
			 * last look (deque.c, "Lone tasks") */
			if (w->lone_victim == vi + 1 && w->lone_word == word &&
			    w->lone_pops == pops &&
			    (t = weft__dq_steal(&v->dq, &w->dq, &word)))
				return stolen(w, t);
			w->lone_victim = vi + 1;
			w->lone_word = word;
			w->lone_pops = pops;
		}
	}
	return NULL;
}

/* seq_cst loads: the parker's re-check (idle.c, "no lost wake-up") */
static bool any_work_visible(struct weft__rt *rt)
{
	if (atomic_load(&rt->inject.len))
		return true;
	for (unsigned i = 0; i < rt->nworkers; i++)
		if (!weft__dq_empty_sc(&rt->workers[i].dq))
			return true;
	return false;
}

uint64_t weft__live_count(struct weft__rt *rt)
{
	/* exits first, then spawns (acquire both): a spawn happens-before the
	 * exit of what it spawned, so every counted exit has its spawn
	 * counted and the difference never reads 0 while a fiber lives */
	uint64_t ex = 0, sp = 0;
	for (unsigned i = 0; i < rt->nworkers; i++)
		ex += atomic_load_explicit(&rt->workers[i].exited,
					   memory_order_acquire);
	for (unsigned i = 0; i < rt->nworkers; i++)
		sp += atomic_load_explicit(&rt->workers[i].spawned,
					   memory_order_acquire);
	/* seq_cst: the pair with a foreign spawn (weft__try_terminate) */
	sp += atomic_load(&rt->ext_spawned);
	return sp - ex;
}

/* Shutdown and no fiber left: tell every worker to exit. True if the
 * runtime terminates (now or already).
 *
 * The pair with a spawn from another thread (fiber.c): it counts itself in
 * ext_spawned, then looks at shutdown, and gives up (NULL) if it is set;
 * we look at shutdown, then count (seq_cst, all four). So a spawn that
 * goes on was counted before shutdown was set, and our count sees it.
 * Without it, a spawn that had looked just before a worker counted 0 was
 * queued after every worker had left: returned, never run. */
bool weft__try_terminate(struct weft__rt *rt)
{
	if (atomic_load(&rt->terminate))
		return true;
	if (!atomic_load(&rt->shutdown) || weft__live_count(rt))
		return false;
	atomic_store(&rt->terminate, 1);
	if (!rt->sim)
		weft__idle_notify_all(rt);
	return true;
}

static void end_search(struct weft__worker *w)
{
	if (!w->searching)
		return;
	w->searching = false;
	if (weft__idle_end_search(&w->rt->idle))
		weft__idle_notify(w->rt); /* the relay */
}

/* Busy time (metrics.c): a worker is busy from a wake to its next park.
 * Its owner adds each busy stretch to m_busy_ns as it parks; readers add
 * the current one from m_busy_since (release: pairs with metrics.c). */
static void busy_end(struct weft__worker *w)
{
	uint64_t since = atomic_load_explicit(&w->m_busy_since,
					      memory_order_relaxed);
	if (since)
		WEFT__BUMP(w->m_busy_ns, weft__clock() - since);
	atomic_store_explicit(&w->m_busy_since, 0, memory_order_release);
}

static bool busy_begin(struct weft__worker *w, bool notified)
{
	if (notified)
		WEFT__BUMP(w->m_unparks, 1);
	atomic_store_explicit(&w->m_busy_since, weft__clock(),
			      memory_order_release);
	return true;
}

/* The parked worker with the lowest index watches the other workers'
 * timers (timer.c, "Stuck owners"): one watcher, not a herd. Racy by
 * design: a stale answer costs one early wake-up or one late watch. */
static bool timer_watcher(struct weft__worker *w)
{
	struct weft__rt *rt = w->rt;
	for (unsigned i = 0; i < w->index; i++)
		if (atomic_load_explicit(&rt->workers[i].asleep,
					 memory_order_relaxed))
			return false;
	return rt->nworkers > 1;
}

/* Park until there may be work. Returns false when the runtime ends. */
static bool park(struct weft__worker *w)
{
	struct weft__rt *rt = w->rt;
	WEFT__BUMP(w->m_parks, 1);
	busy_end(w);
	unsigned last = weft__idle_to_parked(rt, w, w->searching);
	w->searching = false;
	/* the parker's half of "no lost wake-up" (idle.c): a push made while
	 * we still counted as unparked woke nobody. The last one awake takes
	 * it itself; the last searcher, with others awake, passes it on */
	if (last && any_work_visible(rt)) {
		if (!(last & WEFT__PARK_LAST_AWAKE))
			weft__idle_notify(rt);
		else if (weft__idle_from_parked(rt, w))
			return busy_begin(w, false);
		/* else a notifier already took us out: the loop sees it */
	}
	for (;;) {
		if (weft__try_terminate(rt))
			return false;
		uint64_t next = weft__timers_next(w), timeout = UINT64_MAX;
		atomic_store_explicit(&w->asleep, 1, memory_order_relaxed);
		bool watch = timer_watcher(w);
		if (watch) {
			uint64_t s = weft__timers_steal_next(w);
			next = s < next ? s : next;
		}
		/* idle stacks' memory (stack.c, "Release"): the watcher (or a
		 * lone worker) wakes when the shared list's period ends, each
		 * worker when its cache's does, and comes round at once while a
		 * debt remains; maintenance below does the work */
		if (watch || rt->nworkers == 1) {
			uint64_t s = weft__stacks_next(&rt->stacks);
			next = s < next ? s : next;
		}
		uint64_t c = weft__stacks_cache_next(w); /* our own cache */
		next = c < next ? c : next;
		/* quiet work behind a hog ("Quiet wakes") */
		bool armed = rt->nworkers > 1 && watch_arm(w);
		if (armed) {
			uint64_t s = weft__clock() + WEFT_WATCH_NS;
			next = s < next ? s : next;
		}
		if (next != UINT64_MAX) {
			uint64_t now = weft__clock();
			timeout = next > now ? next - now : 0;
		}
		if (timeout)
			weft__ring_wait(w, timeout);
		atomic_store_explicit(&w->asleep, 0, memory_order_relaxed);
		maintenance(w);
		if (watch)
			weft__timers_steal(w, weft__clock());
		bool stale = armed && quiet_stale(w, weft__clock());
		/* taken before the look at the watch: a notify that lands
		 * after the look must not send us off holding the token */
		bool notified = atomic_exchange(&w->notified, 0);
		if (armed && (stale || local_has_work(w) || notified)) {
			/* leaving: give the watch up; a clock still running
			 * is not stolen by us (we have work), so wake
			 * someone for it (who watches when it parks) */
			watch_release(w);
			if (!stale && any_quiet(rt))
				weft__idle_notify(rt);
		}
		if (notified) {
			w->searching = true; /* the notifier counted us */
			return busy_begin(w, true);
		}
		if (local_has_work(w) || stale) {
			notified = false;
			if (!weft__idle_from_parked(rt, w)) {
				atomic_store(&w->notified, 0);
				w->searching = true;
				notified = true;
			}
			return busy_begin(w, notified);
		}
	}
}

static weft_task *find_work(struct weft__worker *w)
{
	struct weft__rt *rt = w->rt;
	for (;;) {
		weft_task *t = pick_local(w);
		if (!t) {
			maintenance(w);
			t = pick_local(w);
		}
		if (!t && rt->nworkers > 1) {
			if (!w->searching)
				w->searching = weft__idle_try_search(&rt->idle);
			/* a searcher looks for WEFT_SPIN_NS before it parks:
			 * waking a parked worker costs a syscall on each side
			 * (~5 us), and work often shows up within microseconds
			 * (Go's spinning Ms do the same) */
			uint64_t until = 0;
			while (w->searching && !t) {
				if ((t = steal_any(w)))
					break;
				uint64_t now = weft__clock();
				/* overdue timers of a stuck worker (timer.c) */
				if (weft__timers_steal(w, now) &&
				    (t = pick_local(w)))
					break;
				if (!until)
					until = now + WEFT_SPIN_NS;
				else if (now >= until)
					break;
				/* look about once a microsecond: reading the
				 * victims' queue words more often would steal
				 * their cache lines from under their CASes */
				for (int j = 0; j < 64; j++)
					weft__cpu_relax();
			}
			w->lone_victim = 0;
		}
		if (t) {
			end_search(w);
			return t;
		}
		if (!park(w))
			return NULL;
	}
}

void weft__worker_loop(struct weft__worker *w)
{
	atomic_store_explicit(&w->m_busy_since, weft__clock(),
			      memory_order_release);
	for (;;) {
		weft_task *t = find_work(w);
		if (!t)
			break;
		weft__run_on(w, t);
	}
}

void weft__run_on(struct weft__worker *w, weft_task *t)
{
	if (!t->ctx.stack_lo && !weft__fiber_start(w, t)) {
		fail_nostack(w, t);
		return;
	}
	w->cur = t;
	weft__m_resume(w, t);
	ctx_jump(w, &w->sched, &t->ctx, false);
	weft__after_switch(w); /* the scheduler never migrates */
}

void weft__begin_shutdown(struct weft__rt *rt)
{
	/* seq_cst: pairs with weft_spawn's store of F_ALLOC then load of
	 * shutdown: a fiber spawned now is either seen by cancel_all or born
	 * cancelled. With membarrier the spawner has no fence: this call
	 * runs a full barrier on every thread of the process that is running
	 * now (the others pass one when they are next scheduled), between
	 * our store and our scan (fiber.c, weft__spawn_flags) */
	atomic_store(&rt->shutdown, 1);
	if (rt->membarrier &&
	    syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0))
		weft__die("membarrier failed after it was registered: %s",
			  strerror(errno));
	weft__cancel_all(rt);
	weft__idle_notify_all(rt);
}
