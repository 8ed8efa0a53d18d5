/* fiber.c — fiber life cycle and the task API (spawn, join, detach, cancel,
 * yield, sleep, gather).
 *
 * Memory: tasks come from a type-stable slab (slab.c), so a stale handle
 * (joined twice, cancelled after join) reads "not live" and misuse returns
 * -EINVAL instead of corrupting memory; the park word's seq is never reset
 * on reuse (sched.c: stale wakers fail). The handle protocol is written at
 * weft__fiber_finish.
 *
 * Rejected: a 32-byte handle apart from a fiber recycled at its exit (so
 * a million finished, unjoined tasks would cost 32 MB, not 128 MB). Built
 * and measured: fib(30) 0.13 -> 0.155 s, skynet 0.065 -> 0.084 s,
 * spawn_many 0.095 -> 0.125 s (two allocations and more cache lines per
 * task, and the handle crossing cores three times).
 */
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#ifdef WEFT__ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef WEFT__TSAN
#include <sanitizer/tsan_interface.h>
#include <pthread.h>
#include <signal.h>
#endif

/* ---- cancellation ---------------------------------------------------------- */

/* Mark f cancelled and wake it if it is parked in a cancellable wait (the
 * cancel pair, sched.c). Returns 0, or -EALREADY if f had finished (it
 * keeps its real outcome). */
static int cancel_task(weft_task *f)
{
	/* seq_cst: first half of the cancel pair */
	uint32_t fl = atomic_load(&f->flags);
	do {
		if (fl & WEFT__F_EXITED)
			return -EALREADY;
	} while (!atomic_compare_exchange_weak(&f->flags, &fl,
					       fl | WEFT__F_CANCEL));
	uint64_t s = atomic_load(&f->park);
	int st = WEFT__PW_ST(s);
	if ((st == WEFT__PARKING || st == WEFT__PARKED) && WEFT__PW_CANC(s))
		weft__wake(f, WEFT__PW_SEQ(s), WEFT__R_CANCEL);
	return 0;
}

static void cancel_walk(void *p, void *ctx)
{
	(void)ctx;
	weft_task *f = p;
	uint32_t fl = atomic_load(&f->flags);
	if ((fl & WEFT__F_ALLOC) && !(fl & WEFT__F_EXITED))
		cancel_task(f);
}

void weft__cancel_all(struct weft__rt *rt)
{
	weft__slab_walk(&rt->fibers, cancel_walk, NULL);
}

/* ---- life cycle ------------------------------------------------------------ */

static void fiber_main(void *p, void *unused)
{
	(void)unused;
	weft_task *f = p;
#ifdef WEFT__ASAN
	__sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
	weft__after_switch(weft__worker_self());
	f->result = f->fn(f->arg);
	weft__switch_out(weft__worker_self(), f, WEFT__ACT_EXIT);
	__builtin_unreachable();
}

#ifdef WEFT__TSAN
/* A TSan fiber state. Its creation makes it the thread's current state for
 * a moment, half built: while weft has handlers installed, no signal is
 * taken in that window (see weft__after_switch for its destruction). */
static void *tsan_fiber_new(void)
{
	if (!atomic_load_explicit(&weft__sig_installed, memory_order_relaxed))
		return __tsan_create_fiber(0);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	void *t = __tsan_create_fiber(0);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return t;
}
#endif

/* Give f its stack and first frame. False if no stack could be had. */
bool weft__fiber_start(struct weft__worker *w, weft_task *f)
{
	if (!(atomic_load(&f->flags) & WEFT__F_MAIN) &&
	    weft__fault(WEFT_FAULT_NOMEM))
		return false; /* seeded: as if no stack could be mapped */
	void *lo = weft__stack_get(w);
	if (!lo)
		return false;
	size_t size = w->rt->stacks.usable;
	weft__stack_prepare(lo, size);
	f->ctx.stack_lo = lo;
#ifdef WEFT__ASAN
	f->ctx.stack_size = size;
	f->ctx.asan_fake = NULL;
#endif
	/* not the caller's FP control: this may run on another fiber's
	 * stack (its switch-out starts the next), with that fiber's mode */
	f->ctx.sp = weft__ctx_make_fp((char *)lo + size, fiber_main, f,
				      w->rt->fpctl);
#ifdef WEFT__TSAN
	f->ctx.tsan_fiber = tsan_fiber_new();
#endif
	return true;
}

