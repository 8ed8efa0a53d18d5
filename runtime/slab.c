/* slab.c — type-stable memory for fibers and task handles.
 *
 * Items come from 2 MiB chunks (one transparent huge page each: a million
 * items cost a few page faults, not tens of thousands) that stay mapped
 * until weft_run returns. So a stale pointer — a task handle used after
 * join, a fiber a stale waker still names — always points at readable
 * memory, whose flags say whether it is live (fiber.c relies on this).
 *
 * Each worker keeps a cache of free items (struct weft__slab_cache); a
 * cache over CACHE_MAX hands half to the shared free list, an empty one
 * takes REFILL from it (or carves them from the newest chunk). Free items
 * are linked through a pointer at offset link_off. Fresh chunks read as
 * zero, so items never handed out have flags 0 ("not live").
 *
 * Side data (weft__slab_side, internal.h): after its cap items a chunk
 * keeps side_sz bytes per item, for what is written once and read rarely
 * (a fiber's spawn site), so the items themselves stay within their lines.
 */
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define CHUNK_BYTES WEFT__SLAB_CHUNK
#define CACHE_MAX 256
#define REFILL 64

struct chunk {
	struct chunk *next;
	size_t carved, cap;
	char pad[WEFT__CACHELINE - 3 * sizeof(size_t)];
	char items[];
};
_Static_assert(sizeof(struct chunk) == WEFT__SLAB_HDR,
	       "weft__slab_side assumes the chunk header size");

void weft__slab_init(struct weft__slab *s, size_t isz, size_t link_off,
		     size_t side_sz)
{
	memset(s, 0, sizeof *s);
	pthread_mutex_init(&s->lock, NULL);
	s->isz = isz;
	s->link_off = link_off;
	s->side_sz = side_sz;
}

void weft__slab_fini(struct weft__slab *s)
{
	struct chunk *c = s->chunks;
	while (c) {
		struct chunk *nx = c->next;
		munmap(c, CHUNK_BYTES);
		c = nx;
	}
	s->chunks = NULL;
	pthread_mutex_destroy(&s->lock);
}

static inline void **next_of(struct weft__slab *s, void *p)
{
	return (void **)((char *)p + s->link_off);
}

static struct chunk *chunk_new(struct weft__slab *s)
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
	c->cap = (CHUNK_BYTES - sizeof *c) / (s->isz + s->side_sz);
	return c;
}

/* Under s->lock: up to want items onto *list. */
static size_t take(struct weft__slab *s, void **list, size_t want)
{
	size_t got = 0;
	while (got < want && s->free) {
		void *p = s->free;
		s->free = *next_of(s, p);
		s->nfree--;
		*next_of(s, p) = *list;
		*list = p;
		got++;
	}
	if (got)
		return got;
	struct chunk *c = s->chunks;
	if (!c || c->carved == c->cap) {
		if (!(c = chunk_new(s)))
			return 0;
		c->next = s->chunks;
		s->chunks = c;
	}
	while (got < want && c->carved < c->cap) {
		void *p = c->items + c->carved++ * s->isz;
		*next_of(s, p) = *list;
		*list = p;
		got++;
	}
	return got;
}

void *weft__slab_get(struct weft__slab *s, struct weft__slab_cache *c)
{
	void *p = NULL;
	if (!c) {
		pthread_mutex_lock(&s->lock);
		take(s, &p, 1);
		pthread_mutex_unlock(&s->lock);
		return p;
	}
	if (!c->head) {
		pthread_mutex_lock(&s->lock);
		c->n += take(s, &c->head, REFILL);
		pthread_mutex_unlock(&s->lock);
		if (!c->head)
			return NULL;
	}
	p = c->head;
	c->head = *next_of(s, p);
	c->n--;
	return p;
}

void weft__slab_put(struct weft__slab *s, struct weft__slab_cache *c, void *p)
{
	if (!c) {
		pthread_mutex_lock(&s->lock);
		*next_of(s, p) = s->free;
		s->free = p;
		s->nfree++;
		pthread_mutex_unlock(&s->lock);
		return;
	}
	*next_of(s, p) = c->head;
	c->head = p;
	if (++c->n <= CACHE_MAX)
		return;
	void *first = c->head, *last = first;
	for (int i = 1; i < CACHE_MAX / 2; i++)
		last = *next_of(s, last);
	c->head = *next_of(s, last);
	c->n -= CACHE_MAX / 2;
	pthread_mutex_lock(&s->lock);
	*next_of(s, last) = s->free;
	s->free = first;
	s->nfree += CACHE_MAX / 2;
	pthread_mutex_unlock(&s->lock);
}

void weft__slab_walk(struct weft__slab *s, void (*fn)(void *, void *),
		     void *ctx)
{
	pthread_mutex_lock(&s->lock);
	for (struct chunk *c = s->chunks; c; c = c->next)
		for (size_t i = 0; i < c->carved; i++)
			fn(c->items + i * s->isz, ctx);
	pthread_mutex_unlock(&s->lock);
}
