/* fiber.c — fiber life cycle and the task API (spawn, join, detach, cancel,
 * yield, sleep, gather).
 *
 * Memory: fibers come from a slab of chunks that live until weft_run
 * returns. Each worker caches free fibers; surplus goes to a shared list.
 * Because chunks are never unmapped mid-run, a stale handle (joined twice,
 * cancelled after join) points at readable memory whose flags say "not a
 * live task": misuse returns -EINVAL instead of corrupting memory. The park
 * word's seq is never reset on reuse (sched.c: stale wakers fail).
 *
 * The handle protocol: join_word decides who frees a task.
 *   0            nobody waits yet
 *   JOIN_DONE    the fiber has finished and is off its stack
 *   DETACH_MARK  detached before it finished: the exit frees it
 *   a fiber      that joiner is parked on it
 * The exit exchanges DONE in; whoever finds the other side already there
 * frees (exit finds DETACH_MARK; detach finds DONE; a joiner always frees
 * after it sees DONE). After that exchange the exiting side never touches
 * the task again.
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

#define CHUNK_BYTES (2u << 20) /* one transparent huge page */
#define CACHE_MAX 256
#define DETACH_MARK ((uintptr_t)2)

struct chunk {
	struct chunk *next;
	size_t carved, cap;
	weft_task f[];
};

/* ---- slab ------------------------------------------------------------------ */

/* A chunk is a 2 MiB mapping, aligned so that it can be one huge page:
 * a million fibers cost 64 page faults, not 32,000. Fresh mappings read as
 * zero, so never-used fibers have flags 0 ("not live"). */