/* Wait until the exit no longer touches t (it moves join_word from
 * JOIN_DONE to JOIN_DONE_FREE last). */
static void wait_released(weft_task *t)
{
	/* acquire: pairs with the exit's release store */
	while (atomic_load_explicit(&t->join_word, memory_order_acquire) ==
	       WEFT__JOIN_DONE)
		weft__cpu_relax();
}

static void task_free(struct weft__rt *rt, struct weft__worker *w,
		      weft_task *t)
{
	/* release: a stale handle reads "not live" */
	atomic_store_explicit(&t->flags, 0, memory_order_release);
	weft__slab_put(&rt->fibers, w && w->rt == rt ? &w->fcache : NULL, t);
}

/* f has returned (or could not start) and is off its stack.
 *
 * The handle protocol: join_word decides who frees the task.
 *   0               nobody waits yet
 *   JOIN_DONE_FREE  finished, and the exit no longer touches it
 *   JOIN_DONE       finished; the exit still reads join_seq, then stores
 *                   JOIN_DONE_FREE as its last touch and wakes the joiner
 *                   it found (from the (fiber, seq) it copied)
 *   DETACH_MARK     detached before it finished: the exit frees it
 *   a fiber         that joiner (or weft_wait_any) is parked on it
 * The exit sets F_EXITED, then moves the word from 0 to JOIN_DONE_FREE
 * (the common case: nobody waited; two atomic operations in all), or from
 * a joiner to JOIN_DONE. A joiner or detacher that finds JOIN_DONE waits
 * for JOIN_DONE_FREE before it frees (a joiner woken by its own cancellation,
 * or a later joiner of a task a weft_wait_any was woken by, may see it
 * while the exit still reads join_seq); JOIN_DONE_FREE needs no wait. A
 * CAS, not an exchange: a registered joiner may take itself off (its
 * deadline, its cancellation) between our load and our write. */
void weft__fiber_finish(struct weft__worker *w, weft_task *f)
{
	struct weft__rt *rt = w->rt;
	if (f->ctx.stack_lo) {
		weft__stack_put(w, f->ctx.stack_lo);
		f->ctx.stack_lo = NULL;
#ifdef WEFT__TSAN
		__tsan_destroy_fiber(f->ctx.tsan_fiber);
		f->ctx.tsan_fiber = NULL;
#endif
	}
	uint32_t fl = atomic_fetch_or(&f->flags, WEFT__F_EXITED);
	bool is_main = fl & WEFT__F_MAIN;
	if (is_main) {
		rt->main_result = f->result;
		/* weft_run reports it: main_fn never ran */
		rt->main_nostack = fl & WEFT__F_NOMEM;
	}
	/* release: pairs with weft__live_count's acquire */
	atomic_store_explicit(&w->exited,
			      atomic_load_explicit(&w->exited,
						   memory_order_relaxed) +
				      1,
			      memory_order_release);
	uintptr_t j = 0;
	/* acq_rel: publishes result to the joiner; acquire: the joiner's
	 * join_seq (written before it registered) */
	while (!atomic_compare_exchange_weak_explicit(
		&f->join_word, &j,
		j ? (j == WEFT__DETACH_MARK ? j : WEFT__JOIN_DONE)
		  : WEFT__JOIN_DONE_FREE,
		memory_order_acq_rel, memory_order_acquire))
		;
	if (j == WEFT__DETACH_MARK) {
		task_free(rt, w, f);
	} else if (WEFT__JOIN_IS_FIBER(j)) {
		/* join_seq is ours to read only with a joiner registered (it
		 * wrote it before its CAS) */
		uint32_t seq = f->join_seq;
		/* release: the last touch. A plain store, not an RMW (each
		 * locked instruction is ~7 ns here): from JOIN_DONE on, nobody
		 * else writes the word (every other writer CASes from 0 or from
		 * its own fiber) */
		atomic_store_explicit(&f->join_word, WEFT__JOIN_DONE_FREE,
				      memory_order_release);
		weft__wake((weft_task *)j, seq, WEFT__R_WOKEN);
	}
	/* f may be gone now */
	if (is_main)
		weft__begin_shutdown(rt);
}

