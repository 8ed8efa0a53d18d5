/* stack.c — fiber stacks: mapped in regions, guarded, committed lazily,
 * pooled per worker.
 *
 * Life cycle
 *   A stack is taken when a fiber first runs (weft__fiber_start), not at
 *   spawn, and given back when it ends (after it has switched off it). The
 *   taking worker's cache is tried first, then the shared free list, then a
 *   fresh slot carved from the newest region, then a new region.
 *
 * Layout: a region is one anonymous mapping (MAP_NORESERVE: pages are
 *   committed on first touch) holding REGION_SLOTS slots of
 *   guard + usable bytes. The guard is the lowest GUARD bytes of each slot,
 *   not one page: below it lies the top of the next lower stack, mapped and
 *   writable, so a frame bigger than the guard that is first touched at
 *   its bottom (a local array, an alloca) would skip a one-page guard and
 *   silently write into that stack. Guards are never touched, so their
 *   size costs address space only. The guard is set by
 *   madvise(MADV_GUARD_INSTALL) where the kernel has it (6.13+), which marks
 *   guards in the page tables without splitting the mapping, so one region
 *   is one entry of vm.max_map_count whatever it holds; otherwise
 *   mprotect(PROT_NONE), which costs two map entries per stack. When the
 *   kernel refuses (ENOMEM: out of map entries), the slot is not used and
 *   the fiber that needed it fails with -ENOMEM (its joiner sees it).
 *
 * Free stacks are linked through their top word. Each worker keeps up to
 *   CACHE_MAX of them; beyond that it hands CACHE_MAX/2 to the shared list,
 *   and it refills REFILL at a time: fork-join work starts fibers on one
 *   worker and ends them on another, so stacks flow one way in batches.
 *   Both the caches and the shared list decay (below).
 *
 * Release: the memory of a stack that sat in the shared list through a
 *   whole period (decay_ms, WEFT_STACK_DECAY_MS, 1 s by default) goes back
 *   to the OS (MADV_DONTNEED of its usable part), so a burst of fibers
 *   does not keep its stacks' memory for the rest of the run (Go frees
 *   dead goroutines' stacks at its next GC and its scavenger returns the
 *   pages; jemalloc's decay works the same way as this, with 10 s).
 *   A period starts when a stack enters an empty list (no period runs
 *   while the list is empty, so an idle runtime does not wake for it):
 *     free_low   the least free_count seen during the period: that many
 *                stacks were never taken, so sat there all along;
 *     at the end debt = free_low; free_low = free_count; next period,
 *                or none if the list is empty;
 *     debt       released from the head of the list, RELEASE_BATCH per
 *                look (each stack a madvise, ~5 us with its TLB
 *                shootdown and the freeing): at the maintenance of a busy
 *                worker, or in the park loop of the parked worker that
 *                watches (woken at the end of the period, looping without
 *                sleeping while a debt remains);
 *   and a take from the list lowers free_low and debt to free_count.
 *   R1  No more stacks are released than stayed in the list through a
 *       whole period: debt <= free_low <= free_count at every step.
 *   R2  A released stack is in no list: it is in `clean` (an array, not
 *       a link: its top word was zeroed) and taken from there before a
 *       fresh slot is carved, so the regions stop growing.
 *   madvise runs outside the lock, on stacks detached from the list.
 *   Regions are unmapped when weft_run returns.
 *   A worker's cache decays the same way, by its owner without a lock: a
 *   period starts when the cache grows past CACHE_KEEP; at its end the
 *   stacks at the bottom of the cache that were never taken during it
 *   (cache_low, beyond CACHE_KEEP) are detached to `doomed` and released
 *   RELEASE_BATCH per look, then filed in `clean` (R2). Each worker wakes
 *   for its own cache when parked (weft__stacks_cache_next), so a burst's
 *   stacks leave every cache, down to CACHE_KEEP each.
 *
 * Overflow: a fault in a guard is caught by a SIGSEGV handler on an
 *   alternate stack, which names the fiber (id, name) and aborts. Faults
 *   elsewhere go to the handler that was installed before ours (called
 *   from ours, on the alternate stack). A frame
 *   bigger than GUARD can still jump it: code with such frames should be
 *   built with -fstack-clash-protection (it probes every page).
 */

