/* inject.c — the global injection queue.
 *
 * Work enters here from threads that are not workers, and from workers
 * whose ring is full (deque.c moves half a ring at a time). Workers take
 * from it every WEFT_GLOBAL_INTERVAL ticks (so it cannot starve behind a
 * busy local queue) and whenever their local queue is empty.
 *
 * An intrusive FIFO list under one mutex. `len` is written under the lock
 * and read without it as an emptiness hint; a reader that sees 0 while a
 * push is in flight is covered by the idle protocol (idle.c: the pusher
 * notifies after pushing).
 */
#include "internal.h"

void weft__inject_init(struct weft__inject *q)
{
	pthread_mutex_init(&q->lock, NULL);
	q->head = q->tail = NULL;
	atomic_init(&q->len, 0);
}

void weft__inject_fini(struct weft__inject *q)
{
	pthread_mutex_destroy(&q->lock);
}

void weft__inject_push(struct weft__inject *q, weft_task *first,
		       weft_task *last, size_t n)
{
	last->next = NULL;
	pthread_mutex_lock(&q->lock);
	if (q->tail)
		q->tail->next = first;
	else
		q->head = first;
	q->tail = last;
	/* seq_cst: a push is one half of the idle handshake (idle.c) */
	atomic_store(&q->len,
		     atomic_load_explicit(&q->len, memory_order_relaxed) + n);
	pthread_mutex_unlock(&q->lock);
}

/* At the head: a fiber that has run before (woken, yielded) and found its
 * worker's ring busy must not wait behind a flood of fresh spawns. */
void weft__inject_push_head(struct weft__inject *q, weft_task *t)
{
	pthread_mutex_lock(&q->lock);
	t->next = q->head;
	q->head = t;
	if (!q->tail)
		q->tail = t;
	atomic_store(&q->len,
		     atomic_load_explicit(&q->len, memory_order_relaxed) + 1);
	pthread_mutex_unlock(&q->lock);
}

weft_task *weft__inject_pop(struct weft__inject *q)
{
	if (weft__inject_empty(q))
		return NULL;
	pthread_mutex_lock(&q->lock);
	weft_task *t = q->head;
	if (t) {
		q->head = t->next;
		if (!q->head)
			q->tail = NULL;
		atomic_store_explicit(
			&q->len,
			atomic_load_explicit(&q->len, memory_order_relaxed) - 1,
			memory_order_relaxed);
	}
	pthread_mutex_unlock(&q->lock);
	return t;
}

/* Take up to max tasks: the first is returned, the rest pushed on dq
 * (which must have room for them: the caller's ring is empty).
 *
 * The lock is held for O(1) work only: the whole list is taken under it,
 * cut outside it, and what is left over put back at the head (ahead of
 * anything pushed meanwhile, so the FIFO order holds; a woken fiber put at
 * the head meanwhile waits behind that rest, a bounded delay). Cutting
 * walks the `next` links of tasks another core just wrote, a cache miss
 * each: under the lock, a thief taking 128 tasks held it for ~10 us, and
 * a fiber spawning in a loop (its ring spilling here every 128 spawns)
 * slept on the mutex in the kernel (bench_spawn_many: ~20% of the time in
 * futex waits). While the rest is out, other workers see less work than there
 * is; putting it back is a push, so the caller notifies (idle.c) and no
 * worker sleeps on work it could not see. Returns with *rest_back true
 * when it put tasks back. */
weft_task *weft__inject_pop_batch(struct weft__inject *q,
				  struct weft__deque *dq, size_t max,
				  bool *rest_back)
{
	*rest_back = false;
	if (weft__inject_empty(q))
		return NULL;
	pthread_mutex_lock(&q->lock);
	weft_task *t = q->head, *tail = q->tail;
	size_t len = atomic_load_explicit(&q->len, memory_order_relaxed);
	q->head = q->tail = NULL;
	atomic_store_explicit(&q->len, 0, memory_order_relaxed);
	pthread_mutex_unlock(&q->lock);
	if (!t)
		return NULL;
	weft_task *x = t->next;
	size_t took = 1;
	while (x && took < max) {
		weft_task *nx = x->next;
		weft__dq_push(dq, x, q); /* room: never overflows */
		x = nx;
		took++;
	}
	if (x) {
		pthread_mutex_lock(&q->lock);
		tail->next = q->head;
		if (!q->head)
			q->tail = tail;
		q->head = x;
		/* seq_cst: a push (idle handshake) */
		atomic_store(&q->len, atomic_load_explicit(
					      &q->len, memory_order_relaxed) +
					      len - took);
		pthread_mutex_unlock(&q->lock);
		*rest_back = true;
	}
	return t;
}