/* ---- the task API ---------------------------------------------------------- */

static inline weft_task *self_fiber(struct weft__worker **wp)
{
	struct weft__worker *w = weft__worker_self();
	*wp = w;
	return w ? w->cur : NULL;
}

/* A spawn from another thread that counted itself (ext_spawned) and then
 * failed, or found the runtime shutting down: uncount it, and wake a
 * worker to count again (one that saw our count may have gone to sleep).
 * The caller is inside weft__foreign_enter: rt is still there. */
static weft_task *ext_give_up(struct weft__rt *rt)
{
	atomic_fetch_sub(&rt->ext_spawned, 1);
	if (!rt->sim && !atomic_load(&rt->terminate))
		weft__idle_notify(rt);
	return NULL;
}

/* site: where it was spawned (a return address), for the dump and the
 * never-joined report (dump.c) */
static weft_task *spawn_in(struct weft__worker *w, void *(*fn)(void *),
			   void *arg, uint32_t extra, const void *site)
{
	struct weft__rt *rt = atomic_load_explicit(&weft__rt_cur,
						   memory_order_acquire);
	if (!rt || !fn)
		return NULL;
	if (w && w->rt != rt)
		w = NULL;
	if (w) {
		/* a fiber of rt spawns (it is live), or weft_run its main:
		 * rt cannot terminate meanwhile */
	} else {
		/* the pair with weft__try_terminate (sched.c): count
		 * ourselves live, then look (seq_cst both). Once main_fn
		 * has returned, other threads spawn no more (asyncio's
		 * call_soon_threadsafe on a closed loop raises): else a
		 * thread spawning in a loop could keep the runtime from
		 * ever ending */
		atomic_fetch_add(&rt->ext_spawned, 1);
		if (atomic_load(&rt->shutdown))
			return ext_give_up(rt);
	}
	if (!(extra & WEFT__F_MAIN) && weft__fault(WEFT_FAULT_NOMEM))
		return w ? NULL : ext_give_up(rt); /* seeded: as if the slab
						     could not grow */
	weft_task *f = weft__slab_get(&rt->fibers, w ? &w->fcache : NULL);
	if (!f)
		return w ? NULL : ext_give_up(rt);
	/* relaxed atomics for what the dump reads (fn, id, name): on x86 and
	 * arm64 plain stores, but not a data race with a concurrent dump */
	__atomic_store_n(&f->fn, fn, __ATOMIC_RELAXED);
	f->arg = arg;
	f->result = NULL;
	f->next = NULL;
	f->heap_idx = -1;
	f->timer_w = NULL;
	f->deadline = 0;
	atomic_store_explicit(&f->shield, 0, memory_order_relaxed);
	__atomic_store_n(&f->name, NULL, __ATOMIC_RELAXED);
	atomic_store_explicit(&f->wait, 0, memory_order_relaxed);
	atomic_store_explicit(&f->last_worker, 0xffff, memory_order_relaxed);
	weft__task_side(f)->sim_prio = 0; /* PCT (sim.c) */
	__atomic_store_n(&weft__task_side(f)->spawn_site, site,
			 __ATOMIC_RELAXED);
	f->join_seq = 0;
	memset(&f->ctx, 0, sizeof f->ctx);
	atomic_store_explicit(&f->join_word,
			      extra & WEFT__F_MAIN ? WEFT__DETACH_MARK : 0,
			      memory_order_relaxed);
	uint64_t s = atomic_load_explicit(&f->park, memory_order_relaxed);
	atomic_store_explicit(&f->park,
			      WEFT__PW(WEFT__PW_SEQ(s), 0, 0, WEFT__RUNNING),
			      memory_order_relaxed);
	if (w) {
		__atomic_store_n(&f->id, ++w->next_id * rt->nworkers + w->index + 1,
				 __ATOMIC_RELAXED);
		atomic_store_explicit(&w->spawned,
				      atomic_load_explicit(&w->spawned,
							   memory_order_relaxed) +
					      1,
				      memory_order_release);
	} else {
		__atomic_store_n(&f->id,
				 (atomic_fetch_add(&rt->ext_ids, 1) * rt->nworkers +
				  rt->nworkers + 1) |
					 1ull << 62,
				 __ATOMIC_RELAXED);
	}
	/* the shutdown pair, with weft__begin_shutdown (store shutdown, then
	 * scan flags): either the scan sees us, or we see shutdown. With
	 * membarrier, its barrier runs on our thread and ours is a compiler
	 * barrier only (an asymmetric fence: the seq_cst store was an xchg
	 * per spawn, 5-7% of bench_spawn_many); else seq_cst store and load. */
	bool shut;
	if (rt->membarrier) {
		atomic_store_explicit(&f->flags, WEFT__F_ALLOC | extra,
				      memory_order_release);
		atomic_signal_fence(memory_order_seq_cst);
		shut = atomic_load_explicit(&rt->shutdown, memory_order_relaxed);
	} else {
		atomic_store(&f->flags, WEFT__F_ALLOC | extra);
		shut = atomic_load(&rt->shutdown);
	}
	if (shut)
		atomic_fetch_or(&f->flags, WEFT__F_CANCEL);
	weft__schedule_rt(rt, w, f, false);
	return f;
}