#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#ifndef WEFT_STACK_GUARD_MPROTECT
#define WEFT_STACK_GUARD_MPROTECT 0 /* 1: guard with mprotect from the start */
#endif

#ifdef WEFT__ASAN
#include <sanitizer/asan_interface.h>
#endif
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define WEFT__VG 1
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define REGION_SLOTS 64
#define FRESH_MAX 8 /* fresh slots per refill */
#define GUARD (64u * 1024) /* bytes below each stack that fault */
#define CACHE_MAX 256 /* per worker; beyond it, half goes to the shared list */
#define REFILL 64      /* stacks taken from the shared list at once */
#define RELEASE_BATCH 16 /* stacks released per look (maintenance, park) */
#define CACHE_KEEP 16    /* stacks a worker's cache keeps through decay */

static size_t page_size(void)
{
	static size_t ps;
	if (!ps)
		ps = (size_t)sysconf(_SC_PAGESIZE);
	return ps;
}

int weft__stacks_init(struct weft__stacks *s, size_t usable,
		      uint32_t decay_ms)
{
	size_t ps = page_size();
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	s->usable = (usable + ps - 1) & ~(ps - 1);
	s->guard = GUARD > ps ? (GUARD + ps - 1) & ~(ps - 1) : ps;
	s->slot = s->usable + s->guard;
	/* tests build a copy that starts with the fallback (this kernel has
	 * MADV_GUARD_INSTALL; tests/CMakeLists.txt, test_overflow_mprotect) */
	s->use_mprotect = WEFT_STACK_GUARD_MPROTECT;
	s->decay_ms = decay_ms;
	return 0;
}

void weft__stacks_fini(struct weft__stacks *s)
{
	struct weft__stack_region *r = s->regions;
	while (r) {
		struct weft__stack_region *nx = r->next;
		/* frames that never returned (a fiber's last switch) leave ASan
		 * poison in the shadow; a later mapping at these addresses (a
		 * buffer ring, the next run's stacks) would inherit it */
		weft__stack_prepare(r->base, r->len);
		munmap(r->base, r->len);
		free(r);
		r = nx;
	}
	s->regions = NULL;
	free(s->clean);
	s->clean = NULL;
	pthread_mutex_destroy(&s->lock);
}

/* top word of a free stack links it to the next */
static inline void **link_of(struct weft__stacks *s, void *lo)
{
	return (void **)((char *)lo + s->usable - sizeof(void *));
}

static int new_region(struct weft__stacks *s)
{
	size_t len = s->slot * REGION_SLOTS;
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
		       -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	struct weft__stack_region *r = malloc(sizeof(*r));
	if (!r) {
		munmap(p, len);
		return -ENOMEM;
	}
	r->base = p;
	r->len = len;
	r->next = s->regions;
	s->regions = r;
	s->carve = p;
	s->carve_end = (char *)p + len;
	return 0;
}

/* guard one slot; returns its usable bottom or NULL (no map entry left) */
static void *guard_slot(struct weft__stacks *s, char *slot)
{
	/* relaxed atomics: workers guard their fresh slots outside the
	 * lock; whoever learns first that the kernel lacks the madvise tells
	 * the others (they would learn it themselves anyway) */
	if (!__atomic_load_n(&s->use_mprotect, __ATOMIC_RELAXED)) {
		if (madvise(slot, s->guard, MADV_GUARD_INSTALL) == 0)
			goto ok;
		if (errno != EINVAL && errno != ENOSYS)
			return NULL;
		/* kernel before 6.13 */
		__atomic_store_n(&s->use_mprotect, true, __ATOMIC_RELAXED);
	}
	if (mprotect(slot, s->guard, PROT_NONE) != 0)
		return NULL; /* ENOMEM: vm.max_map_count reached */
ok:;
	void *lo = slot + s->guard;
#ifdef WEFT__VG
	VALGRIND_STACK_REGISTER(lo, (char *)lo + s->usable);
#endif
	return lo;
}

