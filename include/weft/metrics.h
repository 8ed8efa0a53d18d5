/* weft/metrics.h — counters and gauges of the running runtime (Tokio's
 * RuntimeMetrics, Go's runtime/metrics), per worker and in total.
 *
 * Cheap enough to leave on: each worker writes its own counters with plain
 * stores (no atomic read-modify-write, no shared cache line), and a read
 * sums them without stopping anyone. So a snapshot taken while fibers run
 * is each counter's value at some recent instant, not one instant for all.
 * Counters start at 0 at every weft_run and only grow; gauges are "now".
 */
#ifndef WEFT_METRICS_H
#define WEFT_METRICS_H

#include "common.h"

WEFT_BEGIN_DECLS

#define WEFT_METRICS_WORKERS 64 /* per-worker entries a weft_metrics holds */

typedef struct weft_worker_metrics {
	uint64_t spawned;      /* fibers spawned by fibers running on it */
	uint64_t completed;    /* fibers that ended on it */
	uint64_t polls;        /* fiber resumes (a yield that found nothing
	                          else to run counts as one) */
	uint64_t steals;       /* steals it made from other workers */
	uint64_t stolen;       /* fibers those steals moved to it */
	uint64_t parks;        /* times it went to sleep for want of work */
	uint64_t unparks;      /* times another thread woke it (it also wakes
	                          by itself for its timers and I/O) */
	uint64_t io_submitted; /* I/O operations queued on its ring */
	uint64_t io_completed; /* ... and completed */
	uint64_t io_inflight;  /* gauge: submitted - completed */
	uint64_t local_queue;  /* gauge: fibers in its run queue */
	uint64_t timers;       /* gauge: timers pending (sleeps, deadlines) */
	uint64_t busy_ns;      /* time awake: not parked (its search for
	                          work, at most 30 us before a park, counts) */
} weft_worker_metrics;

typedef struct weft_metrics {
	unsigned workers;       /* workers of the runtime */
	unsigned nworker;       /* entries of worker[] filled:
	                           min(workers, WEFT_METRICS_WORKERS) */
	uint64_t uptime_ns;     /* since weft_run started */
	uint64_t spawned;       /* all fibers, main and foreign spawns included */
	uint64_t completed;     /* fibers ended */
	uint64_t alive;         /* gauge: spawned - completed */
	/* the sums over every worker (all of them, not only nworker) */
	uint64_t polls, steals, stolen, parks, unparks;
	uint64_t io_submitted, io_completed, io_inflight;
	uint64_t local_queue, timers, busy_ns;
	uint64_t global_queue;     /* gauge: fibers in the global queue */
	uint64_t blocking_threads; /* gauge: blocking-pool threads alive */
	uint64_t blocking_idle;    /* gauge: ... of which waiting for a call */
	uint64_t blocking_queue;   /* gauge: calls waiting for a thread */
	weft_worker_metrics worker[WEFT_METRICS_WORKERS];
} weft_metrics;

/* Fill *m from any thread (a fiber, a pool thread, any other) while
 * weft_run runs. Returns 0; -EINVAL if m is NULL; -ESRCH if no runtime is
 * running. Cost: a few loads per worker, and each worker's timer lock
 * and the blocking pool's lock held for a moment: microseconds; fine every
 * second, not for every request of a server. */
WEFT_API int weft_metrics_get(weft_metrics *m);

WEFT_END_DECLS

#endif