/* From a plain thread (weft_spawn, weft_group_spawn), counted as a
 * foreign caller: the runtime cannot end under us (design.md). */
weft_task *weft__spawn_flags(void *(*fn)(void *), void *arg, uint32_t extra,
			     const void *site)
{
	struct weft__worker *w = weft__worker_self();
	if (!w)
		weft__foreign_enter();
	weft_task *f = spawn_in(w, fn, arg, extra, site);
	if (!w)
		weft__foreign_exit();
	return f;
}

weft_task *weft_spawn(void *(*fn)(void *), void *arg)
{
	weft_task *f = weft__spawn_flags(fn, arg, 0, __builtin_return_address(0));
	weft__sim_point(); /* seeded: the child may get in first */
	return f;
}

static WEFT__NOINLINE __attribute__((cold, noreturn)) void
join_wait_any_misuse(weft_task *t)
{
	weft__die("weft_join: task %p is being waited on by weft_wait_any in "
		  "another fiber",
		  (void *)t);
}

/* weft_join; *kept (if not NULL) is set when the deadline, or no memory
 * for its timer, gave t back unjoined (t is not freed then) */
static int join_task(weft_task *t, void **result, bool *kept)
{
	weft__sim_point();
	struct weft__worker *w;
	weft_task *self = self_fiber(&w);
	if (!self || !t || t == self)
		return -EINVAL;
	/* take the handle: acquire pairs with spawn's seq_cst store */
	uint32_t fl = atomic_load_explicit(&t->flags, memory_order_acquire);
	do {
		if (!(fl & WEFT__F_ALLOC) ||
		    (fl & (WEFT__F_JOINING | WEFT__F_DETACHED)))
			return -EINVAL;
	} while (!atomic_compare_exchange_weak(&t->flags, &fl,
					       fl | WEFT__F_JOINING));

	bool propagated = false;
	/* acquire: pairs with the exit's exchange (result) */
	uintptr_t j = atomic_load_explicit(&t->join_word, memory_order_acquire);
	while (!WEFT__JOIN_IS_DONE(j)) {
		weft__wait_note(self, WEFT__W_JOIN, 0, t->id);
		uint32_t seq = weft__park_begin(self, !propagated);
		/* j (not done) names a fiber registered there: a weft_wait_any
		 * (misuse, below). Its exit may be reading join_seq: do not
		 * write it (group.c looks alike) */
		if (__builtin_expect(j != 0, 0))
			join_wait_any_misuse(t);
		t->join_seq = seq;
		uintptr_t expect = 0;
		/* release: join_seq is visible to the exit that reads us */
		if (!atomic_compare_exchange_strong_explicit(
			    &t->join_word, &expect, (uintptr_t)self,
			    memory_order_acq_rel, memory_order_acquire)) {
			weft__park_abort(self);
			j = expect;
			if (!WEFT__JOIN_IS_DONE(j))
				join_wait_any_misuse(t);
			break;
		}
		int r = propagated ? weft__park_commit(self)
				   : weft__park_wait(self);
		if (r != WEFT__R_WOKEN) {
			/* settle: take ourselves off; if the exit got there
			 * first, the task is done and its wake will miss us */
			uintptr_t me = (uintptr_t)self;
			atomic_compare_exchange_strong(&t->join_word, &me, 0);
		}
		if (r == WEFT__R_CANCEL) {
			cancel_task(t); /* pass it on, then keep waiting */
			propagated = true;
		} else if ((r == WEFT__R_TIMER || r == WEFT__R_NOMEM) &&
			   !WEFT__JOIN_IS_DONE(atomic_load_explicit(
				   &t->join_word, memory_order_acquire))) {
			/* deadline: give the handle back, joinable again */
			atomic_fetch_and(&t->flags, ~WEFT__F_JOINING);
			if (kept)
				*kept = true;
			return weft__reason_err(r);
		}
		j = atomic_load_explicit(&t->join_word, memory_order_acquire);
	}
	if (j == WEFT__JOIN_DONE)
		wait_released(t);
	if (result)
		*result = t->result;
	fl = atomic_load(&t->flags);
	int ret = (fl & WEFT__F_NOMEM)	  ? -ENOMEM
		  : (fl & WEFT__F_CANCEL) ? -ECANCELED
					  : 0;
	task_free(w->rt, weft__worker_self(), t);
	return ret;
}

