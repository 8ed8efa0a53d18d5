/* blocking.c — the blocking pool: weft_blocking() runs fn on a plain thread
 * while the calling fiber parks (asyncio's loop.run_in_executor).
 *
 * Shape: one mutex, one condition variable, an intrusive FIFO of requests
 * and a list of pool threads, all in struct weft__blocking (rt->blocking).
 * A request (struct breq) lives on the calling fiber's stack: the fiber is
 * parked until the request is settled, so its frame stays put, and a call
 * costs no allocation.
 *
 * Who touches what
 *   Every field of the pool and of every request is read and written only
 *   under pool->lock, by the submitting fiber or a pool thread. There are no
 *   atomics here; the park word (sched.c) is the only lock-free hand-off,
 *   and nothing about the request is passed through it: after any wake the
 *   fiber re-reads its request under the lock.
 *   A request moves QUEUED -> RUNNING -> DONE. The submitter creates it
 *   QUEUED and links it in; a pool thread unlinks it and marks it RUNNING,
 *   calls fn without the lock, then stores the result and marks it DONE.
 *   The submitter may unlink a QUEUED request (cancel, deadline, no thread).
 *
 * The stack rule: weft_blocking returns only when its request is DONE, or
 * after it unlinked the request itself while QUEUED (or never queued it).
 * Either way no pool thread holds a pointer to it any more, and the fiber
 * takes the lock on every way out after queuing, so it leaves after the
 * pool thread's last access.
 *
 * The wake rule: a pool thread marks a request DONE and calls
 * weft__wake(fiber, seq) under the lock. The wake does not end when the
 * fiber is queued: weft__schedule goes on to notify an idle worker
 * (idle.c, io/uring.c: rt->idle and a worker's eventfd). Woken, the fiber
 * could run, finish, and let weft_run tear the workers down (close their
 * eventfds) while a wake made after unlocking was still writing to one.
 * Under the lock, the fiber's settle cannot pass before the wake has
 * returned, so no pool thread touches the runtime once its caller has left.
 * A late wake (the fiber was woken by a cancel or its deadline first and
 * waits for the lock) fails on the park word (state or seq) and touches
 * nothing but the weft_task. Lock order: pool->lock, then the locks the
 * wake takes (inject.lock, idle.lock); nothing takes pool->lock while
 * holding a runtime lock.
 *
 * The settle (how a wait ends): the fiber parks cancellably and bounded by
 * its deadline scope (weft__park_wait). Whatever woke it, it then takes the
 * lock and reads the state:
 *   DONE     -> 0 and the result: success wins over a cancel or deadline
 *               that raced with the completion;
 *   QUEUED   -> it unlinks the request: -ECANCELED / -ETIMEDOUT, fn never
 *               runs;
 *   RUNNING  -> fn cannot be interrupted: it parks again, not cancellable
 *               and without a deadline (park_begin(false) + park_commit;
 *               cancellation is sticky, a cancellable wait would return at
 *               once), storing the new seq in the request under the lock
 *               so the pool thread wakes that park; then settles again.
 *               A cancel then takes effect at the fiber's next wait.
 * A WOKEN wake with the request not DONE cannot happen (only the pool thread
 * wakes with the request's seq) and aborts.
 *
 * Threads ("queued > idle"): after linking a request the submitter starts a
 * thread if more requests are queued than threads wait on the condition
 * variable, up to rt->blocking_threads, and signals one idle thread if there
 * is one. `idle` counts the threads inside their wait loop (a signalled
 * thread stays counted until it holds the lock again), so two quick submits
 * to one idle thread start a second thread. A thread checks the queue
 * before it waits and after every call, so a queued request always has a
 * thread coming for it: the submitter guarantees nthreads >= 1 (or unlinks
 * its request and fails with -EAGAIN), and a thread retires only with the
 * queue empty. The submitter calls pthread_create under the lock, so the
 * thread id is written before anyone who may join it can see the thread.
 *
 * Retirement ("the retire chain"): a thread idle for WEFT_BLOCKING_IDLE_MS
 * (10 s) leaves the live list and takes the `retired` slot; the thread that
 * was there (retired earlier, exited or about to) is joined and freed by
 * the newcomer after it unlocks. weft__blocking_fini sets `stop`, wakes
 * everybody, and joins the live list and the one thread in `retired` (which
 * joined its predecessor before exiting): every thread is joined, none
 * outlives weft_run, and no worker ever blocks in pthread_join.
 *
 * Pool threads are not workers (weft__worker_self() is NULL there): fn may
 * call weft_spawn, weft_cancel and weft_now, not the fiber-only calls
 * (weft_blocking itself returns -EINVAL there). fini runs when every fiber
 * has finished, so no request is queued or running then.
 *
 * Rejected
 *   - A lock-free MPMC queue: a cancelled request must leave the middle of
 *     the queue, and the lock is held for a few loads and stores against
 *     calls that cost a thread hand-off anyway.
 *   - Heap-allocated requests (shared ownership, a refcount or a free on
 *     the last side): the fiber is parked until the settle anyway, so its
 *     stack is as good and costs nothing.
 *   - Passing the result through the park word or a lock-free flag: the
 *     settle needs the lock for QUEUED/RUNNING anyway, and one path is
 *     easier to check (and for TSan to follow) than two.
 *   - Waking after unlocking (a shorter critical section): breaks the wake
 *     rule; TSan caught a pool thread writing to a worker's eventfd while
 *     weft_run closed it.
 *   - Detached threads that exit on their own: weft_run could not promise
 *     that no thread outlives it. Joining retirees from the submitter:
 *     a worker would block in pthread_join.
 *   - Interrupting a running fn (pthread_cancel, signals): unsafe for
 *     arbitrary C code that holds locks or memory.
 */