/* ---- release ------------------------------------------------------------ */

static inline bool reached(uint32_t now, uint32_t end)
{
	return (int32_t)(now - end) >= 0;
}

/* Under lock: stacks left the list; keep R1. */
static void took(struct weft__stacks *s)
{
	if (s->free_low > s->free_count)
		s->free_low = s->free_count;
	if (atomic_load_explicit(&s->debt, memory_order_relaxed) >
	    s->free_count)
		atomic_store_explicit(&s->debt, s->free_count,
				      memory_order_relaxed);
}

/* Under lock: stacks entered the list; start a period if none runs. */
static void arm(struct weft__stacks *s)
{
	if (!s->decay_ms ||
	    atomic_load_explicit(&s->period_end, memory_order_relaxed))
		return;
	s->free_low = s->free_count;
	/* relaxed: a hint for the ticks, which decide under the lock */
	atomic_store_explicit(&s->period_end,
			      (weft__coarse_ms() + s->decay_ms) | 1,
			      memory_order_relaxed);
}

static void file_clean(struct weft__stacks *s, void **batch, size_t n);

/* Under lock, which it drops while it advises: release a batch of the
 * debt. */
static void release_batch(struct weft__stacks *s)
{
	size_t n = atomic_load_explicit(&s->debt, memory_order_relaxed);
	if (n > RELEASE_BATCH)
		n = RELEASE_BATCH;
	if (!n)
		return;
	void *batch[RELEASE_BATCH];
	for (size_t i = 0; i < n; i++) {
		batch[i] = s->free_list;
		s->free_list = *link_of(s, batch[i]);
	}
	s->free_count -= n;
	atomic_store_explicit(&s->debt,
			      atomic_load_explicit(&s->debt,
						   memory_order_relaxed) -
				      n,
			      memory_order_relaxed);
	took(s);
	pthread_mutex_unlock(&s->lock);
	/* detached: ours alone. A failure leaves one committed: still a good
	 * stack (DONTNEED zeroes the link words: the batch holds them) */
	for (size_t i = 0; i < n; i++)
		(void)madvise(batch[i], s->usable, MADV_DONTNEED);
	pthread_mutex_lock(&s->lock);
	file_clean(s, batch, n);
}

/* Under lock: file n released stacks in `clean` (R2); without memory for
 * the array, back to the free list (still good stacks). */
static void file_clean(struct weft__stacks *s, void **batch, size_t n)
{
	if (s->clean_cap - s->nclean < n) {
		size_t cap = s->clean_cap ? s->clean_cap * 2 : 256;
		void **c = realloc(s->clean, cap * sizeof *c);
		if (c) {
			s->clean = c;
			s->clean_cap = cap;
		}
	}
	size_t filed = 0;
	for (size_t i = 0; i < n; i++) {
		if (s->nclean < s->clean_cap) {
			s->clean[s->nclean++] = batch[i];
			filed++;
		} else { /* no memory for the array: back to the list */
			*link_of(s, batch[i]) = s->free_list;
			s->free_list = batch[i];
			s->free_count++;
			arm(s);
		}
	}
	WEFT__BUMP(s->released, filed);
}

/* The owner: its cache grew past CACHE_KEEP; start a period if none runs. */
static void cache_arm(struct weft__worker *w, struct weft__stacks *s)
{
	if (!s->decay_ms || w->cache_end)
		return;
	w->cache_low = w->stack_cached;
	w->cache_end = (weft__coarse_ms() + s->decay_ms) | 1;
}

/* The owner's look at its cache: at the end of a period detach what sat
 * at the bottom all along (beyond CACHE_KEEP), then release a batch of
 * what is detached, outside the lock, and file it in `clean`. */
