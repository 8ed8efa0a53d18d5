/* 03_gather.c — the Python tour, part c: gather returns every result in
 * the order the tasks were given, whatever order they finish in.
 *
 * Five fetches wait 50, 10, 40, 20 and 30 ms; they finish shortest first,
 * and weft_gather (asyncio.gather) still returns their results in the order
 * of the array. It joins every task, even when one fails, and returns the
 * first failure in index order (0 here).
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <weft.h>

static const unsigned wait_ms[5] = {50, 10, 40, 20, 30};
static atomic_uint done_order[5]; /* item indices, in finishing order */
static atomic_uint ndone;

static void *fetch(void *arg)
{
	uintptr_t i = (uintptr_t)arg;
	weft_sleep(wait_ms[i] * 1000000ull);
	atomic_store(&done_order[atomic_fetch_add(&ndone, 1)], (unsigned)i);
	return (void *)(i * 100 + wait_ms[i]); /* "result of item i" */
}

static void *main_fiber(void *arg)
{
	weft_task *t[5];
	void *res[5];
	for (uintptr_t i = 0; i < 5; i++) {
		t[i] = weft_spawn(fetch, (void *)i);
		if (!t[i]) { /* out of memory: join the ones that started */
			fprintf(stderr, "weft_spawn: out of memory\n");
			weft_gather(t, i, NULL);
			return (void *)1;
		}
	}
	int r = weft_gather(t, 5, res);
	if (r < 0) { /* e.g. -ENOMEM: a fetch never ran, its result is not there */
		fprintf(stderr, "weft_gather: %s\n", weft_strerror(r));
		return (void *)1;
	}
	printf("finished in order:");
	for (int k = 0; k < 5; k++) {
		unsigned i = atomic_load(&done_order[k]);
		printf(" item%u(%u ms)", i, wait_ms[i]);
	}
	printf("\ngather -> %s, results:", weft_strerror(r)); /* r is 0 here */
	for (int i = 0; i < 5; i++)
		printf(" %u", (unsigned)(uintptr_t)res[i]);
	printf("\n");
	return NULL;
}

int main(void)
{
	void *res = NULL;
	int r = weft_run(NULL, main_fiber, NULL, &res);
	if (r < 0)
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
	return r < 0 || res;
}