#include <string.h>
#include <time.h>

#include "internal.h"

#ifndef WEFT_BLOCKING_IDLE_MS
#define WEFT_BLOCKING_IDLE_MS 10000 /* a pool thread retires after this idle */
#endif

enum { BREQ_QUEUED, BREQ_RUNNING, BREQ_DONE };

/* One call; on the calling fiber's stack. Every field under pool->lock. */
struct breq {
	struct breq *prev, *next; /* queue links while QUEUED */
	void *(*fn)(void *);      /* set before linking, then read-only */
	void *arg;
	void *result;             /* written by the pool thread (-> DONE) */
	weft_task *fiber;         /* the caller; read-only */
	uint32_t seq;             /* the caller's current park: the wake's */
	int state;                /* BREQ_*: see the header comment */
};

/* One pool thread; malloc'd by its creator, freed by whoever joins it. */
struct bthread {
	pthread_t tid;               /* written by the creator under the lock */
	struct bthread *prev, *next; /* live list, under the lock */
	struct weft__blocking *pool;
};

struct weft__blocking {
	pthread_mutex_t lock;
	pthread_cond_t cond;       /* idle threads wait here (CLOCK_MONOTONIC) */
	struct breq *head, *tail;  /* FIFO of QUEUED requests */
	unsigned queued;           /* length of the FIFO */
	unsigned nthreads;         /* live threads: started, not retired */
	unsigned idle;             /* live threads inside their wait loop */
	unsigned starting;         /* started, not yet at their first lock */
	unsigned max_threads, max_queued; /* from rt; read-only */
	unsigned running;          /* calls in fn now */
	pthread_cond_t quiet;      /* signalled when none queued or running */
	bool stop;                 /* set by fini: every thread exits */
	struct bthread *threads;   /* live list */
	struct bthread *retired;   /* retired, not yet joined (the chain) */
};

/* ---- the queue (under the lock) --------------------------------------------- */

static void q_push(struct weft__blocking *p, struct breq *r)
{
	r->next = NULL;
	r->prev = p->tail;
	if (p->tail)
		p->tail->next = r;
	else
		p->head = r;
	p->tail = r;
	p->queued++;
}

static void q_unlink(struct weft__blocking *p, struct breq *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		p->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		p->tail = r->prev;
	r->prev = r->next = NULL;
	p->queued--;
}

/* ---- pool threads ------------------------------------------------------------- */

static void deadline_in(struct timespec *ts, uint64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	uint64_t ns = (uint64_t)ts->tv_nsec + ms % 1000 * 1000000ull;
	ts->tv_sec += (time_t)(ms / 1000 + ns / 1000000000ull);
	ts->tv_nsec = (long)(ns % 1000000000ull);
}