int weft_join(weft_task *t, void **result)
{
	return join_task(t, result, NULL);
}

/* For a call on a task handle: outside a worker, enter as a foreign caller
 * (*foreign set: weft__foreign_exit when done). Returns the runtime to use
 * throughout the call, NULL when no runtime runs (none yet, or t's has
 * ended): then no task is live and t's memory may be gone (the teardown
 * frees the fibers once the foreign callers that saw the runtime are out,
 * runtime.c); nothing is left entered. The caller must not load
 * weft__rt_cur again: the teardown clears it while entered callers still
 * run, and a second load read NULL (a detach then freed the task into a
 * NULL runtime's slab). */
static struct weft__rt *handle_call_enter(bool *foreign)
{
	struct weft__worker *w = weft__worker_self();
	*foreign = !w;
	if (w)
		return w->rt;
	weft__foreign_enter();
	struct weft__rt *rt = atomic_load(&weft__rt_cur);
	if (!rt)
		weft__foreign_exit();
	return rt;
}

void weft_detach(weft_task *t)
{
	/* Outside a worker, stay entered throughout. No runtime: t's run has
	 * ended and freed it, nothing is left to do (a thread that spawned t
	 * just before the end and detaches it now). */
	bool foreign;
	struct weft__rt *rt;
	if (!t || !(rt = handle_call_enter(&foreign)))
		return;
	uint32_t fl = atomic_load_explicit(&t->flags, memory_order_acquire);
	do {
		if (!(fl & WEFT__F_ALLOC) ||
		    (fl & (WEFT__F_JOINING | WEFT__F_DETACHED)))
			weft__die("weft_detach: task %p was already joined or "
				  "detached",
				  (void *)t);
	} while (!atomic_compare_exchange_weak(&t->flags, &fl,
					       fl | WEFT__F_DETACHED));
	uintptr_t expect = 0;
	if (atomic_compare_exchange_strong(&t->join_word, &expect,
					   WEFT__DETACH_MARK))
		goto out; /* the exit frees it */
	/* a weft_wait_any is registered on it (it does not take the handle):
	 * the task may still run, and the waiter still reads it. Freeing it
	 * here handed a running task's memory to the next spawn. */
	if (WEFT__JOIN_IS_FIBER(expect))
		weft__die("weft_detach: task %p is being waited on by "
			  "weft_wait_any",
			  (void *)t);
	/* already finished: free it here */
	if (expect == WEFT__JOIN_DONE)
		wait_released(t);
	task_free(rt, weft__worker_self(), t);
out:
	if (foreign)
		weft__foreign_exit();
}

