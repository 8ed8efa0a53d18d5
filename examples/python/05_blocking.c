/* 05_blocking.c — the Python tour, part e: a blocking call inside a fiber.
 *
 * A "ticker" fiber works in 1 ms slices, yielding between them, and prints
 * a tick every 50 ms. After 100 ms a "blocker" fiber calls usleep(300 ms):
 * a plain blocking call (a legacy library, a slow computation, a
 * time.sleep() in Python) that never gives its worker back.
 *
 * On one worker that freezes everything, as it freezes asyncio's loop: no
 * tick for 300 ms. On two workers it freezes only the blocker's worker; the
 * other one steals the ticker and it goes on ticking. Either way the
 * slow-fiber watchdog (on here: WEFT_SLOW_MS=100, or weft_config.slow_ms)
 * names the culprit on stderr while it blocks:
 *
 *     weft: slow fiber 3 "blocker" on worker 0: running 100 ms without yielding
 *
 * The cure is weft_blocking() (loop.run_in_executor): the call runs on the
 * blocking pool and only the calling fiber waits.
 *
 * Sleeping fibers are different: a timer belongs to the worker the fiber
 * slept on, and fires when that worker is free again. This is why the
 * ticker here yields rather than sleeps between ticks.
 */
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
	uint64_t end = t0 + 600 * MS, next = t0 + 50 * MS;
	while (weft_now() < end && nticks < MAX_TICKS) {
		uint64_t slice = weft_now() + 1 * MS;
		while (weft_now() < slice)
			; /* 1 ms of work */
		if (weft_now() >= next) {
			tick_at[nticks] = now_s();
			tick_worker[nticks] = weft_worker_id();
			printf("  tick %2d at %.3f s on worker %u\n", nticks + 1,
			       tick_at[nticks], tick_worker[nticks]);
			nticks++;
			/* the next multiple of 50 ms (no burst after a stall) */
			next = t0 + ((weft_now() - t0) / (50 * MS) + 1) * 50 * MS;
		}
		weft_yield();
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
	if (!tt)
		return (void *)1;
	weft_task_set_name(tt, "ticker");
	weft_sleep(100 * MS);
	weft_task *tb = weft_spawn(blocker, NULL);
	if (!tb) {
		weft_join(tt, NULL);
		return (void *)1;
	}
	weft_task_set_name(tb, "blocker");
	weft_task *all[2] = {tt, tb};
	weft_gather(all, 2, NULL);
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
	if (r < 0 || res) {
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
		return 1;
	}
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