static void *pool_thread(void *arg)
{
	struct bthread *self = arg;
	struct weft__blocking *p = self->pool;
	struct bthread *join = NULL; /* our predecessor in the retire chain */

	pthread_setname_np(pthread_self(), "weft-blocking");
	pthread_mutex_lock(&p->lock);
	p->starting--;
	for (;;) {
		if (!p->head && !p->stop) {
			struct timespec until;
			deadline_in(&until, WEFT_BLOCKING_IDLE_MS);
			int e = 0;
			p->idle++;
			while (!p->head && !p->stop && e != ETIMEDOUT)
				e = pthread_cond_timedwait(&p->cond, &p->lock,
							   &until);
			p->idle--;
			if (!p->head && !p->stop) { /* idle too long: retire */
				if (self->prev)
					self->prev->next = self->next;
				else
					p->threads = self->next;
				if (self->next)
					self->next->prev = self->prev;
				p->nthreads--;
				join = p->retired;
				p->retired = self;
				break;
			}
		}
		if (!p->head) /* stop, and nothing left (there never is) */
			break;
		struct breq *r = p->head;
		q_unlink(p, r);
		r->state = BREQ_RUNNING;
		p->running++;
		void *(*fn)(void *) = r->fn;
		void *fa = r->arg;
		pthread_mutex_unlock(&p->lock);

		void *res = fn(fa); /* r stays valid: its fiber waits for DONE */

		pthread_mutex_lock(&p->lock);
		r->result = res;
		r->state = BREQ_DONE;
		if (--p->running == 0 && !p->queued)
			pthread_cond_broadcast(&p->quiet);
		/* under the lock: the fiber cannot leave weft_blocking (and the
		 * runtime cannot end) until this wake has returned ("the wake
		 * rule"); once we unlock, r may be gone */
		weft__wake(r->fiber, r->seq, WEFT__R_WOKEN);
	}
	pthread_mutex_unlock(&p->lock);
	if (join) {
		pthread_join(join->tid, NULL);
		free(join);
	}
	return NULL;
}

/* Under the lock: start one more pool thread. 0 or a negative errno. */
static int start_thread(struct weft__blocking *p)
{
	struct bthread *t = malloc(sizeof *t);
	if (!t)
		return -ENOMEM;
	t->pool = p;
	int e = pthread_create(&t->tid, NULL, pool_thread, t);
	if (e) {
		free(t);
		return -e;
	}
	t->prev = NULL;
	t->next = p->threads;
	if (p->threads)
		p->threads->prev = t;
	p->threads = t;
	p->nthreads++;
	p->starting++;
	return 0;
}

/* ---- the runtime's side ---------------------------------------------------------- */

