/* group.c — task groups (structured concurrency) and wait-any.
 *
 * A group tracks its running children in a list under g->lock. Each child
 * runs a wrapper that calls fn, records the first failure (a negative
 * return) and then cancels every sibling still on the list, removes itself
 * from the list and, if the list became empty, wakes the group's waiters.
 * Children are detached fibers: a child's handle is valid while it is on
 * the list (it leaves the list before it ends), which is what makes
 * cancelling siblings from the list safe.
 *
 * Waiting is cancellable in the asyncio sense: a waiter that is cancelled
 * (or whose deadline passes) cancels the whole group and then keeps
 * waiting, without a deadline, until every child has ended — a group is
 * never left with children running.
 *
 * Wait-any registers the caller as the joiner of every task (one park, one
 * seq: fiber.c's join_word protocol); the first exit wakes it, and it then
 * takes itself off the others.
 */
#include "waitq.h"

struct child {
	struct child *next, *prev;
	weft_group *g;
	weft_task *t;
	int (*fn)(void *);
	void *arg;
};

struct weft_group {
	unsigned lock;
	struct child *head;
	size_t live;
	int first_err;
	bool cancelled, freeing;
	struct weft__wlist waiters;
};

weft_group *weft_group_new(void)
{
	return calloc(1, sizeof(weft_group));
}

/* under g->lock */
static void cancel_children(weft_group *g)
{
	for (struct child *c = g->head; c; c = c->next)
		weft_cancel(c->t);
}

