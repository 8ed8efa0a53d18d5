/* metrics.c — weft_metrics_get: sum the workers' counters, read the gauges.
 *
 * Who writes what (internal.h, "observability")
 *   Every per-worker counter is written by its worker only, as a relaxed
 *   load plus a relaxed store (WEFT__BUMP): no lock prefix, no cache line
 *   shared with another writer, and on x86 and arm64 the same instructions
 *   as a plain increment. spawned/exited were already there (release: the
 *   termination count, sched.c); m_* are new. The one gauge a worker keeps
 *   apart is its busy time: m_busy_ns (closed stretches) plus the open one
 *   since m_busy_since (0 while it is parked), read twice-checked below.
 *   Readers (any thread) only load. A counter read while its worker runs
 *   is that counter's value a moment ago: each total is exact for some
 *   recent instant, and exact once the scenario measured has finished
 *   (which is what the tests check).
 *
 *   Queue lengths are the deque's and the global queue's relaxed length
 *   words; timers and the blocking pool are read under their locks (held
 *   for a few loads); I/O in flight is submitted - completed.
 */
#include <string.h>

#include "internal.h"

#define LD(a) atomic_load_explicit(&(a), memory_order_relaxed)

/* busy time of w up to now: closed stretches plus the open one */
static uint64_t busy_of(struct weft__worker *w, uint64_t now)
{
	for (int tries = 0;; tries++) {
		/* acquire/acquire: the owner stores m_busy_ns, then
		 * m_busy_since (release); the same since before and after the
		 * read of m_busy_ns means no park or wake came in between */
		uint64_t s1 = atomic_load_explicit(&w->m_busy_since,
						   memory_order_acquire);
		uint64_t b = atomic_load_explicit(&w->m_busy_ns,
						  memory_order_acquire);
		uint64_t s2 = atomic_load_explicit(&w->m_busy_since,
						   memory_order_acquire);
		if (s1 == s2 || tries > 8)
			return b + (s2 && now > s2 ? now - s2 : 0);
	}
}

static void fill(struct weft__rt *rt, weft_metrics *m)
{
	memset(m, 0, sizeof *m);
	uint64_t now = weft__clock();
	m->workers = rt->nworkers;
	m->nworker = rt->nworkers < WEFT_METRICS_WORKERS ? rt->nworkers
							 : WEFT_METRICS_WORKERS;
	m->uptime_ns = now - rt->start_ns;
	/* completions before spawns, as weft__live_count: every counted end
	 * has its spawn counted, so alive never underflows */
	uint64_t done[WEFT_METRICS_WORKERS] = {0}, done_all = 0;
	for (unsigned i = 0; i < rt->nworkers; i++) {
		uint64_t d = atomic_load_explicit(&rt->workers[i].exited,
						  memory_order_acquire);
		if (i < WEFT_METRICS_WORKERS)
			done[i] = d;
		done_all += d;
	}
	for (unsigned i = 0; i < rt->nworkers; i++) {
		struct weft__worker *w = &rt->workers[i];
		weft_worker_metrics x = {0};
		x.spawned = atomic_load_explicit(&w->spawned,
						 memory_order_acquire);
		x.completed = i < WEFT_METRICS_WORKERS
				      ? done[i]
				      : LD(w->exited);
		x.polls = LD(w->m_polls);
		x.steals = LD(w->m_steals);
		x.stolen = LD(w->m_stolen);
		x.parks = LD(w->m_parks);
		x.unparks = LD(w->m_unparks);
		/* completed first: a completion's submit is counted before it */
		x.io_completed = LD(w->m_io_done);
		x.io_submitted = LD(w->m_io_sub);
		x.io_inflight = x.io_submitted > x.io_completed
					? x.io_submitted - x.io_completed
					: 0;
		x.local_queue = rt->sim ? weft__sim_queued(rt, i)
					: weft__dq_len(&w->dq);
		x.timers = weft__timers_len(w);
		x.busy_ns = busy_of(w, now);

		m->spawned += x.spawned;
		m->polls += x.polls;
		m->steals += x.steals;
		m->stolen += x.stolen;
		m->parks += x.parks;
		m->unparks += x.unparks;
		m->io_submitted += x.io_submitted;
		m->io_completed += x.io_completed;
		m->io_inflight += x.io_inflight;
		m->local_queue += x.local_queue;
		m->timers += x.timers;
		m->busy_ns += x.busy_ns;
		if (i < WEFT_METRICS_WORKERS)
			m->worker[i] = x;
	}
	m->spawned += atomic_load_explicit(&rt->ext_spawned,
					   memory_order_acquire);
	m->completed = done_all;
	m->alive = m->spawned - m->completed;
	m->global_queue = atomic_load_explicit(&rt->inject.len,
					       memory_order_relaxed);
	unsigned th, idle, q;
	weft__blocking_stats(rt, &th, &idle, &q);
	m->blocking_threads = th;
	m->blocking_idle = idle;
	m->blocking_queue = q;
}

int weft_metrics_get(weft_metrics *m)
{
	if (!m)
		return -EINVAL;
	bool foreign = !weft__worker_self();
	if (foreign)
		weft__foreign_enter();
	struct weft__rt *rt = atomic_load(&weft__rt_cur);
	if (rt)
		fill(rt, m);
	if (foreign)
		weft__foreign_exit();
	return rt ? 0 : -ESRCH;
}