static void cache_tick(struct weft__worker *w, struct weft__stacks *s)
{
	if (w->cache_end && reached(weft__coarse_ms(), w->cache_end)) {
		size_t n = w->cache_low > CACHE_KEEP ? w->cache_low - CACHE_KEEP
						     : 0;
		if (n && !w->doomed) { /* else next period: still at the bottom */
			/* the list is LIFO: the last n were never taken */
			void *keep = w->stack_cache;
			for (size_t i = 1; i < w->stack_cached - n; i++)
				keep = *link_of(s, keep);
			w->doomed = *link_of(s, keep);
			*link_of(s, keep) = NULL;
			w->ndoomed = n;
			w->stack_cached -= n;
		}
		w->cache_end = 0;
		if (w->stack_cached > CACHE_KEEP)
			cache_arm(w, s);
	}
	if (!w->ndoomed)
		return;
	void *batch[RELEASE_BATCH];
	size_t n = 0;
	while (n < RELEASE_BATCH && w->doomed) {
		batch[n] = w->doomed;
		w->doomed = *link_of(s, batch[n]);
		n++;
	}
	w->ndoomed -= n;
	for (size_t i = 0; i < n; i++)
		(void)madvise(batch[i], s->usable, MADV_DONTNEED);
	pthread_mutex_lock(&s->lock);
	file_clean(s, batch, n);
	pthread_mutex_unlock(&s->lock);
}

/* When the parked owner should look at its cache again: now while stacks
 * wait to be released, a little after its period ends, or UINT64_MAX. */
uint64_t weft__stacks_cache_next(struct weft__worker *w)
{
	if (w->ndoomed)
		return weft__clock();
	if (!w->cache_end)
		return UINT64_MAX;
	int32_t left = (int32_t)(w->cache_end - weft__coarse_ms());
	if (left < 0)
		return weft__clock();
	return weft__clock() + ((uint64_t)left + 5) * 1000000u;
}

/* From maintenance (also the park loop's): the worker's own cache, then
 * the shared list: end the period if it is over, and release a batch of
 * the debt. Cheap when nothing is due: a load, a coarse clock. One batch
 * at a time, also when parked: a parked worker that is notified meanwhile
 * sees it at its next look, a batch later. */
void weft__stacks_tick(struct weft__worker *w)
{
	struct weft__stacks *s = &w->rt->stacks;
	if (w->cache_end || w->ndoomed)
		cache_tick(w, s);
	if (!atomic_load_explicit(&s->period_end, memory_order_relaxed))
		return; /* no period runs: the list is empty, or decay off */
	uint32_t now = weft__coarse_ms();
	if (!atomic_load_explicit(&s->debt, memory_order_relaxed) &&
	    !reached(now, atomic_load_explicit(&s->period_end,
					       memory_order_relaxed)))
		return;
	if (pthread_mutex_trylock(&s->lock))
		return; /* another worker is at it, or a refill */
	uint32_t end = atomic_load_explicit(&s->period_end,
					    memory_order_relaxed);
	if (end && reached(now, end)) {
		/* R1: free_low stacks sat here the whole period */
		atomic_store_explicit(&s->debt, s->free_low,
				      memory_order_relaxed);
		s->free_low = s->free_count;
		atomic_store_explicit(&s->period_end,
				      (now + s->decay_ms) | 1,
				      memory_order_relaxed);
	}
	/* the lock is dropped while advising: refills go on meanwhile */
	release_batch(s);
	if (!s->free_count) /* nothing to watch: no period until a put */
		atomic_store_explicit(&s->period_end, 0,
				      memory_order_relaxed);
	pthread_mutex_unlock(&s->lock);
}

/* When a parked worker should look again (the park loop, whose
 * maintenance ticks): now while a debt remains or once the period has
 * ended, else a little after it ends (the coarse clock moves in ticks of
 * up to 4 ms here), UINT64_MAX if none runs. weft__clock() time. */