int weft_cancel(weft_task *t)
{
	bool foreign;
	if (!t || !handle_call_enter(&foreign))
		return -EINVAL;
	uint32_t fl = atomic_load_explicit(&t->flags, memory_order_acquire);
	int r = (fl & WEFT__F_ALLOC) ? cancel_task(t) : -EINVAL;
	if (foreign)
		weft__foreign_exit();
	return r;
}

void weft_yield(void)
{
	struct weft__worker *w;
	weft_task *self = self_fiber(&w);
	if (!self)
		return;
	if (!w->sim && weft__dq_len(&w->dq) == 0 &&
	    weft__inject_empty(&w->rt->inject)) {
		/* alone: only the ring and timers could make work */
		if (++w->dq.tick % WEFT_EVENT_INTERVAL == 0) {
			weft__wait_clock_tick(); /* as maintenance does */
			if (weft__timers_next(w) != UINT64_MAX)
				weft__timers_fire(w, weft__clock());
			weft__ring_poll(w);
		}
		if (weft__dq_len(&w->dq) == 0) {
			/* it did yield: a resume for the metrics, and a
			 * fresh slice for the watchdog (dump.c) */
			WEFT__BUMP(w->m_polls, 1);
			return;
		}
	}
	weft__switch_out(w, self, WEFT__ACT_YIELD);
}

int weft_sleep(uint64_t ns)
{
	struct weft__worker *w;
	weft_task *self = self_fiber(&w);
	if (!self)
		return -EINVAL;
	if (weft__cancelled(self))
		return -ECANCELED;
	uint64_t now = weft__clock();
	uint64_t when = ns > UINT64_MAX - 1 - now ? UINT64_MAX - 1 : now + ns;
	uint64_t dl = self->deadline;
	if (dl && dl <= now)
		return -ETIMEDOUT;
	if (ns == 0) {
		weft_yield();
		return 0;
	}
	/* one timer: the sleep's end or the deadline, whichever is first */
	bool by_deadline = dl && dl < when;
	if (by_deadline)
		when = dl;
	for (;;) {
		weft__wait_note(self, WEFT__W_SLEEP, 0, ns / 1000000u);
		uint32_t seq = weft__park_begin(self, true);
		int r = weft__timer_add(w, self, when, seq);
		if (r) {
			weft__park_abort(self);
			return r;
		}
		r = weft__park_commit(self);
		w = weft__worker_self();
		if (r == WEFT__R_TIMER) /* fired: when <= now, never early */
			return by_deadline ? -ETIMEDOUT : 0;
		weft__timer_del(self);
		if (r == WEFT__R_CANCEL)
			return -ECANCELED;
	}
}

int weft_gather(weft_task *const *t, size_t n, void **results)
{
	struct weft__worker *w;
	weft_task *self = self_fiber(&w);
	if (!self || (n && !t))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!t[i])
			return -EINVAL;
	int first = 0;
	for (size_t i = 0; i < n; i++) {
		bool kept = false;
		int r = join_task(t[i], results ? &results[i] : NULL, &kept);
		if (r && !first)
			first = r;
		if (kept) {
			/* the deadline (or no memory for its timer) gave t[i]
			 * back unjoined. Every task is still joined and freed
			 * (task.h), or the caller could not tell which handles
			 * live: cancel what is left and join it with the scope
			 * lifted, as weft_group_wait does */
			uint64_t dl = self->deadline;
			self->deadline = 0;
			for (size_t k = i; k < n; k++)
				weft_cancel(t[k]);
			for (size_t k = i; k < n; k++)
				join_task(t[k], results ? &results[k] : NULL,
					  NULL);
			self->deadline = dl;
			break;
		}
	}
	return first;
}

