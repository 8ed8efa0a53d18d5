/* 05_blocking.c — the Python tour, part e: a blocking call inside a fiber.
 *
 * A "ticker" fiber sleeps until the next multiple of 50 ms and prints a
 * tick. After 100 ms a "blocker" fiber calls usleep(300 ms):
 * a plain blocking call (a legacy library, a slow computation, a
 * time.sleep() in Python) that never gives its worker back.
 *
 * On one worker that freezes everything, as it freezes asyncio's loop: no
 * tick for 300 ms. On two workers it freezes only the blocker's worker; the
 * other one goes on ticking: it steals the runnable fibers of the stuck
 * worker and fires its timers once they are 2 ms overdue (a ticker that
 * went to sleep on the stuck worker wakes on the other one). Either way the
 * slow-fiber watchdog (on here: WEFT_SLOW_MS=100, or weft_config.slow_ms)
 * names the culprit on stderr while it blocks:
 *
 *     weft: slow fiber 4 "blocker" on worker 0: running 100 ms without yielding
 *
 * The cure is weft_blocking() (loop.run_in_executor): the call runs on the
 * blocking pool and only the calling fiber waits.
 * (What no other worker can take over is the stuck worker's io_uring: a
 * fiber waiting there for I/O waits for the worker.)
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <weft.h>

#define MS 1000000ull
#define MAX_TICKS 64

static uint64_t t0;
static double tick_at[MAX_TICKS];
static unsigned tick_worker[MAX_TICKS];
static int nticks;
static double block_from, block_to;
static unsigned block_worker;

static double now_s(void)
{
	return (double)(weft_now() - t0) * 1e-9;
}

static void *ticker(void *arg)
{
	(void)arg;
	uint64_t end = t0 + 600 * MS;
	while (weft_now() < end && nticks < MAX_TICKS) {
		/* sleep to the next multiple of 50 ms (no burst after a stall) */
		uint64_t next = t0 + ((weft_now() - t0) / (50 * MS) + 1) * 50 * MS;
		if (weft_sleep(next - weft_now()) < 0)
			break;
		tick_at[nticks] = now_s();
		tick_worker[nticks] = weft_worker_id();
		printf("  tick %2d at %.3f s on worker %u\n", nticks + 1,
		       tick_at[nticks], tick_worker[nticks]);
		nticks++;
	}
	return NULL;
}

static void *blocker(void *arg)
{
	block_worker = weft_worker_id();
	block_from = now_s();
	printf("  blocker (fiber %llu) on worker %u calls usleep(300 ms) at "
	       "%.3f s\n", (unsigned long long)weft_self_id(), block_worker,
	       block_from);
	usleep(300 * 1000); /* blocks the worker: nothing else runs on it */
	block_to = now_s();
	printf("  blocker returns at %.3f s\n", block_to);
	return NULL;
}

static void *main_fiber(void *arg)
{
	t0 = weft_now();
	nticks = 0;
	weft_task *tt = weft_spawn(ticker, NULL);
	if (!tt) {
		fprintf(stderr, "weft_spawn: out of memory\n");
		return (void *)1;
	}
	weft_task_set_name(tt, "ticker");
	int r = weft_sleep(100 * MS);
	weft_task *tb = r < 0 ? NULL : weft_spawn(blocker, NULL);
	if (!tb) {
		fprintf(stderr, "%s: %s\n", r < 0 ? "weft_sleep" : "weft_spawn",
			weft_strerror(r < 0 ? r : -ENOMEM));
		weft_cancel(tt);
		weft_join(tt, NULL);
		return (void *)1;
	}
	weft_task_set_name(tb, "blocker");
	weft_task *all[2] = {tt, tb};
	r = weft_gather(all, 2, NULL);
	if (r < 0) { /* e.g. -ENOMEM: one of them never ran */
		fprintf(stderr, "weft_gather: %s\n", weft_strerror(r));
		return (void *)1;
	}
	return NULL;
}

static int run(unsigned workers)
{
	printf("%u worker%s%s:\n", workers, workers > 1 ? "s" : "",
	       workers > 1 ? "" : " (like asyncio's one thread)");
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = workers;
	cfg.slow_ms = 100; /* the watchdog; or env WEFT_SLOW_MS=100 */
	void *res = NULL;
	int r = weft_run(&cfg, main_fiber, NULL, &res);
	if (r < 0)
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
	if (r < 0 || res) /* res: main_fiber said why */
		return 1;
	int during = 0;
	unsigned mask = 0;
	for (int k = 0; k < nticks; k++) {
		if (tick_at[k] > block_from && tick_at[k] < block_to) {
			during++;
			mask |= 1u << (tick_worker[k] & 31);
		}
	}
	printf("  ticks while the blocker blocked worker %u: %d", block_worker,
	       during);
	for (unsigned w = 0; w < 32; w++)
		if (mask & (1u << w))
			printf("%s%u", mask & ((1u << w) - 1) ? " and " :
				       ", on worker ", w);
	printf("\n");
	return 0;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0); /* lines interleave with stderr */
	return run(1) || run(2);
}
