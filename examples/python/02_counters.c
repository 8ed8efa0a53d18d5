/* 02_counters.c — the Python tour, part b: two counters that yield every
 * 1,000 counts, first on one worker, then on two.
 *
 * On one worker the fibers take turns at every weft_yield(), exactly as
 * asyncio's coroutines do at every `await asyncio.sleep(0)`, and the
 * shorter count (B) finishes first. On two workers the idle worker steals
 * one of them and they run at the same time, each on its own core (a
 * yield with nothing else queued on that worker returns at once).
 *
 *     02_counters [A_COUNT [B_COUNT]]     (default 300,000,000 and 180,000,000)
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

#define EVERY 1000

struct counter {
	char name;
	uint64_t n;
	unsigned workers;  /* bit w: ran on worker w (only this fiber writes) */
	double took;       /* seconds from the start of the run */
};

static char trace[1 << 20]; /* who reached each yield, in order */
static atomic_size_t ntrace;
static atomic_uint nfinished;
static struct counter *finish_order[2];
static uint64_t t_start;

static void *count(void *arg)
{
	struct counter *c = arg;
	volatile uint64_t i; /* volatile: the compiler must really count */
	for (i = 1; i <= c->n; i++) {
		if (i % EVERY == 0) {
			size_t k = atomic_fetch_add(&ntrace, 1);
			if (k < sizeof trace)
				trace[k] = c->name;
			c->workers |= 1u << (weft_worker_id() & 31);
			weft_yield(); /* asyncio: await asyncio.sleep(0) */
		}
	}
	c->workers |= 1u << (weft_worker_id() & 31);
	c->took = (double)(weft_now() - t_start) * 1e-9;
	finish_order[atomic_fetch_add(&nfinished, 1)] = c;
	return NULL;
}

static void *main_fiber(void *arg)
{
	struct counter *c = arg;
	atomic_store(&ntrace, 0);
	atomic_store(&nfinished, 0);
	t_start = weft_now();
	weft_task *ta = weft_spawn(count, &c[0]);
	weft_task *tb = weft_spawn(count, &c[1]);
	if (!ta || !tb) { /* NULL: out of memory; join the one that started */
		fprintf(stderr, "weft_spawn: out of memory\n");
		if (ta || tb)
			weft_join(ta ? ta : tb, NULL);
		return (void *)1;
	}
	weft_task *all[2] = {ta, tb};
	int r = weft_gather(all, 2, NULL);
	if (r < 0) { /* e.g. -ENOMEM: a counter never ran */
		fprintf(stderr, "weft_gather: %s\n", weft_strerror(r));
		return (void *)1;
	}
	return NULL;
}

static void workers_str(unsigned mask, char *buf)
{
	char *p = buf;
	for (unsigned w = 0; w < 32; w++)
		if (mask & (1u << w))
			p += sprintf(p, "%s%u", p == buf ? "" : " and ", w);
}

static int run(unsigned workers, uint64_t na, uint64_t nb)
{
	struct counter c[2] = {{'A', na, 0, 0}, {'B', nb, 0, 0}};
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = workers;
	void *res = NULL;
	int r = weft_run(&cfg, main_fiber, c, &res);
	if (r < 0)
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
	if (r < 0 || res) /* res: main_fiber said why */
		return 1;
	printf("%u worker%s:\n", workers, workers > 1 ? "s" : "");
	if (workers == 1) {
		size_t n = atomic_load(&ntrace), switches = 0;
		if (n > sizeof trace)
			n = sizeof trace;
		printf("  turns:");
		for (size_t k = 0; k < n && k < 12; k++)
			printf(" %c", trace[k]);
		for (size_t k = 1; k < n; k++)
			switches += trace[k] != trace[k - 1];
		printf(" ... (%zu yields, %zu switches between A and B)\n", n,
		       switches);
	}
	for (int k = 0; k < 2; k++) {
		char ws[64];
		workers_str(finish_order[k]->workers, ws);
		printf("  %s: %c counted to %llu in %.3f s on worker %s\n",
		       k == 0 ? "first " : "second", finish_order[k]->name,
		       (unsigned long long)finish_order[k]->n,
		       finish_order[k]->took, ws);
	}
	unsigned used = c[0].workers | c[1].workers;
	printf("  workers used: %d\n", __builtin_popcount(used));
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t na = argc > 1 ? strtoull(argv[1], NULL, 10) : 300000000;
	uint64_t nb = argc > 2 ? strtoull(argv[2], NULL, 10) : na * 3 / 5;
	if (nb >= na || nb < EVERY) {
		fprintf(stderr, "usage: 02_counters [A_COUNT [B_COUNT]], "
				"B_COUNT >= %d and less than A_COUNT\n", EVERY);
		return 2;
	}
	return run(1, na, nb) || run(2, na, nb);
}