uint64_t weft__stacks_next(struct weft__stacks *s)
{
	uint32_t end = atomic_load_explicit(&s->period_end,
					    memory_order_relaxed);
	if (!end)
		return UINT64_MAX;
	int32_t left = (int32_t)(end - weft__coarse_ms());
	if (left < 0 || atomic_load_explicit(&s->debt, memory_order_relaxed))
		return weft__clock();
	return weft__clock() + ((uint64_t)left + 5) * 1000000u;
}

/* Refill the worker cache from the shared list or fresh slots. Fresh
 * slots are only reserved under the lock (the carve pointer moves); their
 * guard (a madvise, or an mprotect) and their first touch (the link word,
 * a page fault: a zeroed page) happen after it. Under the lock, two
 * workers starting a burst of fibers queued behind each other's syscalls
 * and faults: 1,000,000 sleepers started in 3.6 s with 15% of the CPU in
 * futex waits and wakes of this lock. */
static void refill(struct weft__worker *w)
{
	struct weft__stacks *s = &w->rt->stacks;
	char *fresh[FRESH_MAX];
	int nfresh = 0;
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < REFILL; i++) {
		void *lo = NULL;
		if (s->free_list) {
			lo = s->free_list;
			s->free_list = *link_of(s, lo);
			s->free_count--;
			took(s);
		} else if (s->nclean) {
			lo = s->clean[--s->nclean]; /* R2 */
		} else {
			if (nfresh == FRESH_MAX)
				break; /* fresh slots: a few at a time */
			if (s->carve == s->carve_end && new_region(s) != 0)
				break;
			fresh[nfresh++] = s->carve;
			s->carve += s->slot;
			continue;
		}
		*link_of(s, lo) = w->stack_cache;
		w->stack_cache = lo;
		w->stack_cached++;
	}
	s->mapped += (size_t)nfresh;
	pthread_mutex_unlock(&s->lock);
	/* a slot the kernel will not guard (no map entry left) is not used,
	 * as the header says; the next one is still tried */
	for (int k = 0; k < nfresh; k++) {
		void *lo = guard_slot(s, fresh[k]);
		if (!lo)
			continue;
		*link_of(s, lo) = w->stack_cache;
		w->stack_cache = lo;
		w->stack_cached++;
	}
}

void *weft__stack_get(struct weft__worker *w)
{
	struct weft__stacks *s = &w->rt->stacks;
	if (!w->stack_cache)
		refill(w);
	void *lo = w->stack_cache;
	if (!lo)
		return NULL;
	w->stack_cache = *link_of(s, lo);
	if (--w->stack_cached < w->cache_low)
		w->cache_low = w->stack_cached;
	return lo;
}

void weft__stack_put(struct weft__worker *w, void *lo)
{
	struct weft__stacks *s = &w->rt->stacks;
	*link_of(s, lo) = w->stack_cache;
	w->stack_cache = lo;
	if (++w->stack_cached <= CACHE_MAX) {
		if (w->stack_cached > CACHE_KEEP && !w->cache_end)
			cache_arm(w, s);
		return;
	}
	/* hand half to the shared list */
	void *first = w->stack_cache, *last = first;
	for (int i = 1; i < CACHE_MAX / 2; i++)
		last = *link_of(s, last);
	w->stack_cache = *link_of(s, last);
	w->stack_cached -= CACHE_MAX / 2;
	if (w->cache_low > w->stack_cached)
		w->cache_low = w->stack_cached;
	pthread_mutex_lock(&s->lock);
	*link_of(s, last) = s->free_list;
	s->free_list = first;
	s->free_count += CACHE_MAX / 2;
	arm(s);
	pthread_mutex_unlock(&s->lock);
}

/* Make a reused stack clean for the sanitizers: an earlier fiber's frames
 * may have left ASan poison behind. */
void weft__stack_prepare(void *lo, size_t size)
{
#ifdef WEFT__ASAN
	__asan_unpoison_memory_region(lo, size);
#else
	(void)lo;
	(void)size;
#endif
}

/* ---- overflow reporting -------------------------------------------------- */

static struct sigaction old_segv, old_bus;
static atomic_int handler_installed;