int weft__blocking_init(struct weft__rt *rt)
{
	struct weft__blocking *p = malloc(sizeof *p);
	if (!p)
		return -ENOMEM;
	memset(p, 0, sizeof *p);
	p->max_threads = rt->blocking_threads ? rt->blocking_threads : 1;
	p->max_queued = rt->blocking_queue ? rt->blocking_queue : 1;
	pthread_condattr_t ca;
	int e = pthread_condattr_init(&ca);
	if (!e) {
		e = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		if (!e)
			e = pthread_cond_init(&p->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	if (e) {
		free(p);
		return -e;
	}
	pthread_condattr_t qa; /* CLOCK_MONOTONIC too (deadline_in) */
	pthread_condattr_init(&qa);
	pthread_condattr_setclock(&qa, CLOCK_MONOTONIC);
	pthread_cond_init(&p->quiet, &qa);
	pthread_condattr_destroy(&qa);
	pthread_mutex_init(&p->lock, NULL);
	rt->blocking = p;
	return 0;
}

void weft__blocking_fini(struct weft__rt *rt)
{
	struct weft__blocking *p = rt->blocking;
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->head)
		weft__die("blocking pool: %u call(s) still queued at shutdown",
			  p->queued);
	p->stop = true;
	pthread_cond_broadcast(&p->cond);
	struct bthread *live = p->threads, *retired = p->retired;
	p->threads = p->retired = NULL;
	p->nthreads = 0;
	pthread_mutex_unlock(&p->lock);
	while (live) {
		struct bthread *nx = live->next;
		pthread_join(live->tid, NULL);
		free(live);
		live = nx;
	}
	if (retired) { /* it joined its own predecessor before exiting */
		pthread_join(retired->tid, NULL);
		free(retired);
	}
	pthread_cond_destroy(&p->cond);
	pthread_cond_destroy(&p->quiet);
	pthread_mutex_destroy(&p->lock);
	free(p);
	rt->blocking = NULL;
}

/* ---- the fiber's side --------------------------------------------------------------- */

int weft_blocking(void *(*fn)(void *), void *arg, void **result)
{
	struct weft__worker *w;
	weft_task *self = weft__self(&w);
	if (!self || !fn)
		return -EINVAL;
	struct weft__blocking *p = w->rt->blocking;
	/* seq_cst: as weft_sleep; a later cancel is caught by the park */
	if (weft__cancelled(self))
		return -ECANCELED;
	if (self->deadline && self->deadline <= weft__clock())
		return -ETIMEDOUT;

	struct breq req = {.fn = fn, .arg = arg, .fiber = self,
			   .state = BREQ_QUEUED};
	pthread_mutex_lock(&p->lock);
	/* full: max_queued calls already wait with no thread coming for them
	 * (an idle one, one starting, or one a call may still start). It
	 * used to count calls an idle or starting thread was about to take:
	 * 4 threads and a queue of 1 refused 3 of 4 calls at once */
	unsigned coming = p->idle + p->starting +
			  (p->max_threads - p->nthreads);
	if (p->queued >= coming + p->max_queued) {
		pthread_mutex_unlock(&p->lock);
		return -EAGAIN;
	}
	/* announce the park before a pool thread can see the request */
	weft__wait_note(self, WEFT__W_BLOCKING, 0, (uintptr_t)fn);
	req.seq = weft__park_begin(self, true);
	q_push(p, &req);
	if (p->queued > p->idle + p->starting && p->nthreads < p->max_threads &&
	    start_thread(p) && p->nthreads == 0) {
		/* no thread exists and none could be started: nobody saw it */
		q_unlink(p, &req);
		pthread_mutex_unlock(&p->lock);
		weft__park_abort(self);
		return -EAGAIN;
	}
	if (p->idle)
		pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	/* Seeded: the pool thread raced this fiber to its park. Done first,
	 * its wake found us PARKING and we went on in this step; else we
	 * parked and the master took the wake in at a later step: two runs
	 * of one seed took either path. Wait for the call here, as the
	 * master waits for the pool at each step (pool_sync): it is done
	 * (its wake taken) before we park, in every run, unless it runs over
	 * the master's limit and becomes an outside event (docs/testing.md). */
	if (w->sim)
		weft__sim_pool_sync(w->rt);

	/* the settle (header comment) */
	int r = weft__park_wait(self);
	for (;;) {
		pthread_mutex_lock(&p->lock);
		if (req.state == BREQ_DONE) {
			void *res = req.result;
			pthread_mutex_unlock(&p->lock);
			if (result)
				*result = res;
			return 0;
		}
		if (r == WEFT__R_WOKEN)
			weft__die("weft_blocking: woken before the call was "
				  "done (state %d)",
				  req.state);
		if (req.state == BREQ_QUEUED) {
			q_unlink(p, &req);
			pthread_mutex_unlock(&p->lock);
			return weft__reason_err(r);
		}
		/* RUNNING: wait it out, deaf to cancel and deadline */
		req.seq = weft__park_begin(self, false);
		pthread_mutex_unlock(&p->lock);
		r = weft__park_commit(self);
	}
}

/* Seeded runs (sim.c): wait up to ms until no call is queued or running,
 * so that a call's wake-up comes at a step the seed fixes, not when the
 * pool thread happens to finish. True if the pool is idle. */
bool weft__blocking_quiesce(struct weft__rt *rt, unsigned ms)
{
	struct weft__blocking *p = rt->blocking;
	struct timespec until;
	deadline_in(&until, ms);
	pthread_mutex_lock(&p->lock);
	int e = 0;
	while ((p->queued || p->running) && e != ETIMEDOUT)
		e = pthread_cond_timedwait(&p->quiet, &p->lock, &until);
	bool quiet = !p->queued && !p->running;
	pthread_mutex_unlock(&p->lock);
	return quiet;
}

/* Gauges for weft_metrics_get (metrics.c), under the pool's lock. */
void weft__blocking_stats(struct weft__rt *rt, unsigned *threads,
			  unsigned *idle, unsigned *queued)
{
	struct weft__blocking *p = rt->blocking;
	*threads = *idle = *queued = 0;
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	*threads = p->nthreads;
	*idle = p->idle;
	*queued = p->queued;
	pthread_mutex_unlock(&p->lock);
}
