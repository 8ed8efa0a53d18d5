/* weft/runtime.h — start and stop the runtime (asyncio.run).
 *
 * weft_run() turns the calling thread into worker 0, starts the other
 * workers (seeded: simulates them all on this thread, weft/sim.h), runs main_fn as the first fiber and returns once it has returned
 * and every other fiber has finished: fibers still alive then are cancelled
 * (their waits return -ECANCELED) and run to their end first. One runtime at
 * a time per process; weft_run may be called again after it returned.
 */
#ifndef WEFT_RUNTIME_H
#define WEFT_RUNTIME_H

#include "common.h"

WEFT_BEGIN_DECLS

typedef struct weft_config {
	unsigned workers;      /* 0: env WEFT_WORKERS, else one per online CPU
	                          (seeded runs: 4, the same on every machine) */
	size_t stack_size;     /* usable bytes per fiber stack; 0: env
	                          WEFT_STACK_SIZE, else 64 KiB */
	unsigned ring_entries; /* SQ entries per worker ring; 0: 256, min 4 */
	uint64_t seed;         /* != 0: deterministic simulation (weft/sim.h);
	                          0: env WEFT_SEED, else off */
	/* observability (weft/debug.h, docs/env.md) */
	unsigned slow_ms;      /* report a fiber that runs this long without
	                          yielding; 0: env WEFT_SLOW_MS, else off */
	int dump_signal;       /* on this signal (SIGQUIT, SIGUSR1, ...) dump
	                          every fiber to stderr; 0: env
	                          WEFT_DUMP_SIGNAL, else none; -1: none */
	int unjoined_report;   /* list tasks never joined nor detached at the
	                          end: 1 yes, -1 no; 0: env
	                          WEFT_UNJOINED_REPORT (0/1), else yes */
	unsigned blocking_threads; /* blocking pool size; 0: env
	                              WEFT_BLOCKING_THREADS, else 64 */
	unsigned blocking_queue;   /* queued blocking calls; 0: 4096 */
	unsigned conn_buffers;     /* weft_conn receive buffers per worker, a
	                              power of 2 <= 32768; 0: 1024 */
	unsigned conn_buffer_size; /* bytes each, <= 1 MiB; 0: 4096 */
	/* deterministic simulation (weft/sim.h, docs/testing.md) */
	const char *faults;    /* seeded faults, "kind=p,...": short reset nomem
	                          delay spurious all; NULL: env WEFT_FAULTS.
	                          Faults without a seed pick one and print it */
	unsigned pct;          /* PCT depth (priority schedules, small tests);
	                          0: env WEFT_PCT, else a random walk */
} weft_config;

/* Fill every field with its default (all zero: "choose for me"). */
WEFT_API void weft_config_init(weft_config *cfg);

/* Run main_fn(arg) as the first fiber; *result (if non-NULL) gets its return.
 * Returns 0 once every fiber has finished, or
 *   -EDEADLK  (seeded runs) every fiber was parked with no timer, I/O or
 *             blocking call pending: the wait graph went to stderr, every
 *             fiber was cancelled and ran to its end;
 *   -EINVAL   main_fn NULL, workers > 1024, stack_size outside
 *             [16 KiB, 1 GiB], ring_entries > 32768, blocking_threads >
 *             4096, blocking_queue > 2^20, conn_buffers not a power
 *             of 2 or > 32768, conn_buffer_size > 1 MiB, or a malformed
 *             WEFT_WORKERS / WEFT_STACK_SIZE / WEFT_BLOCKING_THREADS;
 *             also: dump_signal < -1, SIGKILL, SIGSTOP, SIGSEGV, SIGBUS,
 *             SIGFPE, SIGILL, SIGTRAP, SIGSYS or a real-time signal,
 *             unjoined_report outside [-1, 1], or a malformed WEFT_SLOW_MS
 *             / WEFT_DUMP_SIGNAL / WEFT_UNJOINED_REPORT; a malformed
 *             faults / WEFT_FAULTS / WEFT_SEED / WEFT_PCT, or pct > 64;
 *   -EBUSY    a runtime is already running in this process (nested or
 *             concurrent weft_run);
 *   -ENOMEM   out of memory; or a negative errno from io_uring_setup
 *             (-ENOSYS, -EPERM), pthread_create (-EAGAIN), or from
 *             io_uring_setup, eventfd or pipe at the descriptor limit
 *             (-EMFILE, -ENFILE).
 * On those errors (all but -EDEADLK) nothing ran and nothing is left
 * behind. */
WEFT_API int weft_run(const weft_config *cfg, void *(*main_fn)(void *),
		      void *arg, void **result);

/* Monotonic time in nanoseconds (CLOCK_MONOTONIC; virtual in a seeded
 * run, starting at 1 s). Callable anywhere. */
WEFT_API uint64_t weft_now(void);

/* Index of the worker running the caller now, 0 .. workers-1; it can change
 * after any call that suspends. WEFT_NO_WORKER outside a worker thread. */
#define WEFT_NO_WORKER 0xffffffffu
WEFT_API unsigned weft_worker_id(void);

/* Number of workers of the running runtime; 0 when none runs. */
WEFT_API unsigned weft_worker_count(void);

/* A static string describing a negative errno (or a positive one); never
 * NULL. Unknown values give "unknown error". */
WEFT_API const char *weft_strerror(int err);

WEFT_END_DECLS

#endif
