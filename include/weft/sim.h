/* weft/sim.h — deterministic simulation: seeded schedules, virtual time,
 * seeded fault injection, and a harness that explores seeds.
 *
 * weft_config.seed != 0 (or env WEFT_SEED) runs every worker on the calling
 * thread; each scheduling choice (worker, fiber, victim, ring reap, LIFO or
 * not) comes from the seed and time is virtual: same seed and program, same
 * run, checkable by its trace hash. Faults (weft_config.faults or env
 * WEFT_FAULTS, e.g. "short=0.1,reset=0.01" or "all=0.02") are drawn from the
 * same seed. Real I/O completions are the one outside source of order.
 * Guide: docs/testing.md.
 */
#ifndef WEFT_SIM_H
#define WEFT_SIM_H

#include "common.h"
#include "runtime.h"

WEFT_BEGIN_DECLS

enum weft_fault {
	WEFT_FAULT_SHORT,    /* reads/writes cut short (as after EINTR) */
	WEFT_FAULT_RESET,    /* socket recv/send fail with -ECONNRESET */
	WEFT_FAULT_NOMEM,    /* spawn, stack, channel creation: -ENOMEM */
	WEFT_FAULT_DELAY,    /* an I/O completion held back 1 us..10 ms */
	WEFT_FAULT_SPURIOUS, /* weft_cond_wait returns with no signal */
	WEFT_FAULT_COUNT
};

typedef struct weft_sim_report {
	uint64_t seed;     /* the run's seed */
	uint64_t trace;    /* hash of every choice and event, in order */
	uint64_t steps;    /* fibers resumed */
	uint64_t steals;   /* resumes on another worker than queued on */
	uint64_t virtual_ns; /* virtual time that passed */
	uint64_t faults[WEFT_FAULT_COUNT]; /* injected, by kind */
	int deadlock;      /* 1: all fibers parked, no timers, no I/O */
} weft_sim_report;

/* From a fiber of a seeded run: its report so far; from anywhere else
 * (another thread, or after weft_run): the last finished seeded run's.
 * Returns 0, -EINVAL (out NULL), -ENOENT (no seeded run yet). */
WEFT_API int weft_sim_report_get(weft_sim_report *out);

/* Run weft_run(cfg with seed s, fn, arg) for s = first .. first+count-1,
 * each in a child process (a crash or a hang is a failure too), and stop at
 * the first failure: fn returned non-NULL, weft_run failed (-EDEADLK for a
 * deadlock), the child died, or it ran over timeout_ms (0: 60 s). Prints the
 * failing seed and the command that replays it. With env WEFT_SEED set it
 * runs that seed only, in this process (the replay).
 * Returns the failing seed (> 0), 0 if every seed passed, or
 *   -EINVAL  fn NULL, first 0 or count 0, cfg's pct or faults bad;
 *   -EBUSY   called while a runtime runs; -errno from fork. */
WEFT_API int64_t weft_sim_explore(const weft_config *cfg, uint64_t first,
				  uint64_t count, unsigned timeout_ms,
				  void *(*fn)(void *), void *arg);

WEFT_END_DECLS

#endif
