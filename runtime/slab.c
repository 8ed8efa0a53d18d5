/* slab.c — type-stable memory for fibers and task handles.
 *
 * Items come from 2 MiB chunks (one transparent huge page each: a million
 * items cost a few page faults, not tens of thousands) that stay mapped
 * until weft_run returns. So a stale pointer — a task handle used after
 * join, a fiber a stale waker still names — always points at readable
 * memory, whose flags say whether it is live (fiber.c relies on this).
 * Fresh chunks read as zero, so items never handed out have flags 0 ("not
 * live"). The slab writes only two places of a free item: its link (at
 * link_off) and, in the first item of a batch, the batch header (at
 * hdr_off: the next batch and the batch's count); the owner of the items
 * chooses both where nothing reads a free item.
 *
 * Free items move in batches (Bonwick's magazines): NULL-terminated
 * chains linked through link_off, of at most BATCH items.
 *   - Each worker keeps a cache (struct weft__slab_cache, owner only):
 *     the chain it takes from and frees onto (head, n <= BATCH), and one
 *     spare chain of BATCH items (full).
 *   - A free onto a full head makes head the spare (an older spare goes
 *     to the depot) and starts a new chain; a take from an empty head
 *     takes the spare, else a batch from the depot, else REFILL items
 *     carved from the newest chunk.
 *   - The depot (s->depot, under s->lock) is a stack of batches linked
 *     through their headers. Threads without a cache (c == NULL: a plain
 *     thread's spawn or join) free one item as a batch of one, and take
 *     the first item of the top batch, putting the rest back as a batch.
 * So every move between a cache and the depot is O(1) under the lock.
 * Before 2026-11-29 the depot was one list and a cache moved items one at
 * a time (128 to it, 64 from it), walking their links: a million tasks
 * freed by joins and spawned again were a million cold cache lines
 * chased one after another under the lock (`bench_spawn_many 1000000 9`,
 * the median of the rounds after the first: 2 workers 66-76 -> 45-62 ns
 * per spawn + join, 1 worker 91-95 -> 73-79 ns; docs/benchmarks.md).
 * A worker holds at most 2 * BATCH free items, as before.
 *
 * Side data (weft__slab_side, internal.h): after its cap items a chunk
 * keeps side_sz bytes per item, for what is written once and read rarely
 * (a fiber's spawn site), so the items themselves stay within their lines.
 */
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define CHUNK_BYTES WEFT__SLAB_CHUNK
#define BATCH WEFT__SLAB_BATCH
#define REFILL WEFT__SLAB_REFILL

/* at hdr_off of the first item of a batch in the depot */
struct batch {
	void *next; /* the next batch down */
	size_t n;   /* items in this one */
};

struct chunk {
	struct chunk *next;
	size_t carved, cap;
	char pad[WEFT__CACHELINE - 3 * sizeof(size_t)];
	char items[];
};
_Static_assert(sizeof(struct chunk) == WEFT__SLAB_HDR,
	       "weft__slab_side assumes the chunk header size");

void weft__slab_init(struct weft__slab *s, size_t isz, size_t link_off,
		     size_t hdr_off, size_t side_sz)
{
	if (link_off + sizeof(void *) > isz ||
	    hdr_off + sizeof(struct batch) > isz ||
	    (link_off + sizeof(void *) > hdr_off &&
	     hdr_off + sizeof(struct batch) > link_off))
		weft__die("slab: link at %zu and batch header at %zu overlap "
			  "or leave an item of %zu bytes",
			  link_off, hdr_off, isz);
	memset(s, 0, sizeof *s);
	pthread_mutex_init(&s->lock, NULL);
	s->isz = isz;
	s->link_off = link_off;
	s->hdr_off = hdr_off;
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

static inline struct batch *batch_of(struct weft__slab *s, void *p)
{
	return (struct batch *)((char *)p + s->hdr_off);
}

/* Under s->lock: the NULL-terminated chain first (n items) onto the depot */
static void depot_push(struct weft__slab *s, void *first, size_t n)
{
	struct batch *b = batch_of(s, first);
	b->next = s->depot;
	b->n = n;
	s->depot = first;
}

/* Under s->lock: the top batch off the depot (NULL if none); *n its count */
static void *depot_pop(struct weft__slab *s, size_t *n)
{
	void *first = s->depot;
	if (!first)
		return NULL;
	struct batch *b = batch_of(s, first);
	s->depot = b->next;
	*n = b->n;
	return first;
}

/* Under s->lock: up to want fresh items as a NULL-terminated chain (NULL
 * if no memory); *n how many */
static void *carve(struct weft__slab *s, size_t want, size_t *n)
{
	struct chunk *c = s->chunks;
	if (!c || c->carved == c->cap) {
		if (!(c = chunk_new(s)))
			return NULL;
		c->next = s->chunks;
		s->chunks = c;
	}
	void *list = NULL;
	size_t got = 0;
	while (got < want && c->carved < c->cap) {
		void *p = c->items + c->carved++ * s->isz;
		*next_of(s, p) = list;
		list = p;
		got++;
	}
	*n = got;
	return list;
}

/* Under s->lock: a batch from the depot, else fresh items */
static void *take(struct weft__slab *s, size_t want, size_t *n)
{
	void *p = depot_pop(s, n);
	return p ? p : carve(s, want, n);
}

/* Out of line, so that the fast paths below save no registers. */
static WEFT__NOINLINE void *get_slow(struct weft__slab *s,
				     struct weft__slab_cache *c)
{
	void *p;
	size_t n;
	if (!c) { /* one item: the rest of its batch goes back */
		pthread_mutex_lock(&s->lock);
		if ((p = take(s, 1, &n)) && n > 1)
			depot_push(s, *next_of(s, p), n - 1);
		pthread_mutex_unlock(&s->lock);
		return p;
	}
	if (c->full) {
		p = c->full;
		n = c->nfull;
		c->full = NULL;
		c->nfull = 0;
	} else {
		pthread_mutex_lock(&s->lock);
		p = take(s, REFILL, &n);
		pthread_mutex_unlock(&s->lock);
		if (!p)
			return NULL;
	}
	c->head = *next_of(s, p);
	c->n = n - 1;
	return p;
}

void *weft__slab_get(struct weft__slab *s, struct weft__slab_cache *c)
{
	void *p;
	if (!c || !(p = c->head))
		return get_slow(s, c);
	c->head = *next_of(s, p);
	c->n--;
	return p;
}

static WEFT__NOINLINE void put_slow(struct weft__slab *s,
				    struct weft__slab_cache *c, void *p)
{
	if (!c) { /* a batch of one */
		*next_of(s, p) = NULL;
		pthread_mutex_lock(&s->lock);
		depot_push(s, p, 1);
		pthread_mutex_unlock(&s->lock);
		return;
	}
	/* head is full: it becomes the spare, an older spare leaves */
	if (c->full) {
		pthread_mutex_lock(&s->lock);
		depot_push(s, c->full, c->nfull);
		pthread_mutex_unlock(&s->lock);
	}
	c->full = c->head;
	c->nfull = c->n;
	*next_of(s, p) = NULL;
	c->head = p;
	c->n = 1;
}

void weft__slab_put(struct weft__slab *s, struct weft__slab_cache *c, void *p)
{
	if (!c || c->n == BATCH) {
		put_slow(s, c, p);
		return;
	}
	*next_of(s, p) = c->head;
	c->head = p;
	c->n++;
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
