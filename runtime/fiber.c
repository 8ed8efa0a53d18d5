/* fiber.c — fiber life cycle and the task API (spawn, join, detach, cancel,
 * yield, sleep, gather).
 *
 * Memory: a task is two objects. The fiber (struct weft_task: context,
 * park word, timer and queue links) is recycled the moment it ends, while
 * it is still hot in cache; the handle (struct weft__handle, 32 bytes:
 * flags, result, join word, id) is what weft_spawn returns and lives until
 * join or detach. Both come from type-stable slabs (slab.c), so a stale
 * handle (joined twice, cancelled after join) reads "not live" and misuse
 * returns -EINVAL instead of corrupting memory; the park word's seq is
 * never reset on reuse (sched.c: stale wakers fail). The handle protocol
 * is written at weft__fiber_finish.
 */
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#ifdef WEFT__ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef WEFT__TSAN
#include <sanitizer/tsan_interface.h>
#endif

/* ---- cancellation ---------------------------------------------------------- */

/* Mark the fiber cancelled and wake it if it is parked in a cancellable
 * wait (the cancel pair, sched.c). */
static void cancel_body(weft_task *f)
{
	/* seq_cst: first half of the cancel pair */
	uint32_t fl = atomic_fetch_or(&f->flags, WEFT__F_CANCEL);
	if (fl & WEFT__F_EXITED)
		return;
	uint64_t s = atomic_load(&f->park);
	int st = WEFT__PW_ST(s);
	if ((st == WEFT__PARKING || st == WEFT__PARKED) && WEFT__PW_CANC(s))
		weft__wake(f, WEFT__PW_SEQ(s), WEFT__R_CANCEL);
}

/* Cancel through a handle: 0, or -EALREADY if the task had finished. The
 * body is read under H_LOCK, which the exit waits for before it lets the
 * fiber go (the handle protocol). */
static int cancel_handle(struct weft__handle *h)
{
	uint32_t fl = atomic_load(&h->flags);
	for (;;) {
		if (fl & WEFT__H_EXITED)
			return -EALREADY;
		if (fl & WEFT__H_LOCK) {
			weft__cpu_relax();
			fl = atomic_load(&h->flags);
			continue;
		}
		/* acq_rel: the lock; the exit's CAS to EXITED waits for it */
		if (atomic_compare_exchange_weak(
			    &h->flags, &fl, fl | WEFT__H_LOCK | WEFT__H_CANCEL))
			break;
	}
	cancel_body(h->body);
	atomic_fetch_and(&h->flags, ~WEFT__H_LOCK);
	return 0;
}