uint64_t weft_self_id(void)
{
	struct weft__worker *w;
	weft_task *self = self_fiber(&w);
	return self ? self->id : 0;
}

uint64_t weft_task_id(const weft_task *t) { return t ? t->id : 0; }

int weft_task_set_name(weft_task *t, const char *name)
{
	if (!t && !(t = weft__self(NULL)))
		return -EINVAL;
	bool foreign;
	if (!handle_call_enter(&foreign))
		return -EINVAL;
	int r = -EINVAL;
	/* acquire: pairs with spawn's seq_cst store of F_ALLOC */
	if (atomic_load_explicit(&t->flags, memory_order_acquire) &
	    WEFT__F_ALLOC) {
		/* relaxed: the dump and the watchdog read it racily */
		__atomic_store_n(&t->name, name, __ATOMIC_RELAXED);
		r = 0;
	}
	if (foreign)
		weft__foreign_exit();
	return r;
}

const char *weft_task_name(const weft_task *t)
{
	if (!t && !(t = weft__self(NULL)))
		return NULL;
	return __atomic_load_n(&t->name, __ATOMIC_RELAXED);
}

/* ---- deadline scopes --------------------------------------------------------- */

int weft_deadline_push_at(weft_deadline *d, uint64_t when)
{
	weft_task *self = weft__self(NULL);
	if (!self || !d)
		return -EINVAL;
	d->_prev = self->deadline;
	if (when == 0)
		when = 1; /* 0 means "none": a deadline at 0 has passed */
	if (!self->deadline || when < self->deadline)
		self->deadline = when;
	return 0;
}

int weft_deadline_push(weft_deadline *d, uint64_t ns)
{
	uint64_t now = weft__clock();
	return weft_deadline_push_at(d, ns > UINT64_MAX - 1 - now
						? UINT64_MAX - 1
						: now + ns);
}

void weft_deadline_pop(weft_deadline *d)
{
	weft_task *self = weft__self(NULL);
	if (self && d)
		self->deadline = d->_prev;
}

uint64_t weft_deadline_current(void)
{
	weft_task *self = weft__self(NULL);
	return self ? self->deadline : 0;
}

/* ---- shield scopes ------------------------------------------------------------
 *
 * A shield makes the fiber's waits deaf to weft_cancel and to the deadline
 * scopes pushed before it, so cleanup can finish (weft/deadline.h). Only
 * the fiber itself reads and writes its depth (the dump reads it racily):
 * park_begin clears the cancellable bit of every park under a shield, so
 * a cancel meanwhile sets F_CANCEL (sticky) and wakes nobody; the waits'
 * own looks go through weft__cancelled. The deadline in force is set
 * aside, so the waits see only scopes pushed inside. */

int weft_shield_push(weft_shield *s)
{
	weft_task *self = weft__self(NULL);
	if (!self || !s)
		return -EINVAL;
	uint16_t d = atomic_load_explicit(&self->shield, memory_order_relaxed);
	if (d == UINT16_MAX)
		return -EOVERFLOW;
	s->_prev = self->deadline;
	self->deadline = 0;
	atomic_store_explicit(&self->shield, d + 1, memory_order_relaxed);
	return 0;
}

int weft_shield_pop(weft_shield *s)
{
	weft_task *self = weft__self(NULL);
	if (!self || !s)
		return -EINVAL;
	uint16_t d = atomic_load_explicit(&self->shield, memory_order_relaxed);
	if (d == 0)
		return -EINVAL;
	atomic_store_explicit(&self->shield, d - 1, memory_order_relaxed);
	self->deadline = s->_prev;
	return weft__cancelled(self) ? -ECANCELED : 0;
}