static void write_str(const char *s)
{
	ssize_t r = write(2, s, strlen(s));
	(void)r;
}

static char *fmt_u64(char *end, uint64_t v)
{
	*--end = 0;
	do
		*--end = (char)('0' + v % 10);
	while (v /= 10);
	return end;
}

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	struct weft__worker *w = weft__worker_self();
	struct weft__rt *rt = w ? w->rt : NULL;
	weft_task *f = w ? w->cur : NULL;
	char *addr = si->si_addr;
	if (rt && f && f->ctx.stack_lo) {
		char *lo = f->ctx.stack_lo;
		/* in our guard, or just below it (a big frame jumped it, from
		 * a region's lowest slot: below the others is the next stack,
		 * which does not fault) */
		if (addr < lo && addr >= lo - rt->stacks.guard - 65536) {
			char b1[24], b2[24], b3[24];
			write_str("weft: fiber ");
			write_str(fmt_u64(b1 + sizeof b1, f->id));
			if (f->name) {
				write_str(" (");
				write_str(f->name);
				write_str(")");
			}
			write_str(" overflowed its stack of ");
			write_str(fmt_u64(b2 + sizeof b2, rt->stacks.usable));
			write_str(" bytes on worker ");
			write_str(fmt_u64(b3 + sizeof b3, w->index));
			write_str("; raise weft_config.stack_size or "
				  "WEFT_STACK_SIZE\n");
			signal(SIGABRT, SIG_DFL);
			abort();
		}
	}
	/* not ours: to whoever handled it before. A handler is called from
	 * here, not put back: one that recovers (a probe, a GC's barrier)
	 * would leave the next overflow unreported. The default action (or
	 * an ignored fault, which the kernel kills for) is put back, and the
	 * fault, run again on return, ends the process as it would have. */
	struct sigaction *old = sig == SIGSEGV ? &old_segv : &old_bus;
	if (old->sa_flags & SA_SIGINFO)
		old->sa_sigaction(sig, si, uc);
	else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN)
		old->sa_handler(sig);
	else
		sigaction(sig, old, NULL);
}

int weft__guard_handler_install(void)
{
	if (atomic_exchange(&handler_installed, 1))
		return 0;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, &old_segv) != 0 ||
	    sigaction(SIGBUS, &sa, &old_bus) != 0)
		return -errno;
	return 0;
}

/* Give the calling thread an alternate signal stack (the overflow handler
 * cannot run on the stack that overflowed). *save keeps the previous one.
 * Mapped with a guard page below it: a handler of the program's own with
 * SA_ONSTACK that runs deeper than ALTSTACK bytes faults (the kernel then
 * ends the process) instead of writing over the heap. */
#define ALTSTACK (64u * 1024)
struct altstack { /* at the top of the mapping, above the stack */
	stack_t old;
	char *base; /* the mapping */
	size_t len;
};

int weft__altstack_push(void **save)
{
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	size_t len = ps + ALTSTACK + ps; /* guard, stack, this header */
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return -errno;
	/* no guard (out of map entries): the stack still works */
	(void)mprotect(m, ps, PROT_NONE);
	struct altstack *a = (struct altstack *)(m + ps + ALTSTACK);
	a->base = m;
	a->len = len;
	if (sigaltstack(NULL, &a->old) != 0) {
		int e = -errno;
		munmap(m, len);
		return e;
	}
	stack_t ss = {.ss_sp = m + ps, .ss_size = ALTSTACK, .ss_flags = 0};
	if (sigaltstack(&ss, NULL) != 0) {
		int e = -errno;
		munmap(m, len);
		return e;
	}
	*save = a;
	return 0;
}

void weft__altstack_pop(void *save)
{
	if (!save)
		return;
	struct altstack *a = save;
	if (a->old.ss_flags & SS_DISABLE) {
		stack_t off = {.ss_flags = SS_DISABLE};
		sigaltstack(&off, NULL);
	} else {
		sigaltstack(&a->old, NULL);
	}
	munmap(a->base, a->len);
}