/* the child's end: record a failure, leave the list, wake the waiters */
static void child_end(struct child *c, int r)
{
	weft_group *g = c->g;
	weft__spin_lock(&g->lock);
	if (r < 0 && !g->first_err) {
		g->first_err = r;
		cancel_children(g);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		g->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (--g->live == 0) {
		struct weft__waiter *w;
		while ((w = weft__wl_claim(&g->waiters)))
			weft__wake_held(w, 0);
	}
	weft__spin_unlock(&g->lock);
	free(c);
}

void *weft__group_child_main(void *arg)
{
	struct child *c = arg;
	child_end(c, c->fn(c->arg));
	return NULL;
}

/* A child whose fiber got no stack ends without running (sched.c,
 * fail_nostack): it must still leave the list, or the group's waiters
 * never wake. It counts as a failure (-ENOMEM), as a join would report. */
void weft__group_child_nostack(void *arg)
{
	child_end(arg, -ENOMEM);
}

int weft_group_spawn(weft_group *g, int (*fn)(void *), void *arg)
{
	if (!g || !fn)
		return -EINVAL;
	struct child *c = malloc(sizeof *c);
	if (!c)
		return -ENOMEM;
	*c = (struct child){.g = g, .fn = fn, .arg = arg};
	weft__spin_lock(&g->lock);
	int err = g->freeing     ? -EINVAL
		  : g->cancelled || g->first_err ? -ECANCELED
						 : 0;
	if (!err && !(c->t = weft__spawn_flags(weft__group_child_main, c, 0,
					       __builtin_return_address(0))))
		err = -ENOMEM;
	if (err) {
		weft__spin_unlock(&g->lock);
		free(c);
		return err;
	}
	/* on the list before it can run to its end (it needs this lock) */
	c->next = g->head;
	if (g->head)
		g->head->prev = c;
	g->head = c;
	g->live++;
	weft_task *t = c->t;
	weft__spin_unlock(&g->lock);
	weft_detach(t);
	return 0;
}

void weft_group_cancel(weft_group *g)
{
	if (!g)
		return;
	weft__spin_lock(&g->lock);
	g->cancelled = true;
	cancel_children(g);
	weft__spin_unlock(&g->lock);
}

static int group_result(weft_group *g)
{
	return g->first_err ? g->first_err : g->cancelled ? -ECANCELED : 0;
}

/* Wait until no child runs. Cancellable only until the first cancel or
 * deadline, which is passed to the children. */
static int wait_empty(weft_group *g, weft_task *self, bool cancellable)
{
	for (;;) {
		weft__spin_lock(&g->lock);
		if (g->live == 0) {
			int r = group_result(g);
			weft__spin_unlock(&g->lock);
			return r;
		}
		struct weft__waiter me = {.f = self};
		weft__wait_note(self, WEFT__W_GROUP, 0, (uintptr_t)g);
		me.seq = weft__park_begin(self, cancellable);
		weft__wl_push(&g->waiters, &me);
		int r;
		if (cancellable) {
			r = weft__wl_wait(&g->lock, &g->waiters, &me);
		} else {
			weft__spin_unlock(&g->lock);
			weft__park_commit(self);
			r = 0;
			weft__spin_lock(&g->lock); /* also: the last touch */
			if (me.queued)
				weft__wl_remove(&g->waiters, &me);
			weft__spin_unlock(&g->lock);
		}
		if (r < 0) { /* cancelled, deadline, or no memory for it */
			weft_group_cancel(g);
			int gr = wait_empty(g, self, false);
			return r == -ECANCELED ? (gr ? gr : -ECANCELED) : r;
		}
	}
}

int weft_group_wait(weft_group *g)
{
	weft_task *self = weft__self(NULL);
	if (!g || !self)
		return -EINVAL;
	return wait_empty(g, self, true);
}

void weft_group_free(weft_group *g)
{
	if (!g)
		return;
	weft__spin_lock(&g->lock);
	g->freeing = true;
	size_t live = g->live;
	weft__spin_unlock(&g->lock);
	if (live) {
		weft_task *self = weft__self(NULL);
		if (!self)
			weft__die("weft_group_free: %zu children still run and "
				  "the caller is not a fiber",
				  live);
		weft_group_cancel(g);
		wait_empty(g, self, false);
	}
	free(g);
}

/* ---- wait-any --------------------------------------------------------------- */


int weft_wait_any(weft_task *const *t, size_t n)
{
	weft_task *self = weft__self(NULL);
	if (!self || !t || n == 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!t[i] || t[i] == self ||
		    !(atomic_load(&t[i]->flags) & WEFT__F_ALLOC))
			return -EINVAL;
	for (;;) {
		for (size_t i = 0; i < n; i++)
			/* acquire: pairs with the exit's exchange */
			if (WEFT__JOIN_IS_DONE(atomic_load_explicit(
				    &t[i]->join_word, memory_order_acquire)))
				return (int)i;
		weft__wait_note(self, WEFT__W_WAIT_ANY, 0, n);
		uint32_t seq = weft__park_begin(self, true);
		size_t reg = 0;
		int found = -1;
		for (; reg < n; reg++) {
			weft_task *h = t[reg];
			/* look before writing join_seq: a task listed twice
			 * already holds us, and its exit may be reading
			 * join_seq right now (fiber.c: only the registered
			 * joiner writes it) */
			uintptr_t expect = atomic_load_explicit(
				&h->join_word, memory_order_acquire);
			if (expect == 0)
				h->join_seq = seq;
			/* release: join_seq before the pointer (fiber.c) */
			if (expect != 0 ||
			    !atomic_compare_exchange_strong_explicit(
				    &h->join_word, &expect, (uintptr_t)self,
				    memory_order_acq_rel, memory_order_acquire)) {
				if (WEFT__JOIN_IS_DONE(expect))
					found = (int)reg;
				else if (expect == (uintptr_t)self)
					found = -2; /* listed twice */
				else
					weft__die("weft_wait_any: task %p is "
						  "being joined or waited on "
						  "elsewhere, or was detached",
						  (void *)t[reg]);
				break;
			}
		}
		int r = found != -1 ? (weft__park_abort(self), WEFT__R_WOKEN)
				    : weft__park_wait(self);
		/* take ourselves off every task we registered on */
		for (size_t i = 0; i < reg; i++) {
			uintptr_t me = (uintptr_t)self;
			atomic_compare_exchange_strong(&t[i]->join_word,
						       &me, 0);
		}
		if (found != -1)
			return found >= 0 ? found : -EINVAL;
		if (r != WEFT__R_WOKEN) {
			for (size_t i = 0; i < n; i++)
				if (WEFT__JOIN_IS_DONE(atomic_load_explicit(
					    &t[i]->join_word,
					    memory_order_acquire)))
					return (int)i; /* success wins */
			return weft__reason_err(r);
		}
	}
}
