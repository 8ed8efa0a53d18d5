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
 *   Memory of a freed stack stays committed until weft_run returns (then
 *   every region is unmapped).
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
#define GUARD (64u * 1024) /* bytes below each stack that fault */
#define CACHE_MAX 256 /* per worker; beyond it, half goes to the shared list */
#define REFILL 64      /* stacks taken from the shared list at once */

static size_t page_size(void)
{
	static size_t ps;
	if (!ps)
		ps = (size_t)sysconf(_SC_PAGESIZE);
	return ps;
}

int weft__stacks_init(struct weft__stacks *s, size_t usable)
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
	if (!s->use_mprotect) {
		if (madvise(slot, s->guard, MADV_GUARD_INSTALL) == 0)
			goto ok;
		if (errno != EINVAL && errno != ENOSYS)
			return NULL;
		s->use_mprotect = true; /* kernel before 6.13 */
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

/* Refill the worker cache from the shared list or fresh slots. */
static void refill(struct weft__worker *w)
{
	struct weft__stacks *s = &w->rt->stacks;
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < REFILL; i++) {
		void *lo = NULL;
		if (s->free_list) {
			lo = s->free_list;
			s->free_list = *link_of(s, lo);
			s->free_count--;
		} else {
			if (i >= 8)
				break; /* fresh slots: a few at a time */
			if (s->carve == s->carve_end && new_region(s) != 0)
				break;
			char *slot = s->carve;
			s->carve += s->slot;
			lo = guard_slot(s, slot);
			if (!lo)
				break;
			s->mapped++;
		}
		*link_of(s, lo) = w->stack_cache;
		w->stack_cache = lo;
		w->stack_cached++;
	}
	pthread_mutex_unlock(&s->lock);
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
	w->stack_cached--;
	return lo;
}

void weft__stack_put(struct weft__worker *w, void *lo)
{
	struct weft__stacks *s = &w->rt->stacks;
	*link_of(s, lo) = w->stack_cache;
	w->stack_cache = lo;
	if (++w->stack_cached <= CACHE_MAX)
		return;
	/* hand half to the shared list */
	void *first = w->stack_cache, *last = first;
	for (int i = 1; i < CACHE_MAX / 2; i++)
		last = *link_of(s, last);
	w->stack_cache = *link_of(s, last);
	w->stack_cached -= CACHE_MAX / 2;
	pthread_mutex_lock(&s->lock);
	*link_of(s, last) = s->free_list;
	s->free_list = first;
	s->free_count += CACHE_MAX / 2;
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