static void cancel_walk(void *p, void *ctx)
{
	(void)ctx;
	weft_task *f = p;
	uint32_t fl = atomic_load(&f->flags);
	if ((fl & WEFT__F_ALLOC) && !(fl & WEFT__F_EXITED))
		cancel_body(f);
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

/* Give f its stack and first frame. False if no stack could be had. */
bool weft__fiber_start(struct weft__worker *w, weft_task *f)
{
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
	f->ctx.sp = weft__ctx_make((char *)lo + size, fiber_main, f);
#ifdef WEFT__TSAN
	f->ctx.tsan_fiber = __tsan_create_fiber(0);
#endif
	return true;
}

/* Wait until the exit no longer touches h (it sets H_RELEASED last). */
static void wait_released(struct weft__handle *h)
{
	/* acquire: pairs with the exit's release of H_RELEASED (result) */
	while (!(atomic_load_explicit(&h->flags, memory_order_acquire) &
		 WEFT__H_RELEASED))
		weft__cpu_relax();
}

static void handle_free(struct weft__rt *rt, struct weft__worker *w,
			struct weft__handle *h)
{
	/* release: a stale handle reads "not live" */
	atomic_store_explicit(&h->flags, 0, memory_order_release);
	weft__slab_put(&rt->handles, w && w->rt == rt ? &w->hcache : NULL, h);
}

/* f has returned (or could not start) and is off its stack.
 *
 * The handle protocol: join_word decides who frees the handle.
 *   0            nobody waits yet
 *   JOIN_DONE    the fiber has finished
 *   DETACH_MARK  detached before it finished: the exit frees the handle
 *   a fiber      that joiner (or weft_wait_any) is parked on it
 * The exit publishes result and H_EXITED (waiting out a canceller's
 * H_LOCK), exchanges DONE in, wakes a joiner found there, and sets
 * H_RELEASED as its last touch; a joiner or detacher that finds DONE waits
 * for H_RELEASED before it frees. The fiber itself is recycled here. */
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
	uint32_t ff = atomic_fetch_or(&f->flags, WEFT__F_EXITED);
	bool is_main = ff & WEFT__F_MAIN;
	if (is_main)
		rt->main_result = f->result;
	struct weft__handle *h = f->h;
	if (h) {
		uint32_t add = WEFT__H_EXITED |
			       (ff & WEFT__F_CANCEL ? WEFT__H_CANCEL : 0) |
			       (ff & WEFT__F_NOMEM ? WEFT__H_NOMEM : 0);
		uint32_t fl = atomic_load(&h->flags);
		for (;;) {
			if (fl & WEFT__H_LOCK) { /* a canceller reads body */
				weft__cpu_relax();
				fl = atomic_load(&h->flags);
				continue;
			}
			if (atomic_compare_exchange_weak(&h->flags, &fl,
							 fl | add))
				break;
		}
		h->result = f->result; /* no canceller reads body any more */
		/* acq_rel: publishes result; the handle protocol */
		uintptr_t j = atomic_exchange_explicit(
			&h->join_word, WEFT__JOIN_DONE, memory_order_acq_rel);
		if (j == WEFT__DETACH_MARK) {
			handle_free(rt, w, h);
		} else {
			/* join_seq is ours to read only if a joiner is
			 * registered (it wrote it before its CAS) */
			uint32_t seq = j > WEFT__DETACH_MARK ? h->join_seq : 0;
			/* release: the last touch */
			atomic_fetch_or_explicit(&h->flags, WEFT__H_RELEASED,
						 memory_order_release);
			if (j > WEFT__DETACH_MARK)
				weft__wake((weft_task *)j, seq, WEFT__R_WOKEN);
		}
	}
	/* release: counted after the last touch of the task; pairs with
	 * weft__live_count's acquire */
	atomic_store_explicit(&w->exited,
			      atomic_load_explicit(&w->exited,
						   memory_order_relaxed) +
				      1,
			      memory_order_release);
	atomic_store_explicit(&f->flags, 0, memory_order_release);
	weft__slab_put(&rt->fibers, &w->fcache, f);
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

static inline struct weft__handle *H(const weft_task *t)
{
	return (struct weft__handle *)(uintptr_t)t;
}

weft_task *weft__spawn_flags(void *(*fn)(void *), void *arg, uint32_t extra,
			     struct weft__handle **hp)
{
	struct weft__rt *rt = atomic_load_explicit(&weft__rt_cur,
						   memory_order_acquire);
	if (!rt || !fn || atomic_load(&rt->terminate))
		return NULL;
	struct weft__worker *w = weft__worker_self();
	if (w && w->rt != rt)
		w = NULL;
	weft_task *f = weft__slab_get(&rt->fibers, w ? &w->fcache : NULL);
	if (!f)
		return NULL;
	struct weft__handle *h = NULL;
	if (!(extra & WEFT__F_MAIN)) {
		h = weft__slab_get(&rt->handles, w ? &w->hcache : NULL);
		if (!h) {
			weft__slab_put(&rt->fibers, w ? &w->fcache : NULL, f);
			return NULL;
		}
	}
	f->fn = fn;
	f->arg = arg;
	f->result = NULL;
	f->next = NULL;
	f->heap_idx = -1;
	f->timer_w = NULL;
	f->deadline = 0;
	f->name = NULL;
	f->h = h;
	memset(&f->ctx, 0, sizeof f->ctx);
	uint64_t s = atomic_load_explicit(&f->park, memory_order_relaxed);
	atomic_store_explicit(&f->park,
			      WEFT__PW(WEFT__PW_SEQ(s), 0, 0, WEFT__RUNNING),
			      memory_order_relaxed);
	if (w) {
		f->id = ++w->next_id * rt->nworkers + w->index + 1;
		atomic_store_explicit(&w->spawned,
				      atomic_load_explicit(&w->spawned,
							   memory_order_relaxed) +
					      1,
				      memory_order_release);
	} else {
		f->id = atomic_fetch_add(&rt->ext_ids, 1) * rt->nworkers +
			rt->nworkers + 1;
		f->id |= 1ull << 62;
		atomic_fetch_add(&rt->ext_spawned, 1);
	}
	if (hp)
		*hp = h;
	if (h) {
		h->join_seq = 0;
		atomic_store_explicit(&h->join_word, 0, memory_order_relaxed);
		h->body = f;
		h->id = f->id;
		/* release: the handle is complete before anyone gets it */
		atomic_store_explicit(&h->flags, WEFT__H_ALLOC,
				      memory_order_release);
	}
	/* seq_cst: pairs with weft__begin_shutdown (store shutdown, then scan
	 * flags): either the scan sees us, or we see shutdown */
	atomic_store(&f->flags, WEFT__F_ALLOC | extra);
	if (atomic_load(&rt->shutdown))
		atomic_fetch_or(&f->flags, WEFT__F_CANCEL);
	weft__schedule(w, f, false);
	return f;
}

weft_task *weft_spawn(void *(*fn)(void *), void *arg)
{
	/* the fiber may already have run and been recycled by the time
	 * spawn returns: the handle comes out of the spawn, not f->h */
	struct weft__handle *h = NULL;
	bool foreign = !weft__worker_self();
	if (foreign)
		weft__foreign_enter();
	weft_task *f = weft__spawn_flags(fn, arg, 0, &h);
	if (foreign)
		weft__foreign_exit();
	return f ? (weft_task *)h : NULL;
}

int weft_join(weft_task *t, void **result)
{
	struct weft__worker *w;
	weft_task *self = self_fiber(&w);
	struct weft__handle *h = H(t);
	if (!self || !h || (self->h && self->h == h))
		return -EINVAL;
	/* take the handle: acquire pairs with spawn's release */
	uint32_t fl = atomic_load_explicit(&h->flags, memory_order_acquire);
	do {
		if (!(fl & WEFT__H_ALLOC) ||
		    (fl & (WEFT__H_JOINING | WEFT__H_DETACHED)))
			return -EINVAL;
	} while (!atomic_compare_exchange_weak(&h->flags, &fl,
					       fl | WEFT__H_JOINING));

	bool propagated = false;
	/* acquire: pairs with the exit's exchange */
	uintptr_t j = atomic_load_explicit(&h->join_word, memory_order_acquire);
	while (j != WEFT__JOIN_DONE) {
		uint32_t seq = weft__park_begin(self, !propagated);
		h->join_seq = seq;
		uintptr_t expect = 0;
		/* release: join_seq is visible to the exit that reads us */
		if (!atomic_compare_exchange_strong_explicit(
			    &h->join_word, &expect, (uintptr_t)self,
			    memory_order_acq_rel, memory_order_acquire)) {
			weft__park_abort(self);
			j = expect;
			if (j != WEFT__JOIN_DONE)
				weft__die("weft_join: task %p changed hands "
					  "while joined",
					  (void *)t);
			break;
		}
		int r = propagated ? weft__park_commit(self)
				   : weft__park_wait(self);
		if (r != WEFT__R_WOKEN) {
			/* settle: take ourselves off; if the exit got there
			 * first, the task is done and its wake will miss us */
			uintptr_t me = (uintptr_t)self;
			atomic_compare_exchange_strong(&h->join_word, &me, 0);
		}
		if (r == WEFT__R_CANCEL) {
			cancel_handle(h); /* pass it on, then keep waiting */
			propagated = true;
		} else if ((r == WEFT__R_TIMER || r == WEFT__R_NOMEM) &&
			   atomic_load_explicit(&h->join_word,
						memory_order_acquire) !=
				   WEFT__JOIN_DONE) {
			/* deadline: give the handle back, joinable again */
			atomic_fetch_and(&h->flags, ~WEFT__H_JOINING);
			return weft__reason_err(r);
		}
		j = atomic_load_explicit(&h->join_word, memory_order_acquire);
	}
	wait_released(h);
	if (result)
		*result = h->result;
	fl = atomic_load(&h->flags);
	int ret = (fl & WEFT__H_NOMEM)	  ? -ENOMEM
		  : (fl & WEFT__H_CANCEL) ? -ECANCELED
					  : 0;
	handle_free(w->rt, weft__worker_self(), h);
	return ret;
}

void weft_detach(weft_task *t)
{
	struct weft__handle *h = H(t);
	if (!h)
		return;
	uint32_t fl = atomic_load_explicit(&h->flags, memory_order_acquire);
	do {
		if (!(fl & WEFT__H_ALLOC) ||
		    (fl & (WEFT__H_JOINING | WEFT__H_DETACHED)))
			weft__die("weft_detach: task %p was already joined or "
				  "detached",
				  (void *)t);
	} while (!atomic_compare_exchange_weak(&h->flags, &fl,
					       fl | WEFT__H_DETACHED));
	uintptr_t expect = 0;
	if (atomic_compare_exchange_strong(&h->join_word, &expect,
					   WEFT__DETACH_MARK))
		return; /* the exit frees it */
	/* already finished: free it here */
	wait_released(h);
	handle_free(atomic_load(&weft__rt_cur), weft__worker_self(), h);
}

int weft_cancel(weft_task *t)
{
	struct weft__handle *h = H(t);
	if (!h)
		return -EINVAL;
	bool foreign = !weft__worker_self();
	if (foreign)
		weft__foreign_enter();
	uint32_t fl = atomic_load_explicit(&h->flags, memory_order_acquire);
	int r = (fl & WEFT__H_ALLOC) ? cancel_handle(h) : -EINVAL;
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
	if (weft__dq_len(&w->dq) == 0 && weft__inject_empty(&w->rt->inject)) {
		/* alone: only the ring and timers could make work */
		if (++w->dq.tick % WEFT_EVENT_INTERVAL)
			return;
		if (weft__timers_next(w) != UINT64_MAX)
			weft__timers_fire(w, weft__clock());
		weft__ring_poll(w);
		if (weft__dq_len(&w->dq) == 0)
			return;
	}
	weft__switch_out(w, self, WEFT__ACT_YIELD);
}

int weft_sleep(uint64_t ns)
{
	struct weft__worker *w;
	weft_task *self = self_fiber(&w);
	if (!self)
		return -EINVAL;
	if (atomic_load(&self->flags) & WEFT__F_CANCEL)
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
	if (!self_fiber(&w) || (n && !t))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!t[i])
			return -EINVAL;
	int first = 0;
	for (size_t i = 0; i < n; i++) {
		int r = weft_join(t[i], results ? &results[i] : NULL);
		if (r && !first)
			first = r;
	}
	return first;
}

uint64_t weft_self_id(void)
{
	struct weft__worker *w;
	weft_task *self = self_fiber(&w);
	return self ? self->id : 0;
}

uint64_t weft_task_id(const weft_task *t) { return t ? H(t)->id : 0; }

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