static struct chunk *chunk_new(void)
{
	size_t len = 2 * CHUNK_BYTES;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	char *a = (char *)(((uintptr_t)p + CHUNK_BYTES - 1) &
			   ~(uintptr_t)(CHUNK_BYTES - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + CHUNK_BYTES < p + len)
		munmap(a + CHUNK_BYTES, (size_t)(p + len - (a + CHUNK_BYTES)));
	madvise(a, CHUNK_BYTES, MADV_HUGEPAGE);
	struct chunk *c = (struct chunk *)a;
	c->cap = (CHUNK_BYTES - sizeof *c) / sizeof(weft_task);
	return c;
}

/* Under slab_lock: give up to want free fibers to *list. */
static size_t slab_take(struct weft__rt *rt, weft_task **list, size_t want)
{
	size_t got = 0;
	while (got < want && rt->slab_free) {
		weft_task *f = rt->slab_free;
		rt->slab_free = f->next;
		rt->slab_free_count--;
		f->next = *list;
		*list = f;
		got++;
	}
	if (got)
		return got;
	struct chunk *c = rt->chunks;
	if (!c || c->carved == c->cap) {
		if (!(c = chunk_new()))
			return 0;
		c->next = rt->chunks;
		rt->chunks = c;
	}
	while (got < want && c->carved < c->cap) {
		weft_task *f = &c->f[c->carved++];
		f->next = *list;
		*list = f;
		got++;
	}
	return got;
}

weft_task *weft__fiber_alloc(struct weft__rt *rt, struct weft__worker *w)
{
	weft_task *f;
	if (w) {
		if (!w->fiber_cache) {
			pthread_mutex_lock(&rt->slab_lock);
			w->fiber_cached += slab_take(rt, &w->fiber_cache,
						     CACHE_MAX / 4);
			pthread_mutex_unlock(&rt->slab_lock);
			if (!w->fiber_cache)
				return NULL;
		}
		f = w->fiber_cache;
		w->fiber_cache = f->next;
		w->fiber_cached--;
		return f;
	}
	weft_task *list = NULL;
	pthread_mutex_lock(&rt->slab_lock);
	size_t got = slab_take(rt, &list, 1);
	if (got > 1) { /* a new chunk: keep the rest */
		weft_task *rest = list->next;
		while (rest) {
			weft_task *nx = rest->next;
			rest->next = rt->slab_free;
			rt->slab_free = rest;
			rt->slab_free_count++;
			rest = nx;
		}
	}
	pthread_mutex_unlock(&rt->slab_lock);
	return list;
}

void weft__fiber_free(struct weft__rt *rt, struct weft__worker *w,
		      weft_task *f)
{
	/* release: a stale handle reading flags sees "not live" */
	atomic_store_explicit(&f->flags, 0, memory_order_release);
	if (w) {
		f->next = w->fiber_cache;
		w->fiber_cache = f;
		if (++w->fiber_cached <= CACHE_MAX)
			return;
		weft_task *first = w->fiber_cache, *last = first;
		for (int i = 1; i < CACHE_MAX / 2; i++)
			last = last->next;
		w->fiber_cache = last->next;
		w->fiber_cached -= CACHE_MAX / 2;
		pthread_mutex_lock(&rt->slab_lock);
		last->next = rt->slab_free;
		rt->slab_free = first;
		rt->slab_free_count += CACHE_MAX / 2;
		pthread_mutex_unlock(&rt->slab_lock);
		return;
	}
	pthread_mutex_lock(&rt->slab_lock);
	f->next = rt->slab_free;
	rt->slab_free = f;
	rt->slab_free_count++;
	pthread_mutex_unlock(&rt->slab_lock);
}

void weft__slab_fini(struct weft__rt *rt)
{
	struct chunk *c = rt->chunks;
	while (c) {
		struct chunk *nx = c->next;
		munmap(c, CHUNK_BYTES);
		c = nx;
	}
	rt->chunks = NULL;
	rt->slab_free = NULL;
}

/* ---- cancellation ---------------------------------------------------------- */

/* Returns 0, or -EALREADY if f had finished. */
static int cancel_task(weft_task *f)
{
	/* seq_cst: first half of the cancel pair (sched.c); a task that has
	 * finished keeps its real outcome */
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

void weft__cancel_all(struct weft__rt *rt)
{
	pthread_mutex_lock(&rt->slab_lock);
	for (struct chunk *c = rt->chunks; c; c = c->next)
		for (size_t i = 0; i < c->carved; i++) {
			weft_task *f = &c->f[i];
			uint32_t fl = atomic_load(&f->flags);
			if ((fl & WEFT__F_ALLOC) && !(fl & WEFT__F_EXITED))
				cancel_task(f);
		}
	pthread_mutex_unlock(&rt->slab_lock);
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

/* f has returned (or could not start) and is off its stack. */
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
	if (is_main)
		rt->main_result = f->result;
	/* release: pairs with weft__live_count's acquire */
	atomic_store_explicit(&w->exited,
			      atomic_load_explicit(&w->exited,
						   memory_order_relaxed) +
				      1,
			      memory_order_release);
	/* acq_rel: publishes result to the joiner; the handle protocol */
	uintptr_t j = atomic_exchange_explicit(&f->join_word, WEFT__JOIN_DONE,
					       memory_order_acq_rel);
	if (j == DETACH_MARK)
		weft__fiber_free(rt, w, f);
	else if (j > DETACH_MARK)
		weft__wake((weft_task *)j, f->join_seq, WEFT__R_WOKEN);
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

weft_task *weft__spawn_flags(void *(*fn)(void *), void *arg, uint32_t extra)
{
	struct weft__rt *rt = atomic_load_explicit(&weft__rt_cur,
						   memory_order_acquire);
	if (!rt || !fn || atomic_load(&rt->terminate))
		return NULL;
	struct weft__worker *w = weft__worker_self();
	if (w && w->rt != rt)
		w = NULL;
	weft_task *f = weft__fiber_alloc(rt, w);
	if (!f)
		return NULL;
	f->fn = fn;
	f->arg = arg;
	f->result = NULL;
	f->exit_err = 0;
	f->next = NULL;
	f->heap_idx = -1;
	f->timer_w = NULL;
	f->deadline = 0;
	f->name = NULL;
	memset(&f->ctx, 0, sizeof f->ctx);
	atomic_store_explicit(&f->join_word, extra & WEFT__F_MAIN ? DETACH_MARK : 0,
			      memory_order_relaxed);
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
	return weft__spawn_flags(fn, arg, 0);
}

int weft_join(weft_task *t, void **result)
{
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
	/* acquire: pairs with the exit's exchange (result, exit_err) */
	uintptr_t j = atomic_load_explicit(&t->join_word, memory_order_acquire);
	while (j != WEFT__JOIN_DONE) {
		uint32_t seq = weft__park_begin(self, !propagated);
		t->join_seq = seq;
		uintptr_t expect = 0;
		/* release: join_seq is visible to the exit that reads us */
		if (!atomic_compare_exchange_strong_explicit(
			    &t->join_word, &expect, (uintptr_t)self,
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
			atomic_compare_exchange_strong(&t->join_word, &me, 0);
		}
		if (r == WEFT__R_CANCEL) {
			cancel_task(t); /* pass it on, then keep waiting */
			propagated = true;
		} else if (r == WEFT__R_TIMER &&
			   atomic_load_explicit(&t->join_word,
						memory_order_acquire) !=
				   WEFT__JOIN_DONE) {
			/* deadline: give the handle back, joinable again */
			atomic_fetch_and(&t->flags, ~WEFT__F_JOINING);
			return -ETIMEDOUT;
		}
		j = atomic_load_explicit(&t->join_word, memory_order_acquire);
	}
	if (result)
		*result = t->result;
	fl = atomic_load(&t->flags);
	int ret = t->exit_err ? t->exit_err
		  : (fl & WEFT__F_CANCEL) ? -ECANCELED
					  : 0;
	weft__fiber_free(w->rt, weft__worker_self(), t);
	return ret;
}

void weft_detach(weft_task *t)
{
	if (!t)
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
					   DETACH_MARK))
		return; /* the exit frees it */
	/* already finished: free it here */
	struct weft__rt *rt = atomic_load(&weft__rt_cur);
	struct weft__worker *w = weft__worker_self();
	weft__fiber_free(rt, w && w->rt == rt ? w : NULL, t);
}

int weft_cancel(weft_task *t)
{
	if (!t)
		return -EINVAL;
	uint32_t fl = atomic_load_explicit(&t->flags, memory_order_acquire);
	if (!(fl & WEFT__F_ALLOC))
		return -EINVAL;
	return cancel_task(t);
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

uint64_t weft_task_id(const weft_task *t) { return t ? t->id : 0; }

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
